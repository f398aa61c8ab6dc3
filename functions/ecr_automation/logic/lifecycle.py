"""Lifecycle guardrails: which images an ECR lifecycle policy would expire that releases and aliases need.

``evaluate`` applies a policy to a repository's images as the ECR User Guide describes it ("Lifecycle
policy evaluation rules"), per storage class:

- rules apply in ``rulePriority`` order, lowest first;
- an image belongs to the first rule whose tagging requirements (``tagStatus``, every prefix of
  ``tagPrefixList`` and every pattern of ``tagPatternList`` matching at least one of its tags) it meets:
  only that rule can act on it, even when it does not act on it ("an image that matches the tagging
  requirements of a higher priority rule cannot be expired by a rule with a lower priority");
- each rule still counts every image it selects, owned elsewhere or not ("rules can never mark images
  that are marked by higher priority rules, but can still identify them as if they haven't been
  expired"): ``imageCountMoreThan N`` marks all but the newest N by push time, the age count types mark
  the images older than N days (pushed, last pulled, or archived) at the given clock;
- so each image is expired (or archived) by at most one rule.

``check`` reports the images holding tags the tag guard protects (the rules file's ``[[guard]]``, by
default every release tag) or targeted by a floating alias (v1, v1.2, latest, from ``[[retag]]``) that
the policy would expire, and suggests changes, each re-evaluated before it is offered. ECR has no
"keep" action; a rule placed before the others that selects the releases and can never fire keeps them,
because the images it selects then belong to it. Nothing here changes a policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from ecr_automation.logic.ownership import is_guarded
from ecr_automation.logic.ports import Publisher, SentLedger
from ecr_automation.logic.retag import alias_candidates
from ecr_automation.models.domain import RepositoryRef, short_digest
from ecr_automation.models.lifecycle import (
    WILDCARD,
    ActionType,
    CountType,
    LifecycleImage,
    LifecyclePolicy,
    LifecyclePolicyError,
    LifecycleRule,
    Preview,
    RepositoryNotFoundError,
    Selection,
    StorageClass,
    TagStatus,
    parse_lifecycle_policy,
    policy_hash,
    wildcard_pattern,
)
from ecr_automation.models.versions import parse_version
from ecr_automation.rules import Rules

VIOLATION_DETAIL_TYPE = "Lifecycle Policy Violation"
# A keep rule counts up to this many images before it would expire any itself: far above any repository.
KEEP_COUNT = 10000
# An archive-class keep rule (age is its only count type): 100 years in the archive.
KEEP_DAYS = 36500
# How many images an event names (the rest are counted): EventBridge takes at most 256 KiB.
MAX_IMAGES_IN_EVENT = 25
_DIGITS = re.compile(r"[0-9]+")


# -- evaluation (pure) ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageFate:
    """One image a policy acts on, and the rule that does."""

    image: LifecycleImage
    rule: LifecycleRule

    @property
    def action(self) -> ActionType:
        return self.rule.action.type


def _age_from(selection: Selection, image: LifecycleImage) -> datetime:
    if selection.count_type is CountType.SINCE_IMAGE_PULLED:
        return image.last_pulled_at or image.pushed_at  # never pulled: its push is the last use
    if selection.count_type is CountType.SINCE_IMAGE_TRANSITIONED:
        return image.archived_at or image.pushed_at
    return image.pushed_at


def _newest_first(image: LifecycleImage) -> tuple[float, str]:
    # Ties in push time have no documented order; the digest makes ours stable.
    return (-image.pushed_at.timestamp(), image.digest)


def _marks(rule: LifecycleRule, candidates: list[LifecycleImage], now: datetime) -> list[LifecycleImage]:
    selection = rule.selection
    if selection.count_type is CountType.IMAGE_COUNT_MORE_THAN:
        return sorted(candidates, key=_newest_first)[selection.count_number :]
    limit = timedelta(days=selection.count_number)
    return [image for image in candidates if now - _age_from(selection, image) > limit]


def evaluate(policy: LifecyclePolicy, images: Iterable[LifecycleImage], now: datetime) -> list[ImageFate]:
    """The images ``policy`` would expire or archive now, each with its rule, oldest first."""
    images = list(images)
    fates: list[ImageFate] = []
    for storage in StorageClass:
        pool = [image for image in images if image.storage_class is storage]
        rules = [rule for rule in policy.rules if rule.selection.selects_storage is storage]  # in priority order
        owner = {}
        for image in pool:
            owner[image.digest] = next((rule for rule in rules if rule.selection.matches_tags(image.tags)), None)
        for rule in rules:
            candidates = [image for image in pool if rule.selection.matches_tags(image.tags)]
            fates += [ImageFate(image, rule) for image in _marks(rule, candidates, now) if owner[image.digest] is rule]
    return sorted(fates, key=lambda fate: (fate.image.pushed_at, fate.image.digest))


# -- what must stay -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Guarded:
    """Why an image must stay: the protected tags it holds, and the floating aliases that point to it."""

    protected: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


def alias_names(rules: Rules, repository: str, tags: Iterable[str]) -> set[str]:
    """The floating aliases retag keeps in ``repository`` for these release tags (v1.2, v1, latest)."""
    rule = None if rules.is_pull_through_cache(repository) else rules.retag_for(repository)
    if rule is None or not rule.aliases.enabled:
        return set()
    names: set[str] = set()
    for tag in tags:
        version = parse_version(tag)
        if version is None or (version.is_prerelease and not rule.aliases.include_prereleases):
            continue
        names.update(name for name, _ in alias_candidates(rule.aliases, version))
    return names


def guarded_images(rules: Rules, repository: str, images: Iterable[LifecycleImage]) -> dict[str, Guarded]:
    """Every image holding a protected tag (the tag guard's own rule for it) or an alias, and why."""
    images = list(images)
    guard = rules.guard_for(repository)
    aliases = alias_names(rules, repository, (tag for image in images for tag in image.tags))
    guarded: dict[str, Guarded] = {}
    for image in images:
        protected = tuple(sorted(tag for tag in image.tags if is_guarded(guard, tag)))
        held = tuple(sorted(tag for tag in image.tags if tag in aliases and tag not in protected))
        if protected or held:
            guarded[image.digest] = Guarded(protected, held)
    return guarded


@dataclass(frozen=True)
class Conflict:
    """An image the policy would act on although it must stay."""

    fate: ImageFate
    why: Guarded
    source: str = "evaluation"  # or "preview": only ECR's preview says so

    @property
    def image(self) -> LifecycleImage:
        return self.fate.image

    def as_dict(self) -> dict[str, Any]:
        return {
            "image-digest": self.image.digest,
            "image-tags": list(self.image.tags),
            "protected-tags": list(self.why.protected),
            "alias-tags": list(self.why.aliases),
            "action": self.fate.action.value,
            "rule-priority": self.fate.rule.rule_priority,
            "pushed-at": self.image.pushed_at.isoformat(),
            "found-by": self.source,
        }


def conflicts(fates: Iterable[ImageFate], guarded: dict[str, Guarded]) -> list[Conflict]:
    return [Conflict(fate, guarded[fate.image.digest]) for fate in fates if fate.image.digest in guarded]


# -- suggestions ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Suggestion:
    summary: str
    policy: LifecyclePolicy
    resolves: bool  # re-evaluated: the changed policy expires no image that must stay

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "resolves": self.resolves, "policy": self.policy.document()}


