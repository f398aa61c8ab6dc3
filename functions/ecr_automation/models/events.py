"""Typed models of the events delivered by EventBridge: ECR's, Inspector's, and this application's own.

Powertools ships no ECR model, so these extend its ``EventBridgeModel`` with a typed ``detail``.
They normalise what AWS makes awkward: Inspector2 Scan names the repository by ARN, severity
counts omit zero keys, and Inspector timestamps are not ISO 8601.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

# ECR's own constraints (CreateRepository / PutImage API reference).
REPOSITORY_NAME_PATTERN = r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$"
IMAGE_TAG_PATTERN = r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"
DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
REPOSITORY_ARN_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:ecr:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):repository/(?P<name>.+)$"
)

RepositoryName = Annotated[str, StringConstraints(min_length=2, max_length=256, pattern=REPOSITORY_NAME_PATTERN)]
ImageTag = Annotated[str, StringConstraints(pattern=IMAGE_TAG_PATTERN)]
Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
AccountId = Annotated[str, StringConstraints(pattern=r"^\d{12}$")]

ECR_SOURCE = "aws.ecr"
INSPECTOR_SOURCE = "aws.inspector2"
# What this application publishes its own events as; custom sources may not start with "aws.".
APPLICATION_SOURCE = "ecr-automation"
ACCEPTED_SOURCES = frozenset({ECR_SOURCE, INSPECTOR_SOURCE, APPLICATION_SOURCE})

# Inspector's documented samples use these non-ISO forms besides ISO 8601.
_INSPECTOR_TIME_FORMATS = (
    "%b %d, %Y, %I:%M:%S %p",  # Dec 3, 2021, 6:02:30 PM
    "%a %b %d %H:%M:%S.%f UTC %Y",  # Wed Sep 04 16:55:38.411 UTC 2024
    "%a %b %d %H:%M:%S UTC %Y",
)


def _parse_inspector_time(value: object) -> object:
    if not isinstance(value, str):
        return value
    for time_format in _INSPECTOR_TIME_FORMATS:
        try:
            return datetime.strptime(value, time_format).replace(tzinfo=UTC)
        except ValueError:
            continue
    return value  # let pydantic try ISO 8601 and report the failure with the field name


def _assume_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


InspectorTime = Annotated[datetime, BeforeValidator(_parse_inspector_time), AfterValidator(_assume_utc)]
# EventBridge always sends UTC with a "Z"; a time without a zone is read as UTC, never compared naive.
AwareTime = Annotated[datetime, AfterValidator(_assume_utc)]


def _repository_name_from_arn(value: object) -> object:
    if isinstance(value, str) and (match := REPOSITORY_ARN_PATTERN.match(value)):
        return match["name"]
    return value


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    INFORMATIONAL = "INFORMATIONAL"
    UNDEFINED = "UNDEFINED"

    @property
    def rank(self) -> int:
        """Higher is worse; UNDEFINED ranks with INFORMATIONAL."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.CRITICAL: 5,
    Severity.HIGH: 4,
    Severity.MEDIUM: 3,
    Severity.LOW: 2,
    Severity.INFORMATIONAL: 1,
    Severity.UNDEFINED: 1,
}


class _Detail(BaseModel):
    # AWS adds fields over time: unknown ones are tolerated and dropped.
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")


NonNegative = Annotated[int, Field(ge=0, strict=True)]


class SeverityCounts(_Detail):
    """Finding counts per severity; a missing key means zero (AWS omits zero counts)."""

    critical: NonNegative = Field(default=0, alias="CRITICAL")
    high: NonNegative = Field(default=0, alias="HIGH")
    medium: NonNegative = Field(default=0, alias="MEDIUM")
    low: NonNegative = Field(default=0, alias="LOW")
    informational: NonNegative = Field(default=0, alias="INFORMATIONAL")
    undefined: NonNegative = Field(default=0, alias="UNDEFINED")

    def count(self, severity: Severity) -> int:
        return int(getattr(self, severity.value.lower()))

    @property
    def total(self) -> int:
        return sum(self.count(severity) for severity in Severity)

    def at_or_above(self, threshold: Severity) -> int:
        return sum(self.count(severity) for severity in Severity if severity.rank >= threshold.rank)

    def as_dict(self) -> dict[str, int]:
        return {severity.value: self.count(severity) for severity in Severity if self.count(severity)}


