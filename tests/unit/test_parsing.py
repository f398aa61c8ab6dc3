"""The edge: every sample parses into its typed model; bad input is rejected with a one-line reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ecr_automation.models.events import APPLICATION_SOURCE
from ecr_automation.models.events.application import (
    ImageReplicationFailedEvent,
    LifecycleViolationEvent,
    TagGuardViolationAttributedEvent,
    TagGuardViolationEvent,
    ViolationDetail,
)
from ecr_automation.models.events.base import Severity
from ecr_automation.models.events.cloudtrail import ApiCallEvent, LifecyclePolicyPutEvent
from ecr_automation.models.events.ecr_other import PullThroughCacheEvent, ReferrerActionEvent
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.models.events.inspector_findings import InspectorFindingEvent
from ecr_automation.models.events.replication import ReplicationActionEvent
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent, ScanResourceChangeEvent
from ecr_automation.models.parsing import EventRejected, IgnoredEvent, parse_event
from tests.conftest import EVENTS, load_event

LIMIT = 256 * 1024

MODEL_OF_SAMPLE = {
    "ecr-push-tagged.json": ImageActionEvent,
    "ecr-push-by-digest.json": ImageActionEvent,
    "ecr-push-conflicting.json": ImageActionEvent,
    "ecr-push-latest.json": ImageActionEvent,
    "ecr-delete.json": ImageActionEvent,
    "ecr-delete-by-digest.json": ImageActionEvent,
    "ecr-archive.json": ImageActionEvent,
    "ecr-restore.json": ImageActionEvent,
    "ecr-scan-findings.json": ImageScanEvent,
    "ecr-scan-clean.json": ImageScanEvent,
    "ecr-scan-failed.json": ImageScanEvent,
    "inspector-scan.json": InspectorScanEvent,
    "inspector-finding.json": InspectorFindingEvent,
    "ecr-replication-success.json": ReplicationActionEvent,
    "ecr-replication-failed.json": ReplicationActionEvent,
    "ecr-pull-through-cache.json": PullThroughCacheEvent,
    "ecr-referrer-action.json": ReferrerActionEvent,
    "ecr-scan-resource-change.json": ScanResourceChangeEvent,
    "cloudtrail-put-image.json": ApiCallEvent,
    "guard-violation.json": TagGuardViolationEvent,
    "guard-violation-attributed.json": TagGuardViolationAttributedEvent,
    "replication-failed.json": ImageReplicationFailedEvent,
    "cloudtrail-put-lifecycle-policy.json": LifecyclePolicyPutEvent,
    "lifecycle-violation.json": LifecycleViolationEvent,
}
# Samples that are not one EventBridge event (kept below events/sqs/): an SQS batch carries events in
# its message bodies.
BATCH_SAMPLES = {"sqs/sqs-batch.json"}


def test_every_top_level_sample_has_a_model() -> None:
    assert {path.name for path in EVENTS.glob("*.json")} == set(MODEL_OF_SAMPLE)


@pytest.mark.parametrize("name", sorted(BATCH_SAMPLES))
def test_every_message_body_of_a_batch_sample_parses(name: str) -> None:
    records = load_event(name)["Records"]
    assert records
    for record in records:
        assert not isinstance(parse_event(json.loads(record["body"]), max_bytes=LIMIT), IgnoredEvent)


@pytest.mark.parametrize(("name", "model"), MODEL_OF_SAMPLE.items())
def test_sample_parses_into_its_model(name: str, model: type) -> None:
    assert isinstance(parse_event(load_event(name), max_bytes=LIMIT), model)


def test_push_by_digest_has_no_tag() -> None:
    event = parse_event(load_event("ecr-push-by-digest.json"), max_bytes=LIMIT)
    assert isinstance(event, ImageActionEvent)
    assert event.detail.image_tag is None


def test_clean_scan_counts_are_all_zero_and_missing_keys_mean_zero() -> None:
    clean = parse_event(load_event("ecr-scan-clean.json"), max_bytes=LIMIT)
    dirty = parse_event(load_event("ecr-scan-findings.json"), max_bytes=LIMIT)
    assert isinstance(clean, ImageScanEvent) and isinstance(dirty, ImageScanEvent)
    assert clean.detail.finding_severity_counts.total == 0
    counts = dirty.detail.finding_severity_counts
    assert counts.informational == 0
    assert counts.at_or_above(Severity.HIGH) == counts.critical + counts.high > 0


def test_failed_scan_is_not_complete() -> None:
    failed = parse_event(load_event("ecr-scan-failed.json"), max_bytes=LIMIT)
    assert isinstance(failed, ImageScanEvent)
    assert not failed.detail.complete


def test_inspector_scan_names_the_repository_by_arn_and_is_normalised() -> None:
    raw = load_event("inspector-scan.json")
    event = parse_event(raw, max_bytes=LIMIT)
    assert isinstance(event, InspectorScanEvent)
    assert raw["detail"]["repository-name"].startswith("arn:aws:ecr:")
    assert event.detail.repository_name == raw["detail"]["repository-name"].split(":repository/", 1)[1]
    assert event.detail.complete


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dec 3, 2021, 6:02:30 PM", datetime(2021, 12, 3, 18, 2, 30, tzinfo=UTC)),
        ("Wed Sep 04 16:55:38.411 UTC 2024", datetime(2024, 9, 4, 16, 55, 38, 411000, tzinfo=UTC)),
        ("2024-09-04T16:55:38Z", datetime(2024, 9, 4, 16, 55, 38, tzinfo=UTC)),
    ],
)
def test_inspector_timestamps_are_normalised_to_utc(text: str, expected: datetime) -> None:
    raw = load_event("inspector-finding.json")
    raw["detail"]["updatedAt"] = text
    event = parse_event(raw, max_bytes=LIMIT)
    assert isinstance(event, InspectorFindingEvent)
    assert event.detail.updated_at == expected


def test_inspector_finding_exposes_the_fix() -> None:
    event = parse_event(load_event("inspector-finding.json"), max_bytes=LIMIT)
    assert isinstance(event, InspectorFindingEvent)
    details = event.detail.package_vulnerability_details
    assert details is not None and details.vulnerability_id.startswith("CVE-")
    assert any(package.fixed_in_version for package in details.vulnerable_packages)
    assert event.detail.container_image is not None


def test_unknown_extra_fields_are_tolerated() -> None:
    raw = load_event("ecr-push-tagged.json")
    raw["detail"]["brand-new-field"] = {"from": "the future"}
    raw["another-envelope-field"] = 1
    assert isinstance(parse_event(raw, max_bytes=LIMIT), ImageActionEvent)


@pytest.mark.parametrize("name", sorted(path.name for path in (EVENTS / "unknown").glob("*.json")))
def test_unknown_detail_and_action_types_are_ignored_on_purpose(name: str) -> None:
    outcome = parse_event(json.loads((EVENTS / "unknown" / name).read_text()), max_bytes=LIMIT)
    assert isinstance(outcome, IgnoredEvent)
    assert "unknown" in outcome.reason


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("missing-digest.json", "detail.image-digest"),
        ("bad-repository-name.json", "detail.repository-name"),
        ("bad-tag.json", "detail.image-tag"),
        ("wrong-source.json", "source"),
        ("mistyped-counts.json", "detail.finding-severity-counts.HIGH"),
        ("not-an-object.json", "not an object"),
    ],
)
def test_malformed_samples_are_rejected_naming_the_field(name: str, field: str) -> None:
    raw: Any = json.loads((EVENTS / "malformed" / name).read_text())
    with pytest.raises(EventRejected) as rejection:
        parse_event(raw, max_bytes=LIMIT)
    assert field in rejection.value.reason
    assert "\n" not in rejection.value.reason


def test_every_malformed_sample_is_covered() -> None:
    covered = {
        "missing-digest.json",
        "bad-repository-name.json",
        "bad-tag.json",
        "wrong-source.json",
        "mistyped-counts.json",
        "not-an-object.json",
    }
    assert {path.name for path in (EVENTS / "malformed").glob("*.json")} == covered


def test_oversized_event_is_rejected_with_its_id() -> None:
    raw = load_event("ecr-push-tagged.json")
    raw["detail"]["padding"] = "x" * LIMIT
    with pytest.raises(EventRejected) as rejection:
        parse_event(raw, max_bytes=LIMIT)
    assert "over the 262144-byte limit" in rejection.value.reason
    assert rejection.value.event_id == raw["id"]


def test_archive_and_restore_carry_their_storage_class() -> None:
    archive = parse_event(load_event("ecr-archive.json"), max_bytes=LIMIT)
    restore = parse_event(load_event("ecr-restore.json"), max_bytes=LIMIT)
    assert isinstance(archive, ImageActionEvent) and isinstance(restore, ImageActionEvent)
    assert archive.detail.target_storage_class == "ARCHIVE"
    assert restore.detail.target_storage_class == "STANDARD"
    assert restore.detail.last_activated_at is not None


def test_own_violation_event_is_typed() -> None:
    event = parse_event(load_event("guard-violation.json"), max_bytes=LIMIT)
    assert isinstance(event, TagGuardViolationEvent)
    assert event.source == APPLICATION_SOURCE
    detail = event.detail
    assert (detail.severity, detail.repository_name, detail.image_tag) == ("HIGH", "team/web", "v1.2.3")
    assert detail.claimed_digest != detail.offending_digest
    assert detail.quarantine_tag == "quarantine-afa020ece140"
    assert detail.source_event_time == datetime(2026, 11, 28, 12, 5, tzinfo=UTC)


def test_attributed_violation_names_the_actor() -> None:
    event = parse_event(load_event("guard-violation-attributed.json"), max_bytes=LIMIT)
    assert isinstance(event, TagGuardViolationAttributedEvent)
    assert event.detail.actor.startswith("arn:aws:sts::")
    assert event.detail.actor in event.detail.summary


def test_violation_samples_carry_every_key_the_model_knows() -> None:
    keys = {field.alias or field_name for field_name, field in ViolationDetail.model_fields.items()}
    for name in ("guard-violation.json", "guard-violation-attributed.json"):
        assert set(load_event(name)["detail"]) == keys, name


def test_quarantine_tag_may_be_null() -> None:
    raw = load_event("guard-violation.json")
    raw["detail"]["quarantine-tag"] = None
    event = parse_event(raw, max_bytes=LIMIT)
    assert isinstance(event, TagGuardViolationEvent)
    assert event.detail.quarantine_tag is None


def test_own_event_tolerates_extra_detail_keys() -> None:
    raw = load_event("guard-violation.json")
    raw["detail"]["added-later"] = True
    assert isinstance(parse_event(raw, max_bytes=LIMIT), TagGuardViolationEvent)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("claimed-digest", None, "detail.claimed-digest: field required"),
        ("severity", "LOW", "detail.severity: "),
        ("offending-digest", "latest", "detail.offending-digest: "),
        ("source-event-time", "yesterday", "detail.source-event-time: "),
        ("actor", None, "detail.actor: field required"),
    ],
)
def test_malformed_own_event_is_rejected_naming_the_field(field: str, value: object, reason: str) -> None:
    raw = load_event("guard-violation-attributed.json")
    if value is None:
        del raw["detail"][field]
    else:
        raw["detail"][field] = value
    with pytest.raises(EventRejected) as rejection:
        parse_event(raw, max_bytes=LIMIT)
    assert rejection.value.reason.startswith(reason)
    assert "\n" not in rejection.value.reason
    assert rejection.value.event_id == raw["id"]


def test_unknown_detail_type_from_our_own_source_is_ignored_on_purpose() -> None:
    raw = load_event("guard-violation.json")
    raw["detail-type"] = "Replication Completed"
    outcome = parse_event(raw, max_bytes=LIMIT)
    assert isinstance(outcome, IgnoredEvent)
    assert outcome.reason == f"unknown detail-type 'Replication Completed' from {APPLICATION_SOURCE}"