def family_pattern(tag: str) -> str:
    """A ``tagPatternList`` entry for ``tag``'s family: each run of digits a wildcard (at most four).

    v1.2.3 gives v*.*.*, release-2024-01 gives release-*-*: every later release of the same shape matches.
    """
    runs = list(_DIGITS.finditer(tag))
    if not runs:
        return tag
    parts, position = [], 0
    for number, run in enumerate(runs):
        if number == 3 and len(runs) > 4:  # the fourth wildcard takes the rest of the tag
            parts.append(tag[position : run.start()] + WILDCARD)
            return "".join(parts)
        parts.append(tag[position : run.start()] + WILDCARD)
        position = run.end()
    return "".join(parts) + tag[position:]


def _keep_rule(priority: int, pattern: str, storage: StorageClass) -> LifecycleRule:
    selection: dict[str, Any] = {"tagStatus": "tagged", "tagPatternList": [pattern]}
    if storage is StorageClass.ARCHIVE:
        selection |= {
            "storageClass": "archive",
            "countType": "sinceImageTransitioned",
            "countUnit": "days",
            "countNumber": KEEP_DAYS,
        }
    else:
        selection |= {"countType": "imageCountMoreThan", "countNumber": KEEP_COUNT}
    return LifecycleRule.model_validate(
        {
            "rulePriority": priority,
            "description": f"keep {pattern} (protected releases and aliases; never reached)",
            "selection": selection,
            "action": {"type": "expire"},
        }
    )


