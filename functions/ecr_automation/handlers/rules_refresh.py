"""Every function acts on the current rules: asked for before each event (or job), reported once when refused.

Shared by handlers/edge.py and the replication worker (whose SQS records are jobs, not events); it loads
nothing more than a handler already has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools.metrics import MetricUnit

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

    from ecr_automation.dependencies import Dependencies


def follow_rules(dependencies: Dependencies, logger: Logger, metrics: Metrics) -> None:
    """Act on the current rules; report a refused version or an unreadable store once, when first seen.

    Without any valid rules yet (a cold start on an invalid version or an unreadable store) raise
    ConfigurationError, so the event is retried and then dead-lettered rather than handled by rules
    nobody chose (adapters/rules_source.py says why there is no fallback to the bundled file).
    """
    refresh = dependencies.refresh_rules()
    where = {"rules_origin": refresh.origin}
    kept = "keeping the last valid rules" if refresh.rules else "no valid rules yet: events fail until a valid one"
    if refresh.rejected is not None:
        logger.error(f"rules version refused, {kept}", extra={**where, "reason": refresh.rejected})
        metrics.add_metric(name="RulesRejected", unit=MetricUnit.Count, value=1)
    if refresh.unavailable is not None:
        logger.error(f"rules store unreadable, {kept}", extra={**where, "reason": refresh.unavailable})
        metrics.add_metric(name="RulesUnavailable", unit=MetricUnit.Count, value=1)
    if refresh.changed:
        logger.info("rules updated", extra={**where, "rules_version": refresh.version})
    refresh.require()
