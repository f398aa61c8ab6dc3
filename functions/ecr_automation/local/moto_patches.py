"""Where moto's ECR differs from real ECR in a way this application depends on, make it faithful.

- A push that moves a tag keeps the old image (real ECR leaves it untagged; moto 5.2 deletes it), in
  plainly MUTABLE repositories; everything else, including immutability errors, is left to moto.
- ``BatchGetImage`` answers each requested image id as asked: a tag request reports that tag (moto
  reports the image's latest tag), a digest request reports no tag, a failure names the id asked for.
- Pull-through cache rules (moto 5.2 has no such API) are kept and listed, so mirrors can be told apart.
- A request that names a ``registryId`` is served from that account's registry (moto serves every
  request from the caller's account), so events from any account can be simulated.
"""

from __future__ import annotations

import functools
import json
from typing import Any

_PATCHED = "_ecr_automation_patched"


def make_moto_ecr_faithful() -> None:
    """Apply every patch below; safe to call more than once."""
    keep_images_when_tags_move()
    answer_batch_get_image_per_request()
    serve_the_named_registry()
    keep_pull_through_cache_rules()


def keep_images_when_tags_move() -> None:
    from moto.ecr.models import ECRBackend  # noqa: PLC0415

    original = ECRBackend.put_image
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def put_image(  # noqa: PLR0917 - moto's own signature
        self: Any,
        repository_name: str,
        image_manifest: str,
        image_tag: str,
        image_manifest_mediatype: str | None = None,
        digest: str | None = None,
    ) -> Any:
        repository = self.repositories.get(repository_name)
        if (
            repository is not None
            and image_tag
            and repository.image_tag_mutability == "MUTABLE"
            and not repository.image_tag_mutability_exclusion_filters
        ):
            for image in repository.images:
                if image_tag in image.image_tags and image.image_manifest != image_manifest:
                    image.remove_tag(image_tag)
                    if not image.image_tags:
                        image.image_tag = None
        return original(self, repository_name, image_manifest, image_tag, image_manifest_mediatype, digest)

    setattr(put_image, _PATCHED, True)
    ECRBackend.put_image = put_image  # type: ignore[method-assign]


def answer_batch_get_image_per_request() -> None:
    from moto.ecr.exceptions import RepositoryNotFoundException  # noqa: PLC0415
    from moto.ecr.models import ECRBackend  # noqa: PLC0415

    if getattr(ECRBackend.batch_get_image, _PATCHED, False):
        return

    def batch_get_image(
        self: Any, repository_name: str, registry_id: str | None = None, image_ids: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        repository = self.repositories.get(repository_name)
        if repository is None:
            raise RepositoryNotFoundException(repository_name, registry_id or self.account_id)
        images: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for image_id in image_ids or []:
            tag, digest = image_id.get("imageTag"), image_id.get("imageDigest")
            found = next(
                (
                    image
                    for image in repository.images
                    if (digest is None or image.get_image_digest() == digest)
                    and (tag is None or tag in image.image_tags)
                ),
                None,
            )
            if found is None:
                failures.append(
                    {
                        "imageId": dict(image_id),
                        "failureCode": "ImageNotFound",
                        "failureReason": "Requested image not found",
                    }
                )
                continue
            answered_id = {"imageDigest": found.get_image_digest(), **({"imageTag": tag} if tag else {})}
            images.append(
                {
                    "registryId": repository.registry_id,
                    "repositoryName": repository_name,
                    "imageId": answered_id,
                    "imageManifest": found.image_manifest,
                    "imageManifestMediaType": found.image_manifest_media_type,
                }
            )
        return {"images": images, "failures": failures}

    batch_get_image.__dict__[_PATCHED] = True
    ECRBackend.batch_get_image = batch_get_image  # type: ignore[method-assign]


def serve_the_named_registry() -> None:
    from moto.ecr.models import ecr_backends  # noqa: PLC0415
    from moto.ecr.responses import ECRResponse  # noqa: PLC0415

    if getattr(ECRResponse.__dict__["ecr_backend"].fget, _PATCHED, False):
        return

    def ecr_backend(self: Any) -> Any:
        registry_id = self._get_param("registryId")
        account = registry_id if isinstance(registry_id, str) and registry_id.isdigit() else self.current_account
        return ecr_backends[account][self.region]

    ecr_backend.__dict__[_PATCHED] = True
    ECRResponse.ecr_backend = property(ecr_backend)  # type: ignore[method-assign,assignment]


def keep_pull_through_cache_rules() -> None:
    from moto.ecr.responses import ECRResponse  # noqa: PLC0415

    if hasattr(ECRResponse, "describe_pull_through_cache_rules"):
        return

    def rules_of(response: Any) -> list[dict[str, Any]]:
        backend = response.ecr_backend
        if not hasattr(backend, "pull_through_cache_rules"):
            backend.pull_through_cache_rules = []
        rules: list[dict[str, Any]] = backend.pull_through_cache_rules
        return rules

    def create_pull_through_cache_rule(self: Any) -> str:
        rule = {
            "ecrRepositoryPrefix": self._get_param("ecrRepositoryPrefix"),
            "upstreamRegistryUrl": self._get_param("upstreamRegistryUrl"),
            "registryId": self._get_param("registryId") or self.current_account,
        }
        rules_of(self).append(rule)
        return json.dumps(rule)

    def describe_pull_through_cache_rules(self: Any) -> str:
        return json.dumps({"pullThroughCacheRules": rules_of(self)})

    ECRResponse.create_pull_through_cache_rule = create_pull_through_cache_rule  # type: ignore[attr-defined]
    ECRResponse.describe_pull_through_cache_rules = describe_pull_through_cache_rules  # type: ignore[attr-defined]