def _cover(found: list[Conflict]) -> list[tuple[str, StorageClass]]:
    """Few wildcard patterns that match a tag of every image in ``found``: protected tags by family, aliases exactly."""
    chosen: list[tuple[str, StorageClass]] = []
    for conflict in sorted(found, key=lambda item: item.image.pushed_at):
        storage = conflict.image.storage_class
        patterns = [wildcard_pattern(pattern) for pattern, scope in chosen if scope is storage]
        if any(pattern.fullmatch(tag) for pattern in patterns for tag in conflict.image.tags):
            continue
        if conflict.why.protected:
            options = [family_pattern(tag) for tag in conflict.why.protected]
            chosen.append((min(options, key=lambda pattern: (len(pattern.replace(WILDCARD, "")), pattern)), storage))
        else:
            chosen.append((sorted(conflict.why.aliases)[0], storage))
    return chosen


def _renumbered(policy: LifecyclePolicy, first: list[LifecycleRule]) -> LifecyclePolicy:
    """``first`` (numbered 1..k) ahead of the policy's rules, which keep their numbers when there is room."""
    lowest = min(rule.rule_priority for rule in policy.rules)
    shift = 0 if lowest > len(first) else len(first)
    rest = [rule.model_copy(update={"rule_priority": rule.rule_priority + shift}) for rule in policy.rules]
    return LifecyclePolicy(rules=(*first, *rest))


def _replaced(policy: LifecyclePolicy, changes: dict[int, dict[str, Any]]) -> LifecyclePolicy:
    """The policy with some rules' selections changed (re-validated as ECR would)."""
    rules = []
    for rule in policy.rules:
        document = rule.model_dump(mode="json", by_alias=True, exclude_none=True)
        if rule.rule_priority in changes:
            document["selection"] = {**document["selection"], **changes[rule.rule_priority]}
            document["selection"] = {key: value for key, value in document["selection"].items() if value is not None}
        rules.append(document)
    return LifecyclePolicy.model_validate({"rules": rules})


def suggest(
    policy: LifecyclePolicy,
    images: list[LifecycleImage],
    guarded: dict[str, Guarded],
    found: list[Conflict],
    now: datetime,
) -> list[Suggestion]:
    """Changes that stop the policy expiring what must stay, most faithful to its intent first, each re-evaluated."""
    expiring = [conflict for conflict in found if conflict.fate.action is ActionType.EXPIRE]
    if not expiring:
        return []

    def resolves(candidate: LifecyclePolicy) -> bool:
        found_now = conflicts(evaluate(candidate, images, now), guarded)
        return not any(conflict.fate.action is ActionType.EXPIRE for conflict in found_now)

    suggestions: list[Suggestion] = []
    cover = _cover(expiring)
    keep = _renumbered(
        policy, [_keep_rule(number, pattern, storage) for number, (pattern, storage) in enumerate(cover, start=1)]
    )
    patterns = ", ".join(pattern for pattern, _ in cover)
    suggestions.append(
        Suggestion(
            f"add {len(cover)} rule(s) before the others selecting {patterns} with a count never reached: the images"
            " they select belong to them, so no later rule can expire them (ECR has no keep action)",
            keep,
            resolves(keep),
        )
    )

    offending = {conflict.fate.rule.rule_priority: conflict.fate.rule for conflict in expiring}
    untagged_taken = {
        rule.selection.selects_storage for rule in policy.rules if rule.selection.tag_status is TagStatus.UNTAGGED
    }
    to_untagged = {
        priority: {"tagStatus": "untagged"}
        for priority, rule in offending.items()
        if rule.selection.tag_status is TagStatus.ANY and rule.selection.selects_storage not in untagged_taken
    }
    if to_untagged:
        narrowed = _replaced(policy, to_untagged)
        rules = ", ".join(str(priority) for priority in sorted(to_untagged))
        suggestions.append(
            Suggestion(f"restrict rule {rules} to untagged images (tagStatus untagged)", narrowed, resolves(narrowed))
        )

    raised = _raised_counts(policy, images, guarded, offending, now)
    if raised:
        candidate = _replaced(policy, {priority: {"countNumber": number} for priority, number in raised.items()})
        what = ", ".join(f"rule {priority} to {number}" for priority, number in sorted(raised.items()))
        ages = any(offending[priority].selection.count_type.is_age for priority in raised)
        later = " (an age only defers the loss: they grow older)" if ages else ""
        suggestions.append(Suggestion(f"raise countNumber of {what}{later}", candidate, resolves(candidate)))
    return sorted(suggestions, key=lambda suggestion: not suggestion.resolves)


