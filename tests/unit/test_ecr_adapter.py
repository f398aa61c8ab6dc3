"""The ECR adapter against ECR's recorded answers (botocore Stubber): requests, pagination and error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from ecr_automation.adapters.ecr import EcrRegistry, RegistryError
from ecr_automation.models.domain import (
    MANIFEST_MEDIA_TYPES,
    ImageManifest,
    ImageUnavailable,
    PutOutcome,
    RepositoryRef,
)
from ecr_automation.models.effects import CollectingSink
from ecr_automation.models.events.base import SeverityCounts

REPO = RepositoryRef("123456789012", "us-east-1", "team/web")
SCOPE = {"registryId": REPO.registry_id, "repositoryName": REPO.name}
DIGEST, OTHER = "sha256:" + "a" * 64, "sha256:" + "b" * 64
IMAGE = ImageManifest(REPO, DIGEST, '{"schemaVersion":2}', "application/vnd.oci.image.manifest.v1+json")
PUSHED = datetime(2026, 11, 28, 12, 0, 0, 250000, tzinfo=UTC)

Ecr = tuple[Stubber, EcrRegistry, CollectingSink]


class OneClient:
    """Serves one stubbed client for every region, as AwsClients would."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def client(self, service: str, region: str) -> Any:
        del service, region
        return self._client


