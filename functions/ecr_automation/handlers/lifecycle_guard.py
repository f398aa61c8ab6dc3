"""LifecycleGuardFunction: checks a lifecycle policy as it is put (CloudTrail) and reports what it would expire.

Never changes the policy: a policy that would expire protected tags or alias targets is published as one
``Lifecycle Policy Violation`` per (repository, policy), which the notifier alerts.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies, get_dependencies
from ecr_automation.handlers.edge import process_event
from ecr_automation.logic.lifecycle import GuardOutcome
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.events.cloudtrail import LifecyclePolicyPutEvent
from ecr_automation.models.parsing import build_models

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# The validators of the events this function reads, built at init (the event models defer building).
build_models(LifecyclePolicyPutEvent)

# Every policy read is counted as checked; these outcomes are counted besides.
METRIC_BY_RESULT = {
    "violation": "LifecycleViolations",
    "already_published": "LifecycleViolationsRepeated",
    "invalid_policy": "LifecyclePoliciesUnreadable",
}


def check_policy(event: LifecyclePolicyPutEvent, dependencies: Dependencies) -> dict[str, Any]:
    detail = event.detail
    request = detail.request_parameters
    if detail.error_code or request is None:
        return {"result": "ignored", "note": f"the call failed ({detail.error_code or 'no request'}): nothing was put"}
    repository = RepositoryRef(request.registry_id or event.account, event.region, request.repository_name)
    outcome: GuardOutcome = dependencies.lifecycle_guard.on_policy_put(
        repository,
        request.lifecycle_policy_text,
        actor=detail.user_identity.name,
        event_id=event.id,
        event_time=detail.event_time,
    )
    if outcome.report is not None:
        metrics.add_metric(name="LifecyclePoliciesChecked", unit=MetricUnit.Count, value=1)
    if metric := METRIC_BY_RESULT.get(outcome.result):
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    if outcome.result == "violation" and outcome.report is not None:
        logger.warning("lifecycle policy violation", extra={"summary": outcome.report.summary()})
    result: dict[str, Any] = outcome.as_dict()
    return result


@logger.inject_lambda_context(clear_state=True)  # no keys leak from the previous invocation
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_event(
        event,
        context,
        function="LifecycleGuardFunction",
        accepts=(LifecyclePolicyPutEvent,),
        action=check_policy,
        dependencies=get_dependencies(),
        logger=logger,
        metrics=metrics,
    )
