"""Tag guard: a protected tag belongs to the first digest that claimed it, for good.

Decisions are pure functions; ``guard_image_action`` applies them through the ports.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ecr_automation.adapters.ledger import Claim
from ecr_automation.logic.ports import Ledger, Publisher, Registry
from ecr_automation.models.domain import PutOutcome, RepositoryRef, short_digest
from ecr_automation.models.events import ApiCallEvent, ImageActionEvent, ImageActionType
from ecr_automation.rules import GuardRule, Rules

VIOLATION_DETAIL_TYPE = "Tag Guard Violation"
# Sent when CloudTrail names who caused a violation that was already announced without a name.
ATTRIBUTED_DETAIL_TYPE = "Tag Guard Violation Attributed"
UNKNOWN_ACTOR = "an unknown actor"
NATIVELY_IMMUTABLE = "IMMUTABLE"


class GuardResult(StrEnum):
    NOT_PROTECTED = "not_protected"
    LEFT_TO_ECR = "left_to_ecr"
    CLAIMED = "claimed"
    UNCHANGED = "unchanged"
    REVERTED = "reverted"
    RESTORED = "restored"
    ALREADY_RESTORED = "already_restored"
    UNRECOVERABLE = "unrecoverable"
    REFUSED = "refused"
    DRY_RUN = "dry_run"
    UNCLAIMED_DELETE = "unclaimed_delete"


@dataclass(frozen=True)
class Violation:
    """A protected tag moved (pushed to another digest) or deleted."""

    repository: RepositoryRef
    tag: str
    change: str  # "moved" or "deleted"
    claimed_digest: str
    offending_digest: str
    claimed_at: str
    event_id: str
    event_time: datetime
    handling: GuardResult
    quarantine_tag: str | None = None
    actor: str | None = None

    @property
    def critical(self) -> bool:
        return self.handling is GuardResult.UNRECOVERABLE

    def summary(self) -> str:
        """Who, what and when, in one line."""
        what = f"{self.repository.name}:{self.tag}"
        who_when = f"by {self.actor or UNKNOWN_ACTOR} at {self.event_time.isoformat()}"
        if self.change == "deleted":
            happened = f"{what} was deleted {who_when}"
        else:
            happened = f"{what} was moved to {short_digest(self.offending_digest)} {who_when}"
        if self.handling is GuardResult.UNRECOVERABLE:
            return f"{happened}; it cannot be restored: its claimed image {self.claimed_digest} no longer exists"
        return f"{happened}; {self.handling.value}, it belongs to {short_digest(self.claimed_digest)}"

    def as_event_detail(self) -> dict[str, Any]:
        return {
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


@dataclass(frozen=True)
class GuardOutcome:
    result: GuardResult
    tag: str | None = None
    violation: Violation | None = None
    notes: list[str] = field(default_factory=list)


def quarantine_tag_for(rule: GuardRule, digest: str) -> str:
    return rule.quarantine_tag.format(short_digest=short_digest(digest))


def is_guarded(rule: GuardRule | None, tag: str | None) -> bool:
    """True when ``tag`` is protected; the guard's own quarantine tags never are."""
    if rule is None or tag is None:
        return False
    quarantine_prefix = rule.quarantine_tag.split("{", 1)[0]
    if quarantine_prefix and tag.startswith(quarantine_prefix):
        return False
    return rule.is_protected(tag)


def push_is_accepted(event: ImageActionEvent, rules: Rules, ledger: Ledger) -> bool:
    """Whether other reactions may act on this push: False when it moves a protected tag.

    The claim is the same atomic first-wins write the guard makes, so the guard and every other
    function agree on the winner whichever of them sees the push first.
    """
    detail = event.detail
    if detail.image_tag is None or not is_guarded(rules.guard_for(detail.repository_name), detail.image_tag):
        return True
    repository = RepositoryRef(event.account, event.region, detail.repository_name)
    return ledger.claim(repository, detail.image_tag, detail.image_digest, event.id).digest == detail.image_digest


