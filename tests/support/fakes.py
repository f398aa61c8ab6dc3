"""In-memory fakes of the logic's ports: small, faithful to the adapters' contracts, and counting calls.

``FakeRegistry`` answers as ``adapters/ecr.py`` does over ECR, and counts each call under the AWS
operation the adapter would make (``calls["BatchGetImage"]``, ...). ``FakeLedger`` keeps what
``adapters/ledger.py`` keeps in DynamoDB, with the same conditions on every write.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ecr_automation.adapters.ledger import CHANGE_OF_ACTION, ClaimChangedError, LeaseLostError, LeaseTimeoutError
from ecr_automation.models.domain import (
    Claim,
    ClaimAttempt,
    ImageManifest,
    ImageUnavailable,
    PendingViolation,
    PutOutcome,
    RegistryView,
    RepositoryRef,
    ViolationKey,
    ViolationState,
)
from ecr_automation.models.events.base import SeverityCounts

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# When the fake's images were first pushed, unless a test says otherwise: one second apart.
FIRST_PUSH = datetime(2026, 11, 28, 11, 0, 0, tzinfo=UTC)


def make_manifest(seed: str) -> tuple[str, str]:
    """An OCI manifest unique to ``seed`` and its real digest."""
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"digest": seed}, "layers": []})
    return manifest, "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def make_index(children: list[tuple[str, str]], *, attestations: list[str] | None = None) -> tuple[str, str]:
    """An OCI index naming ``children`` as (digest, architecture), plus attestation manifests (os unknown)."""
    entries = [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": 1, "platform": {"architecture": arch, "os": "linux"}}
        for digest, arch in children
    ]
    entries += [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": 1,
            "platform": {"architecture": "unknown", "os": "unknown"},  # how buildx marks attestations
        }
        for digest in attestations or []
    ]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return manifest, "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


class FakeRegistry:
    """ECR as ``EcrRegistry`` sees it.

    ``refuse_moves`` behaves like an IMMUTABLE repository (or a tag an exclusion filter covers): a put
    of an existing tag to another digest is refused, while deletes still work and a deleted tag can be
    pushed fresh. ``archived`` holds digests in the ARCHIVE storage class (BatchGetImage cannot read
    them; DescribeImages still lists them). ``scans`` holds finished scans' counts by digest.
    ``fail_tags`` makes a put of that tag raise the given error.
    """

    def __init__(self, *, refuse_moves: bool = False, dry_run: bool = False) -> None:
        self.refuse_moves = refuse_moves
        self.dry_run = dry_run
        self.manifests: dict[tuple[RepositoryRef, str], ImageManifest] = {}
        self.tags: dict[tuple[RepositoryRef, str], str] = {}
        self.pushed_at: dict[tuple[RepositoryRef, str], datetime] = {}
        self.archived: set[str] = set()
        self.scans: dict[str, SeverityCounts] = {}
        self.fail_tags: dict[str, Exception] = {}
        self.calls: Counter[str] = Counter()
        self.writes: list[tuple[str, str, str]] = []  # (kind, tag, digest)

    # -- arranging -----------------------------------------------------------------------------
    def add_image(self, repository: RepositoryRef, seed: str, *tags: str, pushed_at: datetime | None = None) -> str:
        manifest, digest = make_manifest(seed)
        return self._add(ImageManifest(repository, digest, manifest, OCI_MANIFEST), tags, pushed_at)

    def add_index(
        self,
        repository: RepositoryRef,
        children: list[tuple[str, str]],
        *tags: str,
        attestations: list[str] | None = None,
    ) -> str:
        manifest, digest = make_index(children, attestations=attestations)
        return self._add(ImageManifest(repository, digest, manifest, OCI_INDEX), tags, None)

    def _add(self, image: ImageManifest, tags: tuple[str, ...], pushed_at: datetime | None) -> str:
        key = (image.repository, image.digest)
        self.manifests[key] = image
        self.pushed_at.setdefault(key, pushed_at or FIRST_PUSH + timedelta(seconds=len(self.pushed_at)))
        for tag in tags:
            self.tags[(image.repository, tag)] = image.digest
        return image.digest

    def remove_image(self, repository: RepositoryRef, digest: str) -> None:
        self.manifests.pop((repository, digest), None)
        self.pushed_at.pop((repository, digest), None)
        for key in [key for key, value in self.tags.items() if key[0] == repository and value == digest]:
            del self.tags[key]

    def tags_on(self, repository: RepositoryRef, digest: str) -> set[str]:
        return {tag for (repo, tag), value in self.tags.items() if repo == repository and value == digest}

    # -- reading -------------------------------------------------------------------------------
    def _readable(self, repository: RepositoryRef, digest: str) -> ImageManifest | None:
        image = self.manifests.get((repository, digest))
        return None if image is None or digest in self.archived else image

    def _unavailable(self, repository: RepositoryRef, digest: str) -> ImageUnavailable:
        self.calls["DescribeImages"] += 1  # the adapter describes each unreadable image to say why
        if (repository, digest) in self.manifests and digest in self.archived:
            return ImageUnavailable.ARCHIVED
        return ImageUnavailable.GONE

    def get_manifests(
        self, repository: RepositoryRef, digests: list[str]
    ) -> dict[str, ImageManifest | ImageUnavailable]:
        self.calls["BatchGetImage"] += 1
        found: dict[str, ImageManifest | ImageUnavailable] = {}
        for digest in dict.fromkeys(digests):
            image = self._readable(repository, digest)
            found[digest] = image if image is not None else self._unavailable(repository, digest)
        return found

    def view(self, repository: RepositoryRef, digest: str, tags: list[str]) -> RegistryView:
        self.calls["BatchGetImage"] += 1
        points: dict[str, str | None] = {}
        for tag in dict.fromkeys(tags):
            held_by = self.tags.get((repository, tag))
            # BatchGetImage by tag cannot read an archived image either: the adapter sees no answer.
            points[tag] = held_by if held_by is not None and held_by not in self.archived else None
        image = self._readable(repository, digest)
        return RegistryView(digest, image if image is not None else self._unavailable(repository, digest), points)

    def digest_of_tag(self, repository: RepositoryRef, tag: str) -> str | None:
        self.calls["DescribeImages"] += 1
        return self.tags.get((repository, tag))

    def tags_of_digests(self, repository: RepositoryRef, digests: list[str]) -> dict[str, list[str]]:
        wanted = list(dict.fromkeys(digests))
        self.calls["DescribeImages"] += 1
        if any((repository, digest) not in self.manifests for digest in wanted) and len(wanted) > 1:
            self.calls["DescribeImages"] += len(wanted)  # ECR fails the whole call: the adapter asks one by one
        return {digest: sorted(self.tags_on(repository, digest)) for digest in wanted}

    def first_pushed(self, repository: RepositoryRef, digests: list[str]) -> dict[str, datetime]:
        self.calls["DescribeImages"] += 1
        return {
            digest: self.pushed_at[(repository, digest)]
            for digest in dict.fromkeys(digests)
            if (repository, digest) in self.pushed_at
        }

    def tagged_images(self, repository: RepositoryRef) -> Iterator[tuple[str, str, datetime | None]]:
        self.calls["DescribeImages"] += 1
        for (repo, tag), digest in sorted(self.tags.items(), key=lambda item: item[0][1]):
            if repo == repository:
                yield tag, digest, self.pushed_at.get((repository, digest))

    def scan_counts(self, repository: RepositoryRef, digest: str) -> SeverityCounts | None:
        del repository
        self.calls["DescribeImageScanFindings"] += 1
        return self.scans.get(digest)

    # -- writing -------------------------------------------------------------------------------
    def put_tag(self, image: ImageManifest, tag: str, *, reason: str, kind: str = "tag_written") -> PutOutcome:
        del reason
        if self.dry_run:
            return PutOutcome.DRY_RUN
        self.calls["PutImage"] += 1
        if tag in self.fail_tags:
            raise self.fail_tags[tag]
        current = self.tags.get((image.repository, tag))
        if current == image.digest:
            self.calls["DescribeImages"] += 1  # ImageAlreadyExistsException: the adapter checks where the tag is
            return PutOutcome.ALREADY_THERE
        if current is not None and self.refuse_moves:
            return PutOutcome.IMMUTABLE
        self._add(image, (tag,), None)
        self.writes.append((kind, tag, image.digest))
        return PutOutcome.WRITTEN

    def untag(self, repository: RepositoryRef, tag: str, *, reason: str) -> None:
        del reason
        if self.dry_run:
            return
        self.calls["BatchDeleteImage"] += 1
        digest = self.tags.pop((repository, tag), None)
        if digest is None:
            return  # ECR answers with a failure the adapter does not raise on
        self.writes.append(("tag_deleted", tag, digest))
        if not self.tags_on(repository, digest):  # ECR deletes an image with its last tag
            self.remove_image(repository, digest)

    def delete_image(self, repository: RepositoryRef, digest: str, *, reason: str) -> None:
        del reason
        if self.dry_run:
            return
        self.calls["BatchDeleteImage"] += 1
        self.writes.append(("image_deleted", "", digest))
        self.remove_image(repository, digest)


class FakeLease:
    """A held lease; with ``checks_allowed`` it runs out after that many successful checks."""

    def __init__(self, name: str, checks_allowed: int | None) -> None:
        self.name = name
        self.checks_allowed = checks_allowed
        self.checks = 0

    def check(self) -> None:
        if self.checks_allowed is not None and self.checks >= self.checks_allowed:
            raise LeaseLostError(f"lease on {self.name} ran out before its holder finished; retry")
        self.checks += 1


@dataclass
class _ViolationRecord:
    event_id: str
    alerting: str | None = None
    closed: bool = False
    alerted: bool = False
    detail: dict[str, Any] | None = None
    actor: str | None = None


@dataclass
class FakeLedger:
    """The tag ledger: claims, releases, violations, actors, leases and the index graph.

    A tag's claim item holds what the DynamoDB item holds (``digest``, ``pushed_at``, ``event_id``,
    ``claimed_at``; ``released_at`` after a release; ``deleted_digest``/``deleted_at`` for a delete
    delivered before any claim), and each write keeps or replaces it as the adapter's call does: a
    claim and an unclaimed delete are updates (they keep the other attributes), a hand-over and a
    release are puts (they replace the item; a hand-over carries a release's time over).
    """

    items: dict[tuple[RepositoryRef, str], dict[str, Any]] = field(default_factory=dict)
    violations: dict[ViolationKey, _ViolationRecord] = field(default_factory=dict)
    actors: dict[tuple[RepositoryRef, str, str, str], str] = field(default_factory=dict)
    children: dict[tuple[RepositoryRef, str], set[str]] = field(default_factory=dict)
    held: dict[tuple[RepositoryRef, str], str] = field(default_factory=dict)
    leases_taken: list[str] = field(default_factory=list)
    # A lease runs out after this many successful checks (None: never).
    lease_checks_allowed: int | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Called after each violation is recorded (tests interleave another invocation there).
    after_record: Callable[[ViolationKey, ViolationState], None] | None = None

    # -- claims --------------------------------------------------------------------------------
    @property
    def claims_by_tag(self) -> dict[tuple[RepositoryRef, str], Claim]:
        return {key: _claim_of(key, item) for key, item in self.items.items() if "digest" in item}

    def claim(
        self, repository: RepositoryRef, tag: str, digest: str, pushed_at: datetime, event_id: str
    ) -> ClaimAttempt:
        key = (repository, tag)
        item = self.items.get(key, {})
        if "digest" in item:
            return ClaimAttempt(_claim_of(key, item))
        if "released_at" in item and not item["released_at"] <= pushed_at:
            return ClaimAttempt(None, released_at=item["released_at"])
        item = {**item, **self._claim_fields(digest, pushed_at, event_id)}
        self.items[key] = item
        return ClaimAttempt(_claim_of(key, item), created=True)

    def hand_over(self, previous: Claim, digest: str, pushed_at: datetime, event_id: str) -> Claim:
        key = (previous.repository, previous.tag)
        item = self.items.get(key, {})
        if (item.get("digest"), item.get("pushed_at")) != (previous.digest, previous.pushed_at):
            raise ClaimChangedError(f"claim on {previous.repository.name}:{previous.tag} changed; retry")
        if "released_at" in item and not item["released_at"] <= pushed_at:
            raise ClaimChangedError(f"claim on {previous.repository.name}:{previous.tag} was released since")
        released = {"released_at": item["released_at"]} if "released_at" in item else {}
        self.items[key] = {**self._claim_fields(digest, pushed_at, event_id), **released}
        self.items[key]["handed_over_from"] = previous.digest
        return _claim_of(key, self.items[key])

    def date_back(self, claim: Claim, pushed_at: datetime) -> Claim:
        key = (claim.repository, claim.tag)
        item = self.items.get(key, {})
        if (item.get("digest"), item.get("pushed_at")) != (claim.digest, claim.pushed_at):
            raise ClaimChangedError(f"claim on {claim.repository.name}:{claim.tag} changed; retry")
        item["pushed_at"] = pushed_at
        return _claim_of(key, item)

    def record_unclaimed_delete(
        self, repository: RepositoryRef, tag: str, digest: str, deleted_at: datetime, event_id: str
    ) -> bool:
        key = (repository, tag)
        if "digest" in self.items.get(key, {}):
            return False
        # An update: a release recorded at the same key is kept.
        self.items[key] = {
            **self.items.get(key, {}),
            "deleted_digest": digest,
            "deleted_at": deleted_at,
            "deleted_event_id": event_id,
        }
        return True

    def current_claim(self, repository: RepositoryRef, tag: str) -> Claim | None:
        item = self.items.get((repository, tag), {})
        return _claim_of((repository, tag), item) if "digest" in item else None

    def claims(self, repository: RepositoryRef) -> Iterator[Claim]:
        yield from (claim for (repo, _), claim in sorted(self.claims_by_tag.items()) if repo == repository)

    def release(self, repository: RepositoryRef, tag: str, *, reason: str, actor: str) -> Claim | None:
        previous = self.current_claim(repository, tag)
        if previous is None:
            return None
        self.items[(repository, tag)] = {
            "released_at": self.clock().replace(microsecond=0),  # as the adapter: whole seconds, like events
            "released_reason": reason,
            "released_by": actor,
            "previous_digest": previous.digest,
        }
        return previous

    def _claim_fields(self, digest: str, pushed_at: datetime, event_id: str) -> dict[str, Any]:
        return {"digest": digest, "pushed_at": pushed_at, "event_id": event_id, "claimed_at": self.clock().isoformat()}

    # -- violations ----------------------------------------------------------------------------
    def record_violation(self, key: ViolationKey, event_id: str) -> ViolationState:
        found = self.violations.get(key)
        if found is None:
            self.violations[key] = _ViolationRecord(event_id)
            state = ViolationState.NEW
            claim = self.items.get((key.repository, key.tag))
            if claim is not None and "digest" in claim:  # the alert is owed until closed
                claim["pending_violation"] = PendingViolation(
                    key.change, key.offending_digest, key.occurrence, event_id
                )
        elif found.closed:
            state = ViolationState.CLOSED
        else:
            state = ViolationState.PENDING if event_id in {found.event_id, found.alerting} else ViolationState.TAKEN
        if self.after_record is not None:
            self.after_record(key, state)
        return state

    def claim_alert(self, key: ViolationKey, event_id: str) -> bool:
        record = self.violations.setdefault(key, _ViolationRecord(""))  # update_item creates a missing item
        if record.closed or record.alerting not in {None, event_id}:
            return False
        record.alerting = event_id
        return True

    def close_violation(self, key: ViolationKey, detail: dict[str, Any] | None) -> None:
        record = self.violations.setdefault(key, _ViolationRecord(""))
        record.closed, record.alerted = True, detail is not None
        if detail is not None:
            record.detail = detail
        claim = self.items.get((key.repository, key.tag), {})
        pending = claim.get("pending_violation")
        if pending is not None and (pending.occurrence, pending.offending_digest) == (
            key.occurrence,
            key.offending_digest,
        ):
            del claim["pending_violation"]

    def actor_of(self, repository: RepositoryRef, action: str, tag: str, digest: str) -> str | None:
        return self.actors.get((repository, action, tag, digest))

    def record_actor(
        self, repository: RepositoryRef, action: str, tag: str, digest: str, actor: str
    ) -> list[dict[str, Any]]:
        self.actors[(repository, action, tag, digest)] = actor
        attributed = []
        for key, record in self.violations.items():
            same = (key.repository, key.change, key.tag, key.offending_digest)
            if same != (repository, CHANGE_OF_ACTION[action], tag, digest):
                continue
            if record.alerted and record.actor is None and record.detail is not None:
                record.actor = actor
                attributed.append(record.detail)
        return attributed

    def published_violations(self) -> list[ViolationKey]:
        return [key for key, record in self.violations.items() if record.alerted]

    # -- leases --------------------------------------------------------------------------------
    @contextmanager
    def hold(self, repository: RepositoryRef, name: str, *, owner: str) -> Iterator[FakeLease]:
        key = (repository, name)
        holder = self.held.get(key)
        if holder is not None and holder != owner:
            raise LeaseTimeoutError(f"{repository.name}:{name} stayed busy; retry later")
        self.held[key] = owner
        self.leases_taken.append(name)
        try:
            yield FakeLease(f"{repository.name}:{name}", self.lease_checks_allowed)
        finally:
            if holder is None:
                self.held.pop(key, None)

    # -- multi-arch ----------------------------------------------------------------------------
    def record_children(self, repository: RepositoryRef, index_digest: str, children: list[str]) -> None:
        for child in children:
            self.children.setdefault((repository, child), set()).add(index_digest)

    def parents_of(self, repository: RepositoryRef, child_digest: str) -> list[str]:
        return sorted(self.children.get((repository, child_digest), set()))


def _claim_of(key: tuple[RepositoryRef, str], item: dict[str, Any]) -> Claim:
    deleted_at = item.get("deleted_at")
    deleted_after = (
        deleted_at
        if deleted_at is not None and item.get("deleted_digest") == item["digest"] and deleted_at >= item["pushed_at"]
        else None
    )
    repository, tag = key
    return Claim(
        repository,
        tag,
        item["digest"],
        item["pushed_at"],
        item["event_id"],
        item["claimed_at"],
        deleted_after,
        item.get("released_at"),
        item.get("handed_over_from"),
        item.get("pending_violation"),
    )


@dataclass
class FakePublisher:
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_with: Exception | None = None

    def publish(self, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> None:
        del resources
        if self.fail_with is not None:
            raise self.fail_with
        self.published.append((detail_type, detail))
