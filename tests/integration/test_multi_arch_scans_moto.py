"""Multi-arch images and their scans, end to end against the moto server through the handlers.

ECR scans platform manifests, never an index: retag promotes a multi-arch index, and the replication
planner's scan gate lets it through, only once every platform its index names has a clean scan. Which
platforms an index names, retag records in the ledger when the index is pushed; the other platforms'
scans are read with DescribeImageScanFindings (served by moto, as injected).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import replicate_planner, retag
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.effects import CollectingSink
from tests.conftest import ROOT
from tests.support import builders
from tests.support.moto_server import MotoServer

ACCOUNT, REGION, REPOSITORY = "123456789012", "us-east-1", "team/web"
MIRROR_REGION = "us-west-2"
# The bundled rules (retag promotes "scanned" once the scan is clean at HIGH or above), and a scan-gated
# replication to another region.
SCAN_REPLICATION = f"""
[[replicate]]
repositories = ["team/*"]
gate = "scan"
block_at = "HIGH"
[[replicate.targets]]
region = "{MIRROR_REGION}"
"""


@dataclass
class MultiArch:
    aws: MotoServer
    queue_url: str
    scans: list[dict[str, Any]] = field(default_factory=list)  # moto's API replaces its whole list each time

    @property
    def ecr(self) -> Any:
        return self.aws.client("ecr")

    def push_index(self, tag: str) -> tuple[str, str, str]:
        """An amd64 and an arm64 image pushed by digest, then the index naming them under ``tag`` (as buildx does)."""
        children = [(arch, builders.image_manifest(f"{tag}-{arch}", arch)) for arch in ("amd64", "arm64")]
        for _, body in children:
            self.put(body, builders.OCI_MANIFEST)
        index = self.put(builders.index_manifest(children), builders.OCI_INDEX, tag)
        # Retag records which platforms the index names (and writes its aliases).
        event = builders.image_action("PUSH", tag, index, event_id=f"push-{tag}", repository=REPOSITORY)
        assert retag.lambda_handler(event, LambdaContext("RetagFunction"))["status"] == "processed"
        amd64, arm64 = (builders.digest_of(body) for _, body in children)
        return index, amd64, arm64

    def put(self, body: str, media_type: str, tag: str | None = None) -> str:
        digest = builders.digest_of(body)
        self.ecr.put_image(
            repositoryName=REPOSITORY,
            imageManifest=body,
            imageManifestMediaType=media_type,
            imageDigest=digest,
            **({"imageTag": tag} if tag else {}),
        )
        return digest

    def scan_finished(self, digest: str, counts: dict[str, int]) -> dict[str, Any]:
        """ECR finished a basic scan of ``digest`` with ``counts``: moto serves it, and this is ECR's event."""
        self.scans.append(
            {
                "registryId": ACCOUNT,
                "repositoryName": REPOSITORY,
                # moto hands a result to the first image whose tag or digest matches: an untagged platform's
                # missing tag would match any other untagged one, so a tag no image carries is named.
                "imageId": {"imageDigest": digest, "imageTag": "-"},
                "imageScanStatus": {"status": "COMPLETE"},
                "imageScanFindings": {"findings": [], "findingSeverityCounts": counts},
            }
        )
        self.aws.inject_scan_findings(self.scans)
        self.ecr.start_image_scan(repositoryName=REPOSITORY, imageId={"imageDigest": digest})
        detail = {
            "scan-status": "COMPLETE",
            "repository-name": REPOSITORY,
            "image-digest": digest,
            "image-tags": [],  # a platform manifest: untagged, its index holds the tags
            "finding-severity-counts": counts,
        }
        return builders.ecr_event("ECR Image Scan", detail, event_id=f"scan-{digest[7:19]}-{sum(counts.values())}")

    def tags(self) -> dict[str, str]:
        images = self.ecr.list_images(repositoryName=REPOSITORY, filter={"tagStatus": "TAGGED"})["imageIds"]
        return {image["imageTag"]: image["imageDigest"] for image in images}

    def queued(self) -> list[dict[str, Any]]:
        messages = self.aws.client("sqs").receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(message["Body"]) for message in messages.get("Messages", [])]


