"""Errors and locations every layer may name, in a module that loads nothing (the CLI starts fast)."""

from __future__ import annotations

from pathlib import Path

BUNDLED_RULES_FILE = Path(__file__).resolve().parent.parent / "rules.toml"


class ConfigurationError(ValueError):
    """The environment or the rules file is invalid; raised at start-up, never mid-event."""


class MemberAccountAccessError(RuntimeError):
    """The role the functions assume in another account of the organisation refused them.

    A deployment problem (the member stack missing, another external id, a trust policy naming other roles),
    not one a retry fixes: the event is dead-lettered and replayed once the member account is set up.
    """

    def __init__(self, account: str, message: str) -> None:
        super().__init__(message)
        self.account = account