@pytest.fixture
def ecr() -> Iterator[Ecr]:
    client = boto3.client("ecr", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    sink = CollectingSink()
    with Stubber(client) as stubber:
        yield stubber, EcrRegistry(OneClient(client), sink), sink  # type: ignore[arg-type]
        stubber.assert_no_pending_responses()


def batch_get_request(*image_ids: dict[str, str]) -> dict[str, Any]:
    return {**SCOPE, "imageIds": list(image_ids), "acceptedMediaTypes": list(MANIFEST_MEDIA_TYPES)}


def answered(digest: str, tag: str | None = None, manifest: ImageManifest = IMAGE) -> dict[str, Any]:
    """One image of a BatchGetImage answer, with the id it was asked by."""
    image_id = {"imageDigest": digest, **({"imageTag": tag} if tag else {})}
    return {"imageId": image_id, "imageManifest": manifest.manifest, "imageManifestMediaType": manifest.media_type}


def not_found(image_id: dict[str, str], code: str = "ImageNotFound") -> dict[str, Any]:
    return {"imageId": image_id, "failureCode": code, "failureReason": "Requested image not found"}


def detail(digest: str, *tags: str, status: str = "ACTIVE") -> dict[str, Any]:
    return {**SCOPE, "imageDigest": digest, "imageTags": list(tags), "imagePushedAt": PUSHED, "imageStatus": status}


def describe_missing(stubber: Stubber, *image_ids: dict[str, str]) -> None:
    stubber.add_client_error(
        "describe_images",
        service_error_code="ImageNotFoundException",
        http_status_code=400,
        expected_params={**SCOPE, "imageIds": list(image_ids)},
    )


# --- reading -----------------------------------------------------------------------------------


def test_tagged_images_follows_every_page_with_first_push_times(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    request = {**SCOPE, "filter": {"tagStatus": "TAGGED"}}
    stubber.add_response(
        "describe_images", {"imageDetails": [detail(DIGEST, "v1.0.0", "latest")], "nextToken": "page-2"}, request
    )
    stubber.add_response(
        "describe_images", {"imageDetails": [detail(OTHER, "v1.1.0")]}, {**request, "nextToken": "page-2"}
    )

    assert list(registry.tagged_images(REPO)) == [
        ("v1.0.0", DIGEST, PUSHED),
        ("latest", DIGEST, PUSHED),
        ("v1.1.0", OTHER, PUSHED),
    ]


def test_get_manifests_offers_every_manifest_type_and_keeps_the_bytes(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    other = ImageManifest(REPO, OTHER, '{"schemaVersion": 2, "x": 1}', "application/vnd.oci.image.index.v1+json")
    stubber.add_response(
        "batch_get_image",
        {"images": [answered(DIGEST), answered(OTHER, manifest=other)], "failures": []},
        batch_get_request({"imageDigest": DIGEST}, {"imageDigest": OTHER}),
    )

    assert registry.get_manifests(REPO, [DIGEST, OTHER, DIGEST]) == {DIGEST: IMAGE, OTHER: other}


def test_get_manifests_tells_an_archived_image_from_a_gone_one(ecr: Ecr) -> None:
    # Given two images BatchGetImage cannot serve: one archived (it still describes), one deleted
    stubber, registry, _ = ecr
    stubber.add_response(
        "batch_get_image",
        {"images": [], "failures": [not_found({"imageDigest": DIGEST}), not_found({"imageDigest": OTHER})]},
        batch_get_request({"imageDigest": DIGEST}, {"imageDigest": OTHER}),
    )
    stubber.add_response(
        "describe_images",
        {"imageDetails": [detail(DIGEST, "v1.0.0", status="ARCHIVED")]},
        {**SCOPE, "imageIds": [{"imageDigest": DIGEST}]},
    )
    describe_missing(stubber, {"imageDigest": OTHER})

    # Then each says why
    assert registry.get_manifests(REPO, [DIGEST, OTHER]) == {
        DIGEST: ImageUnavailable.ARCHIVED,
        OTHER: ImageUnavailable.GONE,
    }


def test_an_image_being_restored_is_still_archived_and_an_active_one_not_served_is_gone(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    for status in ("ACTIVATING", "ACTIVE"):
        stubber.add_response("batch_get_image", {"images": [], "failures": [not_found({"imageDigest": DIGEST})]})
        stubber.add_response("describe_images", {"imageDetails": [detail(DIGEST, status=status)]})

    assert registry.get_manifests(REPO, [DIGEST]) == {DIGEST: ImageUnavailable.ARCHIVED}
    assert registry.get_manifests(REPO, [DIGEST]) == {DIGEST: ImageUnavailable.GONE}


def test_view_reads_the_image_and_where_several_tags_point_in_one_batch_get_image(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    stubber.add_response(
        "batch_get_image",
        {
            "images": [answered(DIGEST), answered(DIGEST, "v1.2.3"), answered(OTHER, "latest")],
            "failures": [not_found({"imageTag": "v1"})],
        },
        batch_get_request({"imageDigest": DIGEST}, {"imageTag": "v1.2.3"}, {"imageTag": "latest"}, {"imageTag": "v1"}),
    )

    view = registry.view(REPO, DIGEST, ["v1.2.3", "latest", "v1", "latest"])

    assert view.image == IMAGE
    assert view.points == {"v1.2.3": DIGEST, "latest": OTHER, "v1": None}
    assert view.holds("v1.2.3") and not view.holds("latest") and view.digest_of("v1") is None


def test_view_of_an_image_that_is_gone_says_so(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    stubber.add_response(
        "batch_get_image",
        {"images": [answered(OTHER, "v1")], "failures": [not_found({"imageDigest": DIGEST})]},
        batch_get_request({"imageDigest": DIGEST}, {"imageTag": "v1"}),
    )
    describe_missing(stubber, {"imageDigest": DIGEST})

    view = registry.view(REPO, DIGEST, ["v1"])

    assert view.image is ImageUnavailable.GONE and view.points == {"v1": OTHER}


def test_a_batch_get_image_failure_other_than_not_found_is_an_error(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    stubber.add_response(
        "batch_get_image", {"images": [], "failures": [not_found({"imageDigest": DIGEST}, code="KmsError")]}
    )
    with pytest.raises(RegistryError, match="Requested image not found"):
        registry.get_manifests(REPO, [DIGEST])


def test_tags_of_digests_asks_once_and_one_by_one_only_when_one_image_is_missing(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    # One call answers both
    stubber.add_response(
        "describe_images",
        {"imageDetails": [detail(DIGEST, "v1", "v1.2.3"), detail(OTHER)]},
        {**SCOPE, "imageIds": [{"imageDigest": DIGEST}, {"imageDigest": OTHER}]},
    )
    # ECR fails a whole DescribeImages when one image is missing: then each is asked alone
    describe_missing(stubber, {"imageDigest": DIGEST}, {"imageDigest": OTHER})
    stubber.add_response(
        "describe_images",
        {"imageDetails": [detail(DIGEST, "v1.2.3")]},
        {**SCOPE, "imageIds": [{"imageDigest": DIGEST}]},
    )
    describe_missing(stubber, {"imageDigest": OTHER})

    assert registry.tags_of_digests(REPO, [DIGEST, OTHER]) == {DIGEST: ["v1", "v1.2.3"], OTHER: []}
    assert registry.tags_of_digests(REPO, [DIGEST, OTHER]) == {DIGEST: ["v1.2.3"], OTHER: []}


def test_first_pushed_gives_ecrs_push_time_of_each_image_it_knows(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    describe_missing(stubber, {"imageDigest": DIGEST}, {"imageDigest": OTHER})
    stubber.add_response(
        "describe_images", {"imageDetails": [detail(DIGEST)]}, {**SCOPE, "imageIds": [{"imageDigest": DIGEST}]}
    )
    describe_missing(stubber, {"imageDigest": OTHER})

    assert registry.first_pushed(REPO, [DIGEST, OTHER]) == {DIGEST: PUSHED}


def test_digest_of_a_missing_tag_is_none(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    stubber.add_response(
        "describe_images", {"imageDetails": [detail(DIGEST, "v1")]}, {**SCOPE, "imageIds": [{"imageTag": "v1"}]}
    )
    describe_missing(stubber, {"imageTag": "v2"})

    assert registry.digest_of_tag(REPO, "v1") == DIGEST
    assert registry.digest_of_tag(REPO, "v2") is None


def test_scan_counts_are_read_only_from_a_finished_scan(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    request = {**SCOPE, "imageId": {"imageDigest": DIGEST}, "maxResults": 1}
    stubber.add_response(
        "describe_image_scan_findings",
        {
            "imageScanStatus": {"status": "COMPLETE"},
            "imageScanFindings": {"findingSeverityCounts": {"HIGH": 2, "LOW": 1}},
        },
        request,
    )
    stubber.add_response("describe_image_scan_findings", {"imageScanStatus": {"status": "IN_PROGRESS"}}, request)
    stubber.add_client_error("describe_image_scan_findings", service_error_code="ScanNotFoundException")

    assert registry.scan_counts(REPO, DIGEST) == SeverityCounts.model_validate({"HIGH": 2, "LOW": 1})
    assert registry.scan_counts(REPO, DIGEST) is None
    assert registry.scan_counts(REPO, DIGEST) is None


# --- writing -----------------------------------------------------------------------------------


def test_real_ecr_immutability_refusal_is_reported(ecr: Ecr) -> None:
    stubber, registry, sink = ecr
    stubber.add_client_error("put_image", service_error_code="ImageTagAlreadyExistsException", http_status_code=400)

    assert registry.put_tag(IMAGE, "v1.2.3", reason="test", kind="tag_reverted") is PutOutcome.IMMUTABLE
    assert sink.kinds() == ["tag_write_refused"]


def test_image_already_exists_is_success_only_when_the_tag_is_there(ecr: Ecr) -> None:
    stubber, registry, sink = ecr
    for points_at in (DIGEST, OTHER):
        stubber.add_client_error("put_image", service_error_code="ImageAlreadyExistsException", http_status_code=400)
        stubber.add_response(
            "describe_images", {"imageDetails": [detail(points_at, "v1")]}, {**SCOPE, "imageIds": [{"imageTag": "v1"}]}
        )

    assert registry.put_tag(IMAGE, "v1", reason="test") is PutOutcome.ALREADY_THERE
    assert registry.put_tag(IMAGE, "v1", reason="test") is PutOutcome.IMMUTABLE  # moto's way of refusing a move
    assert sink.kinds() == ["tag_write_refused"]


def test_put_tag_sends_the_exact_manifest_media_type_and_digest(ecr: Ecr) -> None:
    stubber, registry, sink = ecr
    stubber.add_response(
        "put_image",
        {"image": {"imageId": {"imageDigest": DIGEST, "imageTag": "v1"}}},
        {
            **SCOPE,
            "imageManifest": IMAGE.manifest,
            "imageManifestMediaType": IMAGE.media_type,
            "imageTag": "v1",
            "imageDigest": DIGEST,
        },
    )
    assert registry.put_tag(IMAGE, "v1", reason="alias") is PutOutcome.WRITTEN
    assert sink.effects[0].as_dict() == {
        "kind": "tag_written",
        "repository": REPO.name,
        "tag": "v1",
        "digest": DIGEST,
        "reason": "alias",
    }


def test_other_put_errors_are_raised(ecr: Ecr) -> None:
    stubber, registry, _ = ecr
    stubber.add_client_error("put_image", service_error_code="LimitExceededException", http_status_code=400)
    with pytest.raises(ClientError, match="LimitExceededException"):
        registry.put_tag(IMAGE, "v1", reason="alias")


def test_untag_removes_one_tag_and_delete_image_removes_the_image(ecr: Ecr) -> None:
    stubber, registry, sink = ecr
    stubber.add_response(
        "batch_delete_image",
        {"imageIds": [{"imageDigest": OTHER, "imageTag": "v1.2.3"}], "failures": []},
        {**SCOPE, "imageIds": [{"imageTag": "v1.2.3"}]},
    )
    stubber.add_response(
        "batch_delete_image",
        {"imageIds": [{"imageDigest": OTHER}], "failures": []},
        {**SCOPE, "imageIds": [{"imageDigest": OTHER}]},
    )

    registry.untag(REPO, "v1.2.3", reason="protected")
    registry.delete_image(REPO, OTHER, reason="pushed over v1.2.3")

    assert sink.kinds() == ["tag_deleted", "image_deleted"]


def test_dry_run_calls_nothing_and_says_so() -> None:
    sink = CollectingSink()
    registry = EcrRegistry(OneClient(object()), sink, dry_run=True)  # type: ignore[arg-type]
    assert registry.put_tag(IMAGE, "v1", reason="alias") is PutOutcome.DRY_RUN
    registry.untag(REPO, "v1.2.3", reason="test")
    registry.delete_image(REPO, DIGEST, reason="test")
    assert sink.kinds() == ["tag_write_skipped", "tag_delete_skipped", "image_delete_skipped"]
