"""Handlers at the edge: bad input gets a one-line reason, a log record, a metric and a dead letter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import tag_guard
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.effects import CollectingSink
from tests.conftest import load_event


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

    result = tag_guard.lambda_handler(event, LambdaContext("TagGuardFunction"))  # type: ignore[arg-type]

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

    result = tag_guard.lambda_handler(event, LambdaContext("TagGuardFunction"))  # type: ignore[arg-type]

    assert result["status"] == "ignored"
    assert "unknown detail-type" in result["reason"]
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []
    metrics = [record for record in _stdout_records(capsys.readouterr().out) if "_aws" in record]
    assert metrics[-1]["EventsIgnored"] == [1.0]
    assert sink.kinds() == ["event_ignored"]


def test_an_event_for_another_function_is_ignored_by_name(dead_letter_queue: tuple[Any, str, CollectingSink]) -> None:
    result = tag_guard.lambda_handler(load_event("ecr-scan-clean.json"), LambdaContext("TagGuardFunction"))  # type: ignore[arg-type]
    assert result["status"] == "ignored"
    assert result["reason"] == "'ECR Image Scan' is not handled by TagGuardFunction"


def test_log_keys_of_one_invocation_do_not_leak_into_the_next(
    dead_letter_queue: tuple[Any, str, CollectingSink], caplog: pytest.LogCaptureFixture
) -> None:
    ignored = load_event("ecr-scan-clean.json")
    tag_guard.lambda_handler(ignored, LambdaContext("TagGuardFunction"))  # type: ignore[arg-type]
    tag_guard.logger.append_keys(detail_type="left over")  # what a processed event would have appended
    malformed = load_event("ecr-push-tagged.json")
    del malformed["detail"]["image-digest"]

    tag_guard.lambda_handler(malformed, LambdaContext("TagGuardFunction"))  # type: ignore[arg-type]

    (log,) = [record for record in caplog.records if record.getMessage() == "event rejected"]
    formatted = json.loads(tag_guard.logger.registered_formatter.format(log))
    assert formatted["event_id"] == malformed["id"]
    assert "detail_type" not in formatted
