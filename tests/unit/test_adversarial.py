"""Adversarial review of the tag guard and retag: the orderings, duplicates, losses and failures real AWS produces.

Every test plays a history in the registry first (what really happened, in push-time order), then
delivers the events ECR emitted for it in some other order, possibly twice, possibly never, and
with calls failing mid-way. The guarantees checked are the ones ``docs/design.md`` claims:

- a protected tag ends on the digest of its earliest push, whatever the delivery order;
- the registry agrees with the claim, and a quarantined image never keeps the tag or aliases;
- exactly one violation is published per incident, never zero for a real violation, even when a
  call fails and Lambda retries the event.

Tests that fail here document real bugs (see the docstring of each).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ecr_automation.adapters.ledger import ClaimChangedError, LeaseTimeoutError
from ecr_automation.config import ConfigurationError
from ecr_automation.logic.guard import ATTRIBUTED_DETAIL_TYPE, VIOLATION_DETAIL_TYPE, GuardResult, TagGuard, release
from ecr_automation.logic.ownership import ClaimAcceptance, Ownership
from ecr_automation.logic.retag import Retagger, RetagResult
from ecr_automation.models.domain import USER_AGENT_MARKER, RepositoryRef, ViolationKey, ViolationState
from ecr_automation.models.events.cloudtrail import ApiCallEvent
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.models.events.scans import ImageScanEvent
from ecr_automation.models.parsing import EventRejected, parse_event
from ecr_automation.rules import GuardRule, PromoteRule, RetagRule, Rules, parse_rules
from tests.support import builders
from tests.support.fakes import FakeLedger, FakePublisher, FakeRegistry

REPO = RepositoryRef("123456789012", "us-east-1", "team/web")
GUARD = GuardRule(mutable=["^latest$"])
RULES = Rules(guard=[GUARD], retag=[RetagRule(digest_tag="sha-{short_digest}")])
T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
TAG = "v1.2.3"
MALLORY = "arn:aws:iam::123456789012:user/mallory"
ALICE = "arn:aws:iam::123456789012:user/alice"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def action(kind: str, tag: str | None, digest: str, event_id: str, time: datetime, **detail: Any) -> ImageActionEvent:
    event = builders.image_action(kind, tag, digest, event_id=event_id, repository=REPO.name)
    event["time"] = time.isoformat().replace("+00:00", "Z")
    event["detail"].update(detail)
    return ImageActionEvent.model_validate(event)


def quarantine(digest: str) -> str:
    return GUARD.quarantine_tag_for(digest)


class World:
    """The registry, the ledger and the bus, with the guard and retag deployed on them.

    ``clock`` is the guard's: by default every event is delivered within the minute it happened.
    """

    def __init__(self, *, refuse_moves: bool = False, rules: Rules = RULES, now: float = 30) -> None:
        self.registry = FakeRegistry(refuse_moves=refuse_moves)
        self.ledger = FakeLedger()
        self.publisher = FakePublisher()
        self.now = at(now)
        self.rules = rules
        self.guard = TagGuard(rules, self.registry, self.ledger, self.publisher, clock=lambda: self.now)
        acceptance = ClaimAcceptance(rules, Ownership(self.ledger, self.registry))
        self.retagger = Retagger(rules, self.registry, self.ledger, acceptance)

    def image(self, seed: str, *tags: str, pushed_at: datetime | None = None) -> str:
        return self.registry.add_image(REPO, seed, *tags, pushed_at=pushed_at)

    def tag(self, tag: str) -> str | None:
        return self.registry.tags.get((REPO, tag))

    def tags_on(self, digest: str) -> set[str]:
        return self.registry.tags_on(REPO, digest)

    def claim(self, tag: str = TAG) -> str | None:
        claim = self.ledger.current_claim(REPO, tag)
        return claim.digest if claim else None

    def violations(self) -> list[dict[str, Any]]:
        return [detail for kind, detail in self.publisher.published if kind == VIOLATION_DETAIL_TYPE]

    def retry(self, handle: Callable[[ImageActionEvent], Any], event: ImageActionEvent, attempts: int = 3) -> Any:
        """Lambda's retries of one event: a ClaimChangedError is meant to be retried."""
        for _ in range(attempts - 1):
            try:
                return handle(event)
            except ClaimChangedError:
                continue
        return handle(event)


def run_or_defer(world: World, event: ImageActionEvent, deferred: list[ImageActionEvent]) -> None:
    """Run another invocation now; one the tag's lease keeps waiting is retried by Lambda afterwards."""
    try:
        world.guard.handle(event)
    except LeaseTimeoutError:
        deferred.append(event)


def api_call(event_name: str, tag: str, digest: str, actor: str, user_agent: str = "aws-cli/2.15") -> ApiCallEvent:
    if event_name == "PutImage":
        request: dict[str, Any] = {"repositoryName": REPO.name, "imageTag": tag}
        response: dict[str, Any] = {
            "image": {"repositoryName": REPO.name, "imageId": {"imageDigest": digest, "imageTag": tag}}
        }
    else:
        request = {"repositoryName": REPO.name, "imageIds": [{"imageTag": tag}]}
        response = {"imageIds": [{"imageDigest": digest, "imageTag": tag}], "failures": []}
    return ApiCallEvent.model_validate(
        {
            "version": "0",
            "id": f"ct-{event_name}-{actor}-{digest[-6:]}",
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.ecr",
            "account": REPO.registry_id,
            "time": "2026-11-28T12:05:00Z",
            "region": REPO.region,
            "resources": [],
            "detail": {
                "eventName": event_name,
                "eventSource": "ecr.amazonaws.com",
                "eventTime": "2026-11-28T12:00:00Z",
                "userIdentity": {"type": "IAMUser", "arn": actor},
                "userAgent": user_agent,
                "requestParameters": request,
                "responseElements": response,
            },
        }
    )


