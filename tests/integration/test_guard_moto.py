"""Tag guard end to end: the Lambda handler against a moto server over HTTP, outcomes read back from it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import tag_guard
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.effects import CollectingSink
from tests.conftest import EVENTS
from tests.support import builders
from tests.support.moto_server import MotoServer

ACCOUNT, REGION, REPOSITORY = "123456789012", "us-east-1", "team/web"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def manifest_for(seed: str) -> tuple[str, str]:
    body = builders.image_manifest(seed)
    return body, builders.digest_of(body)


def image_action(action: str, tag: str | None, digest: str, event_id: str) -> dict[str, Any]:
    return builders.image_action(action, tag, digest, event_id=event_id)


@dataclass
class GuardStack:
    aws: MotoServer
    sink: CollectingSink
    manifests: dict[str, str]

    @property
    def ecr(self) -> Any:
        return self.aws.client("ecr")

    def push(self, seed: str, tag: str | None) -> str:
        """What `docker push` does to the registry: the image lands, the tag moves to it."""
        body, digest = manifest_for(seed)
        self.manifests[digest] = body
        kwargs = {"imageTag": tag} if tag else {}
        self.ecr.put_image(
            repositoryName=REPOSITORY,
            imageManifest=body,
            imageManifestMediaType=OCI_MANIFEST,
            imageDigest=digest,
            **kwargs,
        )
        return digest

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = tag_guard.lambda_handler(event, LambdaContext("TagGuardFunction"))  # type: ignore[arg-type]
        return result

    def tag(self, tag: str) -> str | None:
        try:
            details = self.ecr.describe_images(repositoryName=REPOSITORY, imageIds=[{"imageTag": tag}])["imageDetails"]
        except self.ecr.exceptions.ImageNotFoundException:
            return None
        return str(details[0]["imageDigest"])

    def manifest_bytes(self, tag: str) -> str:
        images = self.ecr.batch_get_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": tag}])["images"]
        return str(images[0]["imageManifest"])

    def violations(self) -> list[dict[str, Any]]:
        """Violation events, as delivered by an EventBridge rule to an SQS queue."""
        sqs = self.aws.client("sqs")
        url = sqs.get_queue_url(QueueName="violations")["QueueUrl"]
        received: list[dict[str, Any]] = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                received.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return received

    def claim(self, tag: str) -> dict[str, Any] | None:
        item = (
            self.aws.client("dynamodb")
            .get_item(
                TableName="ledger", Key={"pk": {"S": f"{ACCOUNT}#{REGION}#{REPOSITORY}"}, "sk": {"S": f"tag#{tag}"}}
            )
            .get("Item")
        )
        return item  # noqa: RET504 - typed here, untyped from boto3


@pytest.fixture
def stack(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GuardStack]:
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TAG_LEDGER_TABLE", "ledger")
    monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    aws.client("ecr").create_repository(repositoryName=REPOSITORY)
    builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", "ledger")
    queue_arn = aws.client("sqs").get_queue_attributes(
        QueueUrl=aws.client("sqs").create_queue(QueueName="violations")["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    events = aws.client("events")
    events.put_rule(Name="violations", EventPattern=json.dumps({"source": ["ecr-automation"]}))
    events.put_targets(Rule="violations", Targets=[{"Id": "queue", "Arn": queue_arn}])
    sink = CollectingSink()
    use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=sink))
    yield GuardStack(aws, sink, {})
    use_dependencies(None)


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


def test_natively_immutable_repository_is_left_to_ecr(stack: GuardStack) -> None:
    stack.ecr.put_image_tag_mutability(repositoryName=REPOSITORY, imageTagMutability="IMMUTABLE")
    release = stack.push("release", "v1.2.3")
    assert stack.invoke(image_action("PUSH", "v1.2.3", release, "e-1"))["result"] == "left_to_ecr"
    assert stack.claim("v1.2.3") is None


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
    assert results[winner] == "claimed"
    assert stack.tag("v2.0.0") == winner
    losers = [digest for digest in digests if digest != winner]
    assert all(results[digest] == "reverted" for digest in losers)
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
