"""ECR lifecycle policies as a typed model: the policy text parsed and validated once, and the images it acts on.

The grammar is the ECR User Guide's ("Lifecycle policy properties"): rules with a unique ``rulePriority``,
a ``selection`` (``tagStatus`` tagged | untagged | any; ``tagPrefixList`` / ``tagPatternList`` for tagged
images, patterns with at most four ``*`` wildcards; ``storageClass`` standard | archive; ``countType``
imageCountMoreThan | sinceImagePushed | sinceImagePulled | sinceImageTransitioned with ``countUnit``
"days" for the ages; ``countNumber`` >= 1) and an ``action`` (``expire``, or ``transition`` to
``targetStorageClass`` archive). A rule with ``tagStatus`` any must have the highest priority (we check
that among the rules of its storage class). Anything else is refused with a one-line reason, as ECR's
own PutLifecyclePolicy refuses it.

Where the documentation is silent we chose, and ECR's preview (when available) is compared with it: a
rule with both lists must meet both; ``tagStatus`` any or untagged takes neither list; an image never
pulled counts its age for ``sinceImagePulled`` from its push.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# PutLifecyclePolicy's limits on the policy text.
MIN_POLICY_CHARS, MAX_POLICY_CHARS = 100, 30720
MAX_WILDCARDS = 4
WILDCARD = "*"


class LifecyclePolicyError(ValueError):
    """The policy text is no lifecycle policy ECR would accept; the message is one line."""


class TagStatus(StrEnum):
    TAGGED = "tagged"
    UNTAGGED = "untagged"
    ANY = "any"


class CountType(StrEnum):
    IMAGE_COUNT_MORE_THAN = "imageCountMoreThan"
    SINCE_IMAGE_PUSHED = "sinceImagePushed"
    SINCE_IMAGE_PULLED = "sinceImagePulled"
    SINCE_IMAGE_TRANSITIONED = "sinceImageTransitioned"

    @property
    def is_age(self) -> bool:
        return self is not CountType.IMAGE_COUNT_MORE_THAN


class StorageClass(StrEnum):
    STANDARD = "standard"
    ARCHIVE = "archive"


class ActionType(StrEnum):
    EXPIRE = "expire"
    TRANSITION = "transition"


def wildcard_pattern(pattern: str) -> re.Pattern[str]:
    """A ``tagPatternList`` entry as a regular expression: ``*`` matches any run of characters, the rest literally."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split(WILDCARD)), re.DOTALL)


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Selection(_Policy):
    tag_status: TagStatus = Field(alias="tagStatus")
    tag_prefix_list: tuple[str, ...] | None = Field(default=None, alias="tagPrefixList", min_length=1)
    tag_pattern_list: tuple[str, ...] | None = Field(default=None, alias="tagPatternList", min_length=1)
    storage_class: StorageClass | None = Field(default=None, alias="storageClass")
    count_type: CountType = Field(alias="countType")
    count_unit: Literal["days"] | None = Field(default=None, alias="countUnit")
    count_number: int = Field(alias="countNumber", ge=1, strict=True)

    @field_validator("tag_prefix_list", "tag_pattern_list")
    @classmethod
    def _non_empty_entries(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if values is not None and any(not value for value in values):
            raise ValueError("entries must not be empty")
        return values

    @field_validator("tag_pattern_list")
    @classmethod
    def _at_most_four_wildcards(cls, patterns: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for pattern in patterns or ():
            if pattern.count(WILDCARD) > MAX_WILDCARDS:
                raise ValueError(f"{pattern!r} has more than {MAX_WILDCARDS} wildcards (*)")
        return patterns

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        lists = self.tag_prefix_list is not None or self.tag_pattern_list is not None
        if self.tag_status is TagStatus.TAGGED and not lists:
            raise ValueError("tagStatus tagged needs a tagPrefixList or a tagPatternList")
        if self.tag_status is not TagStatus.TAGGED and lists:
            raise ValueError(f"tagStatus {self.tag_status} takes no tagPrefixList or tagPatternList")
        if self.count_type.is_age and self.count_unit is None:
            raise ValueError(f"countType {self.count_type} needs countUnit days")
        if not self.count_type.is_age and self.count_unit is not None:
            raise ValueError("countType imageCountMoreThan takes no countUnit")
        archive = self.count_type is CountType.SINCE_IMAGE_TRANSITIONED
        if archive and self.storage_class is not StorageClass.ARCHIVE:
            raise ValueError("countType sinceImageTransitioned needs storageClass archive")
        if not archive and self.storage_class is StorageClass.ARCHIVE:
            raise ValueError(f"storageClass archive takes countType sinceImageTransitioned, not {self.count_type}")
        return self

    @property
    def selects_storage(self) -> StorageClass:
        return self.storage_class or StorageClass.STANDARD

    @cached_property
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(wildcard_pattern(pattern) for pattern in self.tag_pattern_list or ())

    def matches_tags(self, tags: tuple[str, ...]) -> bool:
        """Whether an image with ``tags`` meets the tagging requirements (ECR: every listed prefix and pattern
        matches at least one of the image's tags)."""
        if self.tag_status is TagStatus.ANY:
            return True
        if self.tag_status is TagStatus.UNTAGGED:
            return not tags
        if not tags:
            return False
        prefixes_met = all(any(tag.startswith(prefix) for tag in tags) for prefix in self.tag_prefix_list or ())
        patterns_met = all(any(pattern.fullmatch(tag) for tag in tags) for pattern in self._patterns)
        return prefixes_met and patterns_met


class Action(_Policy):
    type: ActionType
    target_storage_class: Literal["archive"] | None = Field(default=None, alias="targetStorageClass")

    @model_validator(mode="after")
    def _target_with_transition(self) -> Self:
        if self.type is ActionType.TRANSITION and self.target_storage_class is None:
            raise ValueError("action transition needs targetStorageClass archive")
        if self.type is ActionType.EXPIRE and self.target_storage_class is not None:
            raise ValueError("action expire takes no targetStorageClass")
        return self


class LifecycleRule(_Policy):
    rule_priority: int = Field(alias="rulePriority", ge=1, strict=True)
    description: str | None = None
    selection: Selection
    action: Action

    @model_validator(mode="after")
    def _transition_from_standard(self) -> Self:
        if self.action.type is ActionType.TRANSITION and self.selection.selects_storage is StorageClass.ARCHIVE:
            raise ValueError("a transition rule selects standard images (they move to archive)")
        return self

    def label(self) -> str:
        text = f"rule {self.rule_priority}"
        return f"{text} ({self.description})" if self.description else text


class LifecyclePolicy(_Policy):
    rules: tuple[LifecycleRule, ...] = Field(min_length=1)

    @field_validator("rules")
    @classmethod
    def _ordered_and_unique(cls, rules: tuple[LifecycleRule, ...]) -> tuple[LifecycleRule, ...]:
        priorities = [rule.rule_priority for rule in rules]
        duplicates = sorted({priority for priority in priorities if priorities.count(priority) > 1})
        if duplicates:
            raise ValueError(f"rulePriority {duplicates[0]} is used more than once")
        for storage in StorageClass:
            scoped = [rule for rule in rules if rule.selection.selects_storage is storage]
            highest = max((rule.rule_priority for rule in scoped), default=0)
            for rule in scoped:
                if rule.selection.tag_status is TagStatus.ANY and rule.rule_priority != highest:
                    raise ValueError(
                        f"rule {rule.rule_priority} selects tagStatus any: it must have the highest rulePriority"
                    )
        return tuple(sorted(rules, key=lambda rule: rule.rule_priority))

    def document(self) -> dict[str, Any]:
        """The policy as ECR's JSON document (what PutLifecyclePolicy takes)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def text(self) -> str:
        return json.dumps(self.document(), indent=2)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "field required"
    return f"{location}: {message}" if location else message


def parse_lifecycle_policy(text: str) -> LifecyclePolicy:
    """The policy ``text`` holds; ``LifecyclePolicyError`` with a one-line reason when ECR would refuse it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LifecyclePolicyError(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(data, dict):
        raise LifecyclePolicyError(f"a lifecycle policy is a JSON object, not {type(data).__name__}")
    try:
        return LifecyclePolicy.model_validate(data)
    except ValidationError as error:
        raise LifecyclePolicyError(_describe(error).replace("\n", " ")) from None


def policy_hash(text: str) -> str:
    """A short, stable name of a policy's content: the same rules written with other spacing hash alike."""
    try:
        canonical = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except json.JSONDecodeError:
        canonical = text
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LifecycleImage:
    """One image of a repository as DescribeImages reports it: what lifecycle rules look at."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    last_pulled_at: datetime | None = None
    storage_class: StorageClass = StorageClass.STANDARD
    archived_at: datetime | None = None


@dataclass(frozen=True)
class PreviewResult:
    """One image ECR's lifecycle policy preview would act on (GetLifecyclePolicyPreview)."""

    digest: str
    tags: tuple[str, ...]
    action: ActionType
    rule_priority: int


@dataclass(frozen=True)
class Preview:
    """ECR's own lifecycle policy preview, or why there is none (moto has none; ECR may time out)."""

    results: tuple[PreviewResult, ...] | None
    note: str = ""

    @property
    def available(self) -> bool:
        return self.results is not None


class RepositoryNotFoundError(LookupError):
    """The repository does not exist (any more)."""
