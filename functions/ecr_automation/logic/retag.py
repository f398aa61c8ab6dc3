"""Retag rules: floating version aliases, digest tags, pattern tags and promotion on a clean scan.

Decisions are pure functions; ``Retagger`` applies them through the ports. Every decision reads
where tags point now (from ECR), never from memory, so duplicate, late and out-of-order events all
converge: an alias only moves forward in semver precedence, a tag already in place costs no write,
and the PUSH events caused by this function's own writes find nothing left to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any

from ecr_automation.logic.guard import is_guarded, push_is_accepted, quarantine_tag_for
from ecr_automation.logic.ports import Ledger, Registry
from ecr_automation.logic.versions import Version, highest_version, parse_version
from ecr_automation.models.domain import PutOutcome, RepositoryRef, short_digest
from ecr_automation.models.events import (
    ImageActionEvent,
    ImageActionType,
    ImageScanEvent,
    InspectorScanEvent,
    Severity,
    SeverityCounts,
)
from ecr_automation.rules import AliasRule, PromoteRule, RetagRule, Rules, render_template

RetagEvent = ImageActionEvent | ImageScanEvent | InspectorScanEvent

# Inspector2 Scan events count only CRITICAL, HIGH and MEDIUM findings.
LOWEST_SEVERITY_INSPECTOR_COUNTS = Severity.MEDIUM


class RetagResult(StrEnum):
    RETAGGED = "retagged"  # at least one tag written
    DRY_RUN = "dry_run"  # tags would have been written
    UNCHANGED = "unchanged"  # every wanted tag was already in place or may not move
    NO_RULE = "no_rule"
    IGNORED = "ignored"  # nothing to derive from this event
    REFUSED = "refused"  # the tag guard rejected the push, or quarantined the image
    BLOCKED = "blocked"  # the scan failed or found too much: nothing promoted
    IMAGE_GONE = "image_gone"


@dataclass(frozen=True)
class TagPlan:
    """One tag this event wants on the image, and whether (and why) it is written."""

    tag: str
    write: bool
    reason: str


@dataclass(frozen=True)
class TagSkip:
    tag: str
    reason: str


@dataclass(frozen=True)
class RetagOutcome:
    result: RetagResult
    digest: str | None = None
    written: list[str] = field(default_factory=list)
    skipped: list[TagSkip] = field(default_factory=list)
    refused: list[TagSkip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": self.result.value,
            "digest": self.digest,
            "written": self.written,
            "skipped": {skip.tag: skip.reason for skip in self.skipped},
            "refused": {skip.tag: skip.reason for skip in self.refused},
            "notes": self.notes,
        }


# --- pure decisions ---------------------------------------------------------------------------

VersionCheck = Callable[[Version], bool]


def alias_candidates(rule: AliasRule, version: Version) -> list[tuple[str, VersionCheck]]:
    """The aliases a version moves, each with the test of which versions it stands for."""
    candidates: list[tuple[str, VersionCheck]] = []
    if rule.minor:
        candidates.append(
            (
                f"{rule.prefix}{version.major}.{version.minor}",
                lambda v: (v.major, v.minor) == (version.major, version.minor),
            )
        )
    if rule.major:
        candidates.append((f"{rule.prefix}{version.major}", lambda v: v.major == version.major))
    if rule.latest:
        candidates.append(("latest", lambda _: True))
    return candidates


def forward_decision(tag: str, label: str, version: Version | None, held: tuple[str, Version] | None) -> TagPlan:
    """Whether ``tag`` leaves the image whose version tag is ``held`` for ``label`` (at ``version``).

    Only forward in semver precedence; a tag held by an image without a version tag is moved.
    """
    if held is None:
        return TagPlan(tag, write=True, reason=f"moved for {label} from an image with no version tag")
    held_tag, held_at = held
    if version is None:
        return TagPlan(tag, write=True, reason=f"moved from {held_tag}: {label} has no version tag to compare")
    if version.is_newer_than(held_at):
        return TagPlan(tag, write=True, reason=f"{label} is newer than {held_tag}")
    if version.precedence == held_at.precedence:
        return TagPlan(tag, write=False, reason=f"stays on {held_tag}: same precedence as {label}")
    return TagPlan(tag, write=False, reason=f"stays on {held_tag}, newer than {label}")


def decide_move(
    tag: str,
    digest: str,
    version: Version | None,
    *,
    current: Callable[[str], str | None],
    held_version: Callable[[str], tuple[str, Version] | None],
    label: str,
) -> TagPlan:
    """Whether ``tag`` moves to ``digest``, judged from where it points now (``current``)."""
    target = current(tag)
    if target == digest:
        return TagPlan(tag, write=False, reason="already there")
    if target is None:
        return TagPlan(tag, write=True, reason=f"new tag for {label}")
    return forward_decision(tag, label, version, held_version(target))


def digest_tag(rule: RetagRule, digest: str) -> str | None:
    if not rule.digest_tag:
        return None
    return render_template(rule.digest_tag, {"short_digest": short_digest(digest)})


def pattern_tags(rule: RetagRule, pushed_tag: str, digest: str) -> tuple[list[str], list[str]]:
    """Tags the pattern rules derive from a pushed tag, and notes on those they cannot write.

    A derived tag that itself matches a pattern is not written: its own PUSH event would derive
    again, and a chain of derivations might never end.
    """
    tags: list[str] = []
    notes: list[str] = []
    for pattern in rule.patterns:
        match = re.search(pattern.match, pushed_tag)
        if match is None:
            continue
        values = {"short_digest": short_digest(digest), "tag": pushed_tag}
        values.update({name: value or "" for name, value in match.groupdict().items()})
        for template in pattern.tags:
            tag = render_template(template, values)
            if tag is None:
                notes.append(f"{template!r} renders no valid tag from {pushed_tag!r}")
            elif tag == pushed_tag:
                continue
            elif any(re.search(other.match, tag) for other in rule.patterns):
                notes.append(f"{tag} not written: it matches a pattern rule itself, so tags would chain")
            else:
                tags.append(tag)
    return tags, notes


def promotion_tags(
    rules: list[PromoteRule], counts: SeverityCounts, digest: str, *, counts_below_medium: bool
) -> tuple[list[tuple[str, PromoteRule]], list[str]]:
    """Tags earned by a completed scan's counts, per promotion rule, and why others were not."""
    earned: list[tuple[str, PromoteRule]] = []
    notes: list[str] = []
    for rule in rules:
        names = ", ".join(rule.tags)
        if not counts_below_medium and rule.block_at.rank < LOWEST_SEVERITY_INSPECTOR_COUNTS.rank:
            notes.append(
                f"{names} not added: this scan reports no {rule.block_at} counts, so the gate cannot be decided"
            )
            continue
        blocking = counts.at_or_above(rule.block_at)
        if blocking:
            found = ", ".join(f"{severity}={count}" for severity, count in counts.as_dict().items())
            notes.append(f"{names} not added: {blocking} finding(s) at {rule.block_at} or above ({found})")
            continue
        for template in rule.tags:
            tag = render_template(template, {"short_digest": short_digest(digest)})
            if tag is not None:
                earned.append((tag, rule))
    return earned, notes