# --- delivery orders: every permutation, with duplicates -----------------------------------------

TWO_PUSH_ORDERS = [
    ["a", "b"],
    ["b", "a"],
    ["a", "b", "a"],
    ["b", "a", "b"],
    ["b", "b", "a"],
    ["a", "a", "b", "b"],
    ["b", "a", "a", "b"],
]


@pytest.mark.parametrize("order", TWO_PUSH_ORDERS, ids=["-".join(order) for order in TWO_PUSH_ORDERS])
def test_two_pushes_of_one_tag_end_on_the_first_in_any_order_with_duplicates(order: list[str]) -> None:
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    b = world.image("b", TAG, pushed_at=at(10))  # b moved the tag; a stays, untagged
    events = {"a": action("PUSH", TAG, a, "e-a", at(0)), "b": action("PUSH", TAG, b, "e-b", at(10))}

    for name in order:
        world.guard.handle(events[name])

    assert world.claim() == a
    assert world.tag(TAG) == a
    assert world.tag(quarantine(b)) == b
    assert quarantine(a) not in world.tags_on(a)
    (violation,) = world.violations()
    assert (violation["claimed-digest"], violation["offending-digest"]) == (a, b)


@pytest.mark.parametrize("order", list(itertools.permutations("abc")), ids="".join)
def test_three_pushes_of_one_tag_end_on_the_first_in_any_order(order: tuple[str, ...]) -> None:
    world = World()
    digests = {name: world.image(name, TAG, pushed_at=at(10 * index)) for index, name in enumerate("abc")}
    events = {
        name: action("PUSH", TAG, digest, f"e-{name}", at(10 * i)) for i, (name, digest) in enumerate(digests.items())
    }

    for name in order:
        world.guard.handle(events[name])
    for name in order:  # and every event once more, as EventBridge may
        world.guard.handle(events[name])

    a, b, c = digests.values()
    assert world.claim() == a and world.tag(TAG) == a
    assert world.tag(quarantine(b)) == b and world.tag(quarantine(c)) == c
    assert quarantine(a) not in world.tags_on(a)
    # One incident per image pushed over the tag: b and c, each reported once.
    assert sorted(v["offending-digest"] for v in world.violations()) == sorted([b, c])


PUSH_DELETE_ORDERS = [["p", "d"], ["d", "p"], ["d", "p", "d"], ["p", "d", "p"], ["d", "d", "p", "p"]]


@pytest.mark.parametrize("order", PUSH_DELETE_ORDERS, ids=["-".join(order) for order in PUSH_DELETE_ORDERS])
def test_push_then_delete_restores_in_any_order_and_alerts_once(order: list[str]) -> None:
    world = World()
    a = world.image("a", TAG, "sha-keep", pushed_at=at(0))
    world.registry.untag(REPO, TAG, reason="by hand")  # deleted at t=10; a keeps its other tag
    events = {"p": action("PUSH", TAG, a, "e-p", at(0)), "d": action("DELETE", TAG, a, "e-d", at(10))}

    for name in order:
        world.guard.handle(events[name])

    assert world.claim() == a and world.tag(TAG) == a
    (violation,) = world.violations()
    assert violation["change"] == "deleted"


@pytest.mark.parametrize("order", list(itertools.permutations(["pa", "pb", "db"])), ids="-".join)
def test_a_move_whose_tag_is_then_deleted_is_reported_in_every_order(order: tuple[str, ...]) -> None:
    """BUG (silent move): a pushed v1.2.3 at t0, b pushed over it at t10, then v1.2.3 deleted from b
    at t20 (its only tag, so ECR deletes b). Delivered pa, db, pb: the DELETE names b, a non-owner,
    so ``_on_delete`` restores a silently ("the move before it was the violation"); then b's PUSH finds
    the tag already back and b gone (nothing to quarantine), so ``_enforce`` sees nothing acted and a
    NEW record: no alert. b's move over a protected tag is never reported.
    """
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    b = world.image("b", TAG, pushed_at=at(10))
    world.registry.untag(REPO, TAG, reason="by hand")  # b's only tag: b is gone
    events = {
        "pa": action("PUSH", TAG, a, "e-pa", at(0)),
        "pb": action("PUSH", TAG, b, "e-pb", at(10)),
        "db": action("DELETE", TAG, b, "e-db", at(20)),
    }

    for name in order:
        world.retry(world.guard.handle, events[name])

    assert world.claim() == a and world.tag(TAG) == a
    assert any(v["offending-digest"] == b for v in world.violations()), "b's move over v1.2.3 was never reported"


