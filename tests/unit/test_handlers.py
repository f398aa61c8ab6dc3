"""Handlers at the edge: bad input gets a one-line reason, a log record, a metric and a dead letter."""

from __future__ import annotations

import importlib
import inspect
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from moto import mock_aws

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import tag_guard
from ecr_automation.handlers.edge import process_event
from ecr_automation.handlers.sqs_edge import process_sqs_batch
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.effects import CollectingSink
from ecr_automation.models.events.image_action import ImageActionEvent
from tests.conftest import load_event
from tests.support import builders


@pytest.fixture
def dead_letter_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str, CollectingSink]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", url)
        monkeypatch.setenv("TAG_LEDGER_TABLE", "ledger")
        sink = CollectingSink()
        tag_guard.metrics.clear_metrics()  # the module-level Metrics outlives invocations made by other tests
        use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=sink))
        yield sqs, url, sink
        use_dependencies(None)


def _stdout_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_malformed_event_is_dead_lettered_logged_and_counted(
    dead_letter_queue: tuple[Any, str, CollectingSink],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sqs, url, sink = dead_letter_queue
    event = load_event("ecr-push-tagged.json")
    del event["detail"]["image-digest"]

    result = tag_guard.lambda_handler(event, LambdaContext("TagGuardFunction"))

    assert result == {"status": "rejected", "event_id": event["id"], "reason": "detail.image-digest: field required"}
    (message,) = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
    assert json.loads(message["Body"]) == event  # whole, replayable
    assert message["MessageAttributes"]["reason"]["StringValue"] == "detail.image-digest: field required"
    (log,) = [record for record in caplog.records if record.getMessage() == "event rejected"]
    assert log.levelname == "WARNING"
    assert log.event_id == event["id"]  # type: ignore[attr-defined]
    metrics = [record for record in _stdout_records(capsys.readouterr().out) if "_aws" in record]
    assert metrics and metrics[-1]["EventsRejected"] == [1.0]
    assert sink.kinds() == ["event_rejected", "event_dead_lettered"]


def test_unknown_detail_type_is_ignored_and_counted_not_dead_lettered(
    dead_letter_queue: tuple[Any, str, CollectingSink], capsys: pytest.CaptureFixture[str]
) -> None:
    sqs, url, sink = dead_letter_queue
    event = load_event("unknown/unknown-detail-type.json")

    result = tag_guard.lambda_handler(event, LambdaContext("TagGuardFunction"))

    assert result["status"] == "ignored"
    assert "unknown detail-type" in result["reason"]
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []
    metrics = [record for record in _stdout_records(capsys.readouterr().out) if "_aws" in record]
    assert metrics[-1]["EventsIgnored"] == [1.0]
    assert sink.kinds() == ["event_ignored"]


def test_an_event_for_another_function_is_ignored_by_name(dead_letter_queue: tuple[Any, str, CollectingSink]) -> None:
    result = tag_guard.lambda_handler(load_event("ecr-scan-clean.json"), LambdaContext("TagGuardFunction"))
    assert result["status"] == "ignored"
    assert result["reason"] == "'ECR Image Scan' is not handled by TagGuardFunction"


def test_log_keys_of_one_invocation_do_not_leak_into_the_next(
    dead_letter_queue: tuple[Any, str, CollectingSink], caplog: pytest.LogCaptureFixture
) -> None:
    ignored = load_event("ecr-scan-clean.json")
    tag_guard.lambda_handler(ignored, LambdaContext("TagGuardFunction"))
    tag_guard.logger.append_keys(detail_type="left over")  # what a processed event would have appended
    malformed = load_event("ecr-push-tagged.json")
    del malformed["detail"]["image-digest"]

    tag_guard.lambda_handler(malformed, LambdaContext("TagGuardFunction"))

    (log,) = [record for record in caplog.records if record.getMessage() == "event rejected"]
    formatted = json.loads(tag_guard.logger.registered_formatter.format(log))
    assert formatted["event_id"] == malformed["id"]
    assert "detail_type" not in formatted


# Actions receive the container the handler got once; SQS batches are handled record by record.

EDGE_FUNCTION = "EdgeTestFunction"
# Its own stream: context keys (message_id) are rendered when a record is emitted, not when read back.
edge_log = io.StringIO()
edge_logger = Logger(service="edge-test", logger_handler=logging.StreamHandler(edge_log))
edge_metrics = Metrics(namespace="EdgeTest")


@dataclass
class RecordingDeadLetters:
    sent: list[tuple[object, str, str]] = field(default_factory=list)

    def send(self, raw_event: object, *, reason: str, function: str) -> None:
        self.sent.append((raw_event, reason, function))


@dataclass
class RecordingAction:
    """Runs like a function's logic: records what it was given; raises for the event ids in ``fail_on``."""

    fail_on: set[str] = field(default_factory=set)
    calls: list[tuple[str, Dependencies]] = field(default_factory=list)

    def __call__(self, event: ImageActionEvent, dependencies: Dependencies) -> dict[str, Any]:
        self.calls.append((event.id, dependencies))
        if event.id in self.fail_on:
            raise RuntimeError("registry unavailable")
        return {"result": "done"}

    @property
    def event_ids(self) -> list[str]:
        return [event_id for event_id, _ in self.calls]


@dataclass
class OfflineEdge:
    dependencies: Dependencies
    dead_letters: RecordingDeadLetters
    sink: CollectingSink

    def run_batch(self, batch: dict[str, Any], action: RecordingAction) -> PartialItemFailureResponse:
        return process_sqs_batch(
            batch,
            LambdaContext(EDGE_FUNCTION),  # type: ignore[arg-type]
            function=EDGE_FUNCTION,
            accepts=(ImageActionEvent,),
            action=action,
            dependencies=self.dependencies,
            logger=edge_logger,
            metrics=edge_metrics,
        )


def offline_dependencies(environment: dict[str, str] | None = None) -> OfflineEdge:
    sink = CollectingSink()
    dependencies = Dependencies(
        settings_from_environment({"AWS_REGION": "us-east-1", **(environment or {})}), clients=AwsClients(), sink=sink
    )
    dead_letters = RecordingDeadLetters()
    dependencies.__dict__["dead_letters"] = dead_letters  # a cached_property reads the instance dict first
    return OfflineEdge(dependencies, dead_letters, sink)


@pytest.fixture
def offline_edge() -> Iterator[OfflineEdge]:
    edge_metrics.clear_metrics()  # Metrics instances share one metric set
    edge_log.seek(0)
    edge_log.truncate()
    yield offline_dependencies()
    edge_metrics.clear_metrics()


def sqs_record(message_id: str, body: str) -> dict[str, Any]:
    (template, *_) = load_event("sqs/sqs-batch.json")["Records"]
    return {**template, "messageId": message_id, "body": body}


def counted(name: str) -> float:
    values = edge_metrics.metric_set.get(name, {}).get("Value", [])
    return float(sum(values))


def test_process_event_hands_the_action_the_dependencies_it_was_given(offline_edge: OfflineEdge) -> None:
    action = RecordingAction()
    event = load_event("ecr-push-tagged.json")

    result = process_event(
        event,
        LambdaContext(EDGE_FUNCTION),  # type: ignore[arg-type]
        function=EDGE_FUNCTION,
        accepts=(ImageActionEvent,),
        action=action,
        dependencies=offline_edge.dependencies,
        logger=edge_logger,
        metrics=edge_metrics,
    )

    assert result == {"status": "processed", "event_id": event["id"], "result": "done"}
    assert action.calls == [(event["id"], offline_edge.dependencies)]


@pytest.mark.filterwarnings("ignore:No application metrics")  # process_event, which counts, is replaced
@pytest.mark.parametrize("module", ["tag_guard", "retag"])
def test_handlers_get_the_dependencies_once_and_hand_them_to_their_action(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Imported here so that one handler's broken import fails its own case, not the whole file.
    handler = importlib.import_module(f"ecr_automation.handlers.{module}")
    # Given a container the handler can ask for, counting how often it does
    dependencies = offline_dependencies().dependencies
    asked: list[Dependencies] = []

    def get_dependencies() -> Dependencies:
        asked.append(dependencies)
        return dependencies

    wired: dict[str, Any] = {}

    def process_event(raw: object, context: object, **wiring: Any) -> dict[str, Any]:
        del raw, context
        wired.update(wiring)
        return {"status": "processed"}

    monkeypatch.setattr(handler, "get_dependencies", get_dependencies)
    monkeypatch.setattr(handler, "process_event", process_event)
    handler.metrics.clear_metrics()

    # When it is invoked
    handler.lambda_handler(load_event("ecr-push-tagged.json"), LambdaContext(EDGE_FUNCTION))

    # Then it asked once and passed that container on, to an action that takes it with the event
    assert asked == [dependencies]
    assert wired["dependencies"] is dependencies
    assert list(inspect.signature(wired["action"]).parameters) == ["event", "dependencies"]


def test_sqs_batch_reports_only_the_record_whose_action_failed(offline_edge: OfflineEdge) -> None:
    # Given a good push, a body that is not JSON, and a push whose action raises
    good, failing = load_event("ecr-push-tagged.json"), load_event("ecr-push-latest.json")
    batch = {
        "Records": [
            sqs_record("message-good", json.dumps(good)),
            sqs_record("message-malformed", '{"version": "0", "id": '),
            sqs_record("message-failing", json.dumps(failing)),
        ]
    }
    action = RecordingAction(fail_on={failing["id"]})

    # When the batch is processed
    response = offline_edge.run_batch(batch, action)

    # Then SQS redelivers only the failing record
    assert response == {"batchItemFailures": [{"itemIdentifier": "message-failing"}]}
    # and the good record's action ran exactly once
    assert action.event_ids.count(good["id"]) == 1
    assert action.event_ids == [good["id"], failing["id"]]
    # and the malformed one was dead-lettered whole, with a one-line reason naming the body
    ((raw, reason, function),) = offline_edge.dead_letters.sent
    assert raw == '{"version": "0", "id": '
    assert reason.startswith("body: not JSON (") and "\n" not in reason
    assert function == EDGE_FUNCTION
    assert offline_edge.sink.kinds() == ["event_rejected"]
    assert (counted("EventsProcessed"), counted("EventsRejected"), counted("EventsFailed")) == (1, 1, 1)
    logs = [json.loads(line) for line in edge_log.getvalue().splitlines()]
    (rejected,) = [log for log in logs if log.get("message") == "event rejected"]
    assert (rejected["level"], rejected["message_id"], rejected["reason"]) == ("WARNING", "message-malformed", reason)
    assert "detail_type" not in rejected  # the good record's keys ended with it
    (failed,) = [log for log in logs if log.get("message") == "event failed: SQS will redeliver it"]
    assert (failed["message_id"], failed["event_id"]) == ("message-failing", failing["id"])


def test_sqs_batch_dead_letters_an_invalid_event_and_ignores_an_unknown_one(offline_edge: OfflineEdge) -> None:
    invalid = load_event("ecr-push-tagged.json")
    del invalid["detail"]["image-digest"]
    unknown = load_event("unknown/unknown-detail-type.json")
    batch = {"Records": [sqs_record("message-invalid", json.dumps(invalid)), sqs_record("m-2", json.dumps(unknown))]}
    action = RecordingAction()

    response = offline_edge.run_batch(batch, action)

    assert response == {"batchItemFailures": []}
    assert action.calls == []
    assert offline_edge.dead_letters.sent == [(invalid, "detail.image-digest: field required", EDGE_FUNCTION)]
    assert offline_edge.sink.kinds() == ["event_rejected", "event_ignored"]
    assert (counted("EventsRejected"), counted("EventsIgnored")) == (1, 1)


def test_sqs_batch_sample_is_processed_whole(offline_edge: OfflineEdge) -> None:
    action = RecordingAction()
    batch = load_event("sqs/sqs-batch.json")

    assert offline_edge.run_batch(batch, action) == {"batchItemFailures": []}
    assert action.event_ids == [json.loads(record["body"])["id"] for record in batch["Records"]]


def test_sqs_batch_whose_every_record_fails_fails_the_invocation(offline_edge: OfflineEdge) -> None:
    # Powertools raises so the invocation counts as an error; SQS then redelivers the whole batch.
    event = load_event("ecr-push-tagged.json")
    with pytest.raises(BatchProcessingError):
        offline_edge.run_batch({"Records": [sqs_record("m-1", json.dumps(event))]}, RecordingAction({event["id"]}))


def test_sqs_batch_runs_a_redelivered_event_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an idempotency table, and the same event in two messages (EventBridge delivered it twice)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    event = load_event("ecr-push-tagged.json")
    batch = {"Records": [sqs_record("m-1", json.dumps(event)), sqs_record("m-2", json.dumps(event))]}
    action = RecordingAction()
    with mock_aws():
        builders.create_table_like(boto3.client("dynamodb", region_name="us-east-1"), "IdempotencyTable", "idem")
        edge = offline_dependencies({"IDEMPOTENCY_TABLE": "idem"})

        # When the batch is processed
        response = edge.run_batch(batch, action)

    # Then both messages are done with, and the action ran once
    assert response == {"batchItemFailures": []}
    assert action.event_ids == [event["id"]]
