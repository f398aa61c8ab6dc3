"""ECR's image actions (push, delete, archive, restore): what the tag guard, retag and the replication planner read."""

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from ecr_automation.models.events.base import Detail, Digest, EcrEnvelope, ImageTag, RepositoryName


class ImageActionType(StrEnum):
    PUSH = "PUSH"
    DELETE = "DELETE"
    UPDATE_STORAGE_CLASS = "UPDATE_STORAGE_CLASS"


class ImageActionDetail(Detail):
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


class ImageActionEvent(EcrEnvelope):
    detail_type: Literal["ECR Image Action"] = Field(alias="detail-type")
    detail: ImageActionDetail

    def ignore_reason(self) -> str | None:
        if self.detail.known_action is None:
            return f"unknown action-type {self.detail.action_type!r}"
        return None