@pytest.fixture
def multi_arch(aws: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MultiArch]:
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / "functions" / "rules.toml").read_text() + SCAN_REPLICATION)
    aws.client("ecr").create_repository(repositoryName=REPOSITORY)
    builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", "ledger")
    queue_url = aws.client("sqs").create_queue(QueueName="replication")["QueueUrl"]
    for name in ("IDEMPOTENCY_TABLE", "DEAD_LETTER_QUEUE_URL", "MEMBER_ACCOUNT_EXTERNAL_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        **aws.env(),
        "TAG_LEDGER_TABLE": "ledger",
        "RULES_FILE": str(rules),
        "REPLICATION_QUEUE_URL": queue_url,
    }.items():
        monkeypatch.setenv(name, value)
    use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=CollectingSink()))
    yield MultiArch(aws, queue_url)
    use_dependencies(None)


def promote(event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = retag.lambda_handler(event, LambdaContext("RetagFunction"))
    return result


def plan(event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = replicate_planner.lambda_handler(event, LambdaContext("ReplicationPlannerFunction"))
    return result


def test_retag_promotes_a_multi_arch_index_once_every_platforms_scan_is_clean(multi_arch: MultiArch) -> None:
    # v1.0.0: amd64's scan finds a HIGH; v1.1.0: both platforms clean.
    dirty_index, dirty_amd64, dirty_arm64 = multi_arch.push_index("v1.0.0")
    index, amd64, arm64 = multi_arch.push_index("v1.1.0")

    # A platform's scan alone promotes nothing while another platform's scan is not done.
    waiting = promote(multi_arch.scan_finished(amd64, {"LOW": 1}))
    assert waiting["result"] == "blocked" and "waiting for the scan of platform" in " ".join(waiting["notes"])
    assert "scanned" not in multi_arch.tags()
    # A clean platform does not make up for a dirty one (read from ECR's scan of it).
    promote(multi_arch.scan_finished(dirty_amd64, {"HIGH": 1}))
    dirty = promote(multi_arch.scan_finished(dirty_arm64, {"LOW": 1}))
    assert dirty["result"] == "blocked" and "scanned" not in multi_arch.tags(), dirty

    # v1.1.0's arm64 scan completes clean: every platform is clean, so the index (not a platform) is promoted.
    clean = promote(multi_arch.scan_finished(arm64, {"MEDIUM": 1}))

    assert clean["written"] == ["scanned"], clean
    tags = multi_arch.tags()
    assert tags["scanned"] == index == tags["v1.1.0"]
    assert dirty_index == tags["v1.0.0"] and {amd64, arm64, dirty_amd64, dirty_arm64}.isdisjoint(tags.values())


def test_the_planner_queues_a_multi_arch_index_only_once_every_platforms_scan_is_clean(
    multi_arch: MultiArch,
) -> None:
    dirty_index, dirty_amd64, dirty_arm64 = multi_arch.push_index("v2.0.0")
    index, amd64, arm64 = multi_arch.push_index("v2.1.0")

    waiting = plan(multi_arch.scan_finished(amd64, {"LOW": 1}))
    assert waiting["jobs"] == [] and "waiting for the scan of platform" in " ".join(waiting["notes"]), waiting
    plan(multi_arch.scan_finished(dirty_amd64, {"CRITICAL": 1}))
    dirty = plan(multi_arch.scan_finished(dirty_arm64, {"LOW": 1}))
    assert dirty["jobs"] == [] and multi_arch.queued() == [], dirty

    clean = plan(multi_arch.scan_finished(arm64, {"LOW": 3}))

    # The index (not a platform) is queued, under every tag it carries, to the rule's region.
    on_index = sorted(tag for tag, digest in multi_arch.tags().items() if digest == index)
    assert "v2.1.0" in on_index and sorted(job["tag"] for job in clean["jobs"]) == on_index, clean
    queued = multi_arch.queued()
    assert {job["source"]["digest"] for job in queued} == {index} and dirty_index != index
    assert {job["destination"]["region"] for job in queued} == {MIRROR_REGION}
