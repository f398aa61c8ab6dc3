"""Event-driven automation for Amazon ECR: tag guard, retag rules, replication and notifications."""

__version__ = "0.1.0"
