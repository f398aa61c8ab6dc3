"""Adapters: the only code that talks to AWS, HTTP or Slack."""
