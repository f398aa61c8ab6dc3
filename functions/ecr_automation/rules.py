"""The declarative rules file (TOML): what to protect, what to retag, per repository pattern.

Parsed and validated once; an invalid file fails fast with one line naming the offending entry.
For each section the first entry whose ``repositories`` globs match a repository applies.
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from string import Formatter
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ecr_automation.config import ConfigurationError
from ecr_automation.models.events import IMAGE_TAG_PATTERN, Severity

# Strict SemVer 2.0.0 with an optional "v": 1.2.3, v1.2.3, v1.2.3-rc.1 (no build metadata: "+" is not a tag character).
STRICT_SEMVER_TAG = (
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$"
)


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r}: {error}") from None
    return pattern


Regex = Annotated[str, AfterValidator(_compiles)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    repositories: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    def applies_to(self, repository: str) -> bool:
        return any(fnmatchcase(repository, pattern) for pattern in self.repositories)


class GuardRule(_Section):
    protected: list[Regex] = Field(default_factory=lambda: [STRICT_SEMVER_TAG])
    mutable: list[Regex] = Field(default_factory=list)
    on_violation: Literal["quarantine", "delete"] = "quarantine"
    quarantine_tag: str = Field(default="quarantine-{short_digest}", pattern=r"\{short_digest\}")

    def is_protected(self, tag: str) -> bool:
        if any(re.search(pattern, tag) for pattern in self.mutable):
            return False
        return any(re.search(pattern, tag) for pattern in self.protected)


# Placeholders every retag template may use; pattern templates add ``tag`` and their named groups.
DIGEST_PLACEHOLDERS = frozenset({"short_digest"})
TAG_PREFIX_PATTERN = r"^(?:[a-zA-Z0-9_][a-zA-Z0-9._-]*)?$"


def check_template(template: str, placeholders: frozenset[str]) -> str:
    """Fail fast on a tag template that could never render a valid tag."""
    try:
        fields = [
            (name, spec, conversion) for _, name, spec, conversion in Formatter().parse(template) if name is not None
        ]
    except ValueError as error:
        raise ValueError(f"template {template!r}: {error}") from None
    for name, spec, conversion in fields:
        if name not in placeholders:
            known = ", ".join("{" + known + "}" for known in sorted(placeholders))
            raise ValueError(f"template {template!r}: unknown placeholder {{{name}}} (known: {known})")
        if spec or conversion:
            raise ValueError(f"template {template!r}: {{{name}}} takes no format spec or conversion")
    sample = template.format_map(dict.fromkeys(placeholders, "0"))
    if not re.fullmatch(IMAGE_TAG_PATTERN, sample):
        raise ValueError(f"template {template!r} renders tags ECR refuses, such as {sample!r}")
    return template


def render_template(template: str, values: dict[str, str]) -> str | None:
    """The tag a checked template renders, or None when the values make it an invalid tag."""
    tag = template.format_map(values)
    return tag if re.fullmatch(IMAGE_TAG_PATTERN, tag) else None


class AliasRule(BaseModel):
    """Floating aliases: a push of v1.2.3 moves v1.2, v1 and latest to it, only forward."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    prefix: str = Field(default="v", pattern=TAG_PREFIX_PATTERN)
    minor: bool = True
    major: bool = True
    latest: bool = True
    include_prereleases: bool = False


class PatternRule(BaseModel):
    """A pushed tag matching ``match`` adds ``tags``, rendered from its named groups."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: Regex
    tags: list[str] = Field(min_length=1)

    @property
    def placeholders(self) -> frozenset[str]:
        return DIGEST_PLACEHOLDERS | {"tag"} | set(re.compile(self.match).groupindex)

    @model_validator(mode="after")
    def _templates_render(self) -> Self:
        for template in self.tags:
            check_template(template, self.placeholders)
        return self


class PromoteRule(BaseModel):
    """A completed scan with no finding at or above ``block_at`` adds ``tags``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block_at: Severity = Severity.HIGH
    tags: list[str] = Field(min_length=1)
    # A promoted tag moves only to a newer version, when both images carry a version tag.
    forward_only: bool = True

    @model_validator(mode="after")
    def _templates_render(self) -> Self:
        for template in self.tags:
            check_template(template, DIGEST_PLACEHOLDERS)
        return self


class RetagRule(_Section):
    aliases: AliasRule = Field(default_factory=AliasRule)
    # e.g. "sha-{short_digest}"; empty disables digest tags.
    digest_tag: str = ""
    # Pushes by digest include every child of a multi-arch index: leave them untagged unless asked.
    digest_tag_untagged_pushes: bool = False
    patterns: list[PatternRule] = Field(default_factory=list)
    promote: list[PromoteRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _digest_tag_renders(self) -> Self:
        if self.digest_tag:
            check_template(self.digest_tag, DIGEST_PLACEHOLDERS)
        return self


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    guard: list[GuardRule] = Field(default_factory=list)
    retag: list[RetagRule] = Field(default_factory=list)

    def guard_for(self, repository: str) -> GuardRule | None:
        return next((rule for rule in self.guard if rule.applies_to(repository)), None)

    def retag_for(self, repository: str) -> RetagRule | None:
        return next((rule for rule in self.retag if rule.applies_to(repository)), None)


def parse_rules(text: str, *, origin: str = "rules") -> Rules:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{origin}: not valid TOML: {error}") from None
    try:
        return Rules.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(f"{origin}: {location}: {first['msg']}") from None


def load_rules(path: Path) -> Rules:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot read rules file {path}: {error.strerror}") from None
    return parse_rules(text, origin=str(path))


@lru_cache(maxsize=8)
def cached_rules(path: Path) -> Rules:
    return load_rules(path)
