"""Tag guard: a protected tag belongs to the digest of its earliest push, for good.

Every decision is made from the ledger (who owns the tag) and from what the registry holds now, never
from the order events arrive in, so late, duplicated and reordered deliveries all end in the same state.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from ecr_automation.logic.ownership import Ownership, Settlement, is_guarded
from ecr_automation.logic.ports import ClaimLedger, LeaseLedger, Publisher, Registry, ViolationLedger
from ecr_automation.models.domain import (
    USER_AGENT_MARKER,
    Claim,
    ImageManifest,
    ImageUnavailable,
    PutOutcome,
    RepositoryRef,
    ViolationKey,
    ViolationState,
    short_digest,
)
from ecr_automation.models.events.cloudtrail import ApiCallEvent
from ecr_automation.models.events.image_action import ImageActionEvent, ImageActionType
from ecr_automation.rules import GuardRule, Rules

VIOLATION_DETAIL_TYPE = "Tag Guard Violation"
# Sent when CloudTrail names who caused a violation that was already announced without a name.
ATTRIBUTED_DETAIL_TYPE = "Tag Guard Violation Attributed"
UNKNOWN_ACTOR = "an unknown actor"
MOVED, DELETED = "moved", "deleted"
ACTION_OF_API_CALL = {"PutImage": "PUSH", "BatchDeleteImage": "DELETE"}
# Every change the guard makes to a protected tag is made under this tag's lease (`lock#tag#<tag>`).
TAG_LEASE_PREFIX = "tag#"
# A push delivered later than this after it happened is checked against the registry before it is trusted.
LATE_DELIVERY = timedelta(seconds=60)


class GuardLedger(ClaimLedger, ViolationLedger, LeaseLedger, Protocol):
    pass


class GuardResult(StrEnum):
    NOT_PROTECTED = "not_protected"
    CLAIMED = "claimed"
    UNCHANGED = "unchanged"
    HANDED_OVER = "handed_over"  # an earlier push arrived late and took the tag back
    REVERTED = "reverted"
    RESTORED = "restored"
    ALREADY_RESTORED = "already_restored"
    UNRECOVERABLE = "unrecoverable"
    REFUSED = "refused"
    DRY_RUN = "dry_run"
    UNCLAIMED_DELETE = "unclaimed_delete"
    STALE = "stale"  # the push predates an operator's release of the tag
    MIRRORED = "mirrored"  # a pull-through cache followed its upstream: reported, not reverted


@dataclass(frozen=True)
class Violation:
    """A protected tag moved (pushed to another digest) or deleted."""

    repository: RepositoryRef
    tag: str
    change: str  # MOVED or DELETED
    claimed_digest: str
    offending_digest: str
    claimed_at: str
    event_id: str
    event_time: datetime
    handling: GuardResult
    quarantine_tag: str | None = None
    actor: str | None = None
    unavailable: ImageUnavailable | None = None
    quarantine_error: str | None = None

    @property
    def critical(self) -> bool:
        return self.handling in {GuardResult.UNRECOVERABLE, GuardResult.REFUSED}

    def summary(self) -> str:
        """Who, what and when, in one line."""
        what = f"{self.repository.name}:{self.tag}"
        who_when = f"by {self.actor or UNKNOWN_ACTOR} at {self.event_time.isoformat()}"
        if self.change == DELETED:
            happened = f"{what} was deleted {who_when}"
        else:
            happened = f"{what} was moved to {short_digest(self.offending_digest)} {who_when}"
        owner = short_digest(self.claimed_digest)
        if self.unavailable is ImageUnavailable.ARCHIVED:
            return (
                f"{happened}; it cannot be put back yet: its image {owner} is archived "
                "(restore it to STANDARD and the guard puts the tag back)"
            )
        if self.handling is GuardResult.UNRECOVERABLE:
            return f"{happened}; it cannot be restored: its claimed image {self.claimed_digest} no longer exists"
        if self.handling is GuardResult.REFUSED:
            return f"{happened}; ECR refused to put it back on {owner}"
        if self.handling is GuardResult.MIRRORED:
            return f"{happened}; a pull-through cache followed its upstream: reported, not reverted"
        return f"{happened}; {self.handling.value}, it belongs to {owner}"

    def as_event_detail(self) -> dict[str, Any]:
        detail = {
            "severity": "CRITICAL" if self.critical else "HIGH",
            "summary": self.summary(),
            "registry-id": self.repository.registry_id,
            "region": self.repository.region,
            "repository-name": self.repository.name,
            "image-tag": self.tag,
            "change": self.change,
            "claimed-digest": self.claimed_digest,
            "claimed-at": self.claimed_at,
            "offending-digest": self.offending_digest,
            "handling": self.handling.value,
            "quarantine-tag": self.quarantine_tag,
            "actor": self.actor or "unknown",
            "source-event-id": self.event_id,
            "source-event-time": self.event_time.isoformat(),
        }
        if self.quarantine_error:
            detail["quarantine-error"] = self.quarantine_error
        return detail


@dataclass(frozen=True)
class GuardOutcome:
    result: GuardResult
    tag: str | None = None
    violation: Violation | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Quarantine:
    """What keeping an offending image took: its tag when kept, whether this call wrote it, or why not."""

    tag: str | None = None
    written: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Enforcement:
    """What making the registry agree with a claim took."""

    handling: GuardResult
    changed: bool = False
    quarantine_tag: str | None = None
    quarantine_error: str | None = None
    unavailable: ImageUnavailable | None = None


class TagGuard:
    def __init__(
        self,
        rules: Rules,
        registry: Registry,
        ledger: GuardLedger,
        publisher: Publisher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clock = clock
        self._rules = rules
        self._registry = registry
        self._ledger = ledger
        self._publisher = publisher
        self._ownership = Ownership(ledger, registry)

    def handle(self, event: ImageActionEvent) -> GuardOutcome:
        detail = event.detail
        rule = self._rules.guard_for(detail.repository_name)
        tag = detail.image_tag
        repository = RepositoryRef(event.account, event.region, detail.repository_name)
        action = detail.known_action
        if rule is None:
            return GuardOutcome(GuardResult.NOT_PROTECTED, tag)
        if action is ImageActionType.DELETE and tag is None:
            return self._on_delete_by_digest(event, rule, repository)
        if action is ImageActionType.UPDATE_STORAGE_CLASS:
            return self._on_storage_class(event, rule, repository)
        if tag is None or not is_guarded(rule, tag):
            return GuardOutcome(GuardResult.NOT_PROTECTED, tag)
        if action is ImageActionType.PUSH:
            return self._on_push(event, rule, repository, tag)
        return self._on_delete(event, rule, repository, tag)

    # -- pushes ------------------------------------------------------------------------------------
    def _on_push(self, event: ImageActionEvent, rule: GuardRule, repository: RepositoryRef, tag: str) -> GuardOutcome:
        """Claim, and where the registry may disagree with the claim, decide again and act under the tag's lease.

        The common case, a push claimed for itself and delivered promptly, takes one write and no lease.
        Every change the guard makes to a protected tag happens under that tag's lease, after reading
        the claim afresh, so two invocations can never act on different ideas of who owns the tag.
        """
        pushed = event.detail.image_digest
        settlement = self._ownership.settle(repository, tag, pushed, event.time, event.id, hand_over=False)
        claim = settlement.claim
        if claim is None:
            return _stale(tag, settlement)
        if claim.digest == pushed and claim.pending_violation is None:
            # Trusted as it stands only when claimed afresh for this very push, delivered promptly, with no
            # delete recorded against it; otherwise (a late push, a repeated one, a hand-over whose revert
            # may not have happened) checked against the registry.
            late = self._clock() - event.time > LATE_DELIVERY
            fresh = claim.event_id == event.id and claim.handed_over_from is None and claim.deleted_after is None
            if (fresh and not late) or self._registry.digest_of_tag(repository, tag) == pushed:
                return GuardOutcome(GuardResult.CLAIMED if settlement.created else GuardResult.UNCHANGED, tag)
        with self._ledger.hold(repository, TAG_LEASE_PREFIX + tag, owner=event.id):
            return self._settle_push(event, rule, repository, tag)

    def _settle_push(
        self, event: ImageActionEvent, rule: GuardRule, repository: RepositoryRef, tag: str
    ) -> GuardOutcome:
        pushed = event.detail.image_digest
        settlement = self._ownership.settle(repository, tag, pushed, event.time, event.id, hand_over=True)
        claim = settlement.claim
        if claim is None:
            return _stale(tag, settlement)
        if claim.digest != pushed:  # a later push over the owner's tag
            return self._enforce(event, rule, claim, suspect=pushed, change=MOVED, success=GuardResult.REVERTED)
        if settlement.previous is not None:  # the owner's push arrived after a later one had claimed
            note = f"claim handed over from {short_digest(settlement.previous.digest)}, pushed later"
            outcome = self._enforce(
                event, rule, claim, suspect=settlement.previous.digest, change=MOVED, success=GuardResult.HANDED_OVER
            )
            return GuardOutcome(outcome.result, tag, outcome.violation, [note, *outcome.notes])
        current = self._registry.digest_of_tag(repository, tag)
        if current == pushed:
            if claim.pending_violation is not None:
                return self._alert_owed(event, rule, claim)
            return GuardOutcome(GuardResult.CLAIMED if settlement.created else GuardResult.UNCHANGED, tag)
        change, success = (MOVED, GuardResult.REVERTED) if current else (DELETED, GuardResult.RESTORED)
        return self._enforce(event, rule, claim, suspect=current, change=change, success=success)

    # -- deletes -----------------------------------------------------------------------------------
    def _on_delete(self, event: ImageActionEvent, rule: GuardRule, repository: RepositoryRef, tag: str) -> GuardOutcome:
        claim = self._ledger.current_claim(repository, tag)
        if claim is None:
            deleted = event.detail.image_digest
            if self._ledger.record_unclaimed_delete(repository, tag, deleted, event.time, event.id):
                note = "no claim yet: remembered, so a late push of it is put back (else run guard backfill)"
                return GuardOutcome(GuardResult.UNCLAIMED_DELETE, tag, notes=[note])
        elif claim.pending_violation is None and self._registry.digest_of_tag(repository, tag) == claim.digest:
            return GuardOutcome(GuardResult.ALREADY_RESTORED, tag)
        with self._ledger.hold(repository, TAG_LEASE_PREFIX + tag, owner=event.id):
            return self._settle_delete(event, rule, repository, tag)

    def _settle_delete(
        self, event: ImageActionEvent, rule: GuardRule, repository: RepositoryRef, tag: str
    ) -> GuardOutcome:
        claim = self._ledger.current_claim(repository, tag)  # afresh: claimed meanwhile, or handed over
        if claim is None:
            return GuardOutcome(GuardResult.UNCLAIMED_DELETE, tag)
        current = self._registry.digest_of_tag(repository, tag)
        if current == claim.digest:
            if claim.pending_violation is not None:
                return self._alert_owed(event, rule, claim)
            return GuardOutcome(GuardResult.ALREADY_RESTORED, tag)
        if current is not None:
            # Deleted, and already pushed over by another image (all an IMMUTABLE repository lets anyone do):
            # one incident, the move, whichever of the two events arrives first.
            return self._enforce(event, rule, claim, suspect=current, change=MOVED, success=GuardResult.REVERTED)
        deleted = event.detail.image_digest
        if deleted != claim.digest:
            # Deleted from an image that had taken it over: that move is the violation (reported once,
            # whether its own PUSH event arrives before, after, or never).
            return self._enforce(
                event, rule, claim, suspect=None, change=MOVED, success=GuardResult.RESTORED, offending=deleted
            )
        return self._enforce(event, rule, claim, suspect=None, change=DELETED, success=GuardResult.RESTORED)

    def _on_delete_by_digest(self, event: ImageActionEvent, rule: GuardRule, repository: RepositoryRef) -> GuardOutcome:
        """An image deleted by digest takes every tag with it: each protected one it held is a violation."""
        deleted = event.detail.image_digest
        claims = [claim for claim in self._ledger.claims(repository) if claim.digest == deleted]
        if not claims:
            return GuardOutcome(GuardResult.NOT_PROTECTED, None, notes=["the deleted image held no claimed tag"])
        outcomes = []
        for claim in claims:
            with self._ledger.hold(repository, TAG_LEASE_PREFIX + claim.tag, owner=event.id):
                fresh = self._ledger.current_claim(repository, claim.tag)
                if fresh is not None and fresh.digest == deleted:
                    outcomes.append(
                        self._enforce(event, rule, fresh, suspect=None, change=DELETED, success=GuardResult.RESTORED)
                    )
        if not outcomes:
            return GuardOutcome(GuardResult.NOT_PROTECTED, None, notes=["the deleted image's claims moved on"])
        worst = next((outcome for outcome in outcomes if outcome.violation is not None), outcomes[0])
        tags = [claim.tag for claim in claims]
        return GuardOutcome(worst.result, worst.tag, worst.violation, notes=[f"claimed tags deleted: {tags}"])

    def _on_storage_class(self, event: ImageActionEvent, rule: GuardRule, repository: RepositoryRef) -> GuardOutcome:
        """An archived image restored to STANDARD gets back the protected tags it could not hold meanwhile."""
        if event.detail.target_storage_class != "STANDARD":
            return GuardOutcome(GuardResult.NOT_PROTECTED, None, notes=["archiving moves no tag"])
        restored = event.detail.image_digest
        put_back = []
        for claim in self._ledger.claims(repository):
            if claim.digest != restored or self._registry.digest_of_tag(repository, claim.tag) == restored:
                continue
            with self._ledger.hold(repository, TAG_LEASE_PREFIX + claim.tag, owner=event.id):
                fresh = self._ledger.current_claim(repository, claim.tag)
                holder = self._registry.digest_of_tag(repository, claim.tag)
                if fresh is None or fresh.digest != restored or holder == restored:
                    continue
                # Gone meanwhile, or held by an image pushed over it while archived: that one is kept aside.
                enforcement = self._make_registry_agree(rule, fresh, suspect=holder, success=GuardResult.RESTORED)
                if enforcement.changed:
                    put_back.append(claim.tag)
        result = GuardResult.RESTORED if put_back else GuardResult.UNCHANGED
        return GuardOutcome(result, None, notes=[f"tags put back after restore: {put_back}"] if put_back else [])

    # -- enforcing a claim -------------------------------------------------------------------------
    def _enforce(
        self,
        event: ImageActionEvent,
        rule: GuardRule,
        claim: Claim,
        *,
        suspect: str | None,
        change: str,
        success: GuardResult,
        offending: str | None = None,
        occurrence: str | None = None,
        owed: bool = False,
    ) -> GuardOutcome:
        """Make the registry agree with ``claim`` and report the violation once.

        The violation is recorded (and noted on the claim) before anything is changed, and closed after it
        is published: a crash in between leaves an alert owed, which the next look at the tag sends; of
        several invocations that undid parts of one incident exactly one alerts (a conditional write
        decides which); where the change had already been undone nothing new is said.
        """
        offending = offending or (suspect if change == MOVED and suspect else claim.digest)
        occurrence = occurrence or (claim.digest if change == MOVED else event.id)
        key = ViolationKey(claim.repository, change, claim.tag, offending, occurrence)
        state = self._ledger.record_violation(key, event.id)
        if self._rules.is_pull_through_cache(claim.repository.name):
            enforcement = self._follow_upstream(claim, suspect)
        else:
            enforcement = self._make_registry_agree(rule, claim, suspect=suspect, success=success)
        if state is ViolationState.CLOSED and enforcement.changed and event.detail.image_digest == offending:
            # The same image pushed over the same release again, after the first was undone: a new incident.
            key = replace(key, occurrence=f"{occurrence}#{event.id}")
            state = self._ledger.record_violation(key, event.id)
        acted = enforcement.changed or enforcement.handling in {
            GuardResult.UNRECOVERABLE,
            GuardResult.REFUSED,
            GuardResult.DRY_RUN,
            GuardResult.MIRRORED,
        }
        # Whoever undid the change (or found it cannot be undone) alerts; so does anyone finding an alert
        # owed, and the retry of an attempt that may have undone it before it died. One wins the alert.
        alerts = state is not ViolationState.CLOSED and (acted or owed or state is ViolationState.PENDING)
        if state is ViolationState.NEW and not acted and not owed:
            # Recorded, then found undone already (changes to a tag are serialised by its lease, so
            # nobody else is undoing it right now): nothing is owed.
            self._ledger.close_violation(key, None)
        if not alerts or not self._ledger.claim_alert(key, event.id):
            result = enforcement.handling if acted else GuardResult.ALREADY_RESTORED
            return GuardOutcome(result, claim.tag, notes=["already undone; reported once, elsewhere"])
        action = "DELETE" if change == DELETED else "PUSH"
        violation = Violation(
            repository=claim.repository,
            tag=claim.tag,
            change=change,
            claimed_digest=claim.digest,
            offending_digest=offending,
            claimed_at=claim.pushed_at.isoformat(),
            event_id=event.id,
            event_time=event.time,
            handling=enforcement.handling,
            quarantine_tag=enforcement.quarantine_tag,
            actor=self._ledger.actor_of(claim.repository, action, claim.tag, offending),
            unavailable=enforcement.unavailable,
            quarantine_error=enforcement.quarantine_error,
        )
        detail = violation.as_event_detail()
        self._publisher.publish(VIOLATION_DETAIL_TYPE, detail, [claim.repository.arn])
        self._ledger.close_violation(key, detail)
        return GuardOutcome(enforcement.handling, claim.tag, violation)

    def _alert_owed(self, event: ImageActionEvent, rule: GuardRule, claim: Claim) -> GuardOutcome:
        """A violation of this tag was recorded and its alert never sent (its attempt died): send it now."""
        pending = claim.pending_violation
        if pending is None:
            return GuardOutcome(GuardResult.UNCHANGED, claim.tag)
        suspect = pending.offending_digest if pending.change == MOVED else None
        success = GuardResult.REVERTED if pending.change == MOVED else GuardResult.RESTORED
        return self._enforce(
            event,
            rule,
            claim,
            suspect=suspect,
            change=pending.change,
            success=success,
            offending=pending.offending_digest,
            occurrence=pending.occurrence,
            owed=True,
        )

    def _make_registry_agree(
        self, rule: GuardRule, claim: Claim, *, suspect: str | None, success: GuardResult
    ) -> Enforcement:
        """Point the tag back at its owner, then keep the image that held it under a quarantine tag.

        The tag is put back first, so the protected tag never depends on the quarantine succeeding.
        Where ECR refuses to move a tag (IMMUTABLE, or an exclusion filter), the holder is kept under
        its quarantine tag, the protected tag is removed from it, and then put back on the owner.
        """
        repository, tag = claim.repository, claim.tag
        wanted = [claim.digest] + ([suspect] if suspect and suspect != claim.digest else [])
        images = self._registry.get_manifests(repository, wanted)
        owner = images[claim.digest]
        if isinstance(owner, ImageUnavailable):
            return Enforcement(GuardResult.UNRECOVERABLE, unavailable=owner)
        reason = f"{tag} is protected"
        quarantine: Quarantine | None = None
        outcome = self._registry.put_tag(owner, tag, reason=reason, kind=_put_kind(success))
        if outcome is PutOutcome.IMMUTABLE:
            holder = self._registry.digest_of_tag(repository, tag)
            if holder is not None and holder != claim.digest:
                if holder not in images:
                    images.update(self._registry.get_manifests(repository, [holder]))
                # Kept first: removing the holder's last tag would make ECR delete the image.
                quarantine = self._quarantine(rule, images[holder], tag)
                self._registry.untag(repository, tag, reason=f"{reason}: removed from {short_digest(holder)}")
                suspect = holder
            outcome = self._registry.put_tag(owner, tag, reason=reason, kind=_put_kind(success))
        if success is GuardResult.HANDED_OVER and outcome in {PutOutcome.WRITTEN, PutOutcome.ALREADY_THERE}:
            self._release_from_quarantine(rule, owner)
        if suspect and suspect != claim.digest and quarantine is None:
            if rule.on_violation == "quarantine":
                quarantine = self._quarantine(rule, images.get(suspect, ImageUnavailable.GONE), tag)
            elif outcome is PutOutcome.WRITTEN and not self._registry.tags_of_digests(repository, [suspect])[suspect]:
                # "delete" never takes other tags down with the offending image: only an untagged one goes.
                self._registry.delete_image(repository, suspect, reason=f"pushed over protected {tag}")
        quarantine = quarantine or Quarantine()
        return Enforcement(
            _handling(outcome, success),
            changed=outcome is PutOutcome.WRITTEN or quarantine.written,
            quarantine_tag=quarantine.tag,
            quarantine_error=quarantine.error,
        )

    def _release_from_quarantine(self, rule: GuardRule, owner: ImageManifest) -> None:
        """An owner proved right by a late event was quarantined meanwhile: it is a release again."""
        quarantine_tag = rule.quarantine_tag_for(owner.digest)
        if self._registry.digest_of_tag(owner.repository, quarantine_tag) == owner.digest:
            self._registry.untag(owner.repository, quarantine_tag, reason="owner of its tag after all")

    def _quarantine(self, rule: GuardRule, image: ImageManifest | ImageUnavailable, tag: str) -> Quarantine:
        """Keep the offending image under its quarantine tag; a failure is reported, never raised."""
        if isinstance(image, ImageUnavailable):
            return Quarantine(error=f"offending image {image.value}")
        quarantine_tag = rule.quarantine_tag_for(image.digest)
        try:
            outcome = self._registry.put_tag(
                image, quarantine_tag, reason=f"pushed over protected {tag}", kind="image_quarantined"
            )
        except Exception as error:  # the revert stands; the violation says what failed
            return Quarantine(error=f"{type(error).__name__}: {error}")
        if outcome is PutOutcome.IMMUTABLE:
            return Quarantine(error=f"ECR refused {quarantine_tag}")
        return Quarantine(quarantine_tag, written=outcome is PutOutcome.WRITTEN)

    def _follow_upstream(self, claim: Claim, current: str | None) -> Enforcement:
        """A pull-through cache mirrors its upstream, which may move tags: say so, never fight it."""
        if current is not None and current != claim.digest:
            self._ledger.hand_over(claim, current, self._clock(), f"upstream:{uuid.uuid4()}")
        return Enforcement(GuardResult.MIRRORED)

    # -- attribution -------------------------------------------------------------------------------
    def attribute(self, event: ApiCallEvent) -> list[dict[str, Any]]:
        """Name the principal behind tag changes CloudTrail reports; re-announce violations that lacked one.

        A delete is attributed to whoever called BatchDeleteImage, a move to whoever called PutImage,
        and this application's own calls (marked in their user agent) are never blamed for anything.
        """
        action = ACTION_OF_API_CALL.get(event.detail.event_name)
        if action is None or USER_AGENT_MARKER in (event.detail.user_agent or ""):
            return []
        actor = event.detail.user_identity.name
        attributed = []
        for repository_name, tag, digest in event.detail.tag_changes():
            if not is_guarded(self._rules.guard_for(repository_name), tag):
                continue
            repository = RepositoryRef(event.account, event.region, repository_name)
            for announced in self._ledger.record_actor(repository, action, tag, digest, actor):
                detail = {**announced, "actor": actor, "summary": announced["summary"].replace(UNKNOWN_ACTOR, actor, 1)}
                self._publisher.publish(ATTRIBUTED_DETAIL_TYPE, detail, [repository.arn])
                attributed.append(detail)
        return attributed


def _stale(tag: str, settlement: Settlement) -> GuardOutcome:
    released = settlement.released_at.isoformat() if settlement.released_at else "an earlier release"
    return GuardOutcome(GuardResult.STALE, tag, notes=[f"{tag} was released at {released}; this push is older"])


def _put_kind(success: GuardResult) -> str:
    return "tag_restored" if success is GuardResult.RESTORED else "tag_reverted"


def _handling(outcome: PutOutcome, success: GuardResult) -> GuardResult:
    if outcome is PutOutcome.DRY_RUN:
        return GuardResult.DRY_RUN
    if outcome is PutOutcome.IMMUTABLE:
        return GuardResult.REFUSED
    return success


@dataclass(frozen=True)
class BackfillReport:
    repository: str
    claimed: list[str] = field(default_factory=list)
    already_claimed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def backfill(
    repository: RepositoryRef,
    rule: GuardRule | None,
    registry: Registry,
    ledger: ClaimLedger,
    *,
    run_id: str | None = None,
) -> BackfillReport:
    """Claim every protected tag a repository holds today, so tags pushed before deployment are guarded.

    A claim is dated by ECR's ``imagePushedAt``. A tag whose ledger claim names another digest is
    reported as a conflict and left alone: the next push or delete of that tag brings it back.
    """
    report = BackfillReport(repository.name)
    backfill_id = f"backfill:{run_id or uuid.uuid4()}"
    for tag, digest, pushed_at in registry.tagged_images(repository):
        if not is_guarded(rule, tag):
            continue
        attempt = ledger.claim(repository, tag, digest, pushed_at or datetime.now(UTC), backfill_id)
        if attempt.claim is None:
            report.conflicts.append(f"{tag}: released; pushed before the release")
        elif attempt.claim.digest != digest:
            report.conflicts.append(f"{tag}: registry has {digest}, ledger has {attempt.claim.digest}")
        elif attempt.created:
            report.claimed.append(tag)
        else:
            report.already_claimed.append(tag)
    return report


def release(ledger: ClaimLedger, repository: RepositoryRef, tag: str, *, reason: str, actor: str) -> Claim | None:
    """An operator's deliberate release of a claim: the next push of the tag (after now) claims it afresh.

    For a legitimate re-release after a loss (the claimed image is gone), which would otherwise raise a
    CRITICAL violation on every push. Pushes dated before the release can never claim the tag again.
    """
    if not reason.strip():
        raise ValueError("a release needs a reason")
    return ledger.release(repository, tag, reason=reason, actor=actor)