class ImageActionType(StrEnum):
    PUSH = "PUSH"
    DELETE = "DELETE"
    UPDATE_STORAGE_CLASS = "UPDATE_STORAGE_CLASS"


class ImageActionDetail(_Detail):
    result: str
    repository_name: RepositoryName = Field(alias="repository-name")
    image_digest: Digest = Field(alias="image-digest")
    # Kept as a string so an action type AWS adds later is ignored on purpose, not rejected.
    action_type: str = Field(alias="action-type", min_length=1)
    image_tag: ImageTag | None = Field(default=None, alias="image-tag")
    target_storage_class: Literal["ARCHIVE", "STANDARD"] | None = Field(default=None, alias="target-storage-class")
    manifest_media_type: str | None = Field(default=None, alias="manifest-media-type")
    artifact_media_type: str | None = Field(default=None, alias="artifact-media-type")
    last_activated_at: datetime | None = Field(default=None, alias="last-activated-at")

    @property
    def known_action(self) -> ImageActionType | None:
        return ImageActionType(self.action_type) if self.action_type in ImageActionType.__members__ else None


class ImageScanDetail(_Detail):
    scan_status: str = Field(alias="scan-status", min_length=1)
    repository_name: RepositoryName = Field(alias="repository-name")
    image_digest: Digest = Field(alias="image-digest")
    image_tags: list[ImageTag] = Field(default_factory=list, alias="image-tags")
    finding_severity_counts: SeverityCounts = Field(default_factory=SeverityCounts, alias="finding-severity-counts")

    @property
    def complete(self) -> bool:
        return self.scan_status == "COMPLETE"


class InspectorScanDetail(_Detail):
    scan_status: str = Field(alias="scan-status", min_length=1)
    # Inspector sends the repository ARN here; keep it and expose the plain name.
    repository_arn: str = Field(alias="repository-name", pattern=REPOSITORY_ARN_PATTERN.pattern)
    image_digest: Digest = Field(alias="image-digest")
    image_tags: list[ImageTag] = Field(default_factory=list, alias="image-tags")
    finding_severity_counts: SeverityCounts = Field(default_factory=SeverityCounts, alias="finding-severity-counts")

    @property
    def repository_name(self) -> str:
        return str(_repository_name_from_arn(self.repository_arn))

    @property
    def complete(self) -> bool:
        return self.scan_status.endswith("COMPLETE")


class ReplicationActionDetail(_Detail):
    result: Literal["SUCCESS", "FAILED"]
    repository_name: RepositoryName = Field(alias="repository-name")
    image_digest: Digest = Field(alias="image-digest")
    image_tag: ImageTag | None = Field(default=None, alias="image-tag")
    action_type: str = Field(alias="action-type")
    source_account: AccountId = Field(alias="source-account")
    source_region: str = Field(alias="source-region", min_length=1)


class PullThroughCacheDetail(_Detail):
    rule_version: str = Field(alias="rule-version")
    sync_status: str = Field(alias="sync-status")
    ecr_repository_prefix: str = Field(alias="ecr-repository-prefix")
    repository_name: RepositoryName = Field(alias="repository-name")
    upstream_registry_url: str = Field(alias="upstream-registry-url")
    image_tag: ImageTag | None = Field(default=None, alias="image-tag")
    image_digest: Digest | None = Field(default=None, alias="image-digest")


class ReferrerActionDetail(_Detail):
    action_type: str = Field(alias="action-type")
    repository_name: RepositoryName = Field(alias="repository-name")
    image_digest: Digest = Field(alias="image-digest")
    result: str | None = None
    manifest_media_type: str | None = Field(default=None, alias="manifest-media-type")
    artifact_media_type: str | None = Field(default=None, alias="artifact-media-type")


