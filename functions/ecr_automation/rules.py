"""The declarative rules file (TOML): what to protect, what to retag, per repository pattern.

Parsed and validated once; an invalid file fails fast with one line naming the offending entry.
For each section the first entry whose ``repositories`` globs match a repository applies, except
``[[replicate]]``: there every matching entry applies, each with its own targets.

Every regular expression a rules file configures is compiled and matched by RE2, whose matching
time is linear in the tag's length: no pattern can make a function hang (``^(a+)+$`` backtracks
exponentially in Python's re). RE2 has no backreferences or lookaround; such patterns are refused
at load.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import date
from fnmatch import fnmatchcase
from functools import cached_property, lru_cache
from pathlib import Path
from string import Formatter
from typing import Annotated, Literal, Protocol, Self

import re2
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ecr_automation.config import ConfigurationError
from ecr_automation.models.domain import short_digest
from ecr_automation.models.events.base import DIGEST_PATTERN, IMAGE_TAG_PATTERN, REPOSITORY_NAME_PATTERN, Severity
from ecr_automation.models.versions import MAX_TAG_LENGTH, is_release_tag


class _PatternMatch(Protocol):
    def groupdict(self) -> dict[str, str | None]: ...


class CompiledPattern(Protocol):
    """The part of an RE2 regular expression the rules use (google-re2 ships no type information)."""

    @property
    def groupindex(self) -> Mapping[str, int]: ...

    def search(self, text: str) -> _PatternMatch | None: ...


_RE2_OPTIONS = re2.Options()
# A refused pattern is reported as a configuration error; RE2 would also print it to stderr.
_RE2_OPTIONS.log_errors = False


def compile_pattern(pattern: str) -> CompiledPattern:
    """``pattern`` compiled by RE2, or ValueError (one line) naming why RE2 refuses it."""
    try:
        compiled: CompiledPattern = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if isinstance(error.args[0], bytes) else str(error)
        reason = reason.replace("\n", "\\n")
        raise ValueError(
            f"RE2 cannot compile regular expression {pattern!r}: {reason} (RE2 has no backreferences or lookaround)"
        ) from None
    except UnicodeEncodeError as error:  # a lone surrogate cannot be encoded to UTF-8 for RE2
        raise ValueError(f"RE2 cannot compile regular expression {pattern!r}: {error.reason}") from None
    return compiled


def _compiles(pattern: str) -> str:
    compile_pattern(pattern)
    return pattern


Regex = Annotated[str, AfterValidator(_compiles)]

# Placeholders every retag template may use; pattern templates add ``tag`` and their named groups.
DIGEST_PLACEHOLDERS = frozenset({"short_digest"})
SHORT_DIGEST_LENGTH = 12
TAG_PREFIX_PATTERN = r"^(?:[a-zA-Z0-9_][a-zA-Z0-9._-]*)?$"

# Realistic values to render a template with once, at load: a short digest is 12 hex characters,
# a pushed tag looks like a release, a named group like a short word.
_SAMPLE_VALUES = {"short_digest": "0123456789ab", "tag": "v1.2.3"}
_SAMPLE_GROUP_VALUE = "x1"
# Short digests of every kind the release grammar tells apart: all digits with and without a
# leading zero, and with a letter. A template making none of them a release tag makes no digest one.
_SHORT_DIGEST_KINDS = ("123456789012", "012345678901", "0123456789ab")


def _template_fields(template: str) -> list[tuple[str, str, str | None]]:
    """Each placeholder of a template as (name, format spec, conversion), in order."""
    try:
        return [
            (name, spec or "", conversion)
            for _, name, spec, conversion in Formatter().parse(template)
            if name is not None
        ]
    except ValueError as error:
        raise ValueError(f"template {template!r}: {error}") from None


def check_template(template: str, placeholders: frozenset[str]) -> str:
    """Fail fast on a tag template that could never render a valid tag, rendering it once with realistic values."""
    for name, spec, conversion in _template_fields(template):
        if name not in placeholders:
            known = ", ".join("{" + known + "}" for known in sorted(placeholders))
            raise ValueError(f"template {template!r}: unknown placeholder {{{name}}} (known: {known})")
        if spec or conversion:
            raise ValueError(f"template {template!r}: {{{name}}} takes no format spec or conversion")
    sample = template.format_map({name: _SAMPLE_VALUES.get(name, _SAMPLE_GROUP_VALUE) for name in placeholders})
    if len(sample) > MAX_TAG_LENGTH:
        raise ValueError(
            f"template {template!r} renders tags ECR refuses: {len(sample)} characters, such as {sample!r};"
            f" at most {MAX_TAG_LENGTH} are allowed"
        )
    if not re.fullmatch(IMAGE_TAG_PATTERN, sample):
        raise ValueError(
            f"template {template!r} renders tags ECR refuses, such as {sample!r}"
            " (letters, digits, '.', '_' and '-', not starting with '.' or '-')"
        )
    return template


def render_template(template: str, values: dict[str, str]) -> str | None:
    """The tag a checked template renders, or None when the values make it an invalid tag."""
    tag = template.format_map(values)
    return tag if re.fullmatch(IMAGE_TAG_PATTERN, tag) else None


def check_quarantine_template(template: str) -> str:
    """Fail closed on a quarantine tag template: {short_digest} once, and always a valid non-release tag.

    A short digest is always 12 hex characters, so one rendering shows every rendering's length and
    characters; and quarantine tags are never protected, so none may be a release tag.
    """
    check_template(template, DIGEST_PLACEHOLDERS)
    if [name for name, _, _ in _template_fields(template)] != ["short_digest"]:
        raise ValueError(f"template {template!r} must contain {{short_digest}} exactly once")
    for kind in _SHORT_DIGEST_KINDS:
        tag = template.format(short_digest=kind)
        if is_release_tag(tag):
            raise ValueError(f"template {template!r} renders release tags, such as {tag!r}")
    return template


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    repositories: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    def applies_to(self, repository: str) -> bool:
        return any(fnmatchcase(repository, pattern) for pattern in self.repositories)


class GuardRule(_Section):
    """Which tags belong to the first digest that claimed them, and what happens to an impostor."""

    # Every release tag, as the one version grammar defines it (models/versions.py): the tags that
    # move floating aliases are exactly the tags that can never move.
    protect_releases: bool = True
    # Further protected patterns, searched anywhere in the tag unless anchored.
    protected: list[Regex] = Field(default_factory=list)
    # Exceptions: a tag matching one of these is never protected.
    mutable: list[Regex] = Field(default_factory=list)
    on_violation: Literal["quarantine", "delete"] = "quarantine"
    quarantine_tag: str = "quarantine-{short_digest}"

    @field_validator("quarantine_tag")
    @classmethod
    def _quarantine_tag_renders(cls, template: str) -> str:
        return check_quarantine_template(template)

    # Compiled once per rule: the model is frozen, so its patterns cannot change under the cache
    # (model_copy(update=...) would keep a stale one: build a new rule instead).
    @cached_property
    def _protected_patterns(self) -> tuple[CompiledPattern, ...]:
        return tuple(compile_pattern(pattern) for pattern in self.protected)

    @cached_property
    def _mutable_patterns(self) -> tuple[CompiledPattern, ...]:
        return tuple(compile_pattern(pattern) for pattern in self.mutable)

    @cached_property
    def _quarantine_tag_pattern(self) -> re.Pattern[str]:
        # Literal text only besides the placeholder (checked at load), so re.escape is exact.
        parts = (
            re.escape(literal) + (f"[0-9a-f]{{{SHORT_DIGEST_LENGTH}}}" if name is not None else "")
            for literal, name, _, _ in Formatter().parse(self.quarantine_tag)
        )
        return re.compile("".join(parts))

    def is_protected(self, tag: str) -> bool:
        """Whether ``tag`` belongs to its first digest for good; the guard's own quarantine tags never do."""
        if self.is_quarantine_tag(tag) or any(pattern.search(tag) for pattern in self._mutable_patterns):
            return False
        if self.protect_releases and is_release_tag(tag):
            return True
        return any(pattern.search(tag) for pattern in self._protected_patterns)

    def quarantine_tag_for(self, digest: str) -> str:
        """The tag that keeps the image ``digest`` (``sha256:<64 hex>``) when it was pushed over a protected tag."""
        if not re.fullmatch(DIGEST_PATTERN, digest):
            raise ValueError(f"not an image digest: {digest!r}")
        return self.quarantine_tag.format(short_digest=short_digest(digest, SHORT_DIGEST_LENGTH))

    def is_quarantine_tag(self, tag: str) -> bool:
        """Whether ``tag`` is what ``quarantine_tag_for`` renders for some digest."""
        return self._quarantine_tag_pattern.fullmatch(tag) is not None


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

    # Compiled once per rule, as GuardRule's patterns are.
    @cached_property
    def _match_pattern(self) -> CompiledPattern:
        return compile_pattern(self.match)

    @property
    def placeholders(self) -> frozenset[str]:
        return DIGEST_PLACEHOLDERS | {"tag"} | set(self._match_pattern.groupindex)

    def search(self, tag: str) -> dict[str, str] | None:
        """The named groups (an unmatched one as "") when ``match`` is found in ``tag``, else None."""
        found = self._match_pattern.search(tag)
        if found is None:
            return None
        return {name: value or "" for name, value in found.groupdict().items()}

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


