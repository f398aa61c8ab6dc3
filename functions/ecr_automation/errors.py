"""Errors and locations every layer may name, in a module that loads nothing (the CLI starts fast)."""

from __future__ import annotations

from pathlib import Path

BUNDLED_RULES_FILE = Path(__file__).resolve().parent.parent / "rules.toml"


class ConfigurationError(ValueError):
    """The environment or the rules file is invalid; raised at start-up, never mid-event."""