class ScanFrequencyChange(_Detail):
    repository_name: RepositoryName = Field(alias="repository-name")
    repository_arn: str = Field(alias="repository-arn")
    scan_frequency: str = Field(alias="scan-frequency")
    previous_scan_frequency: str | None = Field(default=None, alias="previous-scan-frequency")


class ScanResourceChangeDetail(_Detail):
    action_type: str | None = Field(default=None, alias="action-type")
    scan_type: str | None = Field(default=None, alias="scan-type")
    repositories: list[ScanFrequencyChange] = Field(default_factory=list)


class VulnerablePackage(_Detail):
    name: str
    version: str
    release: str | None = None
    arch: str | None = None
    epoch: int | None = None
    fixed_in_version: str | None = Field(default=None, alias="fixedInVersion")
    package_manager: str | None = Field(default=None, alias="packageManager")
    source_layer_hash: str | None = Field(default=None, alias="sourceLayerHash")


class PackageVulnerabilityDetails(_Detail):
    vulnerability_id: str = Field(alias="vulnerabilityId")
    source: str | None = None
    source_url: str | None = Field(default=None, alias="sourceUrl")
    vendor_severity: str | None = Field(default=None, alias="vendorSeverity")
    reference_urls: list[str] = Field(default_factory=list, alias="referenceUrls")
    vulnerable_packages: list[VulnerablePackage] = Field(default_factory=list, alias="vulnerablePackages")


class EcrContainerImage(_Detail):
    image_hash: Digest = Field(alias="imageHash")
    image_tags: list[ImageTag] = Field(default_factory=list, alias="imageTags")
    repository_name: RepositoryName = Field(alias="repositoryName")
    registry: AccountId
    architecture: str | None = None
    platform: str | None = None
    pushed_at: InspectorTime | None = Field(default=None, alias="pushedAt")


class FindingResourceDetails(_Detail):
    aws_ecr_container_image: EcrContainerImage | None = Field(default=None, alias="awsEcrContainerImage")


class FindingResource(_Detail):
    type: str
    id: str
    details: FindingResourceDetails = Field(default_factory=FindingResourceDetails)


class Recommendation(_Detail):
    text: str | None = None
    url: str | None = Field(default=None, alias="Url")


class Remediation(_Detail):
    recommendation: Recommendation = Field(default_factory=Recommendation)


class Epss(_Detail):
    score: float


class InspectorFindingDetail(_Detail):
    aws_account_id: AccountId = Field(alias="awsAccountId")
    finding_arn: str = Field(alias="findingArn", min_length=1)
    severity: Severity
    status: Literal["ACTIVE", "SUPPRESSED", "CLOSED"]
    title: str
    description: str = ""
    type: str
    fix_available: str | None = Field(default=None, alias="fixAvailable")
    exploit_available: str | None = Field(default=None, alias="exploitAvailable")
    inspector_score: float | None = Field(default=None, alias="inspectorScore")
    epss: Epss | None = None
    first_observed_at: InspectorTime | None = Field(default=None, alias="firstObservedAt")
    last_observed_at: InspectorTime | None = Field(default=None, alias="lastObservedAt")
    updated_at: InspectorTime | None = Field(default=None, alias="updatedAt")
    remediation: Remediation = Field(default_factory=Remediation)
    package_vulnerability_details: PackageVulnerabilityDetails | None = Field(
        default=None, alias="packageVulnerabilityDetails"
    )
    resources: list[FindingResource] = Field(default_factory=list)

    @property
    def container_image(self) -> EcrContainerImage | None:
        for resource in self.resources:
            if resource.details.aws_ecr_container_image is not None:
                return resource.details.aws_ecr_container_image
        return None


