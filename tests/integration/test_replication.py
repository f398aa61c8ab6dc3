"""Replication end to end: the planner and worker handlers against the moto server (ECR tokens, STS, SQS,
EventBridge), copying between real `docker-registry` processes that stand in for ECR registries.

ECR hosts map to the local registries through REGISTRY_ENDPOINT_OVERRIDES, as the local runner would map
them: the source registry (us-east-1) accepts exactly moto's ECR token, so the worker logs in the way it
does at ECR. Every test asserts that the destination's digests equal the source's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import replicate_planner, replicate_worker
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.effects import CollectingSink
from tests.support import builders
from tests.support.moto_server import MotoServer
from tests.support.registry import OciRegistry

ACCOUNT, OTHER_ACCOUNT = "123456789012", "222222222222"
SOURCE_REGION, MIRROR_REGION = "us-east-1", "us-west-2"
MAX_RECEIVES = 5
ROLE_ARN = f"arn:aws:iam::{OTHER_ACCOUNT}:role/ecr-replication"


def ecr_host(account: str, region: str) -> str:
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


@pytest.fixture(scope="module")
def other_account_registry() -> Iterator[OciRegistry]:
    """The other account's ECR registry: it accepts that account's ECR token only."""
    registry = OciRegistry("AWS", f"{OTHER_ACCOUNT}-auth-token")
    yield registry
    registry.stop()


@dataclass
class Stack:
    aws: MotoServer
    source: OciRegistry
    mirror: OciRegistry
    other: OciRegistry
    effects: CollectingSink
    queue_url: str
    dead_letter_url: str
    app_dead_letter_url: str
    repository: str

    # -- images at the source -------------------------------------------------------------------------------
    def push(self, tag: str, layers: list[bytes] | None = None) -> str:
        digest, _ = self.source.push_image(self.repository, tag, layers or [uuid.uuid4().bytes * 1000])
        return digest

    def push_index(self, tag: str) -> str:
        platforms = {
            "linux/amd64": [uuid.uuid4().bytes * 500, b"shared base layer" * 1000],
            "linux/arm64": [uuid.uuid4().bytes * 500, b"shared base layer" * 1000],
        }
        digest, _ = self.source.push_index(self.repository, tag, platforms)
        return digest

    # -- the functions --------------------------------------------------------------------------------------
    def plan(self, event: dict[str, Any]) -> dict[str, Any]:
        context = LambdaContext("ReplicationPlannerFunction")
        result: dict[str, Any] = replicate_planner.lambda_handler(event, context)
        return result

    def pushed(self, tag: str, digest: str) -> dict[str, Any]:
        return self.plan(
            builders.image_action("PUSH", tag, digest, event_id=str(uuid.uuid4()), repository=self.repository)
        )

    def scanned(self, digest: str, tags: list[str], counts: dict[str, int]) -> dict[str, Any]:
        detail = {
            "scan-status": "COMPLETE",
            "repository-name": self.repository,
            "image-digest": digest,
            "image-tags": tags,
            "finding-severity-counts": counts,
        }
        return self.plan(builders.ecr_event("ECR Image Scan", detail, event_id=str(uuid.uuid4())))

    def receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0
        ).get("Messages", [])
        return messages

    def work(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Invoke the worker as SQS would, then delete what it did not report failed (as SQS does)."""
        event = {"Records": [_sqs_record(message, self.queue_url) for message in messages]}
        context = LambdaContext("ReplicationWorkerFunction", timeout_seconds=300)
        try:
            response: dict[str, Any] = replicate_worker.lambda_handler(event, context)
        except Exception as error:  # every record failed: Powertools raises, and SQS redelivers them all
            if type(error).__name__ != "BatchProcessingError":
                raise
            response = {"batchItemFailures": [{"itemIdentifier": message["MessageId"]} for message in messages]}
        failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return response

    def replicate_all(self) -> dict[str, Any]:
        messages = self.receive()
        assert messages, "the planner queued nothing"
        return self.work(messages)

    @property
    def sqs(self) -> Any:
        return self.aws.client("sqs")

    def published(self, detail_type: str) -> list[dict[str, Any]]:
        return [
            effect.fields["detail"]
            for effect in self.effects.effects
            if effect.kind == "event_published" and effect.fields["detail_type"] == detail_type
        ]

    def queue_depth(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def _sqs_record(message: dict[str, Any], queue_url: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{SOURCE_REGION}:{ACCOUNT}:{queue_url.rsplit('/', 1)[-1]}",
        "awsRegion": SOURCE_REGION,
    }


def assert_identical(
    source: OciRegistry, source_repo: str, destination: OciRegistry, destination_repo: str, tag: str
) -> str:
    """The tag names byte-identical manifests (so identical digests) on both sides, children and blobs included."""
    raw, media_type, digest = source.get_manifest(source_repo, tag)
    copied, copied_type, copied_digest = destination.get_manifest(destination_repo, tag)
    assert (copied, copied_type, copied_digest) == (raw, media_type, digest)
    document = json.loads(raw)
    for child in document.get("manifests", []):
        assert destination.get_manifest(destination_repo, child["digest"])[2] == child["digest"]
        child_document = json.loads(source.get_manifest(source_repo, child["digest"])[0])
        for blob in [child_document["config"], *child_document["layers"]]:
            assert destination.blob_exists(destination_repo, blob["digest"])
    for blob in [document["config"], *document["layers"]] if "layers" in document else []:
        assert destination.blob_exists(destination_repo, blob["digest"])
    return digest


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text('[[guard]]\nrepositories = ["*"]\n' + text)
    return path


@pytest.fixture
def make_stack(
    aws: MotoServer,
    oci_registry_auth: OciRegistry,
    oci_registry: OciRegistry,
    other_account_registry: OciRegistry,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Any]:
    def make(rules: str) -> Stack:
        sqs = aws.client("sqs")
        dead_letter_url = sqs.create_queue(QueueName="replication-dlq")["QueueUrl"]
        dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        queue_url = sqs.create_queue(
            QueueName="replication",
            Attributes={
                "VisibilityTimeout": "0",  # redelivered at once: the tests play SQS's redelivery
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(MAX_RECEIVES)}
                ),
            },
        )["QueueUrl"]
        app_dead_letter_url = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
        builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", "ledger")
        overrides = {
            ecr_host(ACCOUNT, SOURCE_REGION): oci_registry_auth.url,
            ecr_host(ACCOUNT, MIRROR_REGION): oci_registry.url,
            ecr_host(OTHER_ACCOUNT, MIRROR_REGION): other_account_registry.url,
        }
        environment = {
            **aws.env(),
            "TAG_LEDGER_TABLE": "ledger",
            "RULES_FILE": str(rules_file(tmp_path, rules)),
            "REPLICATION_QUEUE_URL": queue_url,
            "REGISTRY_ENDPOINT_OVERRIDES": json.dumps(overrides),
            "REGISTRY_INSECURE": "true",
            "REPLICATION_MAX_RECEIVES": str(MAX_RECEIVES),
            "DEAD_LETTER_QUEUE_URL": app_dead_letter_url,
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
        effects = CollectingSink()
        use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=effects))
        repository = f"team/app-{uuid.uuid4().hex[:8]}"
        return Stack(
            aws,
            oci_registry_auth,
            oci_registry,
            other_account_registry,
            effects,
            queue_url,
            dead_letter_url,
            app_dead_letter_url,
            repository,
        )

    yield make
    use_dependencies(None)


