"""ECR's events no function acts on (pull-through cache, referrers): parsed, validated, then ignored."""

from typing import Literal

from pydantic import Field

from ecr_automation.models.events.base import Detail, Digest, EcrEnvelope, ImageTag, RepositoryName


class PullThroughCacheDetail(Detail):
    rule_version: str = Field(alias="rule-version")
    sync_status: str = Field(alias="sync-status")
    ecr_repository_prefix: str = Field(alias="ecr-repository-prefix")
    repository_name: RepositoryName = Field(alias="repository-name")
    upstream_registry_url: str = Field(alias="upstream-registry-url")
    image_tag: ImageTag | None = Field(default=None, alias="image-tag")
    image_digest: Digest | None = Field(default=None, alias="image-digest")


class PullThroughCacheEvent(EcrEnvelope):
    detail_type: Literal["ECR Pull Through Cache Action"] = Field(alias="detail-type")
    detail: PullThroughCacheDetail


class ReferrerActionDetail(Detail):
    action_type: str = Field(alias="action-type")
    repository_name: RepositoryName = Field(alias="repository-name")
    image_digest: Digest = Field(alias="image-digest")
    result: str | None = None
    manifest_media_type: str | None = Field(default=None, alias="manifest-media-type")
    artifact_media_type: str | None = Field(default=None, alias="artifact-media-type")


class ReferrerActionEvent(EcrEnvelope):
    detail_type: Literal["ECR Referrer Action"] = Field(alias="detail-type")
    detail: ReferrerActionDetail
