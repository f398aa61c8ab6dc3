"""What every handler does around its logic: parse, reject or ignore, run idempotently, count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies
from ecr_automation.models.effects import Effect
from ecr_automation.models.events import EcrEvent
from ecr_automation.models.parsing import EventRejected, IgnoredEvent, parse_event

# EventBridge may deliver an event twice within a short window: remember outcomes for a day.
IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60


def process_event(
    raw: object,
    context: LambdaContext,
    *,
    function: str,
    accepts: tuple[type[EcrEvent], ...],
    # Called only with an instance of one of ``accepts`` (checked below); typed loosely because
    # mypy cannot tie a tuple of classes to a union parameter.
    action: Callable[[Any], dict[str, Any]],
    dependencies: Dependencies,
    logger: Logger,
    metrics: Metrics,
) -> dict[str, Any]:
    try:
        event = parse_event(raw, max_bytes=dependencies.settings.max_event_bytes)
    except EventRejected as rejection:
        return _reject(raw, rejection, function=function, dependencies=dependencies, logger=logger, metrics=metrics)

    if isinstance(event, IgnoredEvent):
        return _ignore(event.event_id, event.reason, dependencies, logger, metrics)
    if not isinstance(event, accepts):
        return _ignore(event.id, f"{event.detail_type!r} is not handled by {function}", dependencies, logger, metrics)

    logger.append_keys(event_id=event.id, detail_type=event.detail_type)
    result = _run_once(event, context, action, dependencies)
    metrics.add_metric(name="EventsProcessed", unit=MetricUnit.Count, value=1)
    return {"status": "processed", "event_id": event.id, **result}


def _run_once(
    event: EcrEvent, context: LambdaContext, action: Callable[[Any], dict[str, Any]], dependencies: Dependencies
) -> dict[str, Any]:
    store = dependencies.idempotency_store
    if store is None:
        return action(event)
    config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=IDEMPOTENCY_TTL_SECONDS)
    config.register_lambda_context(context)

    @idempotent_function(  # type: ignore[untyped-decorator]  # Powertools types it loosely
        data_keyword_argument="raw_event", persistence_store=store, config=config
    )
    def once(raw_event: dict[str, Any]) -> dict[str, Any]:
        del raw_event  # only the key material: the typed event is already in hand
        return action(event)

    result: dict[str, Any] = once(raw_event={"id": event.id})
    return result


def _reject(
    raw: object,
    rejection: EventRejected,
    *,
    function: str,
    dependencies: Dependencies,
    logger: Logger,
    metrics: Metrics,
) -> dict[str, Any]:
    logger.warning("event rejected", extra={"event_id": rejection.event_id, "reason": rejection.reason})
    metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
    dependencies.sink.record(Effect("event_rejected", {"event_id": rejection.event_id, "reason": rejection.reason}))
    # Retrying cannot fix bad input: park it where it can be inspected and replayed, then succeed.
    dependencies.dead_letters.send(raw, reason=rejection.reason, function=function)
    return {"status": "rejected", "event_id": rejection.event_id, "reason": rejection.reason}


def _ignore(event_id: str, reason: str, dependencies: Dependencies, logger: Logger, metrics: Metrics) -> dict[str, Any]:
    logger.info("event ignored", extra={"event_id": event_id, "reason": reason})
    metrics.add_metric(name="EventsIgnored", unit=MetricUnit.Count, value=1)
    dependencies.sink.record(Effect("event_ignored", {"event_id": event_id, "reason": reason}))
    return {"status": "ignored", "event_id": event_id, "reason": reason}