MIRROR_RULE = f"""
[[replicate]]
repositories = ["team/*"]
tags_allow = ['^v[0-9]', '^latest$']
tags_deny = ['-rc']

[[replicate.targets]]
region = "{MIRROR_REGION}"
repository = "mirror/{{repository}}"
"""


# -- tests ----------------------------------------------------------------------------------------------------
def test_a_push_is_planned_queued_and_copied_with_identical_digests(make_stack: Any) -> None:
    stack: Stack = make_stack(MIRROR_RULE)
    digest = stack.push("v1.2.3")

    planned = stack.pushed("v1.2.3", digest)
    assert planned["result"] == "planned" and len(planned["jobs"]) == 1
    response = stack.replicate_all()

    assert response["batchItemFailures"] == []
    mirror = f"mirror/{stack.repository}"
    assert assert_identical(stack.source, stack.repository, stack.mirror, mirror, "v1.2.3") == digest
    # The destination repository was created in the mirror region, with the rule's settings.
    created = stack.aws.client("ecr", MIRROR_REGION).describe_repositories(repositoryNames=[mirror])["repositories"][0]
    assert created["imageScanningConfiguration"]["scanOnPush"] is True
    assert created["imageTagMutability"] == "MUTABLE"
    (replicated,) = stack.published("Image Replicated")
    assert replicated["image-digest"] == digest and replicated["tags"] == ["v1.2.3"]
    assert replicated["blobs-copied"] == 2 and replicated["bytes-copied"] > 0
    assert stack.queue_depth(stack.queue_url) == 0


