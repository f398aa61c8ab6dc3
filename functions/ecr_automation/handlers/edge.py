"""What every handler does around its logic: parse, reject or ignore, run idempotently, count.

``process_event`` serves a function EventBridge invokes with one event; ``sqs_edge.process_sqs_batch`` one
an SQS queue invokes with a batch of messages, each carrying one event. Both treat an event the same way.

Cold start: this module loads only what every event function uses. Powertools Batch lives in
``sqs_edge`` (no EventBridge function loads it), and Idempotency is loaded with the idempotency store,
by the functions configured with one (``IDEMPOTENCY_TABLE``: the notifier, which loads it at init).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies
from ecr_automation.errors import MemberAccountAccessError
from ecr_automation.handlers.rules_refresh import follow_rules
from ecr_automation.models.effects import Effect
from ecr_automation.models.events.base import Envelope
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
    accepts: tuple[type[Envelope], ...],
    action: EventAction,
    dependencies: Dependencies,
    logger: Logger,
    metrics: Metrics,
) -> dict[str, Any]:
    """Handle one EventBridge event; an exception from ``action`` propagates so Lambda retries."""
    edge = _Edge(function, accepts, action, dependencies, logger, metrics)
    return edge.handle(raw, context)


@dataclass(frozen=True)
class _Edge:
    """One function's wiring, and what it does with one raw event whichever way it arrived."""

    function: str
    accepts: tuple[type[Envelope], ...]
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
            follow_rules(self.dependencies, self.logger, self.metrics)
            try:
                result = _run_once(event, context, self.action, self.dependencies)
            except MemberAccountAccessError as refused:
                return self.refused(raw, event.id, refused)
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

    def refused(self, raw: object, event_id: str, refused: MemberAccountAccessError) -> dict[str, Any]:
        """The member account's role refused us: retrying cannot fix a deployment, so park the event for replay."""
        reason = str(refused)
        self.logger.error("member account refused", extra={"account": refused.account, "reason": reason})
        self.metrics.add_metric(name="MemberAccountRefusals", unit=MetricUnit.Count, value=1)
        self.dependencies.sink.record(
            Effect("member_account_refused", {"event_id": event_id, "account": refused.account, "reason": reason})
        )
        self.dependencies.dead_letters.send(raw, reason=reason, function=self.function)
        return {"status": "dead_lettered", "event_id": event_id, "reason": reason}

    def ignore(self, event_id: str, reason: str) -> dict[str, Any]:
        self.logger.info("event ignored", extra={"event_id": event_id, "reason": reason})
        self.metrics.add_metric(name="EventsIgnored", unit=MetricUnit.Count, value=1)
        self.dependencies.sink.record(Effect("event_ignored", {"event_id": event_id, "reason": reason}))
        return {"status": "ignored", "event_id": event_id, "reason": reason}


def _run_once(
    event: Envelope, context: LambdaContext, action: EventAction, dependencies: Dependencies
) -> dict[str, Any]:
    store = dependencies.idempotency_store
    if store is None:
        return action(event, dependencies)
    # Loaded with the store already (dependencies.idempotency_store): only functions given a table use it.
    from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415 - cold start
        IdempotencyConfig,
        idempotent_function,
    )

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
