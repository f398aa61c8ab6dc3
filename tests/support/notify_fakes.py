"""In-memory fakes of the notifier's ports: findings per image, the sent-ledger, and sinks that record or fail."""

from __future__ import annotations

from collections.abc import Iterator

from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.findings import Finding, Message, ScannedImage


class FakeFindings:
    """``FindingsSource``: findings by image digest; a digest without an entry has no scan (None).

    ``reads`` lists the digests read, and each answer is a one-pass iterator, as the adapter's pages are.
    """

    def __init__(self) -> None:
        self.by_digest: dict[str, list[Finding]] = {}
        self.reads: list[str] = []

    def findings(self, image: ScannedImage) -> Iterator[Finding] | None:
        self.reads.append(image.digest)
        found = self.by_digest.get(image.digest)
        return iter(found) if found is not None else None


class FakeSentLedger:
    """``SentLedger`` as a dict: (repository, fingerprint) -> summary."""

    def __init__(self) -> None:
        self.marked: dict[tuple[RepositoryRef, str], str] = {}
        self.reserved: set[tuple[RepositoryRef, str]] = set()
        self.kept: set[tuple[RepositoryRef, str]] = set()

    def already_sent(self, repository: RepositoryRef, fingerprint: str) -> bool:
        return (repository, fingerprint) in self.marked

    def recorded(self, repository: RepositoryRef, fingerprint: str) -> str | None:
        return self.marked.get((repository, fingerprint))

    def reserve(self, repository: RepositoryRef, fingerprint: str) -> bool:
        key = (repository, fingerprint)
        if key in self.marked or key in self.reserved:
            return False
        self.reserved.add(key)
        return True

    def unreserve(self, repository: RepositoryRef, fingerprint: str) -> None:
        self.reserved.discard((repository, fingerprint))

    def mark_sent(self, repository: RepositoryRef, fingerprint: str, summary: str, *, keep: bool = False) -> None:
        self.reserved.discard((repository, fingerprint))
        self.marked[(repository, fingerprint)] = summary
        if keep:
            self.kept.add((repository, fingerprint))

    def fingerprints(self) -> set[str]:
        return {fingerprint for _, fingerprint in self.marked}


class RecordingSink:
    """``MessageSink`` that keeps what it was given; with ``failure`` it raises it instead (Slack down)."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.sent: list[tuple[Message, str]] = []

    def send(self, message: Message, *, route: str) -> None:
        if self.failure is not None:
            raise self.failure
        self.sent.append((message, route))

    @property
    def messages(self) -> list[Message]:
        return [message for message, _ in self.sent]
