"""CloudTrail's records of ECR API calls: who pushed or deleted a tag, who put a lifecycle policy."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ecr_automation.models.events.base import AccountId, AwareTime, Detail, EcrEnvelope, RepositoryName


class UserIdentity(Detail):
    type: str | None = None
    arn: str | None = None
    principal_id: str | None = Field(default=None, alias="principalId")
    invoked_by: str | None = Field(default=None, alias="invokedBy")

    @property
    def name(self) -> str:
        return self.arn or self.invoked_by or self.principal_id or "unknown"


class ApiCallDetail(Detail):
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


class ApiCallEvent(EcrEnvelope):
    detail_type: Literal["AWS API Call via CloudTrail"] = Field(alias="detail-type")
    detail: ApiCallDetail


class LifecyclePolicyRequest(Detail):
    """PutLifecyclePolicy's request as CloudTrail records it: the repository and the policy text put."""

    repository_name: RepositoryName = Field(alias="repositoryName")
    registry_id: AccountId | None = Field(default=None, alias="registryId")
    lifecycle_policy_text: str | None = Field(default=None, alias="lifecyclePolicyText", max_length=30720)


class LifecyclePolicyCallDetail(Detail):
    """CloudTrail's record of a PutLifecyclePolicy call (the lifecycle guard checks the policy put)."""

    event_name: Literal["PutLifecyclePolicy"] = Field(alias="eventName")
    event_source: Literal["ecr.amazonaws.com"] = Field(alias="eventSource")
    event_time: AwareTime = Field(alias="eventTime")
    user_identity: UserIdentity = Field(default_factory=UserIdentity, alias="userIdentity")
    error_code: str | None = Field(default=None, alias="errorCode")
    request_parameters: LifecyclePolicyRequest | None = Field(default=None, alias="requestParameters")


class LifecyclePolicyPutEvent(EcrEnvelope):
    detail_type: Literal["AWS API Call via CloudTrail"] = Field(alias="detail-type")
    detail: LifecyclePolicyCallDetail