# --- the workflow -----------------------------------------------------------------------------


def _any_version(_: Version) -> bool:
    return True


@dataclass(frozen=True)
class Wanted:
    """A tag an event asks for; with ``forward_only`` it moves only to a newer ``version``."""

    tag: str
    reason: str
    label: str = ""
    forward_only: bool = False
    version: Version | None = None
    # Which version tags of the image holding the tag now count against ``version``.
    counts: Callable[[Version], bool] = _any_version


class _View:
    """Where tags point now, read from the registry at most once per question within one event."""

    def __init__(self, registry: Registry, repository: RepositoryRef, digest: str) -> None:
        self.repository = repository
        self.digest = digest
        self._registry = registry
        self._tags_of: dict[str, list[str]] = {}
        self._digest_of: dict[str, str | None] = {}

    def tags_of(self, digest: str) -> list[str]:
        if digest not in self._tags_of:
            self._tags_of[digest] = self._registry.tags_of_digest(self.repository, digest)
        return self._tags_of[digest]

    def holds(self, tag: str) -> bool:
        """Whether the image itself holds ``tag``: one DescribeImages answers for all its tags."""
        return tag in self.tags_of(self.digest)

    def digest_of(self, tag: str) -> str | None:
        if self.holds(tag):
            return self.digest
        if tag not in self._digest_of:
            self._digest_of[tag] = self._registry.digest_of_tag(self.repository, tag)
        return self._digest_of[tag]