def test_a_delete_from_a_non_owner_whose_push_event_was_lost_is_still_reported() -> None:
    """BUG (silent move): ECR emits best effort. If b's PUSH over a's v1.2.3 is lost, the DELETE of the
    tag from b is the only evidence that b ever held it; ``_on_delete`` (guard.py, the
    ``event.detail.image_digest != claim.digest`` branch) restores a and publishes nothing.
    """
    world = World()
    a = world.image("a", TAG, "sha-keep", pushed_at=at(0))
    b = world.image("b", TAG, "nightly", pushed_at=at(10))
    world.registry.untag(REPO, TAG, reason="by hand")  # removed from b at t20, b keeps "nightly"
    world.guard.handle(action("PUSH", TAG, a, "e-pa", at(0)))

    outcome = world.guard.handle(action("DELETE", TAG, b, "e-db", at(20)))

    assert outcome.result is GuardResult.RESTORED and world.tag(TAG) == a
    assert [v["offending-digest"] for v in world.violations()] == [b]


# --- same digest, several pushes -----------------------------------------------------------------


def test_an_earlier_push_of_the_claimed_digest_dates_the_claim_back() -> None:
    """BUG (impostor wins with every event delivered): a pushed v1.2.3 at t0, c moved it at t3, CI pushed a
    again at t5. Delivered: a@t5, a@t0, c@t3. a@t5 claims with pushed_at=t5; a@t0 finds the claim on a
    already and ``Ownership.settle`` (ownership.py: ``if claim.digest == digest ...: return``) leaves
    pushed_at at t5; then c@t3 looks earlier than the claim and takes the tag: the impostor owns v1.2.3
    and a, the real release, is quarantined.
    """
    world = World()
    a = world.image("a", pushed_at=at(0))
    c = world.image("c", pushed_at=at(3))
    world.registry.tags[(REPO, TAG)] = a  # final state: a re-pushed at t5 holds the tag
    repush, first, move = (
        action("PUSH", TAG, a, "e-a5", at(5)),
        action("PUSH", TAG, a, "e-a0", at(0)),
        action("PUSH", TAG, c, "e-c3", at(3)),
    )

    for event in (repush, first, move):
        world.guard.handle(event)

    assert world.claim() == a
    assert world.tag(TAG) == a
    assert quarantine(a) not in world.tags_on(a)
    assert [v["offending-digest"] for v in world.violations()] == [c]


def test_an_owner_vindicated_by_a_late_event_is_not_left_quarantined() -> None:
    """BUG (release blocked forever): same history (a@t0, c@t3, a@t5), delivered a@t5, c@t3, a@t0. c@t3 takes
    the claim provisionally and quarantines a; a@t0 then takes it back and quarantines c. The tag ends
    right, but a keeps ``quarantine-<a>`` for good, and retag refuses every image holding its quarantine
    tag (retag.py ``_decide_and_apply``): the real release never gets aliases or promotion tags.
    """
    world = World()
    a = world.image("a", pushed_at=at(0))
    c = world.image("c", pushed_at=at(3))
    world.registry.tags[(REPO, TAG)] = a
    for event in (
        action("PUSH", TAG, a, "e-a5", at(5)),
        action("PUSH", TAG, c, "e-c3", at(3)),
        action("PUSH", TAG, a, "e-a0", at(0)),
    ):
        world.guard.handle(event)

    assert world.claim() == a and world.tag(TAG) == a
    assert quarantine(a) not in world.tags_on(a), "the owner still carries its quarantine tag"


def test_a_repush_of_the_owner_by_another_event_changes_nothing() -> None:
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-1", at(0)))
    outcome = world.guard.handle(action("PUSH", TAG, a, "e-2", at(20)))
    assert outcome.result is GuardResult.UNCHANGED
    assert world.registry.writes == [] and world.violations() == []


