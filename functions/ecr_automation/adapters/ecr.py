"""Amazon ECR: read manifests and where tags point, point tags at manifests, read scan results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ecr_automation.adapters.clients import AwsClients, client_in
from ecr_automation.models.domain import (
    MANIFEST_MEDIA_TYPES,
    ImageManifest,
    ImageUnavailable,
    PutOutcome,
    RegistryView,
    RepositoryRef,
)
from ecr_automation.models.effects import Effect, EffectSink
from ecr_automation.models.events.base import SeverityCounts

BATCH_GET_IMAGE_MAX_IDS = 100
# Scan statuses after which DescribeImageScanFindings' counts are final (basic: COMPLETE; enhanced: ACTIVE).
SCAN_DONE = frozenset({"COMPLETE", "ACTIVE"})
NOT_FOUND = frozenset({"ImageNotFound", "ImageInaccessible", "ImageTagDoesNotMatchDigest"})


class RegistryError(RuntimeError):
    """ECR refused an operation in a way a retry will not fix."""


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class EcrRegistry:
    def __init__(self, clients: AwsClients, sink: EffectSink, *, dry_run: bool = False) -> None:
        self._clients = clients
        self._sink = sink
        self._dry_run = dry_run

    def _ecr(self, repository: RepositoryRef) -> Any:
        """ECR in the repository's own account: the registry id decides (a member account's role, or ours)."""
        return client_in(self._clients, repository.registry_id, "ecr", repository.region)

    # -- reading -----------------------------------------------------------------------------------
    def _batch_get(self, repository: RepositoryRef, image_ids: list[dict[str, str]]) -> dict[str, Any]:
        response: dict[str, Any] = self._ecr(repository).batch_get_image(
            registryId=repository.registry_id,
            repositoryName=repository.name,
            imageIds=image_ids,
            acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
        )
        for failure in response.get("failures", []):
            if failure.get("failureCode") not in NOT_FOUND:
                raise RegistryError(
                    f"BatchGetImage {repository.name} {failure.get('imageId')}: {failure.get('failureReason')}"
                )
        return response

    def get_manifests(
        self, repository: RepositoryRef, digests: list[str]
    ) -> dict[str, ImageManifest | ImageUnavailable]:
        """The exact manifests of ``digests`` in one call; an image ECR cannot serve says why."""
        wanted = list(dict.fromkeys(digests))
        response = self._batch_get(repository, [{"imageDigest": digest} for digest in wanted])
        found: dict[str, ImageManifest | ImageUnavailable] = {
            image["imageId"]["imageDigest"]: _manifest(repository, image) for image in response.get("images", [])
        }
        missing = [digest for digest in wanted if digest not in found]
        if missing:
            found.update(self._why_unavailable(repository, missing))
        return found

    def _why_unavailable(self, repository: RepositoryRef, digests: list[str]) -> dict[str, ImageUnavailable]:
        """Archived images still describe (status ARCHIVED) but cannot be read; gone ones do not describe."""
        statuses = {}
        for digest in digests:
            try:
                details = self._ecr(repository).describe_images(
                    registryId=repository.registry_id,
                    repositoryName=repository.name,
                    imageIds=[{"imageDigest": digest}],
                )["imageDetails"]
            except ClientError as error:
                if _error_code(error) not in {"ImageNotFoundException", "RepositoryNotFoundException"}:
                    raise
                details = []
            status = details[0].get("imageStatus", "ACTIVE") if details else None
            statuses[digest] = (
                ImageUnavailable.ARCHIVED if status in {"ARCHIVED", "ACTIVATING"} else ImageUnavailable.GONE
            )
        return statuses

    def view(self, repository: RepositoryRef, digest: str, tags: list[str]) -> RegistryView:
        """One image's manifest and where each of ``tags`` points now: one BatchGetImage per 100 ids."""
        wanted_tags = list(dict.fromkeys(tags))
        image_ids = [{"imageDigest": digest}, *({"imageTag": tag} for tag in wanted_tags)]
        image: ImageManifest | ImageUnavailable | None = None
        points: dict[str, str | None] = dict.fromkeys(wanted_tags)
        for start in range(0, len(image_ids), BATCH_GET_IMAGE_MAX_IDS):
            response = self._batch_get(repository, image_ids[start : start + BATCH_GET_IMAGE_MAX_IDS])
            for found in response.get("images", []):
                image_id = found["imageId"]
                if "imageTag" in image_id:
                    points[image_id["imageTag"]] = image_id["imageDigest"]
                elif image_id["imageDigest"] == digest:
                    image = _manifest(repository, found)
        if image is None:
            image = self._why_unavailable(repository, [digest])[digest]
        return RegistryView(digest, image, points)

    def digest_of_tag(self, repository: RepositoryRef, tag: str) -> str | None:
        details = self._describe(repository, [{"imageTag": tag}])
        return str(details[0]["imageDigest"]) if details else None

    def tags_of_digests(self, repository: RepositoryRef, digests: list[str]) -> dict[str, list[str]]:
        wanted = list(dict.fromkeys(digests))
        tags: dict[str, list[str]] = {digest: [] for digest in wanted}
        for detail in self._describe(repository, [{"imageDigest": digest} for digest in wanted]):
            tags[detail["imageDigest"]] = sorted(detail.get("imageTags", []))
        return tags

    def first_pushed(self, repository: RepositoryRef, digests: list[str]) -> dict[str, datetime]:
        details = self._describe(repository, [{"imageDigest": digest} for digest in dict.fromkeys(digests)])
        return {detail["imageDigest"]: detail["imagePushedAt"] for detail in details if "imagePushedAt" in detail}

    def _describe(self, repository: RepositoryRef, image_ids: list[dict[str, str]]) -> list[dict[str, Any]]:
        """DescribeImages for several ids; ECR fails the whole call when one is missing, so then ask one by one."""
        try:
            response = self._ecr(repository).describe_images(
                registryId=repository.registry_id, repositoryName=repository.name, imageIds=image_ids
            )
        except ClientError as error:
            if _error_code(error) == "RepositoryNotFoundException":
                return []
            if _error_code(error) != "ImageNotFoundException":
                raise
            if len(image_ids) == 1:
                return []
            return [detail for image_id in image_ids for detail in self._describe(repository, [image_id])]
        details: list[dict[str, Any]] = response.get("imageDetails", [])
        return details

    def tagged_images(self, repository: RepositoryRef) -> Iterator[tuple[str, str, datetime | None]]:
        """Every (tag, digest, first push time) the repository holds today, page by page."""
        paginator = self._ecr(repository).get_paginator("describe_images")
        for page in paginator.paginate(
            registryId=repository.registry_id, repositoryName=repository.name, filter={"tagStatus": "TAGGED"}
        ):
            for detail in page.get("imageDetails", []):
                for tag in detail.get("imageTags", []):
                    yield tag, detail["imageDigest"], detail.get("imagePushedAt")

    def scan_counts(self, repository: RepositoryRef, digest: str) -> SeverityCounts | None:
        """Finding counts of an image's finished scan (basic or enhanced), or None when there is none yet."""
        try:
            response = self._ecr(repository).describe_image_scan_findings(
                registryId=repository.registry_id,
                repositoryName=repository.name,
                imageId={"imageDigest": digest},
                maxResults=1,
            )
        except ClientError as error:
            if _error_code(error) in {"ScanNotFoundException", "ImageNotFoundException"}:
                return None
            raise
        if response.get("imageScanStatus", {}).get("status") not in SCAN_DONE:
            return None
        counts = response.get("imageScanFindings", {}).get("findingSeverityCounts", {})
        return SeverityCounts.model_validate(counts)

    # -- writing -----------------------------------------------------------------------------------
    def put_tag(self, image: ImageManifest, tag: str, *, reason: str, kind: str = "tag_written") -> PutOutcome:
        """Point ``tag`` at ``image`` with the exact manifest bytes, so the digest cannot change."""
        effect = {"repository": image.repository.name, "tag": tag, "digest": image.digest, "reason": reason}
        if self._dry_run:
            self._sink.record(Effect("tag_write_skipped", {**effect, "dry_run": True}))
            return PutOutcome.DRY_RUN
        try:
            self._ecr(image.repository).put_image(
                registryId=image.repository.registry_id,
                repositoryName=image.repository.name,
                imageManifest=image.manifest,
                imageManifestMediaType=image.media_type,
                imageTag=tag,
                imageDigest=image.digest,
            )
        except ClientError as error:
            code = _error_code(error)
            if code == "ImageTagAlreadyExistsException":
                self._sink.record(Effect("tag_write_refused", {**effect, "error": "the tag is immutable"}))
                return PutOutcome.IMMUTABLE
            if code == "ImageAlreadyExistsException":
                if self.digest_of_tag(image.repository, tag) == image.digest:
                    return PutOutcome.ALREADY_THERE
                # moto raises this (not ImageTagAlreadyExists) when an immutable repo refuses a move.
                self._sink.record(Effect("tag_write_refused", {**effect, "error": "the tag is immutable"}))
                return PutOutcome.IMMUTABLE
            raise
        self._sink.record(Effect(kind, effect))
        return PutOutcome.WRITTEN

    def untag(self, repository: RepositoryRef, tag: str, *, reason: str) -> None:
        """Remove one tag (ECR deletes the image with its last tag: keep it under another tag first)."""
        effect = {"repository": repository.name, "tag": tag, "reason": reason}
        if self._dry_run:
            self._sink.record(Effect("tag_delete_skipped", {**effect, "dry_run": True}))
            return
        self._ecr(repository).batch_delete_image(
            registryId=repository.registry_id, repositoryName=repository.name, imageIds=[{"imageTag": tag}]
        )
        self._sink.record(Effect("tag_deleted", effect))

    def delete_image(self, repository: RepositoryRef, digest: str, *, reason: str) -> None:
        effect = {"repository": repository.name, "digest": digest, "reason": reason}
        if self._dry_run:
            self._sink.record(Effect("image_delete_skipped", {**effect, "dry_run": True}))
            return
        self._ecr(repository).batch_delete_image(
            registryId=repository.registry_id, repositoryName=repository.name, imageIds=[{"imageDigest": digest}]
        )
        self._sink.record(Effect("image_deleted", effect))


def _manifest(repository: RepositoryRef, image: dict[str, Any]) -> ImageManifest:
    manifest = image["imageManifest"]
    return ImageManifest(
        repository=repository,
        digest=image["imageId"]["imageDigest"],
        manifest=manifest,
        media_type=image.get("imageManifestMediaType") or _media_type_of(manifest),
    )


def _media_type_of(manifest: str) -> str:
    media_type = json.loads(manifest).get("mediaType")
    if not isinstance(media_type, str):
        raise RegistryError("manifest has no mediaType and ECR did not report one")
    return media_type
