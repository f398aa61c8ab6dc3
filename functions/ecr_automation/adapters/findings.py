"""Scan findings of one image, basic or enhanced, read from ECR's ``DescribeImageScanFindings``.

Why this API and not ``inspector2:ListFindings``: ECR's answers both scanning modes (basic findings
in ``findings[]``, Inspector's in ``enhancedFindings[]``), and IAM scopes it to repositories
(``arn:...:repository/${RepositoryScope}``), so the notifier reads findings only of the repositories
it may act on. Inspector's ``ListFindings`` takes no resource-level permission: granting it exposes
every finding of the account (EC2 instances and Lambda functions included).

What ECR's answer lacks: an enhanced finding there carries Inspector's score (``score``) but no EPSS
score (the API's ``EnhancedImageScanFinding`` has no such field), so EPSS ranks findings only where an
``Inspector2 Finding`` event brought it. Parsing a finding is ``Finding.from_basic`` /
``Finding.from_enhanced`` (models/findings.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from ecr_automation.adapters.clients import AwsClients, client_in
from ecr_automation.models.findings import Finding, ScannedImage

# The most DescribeImageScanFindings returns per page.
PAGE_SIZE = 1000
# Statuses whose findings are final: basic scanning says COMPLETE, enhanced scanning ACTIVE.
SCAN_DONE = frozenset({"COMPLETE", "ACTIVE"})
NO_SCAN = frozenset({"ScanNotFoundException", "ImageNotFoundException", "RepositoryNotFoundException"})


class EcrFindings:
    """``FindingsSource`` over ECR: every page of an image's latest scan, one ``Finding`` at a time."""

    def __init__(self, clients: AwsClients, *, page_size: int = PAGE_SIZE) -> None:
        self._clients = clients
        self._page_size = page_size

    def findings(self, image: ScannedImage) -> Iterator[Finding] | None:
        """The image's findings, read lazily page by page; None when it has no finished scan.

        The first page is read here, so "no scan" is known before iterating; later pages are read
        while the caller iterates, and no page is kept once its findings were handed out.
        """
        repository = image.repository
        ecr = client_in(self._clients, repository.registry_id, "ecr", repository.region)  # acting in its account
        paginator = ecr.get_paginator("describe_image_scan_findings")
        pages: Iterator[dict[str, Any]] = iter(
            paginator.paginate(
                registryId=repository.registry_id,
                repositoryName=repository.name,
                imageId={"imageDigest": image.digest},
                PaginationConfig={"PageSize": self._page_size},
            )
        )
        try:
            first = next(pages, None)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in NO_SCAN:
                return None
            raise
        if first is None:
            return None
        status = (first.get("imageScanStatus") or {}).get("status")
        if status is not None and status not in SCAN_DONE:
            return None
        return _findings_of_pages(first, pages)


def _findings_of_pages(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[Finding]:
    page: dict[str, Any] | None = first
    del first  # hold one page at a time, the first included
    while page is not None:
        results = page.get("imageScanFindings") or {}
        yield from (Finding.from_basic(raw) for raw in results.get("findings") or ())
        yield from (Finding.from_enhanced(raw) for raw in results.get("enhancedFindings") or ())
        page = next(rest, None)
