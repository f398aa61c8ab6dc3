"""Scans name platform manifests, not the index that carries the release tag: what an index's scan is.

Retag (promotion) and the replication planner (the scan gate) both decide on an index once every platform
it names has a finished scan; the counts are the sum over its platforms (attestations are no platforms).
"""

from __future__ import annotations

from ecr_automation.logic.ports import Registry
from ecr_automation.models.domain import ImageManifest, RepositoryRef, short_digest
from ecr_automation.models.events import SeverityCounts


def combined_counts(
    registry: Registry,
    repository: RepositoryRef,
    image: ImageManifest,
    reported: tuple[str, SeverityCounts] | None,
) -> SeverityCounts | str:
    """The image's scan counts; for an index, the sum over its platforms; a platform not scanned yet: why.

    ``reported`` is a (digest, counts) pair the caller already holds (the scan event at hand), read from
    it rather than asked again.
    """
    total: dict[str, int] = {}
    for digest in image.platform_children() or [image.digest]:
        counts = reported[1] if reported and reported[0] == digest else registry.scan_counts(repository, digest)
        if counts is None:
            return f"waiting for the scan of platform {short_digest(digest)}"
        for severity, count in counts.as_dict().items():
            total[severity] = total.get(severity, 0) + count
    return SeverityCounts.model_validate(total)
