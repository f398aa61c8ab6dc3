"""Vulnerability findings and the messages about them, whatever scanner (basic or enhanced) reported them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.events.base import Severity

if TYPE_CHECKING:  # the finding models load only in the functions that read Inspector2 Finding events
    from ecr_automation.models.events.inspector_findings import InspectorFindingDetail

_SEVERITIES = {severity.value: severity for severity in Severity}


def severity_of(value: object) -> Severity:
    """A scanner's severity label as a Severity; anything unknown (Inspector's UNTRIAGED) is UNDEFINED."""
    return _SEVERITIES.get(str(value).upper(), Severity.UNDEFINED) if value is not None else Severity.UNDEFINED


def _number(value: object) -> float | None:
    try:
        return float(str(value)) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _text(value: object) -> str | None:
    return str(value) if value is not None and value != "" else None


@dataclass(frozen=True)
class Finding:
    """One vulnerability in one image, normalised from ECR basic findings or Inspector enhanced findings."""

    vulnerability_id: str  # e.g. CVE-2023-44487
    severity: Severity
    package: str | None = None
    installed_version: str | None = None
    fixed_version: str | None = None  # None: no fix known
    score: float | None = None  # CVSS base score (basic) or Inspector score (enhanced)
    epss: float | None = None
    exploit_available: bool = False
    source_url: str | None = None
    title: str | None = None
    status: str = "ACTIVE"  # enhanced findings: ACTIVE, SUPPRESSED, CLOSED
    finding_arn: str | None = None  # enhanced findings only
    description: str | None = None
    first_observed_at: datetime | None = None

    @property
    def fix_available(self) -> bool:
        return bool(self.fixed_version)

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"

    # Plain dict access, not a pydantic model: a scan may hold thousands of findings, read page by page.
    @classmethod
    def from_basic(cls, raw: Mapping[str, Any]) -> Finding:
        """One finding of ``DescribeImageScanFindings`` (basic scanning): ``name``, ``uri``, ``attributes``."""
        attributes = {str(item.get("key")): item.get("value") for item in raw.get("attributes") or []}
        return cls(
            vulnerability_id=str(raw.get("name") or "unknown"),
            severity=severity_of(raw.get("severity")),
            package=_text(attributes.get("package_name")),
            installed_version=_text(attributes.get("package_version")),
            # Basic scanning names no fixed version.
            score=_number(attributes.get("CVSS3_SCORE") or attributes.get("CVSS2_SCORE")),
            source_url=_text(raw.get("uri")),
            description=_text(raw.get("description")),
        )

    @classmethod
    def from_enhanced(cls, raw: Mapping[str, Any]) -> Finding:
        """One enhanced finding: ECR's ``enhancedFindings[]`` or Inspector's ``ListFindings`` (same shape)."""
        details = raw.get("packageVulnerabilityDetails") or {}
        packages = details.get("vulnerablePackages") or []
        package = packages[0] if packages else {}
        epss = raw.get("epss") or {}
        first_observed = raw.get("firstObservedAt")
        return cls(
            vulnerability_id=str(details.get("vulnerabilityId") or raw.get("title") or "unknown"),
            severity=severity_of(raw.get("severity")),
            package=_text(package.get("name")),
            installed_version=_text(package.get("version")),
            fixed_version=_fixed_version(package.get("fixedInVersion")),
            # ECR calls Inspector's score "score"; Inspector itself "inspectorScore".
            score=_number(raw.get("inspectorScore", raw.get("score"))),
            epss=_number(epss.get("score")),
            exploit_available=raw.get("exploitAvailable") == "YES",
            source_url=_text(details.get("sourceUrl")),
            title=_text(raw.get("title")),
            status=str(raw.get("status") or "ACTIVE"),
            finding_arn=_text(raw.get("findingArn")),
            description=_text(raw.get("description")),
            first_observed_at=first_observed if isinstance(first_observed, datetime) else None,
        )

    @classmethod
    def from_inspector_event(cls, detail: InspectorFindingDetail) -> Finding:
        """The finding an ``Inspector2 Finding`` event announces."""
        details = detail.package_vulnerability_details
        package = details.vulnerable_packages[0] if details and details.vulnerable_packages else None
        return cls(
            vulnerability_id=details.vulnerability_id if details else detail.title,
            severity=detail.severity,
            package=package.name if package else None,
            installed_version=package.version if package else None,
            fixed_version=_fixed_version(package.fixed_in_version if package else None),
            score=detail.inspector_score,
            epss=detail.epss.score if detail.epss else None,
            exploit_available=detail.exploit_available == "YES",
            source_url=details.source_url if details else None,
            title=detail.title,
            status=detail.status,
            finding_arn=detail.finding_arn,
            description=detail.description or None,
            first_observed_at=detail.first_observed_at,
        )


def _fixed_version(value: object) -> str | None:
    # Inspector writes "NotAvailable" where no fixed version exists.
    text = _text(value)
    return None if text is None or text == "NotAvailable" else text


@dataclass(frozen=True)
class ScannedImage:
    """The image a scan or finding is about, as a message names it."""

    repository: RepositoryRef
    digest: str
    tags: tuple[str, ...] = ()
    pushed_at: datetime | None = None


@dataclass(frozen=True)
class Message:
    """A rendered notification: a plain-text fallback and Block Kit blocks (sinks decide how to send it)."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    # What makes two messages the same for "exactly once in effect" (e.g. image digest + finding set).
    fingerprint: str = ""