def test_the_same_impostor_moving_the_tag_again_later_is_a_new_incident() -> None:
    """GAP: a violation key is (moved, tag, offending digest, owner), so once b's first move is closed, b
    pushed over v1.2.3 again an hour later is reverted silently: ``_enforce`` finds the record CLOSED
    and never alerts, although this invocation had to write (the tag was on b again).
    """
    world = World(now=3700)
    a = world.image("a", TAG, pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    b = world.image("b", TAG, pushed_at=at(10))
    world.guard.handle(action("PUSH", TAG, b, "e-b1", at(10)))
    assert world.tag(TAG) == a and len(world.violations()) == 1

    world.registry.tags[(REPO, TAG)] = b  # b pushed over v1.2.3 again, an hour later
    outcome = world.guard.handle(action("PUSH", TAG, b, "e-b2", at(3600)))

    assert outcome.result is GuardResult.REVERTED and world.tag(TAG) == a
    assert len(world.violations()) == 2, "the second move was reverted without a word"


# --- failures mid-way, then Lambda's retry of the same event ---------------------------------------


def fail_once(world: World, error: Exception) -> None:
    world.publisher.fail_with = error


def test_retry_of_a_move_whose_publish_failed_alerts_once() -> None:
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    b = world.image("b", TAG, pushed_at=at(10))
    move = action("PUSH", TAG, b, "e-b", at(10))
    fail_once(world, RuntimeError("PutEvents throttled"))
    with pytest.raises(RuntimeError):
        world.guard.handle(move)
    world.publisher.fail_with = None

    world.guard.handle(move)
    world.guard.handle(move)

    assert world.tag(TAG) == a and len(world.violations()) == 1


def test_retry_of_a_delete_whose_publish_failed_still_alerts() -> None:
    """BUG (alert lost): a delete is restored, then PutEvents fails and Lambda retries the DELETE. The retry
    finds the tag back on its owner and returns ALREADY_RESTORED at once (guard.py ``_on_delete``:
    ``if current == claim.digest``) without looking at the violation it recorded as PENDING: the
    deletion is never announced. design.md promises "a crash before the alert alerts on the event's retry".
    """
    world = World()
    a = world.image("a", TAG, "sha-keep", pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    world.registry.untag(REPO, TAG, reason="by hand")
    delete = action("DELETE", TAG, a, "e-d", at(10))
    fail_once(world, RuntimeError("PutEvents throttled"))
    with pytest.raises(RuntimeError):
        world.guard.handle(delete)
    assert world.tag(TAG) == a
    world.publisher.fail_with = None

    world.guard.handle(delete)

    assert len(world.violations()) == 1


def test_retry_of_a_push_that_restored_after_an_early_delete_still_alerts() -> None:
    """BUG (alert lost): the DELETE arrives before its PUSH; the PUSH restores the tag and PutEvents fails.
    The retry of the PUSH reads the registry (``deleted_after`` is set), finds the tag on the owner
    and returns UNCHANGED (guard.py ``_on_push``, ``if current == pushed``): no alert, ever.
    """
    world = World()
    a = world.image("a", TAG, "sha-keep", pushed_at=at(0))
    world.registry.untag(REPO, TAG, reason="by hand")
    world.guard.handle(action("DELETE", TAG, a, "e-d", at(10)))
    push = action("PUSH", TAG, a, "e-p", at(0))
    fail_once(world, RuntimeError("PutEvents throttled"))
    with pytest.raises(RuntimeError):
        world.guard.handle(push)
    assert world.tag(TAG) == a
    world.publisher.fail_with = None

    world.guard.handle(push)

    assert len(world.violations()) == 1


def test_retry_of_a_late_push_that_restored_still_alerts() -> None:
    """BUG (alert lost): the same for a PUSH delivered late (>60 s) whose tag was deleted meanwhile."""
    world = World(now=120)
    a = world.image("a", "sha-keep", pushed_at=at(0))
    push = action("PUSH", TAG, a, "e-p", at(0))
    fail_once(world, RuntimeError("PutEvents throttled"))
    with pytest.raises(RuntimeError):
        world.guard.handle(push)
    assert world.tag(TAG) == a
    world.publisher.fail_with = None
    world.now = at(240)

    world.guard.handle(push)

    assert len(world.violations()) == 1


def test_retry_of_a_hand_over_whose_publish_failed_still_alerts() -> None:
    """BUG (alert lost): b@t10 claimed first; a@t0 arrives, takes the claim over, reverts, then PutEvents
    fails. The hand-over stored a's event id on the claim, so the retry of a's event takes the
    "claimed for this very push" shortcut (guard.py ``_on_push``: ``claim.event_id == event.id``), or,
    when late, finds the tag right: UNCHANGED, and the recorded violation is never published.
    """
    world = World(now=35)
    b = world.image("b", TAG, pushed_at=at(10))
    a = world.image("a", pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, b, "e-b", at(10)))
    late_a = action("PUSH", TAG, a, "e-a", at(0))
    fail_once(world, RuntimeError("PutEvents throttled"))
    with pytest.raises(RuntimeError):
        world.guard.handle(late_a)
    world.publisher.fail_with = None
    world.now = at(100)  # Lambda retries about a minute later

    world.guard.handle(late_a)

    assert world.tag(TAG) == a
    assert len(world.violations()) == 1


def test_a_hand_over_whose_put_image_was_throttled_is_completed_by_the_retry() -> None:
    """BUG (impostor keeps the tag): b@t10 claimed first; a@t0 arrives and takes the claim over, then PutImage
    of v1.2.3 onto a is throttled and raises. Lambda retries a's event: the claim already names a with
    a's event id, so the guard returns at the "claimed for this very push" shortcut (guard.py
    ``_on_push``) and never touches the registry. v1.2.3 stays on b for good, nothing is reported.
    """
    world = World(now=35)
    b = world.image("b", TAG, pushed_at=at(10))
    a = world.image("a", pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, b, "e-b", at(10)))
    late_a = action("PUSH", TAG, a, "e-a", at(0))
    world.registry.fail_tags[TAG] = RuntimeError("ThrottlingException")
    with pytest.raises(RuntimeError):
        world.guard.handle(late_a)
    del world.registry.fail_tags[TAG]

    world.guard.handle(late_a)

    assert world.claim() == a
    assert world.tag(TAG) == a, "the retry left the protected tag on the later push"
    assert world.tag(quarantine(b)) == b
    assert len(world.violations()) == 1