def _raised_counts(
    policy: LifecyclePolicy,
    images: list[LifecycleImage],
    guarded: dict[str, Guarded],
    offending: dict[int, LifecycleRule],
    now: datetime,
) -> dict[int, int]:
    """Per offending rule, the smallest countNumber at which it expires nothing that must stay."""
    raised: dict[int, int] = {}
    for priority, rule in offending.items():
        selection = rule.selection
        kept = [
            image
            for image in images
            if image.digest in guarded
            and image.storage_class is selection.selects_storage
            and selection.matches_tags(image.tags)
        ]
        if not kept:
            continue
        if selection.count_type is CountType.IMAGE_COUNT_MORE_THAN:
            candidates = sorted(
                (
                    image
                    for image in images
                    if image.storage_class is selection.selects_storage and selection.matches_tags(image.tags)
                ),
                key=_newest_first,
            )
            oldest_kept = max(candidates.index(image) for image in kept)
            raised[priority] = max(selection.count_number, oldest_kept + 1)
        else:
            oldest = max((now - _age_from(selection, image)).days for image in kept)
            raised[priority] = max(selection.count_number, oldest + 1)
    return raised


# -- the preview ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreviewComparison:
    status: str  # "agrees", "disagrees" or "unavailable"
    only_ours: tuple[str, ...] = ()  # digests we expect acted on that the preview does not list
    only_preview: tuple[str, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "only-ours": list(self.only_ours),
            "only-preview": list(self.only_preview),
            "note": self.note,
        }


def compare(fates: list[ImageFate], preview: Preview) -> PreviewComparison:
    if preview.results is None:
        return PreviewComparison("unavailable", note=preview.note)
    ours = {(fate.image.digest, fate.action) for fate in fates}
    theirs = {(result.digest, result.action) for result in preview.results}
    only_ours = tuple(sorted(digest for digest, _ in ours - theirs))
    only_preview = tuple(sorted(digest for digest, _ in theirs - ours))
    status = "agrees" if not only_ours and not only_preview else "disagrees"
    return PreviewComparison(status, only_ours, only_preview, preview.note)


# -- the report -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LifecycleReport:
    repository: RepositoryRef
    policy_hash: str
    fates: list[ImageFate] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    preview: PreviewComparison = field(default_factory=lambda: PreviewComparison("unavailable"))
    image_count: int = 0

    @property
    def expiring(self) -> list[Conflict]:
        """What the policy would delete although it must stay: the violation."""
        return [conflict for conflict in self.conflicts if conflict.fate.action is ActionType.EXPIRE]

    @property
    def archiving(self) -> list[Conflict]:
        """What the policy would archive (unpullable until restored) although it must stay: a warning."""
        return [conflict for conflict in self.conflicts if conflict.fate.action is ActionType.TRANSITION]

    @property
    def violated(self) -> bool:
        return bool(self.expiring)

    @property
    def severity(self) -> str:
        return "CRITICAL" if any(conflict.why.protected for conflict in self.expiring) else "HIGH"

    def summary(self) -> str:
        name = self.repository.name
        if not self.expiring:
            return f"the lifecycle policy of {name} expires no protected tag or alias target"
        protected = sorted({tag for conflict in self.expiring for tag in conflict.why.protected})
        aliases = sorted({tag for conflict in self.expiring for tag in conflict.why.aliases})
        parts = []
        if protected:
            parts.append(f"protected tags {_listed(protected)}")
        if aliases:
            parts.append(f"alias targets {_listed(aliases)}")
        count = len(self.expiring)
        return f"the lifecycle policy of {name} would expire {count} image(s) holding " + " and ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository.name,
            "registry-id": self.repository.registry_id,
            "region": self.repository.region,
            "policy-hash": self.policy_hash,
            "violated": self.violated,
            "summary": self.summary(),
            "images": self.image_count,
            "acted-on": [
                {
                    "image-digest": fate.image.digest,
                    "image-tags": list(fate.image.tags),
                    "action": fate.action.value,
                    "rule-priority": fate.rule.rule_priority,
                }
                for fate in self.fates
            ],
            "conflicts": [conflict.as_dict() for conflict in self.conflicts],
            "suggestions": [suggestion.as_dict() for suggestion in self.suggestions],
            "preview": self.preview.as_dict(),
        }