class TagGuard:
    def __init__(self, rules: Rules, registry: Registry, ledger: Ledger, publisher: Publisher) -> None:
        self._rules = rules
        self._registry = registry
        self._ledger = ledger
        self._publisher = publisher

    def handle(self, event: ImageActionEvent) -> GuardOutcome:
        detail = event.detail
        rule = self._rules.guard_for(detail.repository_name)
        tag = detail.image_tag
        repository = RepositoryRef(event.account, event.region, detail.repository_name)
        if rule is not None and tag is None and detail.known_action is ImageActionType.DELETE:
            return self._on_delete_by_digest(event, repository)
        if rule is None or tag is None or not is_guarded(rule, tag):
            return GuardOutcome(GuardResult.NOT_PROTECTED, tag)
        if self._registry.tag_mutability(repository) == NATIVELY_IMMUTABLE:
            return GuardOutcome(GuardResult.LEFT_TO_ECR, tag)
        if detail.known_action is ImageActionType.PUSH:
            return self._on_push(event, rule, repository, tag)
        if detail.known_action is ImageActionType.DELETE:
            return self._on_delete(event, repository, tag)
        return GuardOutcome(GuardResult.NOT_PROTECTED, tag, notes=[f"action {detail.action_type} moves no tag"])

    def _on_delete_by_digest(self, event: ImageActionEvent, repository: RepositoryRef) -> GuardOutcome:
        """An image deleted by digest takes every tag with it: each protected one it held is a violation."""
        deleted = event.detail.image_digest
        claimed_tags = [claim.tag for claim in self._ledger.claims(repository) if claim.digest == deleted]
        if not claimed_tags:
            return GuardOutcome(GuardResult.NOT_PROTECTED, None, notes=["the deleted image held no claimed tag"])
        if self._registry.tag_mutability(repository) == NATIVELY_IMMUTABLE:
            return GuardOutcome(GuardResult.LEFT_TO_ECR, None)
        outcomes = [self._on_delete(event, repository, tag) for tag in claimed_tags]
        worst = next((outcome for outcome in outcomes if outcome.violation is not None), outcomes[0])
        return GuardOutcome(worst.result, worst.tag, worst.violation, notes=[f"claimed tags deleted: {claimed_tags}"])

    def _on_push(self, event: ImageActionEvent, rule: GuardRule, repository: RepositoryRef, tag: str) -> GuardOutcome:
        pushed = event.detail.image_digest
        claim = self._ledger.claim(repository, tag, pushed, event.id)
        if claim.digest == pushed:
            return GuardOutcome(GuardResult.CLAIMED if claim.event_id == event.id else GuardResult.UNCHANGED, tag)

        claimed_image = self._registry.get_manifest(repository, claim.digest)
        if claimed_image is None:
            return self._report(event, claim, change="moved", handling=GuardResult.UNRECOVERABLE)

        quarantine_tag = None
        if rule.on_violation == "quarantine":
            offending_image = self._registry.get_manifest(repository, pushed)
            if offending_image is not None:
                quarantine_tag = quarantine_tag_for(rule, pushed)
                self._registry.put_tag(
                    offending_image, quarantine_tag, reason=f"pushed over protected {tag}", kind="image_quarantined"
                )
        outcome = self._registry.put_tag(claimed_image, tag, reason=f"{tag} is protected", kind="tag_reverted")
        # "delete" never takes other tags down with the offending image: only an untagged one goes.
        if (
            rule.on_violation == "delete"
            and outcome is PutOutcome.WRITTEN
            and not self._registry.tags_of_digest(repository, pushed)
        ):
            self._registry.delete_image(repository, pushed, reason=f"pushed over protected {tag}")
        handling = _handling(outcome, GuardResult.REVERTED)
        return self._report(event, claim, change="moved", handling=handling, quarantine_tag=quarantine_tag)

    def _on_delete(self, event: ImageActionEvent, repository: RepositoryRef, tag: str) -> GuardOutcome:
        claim = self._ledger.current_claim(repository, tag)
        if claim is None:
            return GuardOutcome(GuardResult.UNCLAIMED_DELETE, tag, notes=["tag was never claimed: run guard backfill"])
        if self._registry.digest_of_tag(repository, tag) == claim.digest:
            return GuardOutcome(GuardResult.ALREADY_RESTORED, tag)
        claimed_image = self._registry.get_manifest(repository, claim.digest)
        if claimed_image is None:
            return self._report(event, claim, change="deleted", handling=GuardResult.UNRECOVERABLE)
        outcome = self._registry.put_tag(claimed_image, tag, reason=f"{tag} is protected", kind="tag_restored")
        return self._report(event, claim, change="deleted", handling=_handling(outcome, GuardResult.RESTORED))

    def _report(
        self,
        event: ImageActionEvent,
        claim: Claim,
        *,
        change: str,
        handling: GuardResult,
        quarantine_tag: str | None = None,
    ) -> GuardOutcome:
        violation = Violation(
            repository=claim.repository,
            tag=claim.tag,
            change=change,
            claimed_digest=claim.digest,
            offending_digest=event.detail.image_digest,
            claimed_at=claim.claimed_at,
            event_id=event.id,
            event_time=event.time,
            handling=handling,
            quarantine_tag=quarantine_tag,
            actor=self._ledger.actor_of(claim.repository, claim.tag, event.detail.image_digest),
        )
        detail = violation.as_event_detail()
        # One alert per violating event, however often EventBridge delivers or replays it.
        if self._ledger.record_violation(claim.repository, claim.tag, violation.offending_digest, event.id, detail):
            self._publisher.publish(VIOLATION_DETAIL_TYPE, detail, [claim.repository.arn])
            self._ledger.mark_violation_alerted(claim.repository, claim.tag, violation.offending_digest, event.id)
        return GuardOutcome(handling, claim.tag, violation)

    def attribute(self, event: ApiCallEvent) -> list[dict[str, Any]]:
        """Name the principal behind tag changes CloudTrail reports; re-announce violations that lacked one."""
        actor = event.detail.user_identity.name
        attributed = []
        for repository_name, tag, digest in event.detail.tag_changes():
            if not is_guarded(self._rules.guard_for(repository_name), tag):
                continue
            repository = RepositoryRef(event.account, event.region, repository_name)
            for announced in self._ledger.record_actor(repository, tag, digest, actor):
                detail = {**announced, "actor": actor, "summary": announced["summary"].replace(UNKNOWN_ACTOR, actor, 1)}
                self._publisher.publish(ATTRIBUTED_DETAIL_TYPE, detail, [repository.arn])
                attributed.append(detail)
        return attributed


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
    repository: RepositoryRef, rule: GuardRule | None, registry: Registry, ledger: Ledger, *, run_id: str | None = None
) -> BackfillReport:
    """Claim every protected tag a repository holds today, so tags pushed before deployment are guarded.

    A tag whose ledger claim names another digest is reported as a conflict and left alone: the
    ledger is the authority, and the next push or delete of that tag brings it back.
    """
    report = BackfillReport(repository.name)
    backfill_id = f"backfill:{run_id or uuid.uuid4()}"
    for tag, digest in registry.tagged_images(repository):
        if not is_guarded(rule, tag):
            continue
        claim = ledger.claim(repository, tag, digest, backfill_id)
        if claim.digest != digest:
            report.conflicts.append(f"{tag}: registry has {digest}, ledger has {claim.digest}")
        elif claim.event_id == backfill_id:
            report.claimed.append(tag)
        else:
            report.already_claimed.append(tag)
    return report
