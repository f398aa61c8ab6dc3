"""The interfaces logic needs from the outside world; adapters implement them, tests fake them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from ecr_automation.models.domain import (
    Claim,
    ClaimAttempt,
    ImageManifest,
    ImageUnavailable,
    PutOutcome,
    RegistryView,
    RepositoryRef,
    ViolationKey,
    ViolationState,
)
from ecr_automation.models.events.base import SeverityCounts
from ecr_automation.models.findings import Finding, Message, ScannedImage


class Registry(Protocol):
    def get_manifests(
        self, repository: RepositoryRef, digests: list[str]
    ) -> dict[str, ImageManifest | ImageUnavailable]: ...
    def view(self, repository: RepositoryRef, digest: str, tags: list[str]) -> RegistryView: ...
    def put_tag(self, image: ImageManifest, tag: str, *, reason: str, kind: str = ...) -> PutOutcome: ...
    def untag(self, repository: RepositoryRef, tag: str, *, reason: str) -> None: ...
    def delete_image(self, repository: RepositoryRef, digest: str, *, reason: str) -> None: ...
    def digest_of_tag(self, repository: RepositoryRef, tag: str) -> str | None: ...
    def tags_of_digests(self, repository: RepositoryRef, digests: list[str]) -> dict[str, list[str]]: ...
    def first_pushed(self, repository: RepositoryRef, digests: list[str]) -> dict[str, datetime]: ...
    def tagged_images(self, repository: RepositoryRef) -> Iterator[tuple[str, str, datetime | None]]: ...
    def scan_counts(self, repository: RepositoryRef, digest: str) -> SeverityCounts | None: ...


class ClaimLedger(Protocol):
    """The guard's record of who owns each protected tag."""

    def claim(
        self, repository: RepositoryRef, tag: str, digest: str, pushed_at: datetime, event_id: str
    ) -> ClaimAttempt: ...
    def hand_over(self, previous: Claim, digest: str, pushed_at: datetime, event_id: str) -> Claim: ...
    def date_back(self, claim: Claim, pushed_at: datetime) -> Claim: ...
    def record_unclaimed_delete(
        self, repository: RepositoryRef, tag: str, digest: str, deleted_at: datetime, event_id: str
    ) -> bool: ...
    def current_claim(self, repository: RepositoryRef, tag: str) -> Claim | None: ...
    def claims(self, repository: RepositoryRef) -> Iterator[Claim]: ...
    def release(self, repository: RepositoryRef, tag: str, *, reason: str, actor: str) -> Claim | None: ...


class ViolationLedger(Protocol):
    def record_violation(self, key: ViolationKey, event_id: str) -> ViolationState: ...
    def claim_alert(self, key: ViolationKey, event_id: str) -> bool: ...
    def close_violation(self, key: ViolationKey, detail: dict[str, Any] | None) -> None: ...
    def actor_of(self, repository: RepositoryRef, action: str, tag: str, digest: str) -> str | None: ...
    def record_actor(
        self, repository: RepositoryRef, action: str, tag: str, digest: str, actor: str
    ) -> list[dict[str, Any]]: ...


class Lease(Protocol):
    def check(self) -> None:
        """Raise unless the lease is still certainly held: a holder that lost it must write nothing."""


class LeaseLedger(Protocol):
    def hold(self, repository: RepositoryRef, name: str, *, owner: str) -> AbstractContextManager[Lease]: ...


class ImageGraph(Protocol):
    """Which multi-arch indexes name which platform manifests (scans report the platforms)."""

    def record_children(self, repository: RepositoryRef, index_digest: str, children: list[str]) -> None: ...
    def parents_of(self, repository: RepositoryRef, child_digest: str) -> list[str]: ...


class Publisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> None: ...


# -- the notifier ----------------------------------------------------------------------------------
class FindingsSource(Protocol):
    """Every finding of one image's latest scan (all pages), basic or enhanced; None when there is no scan."""

    def findings(self, image: ScannedImage) -> Iterator[Finding] | None: ...


class SentLedger(Protocol):
    """What was already delivered, so a redelivered event or an identical rescan posts nothing more.

    A sender reserves a fingerprint before sending (two invocations with the same content cannot both
    send) and marks it after the sink accepted; a failed send gives the reservation back. A crash
    between sending and marking re-sends once the reservation lapses (at least once).
    """

    def recorded(self, repository: RepositoryRef, fingerprint: str) -> str | None:
        """The summary recorded with a delivered fingerprint, or None when it was never delivered."""

    def reserve(self, repository: RepositoryRef, fingerprint: str) -> bool:
        """Become the one sender of ``fingerprint`` for a while; False when it is sent, or being sent."""

    def unreserve(self, repository: RepositoryRef, fingerprint: str) -> None:
        """Give a reservation back after a failed send, so the retry can send."""

    def mark_sent(self, repository: RepositoryRef, fingerprint: str, summary: str, *, keep: bool = False) -> None:
        """Record a delivery (kept for good with ``keep``, else for 90 days)."""


class MessageSink(Protocol):
    """Delivers a rendered message to one destination (a Slack webhook, an SNS topic); raises when it cannot."""

    def send(self, message: Message, *, route: str) -> None: ...