def _listed(tags: list[str], limit: int = 8) -> str:
    shown = ", ".join(tags[:limit])
    return shown + (f" and {len(tags) - limit} more" if len(tags) > limit else "")


def check(
    repository: RepositoryRef,
    policy_text: str,
    images: list[LifecycleImage],
    rules: Rules,
    now: datetime,
    *,
    preview: Preview | None = None,
) -> LifecycleReport:
    """The whole check of one repository's policy; ``LifecyclePolicyError`` when the text is no policy."""
    policy = parse_lifecycle_policy(policy_text)
    fates = evaluate(policy, images, now)
    guarded = guarded_images(rules, repository.name, images)
    found = conflicts(fates, guarded)
    comparison = compare(fates, preview or Preview(None, "not asked"))
    if preview is not None and preview.results is not None:
        # ECR's word wins where it sees more: an image only its preview acts on is reported too.
        by_digest = {image.digest: image for image in images}
        rules_by_priority = {rule.rule_priority: rule for rule in policy.rules}
        for result in preview.results:
            image = by_digest.get(result.digest)
            rule = rules_by_priority.get(result.rule_priority)
            if result.digest in comparison.only_preview and image and rule and result.digest in guarded:
                found.append(Conflict(ImageFate(image, rule), guarded[result.digest], source="preview"))
    return LifecycleReport(
        repository,
        policy_hash(policy_text),
        fates,
        found,
        suggest(policy, images, guarded, found, now),
        comparison,
        len(images),
    )


# -- the workflow (CLI and Lambda) ----------------------------------------------------------------
class LifecycleSource(Protocol):
    """What the check reads from ECR (adapters/lifecycle.py)."""

    def policy_text(self, repository: RepositoryRef) -> str | None:
        """The repository's lifecycle policy, None when it has none."""

    def images(self, repository: RepositoryRef) -> list[LifecycleImage]: ...

    def preview(self, repository: RepositoryRef, policy_text: str) -> Preview: ...

    def repositories(self, registry_id: str, region: str) -> Iterator[str]: ...


class LifecycleChecker:
    def __init__(
        self, rules: Rules, source: LifecycleSource, clock: Callable[[], datetime], *, use_preview: bool = True
    ) -> None:
        self._rules = rules
        self._source = source
        self._clock = clock
        self._use_preview = use_preview

    def check(self, repository: RepositoryRef, policy_text: str | None = None) -> LifecycleReport | None:
        """The report on ``policy_text`` (default: the policy in force); None when the repository has none."""
        text = policy_text if policy_text is not None else self._source.policy_text(repository)
        if text is None:
            return None
        parse_lifecycle_policy(text)  # refuse a bad policy before reading any image
        images = self._source.images(repository)
        preview = self._source.preview(repository, text) if self._use_preview else Preview(None, "not asked")
        return check(repository, text, images, self._rules, self._clock(), preview=preview)


def violation_detail(report: LifecycleReport, *, actor: str, event_id: str, event_time: datetime) -> dict[str, Any]:
    """The ``Lifecycle Policy Violation`` event's detail (models/events/application.py ``LifecycleViolationDetail``)."""
    expiring = report.expiring
    recommended = next((suggestion for suggestion in report.suggestions if suggestion.resolves), None)
    return {
        "severity": report.severity,
        "summary": report.summary(),
        "registry-id": report.repository.registry_id,
        "region": report.repository.region,
        "repository-name": report.repository.name,
        "policy-hash": report.policy_hash,
        "image-count": len(expiring),
        "images": [conflict.as_dict() for conflict in expiring[:MAX_IMAGES_IN_EVENT]],
        "suggestion": recommended.summary if recommended else "no single change found: review the policy",
        "suggested-policy": recommended.policy.text() if recommended else None,
        "preview": report.preview.status,
        "actor": actor,
        "source-event-id": event_id,
        "source-event-time": event_time.isoformat(),
    }


