"""Domain values shared by logic and adapters."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Every manifest type a tag can point at. BatchGetImage must be offered the index and list types,
# or ECR may answer with a single-platform manifest and a retag would flatten a multi-arch image.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass(frozen=True, order=True)
class RepositoryRef:
    registry_id: str
    region: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.registry_id}#{self.region}#{self.name}"

    @property
    def arn(self) -> str:
        return f"arn:aws:ecr:{self.region}:{self.registry_id}:repository/{self.name}"


@dataclass(frozen=True)
class ImageManifest:
    """A manifest exactly as the registry holds it: re-serialising it would change its digest."""

    repository: RepositoryRef
    digest: str
    manifest: str
    media_type: str


class PutOutcome(StrEnum):
    WRITTEN = "written"
    ALREADY_THERE = "already_there"
    IMMUTABLE = "immutable"
    DRY_RUN = "dry_run"


def short_digest(digest: str, length: int = 12) -> str:
    return digest.split(":", 1)[-1][:length]
