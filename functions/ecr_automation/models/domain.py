"""Domain values shared by logic and adapters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# Every manifest type a tag can point at. BatchGetImage must be offered the index and list types,
# or ECR may answer with a single-platform manifest and a retag would flatten a multi-arch image.
INDEX_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_MEDIA_TYPES = (
    *INDEX_MEDIA_TYPES,
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

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    def platform_children(self) -> list[str]:
        """Digests of the platform manifests an index names; attestations (platform unknown) are not images."""
        if not self.is_index:
            return []
        children = []
        for entry in json.loads(self.manifest).get("manifests", []):
            platform = entry.get("platform") or {}
            if platform.get("os") == "unknown" or "vnd.docker.reference.type" in (entry.get("annotations") or {}):
                continue
            children.append(str(entry["digest"]))
        return children


class ImageUnavailable(StrEnum):
    """Why the registry cannot serve an image's manifest."""

    GONE = "gone"
    ARCHIVED = "archived"  # storage class ARCHIVE (or being restored): BatchGetImage refuses it


class PutOutcome(StrEnum):
    WRITTEN = "written"
    ALREADY_THERE = "already_there"
    IMMUTABLE = "immutable"
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class RegistryView:
    """Where a set of tags points now, and one image's manifest, read in one call."""

    digest: str
    image: ImageManifest | ImageUnavailable
    points: dict[str, str | None] = field(default_factory=dict)

    def digest_of(self, tag: str) -> str | None:
        return self.points.get(tag)

    def holds(self, tag: str) -> bool:
        return self.points.get(tag) == self.digest


@dataclass(frozen=True)
class Claim:
    """A protected tag's owner: the digest of the earliest known push of it."""

    repository: RepositoryRef
    tag: str
    digest: str
    pushed_at: datetime  # when the owning push happened (the event's time), which decides ownership
    event_id: str
    claimed_at: str  # when the ledger recorded it
    # A delete of this very push that was delivered before it: the tag must be put back.
    deleted_after: datetime | None = None
    # When an operator last released the tag: no push dated before it may ever own it again.
    released_at: datetime | None = None
    # The digest this claim was handed over from, while the registry may still show it.
    handed_over_from: str | None = None
    # A violation recorded for this tag and not alerted yet (its attempt died): the next look alerts it.
    pending_violation: PendingViolation | None = None


@dataclass(frozen=True)
class PendingViolation:
    """Enough of a recorded, unalerted violation to redo it: what changed, by which digest, in which event."""

    change: str
    offending_digest: str
    occurrence: str
    event_id: str


@dataclass(frozen=True)
class ClaimAttempt:
    """The ledger's answer to a claim: the claim now in force, and whether this call made it."""

    claim: Claim | None  # None: the push predates an operator's release of the tag
    created: bool = False
    released_at: datetime | None = None


@dataclass(frozen=True)
class ViolationKey:
    """One violation: what changed, on which tag, by which digest, and which occurrence of it.

    A move is one incident per (offending image, owner): however many invocations see it, concurrently
    or later, it is reported once. A delete is one incident per delete event.
    """

    repository: RepositoryRef
    change: str  # "moved" or "deleted"
    tag: str
    offending_digest: str
    occurrence: str


class ViolationState(StrEnum):
    """Where a violation's alert stands: recorded before acting, marked once published."""

    NEW = "new"
    PENDING = "pending"  # recorded by an earlier attempt on the same event that did not finish: alert now
    TAKEN = "taken"  # recorded by another event's invocation, which alerts
    CLOSED = "closed"  # finished earlier: alerted, or found already undone


def short_digest(digest: str, length: int = 12) -> str:
    return digest.split(":", 1)[-1][:length]


# Every AWS call this application makes carries this in its user agent (CloudTrail records it), so
# the guard can tell its own writes from anyone else's.
USER_AGENT_MARKER = "ecr-automation"