def published_fingerprint(report: LifecycleReport) -> str:
    """One event per (repository, policy): the ledger record that it was published."""
    return f"lifecycle-violation#{report.policy_hash}"


@dataclass(frozen=True)
class GuardOutcome:
    # "compliant", "violation", "already_published", "no_policy", "invalid_policy", "repository_not_found"
    result: str
    report: LifecycleReport | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        outcome: dict[str, Any] = {"result": self.result}
        if self.report is not None:
            outcome |= {"policy_hash": self.report.policy_hash, "summary": self.report.summary()}
            outcome["expiring"] = [short_digest(conflict.image.digest) for conflict in self.report.expiring]
            outcome["preview"] = self.report.preview.status
        if self.note:
            outcome["note"] = self.note
        return outcome


class LifecycleGuard:
    """Checks a policy as it is put, and publishes one violation per (repository, policy). Never changes it."""

    def __init__(self, checker: LifecycleChecker, publisher: Publisher, published: SentLedger) -> None:
        self._checker = checker
        self._publisher = publisher
        self._published = published

    def on_policy_put(
        self,
        repository: RepositoryRef,
        policy_text: str | None,
        *,
        actor: str,
        event_id: str,
        event_time: datetime,
    ) -> GuardOutcome:
        try:
            report = self._checker.check(repository, policy_text)
        except LifecyclePolicyError as error:
            return GuardOutcome("invalid_policy", note=f"not a lifecycle policy ECR accepts: {error}")
        except RepositoryNotFoundError as error:
            return GuardOutcome("repository_not_found", note=str(error))
        if report is None:
            return GuardOutcome("no_policy", note="the repository has no lifecycle policy now")
        if not report.violated:
            return GuardOutcome("compliant", report)
        fingerprint = published_fingerprint(report)
        if self._published.recorded(repository, fingerprint) is not None or not self._published.reserve(
            repository, fingerprint
        ):
            return GuardOutcome("already_published", report, "this policy's violation was published before")
        detail = violation_detail(report, actor=actor, event_id=event_id, event_time=event_time)
        try:
            self._publisher.publish(VIOLATION_DETAIL_TYPE, detail, [repository.arn])
        except Exception:
            self._published.unreserve(repository, fingerprint)
            raise
        self._published.mark_sent(repository, fingerprint, report.summary()[:200])
        return GuardOutcome("violation", report)


# -- the report as text (``ecr-automation lifecycle check``) ----------------------------------------
def render_text(report: LifecycleReport) -> str:
    """What a person reads: what the policy would do to what must stay, ECR's preview, and the fix."""
    name = report.repository.name
    acted = len(report.fates)
    lines = [
        f"{name}: policy {report.policy_hash}: {'VIOLATION' if report.violated else 'ok'}: {report.summary()}",
        f"  of {report.image_count} image(s), {acted} would be expired or archived",
    ]
    for conflict in report.conflicts:
        image = conflict.image
        why = []
        if conflict.why.protected:
            why.append("protected " + ", ".join(conflict.why.protected))
        if conflict.why.aliases:
            why.append("alias target of " + ", ".join(conflict.why.aliases))
        verb = "EXPIRED" if conflict.fate.action is ActionType.EXPIRE else "archived"
        source = " (ECR's preview only)" if conflict.source == "preview" else ""
        lines.append(
            f"  {verb}: {short_digest(image.digest)} [{', '.join(image.tags)}] pushed"
            f" {image.pushed_at.date().isoformat()} by {conflict.fate.rule.label()}: {'; '.join(why)}{source}"
        )
    preview = report.preview
    if preview.status == "unavailable":
        lines.append(f"  ECR preview: unavailable ({preview.note or 'not asked'}); our evaluation stands")
    elif preview.status == "agrees":
        lines.append("  ECR preview: agrees with our evaluation")
    else:
        lines.append(
            f"  ECR preview: DISAGREES: only ours {[short_digest(d) for d in preview.only_ours]},"
            f" only ECR's {[short_digest(d) for d in preview.only_preview]} (ECR's word counts; please report it)"
        )
    for number, suggestion in enumerate(report.suggestions, start=1):
        verdict = "resolves it" if suggestion.resolves else "does NOT resolve it alone"
        lines.append(f"  suggestion {number} ({verdict}): {suggestion.summary}")
        lines += ["    " + line for line in suggestion.policy.text().splitlines()]
    return "\n".join(lines) + "\n"