def test_a_throttled_untag_in_an_immutable_repository_is_completed_by_the_retry() -> None:
    world = World(refuse_moves=True)
    a = world.image("a", TAG, "sha-keep", pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    world.registry.untag(REPO, TAG, reason="by hand")
    b = world.image("b", TAG, pushed_at=at(10))
    move = action("PUSH", TAG, b, "e-b", at(10))
    real_untag = world.registry.untag
    calls = {"n": 0}

    def throttled_once(repository: RepositoryRef, tag: str, *, reason: str) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("ThrottlingException: BatchDeleteImage")
        real_untag(repository, tag, reason=reason)

    world.registry.untag = throttled_once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.guard.handle(move)
    assert world.tag(quarantine(b)) == b  # kept before the failed untag

    outcome = world.guard.handle(move)

    assert outcome.result is GuardResult.REVERTED
    assert world.tag(TAG) == a and world.tags_on(b) == {quarantine(b)}
    assert len(world.violations()) == 1


def test_a_quarantine_put_image_raising_still_reverts_and_reports_the_error() -> None:
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    b = world.image("b", TAG, pushed_at=at(10))
    world.registry.fail_tags[quarantine(b)] = RuntimeError("ThrottlingException")

    world.guard.handle(action("PUSH", TAG, b, "e-b", at(10)))
    world.guard.handle(action("PUSH", TAG, b, "e-b", at(10)))

    assert world.tag(TAG) == a
    (violation,) = world.violations()
    assert violation["quarantine-error"] == "RuntimeError: ThrottlingException"


def test_the_invocation_that_won_the_alert_and_crashed_alerts_on_its_retry() -> None:
    """BUG (alert lost): two events see one move. b's invocation records it (NEW); a's re-push invocation
    then finds it TAKEN, undoes the move, wins ``claim_alert`` and crashes in PutEvents. b's invocation
    goes on, finds nothing left to do and, not having acted, stays quiet. Lambda retries a's event:
    ``record_violation`` answers TAKEN again (the record's ``event_id`` is b's; ``alerting`` = a's event
    is not looked at), nothing is left to undo, so nobody ever publishes the violation.
    """
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    b = world.image("b", TAG, pushed_at=at(10))
    repush_of_a = action("PUSH", TAG, a, "e-a-again", at(20))

    deferred: list[ImageActionEvent] = []

    def other_invocation(key: ViolationKey, state: ViolationState) -> None:
        del key
        if state is ViolationState.NEW:
            world.ledger.after_record = None
            world.publisher.fail_with = RuntimeError("PutEvents throttled")
            try:
                world.guard.handle(repush_of_a)
            except LeaseTimeoutError:
                deferred.append(repush_of_a)
            except RuntimeError:
                pass  # crashed in PutEvents, as intended
            world.publisher.fail_with = None

    world.ledger.after_record = other_invocation
    world.guard.handle(action("PUSH", TAG, b, "e-b", at(10)))
    for event in deferred:
        world.guard.handle(event)
    world.guard.handle(repush_of_a)  # Lambda's retry of the crashed invocation

    assert world.tag(TAG) == a
    assert len(world.violations()) == 1


# --- concurrent invocations: a decision made on a claim that changed meanwhile ----------------------


def test_an_invocation_never_writes_for_a_claim_that_was_handed_over_meanwhile() -> None:
    """BUG (tag ends on a quarantined later push): a@t0, b@t10, c@t20 pushed over one another. c is
    delivered and claims; then b's and a's events are handled at the same time. b's invocation hands the
    claim over from c to b and, before it writes, a's invocation hands it over from b to a, puts v1.2.3
    on a and quarantines b. b's invocation then carries on with the claim it read (``_enforce`` ->
    ``_make_registry_agree`` writes for ``claim`` without re-reading it) and moves v1.2.3 onto b.
    Final: claim a, tag on b (which also holds its quarantine tag), nobody left to fix it.
    """
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    b = world.image("b", TAG, pushed_at=at(10))
    c = world.image("c", TAG, pushed_at=at(20))
    world.guard.handle(action("PUSH", TAG, c, "e-c", at(20)))
    late_a = action("PUSH", TAG, a, "e-a", at(0))

    deferred: list[ImageActionEvent] = []

    def a_runs_now(key: ViolationKey, state: ViolationState) -> None:
        del state
        if key.offending_digest == c:  # b's invocation, between recording and writing
            world.ledger.after_record = None
            run_or_defer(world, late_a, deferred)

    world.ledger.after_record = a_runs_now
    world.retry(world.guard.handle, action("PUSH", TAG, b, "e-b", at(10)))
    for event in deferred:
        world.retry(world.guard.handle, event)

    assert world.claim() == a
    assert world.tag(TAG) == a, "v1.2.3 was moved onto b after a had been handed the claim"


def test_two_invocations_of_one_incident_interleaved_alert_once() -> None:
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    b = world.image("b", TAG, pushed_at=at(10))
    move = action("PUSH", TAG, b, "e-b", at(10))
    dup = action("PUSH", TAG, b, "e-b-dup", at(10))  # the same change, another event id (re-emitted)

    deferred: list[ImageActionEvent] = []

    def other(key: ViolationKey, state: ViolationState) -> None:
        del key
        if state is ViolationState.NEW:
            world.ledger.after_record = None
            run_or_defer(world, dup, deferred)

    world.ledger.after_record = other
    world.guard.handle(move)
    for event in deferred:
        world.guard.handle(event)

    assert world.tag(TAG) == a and world.tag(quarantine(b)) == b
    assert len(world.violations()) == 1


# --- the guard's own writes coming back ----------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations(["echo-untag", "echo-put", "echo-q", "e-b", "e-a"])))
def test_immutable_hand_over_echoes_in_any_order_change_nothing(order: tuple[str, ...]) -> None:
    world = World(refuse_moves=True)
    a = world.image("a", "sha-keep", pushed_at=at(0))
    b = world.image("b", TAG, pushed_at=at(30))
    world.guard.handle(action("PUSH", TAG, b, "e-b", at(30)))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))  # hands over, untags b, puts a back
    assert world.tag(TAG) == a and world.tags_on(b) == {quarantine(b)}
    writes = list(world.registry.writes)
    events = {
        "echo-untag": action("DELETE", TAG, b, "echo-untag", at(31)),
        "echo-put": action("PUSH", TAG, a, "echo-put", at(31)),
        "echo-q": action("PUSH", quarantine(b), b, "echo-q", at(31)),
        "e-b": action("PUSH", TAG, b, "e-b", at(30)),
        "e-a": action("PUSH", TAG, a, "e-a", at(0)),
    }

    for name in order:
        world.guard.handle(events[name])

    assert world.registry.writes == writes
    assert world.tag(TAG) == a
    assert len(world.violations()) == 1