class UserIdentity(_Detail):
    type: str | None = None
    arn: str | None = None
    principal_id: str | None = Field(default=None, alias="principalId")
    invoked_by: str | None = Field(default=None, alias="invokedBy")

    @property
    def name(self) -> str:
        return self.arn or self.invoked_by or self.principal_id or "unknown"


class ApiCallDetail(_Detail):
    """CloudTrail's record of an ECR API call: who pushed or deleted which tag."""

    event_name: str = Field(alias="eventName", min_length=1)
    event_source: str = Field(alias="eventSource")
    event_time: datetime = Field(alias="eventTime")
    user_identity: UserIdentity = Field(default_factory=UserIdentity, alias="userIdentity")
    source_ip_address: str | None = Field(default=None, alias="sourceIPAddress")
    user_agent: str | None = Field(default=None, alias="userAgent")
    error_code: str | None = Field(default=None, alias="errorCode")
    request_parameters: dict[str, Any] | None = Field(default=None, alias="requestParameters")
    response_elements: dict[str, Any] | None = Field(default=None, alias="responseElements")

    def tag_changes(self) -> list[tuple[str, str, str]]:
        """(repository, tag, digest) for every tag this call moved or deleted; empty for a failed call."""
        if self.error_code or not self.request_parameters or not self.response_elements:
            return []
        repository = str(self.request_parameters.get("repositoryName", ""))
        if self.event_name == "PutImage":
            image_id = (self.response_elements.get("image") or {}).get("imageId") or {}
            tag, digest = (
                image_id.get("imageTag") or self.request_parameters.get("imageTag"),
                image_id.get("imageDigest"),
            )
            return [(repository, str(tag), str(digest))] if tag and digest else []
        if self.event_name == "BatchDeleteImage":
            return [
                (repository, str(image_id["imageTag"]), str(image_id["imageDigest"]))
                for image_id in self.response_elements.get("imageIds") or []
                if image_id.get("imageTag") and image_id.get("imageDigest")
            ]
        return []


class ViolationDetail(_Detail):
    """A protected tag moved or deleted, as the tag guard publishes it (``Violation.as_event_detail``)."""

    severity: Literal["CRITICAL", "HIGH"]
    summary: str
    registry_id: AccountId = Field(alias="registry-id")
    region: str = Field(min_length=1)
    repository_name: RepositoryName = Field(alias="repository-name")
    image_tag: ImageTag = Field(alias="image-tag")
    # Plain strings, not enums: a value the guard adds later must not make its own events unreadable.
    change: str = Field(min_length=1)
    claimed_digest: Digest = Field(alias="claimed-digest")
    claimed_at: str = Field(alias="claimed-at")
    offending_digest: Digest = Field(alias="offending-digest")
    handling: str = Field(min_length=1)
    quarantine_tag: ImageTag | None = Field(default=None, alias="quarantine-tag")
    actor: str
    source_event_id: str = Field(alias="source-event-id", min_length=1)
    source_event_time: datetime = Field(alias="source-event-time")


