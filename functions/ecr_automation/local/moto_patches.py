"""Where moto's ECR differs from real ECR in a way this application depends on, make it faithful.

Real ECR: when a push moves a tag to another image, the old image stays in the repository (untagged
if that was its last tag). moto 5.2 deletes it instead, which would make every "revert the tag"
look impossible. Only tag moves in plainly MUTABLE repositories are changed; everything else,
including immutability errors, is left to moto.
"""

from __future__ import annotations

import functools
from typing import Any

_PATCHED = "_ecr_automation_keeps_untagged_images"


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