# Vulnerability ids as scanners name them: CVE-2023-44487, GHSA-xxxx-xxxx-xxxx, and the distributions'
# and ecosystems' own (ALAS2-2023-2001, RHSA-2023:5837, DSA-5540-1, GO-2023-2102, PYSEC-2023-212).
VULNERABILITY_ID_PATTERN = (
    r"^(?:CVE-[0-9]{4}-[0-9]{4,}|GHSA(?:-[0-9a-z]{4}){3}|[A-Z][A-Z0-9]{1,15}-[A-Za-z0-9][A-Za-z0-9._:-]{0,63})$"
)
# A Secrets Manager secret, by ARN or by name (names: 1 to 512 of these characters).
WEBHOOK_ROUTE_PATTERN = (
    r"^(?:|arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+|[A-Za-z0-9/_+=.@-]{1,512})$"
)
# Slack shows at most 50 blocks a message: 40 findings, one line each, leave room for the rest.
MAX_FINDINGS_SHOWN = 40


class IgnoredVulnerability(BaseModel):
    """An accepted risk: a vulnerability the notifier stays quiet about, for a reason, until a date."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=VULNERABILITY_ID_PATTERN)
    reason: str = Field(min_length=1)
    # The last day the exception holds; from the day after, the finding is reported again, saying so.
    expires: date

    def expired(self, today: date) -> bool:
        return self.expires < today


class NotifyRule(_Section):
    """What the notifier posts about a repository's scans, findings, violations and replication failures."""

    # Nothing below this severity is posted (counts still show every severity).
    threshold: Severity = Severity.HIGH
    # Strict types: a quoted "false" or a number where a switch belongs is a mistake, not a value.
    post_clean: bool = Field(default=False, strict=True)
    # FAILED / UNSUPPORTED_IMAGE scans get a short message saying why.
    post_failures: bool = Field(default=True, strict=True)
    # Only findings the repository's previous release did not have.
    new_only: bool = Field(default=False, strict=True)
    ignore: list[IgnoredVulnerability] = Field(default_factory=list)
    # The Secrets Manager secret (ARN or name) holding the Slack webhook; "" is the deployment's default.
    route: str = Field(default="", pattern=WEBHOOK_ROUTE_PATTERN)
    max_findings: int = Field(default=10, ge=1, le=MAX_FINDINGS_SHOWN, strict=True)
    alert_violations: bool = Field(default=True, strict=True)
    alert_replication_failures: bool = Field(default=True, strict=True)

    @field_validator("ignore")
    @classmethod
    def _one_exception_per_vulnerability(cls, entries: list[IgnoredVulnerability]) -> list[IgnoredVulnerability]:
        # Two entries for one id would leave which reason and expiry apply to the order of the file.
        seen: set[str] = set()
        for entry in entries:
            key = entry.id.casefold()
            if key in seen:
                raise ValueError(f"{entry.id} is listed more than once")
            seen.add(key)
        return entries

    # Built once per rule (the model is frozen); ids compare case-insensitively (GHSA ids are lower case
    # in GitHub's advisories and upper case in some scanners).
    @cached_property
    def _exceptions(self) -> dict[str, IgnoredVulnerability]:
        return {entry.id.casefold(): entry for entry in self.ignore}

    def exception_for(self, vulnerability_id: str) -> IgnoredVulnerability | None:
        """The ignore entry naming ``vulnerability_id``, expired or not; None when there is none."""
        return self._exceptions.get(vulnerability_id.casefold()) if self.ignore else None


