"""NotifyFunction: tells people about scan findings, tag guard violations and failed replications.

Delivery is exactly once in effect: a message is marked sent only after every sink accepted it. When a
sink fails (Slack still down after its retries) the handler counts the failure and raises, so Lambda
retries the event twice and then hands it, with the error, to the dead-letter queue for a replay.
"""

from __future__ import annotations

from typing import Any

# This function runs idempotently (template.yaml gives it IDEMPOTENCY_TABLE): load Powertools Idempotency at
# init rather than with the store on the first event (edge.py and dependencies.py import it only then).
import aws_lambda_powertools.utilities.idempotency  # noqa: F401
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies, get_dependencies
from ecr_automation.errors import MemberAccountAccessError
from ecr_automation.handlers.edge import process_event
from ecr_automation.logic.notify import NotifyEvent
from ecr_automation.models.events.application import (
    ImageReplicationFailedEvent,
    LifecycleViolationEvent,
    TagGuardViolationAttributedEvent,
    TagGuardViolationEvent,
)
from ecr_automation.models.events.inspector_findings import InspectorFindingEvent
from ecr_automation.models.events.replication import ReplicationActionEvent
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.models.parsing import build_models

logger = Logger()
tracer = Tracer()
metrics = Metrics()

ACCEPTS = (
    ImageReplicationFailedEvent,
    ImageScanEvent,
    InspectorScanEvent,
    InspectorFindingEvent,
    TagGuardViolationEvent,
    TagGuardViolationAttributedEvent,
    ReplicationActionEvent,
    LifecycleViolationEvent,
)
# The validators of the events this function reads, built at init (the event models defer building).
build_models(*ACCEPTS)


def notify(event: NotifyEvent, dependencies: Dependencies) -> dict[str, Any]:
    try:
        outcome = dependencies.notifier.handle(event)
    except MemberAccountAccessError:
        raise  # not an alert failure: the edge dead-letters it, with its own log line and metric
    except Exception as error:
        metrics.add_metric(name="AlertsFailed", unit=MetricUnit.Count, value=1)
        # The error names the secret or Slack's status, never a webhook URL (adapters/slack.py).
        logger.error(
            "alert not delivered: Lambda retries the event", extra={"error": f"{type(error).__name__}: {error}"}
        )
        raise
    sent = len(outcome.messages)
    if sent:
        metrics.add_metric(name="AlertsSent", unit=MetricUnit.Count, value=sent)
    else:
        metrics.add_metric(name="AlertsSkipped", unit=MetricUnit.Count, value=1)
    summaries = [_first_line(message.text) for message in outcome.messages]
    logger.info("notify outcome", extra={"result": str(outcome.result), "messages": summaries, "notes": outcome.notes})
    result: dict[str, Any] = {"result": str(outcome.result), "messages": summaries}
    if outcome.notes:
        result["notes"] = list(outcome.notes)
    return result


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0][:200]


@logger.inject_lambda_context(clear_state=True)  # no keys leak from the previous invocation
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_event(
        event,
        context,
        function="NotifyFunction",
        accepts=ACCEPTS,
        action=notify,
        dependencies=get_dependencies(),
        logger=logger,
        metrics=metrics,
    )
