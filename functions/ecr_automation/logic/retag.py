"""Retag rules: floating version aliases, digest tags, pattern tags and promotion on a clean scan.

Decisions are pure functions; ``Retagger`` applies them through the ports. Every decision reads
where tags point now (from ECR), never from memory, so duplicate, late and out-of-order events all
converge: an alias only moves forward in semver precedence, a tag already in place costs no write,
and the PUSH events caused by this function's own writes find nothing left to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

from ecr_automation.logic.ownership import is_guarded
from ecr_automation.logic.platforms import combined_counts, gate_closed
from ecr_automation.logic.ports import ImageGraph, Lease, LeaseLedger, Registry
from ecr_automation.models.domain import (
    ImageUnavailable,
    PutOutcome,
    RegistryView,
    RepositoryRef,
    short_digest,
)
from ecr_automation.models.events.base import SeverityCounts
from ecr_automation.models.events.image_action import ImageActionEvent, ImageActionType
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.models.versions import Version, highest_version, parse_version
from ecr_automation.rules import AliasRule, PromoteRule, RetagRule, Rules, render_template

RetagEvent = ImageActionEvent | ImageScanEvent | InspectorScanEvent


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
        return TagPlan(tag, write=False, reason=f"stays on {held_tag}: {label} has no version tag")
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
        groups = pattern.search(pushed_tag)
        if groups is None:
            continue
        values = {"short_digest": short_digest(digest), "tag": pushed_tag, **groups}
        for template in pattern.tags:
            tag = render_template(template, values)
            if tag is None:
                notes.append(f"{template!r} renders no valid tag from {pushed_tag!r}")
            elif tag == pushed_tag:
                continue
            elif any(other.search(tag) is not None for other in rule.patterns):
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
        closed = gate_closed(counts, rule.block_at, inspector_counts=not counts_below_medium)
        if closed is not None:
            notes.append(f"{', '.join(rule.tags)} not added: {closed}")
            continue
        for template in rule.tags:
            tag = render_template(template, {"short_digest": short_digest(digest)})
            if tag is not None:
                earned.append((tag, rule))
    return earned, notes


# --- the workflow -----------------------------------------------------------------------------

ALIAS_LEASE = "floating-tags"


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


class PushAcceptance(Protocol):
    """Whether other reactions may act on a push: False when the tag guard rejects it."""

    def accepts(self, event: ImageActionEvent) -> bool: ...


class RetagLedger(LeaseLedger, ImageGraph, Protocol):
    pass


class _NoLease:
    def check(self) -> None:
        return None


@dataclass
class _Target:
    """The image one decision is about, and what the registry says about its tags."""

    repository: RepositoryRef
    view: RegistryView
    tags_of: dict[str, list[str]] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.view.digest

    def version_of(
        self, digest: str, prefix_check: Callable[[Version], bool] = _any_version
    ) -> tuple[str, Version] | None:
        return highest_version(self.tags_of.get(digest, []), prefix_check)


class Retagger:
    def __init__(self, rules: Rules, registry: Registry, ledger: RetagLedger, acceptance: PushAcceptance) -> None:
        self._rules = rules
        self._registry = registry
        self._ledger = ledger
        self._acceptance = acceptance

    def handle(self, event: RetagEvent) -> RetagOutcome:
        if isinstance(event, ImageActionEvent):
            return self._on_image_action(event)
        return self._on_scan(event)

    # -- pushes ------------------------------------------------------------------------------------
    def _on_image_action(self, event: ImageActionEvent) -> RetagOutcome:
        detail = event.detail
        digest, tag = detail.image_digest, detail.image_tag
        rule = self._rules.retag_for(detail.repository_name)
        if rule is None:
            return RetagOutcome(RetagResult.NO_RULE, digest, notes=[f"no retag rule for {detail.repository_name}"])
        if (no_op := self._nothing_to_derive(event, rule)) is not None:
            return no_op
        if not self._acceptance.accepts(event):
            return RetagOutcome(RetagResult.REFUSED, digest, notes=[f"the tag guard rejected this push of {tag}"])
        repository = RepositoryRef(event.account, event.region, detail.repository_name)
        if self._rules.is_pull_through_cache(repository.name):
            return RetagOutcome(RetagResult.IGNORED, digest, notes=["a pull-through cache mirrors its upstream's tags"])
        wanted, notes = _wanted_on_push(rule, tag, digest)
        return self._decide_and_apply(repository, digest, wanted, rule, notes, owner=event.id, pushed_tag=tag)

    def _nothing_to_derive(self, event: ImageActionEvent, rule: RetagRule) -> RetagOutcome | None:
        """Why this image action asks for no tag at all, or None when it may."""
        detail = event.detail
        digest, tag = detail.image_digest, detail.image_tag
        if detail.known_action is not ImageActionType.PUSH:
            return RetagOutcome(RetagResult.IGNORED, digest, notes=[f"action {detail.action_type} adds no tag"])
        if tag is None and not (rule.digest_tag and rule.digest_tag_untagged_pushes):
            return RetagOutcome(RetagResult.IGNORED, digest, notes=["push by digest: no tag to derive from"])
        guard = self._rules.guard_for(detail.repository_name)
        if guard is not None and tag is not None and guard.is_quarantine_tag(tag):
            return RetagOutcome(RetagResult.IGNORED, digest, notes=[f"{tag} is the tag guard's quarantine tag"])
        return None

    # -- scans -------------------------------------------------------------------------------------
    def _on_scan(self, event: ImageScanEvent | InspectorScanEvent) -> RetagOutcome:
        """Promote on a clean scan. Scans name platform manifests: an index is promoted once all its are clean."""
        detail = event.detail
        digest = detail.image_digest
        rule = self._rules.retag_for(detail.repository_name)
        if rule is None or not rule.promote:
            return RetagOutcome(RetagResult.NO_RULE, digest, notes=[f"no promotion rule for {detail.repository_name}"])
        if not detail.complete:
            return RetagOutcome(RetagResult.BLOCKED, digest, notes=[f"scan {detail.scan_status}: nothing promoted"])
        repository = RepositoryRef(event.account, event.region, detail.repository_name)
        counts_below_medium = isinstance(event, ImageScanEvent)
        # A platform manifest's scan decides for the indexes naming it; any other image's for itself.
        targets = self._ledger.parents_of(repository, digest) or [digest]
        outcomes = [
            self._promote(
                repository,
                target,
                rule,
                event.id,
                own_counts=(digest, detail.finding_severity_counts),
                counts_below_medium=counts_below_medium,
            )
            for target in targets
        ]
        return next((outcome for outcome in outcomes if outcome.written), outcomes[0])

    def _promote(
        self,
        repository: RepositoryRef,
        digest: str,
        rule: RetagRule,
        owner: str,
        *,
        own_counts: tuple[str, SeverityCounts] | None,
        counts_below_medium: bool,
    ) -> RetagOutcome:
        """Promote ``digest`` if its scan (or, for an index, every platform's scan) is clean enough."""
        templates = [(template, promote) for promote in rule.promote for template in promote.tags]
        wanted_tags = [render_template(template, {"short_digest": short_digest(digest)}) for template, _ in templates]

        def decide(target: _Target) -> tuple[list[Wanted], list[str]] | RetagOutcome:
            image = target.view.image
            if isinstance(image, ImageUnavailable):  # ruled out before deciding; keeps the type narrow
                return RetagOutcome(RetagResult.IMAGE_GONE, digest)
            counts = combined_counts(self._registry, repository, image, own_counts)
            if isinstance(counts, str):
                return RetagOutcome(RetagResult.BLOCKED, digest, notes=[f"{counts}: nothing promoted yet"])
            earned, notes = promotion_tags(rule.promote, counts, digest, counts_below_medium=counts_below_medium)
            if not earned:
                return RetagOutcome(RetagResult.BLOCKED, digest, notes=notes)
            own = target.version_of(digest)
            label = own[0] if own else short_digest(digest)
            wanted = [
                Wanted(
                    tag,
                    f"scan clean at {promote.block_at} or above",
                    label=label,
                    forward_only=promote.forward_only,
                    version=own[1] if own else None,
                )
                for tag, promote in earned
            ]
            return wanted, notes

        return self._decide_and_apply(
            repository,
            digest,
            [],
            rule,
            [],
            owner=owner,
            pushed_tag=None,
            extra_tags=[tag for tag in wanted_tags if tag],
            decide=decide,
            need_own_tags=True,
        )

    # -- deciding and writing ----------------------------------------------------------------------
    def _decide_and_apply(
        self,
        repository: RepositoryRef,
        digest: str,
        wanted: list[Wanted],
        rule: RetagRule,
        notes: list[str],
        *,
        owner: str,
        pushed_tag: str | None,
        extra_tags: list[str] | None = None,
        decide: Callable[[_Target], tuple[list[Wanted], list[str]] | RetagOutcome] | None = None,
        need_own_tags: bool = False,
    ) -> RetagOutcome:
        """Read, decide and write under one lease per repository, so two releases cannot interleave.

        Without it, two pushes of one major version handled at the same instant could both read `v1`
        before either moved it, and the older could win. Every write is fenced: a holder whose lease ran
        out writes nothing more and raises, so the platform retries the event.
        """
        guard = self._rules.guard_for(repository.name)
        quarantine_tag = guard.quarantine_tag_for(digest) if guard is not None else None
        floating = decide is not None or any(want.forward_only for want in wanted)
        looked_up = [want.tag for want in wanted] + (extra_tags or [])
        looked_up += [tag for tag in (pushed_tag, quarantine_tag) if tag]
        with self._lease(repository, owner, floating) as lease:
            view = self._registry.view(repository, digest, looked_up)
            if isinstance(view.image, ImageUnavailable):
                return RetagOutcome(RetagResult.IMAGE_GONE, digest, notes=[*notes, f"image {view.image.value}"])
            if pushed_tag is not None and not view.holds(pushed_tag) and (moved_to := view.digest_of(pushed_tag)):
                # A late or replayed event: deriving tags from it now would undo newer pushes.
                note = f"{pushed_tag} has moved on to {short_digest(moved_to)} since this push: nothing to derive"
                return RetagOutcome(RetagResult.IGNORED, digest, notes=[note])
            if quarantine_tag is not None and view.holds(quarantine_tag):
                return RetagOutcome(RetagResult.REFUSED, digest, notes=[*notes, "the tag guard quarantined this image"])
            target = _Target(repository, view)
            if need_own_tags:
                target.tags_of = self._registry.tags_of_digests(repository, [digest])
            if decide is not None:
                decided = decide(target)
                if isinstance(decided, RetagOutcome):
                    return decided
                wanted, more_notes = decided
                notes = [*notes, *more_notes]
            holders = {view.digest_of(want.tag) for want in wanted if want.forward_only} - {None, digest}
            if holders:
                target.tags_of.update(self._registry.tags_of_digests(repository, sorted(h for h in holders if h)))
            plans = self._screen(wanted, target)
            outcome = self._apply(target, plans, notes, lease)
        if pushed_tag is not None and view.image.is_index:
            self._ledger.record_children(repository, digest, view.image.platform_children())
            if rule.promote:
                promoted = self._promote(repository, digest, rule, owner, own_counts=None, counts_below_medium=True)
                return _merge(outcome, promoted)
        return outcome

    @contextmanager
    def _lease(self, repository: RepositoryRef, owner: str, needed: bool) -> Iterator[Lease]:
        if not needed:
            yield _NoLease()
            return
        with self._ledger.hold(repository, ALIAS_LEASE, owner=owner) as lease:
            yield lease

    def _screen(self, wanted: list[Wanted], target: _Target) -> list[TagPlan]:
        """Decide each wanted tag once, cheapest test first: protected, in place, then forward."""
        guard = self._rules.guard_for(target.repository.name)
        view = target.view
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
                    held_version=partial(_held_version, target, want.counts),
                    label=want.label,
                )
                reason = f"{want.reason}; {plan.reason}" if plan.write and want.reason else plan.reason
                plans.append(TagPlan(want.tag, plan.write, reason))
        return plans

    def _apply(self, target: _Target, plans: list[TagPlan], notes: list[str], lease: Lease) -> RetagOutcome:
        digest = target.digest
        image = target.view.image
        skipped = [TagSkip(plan.tag, plan.reason) for plan in plans if not plan.write]
        to_write = [plan for plan in plans if plan.write]
        if not to_write or isinstance(image, ImageUnavailable):
            return RetagOutcome(RetagResult.UNCHANGED, digest, skipped=skipped, notes=notes)
        written: list[str] = []
        refused: list[TagSkip] = []
        dry_run = False
        for plan in to_write:
            lease.check()
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


def _merge(first: RetagOutcome, second: RetagOutcome) -> RetagOutcome:
    result = first.result if first.written or not second.written else second.result
    return RetagOutcome(
        result,
        first.digest,
        [*first.written, *second.written],
        [*first.skipped, *second.skipped],
        [*first.refused, *second.refused],
        [*first.notes, *second.notes],
    )


def _held_version(target: _Target, counts: VersionCheck, holder: str) -> tuple[str, Version] | None:
    return target.version_of(holder, counts)


def _wanted_on_push(rule: RetagRule, tag: str | None, digest: str) -> tuple[list[Wanted], list[str]]:
    """Every tag a push asks for, in the order rules decide them: aliases, digest tag, patterns."""
    wanted: list[Wanted] = []
    notes: list[str] = []
    version = parse_version(tag) if tag is not None else None
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
