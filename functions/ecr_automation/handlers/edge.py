"""What every handler does around its logic: parse, reject or ignore, run idempotently, count.

``process_event`` serves a function EventBridge invokes with one event; ``process_sqs_batch`` one an
SQS queue invokes with a batch of messages, each carrying one event. Both treat an event the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies
from ecr_automation.models.effects import Effect
from ecr_automation.models.events import EcrEvent
from ecr_automation.models.parsing import EventRejected, IgnoredEvent, parse_event

# EventBridge may deliver an event twice within a short window: remember outcomes for a day.
IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60

# Called only with an instance of one of ``accepts`` (checked below); typed loosely because mypy
# cannot tie a tuple of classes to a union parameter.
EventAction = Callable[[Any, Dependencies], dict[str, Any]]


def process_event(
    raw: object,
    context: LambdaContext,
    *,
    function: str,
    accepts: tuple[type[EcrEvent], ...],
    action: EventAction,
    dependencies: Dependencies,
    logger: Logger,
    metrics: Metrics,
) -> dict[str, Any]:
    """Handle one EventBridge event; an exception from ``action`` propagates so Lambda retries."""
    edge = _Edge(function, accepts, action, dependencies, logger, metrics)
    return edge.handle(raw, context)


def process_sqs_batch(
    raw: dict[str, Any],
    context: LambdaContext,
    *,
    function: str,
    accepts: tuple[type[EcrEvent], ...],
    action: EventAction,
    dependencies: Dependencies,
    logger: Logger,
    metrics: Metrics,
) -> PartialItemFailureResponse:
    """Handle an SQS batch whose message bodies are events; return the records SQS must redeliver.

    Bad input is dead-lettered and counts as handled. A record whose action raises is reported in
    ``batchItemFailures``; when every record fails, Powertools raises ``BatchProcessingError`` instead.
    """
    edge = _Edge(function, accepts, action, dependencies, logger, metrics)

    def handle_record(record: SQSRecord) -> dict[str, Any]:
        with logger.append_context_keys(message_id=record.message_id):
            try:
                body = json.loads(record.body)
            except json.JSONDecodeError as error:
                return edge.reject(record.body, EventRejected(f"body: not JSON ({error.msg} at character {error.pos})"))
            try:
                return edge.handle(body, context)
            except Exception:
                event_id = body.get("id") if isinstance(body, dict) else None
                logger.exception("event failed: SQS will redeliver it", extra={"event_id": event_id})
                metrics.add_metric(name="EventsFailed", unit=MetricUnit.Count, value=1)
                raise

    return process_partial_response(
        event=raw, record_handler=handle_record, processor=BatchProcessor(event_type=EventType.SQS), context=context
    )


@dataclass(frozen=True)
class _Edge:
    """One function's wiring, and what it does with one raw event whichever way it arrived."""

    function: str
    accepts: tuple[type[EcrEvent], ...]
    action: EventAction
    dependencies: Dependencies
    logger: Logger
    metrics: Metrics

    def handle(self, raw: object, context: LambdaContext) -> dict[str, Any]:
        try:
            event = parse_event(raw, max_bytes=self.dependencies.settings.max_event_bytes)
        except EventRejected as rejection:
            return self.reject(raw, rejection)

        if isinstance(event, IgnoredEvent):
            return self.ignore(event.event_id, event.reason)
        if not isinstance(event, self.accepts):
            return self.ignore(event.id, f"{event.detail_type!r} is not handled by {self.function}")

        # Context keys, not appended ones: in a batch they must not leak into the next record's logs.
        with self.logger.append_context_keys(event_id=event.id, detail_type=event.detail_type):
            result = _run_once(event, context, self.action, self.dependencies)
        self.metrics.add_metric(name="EventsProcessed", unit=MetricUnit.Count, value=1)
        return {"status": "processed", "event_id": event.id, **result}

    def reject(self, raw: object, rejection: EventRejected) -> dict[str, Any]:
        self.logger.warning("event rejected", extra={"event_id": rejection.event_id, "reason": rejection.reason})
        self.metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        self.dependencies.sink.record(
            Effect("event_rejected", {"event_id": rejection.event_id, "reason": rejection.reason})
        )
        # Retrying cannot fix bad input: park it where it can be inspected and replayed, then succeed.
        self.dependencies.dead_letters.send(raw, reason=rejection.reason, function=self.function)
        return {"status": "rejected", "event_id": rejection.event_id, "reason": rejection.reason}

    def ignore(self, event_id: str, reason: str) -> dict[str, Any]:
        self.logger.info("event ignored", extra={"event_id": event_id, "reason": reason})
        self.metrics.add_metric(name="EventsIgnored", unit=MetricUnit.Count, value=1)
        self.dependencies.sink.record(Effect("event_ignored", {"event_id": event_id, "reason": reason}))
        return {"status": "ignored", "event_id": event_id, "reason": reason}


def _run_once(
    event: EcrEvent, context: LambdaContext, action: EventAction, dependencies: Dependencies
) -> dict[str, Any]:
    store = dependencies.idempotency_store
    if store is None:
        return action(event, dependencies)
    config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=IDEMPOTENCY_TTL_SECONDS)
    config.register_lambda_context(context)

    @idempotent_function(  # type: ignore[untyped-decorator]  # Powertools types it loosely
        data_keyword_argument="raw_event", persistence_store=store, config=config
    )
    def once(raw_event: dict[str, Any]) -> dict[str, Any]:
        del raw_event  # only the key material: the typed event is already in hand
        return action(event, dependencies)

    result: dict[str, Any] = once(raw_event={"id": event.id})
    return result
