"""TagGuardFunction: protected tags can never be moved to another digest or deleted."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies, get_dependencies
from ecr_automation.handlers.edge import process_event
from ecr_automation.logic.guard import GuardResult
from ecr_automation.models.events.cloudtrail import ApiCallEvent
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.models.parsing import build_models

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# The validators of the events this function reads, built at init (the event models defer building).
build_models(ImageActionEvent, ApiCallEvent)

METRIC_BY_RESULT = {
    GuardResult.CLAIMED: "TagsClaimed",
    GuardResult.REVERTED: "ViolationsReverted",
    GuardResult.RESTORED: "ViolationsReverted",
    GuardResult.HANDED_OVER: "ViolationsReverted",
    GuardResult.MIRRORED: "ViolationsReported",
    GuardResult.UNRECOVERABLE: "ViolationsUnrecoverable",
    GuardResult.REFUSED: "ViolationsUnrecoverable",
    GuardResult.DRY_RUN: "ViolationsReported",
}


def guard(event: ImageActionEvent | ApiCallEvent, dependencies: Dependencies) -> dict[str, Any]:
    tag_guard = dependencies.tag_guard
    if isinstance(event, ApiCallEvent):
        attributed = tag_guard.attribute(event)
        return {"result": "attributed" if attributed else "recorded", "violations_attributed": len(attributed)}
    outcome = tag_guard.handle(event)
    if metric := METRIC_BY_RESULT.get(outcome.result):
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    if outcome.violation is not None:
        logger.warning("tag guard violation", extra={"violation": outcome.violation.as_event_detail()})
    result: dict[str, Any] = {"result": outcome.result.value, "tag": outcome.tag}
    if outcome.notes:
        result["notes"] = outcome.notes
    return result


@logger.inject_lambda_context(clear_state=True)  # no keys leak from the previous invocation
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_event(
        event,
        context,
        function="TagGuardFunction",
        accepts=(ImageActionEvent, ApiCallEvent),
        action=guard,
        dependencies=get_dependencies(),
        logger=logger,
        metrics=metrics,
    )
