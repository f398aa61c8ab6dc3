"""Inspector's findings on container images."""

from typing import Literal

from pydantic import Field

from ecr_automation.models.events.base import (
    AccountId,
    Detail,
    Digest,
    ImageTag,
    InspectorEnvelope,
    InspectorTime,
    RepositoryName,
    Severity,
)


class VulnerablePackage(Detail):
    name: str
    version: str
    release: str | None = None
    arch: str | None = None
    epoch: int | None = None
    fixed_in_version: str | None = Field(default=None, alias="fixedInVersion")
    package_manager: str | None = Field(default=None, alias="packageManager")
    source_layer_hash: str | None = Field(default=None, alias="sourceLayerHash")


class PackageVulnerabilityDetails(Detail):
    vulnerability_id: str = Field(alias="vulnerabilityId")
    source: str | None = None
    source_url: str | None = Field(default=None, alias="sourceUrl")
    vendor_severity: str | None = Field(default=None, alias="vendorSeverity")
    reference_urls: list[str] = Field(default_factory=list, alias="referenceUrls")
    vulnerable_packages: list[VulnerablePackage] = Field(default_factory=list, alias="vulnerablePackages")


class EcrContainerImage(Detail):
    image_hash: Digest = Field(alias="imageHash")
    image_tags: list[ImageTag] = Field(default_factory=list, alias="imageTags")
    repository_name: RepositoryName = Field(alias="repositoryName")
    registry: AccountId
    architecture: str | None = None
    platform: str | None = None
    pushed_at: InspectorTime | None = Field(default=None, alias="pushedAt")


class FindingResourceDetails(Detail):
    aws_ecr_container_image: EcrContainerImage | None = Field(default=None, alias="awsEcrContainerImage")


class FindingResource(Detail):
    type: str
    id: str
    details: FindingResourceDetails = Field(default_factory=FindingResourceDetails)


class Recommendation(Detail):
    text: str | None = None
    url: str | None = Field(default=None, alias="Url")


class Remediation(Detail):
    recommendation: Recommendation = Field(default_factory=Recommendation)


class Epss(Detail):
    score: float


class InspectorFindingDetail(Detail):
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


class InspectorFindingEvent(InspectorEnvelope):
    detail_type: Literal["Inspector2 Finding"] = Field(alias="detail-type")
    detail: InspectorFindingDetail
