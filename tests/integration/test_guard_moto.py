"""Tag guard end to end: the Lambda handler against a moto server over HTTP, outcomes read back from it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from tests.conftest import EVENTS
from tests.support import builders
from tests.support.guard_stack import GuardStack as SharedGuardStack
from tests.support.guard_stack import guard_stack
from tests.support.moto_server import MotoServer

ACCOUNT, REGION, REPOSITORY = "123456789012", "us-east-1", "team/web"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def image_action(action: str, tag: str | None, digest: str, event_id: str) -> dict[str, Any]:
    return builders.image_action(action, tag, digest, event_id=event_id)


class GuardStack(SharedGuardStack):
    def violations(self) -> list[dict[str, Any]]:
        """Violation events (and their attributions), as delivered by an EventBridge rule to an SQS queue."""
        return self.published()

    def claim(self, tag: str) -> dict[str, Any] | None:
        return super().claim(tag)


@pytest.fixture
def stack(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GuardStack]:
    with guard_stack(aws, monkeypatch) as shared:
        yield GuardStack(shared.aws, shared.sink)


def test_first_push_claims_and_a_repush_changes_nothing(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")

    first = stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    again = stack.invoke(image_action("PUSH", "v1.2.3", release, "e-2"))

    assert first["result"] == "claimed" and again["result"] == "unchanged"
    claim = stack.claim("v1.2.3")
    assert claim is not None and claim["digest"]["S"] == release and claim["event_id"]["S"] == "e-1"
    assert stack.violations() == []


def test_a_move_is_reverted_with_exact_bytes_quarantined_and_alerted_once(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = stack.push("impostor", "v1.2.3")
    assert stack.tag("v1.2.3") == impostor
    move = image_action("PUSH", "v1.2.3", impostor, "e-2")

    result = stack.invoke(move)
    stack.invoke(move)  # EventBridge delivers at least once

    assert result["result"] == "reverted"
    assert stack.tag("v1.2.3") == release
    assert stack.manifest_bytes("v1.2.3") == stack.manifests[release]
    quarantine = f"quarantine-{impostor[7:19]}"
    assert stack.tag(quarantine) == impostor
    assert stack.manifest_bytes(quarantine) == stack.manifests[impostor]
    (violation,) = stack.violations()
    assert violation["detail-type"] == "Tag Guard Violation"
    assert violation["detail"]["offending-digest"] == impostor
    assert violation["detail"]["claimed-digest"] == release
    assert violation["detail"]["source-event-id"] == "e-2"


def test_the_guards_own_writes_come_back_as_no_ops(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = stack.push("impostor", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", impostor, "e-2"))
    stack.violations()
    writes_before = [effect for effect in stack.sink.effects if effect.kind.startswith(("tag_", "image_"))]

    stack.invoke(image_action("PUSH", "v1.2.3", release, "echo-1"))
    stack.invoke(image_action("PUSH", f"quarantine-{impostor[7:19]}", impostor, "echo-2"))

    assert [effect for effect in stack.sink.effects if effect.kind.startswith(("tag_", "image_"))] == writes_before
    assert stack.violations() == []


def test_a_deleted_protected_tag_is_restored(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")
    stack.push("release", "sha-keep")  # a second tag keeps the image when v1.2.3 is deleted, as in ECR
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    stack.ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": "v1.2.3"}])
    assert stack.tag("v1.2.3") is None
    delete = image_action("DELETE", "v1.2.3", release, "e-2")

    result = stack.invoke(delete)
    replay = stack.invoke(delete)

    assert result["result"] == "restored" and replay["result"] == "already_restored"
    assert stack.tag("v1.2.3") == release
    assert stack.manifest_bytes("v1.2.3") == stack.manifests[release]
    (violation,) = stack.violations()
    assert violation["detail"]["change"] == "deleted"


def test_claimed_image_gone_raises_a_critical_violation(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    stack.ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageDigest": release}])
    impostor = stack.push("impostor", "v1.2.3")
    move = image_action("PUSH", "v1.2.3", impostor, "e-2")

    result = stack.invoke(move)
    stack.invoke(move)

    assert result["result"] == "unrecoverable"
    assert stack.tag("v1.2.3") == impostor  # nothing guessed
    (violation,) = stack.violations()
    assert violation["detail"]["severity"] == "CRITICAL"
    assert "no longer exists" in violation["detail"]["summary"]


def at(event: dict[str, Any], time: str) -> dict[str, Any]:
    """The event as ECR stamps a change made at ``time`` (whole seconds, as EventBridge carries it)."""
    return {**event, "time": time}


def test_immutable_repository_delete_then_repush_is_reverted(stack: GuardStack) -> None:
    # Given an IMMUTABLE repository, where ECR refuses overwrites but not deletes: v1.2.3 pushed to A
    # (which retag also tagged sha-..., so A outlives its release tag), deleted, then pushed fresh to B
    stack.ecr.put_image_tag_mutability(repositoryName=REPOSITORY, imageTagMutability="IMMUTABLE")
    release = stack.push("release", "v1.2.3")
    stack.push("release", "sha-keep")
    stack.ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": "v1.2.3"}])
    impostor = stack.push("impostor", "v1.2.3")

    # When the three events are delivered in order
    results = [
        stack.invoke(at(image_action("PUSH", "v1.2.3", release, "e-1"), "2026-11-28T12:00:00Z"))["result"],
        stack.invoke(at(image_action("DELETE", "v1.2.3", release, "e-2"), "2026-11-28T12:00:03Z"))["result"],
        stack.invoke(at(image_action("PUSH", "v1.2.3", impostor, "e-3"), "2026-11-28T12:00:05Z"))["result"],
    ]

    # Then the tag is back on the release with its exact bytes, the impostor kept under its quarantine tag,
    # and the move reported once
    assert results[0] == "reverted"
    assert stack.tag("v1.2.3") == release
    assert stack.manifest_bytes("v1.2.3") == stack.manifests[release]
    assert stack.tag(f"quarantine-{impostor[7:19]}") == impostor
    (violation,) = stack.violations()
    assert violation["detail"]["offending-digest"] == impostor and violation["detail"]["change"] == "moved"
    # And ECR itself still refuses an overwrite: the guard leaves that to ECR
    body = builders.image_manifest("another")
    with pytest.raises(stack.ecr.exceptions.ImageAlreadyExistsException):
        stack.ecr.put_image(
            repositoryName=REPOSITORY,
            imageManifest=body,
            imageManifestMediaType=OCI_MANIFEST,
            imageDigest=builders.digest_of(body),
            imageTag="v1.2.3",
        )


def test_an_earlier_push_delivered_late_takes_its_tag_back(stack: GuardStack) -> None:
    # Given A pushed at 12:00:00 and B pushed over it at 12:00:05, B's event delivered first
    release = stack.push("release", "v1.2.3")
    impostor = stack.push("impostor", "v1.2.3")
    first = stack.invoke(at(image_action("PUSH", "v1.2.3", impostor, "e-b"), "2026-11-28T12:00:05Z"))
    # When A's event arrives
    late = stack.invoke(at(image_action("PUSH", "v1.2.3", release, "e-a"), "2026-11-28T12:00:00Z"))

    # Then A owns the tag and B is quarantined, with one violation naming B
    assert first["result"] == "claimed"
    assert late["result"] == "handed_over"
    assert stack.claim("v1.2.3")["digest"]["S"] == release  # type: ignore[index]
    assert stack.tag("v1.2.3") == release
    assert stack.tag(f"quarantine-{impostor[7:19]}") == impostor
    (violation,) = stack.violations()
    assert violation["detail"]["offending-digest"] == impostor
    assert violation["detail"]["claimed-digest"] == release
    # And a redelivery of B's event changes nothing and says nothing more
    assert stack.invoke(at(image_action("PUSH", "v1.2.3", impostor, "e-b2"), "2026-11-28T12:00:05Z"))["result"] in {
        "already_restored",
        "reverted",
    }
    assert stack.tag("v1.2.3") == release
    assert stack.violations() == []


def test_a_delete_delivered_before_its_push_is_put_back(stack: GuardStack) -> None:
    # Given A pushed at 12:00:00 and deleted at 12:00:10, the DELETE delivered first
    release = stack.push("release", "v1.2.3")
    stack.push("release", "sha-keep")  # the image stays when the release tag goes, as in ECR
    stack.ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": "v1.2.3"}])
    early = stack.invoke(at(image_action("DELETE", "v1.2.3", release, "e-del"), "2026-11-28T12:00:10Z"))
    # When the PUSH arrives
    late = stack.invoke(at(image_action("PUSH", "v1.2.3", release, "e-push"), "2026-11-28T12:00:00Z"))

    # Then the tag is restored on A and the deletion reported once
    assert early["result"] == "unclaimed_delete"
    assert late["result"] == "restored"
    assert stack.tag("v1.2.3") == release
    (violation,) = stack.violations()
    assert violation["detail"]["change"] == "deleted"


def test_a_delete_is_attributed_to_the_deleter_never_the_pusher(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")
    stack.push("release", "sha-keep")
    pusher = json.loads((EVENTS / "cloudtrail-put-image.json").read_text())
    pusher["detail"]["responseElements"]["image"]["imageId"]["imageDigest"] = release
    stack.invoke(pusher)  # CloudTrail: who pushed the release
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    stack.ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": "v1.2.3"}])
    stack.invoke(image_action("DELETE", "v1.2.3", release, "e-2"))
    (announced,) = stack.violations()
    assert announced["detail"]["actor"] == "unknown"  # the pusher is not the deleter

    deleter = "arn:aws:sts::123456789012:assumed-role/cleanup/janitor"
    trail = {
        **pusher,
        "id": "trail-delete",
        "detail": {
            **pusher["detail"],
            "eventName": "BatchDeleteImage",
            "userIdentity": {"type": "AssumedRole", "arn": deleter},
            "requestParameters": {"repositoryName": REPOSITORY, "imageIds": [{"imageTag": "v1.2.3"}]},
            "responseElements": {"imageIds": [{"imageTag": "v1.2.3", "imageDigest": release}], "failures": []},
        },
    }
    assert stack.invoke(trail)["result"] == "attributed"
    (attributed,) = stack.violations()
    assert attributed["detail"]["actor"] == deleter
    # The guard's own restoring PutImage, reported by CloudTrail, is never blamed for anything
    own = {**pusher, "id": "trail-own"}
    own["detail"] = {
        **pusher["detail"],
        "userAgent": "Boto3/1.38 md/Botocore#1.38 ecr-automation",
        "userIdentity": {"arn": "guard"},
    }
    assert stack.invoke(own)["violations_attributed"] == 0


def test_a_pull_through_cache_following_upstream_is_reported_not_reverted(
    stack: GuardStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('pull_through_cache = ["team/*"]\n[[guard]]\nrepositories = ["*"]\n')
    monkeypatch.setenv("RULES_FILE", str(rules))
    use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=stack.sink))
    release = stack.push("release", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    upstream = stack.push("upstream-moved", "v1.2.3")

    result = stack.invoke(image_action("PUSH", "v1.2.3", upstream, "e-2"))

    assert result["result"] == "mirrored"
    assert stack.tag("v1.2.3") == upstream
    (violation,) = stack.violations()
    assert violation["detail"]["handling"] == "mirrored"


def test_a_released_claim_is_taken_by_the_next_release_only(stack: GuardStack, aws: MotoServer) -> None:
    lost = stack.push("lost", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", lost, "e-1"))
    stack.ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageDigest": lost}])
    env = {**aws.env(), "TAG_LEDGER_TABLE": "ledger", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "ecr_automation", "guard", "release", REPOSITORY, "v1.2.3"]

    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    released = subprocess.run(
        [*command, "--reason", "image lost; rebuilt", "--registry-id", ACCOUNT],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 2 and "--reason" in refused.stderr
    assert released.returncode == 0, released.stderr
    rebuilt = stack.push("rebuilt", "v1.2.3")
    # A push dated before the release never claims again; the next one after it does.
    assert stack.invoke(at(image_action("PUSH", "v1.2.3", lost, "e-old"), "2026-11-28T12:00:00Z"))["result"] == "stale"
    time.sleep(1.1)  # event times have whole seconds: be clearly after the release
    after_release = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert stack.invoke(at(image_action("PUSH", "v1.2.3", rebuilt, "e-new"), after_release))["result"] == "claimed"
    assert stack.claim("v1.2.3")["digest"]["S"] == rebuilt  # type: ignore[index]
    items = aws.client("dynamodb").scan(TableName="ledger")["Items"]
    (audit,) = [item for item in items if item["sk"]["S"].startswith("release#v1.2.3#")]
    assert audit["released_reason"]["S"] == "image lost; rebuilt" and audit["previous_digest"]["S"] == lost


def test_conflicting_pushes_racing_leave_the_first_claim_and_quarantine_every_loser(stack: GuardStack) -> None:
    digests = [stack.push(f"racer-{index}", "v2.0.0") for index in range(6)]
    barrier = threading.Barrier(len(digests))
    results: dict[str, str] = {}

    def push_event(index: int, digest: str) -> None:
        barrier.wait()
        results[digest] = stack.invoke(image_action("PUSH", "v2.0.0", digest, f"race-{index}"))["result"]

    threads = [threading.Thread(target=push_event, args=(index, digest)) for index, digest in enumerate(digests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    claim = stack.claim("v2.0.0")
    assert claim is not None
    winner = claim["digest"]["S"]
    # The winner's own invocation finds a later racer on the tag and reverts it; each racer's is reverted
    # by someone, and each is reported exactly once, whoever got there first.
    assert results[winner] in {"claimed", "unchanged", "reverted", "already_restored"}
    assert stack.tag("v2.0.0") == winner
    losers = [digest for digest in digests if digest != winner]
    assert all(results[digest] in {"reverted", "already_restored"} for digest in losers)
    for loser in losers:
        assert stack.tag(f"quarantine-{loser[7:19]}") == loser
    violations = stack.violations()
    assert sorted(event["detail"]["offending-digest"] for event in violations) == sorted(losers)


def test_backfill_command_claims_what_repositories_hold(stack: GuardStack, aws: MotoServer) -> None:
    release = stack.push("release", "v1.0.0")
    stack.push("nightly", "latest")
    env = {**aws.env(), "TAG_LEDGER_TABLE": "ledger", "PATH": "/usr/bin:/bin"}

    completed = subprocess.run(
        [sys.executable, "-m", "ecr_automation", "guard", "backfill", REPOSITORY, "--registry-id", ACCOUNT],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["claimed"] == ["v1.0.0"]
    claim = stack.claim("v1.0.0")
    assert claim is not None and claim["digest"]["S"] == release
    assert stack.claim("latest") is None


def test_a_duplicate_delivery_is_answered_from_the_idempotency_table(
    stack: GuardStack, aws: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    builders.create_table_like(aws.client("dynamodb"), "IdempotencyTable", "idempotency")
    monkeypatch.setenv("IDEMPOTENCY_TABLE", "idempotency")
    use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=stack.sink))
    release = stack.push("release", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = stack.push("impostor", "v1.2.3")
    move = image_action("PUSH", "v1.2.3", impostor, "e-2")

    first = stack.invoke(move)
    effects_after_first = len(stack.sink.effects)
    second = stack.invoke(move)

    assert first == second
    assert len(stack.sink.effects) == effects_after_first  # not even a read-then-skip: the stored answer
    records = aws.client("dynamodb").scan(TableName="idempotency")["Items"]
    assert {record["status"]["S"] for record in records} == {"COMPLETED"}
    assert len(records) == 2
    assert len(stack.violations()) == 1


def test_cloudtrail_names_the_actor_of_an_announced_violation_once(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = stack.push("impostor", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", impostor, "e-2"))
    (announced,) = stack.violations()
    assert announced["detail"]["actor"] == "unknown"
    trail = json.loads((EVENTS / "cloudtrail-put-image.json").read_text())
    trail["detail"]["responseElements"]["image"]["imageId"]["imageDigest"] = impostor

    first = stack.invoke(trail)
    again = stack.invoke(trail)

    assert first["result"] == "attributed" and again["result"] == "recorded"
    (attributed,) = stack.violations()
    assert attributed["detail-type"] == "Tag Guard Violation Attributed"
    principal = trail["detail"]["userIdentity"]["arn"]
    assert attributed["detail"]["actor"] == principal
    assert f"by {principal} at" in attributed["detail"]["summary"]
    assert attributed["detail"]["offending-digest"] == impostor


def test_cloudtrail_first_means_the_violation_names_the_actor(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = stack.push("impostor", "v1.2.3")
    trail = json.loads((EVENTS / "cloudtrail-put-image.json").read_text())
    trail["detail"]["responseElements"]["image"]["imageId"]["imageDigest"] = impostor

    stack.invoke(trail)
    stack.invoke(image_action("PUSH", "v1.2.3", impostor, "e-2"))

    (violation,) = stack.violations()
    assert violation["detail-type"] == "Tag Guard Violation"
    assert violation["detail"]["actor"] == trail["detail"]["userIdentity"]["arn"]


def test_an_image_deleted_by_digest_is_reported_critical_per_protected_tag(stack: GuardStack) -> None:
    release = stack.push("release", "v1.2.3")
    stack.push("release", "latest")
    stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))
    stack.ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageDigest": release}])

    result = stack.invoke(image_action("DELETE", None, release, "e-2"))

    assert result["result"] == "unrecoverable"
    (violation,) = stack.violations()
    assert violation["detail"]["severity"] == "CRITICAL"
    assert violation["detail"]["image-tag"] == "v1.2.3" and violation["detail"]["change"] == "deleted"
