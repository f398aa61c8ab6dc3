"""ReplicationPlannerFunction: pushes (and, for scan-gated rules, clean scans) become replication jobs on SQS.

One message per image tag and target; the worker copies them. A push the tag guard rejected is never
planned. If SQS will not take the jobs the invocation fails: Lambda retries it twice, then the event goes
to the dead-letter queue; duplicates plan jobs with the same ids, which the worker copies idempotently.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies, get_dependencies
from ecr_automation.handlers.edge import process_event
from ecr_automation.logic.replicate import ReplicateEvent, plan
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.models.parsing import build_models

logger = Logger()
tracer = Tracer()
metrics = Metrics()

ACCEPTS: tuple[type[ReplicateEvent], ...] = (ImageActionEvent, ImageScanEvent, InspectorScanEvent)
# The validators of the events this function reads, built at init (the event models defer building).
build_models(*ACCEPTS)


def plan_replication(event: ReplicateEvent, dependencies: Dependencies) -> dict[str, Any]:
    planned = plan(event, dependencies.rules, dependencies.claim_acceptance, dependencies.platform_scans)
    if planned.jobs:
        dependencies.replication_queue.send(planned.jobs)
        metrics.add_metric(name="ReplicationJobsPlanned", unit=MetricUnit.Count, value=len(planned.jobs))
    jobs = [job.summary() for job in planned.jobs]
    logger.info("replication planned", extra={"jobs": jobs, "notes": planned.notes})
    return {"result": "planned" if jobs else "nothing", "jobs": jobs, "notes": planned.notes}


@logger.inject_lambda_context(clear_state=True)  # no keys leak from the previous invocation
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_event(
        event,
        context,
        function="ReplicationPlannerFunction",
        accepts=ACCEPTS,
        action=plan_replication,
        dependencies=get_dependencies(),
        logger=logger,
        metrics=metrics,
    )
