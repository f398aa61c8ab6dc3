"""Who owns a protected tag: the digest of its earliest push, whatever order the events arrive in.

EventBridge delivers at least once and in no particular order, so the first event *delivered* is not
the first push. A claim records the push's own time (the event's ``time``, whole seconds) and an
earlier push that arrives late takes the claim over. Within one second, ECR's ``imagePushedAt`` of the
two images decides when both images first arrived in that second; otherwise the claim made first stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from ecr_automation.logic.ports import ClaimLedger, Registry
from ecr_automation.models.domain import Claim, RepositoryRef
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.rules import GuardRule, Rules


def is_guarded(rule: GuardRule | None, tag: str | None) -> bool:
    """True when ``tag`` is protected; the guard's own quarantine tags never are."""
    if rule is None or tag is None or rule.is_quarantine_tag(tag):
        return False
    return rule.is_protected(tag)


@dataclass(frozen=True)
class Settlement:
    """The owner of a tag after one push was weighed against the ledger."""

    claim: Claim | None  # None: the push predates an operator's release of the tag
    created: bool = False
    previous: Claim | None = None  # the claim this push took over (it came from a later push)
    released_at: datetime | None = None

    def owned_by(self, digest: str) -> bool:
        return self.claim is not None and self.claim.digest == digest


class Ownership:
    def __init__(self, ledger: ClaimLedger, registry: Registry) -> None:
        self._ledger = ledger
        self._registry = registry

    def settle(
        self,
        repository: RepositoryRef,
        tag: str,
        digest: str,
        pushed_at: datetime,
        event_id: str,
        *,
        hand_over: bool,
    ) -> Settlement:
        """The owner after weighing this push; with ``hand_over`` an earlier push takes the claim over.

        Only the guard hands over, under the tag's lease, because it makes the registry agree at once.
        """
        attempt = self._ledger.claim(repository, tag, digest, pushed_at, event_id)
        claim = attempt.claim
        if claim is None:
            return Settlement(None, released_at=attempt.released_at)
        if claim.digest != digest and claim.released_at is not None and pushed_at < claim.released_at:
            return Settlement(None, released_at=claim.released_at)  # from before the release: no say now
        if claim.digest == digest:
            if pushed_at < claim.pushed_at:  # an earlier push of the same image: the claim dates from it
                claim = self._ledger.date_back(claim, pushed_at)
            return Settlement(claim, created=attempt.created)
        if not hand_over or not self._pushed_earlier(repository, digest, pushed_at, claim):
            return Settlement(claim, created=attempt.created)
        return Settlement(self._ledger.hand_over(claim, digest, pushed_at, event_id), previous=claim)

    def _pushed_earlier(self, repository: RepositoryRef, digest: str, pushed_at: datetime, claim: Claim) -> bool:
        if pushed_at != claim.pushed_at:
            return pushed_at < claim.pushed_at
        # Same second: ECR's imagePushedAt can tell, but only for images that both first arrived in that
        # second (an older image tagged now carries its original push time, which says nothing here).
        first = self._registry.first_pushed(repository, [digest, claim.digest])
        mine, theirs = first.get(digest), first.get(claim.digest)
        second = math.floor(pushed_at.timestamp())
        if mine is None or theirs is None:
            return False
        if math.floor(mine.timestamp()) != second or math.floor(theirs.timestamp()) != second:
            return False
        return mine < theirs


class ClaimAcceptance:
    """Retag's answer to "may I act on this push?": the same ownership the guard enforces."""

    def __init__(self, rules: Rules, ownership: Ownership) -> None:
        self._rules = rules
        self._ownership = ownership

    def accepts(self, event: ImageActionEvent) -> bool:
        detail = event.detail
        if not is_guarded(self._rules.guard_for(detail.repository_name), detail.image_tag):
            return True
        repository = RepositoryRef(event.account, event.region, detail.repository_name)
        tag = detail.image_tag or ""
        # An earlier push than the claim's is not accepted yet: the guard hands the tag over to it, and
        # the PUSH event of the guard's own revert brings it back here, accepted.
        settlement = self._ownership.settle(repository, tag, detail.image_digest, event.time, event.id, hand_over=False)
        return settlement.owned_by(detail.image_digest)