# -- replication -----------------------------------------------------------------------------------
# Placeholders a destination repository template may use: the source repository's name.
REPOSITORY_PLACEHOLDERS = frozenset({"repository"})
# Rendered once at load, so a template that could never name a repository is refused.
_SAMPLE_REPOSITORY = "team/web"
MAX_REPOSITORY_NAME_LENGTH = 256
AWS_REGION_PATTERN = r"^[a-z]{2}(?:-[a-z]+)+-[0-9]$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::(?P<account>[0-9]{12}):role/[A-Za-z0-9+=,.@_/-]{1,512}$"
# Any OCI registry: scheme and host (and port), nothing after it (registries serve /v2/ at their root).
REGISTRY_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?/?$"
# A Secrets Manager secret by ARN or name, as a notify route names one (empty excluded).
CREDENTIALS_LOCATION_PATTERN = (
    r"^(?:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+|[A-Za-z0-9/_+=.@-]{1,512})$"
)
# The default allow list: every tag.
ALL_TAGS = ".*"


def check_repository_template(template: str) -> str:
    """Fail fast on a destination repository template that could never render a repository name ECR accepts."""
    for name, spec, conversion in _template_fields(template):
        if name not in REPOSITORY_PLACEHOLDERS:
            raise ValueError(f"template {template!r}: unknown placeholder {{{name}}} (known: {{repository}})")
        if spec or conversion:
            raise ValueError(f"template {template!r}: {{{name}}} takes no format spec or conversion")
    sample = template.format(repository=_SAMPLE_REPOSITORY)
    if len(sample) > MAX_REPOSITORY_NAME_LENGTH or not re.fullmatch(REPOSITORY_NAME_PATTERN, sample):
        raise ValueError(f"template {template!r} renders repository names registries refuse, such as {sample!r}")
    return template


