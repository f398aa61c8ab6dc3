"""The edge: turn a raw EventBridge delivery into a typed event, an explicit ignore, or a rejection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ecr_automation.models.events import ACCEPTED_SOURCES, API_CALL_MODEL, MODEL_BY_API_CALL, MODEL_BY_DETAIL_TYPE

if TYPE_CHECKING:
    from ecr_automation.models.events.base import Envelope


def build_models(*models: type[BaseModel]) -> None:
    """Build these models' validators now, at init, rather than on the first event that needs them.

    The event models defer building (models/events/base.py): each handler builds those it accepts, and no other.
    """
    for model in models:
        model.model_rebuild()


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


@cache
def _model(name: str) -> type[Envelope]:
    """The model named ``"module:Class"`` in ``models/events/``, imported on first use.

    A function imports the models of the events it accepts at load; one of another type (which its
    EventBridge rule does not route to it) is still validated, rejected or ignored as any other, at the
    cost of importing its model then.
    """
    module, _, attribute = name.partition(":")
    model: type[Envelope] = getattr(import_module(f"ecr_automation.models.events.{module}"), attribute)
    return model


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


def parse_event(raw: object, *, max_bytes: int) -> Envelope | IgnoredEvent:
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
    model_name = MODEL_BY_DETAIL_TYPE.get((source, detail_type))
    if model_name is None:
        return IgnoredEvent(event_id or "unknown", detail_type, f"unknown detail-type {detail_type!r} from {source}")
    detail = raw.get("detail")
    if model_name == API_CALL_MODEL and isinstance(detail, dict) and isinstance(detail.get("eventName"), str):
        model_name = MODEL_BY_API_CALL.get((source, detail["eventName"]), model_name)
    try:
        event = _model(model_name).model_validate(raw)
    except ValidationError as error:
        raise EventRejected(_describe(error), event_id) from None
    if (reason := event.ignore_reason()) is not None:
        return IgnoredEvent(event.id, detail_type, reason)
    return event
