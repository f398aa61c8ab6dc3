"""ReplicationWorkerFunction: copies the images the planner queued, one job per SQS record.

A record whose copy fails (or pauses at the deadline) is reported in ``batchItemFailures``: SQS delivers
it again after the visibility timeout (a paused copy resumes: blobs already there are skipped), and after
``maxReceiveCount`` deliveries moves it to the replication dead-letter queue. ``Image Replication Failed``
is published on that last delivery only. A body that is no job can never succeed: it goes to the
application's dead-letter queue with the reason, and the record counts as handled.

Job bodies are not EventBridge events, so this uses Powertools' batch processing directly rather than
``sqs_edge.process_sqs_batch`` (whose records carry events); it treats records the same way.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from ecr_automation.dependencies import Dependencies, get_dependencies
from ecr_automation.handlers.rules_refresh import follow_rules
from ecr_automation.logic.replicate import (
    CopyPausedError,
    ReplicationJob,
    ReplicationResult,
)
from ecr_automation.models.effects import Effect

logger = Logger()
tracer = Tracer()
metrics = Metrics()

FUNCTION = "ReplicationWorkerFunction"
# Stop copying this long before Lambda's timeout: time to report, publish and return the batch response.
DEADLINE_MARGIN_SECONDS = 20.0


def deadline_of(context: LambdaContext) -> float:
    """The ``time.monotonic()`` instant a copy must stop by, from the invocation's remaining time."""
    return time.monotonic() + context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_SECONDS


def replicate_record(record: SQSRecord, dependencies: Dependencies, deadline: float) -> dict[str, Any]:
    try:
        job = ReplicationJob.model_validate_json(record.body)
    except ValidationError as error:
        first = error.errors()[0]
        reason = f"not a replication job: {'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
        return _reject(record, dependencies, reason)
    follow_rules(dependencies, logger, metrics)  # the destination's guard rule is read from the current rules
    attempt = int(record.attributes.approximate_receive_count or 1)
    final_attempt = attempt >= dependencies.settings.replication_max_receives
    with logger.append_context_keys(job_id=job.job_id, attempt=attempt):
        try:
            outcome = dependencies.replicator.replicate(job, deadline=deadline, final_attempt=final_attempt)
        except CopyPausedError as pause:
            metrics.add_metric(name="ReplicationsPaused", unit=MetricUnit.Count, value=1)
            logger.warning("copy paused at the deadline: SQS redelivers the job", extra={"reason": str(pause)})
            raise
        except Exception as error:
            metrics.add_metric(name="ReplicationFailures", unit=MetricUnit.Count, value=1)
            logger.error(
                "replication failed: SQS redelivers the job" + (" to its dead-letter queue" if final_attempt else ""),
                extra={"error": f"{type(error).__name__}: {error}"[:1000], "final_attempt": final_attempt},
            )
            raise
        copied = outcome.copy
        if outcome.result is ReplicationResult.CONFLICT:
            metrics.add_metric(name="ReplicationFailures", unit=MetricUnit.Count, value=1)
            logger.warning("protected tag conflict at the destination", extra={"outcome": outcome.as_dict()})
        else:
            metrics.add_metric(name="ImagesReplicated", unit=MetricUnit.Count, value=1)
            logger.info("image replicated", extra={"outcome": outcome.as_dict()})
        metrics.add_metric(name="BytesCopied", unit=MetricUnit.Bytes, value=copied.bytes_copied)
        metrics.add_metric(name="BlobsSkipped", unit=MetricUnit.Count, value=copied.blobs_skipped)
        return outcome.as_dict()


def _reject(record: SQSRecord, dependencies: Dependencies, reason: str) -> dict[str, Any]:
    logger.warning("message rejected", extra={"message_id": record.message_id, "reason": reason})
    metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
    dependencies.sink.record(Effect("event_rejected", {"message_id": record.message_id, "reason": reason}))
    dependencies.dead_letters.send(record.body, reason=reason, function=FUNCTION)
    return {"status": "rejected", "reason": reason}


@logger.inject_lambda_context(clear_state=True)  # no keys leak from the previous invocation
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    dependencies = get_dependencies()
    deadline = deadline_of(context)

    def handle(record: SQSRecord) -> dict[str, Any]:
        with logger.append_context_keys(message_id=record.message_id):
            return replicate_record(record, dependencies, deadline)

    return process_partial_response(
        event=event, record_handler=handle, processor=BatchProcessor(event_type=EventType.SQS), context=context
    )
