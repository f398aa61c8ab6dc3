"""Every EventBridge rule in the template matches exactly the sample events meant for it, and no other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from moto.events.models import EventPattern

from ecr_automation.local.template import SamTemplate
from tests.conftest import EVENTS

# Scenarios (events/scenarios/) are runs of several events for `simulate`, and findings (events/findings/)
# what `simulate --findings` serves: neither are events themselves.
NOT_EVENTS = {"scenarios", "findings"}
SAMPLES = sorted(
    path.relative_to(EVENTS).as_posix() for path in EVENTS.rglob("*.json") if not NOT_EVENTS & set(path.parts)
)

EXPECTED: dict[str, set[str]] = {
    "TagGuardFunction": {
        "ecr-push-tagged.json",
        "ecr-push-conflicting.json",
        "ecr-push-latest.json",
        "ecr-delete.json",
        "ecr-delete-by-digest.json",
        "ecr-restore.json",
        "cloudtrail-put-image.json",
        # Patterns do not validate: these look like what the rule matches, are delivered, and the
        # function rejects them to the dead-letter queue.
        "malformed/missing-digest.json",
        "malformed/bad-repository-name.json",
        "malformed/bad-tag.json",
    },
    "RetagFunction": {
        "ecr-push-tagged.json",
        "ecr-push-conflicting.json",
        "ecr-push-latest.json",
        "ecr-push-by-digest.json",
        "ecr-scan-findings.json",
        "ecr-scan-clean.json",
        "inspector-scan.json",
        "malformed/missing-digest.json",
        "malformed/bad-repository-name.json",
        "malformed/bad-tag.json",
        "malformed/mistyped-counts.json",
    },
    "NotifyFunction": {
        "ecr-scan-findings.json",
        "ecr-scan-clean.json",
        "ecr-scan-failed.json",
        "inspector-scan.json",
        "inspector-finding.json",
        "guard-violation.json",
        "guard-violation-attributed.json",
        "ecr-replication-failed.json",
        "replication-failed.json",
        "lifecycle-violation.json",
        "malformed/mistyped-counts.json",
    },
    # Tagged pushes (a push by digest is copied as part of its tagged index) and completed scans.
    "ReplicationPlannerFunction": {
        "ecr-push-tagged.json",
        "ecr-push-conflicting.json",
        "ecr-push-latest.json",
        "ecr-scan-findings.json",
        "ecr-scan-clean.json",
        "inspector-scan.json",
        "malformed/missing-digest.json",
        "malformed/bad-repository-name.json",
        "malformed/bad-tag.json",
        "malformed/mistyped-counts.json",
    },
    # Invoked by its SQS queue only, with the jobs the planner sends: no EventBridge rule reaches it.
    "ReplicationWorkerFunction": set(),
    # A lifecycle policy put (CloudTrail, successful calls only).
    "LifecycleGuardFunction": {"cloudtrail-put-lifecycle-policy.json"},
}
MEANT_FOR_NONE = {
    "ecr-archive.json",
    "ecr-replication-success.json",
    "ecr-pull-through-cache.json",
    "ecr-referrer-action.json",
    "ecr-scan-resource-change.json",
    "unknown/unknown-detail-type.json",
    "unknown/unknown-action-type.json",
    "malformed/wrong-source.json",
    "malformed/not-an-object.json",
    # Not EventBridge events: what an SQS-triggered function receives (a batch of events; a replication job).
    "sqs/sqs-batch.json",
    "sqs/replication-job.json",
}


def matches(pattern: dict[str, object], event: object) -> bool:
    if not isinstance(event, dict):
        return False
    return bool(EventPattern.load(json.dumps(pattern)).matches_event(event))  # type: ignore[arg-type]


def test_every_function_has_expectations(template: SamTemplate) -> None:
    missing = set(template.functions()) - set(EXPECTED)
    assert not missing, f"add the samples meant for {sorted(missing)} to EXPECTED"


def test_every_sample_is_accounted_for() -> None:
    meant = set().union(*EXPECTED.values()) | MEANT_FOR_NONE
    assert set(SAMPLES) == meant, f"new: {set(SAMPLES) - meant}, gone: {meant - set(SAMPLES)}"
    assert not set().union(*EXPECTED.values()) & MEANT_FOR_NONE


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_reaches_exactly_the_functions_meant_for_it(template: SamTemplate, sample: str) -> None:
    event = json.loads(Path(EVENTS / sample).read_text())
    reached = {
        logical_id
        for logical_id, function in template.functions().items()
        if any(matches(rule.pattern, event) for rule in function.rules)
    }
    meant = {logical_id for logical_id, samples in EXPECTED.items() if sample in samples}
    assert reached == meant