def test_a_multi_arch_index_is_copied_whole(make_stack: Any) -> None:
    stack: Stack = make_stack(MIRROR_RULE)
    digest = stack.push_index("v2.0.0")

    stack.pushed("v2.0.0", digest)
    assert stack.replicate_all()["batchItemFailures"] == []

    assert (
        assert_identical(stack.source, stack.repository, stack.mirror, f"mirror/{stack.repository}", "v2.0.0") == digest
    )
    (replicated,) = stack.published("Image Replicated")
    # 2 configs + 2 own layers + 1 shared layer: the shared one crosses once.
    assert replicated["blobs-copied"] == 5


def test_tag_filters_decide_what_is_queued(make_stack: Any) -> None:
    stack: Stack = make_stack(MIRROR_RULE)
    release, candidate, dev = stack.push("v1.0.0"), stack.push("v1.1.0-rc1"), stack.push("dev")

    assert stack.pushed("v1.1.0-rc1", candidate)["jobs"] == []
    assert stack.pushed("dev", dev)["jobs"] == []
    assert len(stack.pushed("v1.0.0", release)["jobs"]) == 1
    stack.replicate_all()

    mirror = f"mirror/{stack.repository}"
    assert stack.mirror.tags(mirror) == ["v1.0.0"]
    assert_identical(stack.source, stack.repository, stack.mirror, mirror, "v1.0.0")


def test_an_image_already_present_uploads_nothing_and_a_later_tag_costs_one_manifest(make_stack: Any) -> None:
    stack: Stack = make_stack(MIRROR_RULE)
    digest = stack.push("v3.0.0")
    stack.pushed("v3.0.0", digest)
    stack.replicate_all()

    # The same push delivered again, and the same image tagged latest later.
    manifest, media_type, _ = stack.source.get_manifest(stack.repository, digest)
    stack.source.push_manifest(stack.repository, "latest", manifest, media_type)
    stack.pushed("v3.0.0", digest)
    stack.pushed("latest", digest)
    assert stack.replicate_all()["batchItemFailures"] == []

    first, *again = stack.published("Image Replicated")
    assert first["blobs-copied"] == 2
    assert sorted(event["blobs-copied"] for event in again) == [0, 0]
    assert sorted(event["tags-written"] for event in again) == [[], ["latest"]]
    mirror = f"mirror/{stack.repository}"
    for tag in ("v3.0.0", "latest"):
        assert assert_identical(stack.source, stack.repository, stack.mirror, mirror, tag) == digest


def test_a_scan_gated_rule_waits_for_a_clean_scan(make_stack: Any) -> None:
    stack: Stack = make_stack(
        f'[[replicate]]\nrepositories = ["team/*"]\ngate = "scan"\nblock_at = "HIGH"\n'
        f'[[replicate.targets]]\nregion = "{MIRROR_REGION}"\n'
    )
    digest = stack.push("v4.0.0")

    pushed = stack.pushed("v4.0.0", digest)
    dirty = stack.scanned(digest, ["v4.0.0"], {"CRITICAL": 1})
    assert pushed["jobs"] == [] and dirty["jobs"] == []
    assert "CRITICAL=1" in dirty["notes"][0]
    assert stack.receive() == []

    clean = stack.scanned(digest, ["v4.0.0"], {"LOW": 2})
    assert len(clean["jobs"]) == 1
    assert stack.replicate_all()["batchItemFailures"] == []
    assert assert_identical(stack.source, stack.repository, stack.mirror, stack.repository, "v4.0.0") == digest


def test_a_push_the_guard_rejected_is_never_replicated(make_stack: Any) -> None:
    stack: Stack = make_stack(MIRROR_RULE)
    owner = stack.push("v5.0.0")
    stack.pushed("v5.0.0", owner)  # claims v5.0.0 for the first image
    stack.replicate_all()
    impostor = stack.push("v5.0.0")  # moves the release tag at the source

    planned = stack.pushed("v5.0.0", impostor)

    assert planned["jobs"] == [] and "tag guard rejected" in planned["notes"][-1]
    assert stack.mirror.get_manifest(f"mirror/{stack.repository}", "v5.0.0")[2] == owner


