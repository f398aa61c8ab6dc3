"""An SQS queue delivering events: each message body is one EventBridge event, handled as ``edge`` handles it.

Kept apart from ``edge`` so the functions EventBridge invokes never load Powertools Batch.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ecr_automation.dependencies import Dependencies
from ecr_automation.handlers.edge import EventAction, _Edge
from ecr_automation.models.events.base import Envelope
from ecr_automation.models.parsing import EventRejected


def process_sqs_batch(
    raw: dict[str, Any],
    context: LambdaContext,
    *,
    function: str,
    accepts: tuple[type[Envelope], ...],
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