# --- retag and the guard on the same events -------------------------------------------------------


def test_retag_handing_over_first_does_not_stop_the_guard_from_reverting() -> None:
    """BUG (impostor keeps the tag, no alert): both functions receive every ECR event. b@t10 (over a@t0) is
    delivered first; then a's event, which retag happens to handle before the guard. Retag's
    ``ClaimAcceptance`` hands the claim over to a *with a's event id*; retag finds v1.2.3 still on b
    and derives nothing. The guard then sees a claim on a made by this very event and, delivered on
    time, takes the shortcut (guard.py ``_on_push``: ``claim.event_id == event.id and ... not late``):
    UNCHANGED. v1.2.3 stays on b, b is not quarantined, nothing is reported.
    """
    world = World()
    a = world.image("a", pushed_at=at(0))
    b = world.image("b", TAG, pushed_at=at(10))
    push_a, push_b = action("PUSH", TAG, a, "e-a", at(0)), action("PUSH", TAG, b, "e-b", at(10))
    world.guard.handle(push_b)
    world.retagger.handle(push_b)

    world.retagger.handle(push_a)
    guarded = world.guard.handle(push_a)

    assert world.claim() == a
    assert guarded.result is GuardResult.HANDED_OVER, f"guard said {guarded.result}"
    assert world.tag(TAG) == a
    assert world.tag(quarantine(b)) == b
    assert len(world.violations()) == 1


def test_guard_first_then_retag_leaves_no_alias_on_the_quarantined_image() -> None:
    world = World()
    a = world.image("a", pushed_at=at(0))
    b = world.image("b", TAG, pushed_at=at(10))
    push_a, push_b = action("PUSH", TAG, a, "e-a", at(0)), action("PUSH", TAG, b, "e-b", at(10))
    world.retagger.handle(push_b)  # retag saw b first: v1.2, v1, latest went to b
    world.guard.handle(push_b)
    assert {"v1.2", "v1", "latest"} <= world.tags_on(b)

    world.guard.handle(push_a)  # hands over, reverts, quarantines b
    world.retagger.handle(push_a)
    world.retagger.handle(action("PUSH", TAG, a, "echo-revert", at(31)))  # the guard's PutImage, echoed
    world.retagger.handle(action("PUSH", quarantine(b), b, "echo-q", at(31)))

    assert world.tag(TAG) == a
    for alias in ("v1.2", "v1", "latest"):
        assert world.tag(alias) == a, alias
    assert world.tags_on(b) & {"v1.2", "v1", "latest"} == set()


def test_aliases_follow_releases_delivered_backwards_and_twice() -> None:
    world = World()
    digests = {
        version: world.image(version, version, pushed_at=at(index * 10))
        for index, version in enumerate(["v1.2.3", "v1.2.4", "v1.3.0", "v2.0.0-rc.1"])
    }
    events = [action("PUSH", v, d, f"e-{v}", at(i * 10)) for i, (v, d) in enumerate(digests.items())]
    for event in [*reversed(events), *events]:
        world.guard.handle(event)
        world.retagger.handle(event)

    assert world.tag("v1.2") == digests["v1.2.4"]
    assert world.tag("v1") == digests["v1.3.0"]
    assert world.tag("latest") == digests["v1.3.0"]  # a pre-release moves no stable alias
    assert world.violations() == []


def multi_arch_rules() -> Rules:
    return Rules(guard=[GUARD], retag=[RetagRule(promote=[PromoteRule(block_at="HIGH", tags=["scanned"])])])


def scan(digest: str, counts: dict[str, int], event_id: str) -> ImageScanEvent:
    detail = {
        "scan-status": "COMPLETE",
        "repository-name": REPO.name,
        "image-digest": digest,
        "image-tags": [],
        "finding-severity-counts": counts,
    }
    return ImageScanEvent.model_validate(builders.ecr_event("ECR Image Scan", detail, event_id=event_id))


@pytest.mark.parametrize("scans_first", [True, False], ids=["scans-before-index", "scans-after-index"])
def test_a_multi_arch_index_is_promoted_once_every_platform_is_clean(scans_first: bool) -> None:
    world = World(rules=multi_arch_rules())
    amd, arm = world.image("amd64"), world.image("arm64")
    index = world.registry.add_index(REPO, [(amd, "amd64"), (arm, "arm64")], attestations=[world.image("att")])
    world.registry.tags[(REPO, TAG)] = index
    push = action("PUSH", TAG, index, "e-index", at(0))
    scans = [scan(amd, {}, "s-amd"), scan(arm, {}, "s-arm")]

    steps: list[Any] = [*scans, push] if scans_first else [push, *scans]
    for step in steps:
        if isinstance(step, ImageScanEvent):
            world.registry.scans[step.detail.image_digest] = step.detail.finding_severity_counts
        world.retagger.handle(step)
        if isinstance(step, ImageActionEvent):
            world.guard.handle(step)

    assert world.tag("scanned") == index


