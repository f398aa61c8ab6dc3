"""The events this application publishes itself: violations, lifecycle conflicts, failed replications."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ecr_automation.models.events.base import AccountId, ApplicationEnvelope, Detail, Digest, ImageTag, RepositoryName


class ViolationDetail(Detail):
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


class TagGuardViolationEvent(ApplicationEnvelope):
    detail_type: Literal["Tag Guard Violation"] = Field(alias="detail-type")
    detail: ViolationDetail


class TagGuardViolationAttributedEvent(ApplicationEnvelope):
    """Sent once CloudTrail names who caused a violation announced earlier without a name."""

    detail_type: Literal["Tag Guard Violation Attributed"] = Field(alias="detail-type")
    detail: ViolationDetail


class LifecycleConflictImage(Detail):
    image_digest: Digest = Field(alias="image-digest")
    image_tags: list[ImageTag] = Field(default_factory=list, alias="image-tags")
    protected_tags: list[ImageTag] = Field(default_factory=list, alias="protected-tags")
    alias_tags: list[ImageTag] = Field(default_factory=list, alias="alias-tags")
    action: str = Field(min_length=1)
    rule_priority: int = Field(alias="rule-priority", ge=0)
    pushed_at: datetime | None = Field(default=None, alias="pushed-at")


class LifecycleViolationDetail(Detail):
    """A lifecycle policy that would expire protected tags or alias targets (``logic/lifecycle.violation_detail``)."""

    severity: Literal["CRITICAL", "HIGH"]
    summary: str
    registry_id: AccountId = Field(alias="registry-id")
    region: str = Field(min_length=1)
    repository_name: RepositoryName = Field(alias="repository-name")
    policy_hash: str = Field(alias="policy-hash", pattern=r"^[0-9a-f]{16}$")
    image_count: int = Field(alias="image-count", ge=0)
    images: list[LifecycleConflictImage] = Field(default_factory=list)
    suggestion: str
    suggested_policy: str | None = Field(default=None, alias="suggested-policy")
    preview: str
    actor: str
    source_event_id: str = Field(alias="source-event-id", min_length=1)
    source_event_time: datetime = Field(alias="source-event-time")


class LifecycleViolationEvent(ApplicationEnvelope):
    detail_type: Literal["Lifecycle Policy Violation"] = Field(alias="detail-type")
    detail: LifecycleViolationDetail


class ReplicatedImageSource(Detail):
    account: AccountId
    region: str = Field(min_length=1)
    repository_name: RepositoryName = Field(alias="repository-name")
    image_tag: ImageTag | None = Field(default=None, alias="image-tag")


class ImageReplicationFailedDetail(Detail):
    """A replication job that failed for good, as the replication worker publishes it."""

    job_id: str = Field(alias="job-id", min_length=1)
    source: ReplicatedImageSource
    destination: dict[str, Any]
    image_digest: Digest = Field(alias="image-digest")
    reason: str = Field(min_length=1)
    conflicts: list[str] = Field(default_factory=list)


class ImageReplicationFailedEvent(ApplicationEnvelope):
    detail_type: Literal["Image Replication Failed"] = Field(alias="detail-type")
    detail: ImageReplicationFailedDetail