def test_a_protected_tag_at_the_destination_is_reported_not_overwritten(make_stack: Any) -> None:
    stack: Stack = make_stack(MIRROR_RULE)
    mirror = f"mirror/{stack.repository}"
    squatter, _ = stack.mirror.push_image(mirror, "v6.0.0", [b"someone else's release"])
    digest = stack.push("v6.0.0")

    stack.pushed("v6.0.0", digest)
    assert stack.replicate_all()["batchItemFailures"] == []  # final at once: retrying cannot help

    assert stack.mirror.get_manifest(mirror, "v6.0.0")[2] == squatter
    assert stack.mirror.tags(mirror) == ["v6.0.0"]
    # The copier stores a tagged image's manifest only under its tags: the blobs are there, identical.
    source_manifest = json.loads(stack.source.get_manifest(stack.repository, digest)[0])
    for blob in [source_manifest["config"], *source_manifest["layers"]]:
        assert stack.mirror.blob_exists(mirror, blob["digest"])
    (failed,) = stack.published("Image Replication Failed")
    assert failed["conflicts"] == ["v6.0.0"] and failed["image-digest"] == digest


def test_a_permanent_failure_is_a_batch_item_failure_then_dead_lettered_and_reported_once(make_stack: Any) -> None:
    stack: Stack = make_stack(MIRROR_RULE)
    good = stack.push("v7.0.0")
    missing = "sha256:" + "0" * 64  # a push event for an image the source does not hold
    stack.pushed("v7.0.0", good)
    stack.pushed("v7.0.1", missing)

    first = stack.work(stack.receive())
    assert len(first["batchItemFailures"]) == 1
    assert (
        assert_identical(stack.source, stack.repository, stack.mirror, f"mirror/{stack.repository}", "v7.0.0") == good
    )
    assert stack.published("Image Replication Failed") == []

    for _ in range(MAX_RECEIVES - 1):
        assert len(stack.work(stack.receive())["batchItemFailures"]) == 1
    assert stack.receive() == []
    assert stack.queue_depth(stack.dead_letter_url) == 1
    (failed,) = stack.published("Image Replication Failed")
    assert failed["image-digest"] == missing and "not found" in failed["reason"]


def test_a_body_that_is_no_job_is_dead_lettered_without_retry(make_stack: Any) -> None:
    stack: Stack = make_stack(MIRROR_RULE)
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody='{"job_id": "nope"}')

    assert stack.work(stack.receive())["batchItemFailures"] == []
    assert stack.receive() == []
    assert stack.queue_depth(stack.app_dead_letter_url) == 1


def test_cross_account_through_an_assumed_role(make_stack: Any) -> None:
    stack: Stack = make_stack(
        f'[[replicate]]\nrepositories = ["team/*"]\n'
        f'[[replicate.targets]]\nregion = "{MIRROR_REGION}"\nrole_arn = "{ROLE_ARN}"\n'
        'create_repository = { tag_mutability = "IMMUTABLE", scan_on_push = false }\n'
    )
    digest = stack.push("v8.0.0")

    planned = stack.pushed("v8.0.0", digest)
    assert planned["jobs"][0]["destination"] == f"{OTHER_ACCOUNT}.dkr.ecr.{MIRROR_REGION}/{stack.repository}"
    assert stack.replicate_all()["batchItemFailures"] == []

    # The other account's registry accepted only its own ECR token, and its repository was created there,
    # by the assumed role, with the rule's settings; this account has no such repository.
    assert assert_identical(stack.source, stack.repository, stack.other, stack.repository, "v8.0.0") == digest
    credentials = stack.aws.client("sts").assume_role(RoleArn=ROLE_ARN, RoleSessionName="check")["Credentials"]
    other_ecr = boto3.client(
        "ecr",
        region_name=MIRROR_REGION,
        endpoint_url=stack.aws.endpoint_url,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    (created,) = other_ecr.describe_repositories(repositoryNames=[stack.repository])["repositories"]
    assert created["registryId"] == OTHER_ACCOUNT and created["imageTagMutability"] == "IMMUTABLE"
    own = stack.aws.client("ecr", MIRROR_REGION).describe_repositories()["repositories"]
    assert stack.repository not in [repository["repositoryName"] for repository in own]
