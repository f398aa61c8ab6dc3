"""In-memory fakes of the logic's ports: small, faithful to the adapters' contracts, and counting calls."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ecr_automation.adapters.ledger import Claim
from ecr_automation.models.domain import ImageManifest, PutOutcome, RepositoryRef

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def make_manifest(seed: str) -> tuple[str, str]:
    """An OCI manifest unique to ``seed`` and its real digest."""
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"digest": seed}, "layers": []})
    return manifest, "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


class FakeRegistry:
    def __init__(self, mutability: str = "MUTABLE", dry_run: bool = False) -> None:
        self.mutability = mutability
        self.dry_run = dry_run
        # ECR refuses to move tags (ImageTagAlreadyExistsException), e.g. IMMUTABLE_WITH_EXCLUSION.
        self.refuse_moves = mutability == "IMMUTABLE"
        self.manifests: dict[tuple[RepositoryRef, str], ImageManifest] = {}
        self.tags: dict[tuple[RepositoryRef, str], str] = {}
        self.calls: Counter[str] = Counter()
        self.writes: list[tuple[str, str, str]] = []  # (kind, tag, digest)

    def add_image(self, repository: RepositoryRef, seed: str, *tags: str) -> str:
        manifest, digest = make_manifest(seed)
        self.manifests[(repository, digest)] = ImageManifest(repository, digest, manifest, OCI_MANIFEST)
        for tag in tags:
            self.tags[(repository, tag)] = digest
        return digest

    def remove_image(self, repository: RepositoryRef, digest: str) -> None:
        self.manifests.pop((repository, digest), None)
        for key in [key for key, value in self.tags.items() if key[0] == repository and value == digest]:
            del self.tags[key]

    def get_manifest(self, repository: RepositoryRef, digest: str) -> ImageManifest | None:
        self.calls["BatchGetImage"] += 1
        return self.manifests.get((repository, digest))

    def put_tag(self, image: ImageManifest, tag: str, *, reason: str, kind: str = "tag_written") -> PutOutcome:
        del reason
        if self.dry_run:
            return PutOutcome.DRY_RUN
        self.calls["PutImage"] += 1
        current = self.tags.get((image.repository, tag))
        if current == image.digest:
            return PutOutcome.ALREADY_THERE
        if current is not None and self.refuse_moves:
            return PutOutcome.IMMUTABLE
        self.tags[(image.repository, tag)] = image.digest
        self.writes.append((kind, tag, image.digest))
        return PutOutcome.WRITTEN

    def delete_image(self, repository: RepositoryRef, digest: str, *, reason: str) -> None:
        del reason
        self.calls["BatchDeleteImage"] += 1
        self.writes.append(("image_deleted", "", digest))
        self.remove_image(repository, digest)

    def digest_of_tag(self, repository: RepositoryRef, tag: str) -> str | None:
        self.calls["DescribeImages"] += 1
        return self.tags.get((repository, tag))

    def tags_of_digest(self, repository: RepositoryRef, digest: str) -> list[str]:
        self.calls["DescribeImages"] += 1
        return sorted(tag for (repo, tag), value in self.tags.items() if repo == repository and value == digest)

    def tag_mutability(self, repository: RepositoryRef) -> str:
        del repository
        self.calls["DescribeRepositories"] += 1
        return self.mutability

    def tagged_images(self, repository: RepositoryRef) -> Iterator[tuple[str, str]]:
        for (repo, tag), digest in sorted(self.tags.items(), key=lambda item: item[0][1]):
            if repo == repository:
                yield tag, digest


@dataclass
class FakeLedger:
    claims_by_tag: dict[tuple[RepositoryRef, str], Claim] = field(default_factory=dict)
    violations: dict[tuple[RepositoryRef, str, str, str], bool] = field(default_factory=dict)
    details: dict[tuple[RepositoryRef, str, str, str], dict[str, Any]] = field(default_factory=dict)
    actors: dict[tuple[RepositoryRef, str, str], str] = field(default_factory=dict)
    held: set[tuple[RepositoryRef, str]] = field(default_factory=set)
    leases_taken: list[str] = field(default_factory=list)

    def claim(self, repository: RepositoryRef, tag: str, digest: str, event_id: str) -> Claim:
        return self.claims_by_tag.setdefault(
            (repository, tag), Claim(repository, tag, digest, "2026-01-01T00:00:00+00:00", event_id)
        )

    def current_claim(self, repository: RepositoryRef, tag: str) -> Claim | None:
        return self.claims_by_tag.get((repository, tag))

    @contextmanager
    def hold(self, repository: RepositoryRef, names: list[str]) -> Iterator[None]:
        keys = {(repository, name) for name in names}
        assert not keys & self.held, f"lease taken twice: {keys & self.held}"
        self.held |= keys
        self.leases_taken.extend(sorted(name for _, name in keys))
        try:
            yield
        finally:
            self.held -= keys

    def claims(self, repository: RepositoryRef) -> Iterator[Claim]:
        yield from (
            claim
            for (repo, _), claim in sorted(self.claims_by_tag.items(), key=lambda item: item[0][1])
            if repo == repository
        )

    def record_violation(
        self, repository: RepositoryRef, tag: str, offending_digest: str, event_id: str, detail: dict[str, Any]
    ) -> bool:
        key = (repository, tag, offending_digest, event_id)
        if self.violations.get(key):
            return False
        self.violations[key] = False
        self.details[key] = detail
        return True

    def mark_violation_alerted(self, repository: RepositoryRef, tag: str, offending_digest: str, event_id: str) -> None:
        self.violations[(repository, tag, offending_digest, event_id)] = True

    def actor_of(self, repository: RepositoryRef, tag: str, digest: str) -> str | None:
        return self.actors.get((repository, tag, digest))

    def record_actor(self, repository: RepositoryRef, tag: str, digest: str, actor: str) -> list[dict[str, Any]]:
        self.actors[(repository, tag, digest)] = actor
        pending = [
            key
            for key, alerted in self.violations.items()
            if key[:3] == (repository, tag, digest) and alerted and "actor_named" not in self.details[key]
        ]
        for key in pending:
            self.details[key] = {**self.details[key], "actor_named": True}
        return [{k: v for k, v in self.details[key].items() if k != "actor_named"} for key in pending]


@dataclass
class FakePublisher:
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> None:
        del resources
        self.published.append((detail_type, detail))