def test_a_dirty_platform_blocks_the_index_and_a_quarantined_index_is_never_promoted() -> None:
    world = World(rules=multi_arch_rules())
    amd, arm = world.image("amd64"), world.image("arm64")
    index = world.registry.add_index(REPO, [(amd, "amd64"), (arm, "arm64")], TAG)
    world.retagger.handle(action("PUSH", TAG, index, "e-index", at(0)))
    world.registry.scans[amd] = world.registry.scans[arm] = scan(amd, {}, "x").detail.finding_severity_counts
    world.registry.scans[arm] = scan(arm, {"HIGH": 1}, "x").detail.finding_severity_counts
    assert world.retagger.handle(scan(arm, {"HIGH": 1}, "s-arm")).result is RetagResult.BLOCKED
    world.registry.tags[(REPO, quarantine(index))] = index
    world.registry.scans[arm] = world.registry.scans[amd]

    outcome = world.retagger.handle(scan(arm, {}, "s-arm-2"))

    assert outcome.result is RetagResult.REFUSED
    assert world.tag("scanned") is None


# --- release --------------------------------------------------------------------------------------


def test_a_push_made_just_after_a_release_in_the_same_second_claims_the_tag() -> None:
    """BUG (legit re-release left unguarded): ``guard release`` stores its wall-clock time with milliseconds
    (12:10:00.700); the operator's re-push 200 ms later is stamped by EventBridge with whole seconds
    (12:10:00), which compares *before* the release (ledger.py ``claim``: ``released_at < :pushed_at``;
    ownership.py ``pushed_at <= claim.released_at``). The re-release is STALE and claims nothing, so the
    tag stays unclaimed and the next push, whoever makes it, owns it.
    """
    world = World()
    lost = world.image("lost", pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, lost, "e-1", at(0)))
    world.registry.remove_image(REPO, lost)
    world.ledger.clock = lambda: at(600.7)
    release(world.ledger, REPO, TAG, reason="image lost, re-releasing", actor="ops")
    rebuilt = world.image("rebuilt", TAG, pushed_at=at(600.9))

    outcome = world.guard.handle(action("PUSH", TAG, rebuilt, "e-rebuilt", at(600)))

    assert outcome.result is GuardResult.CLAIMED, f"the re-release was {outcome.result}"
    assert world.claim() == rebuilt


def test_after_a_release_the_re_release_owns_the_tag_and_a_late_older_push_changes_nothing() -> None:
    world = World(now=1000)
    lost = world.image("lost", TAG, pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, lost, "e-1", at(0)))
    world.registry.remove_image(REPO, lost)
    world.ledger.clock = lambda: at(600)
    release(world.ledger, REPO, TAG, reason="re-release", actor="ops")
    rebuilt = world.image("rebuilt", TAG, pushed_at=at(700))
    stale = world.image("stale", pushed_at=at(300))
    world.guard.handle(action("PUSH", TAG, rebuilt, "e-new", at(700)))

    late = world.guard.handle(action("PUSH", TAG, stale, "e-old", at(300)))
    world.guard.handle(action("PUSH", TAG, lost, "e-1", at(0)))
    impostor = world.image("impostor", TAG, pushed_at=at(800))
    world.guard.handle(action("PUSH", TAG, impostor, "e-imp", at(800)))

    assert late.result is not GuardResult.HANDED_OVER
    assert world.claim() == rebuilt and world.tag(TAG) == rebuilt
    assert [v["offending-digest"] for v in world.violations()] == [impostor]


# --- CloudTrail attribution ------------------------------------------------------------------------