class _Event(EventBridgeModel):
    """The envelope every event this application reads shares; subclasses pin the source."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)
    account: AccountId
    region: str = Field(min_length=1)
    time: AwareTime


class _EcrEvent(_Event):
    source: Literal["aws.ecr"]


class _InspectorEvent(_Event):
    source: Literal["aws.inspector2"]


class _ApplicationEvent(_Event):
    source: Literal["ecr-automation"]


class ImageActionEvent(_EcrEvent):
    detail_type: Literal["ECR Image Action"] = Field(alias="detail-type")
    detail: ImageActionDetail


class ImageScanEvent(_EcrEvent):
    detail_type: Literal["ECR Image Scan"] = Field(alias="detail-type")
    detail: ImageScanDetail


class ReplicationActionEvent(_EcrEvent):
    detail_type: Literal["ECR Replication Action"] = Field(alias="detail-type")
    detail: ReplicationActionDetail


class PullThroughCacheEvent(_EcrEvent):
    detail_type: Literal["ECR Pull Through Cache Action"] = Field(alias="detail-type")
    detail: PullThroughCacheDetail


class ReferrerActionEvent(_EcrEvent):
    detail_type: Literal["ECR Referrer Action"] = Field(alias="detail-type")
    detail: ReferrerActionDetail


class ScanResourceChangeEvent(_EcrEvent):
    detail_type: Literal["ECR Scan Resource Change"] = Field(alias="detail-type")
    detail: ScanResourceChangeDetail


class ApiCallEvent(_EcrEvent):
    detail_type: Literal["AWS API Call via CloudTrail"] = Field(alias="detail-type")
    detail: ApiCallDetail


class InspectorScanEvent(_InspectorEvent):
    detail_type: Literal["Inspector2 Scan"] = Field(alias="detail-type")
    detail: InspectorScanDetail


class InspectorFindingEvent(_InspectorEvent):
    detail_type: Literal["Inspector2 Finding"] = Field(alias="detail-type")
    detail: InspectorFindingDetail


class TagGuardViolationEvent(_ApplicationEvent):
    detail_type: Literal["Tag Guard Violation"] = Field(alias="detail-type")
    detail: ViolationDetail


class ReplicatedImageSource(_Detail):
    account: AccountId
    region: str = Field(min_length=1)
    repository_name: RepositoryName = Field(alias="repository-name")
    image_tag: ImageTag | None = Field(default=None, alias="image-tag")


class ImageReplicationFailedDetail(_Detail):
    """A replication job that failed for good, as the replication worker publishes it."""

    job_id: str = Field(alias="job-id", min_length=1)
    source: ReplicatedImageSource
    destination: dict[str, Any]
    image_digest: Digest = Field(alias="image-digest")
    reason: str = Field(min_length=1)
    conflicts: list[str] = Field(default_factory=list)


class ImageReplicationFailedEvent(_ApplicationEvent):
    detail_type: Literal["Image Replication Failed"] = Field(alias="detail-type")
    detail: ImageReplicationFailedDetail


class TagGuardViolationAttributedEvent(_ApplicationEvent):
    """Sent once CloudTrail names who caused a violation announced earlier without a name."""

    detail_type: Literal["Tag Guard Violation Attributed"] = Field(alias="detail-type")
    detail: ViolationDetail


EcrEvent = (
    ImageActionEvent
    | ImageScanEvent
    | ReplicationActionEvent
    | PullThroughCacheEvent
    | ReferrerActionEvent
    | ScanResourceChangeEvent
    | InspectorScanEvent
    | InspectorFindingEvent
    | ApiCallEvent
    | TagGuardViolationEvent
    | TagGuardViolationAttributedEvent
    | ImageReplicationFailedEvent
)
ScanCompletedEvent = ImageScanEvent | InspectorScanEvent

MODEL_BY_DETAIL_TYPE: dict[tuple[str, str], type[EcrEvent]] = {
    (ECR_SOURCE, "ECR Image Action"): ImageActionEvent,
    (ECR_SOURCE, "ECR Image Scan"): ImageScanEvent,
    (ECR_SOURCE, "ECR Replication Action"): ReplicationActionEvent,
    (ECR_SOURCE, "ECR Pull Through Cache Action"): PullThroughCacheEvent,
    (ECR_SOURCE, "ECR Referrer Action"): ReferrerActionEvent,
    (ECR_SOURCE, "ECR Scan Resource Change"): ScanResourceChangeEvent,
    (ECR_SOURCE, "AWS API Call via CloudTrail"): ApiCallEvent,
    (INSPECTOR_SOURCE, "Inspector2 Scan"): InspectorScanEvent,
    (INSPECTOR_SOURCE, "Inspector2 Finding"): InspectorFindingEvent,
    (APPLICATION_SOURCE, "Tag Guard Violation"): TagGuardViolationEvent,
    (APPLICATION_SOURCE, "Tag Guard Violation Attributed"): TagGuardViolationAttributedEvent,
    (APPLICATION_SOURCE, "Image Replication Failed"): ImageReplicationFailedEvent,
}
