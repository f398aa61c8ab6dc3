"""The edge: turn a raw EventBridge delivery into a typed event, an explicit ignore, or a rejection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ecr_automation.models.events import (
    ACCEPTED_SOURCES,
    MODEL_BY_DETAIL_TYPE,
    EcrEvent,
    ImageActionEvent,
)


class EventRejected(Exception):  # noqa: N818 - reads as an outcome, like Powertools' exceptions
    """The event can never be processed; retrying it would not help."""

    def __init__(self, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


@dataclass(frozen=True)
class IgnoredEvent:
    """A well-formed event this application deliberately does nothing with."""

    event_id: str
    detail_type: str
    reason: str


def _event_id(raw: dict[str, Any]) -> str | None:
    value = raw.get("id")
    return value if isinstance(value, str) else None


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    problem = first["msg"]
    if first["type"] == "missing":
        return f"{location}: field required"
    return f"{location}: {problem}"


def parse_event(raw: object, *, max_bytes: int) -> EcrEvent | IgnoredEvent:
    """Parse one EventBridge event. Raises ``EventRejected`` with a one-line reason for bad input."""
    if not isinstance(raw, dict):
        raise EventRejected(f"event is a JSON {type(raw).__name__}, not an object")
    event_id = _event_id(raw)
    size = len(json.dumps(raw, separators=(",", ":")).encode())
    if size > max_bytes:
        raise EventRejected(f"event is {size} bytes, over the {max_bytes}-byte limit", event_id)
    source = raw.get("source")
    if source not in ACCEPTED_SOURCES:
        raise EventRejected(f"source: {source!r} is not one of {sorted(ACCEPTED_SOURCES)}", event_id)
    detail_type = raw.get("detail-type")
    if not isinstance(detail_type, str) or not detail_type:
        raise EventRejected("detail-type: field required", event_id)
    model = MODEL_BY_DETAIL_TYPE.get((source, detail_type))
    if model is None:
        return IgnoredEvent(event_id or "unknown", detail_type, f"unknown detail-type {detail_type!r} from {source}")
    try:
        event = model.model_validate(raw)
    except ValidationError as error:
        raise EventRejected(_describe(error), event_id) from None
    if isinstance(event, ImageActionEvent) and event.detail.known_action is None:
        return IgnoredEvent(event.id, detail_type, f"unknown action-type {event.detail.action_type!r}")
    return event