def render_repository(template: str, repository: str) -> str | None:
    """The destination repository a checked template names for ``repository``; None when it is no valid name."""
    name = template.format(repository=repository)
    if len(name) > MAX_REPOSITORY_NAME_LENGTH or not re.fullmatch(REPOSITORY_NAME_PATTERN, name):
        return None
    return name


class RepositorySettings(BaseModel):
    """How a missing destination ECR repository is created."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scan_on_push: bool = Field(default=True, strict=True)
    tag_mutability: Literal["MUTABLE", "IMMUTABLE"] = "MUTABLE"
    encryption: Literal["AES256", "KMS"] = "AES256"
    # With encryption = "KMS": the key's ARN, id or alias; none means ECR's AWS-managed key.
    kms_key: str | None = None
    # Give the new repository the source repository's resource tags (cost allocation, ownership).
    copy_resource_tags: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _kms_key_only_with_kms(self) -> Self:
        if self.kms_key is not None and self.encryption != "KMS":
            raise ValueError('kms_key is used only with encryption = "KMS"')
        return self


class ReplicationTarget(BaseModel):
    """Where an image goes: ECR (a region; another account through a role) or any OCI registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = Field(default=None, pattern=AWS_REGION_PATTERN)
    # Another account's registry, reached by assuming ``role_arn`` (in that account) through STS.
    account: str | None = Field(default=None, pattern=r"^[0-9]{12}$")
    role_arn: str | None = Field(default=None, pattern=ROLE_ARN_PATTERN)
    # The destination repository: a template over {repository}, the source repository's name.
    repository: str = "{repository}"
    # Any OCI registry instead of ECR: https://ghcr.io, or http://127.0.0.1:5000 for a local one.
    registry: str | None = Field(default=None, pattern=REGISTRY_URL_PATTERN)
    # The Secrets Manager secret (ARN or name) holding the registry's "user:password", or JSON
    # {"username": ..., "password": ...}; none means anonymous access.
    credentials_secret: str | None = Field(default=None, pattern=CREDENTIALS_LOCATION_PATTERN)
    create_repository: RepositorySettings = Field(default_factory=RepositorySettings)

    @field_validator("repository")
    @classmethod
    def _repository_renders(cls, template: str) -> str:
        return check_repository_template(template)

    @model_validator(mode="after")
    def _one_kind_of_destination(self) -> Self:
        if self.registry is None and self.region is None:
            raise ValueError("a target needs a region (ECR) or a registry URL (any OCI registry)")
        if self.registry is not None:
            extra = [name for name in ("region", "account", "role_arn") if getattr(self, name) is not None]
            if extra:
                raise ValueError(f"a registry target takes no {', '.join(extra)}: those name an ECR registry")
            return self
        if self.credentials_secret is not None:
            raise ValueError("credentials_secret is for registry targets: ECR targets use ECR tokens")
        if self.account is not None and self.role_arn is None:
            raise ValueError("a target in another account needs role_arn: the role to assume there")
        if self.role_arn is not None:
            role_account = re.fullmatch(ROLE_ARN_PATTERN, self.role_arn)["account"]  # type: ignore[index]
            if self.account is not None and self.account != role_account:
                raise ValueError(f"role_arn belongs to account {role_account}, not to account {self.account}")
        return self

    @property
    def is_ecr(self) -> bool:
        return self.registry is None

    @property
    def destination_account(self) -> str | None:
        """The ECR account named (directly or by the role's ARN); None for the source's own account."""
        if self.account is not None or self.role_arn is None:
            return self.account
        return self.role_arn.split(":")[4]


