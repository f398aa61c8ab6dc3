"""The ECR adapter against ECR's recorded answers (botocore Stubber): pagination and error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from ecr_automation.adapters.ecr import EcrRegistry
from ecr_automation.models.domain import MANIFEST_MEDIA_TYPES, ImageManifest, PutOutcome, RepositoryRef
from ecr_automation.models.effects import CollectingSink

REPO = RepositoryRef("123456789012", "us-east-1", "team/web")
SCOPE = {"registryId": REPO.registry_id, "repositoryName": REPO.name}
DIGEST, OTHER = "sha256:" + "a" * 64, "sha256:" + "b" * 64
IMAGE = ImageManifest(REPO, DIGEST, '{"schemaVersion":2}', "application/vnd.oci.image.manifest.v1+json")


class OneClient:
    """Serves one stubbed client for every region, as AwsClients would."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def client(self, service: str, region: str) -> Any:
        del service, region
        return self._client


@pytest.fixture
def ecr() -> Iterator[tuple[Stubber, EcrRegistry, CollectingSink]]:
    client = boto3.client("ecr", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    sink = CollectingSink()
    with Stubber(client) as stubber:
        yield stubber, EcrRegistry(OneClient(client), sink), sink  # type: ignore[arg-type]
        stubber.assert_no_pending_responses()


def test_tagged_images_follows_every_page(ecr: tuple[Stubber, EcrRegistry, CollectingSink]) -> None:
    stubber, registry, _ = ecr
    request = {**SCOPE, "filter": {"tagStatus": "TAGGED"}}
    stubber.add_response(
        "list_images", {"imageIds": [{"imageDigest": DIGEST, "imageTag": "v1.0.0"}], "nextToken": "page-2"}, request
    )
    stubber.add_response(
        "list_images", {"imageIds": [{"imageDigest": OTHER, "imageTag": "v1.1.0"}]}, {**request, "nextToken": "page-2"}
    )

    assert list(registry.tagged_images(REPO)) == [("v1.0.0", DIGEST), ("v1.1.0", OTHER)]


def test_get_manifest_offers_every_manifest_type_and_keeps_the_bytes(
    ecr: tuple[Stubber, EcrRegistry, CollectingSink],
) -> None:
    stubber, registry, _ = ecr
    stubber.add_response(
        "batch_get_image",
        {
            "images": [
                {
                    "imageId": {"imageDigest": DIGEST},
                    "imageManifest": IMAGE.manifest,
                    "imageManifestMediaType": IMAGE.media_type,
                }
            ],
            "failures": [],
        },
        {**SCOPE, "imageIds": [{"imageDigest": DIGEST}], "acceptedMediaTypes": list(MANIFEST_MEDIA_TYPES)},
    )
    assert registry.get_manifest(REPO, DIGEST) == IMAGE


def test_a_missing_image_is_none_not_an_error(ecr: tuple[Stubber, EcrRegistry, CollectingSink]) -> None:
    stubber, registry, _ = ecr
    stubber.add_response(
        "batch_get_image",
        {
            "images": [],
            "failures": [
                {
                    "imageId": {"imageDigest": DIGEST},
                    "failureCode": "ImageNotFound",
                    "failureReason": "Requested image not found",
                }
            ],
        },
    )
    assert registry.get_manifest(REPO, DIGEST) is None


def test_real_ecr_immutability_refusal_is_reported(ecr: tuple[Stubber, EcrRegistry, CollectingSink]) -> None:
    stubber, registry, sink = ecr
    stubber.add_client_error("put_image", service_error_code="ImageTagAlreadyExistsException", http_status_code=400)

    assert registry.put_tag(IMAGE, "v1.2.3", reason="test", kind="tag_reverted") is PutOutcome.IMMUTABLE
    assert sink.kinds() == ["tag_write_refused"]


def test_image_already_exists_is_success_only_when_the_tag_is_there(
    ecr: tuple[Stubber, EcrRegistry, CollectingSink],
) -> None:
    stubber, registry, sink = ecr
    for points_at in (DIGEST, OTHER):
        stubber.add_client_error("put_image", service_error_code="ImageAlreadyExistsException", http_status_code=400)
        stubber.add_response(
            "describe_images",
            {"imageDetails": [{"imageDigest": points_at}]},
            {**SCOPE, "imageIds": [{"imageTag": "v1"}]},
        )

    assert registry.put_tag(IMAGE, "v1", reason="test") is PutOutcome.ALREADY_THERE
    assert registry.put_tag(IMAGE, "v1", reason="test") is PutOutcome.IMMUTABLE  # moto's way of refusing a move
    assert sink.kinds() == ["tag_write_refused"]


def test_put_tag_sends_the_exact_manifest_media_type_and_digest(
    ecr: tuple[Stubber, EcrRegistry, CollectingSink],
) -> None:
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


def test_dry_run_calls_nothing_and_says_so() -> None:
    sink = CollectingSink()
    registry = EcrRegistry(OneClient(object()), sink, dry_run=True)  # type: ignore[arg-type]
    assert registry.put_tag(IMAGE, "v1", reason="alias") is PutOutcome.DRY_RUN
    registry.delete_image(REPO, DIGEST, reason="test")
    assert sink.kinds() == ["tag_write_skipped", "image_delete_skipped"]


def test_tag_mutability_is_asked_once_a_minute(
    ecr: tuple[Stubber, EcrRegistry, CollectingSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    stubber, registry, _ = ecr
    request = {"registryId": REPO.registry_id, "repositoryNames": [REPO.name]}
    for mutability in ("MUTABLE", "IMMUTABLE"):
        stubber.add_response(
            "describe_repositories",
            {"repositories": [{"repositoryName": REPO.name, "imageTagMutability": mutability}]},
            request,
        )
    clock = [1000.0]
    monkeypatch.setattr("ecr_automation.adapters.ecr.time.monotonic", lambda: clock[0])

    assert registry.tag_mutability(REPO) == "MUTABLE"
    clock[0] += 59
    assert registry.tag_mutability(REPO) == "MUTABLE"  # from memory: no second call stubbed yet consumed
    clock[0] += 2
    assert registry.tag_mutability(REPO) == "IMMUTABLE"
