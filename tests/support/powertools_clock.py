"""Powertools Parameters' cache clock, moved forward by a test: the cache time passes without waiting."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

import pytest


class PowertoolsClock:
    """Replaces ``datetime`` in Powertools' parameters base module, the one place its cache reads the time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta()
        clock = self

        class Shifted(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
                return datetime.now(tz) + clock.offset

        monkeypatch.setattr("aws_lambda_powertools.utilities.parameters.base.datetime", Shifted)

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)
