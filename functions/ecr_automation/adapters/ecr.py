"""Amazon ECR: read manifests, point tags at them, inspect repositories."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.models.domain import MANIFEST_MEDIA_TYPES, ImageManifest, PutOutcome, RepositoryRef
from ecr_automation.models.effects import Effect, EffectSink

# A repository's mutability changes rarely; a minute-old answer is fine for deciding to step aside.
MUTABILITY_CACHE_SECONDS = 60.0


class RegistryError(RuntimeError):
    """ECR refused an operation in a way a retry will not fix."""


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class EcrRegistry:
    def __init__(self, clients: AwsClients, sink: EffectSink, *, dry_run: bool = False) -> None:
        self._clients = clients
        self._sink = sink
        self._dry_run = dry_run
        self._mutability: dict[RepositoryRef, tuple[str, float]] = {}

    def _ecr(self, repository: RepositoryRef) -> Any:
        return self._clients.client("ecr", repository.region)

    def get_manifest(self, repository: RepositoryRef, digest: str) -> ImageManifest | None:
        """The exact manifest of ``digest``, or None when the image no longer exists."""
        response = self._ecr(repository).batch_get_image(
            registryId=repository.registry_id,
            repositoryName=repository.name,
            imageIds=[{"imageDigest": digest}],
            acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
        )
        for image in response.get("images", []):
            if image["imageId"].get("imageDigest") == digest:
                return ImageManifest(
                    repository=repository,
                    digest=digest,
                    manifest=image["imageManifest"],
                    media_type=image.get("imageManifestMediaType") or _media_type_of(image["imageManifest"]),
                )
        failures = response.get("failures", [])
        if failures and failures[0].get("failureCode") not in {"ImageNotFound", "ImageTagDoesNotMatchDigest"}:
            raise RegistryError(f"BatchGetImage {repository.name}@{digest}: {failures[0].get('failureReason')}")
        return None

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
                self._sink.record(Effect("tag_write_refused", {**effect, "error": "repository is immutable"}))
                return PutOutcome.IMMUTABLE
            if code == "ImageAlreadyExistsException":
                if self.digest_of_tag(image.repository, tag) == image.digest:
                    return PutOutcome.ALREADY_THERE
                # moto raises this (not ImageTagAlreadyExists) when an immutable repo refuses a move.
                self._sink.record(Effect("tag_write_refused", {**effect, "error": "repository is immutable"}))
                return PutOutcome.IMMUTABLE
            raise
        self._sink.record(Effect(kind, effect))
        return PutOutcome.WRITTEN

    def delete_image(self, repository: RepositoryRef, digest: str, *, reason: str) -> None:
        effect = {"repository": repository.name, "digest": digest, "reason": reason}
        if self._dry_run:
            self._sink.record(Effect("image_delete_skipped", {**effect, "dry_run": True}))
            return
        self._ecr(repository).batch_delete_image(
            registryId=repository.registry_id, repositoryName=repository.name, imageIds=[{"imageDigest": digest}]
        )
        self._sink.record(Effect("image_deleted", effect))

    def digest_of_tag(self, repository: RepositoryRef, tag: str) -> str | None:
        try:
            response = self._ecr(repository).describe_images(
                registryId=repository.registry_id, repositoryName=repository.name, imageIds=[{"imageTag": tag}]
            )
        except ClientError as error:
            if _error_code(error) in {"ImageNotFoundException", "RepositoryNotFoundException"}:
                return None
            raise
        details = response.get("imageDetails", [])
        return str(details[0]["imageDigest"]) if details else None

    def tags_of_digest(self, repository: RepositoryRef, digest: str) -> list[str]:
        try:
            response = self._ecr(repository).describe_images(
                registryId=repository.registry_id, repositoryName=repository.name, imageIds=[{"imageDigest": digest}]
            )
        except ClientError as error:
            if _error_code(error) in {"ImageNotFoundException", "RepositoryNotFoundException"}:
                return []
            raise
        details = response.get("imageDetails", [])
        return sorted(details[0].get("imageTags", [])) if details else []

    def tag_mutability(self, repository: RepositoryRef) -> str:
        """The repository's tag mutability setting, remembered for a minute: it is asked on every push."""
        cached = self._mutability.get(repository)
        if cached is not None and time.monotonic() - cached[1] < MUTABILITY_CACHE_SECONDS:
            return cached[0]
        response = self._ecr(repository).describe_repositories(
            registryId=repository.registry_id, repositoryNames=[repository.name]
        )
        mutability = str(response["repositories"][0].get("imageTagMutability", "MUTABLE"))
        self._mutability[repository] = (mutability, time.monotonic())
        return mutability

    def tagged_images(self, repository: RepositoryRef) -> Iterator[tuple[str, str]]:
        """Every (tag, digest) the repository holds today, page by page."""
        paginator = self._ecr(repository).get_paginator("list_images")
        for page in paginator.paginate(
            registryId=repository.registry_id, repositoryName=repository.name, filter={"tagStatus": "TAGGED"}
        ):
            for image_id in page.get("imageIds", []):
                if "imageTag" in image_id:
                    yield image_id["imageTag"], image_id["imageDigest"]


def _media_type_of(manifest: str) -> str:
    media_type = json.loads(manifest).get("mediaType")
    if not isinstance(media_type, str):
        raise RegistryError("manifest has no mediaType and ECR did not report one")
    return media_type