def test_the_guards_own_calls_in_an_immutable_revert_are_never_blamed() -> None:
    world = World(refuse_moves=True)
    a = world.image("a", TAG, "sha-keep", pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    world.registry.untag(REPO, TAG, reason="by hand")
    b = world.image("b", TAG, pushed_at=at(10))
    world.guard.handle(action("PUSH", TAG, b, "e-b", at(10)))
    ours = f"Boto3/1.35 md/Botocore#1.35 {USER_AGENT_MARKER}/1.0"

    for call in (
        api_call("BatchDeleteImage", TAG, b, "role/guard", ours),
        api_call("PutImage", TAG, a, "role/guard", ours),
        api_call("PutImage", quarantine(b), b, "role/guard", ours),
    ):
        assert world.guard.attribute(call) == []
    attributed = world.guard.attribute(api_call("PutImage", TAG, b, MALLORY))

    assert world.ledger.actors == {(REPO, "PUSH", TAG, b): MALLORY}
    (detail,) = attributed
    assert detail["actor"] == MALLORY


@pytest.mark.parametrize("cloudtrail_first", [True, False])
def test_the_pusher_of_an_image_over_a_deleted_protected_tag_is_named(cloudtrail_first: bool) -> None:
    """ORDER-DEPENDENT REPORT: in an IMMUTABLE repository alice deletes v1.2.3 (a keeps sha-keep) and mallory
    pushes b as v1.2.3. Delivered PUSH-b first, the guard reports "moved to b" and CloudTrail names
    mallory. Delivered DELETE first, the DELETE's enforcement reverts *and* quarantines b and reports only
    "deleted" (offending digest a); b's PUSH then finds everything undone and stays quiet, so mallory's
    PutImage is never attributed to anything: the one who put another image under a release is never named.
    """
    world = World(refuse_moves=True)
    a = world.image("a", TAG, "sha-keep", pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    world.registry.untag(REPO, TAG, reason="by alice")
    b = world.image("b", TAG, pushed_at=at(10))
    trail = api_call("PutImage", TAG, b, MALLORY)
    if cloudtrail_first:
        world.guard.attribute(trail)

    world.guard.handle(action("DELETE", TAG, a, "e-del", at(5)))
    world.guard.handle(action("PUSH", TAG, b, "e-b", at(10)))
    if not cloudtrail_first:
        world.guard.attribute(trail)

    assert world.tag(TAG) == a
    named = [detail["actor"] for _, detail in world.publisher.published if detail.get("offending-digest") == b]
    assert MALLORY in named, f"published: {[(kind, d['change'], d['actor']) for kind, d in world.publisher.published]}"
    assert all(kind in {VIOLATION_DETAIL_TYPE, ATTRIBUTED_DETAIL_TYPE} for kind, _ in world.publisher.published)


# --- bad input at the edge ------------------------------------------------------------------------


def test_an_event_time_without_a_zone_is_rejected_or_read_as_utc_never_a_crash() -> None:
    """BUG (crash instead of rejection): ``time`` without a zone (``2026-11-28T12:00:10``) parses to a naive
    datetime; the guard then compares it with the ledger's aware times (ownership.py ``_pushed_earlier``)
    or subtracts it from its clock (guard.py ``late = ...``) and raises TypeError on every retry, instead
    of being dead-lettered at once with a reason (design.md, "Bad input and failures").
    """
    world = World()
    a = world.image("a", TAG, pushed_at=at(0))
    world.guard.handle(action("PUSH", TAG, a, "e-a", at(0)))
    b = world.image("b", TAG, pushed_at=at(10))
    raw = builders.image_action("PUSH", TAG, b, event_id="e-naive", repository=REPO.name)
    raw["time"] = "2026-11-28T12:00:10"
    try:
        event = parse_event(raw, max_bytes=256 * 1024)
    except EventRejected:
        return  # rejected at the edge: fine
    assert isinstance(event, ImageActionEvent)
    outcome = world.guard.handle(event)
    assert outcome.result is GuardResult.REVERTED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image-tag", "v1.2.3+build.5"),  # ECR tags cannot hold '+'
        ("image-tag", "-v1.2.3"),
        ("image-tag", "v" * 129),
        ("image-tag", ""),
        ("image-digest", "sha256:" + "A" * 64),  # upper-case hex: ECR never reports it
        ("image-digest", "sha256:" + "a" * 63),
        ("image-digest", "sha512:" + "a" * 128),
        ("repository-name", "Team/Web"),
    ],
)
def test_values_ecr_cannot_produce_are_rejected_at_the_edge(field: str, value: str) -> None:
    raw = builders.image_action("PUSH", TAG, "sha256:" + "a" * 64, event_id="e-bad", repository=REPO.name)
    raw["detail"][field] = value
    with pytest.raises(EventRejected):
        parse_event(raw, max_bytes=256 * 1024)


@pytest.mark.parametrize(
    "text",
    [
        '[[guard]]\nquarantine_tag = "1.0.{short_digest}"\n',  # renders release tags
        '[[guard]]\nquarantine_tag = "q-{short_digest}-{short_digest}"\n',
        '[[guard]]\nquarantine_tag = "quarantined"\n',  # one tag for every image
        '[[guard]]\nquarantine_tag = "{short_digest}{short_digest}{short_digest}{short_digest}'
        '{short_digest}{short_digest}{short_digest}{short_digest}{short_digest}{short_digest}x"\n',
        '[[guard]]\nprotected = ["(a+)\\\\1"]\n',  # a backreference: RE2 refuses it
        '[[guard]]\non_violation = "ignore"\n',
        "[[guard]]\nrepositories = []\n",
        '[[guard]]\nprotcted = ["^v"]\n',  # a typo must not silently protect nothing
    ],
)
def test_rule_files_that_would_weaken_the_guard_are_refused(text: str) -> None:
    with pytest.raises((ConfigurationError, ValueError)):
        parse_rules(text)


def test_a_protect_everything_rule_still_never_protects_quarantine_tags() -> None:
    rules = parse_rules('[[guard]]\nprotected = [".*"]\n')
    world = World(rules=rules)
    a = world.image("a", "stable", pushed_at=at(0))
    world.guard.handle(action("PUSH", "stable", a, "e-a", at(0)))
    b = world.image("b", "stable", pushed_at=at(10))
    world.guard.handle(action("PUSH", "stable", b, "e-b", at(10)))
    guard_rule = rules.guard_for(REPO.name)
    assert guard_rule is not None
    q = guard_rule.quarantine_tag_for(b)
    outcome = world.guard.handle(action("PUSH", q, b, "echo-q", at(11)))
    assert outcome.result is GuardResult.NOT_PROTECTED
    assert world.tag("stable") == a and world.tag(q) == b
    assert len(world.violations()) == 1
