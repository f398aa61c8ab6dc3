"""ECR's own replication actions (registry replication configured in ECR)."""

from typing import Literal

from pydantic import Field

from ecr_automation.models.events.base import AccountId, Detail, Digest, EcrEnvelope, ImageTag, RepositoryName


class ReplicationActionDetail(Detail):
    result: Literal["SUCCESS", "FAILED"]
    repository_name: RepositoryName = Field(alias="repository-name")
    image_digest: Digest = Field(alias="image-digest")
    image_tag: ImageTag | None = Field(default=None, alias="image-tag")
    action_type: str = Field(alias="action-type")
    source_account: AccountId = Field(alias="source-account")
    source_region: str = Field(alias="source-region", min_length=1)


class ReplicationActionEvent(EcrEnvelope):
    detail_type: Literal["ECR Replication Action"] = Field(alias="detail-type")
    detail: ReplicationActionDetail