class ReplicateRule(_Section):
    """Copy images of matching repositories, with matching tags, to every target: on push or once scanned clean.

    Unlike the other sections, every matching entry applies, each with its own targets.
    """

    # A tag is replicated when it matches one of ``tags_allow`` (RE2, searched) and none of ``tags_deny``.
    tags_allow: list[Regex] = Field(default_factory=lambda: [ALL_TAGS], min_length=1)
    tags_deny: list[Regex] = Field(default_factory=list)
    # "push": on the push itself; "scan": once a completed scan finds nothing at or above ``block_at``.
    gate: Literal["push", "scan"] = "push"
    block_at: Severity = Severity.HIGH
    # Signatures, SBOMs and attestations attached to the image (OCI referrers, or the sha256-<hex> tags).
    referrers: bool = Field(default=False, strict=True)
    targets: list[ReplicationTarget] = Field(min_length=1)

    @cached_property
    def _allow_patterns(self) -> tuple[CompiledPattern, ...]:
        return tuple(compile_pattern(pattern) for pattern in self.tags_allow)

    @cached_property
    def _deny_patterns(self) -> tuple[CompiledPattern, ...]:
        return tuple(compile_pattern(pattern) for pattern in self.tags_deny)

    def replicates_tag(self, tag: str) -> bool:
        if any(pattern.search(tag) is not None for pattern in self._deny_patterns):
            return False
        return any(pattern.search(tag) is not None for pattern in self._allow_patterns)


# The repository prefixes ECR's console suggests for pull-through cache rules.
DEFAULT_PULL_THROUGH_CACHE = [
    "ecr-public/*",
    "docker-hub/*",
    "quay/*",
    "k8s/*",
    "github/*",
    "azure/*",
    "gitlab/*",
    "chainguard/*",
]


class Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Repositories that mirror an upstream registry (pull-through cache): upstream may move their tags, so
    # the guard reports such moves instead of reverting them, and retag leaves them alone. Globs, as the
    # rules' `repositories`; list your own cache rule prefixes here (DescribePullThroughCacheRules needs
    # a permission on every resource, so it is not asked at run time).
    pull_through_cache: list[str] = Field(default_factory=lambda: list(DEFAULT_PULL_THROUGH_CACHE))
    guard: list[GuardRule] = Field(default_factory=list)
    retag: list[RetagRule] = Field(default_factory=list)
    notify: list[NotifyRule] = Field(default_factory=list)
    replicate: list[ReplicateRule] = Field(default_factory=list)

    def is_pull_through_cache(self, repository: str) -> bool:
        return any(fnmatchcase(repository, pattern) for pattern in self.pull_through_cache)

    def guard_for(self, repository: str) -> GuardRule | None:
        return next((rule for rule in self.guard if rule.applies_to(repository)), None)

    def retag_for(self, repository: str) -> RetagRule | None:
        return next((rule for rule in self.retag if rule.applies_to(repository)), None)

    def notify_for(self, repository: str) -> NotifyRule | None:
        return next((rule for rule in self.notify if rule.applies_to(repository)), None)

    def replicate_for(self, repository: str) -> list[ReplicateRule]:
        """Every replicate entry matching ``repository``: unlike the other sections, all of them apply."""
        return [rule for rule in self.replicate if rule.applies_to(repository)]


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