class Retagger:
    def __init__(self, rules: Rules, registry: Registry, ledger: Ledger) -> None:
        self._rules = rules
        self._registry = registry
        self._ledger = ledger

    def handle(self, event: RetagEvent) -> RetagOutcome:
        if isinstance(event, ImageActionEvent):
            return self._on_image_action(event)
        return self._on_scan(event)

    def _on_image_action(self, event: ImageActionEvent) -> RetagOutcome:
        detail = event.detail
        digest, tag = detail.image_digest, detail.image_tag
        rule = self._rules.retag_for(detail.repository_name)
        if rule is None:
            return RetagOutcome(RetagResult.NO_RULE, digest, notes=[f"no retag rule for {detail.repository_name}"])
        if (no_op := self._nothing_to_derive(event, rule)) is not None:
            return no_op
        if not push_is_accepted(event, self._rules, self._ledger):
            return RetagOutcome(RetagResult.REFUSED, digest, notes=[f"the tag guard rejected this push of {tag}"])

        view = _View(self._registry, RepositoryRef(event.account, event.region, detail.repository_name), digest)
        if tag is not None and not view.holds(tag) and (moved_to := view.digest_of(tag)) is not None:
            # A late or replayed event: deriving tags from it now would undo newer pushes.
            note = f"{tag} has moved on to {short_digest(moved_to)} since this push: nothing to derive"
            return RetagOutcome(RetagResult.IGNORED, digest, notes=[note])
        wanted, notes = _wanted_on_push(rule, tag, digest)
        return self._decide_and_apply(view, wanted, rule, notes)

    def _nothing_to_derive(self, event: ImageActionEvent, rule: RetagRule) -> RetagOutcome | None:
        """Why this image action asks for no tag at all, or None when it may."""
        detail = event.detail
        digest, tag = detail.image_digest, detail.image_tag
        if detail.known_action is not ImageActionType.PUSH:
            return RetagOutcome(RetagResult.IGNORED, digest, notes=[f"action {detail.action_type} adds no tag"])
        if tag is None and not (rule.digest_tag and rule.digest_tag_untagged_pushes):
            return RetagOutcome(RetagResult.IGNORED, digest, notes=["push by digest: no tag to derive from"])
        guard = self._rules.guard_for(detail.repository_name)
        if guard is not None and tag == quarantine_tag_for(guard, digest):
            return RetagOutcome(RetagResult.IGNORED, digest, notes=[f"{tag} is the tag guard's quarantine tag"])
        return None

    def _on_scan(self, event: ImageScanEvent | InspectorScanEvent) -> RetagOutcome:
        detail = event.detail
        digest = detail.image_digest
        rule = self._rules.retag_for(detail.repository_name)
        if rule is None or not rule.promote:
            return RetagOutcome(RetagResult.NO_RULE, digest, notes=[f"no promotion rule for {detail.repository_name}"])
        if not detail.complete:
            return RetagOutcome(RetagResult.BLOCKED, digest, notes=[f"scan {detail.scan_status}: nothing promoted"])
        earned, notes = promotion_tags(
            rule.promote, detail.finding_severity_counts, digest, counts_below_medium=isinstance(event, ImageScanEvent)
        )
        if not earned:
            return RetagOutcome(RetagResult.BLOCKED, digest, notes=notes)

        view = _View(self._registry, RepositoryRef(event.account, event.region, detail.repository_name), digest)
        guard = self._rules.guard_for(detail.repository_name)
        if guard is not None and quarantine_tag_for(guard, digest) in view.tags_of(digest):
            return RetagOutcome(RetagResult.REFUSED, digest, notes=[*notes, "the tag guard quarantined this image"])
        own = highest_version(view.tags_of(digest), rule.aliases.prefix)
        wanted = [
            Wanted(
                tag,
                f"scan clean at {promote.block_at} or above",
                label=own[0] if own else short_digest(digest),
                forward_only=promote.forward_only,
                version=own[1] if own else None,
            )
            for tag, promote in earned
        ]
        return self._decide_and_apply(view, wanted, rule, notes)

    def _decide_and_apply(self, view: _View, wanted: list[Wanted], rule: RetagRule, notes: list[str]) -> RetagOutcome:
        """Decide and write under leases on the floating tags, so two releases cannot interleave.

        Without them, two pushes of one major version handled at the same instant could both read
        `v1` before either moved it, and the older could win.
        """
        floating = [want.tag for want in wanted if want.forward_only]
        with self._ledger.hold(view.repository, floating):
            return self._apply(view, self._screen(wanted, rule, view), notes)

    def _screen(self, wanted: list[Wanted], rule: RetagRule, view: _View) -> list[TagPlan]:
        """Decide each wanted tag once, cheapest test first: protected, in place, then forward."""
        guard = self._rules.guard_for(view.repository.name)
        plans: list[TagPlan] = []
        seen: set[str] = set()
        for want in wanted:
            if want.tag in seen:
                continue  # the first rule to ask for a tag decides it
            seen.add(want.tag)
            if is_guarded(guard, want.tag):
                plans.append(TagPlan(want.tag, write=False, reason="protected by the tag guard: retag never moves it"))
            elif not want.forward_only:
                in_place = view.holds(want.tag)
                plans.append(TagPlan(want.tag, write=not in_place, reason="already there" if in_place else want.reason))
            else:
                plan = decide_move(
                    want.tag,
                    view.digest,
                    want.version,
                    current=view.digest_of,
                    held_version=partial(_held_version, view, rule.aliases.prefix, want.counts),
                    label=want.label,
                )
                reason = f"{want.reason}; {plan.reason}" if plan.write and want.reason else plan.reason
                plans.append(TagPlan(want.tag, plan.write, reason))
        return plans

    def _apply(self, view: _View, plans: list[TagPlan], notes: list[str]) -> RetagOutcome:
        digest = view.digest
        skipped = [TagSkip(plan.tag, plan.reason) for plan in plans if not plan.write]
        to_write = [plan for plan in plans if plan.write]
        if not to_write:
            return RetagOutcome(RetagResult.UNCHANGED, digest, skipped=skipped, notes=notes)
        image = self._registry.get_manifest(view.repository, digest)
        if image is None:
            return RetagOutcome(
                RetagResult.IMAGE_GONE, digest, skipped=skipped, notes=[*notes, "image no longer exists"]
            )
        written: list[str] = []
        refused: list[TagSkip] = []
        dry_run = False
        for plan in to_write:
            outcome = self._registry.put_tag(image, plan.tag, reason=plan.reason, kind="tag_retagged")
            if outcome is PutOutcome.WRITTEN:
                written.append(plan.tag)
            elif outcome is PutOutcome.ALREADY_THERE:
                skipped.append(TagSkip(plan.tag, "already there"))
            elif outcome is PutOutcome.IMMUTABLE:
                refused.append(TagSkip(plan.tag, "the repository refuses to move it (tag immutability)"))
            else:
                dry_run = True
                skipped.append(TagSkip(plan.tag, f"dry run: would write ({plan.reason})"))
        if written:
            result = RetagResult.RETAGGED
        elif dry_run:
            result = RetagResult.DRY_RUN
        else:
            result = RetagResult.UNCHANGED
        return RetagOutcome(result, digest, written, skipped, refused, notes)


