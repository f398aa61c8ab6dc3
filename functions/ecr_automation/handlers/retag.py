"""RetagFunction: floating version aliases, digest and pattern tags on push; promotion on a clean scan."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies, get_dependencies
from ecr_automation.handlers.edge import process_event
from ecr_automation.logic.retag import RetagEvent, RetagResult
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.models.parsing import build_models

logger = Logger()
tracer = Tracer()
metrics = Metrics()

ACCEPTS: tuple[type[RetagEvent], ...] = (ImageActionEvent, ImageScanEvent, InspectorScanEvent)
# The validators of the events this function reads, built at init (the event models defer building).
build_models(*ACCEPTS)


def retag(event: RetagEvent, dependencies: Dependencies) -> dict[str, Any]:
    outcome = dependencies.retagger.handle(event)
    # Literal names: tests/unit/test_metrics_doc.py reads them to keep docs/metrics.md in step.
    if outcome.written:
        metrics.add_metric(name="TagsWritten", unit=MetricUnit.Count, value=len(outcome.written))
    if outcome.skipped:
        metrics.add_metric(name="TagsSkipped", unit=MetricUnit.Count, value=len(outcome.skipped))
    if outcome.refused:
        metrics.add_metric(name="TagsRefused", unit=MetricUnit.Count, value=len(outcome.refused))
    if outcome.refused or outcome.result in {RetagResult.REFUSED, RetagResult.IMAGE_GONE}:
        logger.warning("retag not applied in full", extra={"outcome": outcome.as_dict()})
    else:
        logger.info("retag", extra={"outcome": outcome.as_dict()})
    return outcome.as_dict()


@logger.inject_lambda_context(clear_state=True)  # no keys leak from the previous invocation
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_event(
        event,
        context,
        function="RetagFunction",
        accepts=ACCEPTS,
        action=retag,
        dependencies=get_dependencies(),
        logger=logger,
        metrics=metrics,
    )
