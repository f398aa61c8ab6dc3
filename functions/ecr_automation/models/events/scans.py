"""Image scans completed, by ECR's basic scanning or by Inspector, and ECR's scan setting changes."""

from typing import Literal

from pydantic import Field

from ecr_automation.models.events.base import (
    REPOSITORY_ARN_PATTERN,
    Detail,
    Digest,
    EcrEnvelope,
    ImageTag,
    InspectorEnvelope,
    RepositoryName,
    SeverityCounts,
    repository_name_from_arn,
)


class ImageScanDetail(Detail):
    scan_status: str = Field(alias="scan-status", min_length=1)
    repository_name: RepositoryName = Field(alias="repository-name")
    image_digest: Digest = Field(alias="image-digest")
    image_tags: list[ImageTag] = Field(default_factory=list, alias="image-tags")
    finding_severity_counts: SeverityCounts = Field(default_factory=SeverityCounts, alias="finding-severity-counts")

    @property
    def complete(self) -> bool:
        return self.scan_status == "COMPLETE"


class InspectorScanDetail(Detail):
    scan_status: str = Field(alias="scan-status", min_length=1)
    # Inspector sends the repository ARN here; keep it and expose the plain name.
    repository_arn: str = Field(alias="repository-name", pattern=REPOSITORY_ARN_PATTERN.pattern)
    image_digest: Digest = Field(alias="image-digest")
    image_tags: list[ImageTag] = Field(default_factory=list, alias="image-tags")
    finding_severity_counts: SeverityCounts = Field(default_factory=SeverityCounts, alias="finding-severity-counts")

    @property
    def repository_name(self) -> str:
        return str(repository_name_from_arn(self.repository_arn))

    @property
    def complete(self) -> bool:
        return self.scan_status.endswith("COMPLETE")


class ScanFrequencyChange(Detail):
    repository_name: RepositoryName = Field(alias="repository-name")
    repository_arn: str = Field(alias="repository-arn")
    scan_frequency: str = Field(alias="scan-frequency")
    previous_scan_frequency: str | None = Field(default=None, alias="previous-scan-frequency")


class ScanResourceChangeDetail(Detail):
    action_type: str | None = Field(default=None, alias="action-type")
    scan_type: str | None = Field(default=None, alias="scan-type")
    repositories: list[ScanFrequencyChange] = Field(default_factory=list)


class ImageScanEvent(EcrEnvelope):
    detail_type: Literal["ECR Image Scan"] = Field(alias="detail-type")
    detail: ImageScanDetail


class InspectorScanEvent(InspectorEnvelope):
    detail_type: Literal["Inspector2 Scan"] = Field(alias="detail-type")
    detail: InspectorScanDetail


class ScanResourceChangeEvent(EcrEnvelope):
    detail_type: Literal["ECR Scan Resource Change"] = Field(alias="detail-type")
    detail: ScanResourceChangeDetail


ScanCompletedEvent = ImageScanEvent | InspectorScanEvent