def _held_version(view: _View, prefix: str, counts: VersionCheck, target: str) -> tuple[str, Version] | None:
    return highest_version(view.tags_of(target), prefix, counts)


def _wanted_on_push(rule: RetagRule, tag: str | None, digest: str) -> tuple[list[Wanted], list[str]]:
    """Every tag a push asks for, in the order rules decide them: aliases, digest tag, patterns."""
    wanted: list[Wanted] = []
    notes: list[str] = []
    version = parse_version(tag, rule.aliases.prefix) if tag is not None else None
    if tag is not None and version is not None and rule.aliases.enabled:
        if version.is_prerelease and not rule.aliases.include_prereleases:
            notes.append(f"{tag} is a pre-release: aliases stay where they are")
        else:
            for alias, stands_for in alias_candidates(rule.aliases, version):
                wanted.append(
                    Wanted(
                        alias,
                        "",
                        label=tag,
                        forward_only=True,
                        version=version,
                        counts=_held_counts(stands_for, rule.aliases.include_prereleases),
                    )
                )
    if (sha_tag := digest_tag(rule, digest)) is not None:
        wanted.append(Wanted(sha_tag, "digest tag"))
    if tag is not None:
        derived, pattern_notes = pattern_tags(rule, tag, digest)
        notes.extend(pattern_notes)
        wanted.extend(Wanted(derived_tag, f"derived from {tag}") for derived_tag in derived)
    return wanted, notes


def _held_counts(stands_for: VersionCheck, include_prereleases: bool) -> VersionCheck:
    # A stable alias stands for releases: a pre-release it points at does not hold it back.
    return lambda held: stands_for(held) and (include_prereleases or not held.is_prerelease)
