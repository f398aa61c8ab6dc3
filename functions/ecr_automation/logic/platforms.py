"""What a finished scan lets through: the gate that promotion, the replication planner and the notifier share.

Scans name platform manifests, not the index that carries the release tag: an index is decided once every
platform it names has a finished scan, on the sum of their counts (attestations are no platforms).
"""

from __future__ import annotations

from ecr_automation.logic.ports import Registry
from ecr_automation.models.domain import ImageManifest, RepositoryRef, short_digest
from ecr_automation.models.events.base import Severity, SeverityCounts

# Inspector2 Scan events count only CRITICAL, HIGH and MEDIUM findings: below MEDIUM they cannot tell.
LOWEST_SEVERITY_INSPECTOR_COUNTS = Severity.MEDIUM


def counts_decide(block_at: Severity, *, inspector_counts: bool) -> bool:
    """Whether a scan's counts can decide a gate at ``block_at`` (Inspector's event counts stop at MEDIUM)."""
    return not inspector_counts or block_at.rank >= LOWEST_SEVERITY_INSPECTOR_COUNTS.rank


def gate_closed(counts: SeverityCounts, block_at: Severity, *, inspector_counts: bool) -> str | None:
    """Why a scan with these counts does not pass a gate at ``block_at``; None when it passes."""
    if not counts_decide(block_at, inspector_counts=inspector_counts):
        return f"this scan reports no {block_at} counts, so the gate cannot be decided"
    blocking = counts.at_or_above(block_at)
    if not blocking:
        return None
    found = ", ".join(f"{severity}={count}" for severity, count in counts.as_dict().items())
    return f"{blocking} finding(s) at {block_at} or above ({found})"


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
