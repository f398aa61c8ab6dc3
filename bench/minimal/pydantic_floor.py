"""A reference point for bench/coldstart.py, not a target: the minimal handler plus pydantic and one model.

Every function of this application parses its configuration, its rules and its events with pydantic, so
no handler can import for less than this; the distance from here to a handler is this application's own.
"""

from __future__ import annotations

from typing import Any

from minimal_handler import lambda_handler, logger, metrics, tracer
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Settings", "lambda_handler", "logger", "metrics", "tracer"]


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    region: str = Field(alias="AWS_REGION", min_length=1)
    table: str | None = Field(alias="TABLE", default=None)
    options: dict[str, Any] = Field(default_factory=dict)
