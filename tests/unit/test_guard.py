"""Tag guard decisions and workflow, on in-memory fakes of the registry, ledger and event bus."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ecr_automation.adapters.ledger import LeaseTimeoutError
from ecr_automation.logic.guard import (
    ATTRIBUTED_DETAIL_TYPE,
    VIOLATION_DETAIL_TYPE,
    GuardResult,
    TagGuard,
    backfill,
    release,
)
from ecr_automation.logic.ownership import ClaimAcceptance, Ownership, is_guarded
from ecr_automation.models.domain import USER_AGENT_MARKER, RepositoryRef, ViolationKey, ViolationState
from ecr_automation.models.events.cloudtrail import ApiCallEvent
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.rules import GuardRule, Rules, parse_rules
from tests.support import builders
from tests.support.fakes import FakeLedger, FakePublisher, FakeRegistry

REPO = RepositoryRef("123456789012", "us-east-1", "team/web")
RULES = Rules(guard=[GuardRule(mutable=["^latest$"])])
QUARANTINE = GuardRule()
T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
# The guard's clock: events dated up to a minute before it are delivered on time (not "late").
NOW = T0 + timedelta(seconds=30)
PULL_THROUGH = "ecr-public/library/nginx"  # matches the default pull-through cache globs


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def image_action(
    action: str,
    tag: str | None,
    digest: str,
    event_id: str = "e-1",
    *,
    time: datetime = T0,
    repository: str = REPO.name,
    **detail: Any,
) -> ImageActionEvent:
    event = builders.image_action(action, tag, digest, event_id=event_id, repository=repository)
    event["time"] = time.isoformat().replace("+00:00", "Z")
    event["detail"].update(detail)
    return ImageActionEvent.model_validate(event)


def violations(publisher: FakePublisher) -> list[dict[str, Any]]:
    return [detail for detail_type, detail in publisher.published if detail_type == VIOLATION_DETAIL_TYPE]


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def guard(registry: FakeRegistry, ledger: FakeLedger, publisher: FakePublisher) -> TagGuard:
    return TagGuard(RULES, registry, ledger, publisher, clock=lambda: NOW)


# --- what is protected ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "protected"),
    [
        ("1.2.3", True),
        ("v1.2.3", True),
        ("v1.2.3-rc.1", True),
        ("v1.2", False),
        ("v1", False),
        ("latest", False),
        ("v01.2.3", False),  # leading zeros are not semver
        ("main-abc1234", False),
        ("quarantine-0123456789ab", False),
    ],
)
def test_default_rule_protects_strict_semver_only(tag: str, protected: bool) -> None:
    assert is_guarded(GuardRule(), tag) is protected


def test_mutable_list_wins_over_protected_patterns() -> None:
    rule = GuardRule(protected=[".*"], mutable=["^latest$"])
    assert is_guarded(rule, "latest") is False
    assert is_guarded(rule, "stable") is True


def test_an_unguarded_repository_is_left_alone(registry: FakeRegistry, ledger: FakeLedger) -> None:
    guard = TagGuard(Rules(guard=[GuardRule(repositories=["other/*"])]), registry, ledger, FakePublisher())
    digest = registry.add_image(REPO, "release", "v1.2.3")
    assert guard.handle(image_action("PUSH", "v1.2.3", digest)).result is GuardResult.NOT_PROTECTED
    assert ledger.claims_by_tag == {}


# --- pushes -----------------------------------------------------------------------------------


def test_first_push_claims_the_tag_with_its_push_time(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger
) -> None:
    digest = registry.add_image(REPO, "release", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", digest, time=at(5)))

    assert outcome.result is GuardResult.CLAIMED
    claim = ledger.current_claim(REPO, "v1.2.3")
    assert claim is not None and claim.digest == digest and claim.pushed_at == at(5)
    assert registry.writes == []


def test_a_push_delivered_on_time_is_claimed_without_asking_the_registry(
    guard: TagGuard, registry: FakeRegistry
) -> None:
    digest = registry.add_image(REPO, "release", "v1.2.3")
    registry.calls.clear()

    outcome = guard.handle(image_action("PUSH", "v1.2.3", digest, time=at(0)))

    assert outcome.result is GuardResult.CLAIMED
    assert registry.calls == {}


def test_a_push_delivered_late_is_checked_against_the_registry(
    registry: FakeRegistry, ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given A's push, delivered two minutes after it happened, when its tag had been deleted meanwhile
    guard = TagGuard(RULES, registry, ledger, publisher, clock=lambda: at(120))
    owner = registry.add_image(REPO, "release", "sha-keep")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1", time=at(0)))

    # Then the claim is made and the tag put back
    assert outcome.result is GuardResult.RESTORED
    assert registry.tags[(REPO, "v1.2.3")] == owner
    assert len(violations(publisher)) == 1


def test_repush_of_same_digest_changes_nothing(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    digest = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", digest, "e-1"))

    outcome = guard.handle(image_action("PUSH", "v1.2.3", digest, "e-2"))

    assert outcome.result is GuardResult.UNCHANGED
    assert registry.writes == [] and publisher.published == []


def test_moving_a_protected_tag_is_reverted_and_quarantined(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    release_digest = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release_digest, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    assert outcome.result is GuardResult.REVERTED
    assert registry.tags[(REPO, "v1.2.3")] == release_digest
    quarantine = QUARANTINE.quarantine_tag_for(impostor)
    assert registry.tags[(REPO, quarantine)] == impostor
    # The tag is put back first: the revert never waits for the quarantine.
    assert [kind for kind, _, _ in registry.writes] == ["tag_reverted", "image_quarantined"]
    (detail,) = violations(publisher)
    assert detail["claimed-digest"] == release_digest
    assert detail["offending-digest"] == impostor
    assert detail["handling"] == "reverted"
    assert detail["quarantine-tag"] == quarantine
    assert detail["actor"] == "unknown"
    assert detail["severity"] == "HIGH"
    assert "quarantine-error" not in detail


def test_replayed_violation_changes_nothing_and_alerts_once(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    release_digest = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release_digest, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    move = image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60))
    guard.handle(move)
    writes_after_first = list(registry.writes)

    guard.handle(move)

    assert registry.writes == writes_after_first
    assert len(publisher.published) == 1


def test_a_crash_after_recording_alerts_on_the_retry_of_the_same_event(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher, ledger: FakeLedger
) -> None:
    # Given a move whose first attempt recorded the violation and reverted, but could not publish
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    move = image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60))
    publisher.fail_with = RuntimeError("EventBridge unavailable")
    with pytest.raises(RuntimeError):
        guard.handle(move)
    assert registry.tags[(REPO, "v1.2.3")] == owner

    # When Lambda retries the event
    publisher.fail_with = None
    outcome = guard.handle(move)

    # Then the violation is published then (PENDING), once
    assert outcome.result is GuardResult.REVERTED
    assert len(violations(publisher)) == 1
    assert ledger.published_violations() == [ViolationKey(REPO, "moved", "v1.2.3", impostor, owner)]


def test_the_guards_own_revert_push_is_a_no_op(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))
    writes = list(registry.writes)

    for tag, digest in [("v1.2.3", owner), (QUARANTINE.quarantine_tag_for(impostor), impostor)]:
        outcome = guard.handle(image_action("PUSH", tag, digest, f"echo-{tag}", time=at(61)))
        assert outcome.result in {GuardResult.UNCHANGED, GuardResult.NOT_PROTECTED}

    assert registry.writes == writes
    assert len(publisher.published) == 1


def test_claimed_image_gone_is_a_critical_violation_and_nothing_is_guessed(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    registry.remove_image(REPO, owner)
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    assert outcome.result is GuardResult.UNRECOVERABLE
    assert registry.writes == []
    assert registry.tags[(REPO, "v1.2.3")] == impostor
    (detail,) = violations(publisher)
    assert detail["severity"] == "CRITICAL"
    assert "cannot be restored" in detail["summary"]


# --- ownership by push time, whatever the delivery order ---------------------------------------


def test_a_later_push_delivered_first_loses_the_tag_to_the_earlier_one(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given A pushed v1.2.3 at 12:00:00 and B pushed it over A at 12:00:30 (a mutable repository)
    first = registry.add_image(REPO, "first", "v1.2.3")
    later = registry.add_image(REPO, "later", "v1.2.3")

    # When B's event is delivered before A's
    claimed = guard.handle(image_action("PUSH", "v1.2.3", later, "e-later", time=at(30)))
    outcome = guard.handle(image_action("PUSH", "v1.2.3", first, "e-first", time=at(0)))

    # Then A owns the tag, B is quarantined, and that is one violation
    assert claimed.result is GuardResult.CLAIMED
    assert outcome.result is GuardResult.HANDED_OVER
    claim = ledger.current_claim(REPO, "v1.2.3")
    assert claim is not None and claim.digest == first and claim.pushed_at == at(0)
    assert registry.tags[(REPO, "v1.2.3")] == first
    assert registry.tags[(REPO, QUARANTINE.quarantine_tag_for(later))] == later
    (detail,) = violations(publisher)
    assert (detail["claimed-digest"], detail["offending-digest"], detail["change"]) == (first, later, "moved")

    # And B's event, delivered again, changes and says nothing more
    writes = list(registry.writes)
    guard.handle(image_action("PUSH", "v1.2.3", later, "e-later", time=at(30)))
    assert registry.writes == writes
    assert len(violations(publisher)) == 1


def test_a_delete_delivered_before_its_push_still_ends_with_the_tag_restored(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    # Given A pushed v1.2.3 (retag gave it a digest tag too), then someone deleted v1.2.3
    owner = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    del registry.tags[(REPO, "v1.2.3")]

    # When the DELETE is delivered before the PUSH
    early_delete = guard.handle(image_action("DELETE", "v1.2.3", owner, "e-delete", time=at(10)))
    push = guard.handle(image_action("PUSH", "v1.2.3", owner, "e-push", time=at(0)))

    # Then the push claims the tag and, finding it gone, puts it back
    assert early_delete.result is GuardResult.UNCLAIMED_DELETE
    assert push.result is GuardResult.RESTORED
    assert registry.tags[(REPO, "v1.2.3")] == owner
    (detail,) = violations(publisher)
    assert detail["change"] == "deleted"


def test_a_same_second_tie_is_broken_by_ecrs_first_push_time(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger
) -> None:
    # Given two images that both first arrived in ECR within the second 12:00:00, A 100 ms before B
    first = registry.add_image(REPO, "first", pushed_at=at(0.1))
    later = registry.add_image(REPO, "later", "v1.2.3", pushed_at=at(0.2))

    # When B's push (same event second) is delivered first, then A's
    guard.handle(image_action("PUSH", "v1.2.3", later, "e-later", time=at(0)))
    outcome = guard.handle(image_action("PUSH", "v1.2.3", first, "e-first", time=at(0)))

    # Then imagePushedAt decides: A owns it
    assert outcome.result is GuardResult.HANDED_OVER
    assert ledger.current_claim(REPO, "v1.2.3").digest == first  # type: ignore[union-attr]
    assert registry.tags[(REPO, "v1.2.3")] == first


@pytest.mark.parametrize(
    "first_arrived",
    [at(-3600), None],  # an older image tagged now carries its old push time; or ECR no longer knows it
    ids=["older-image", "unknown"],
)
def test_a_same_second_tie_keeps_the_claim_when_ecr_cannot_tell(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger, first_arrived: datetime | None
) -> None:
    first = registry.add_image(REPO, "first", pushed_at=first_arrived or at(0.1))
    if first_arrived is None:
        del registry.pushed_at[(REPO, first)]
    later = registry.add_image(REPO, "later", "v1.2.3", pushed_at=at(0.2))
    guard.handle(image_action("PUSH", "v1.2.3", later, "e-later", time=at(0)))

    outcome = guard.handle(image_action("PUSH", "v1.2.3", first, "e-first", time=at(0)))

    assert ledger.current_claim(REPO, "v1.2.3").digest == later  # type: ignore[union-attr]
    assert outcome.result is GuardResult.REVERTED  # A's push is the one treated as the move
    assert registry.tags[(REPO, "v1.2.3")] == later


# --- deletes ----------------------------------------------------------------------------------


def test_deleted_protected_tag_is_restored(guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    del registry.tags[(REPO, "v1.2.3")]

    outcome = guard.handle(image_action("DELETE", "v1.2.3", owner, "e-2", time=at(60)))
    replay = guard.handle(image_action("DELETE", "v1.2.3", owner, "e-2", time=at(60)))

    assert outcome.result is GuardResult.RESTORED
    assert replay.result is GuardResult.ALREADY_RESTORED
    assert registry.tags[(REPO, "v1.2.3")] == owner
    (detail,) = violations(publisher)
    assert detail["change"] == "deleted"


def test_delete_of_an_unclaimed_tag_is_reported_not_guessed(guard: TagGuard, registry: FakeRegistry) -> None:
    digest = registry.add_image(REPO, "old", "v0.9.0")
    outcome = guard.handle(image_action("DELETE", "v0.9.0", digest))
    assert outcome.result is GuardResult.UNCLAIMED_DELETE
    assert registry.writes == []


def test_a_delete_from_a_non_owner_reports_the_move_it_shows_once(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    # Given A owns v1.2.3, B took it over (its PUSH event lost) and the tag was then deleted from B
    owner = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    impostor = registry.add_image(REPO, "impostor")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    del registry.tags[(REPO, "v1.2.3")]

    # When that DELETE (of the tag on B) is handled, and delivered again
    outcome = guard.handle(image_action("DELETE", "v1.2.3", impostor, "e-untag", time=at(60)))
    guard.handle(image_action("DELETE", "v1.2.3", impostor, "e-untag", time=at(60)))

    # Then the owner's tag is put back and B's move, the only evidence of which is this delete, reported once
    assert outcome.result is GuardResult.RESTORED
    assert registry.tags[(REPO, "v1.2.3")] == owner
    (violation,) = violations(publisher)
    assert (violation["change"], violation["offending-digest"]) == ("moved", impostor)


def test_the_guards_own_untag_of_a_reported_move_says_nothing_more(
    registry: FakeRegistry, ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given an IMMUTABLE repository where B's move was reverted and reported: the guard untagged B
    immutable = FakeRegistry(refuse_moves=True)
    guard = TagGuard(RULES, immutable, ledger, publisher, clock=lambda: at(0))
    owner = immutable.add_image(REPO, "release", "v1.2.3", "sha-keep")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    immutable.untag(REPO, "v1.2.3", reason="deleted")
    impostor = immutable.add_image(REPO, "impostor", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(10)))
    assert len(violations(publisher)) == 1

    # When the DELETE caused by the guard's own untag of B arrives
    outcome = guard.handle(image_action("DELETE", "v1.2.3", impostor, "e-untag", time=at(20)))

    # Then nothing more is said
    assert outcome.result is GuardResult.ALREADY_RESTORED
    assert len(violations(publisher)) == 1
    del registry


def test_an_image_deleted_by_digest_raises_a_critical_violation_per_claimed_tag(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3", "v1.2.3-rc.1", "latest")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    guard.handle(image_action("PUSH", "v1.2.3-rc.1", owner, "e-2"))
    registry.remove_image(REPO, owner)

    outcome = guard.handle(image_action("DELETE", None, owner, "e-3", time=at(60)))

    assert outcome.result is GuardResult.UNRECOVERABLE
    assert sorted(detail["image-tag"] for detail in violations(publisher)) == ["v1.2.3", "v1.2.3-rc.1"]
    assert {detail["severity"] for detail in violations(publisher)} == {"CRITICAL"}


def test_a_delete_by_digest_of_an_unclaimed_image_is_not_a_violation(guard: TagGuard, registry: FakeRegistry) -> None:
    digest = registry.add_image(REPO, "scratch")
    assert guard.handle(image_action("DELETE", None, digest)).result is GuardResult.NOT_PROTECTED


# --- repositories that refuse to move tags (IMMUTABLE, exclusion filters) -----------------------


def test_immutable_repository_push_delete_push_ends_on_the_first_image(
    ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given an IMMUTABLE repository where A pushed v1.2.3 and the guard claimed it
    registry = FakeRegistry(refuse_moves=True)
    guard = TagGuard(RULES, registry, ledger, publisher, clock=lambda: NOW)
    owner = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    assert guard.handle(image_action("PUSH", "v1.2.3", owner, "e-push-a", time=at(0))).result is GuardResult.CLAIMED

    # When someone deletes v1.2.3 and pushes B under it (ECR allows both), and both events arrive
    registry.untag(REPO, "v1.2.3", reason="by hand")
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    guard.handle(image_action("DELETE", "v1.2.3", owner, "e-delete", time=at(10)))
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-push-b", time=at(20)))

    # Then the tag is back on A, B is kept under its quarantine tag, and one violation was raised
    assert registry.tags[(REPO, "v1.2.3")] == owner
    assert registry.tags[(REPO, QUARANTINE.quarantine_tag_for(impostor))] == impostor
    assert len(violations(publisher)) == 1


def test_immutable_repository_push_then_delete_delivered_after_the_push_alerts_once(
    ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # The same history as above with the DELETE delivered last: the same single violation.
    registry = FakeRegistry(refuse_moves=True)
    guard = TagGuard(RULES, registry, ledger, publisher, clock=lambda: NOW)
    owner = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-push-a", time=at(0)))
    registry.untag(REPO, "v1.2.3", reason="by hand")
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    moved = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-push-b", time=at(20)))
    deleted = guard.handle(image_action("DELETE", "v1.2.3", owner, "e-delete", time=at(10)))

    assert moved.result is GuardResult.REVERTED
    assert deleted.result is GuardResult.ALREADY_RESTORED
    assert registry.tags[(REPO, "v1.2.3")] == owner
    assert registry.tags[(REPO, QUARANTINE.quarantine_tag_for(impostor))] == impostor
    assert [kind for kind, _, _ in registry.writes] == [
        "tag_deleted",
        "image_quarantined",
        "tag_deleted",
        "tag_reverted",
    ]
    assert len(violations(publisher)) == 1


def test_where_ecr_refuses_the_put_the_holder_is_quarantined_untagged_and_the_tag_put_back(
    ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given an exclusion filter that makes v1.2.3 immutable, and B holding it when A's push arrives
    registry = FakeRegistry(refuse_moves=True)
    guard = TagGuard(RULES, registry, ledger, publisher, clock=lambda: NOW)
    owner = registry.add_image(REPO, "release", "sha-keep")
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-b", time=at(30)))

    outcome = guard.handle(image_action("PUSH", "v1.2.3", owner, "e-a", time=at(0)))

    assert outcome.result is GuardResult.HANDED_OVER
    assert registry.tags[(REPO, "v1.2.3")] == owner
    assert registry.tags_on(REPO, impostor) == {QUARANTINE.quarantine_tag_for(impostor)}
    kinds = [(kind, tag) for kind, tag, _ in registry.writes]
    assert kinds == [
        ("image_quarantined", QUARANTINE.quarantine_tag_for(impostor)),
        ("tag_deleted", "v1.2.3"),
        ("tag_reverted", "v1.2.3"),
    ]
    (detail,) = violations(publisher)
    assert detail["handling"] == "handed_over"


def test_a_refusal_ecr_keeps_up_is_reported_not_crashed_on(
    registry: FakeRegistry, ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given a claim on A and B holding the tag, in a registry that refuses every write of v1.2.3
    guard = TagGuard(RULES, registry, ledger, publisher, clock=lambda: NOW)
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    registry.refuse_moves = True
    registry.untag = lambda *args, **kwargs: None  # type: ignore[method-assign]  # e.g. a delete denied by policy

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    assert outcome.result is GuardResult.REFUSED
    (detail,) = violations(publisher)
    assert detail["handling"] == "refused" and detail["severity"] == "CRITICAL"


# --- quarantine, delete mode, dry run ----------------------------------------------------------


def test_a_failed_quarantine_leaves_the_tag_reverted_and_names_the_failure(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    registry.fail_tags[QUARANTINE.quarantine_tag_for(impostor)] = RuntimeError("throttled")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    assert outcome.result is GuardResult.REVERTED
    assert registry.tags[(REPO, "v1.2.3")] == owner
    (detail,) = violations(publisher)
    assert detail["quarantine-tag"] is None
    assert detail["quarantine-error"] == "RuntimeError: throttled"


def test_dry_run_reports_without_changing(ledger: FakeLedger, publisher: FakePublisher) -> None:
    registry = FakeRegistry(dry_run=True)
    guard = TagGuard(RULES, registry, ledger, publisher, clock=lambda: NOW)
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    assert outcome.result is GuardResult.DRY_RUN
    assert registry.tags[(REPO, "v1.2.3")] == impostor
    assert violations(publisher)[0]["handling"] == "dry_run"


def test_delete_mode_removes_the_offending_image_only_when_left_untagged(
    ledger: FakeLedger, publisher: FakePublisher
) -> None:
    rules = parse_rules('[[guard]]\non_violation = "delete"\n')
    registry = FakeRegistry()
    guard = TagGuard(rules, registry, ledger, publisher, clock=lambda: NOW)
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    tagged_impostor = registry.add_image(REPO, "tagged", "nightly")

    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))
    registry.tags[(REPO, "v1.2.3")] = tagged_impostor
    guard.handle(image_action("PUSH", "v1.2.3", tagged_impostor, "e-3", time=at(90)))

    assert (REPO, impostor) not in registry.manifests
    assert (REPO, tagged_impostor) in registry.manifests  # it keeps "nightly": never taken down
    assert registry.tags[(REPO, "v1.2.3")] == owner


# --- violations are said once -----------------------------------------------------------------


def test_two_invocations_for_different_events_seeing_one_move_publish_one_violation(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given A owns v1.2.3 and B was pushed over it
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-a", time=at(0)))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    # A pushed again by CI (another event) and B's push are handled at the same time: A's invocation
    # starts while B's is between recording the violation and acting on it.
    repush_of_a = image_action("PUSH", "v1.2.3", owner, "e-a-again", time=at(50))
    interleaved: list[str] = []

    def run_the_other_invocation(key: ViolationKey, state: ViolationState) -> None:
        del key
        if state is ViolationState.NEW:
            try:
                guard.handle(repush_of_a)
            except LeaseTimeoutError:  # the tag's lease is B's: A's invocation waits, then Lambda retries it
                interleaved.append("waited")

    ledger.after_record = run_the_other_invocation

    # When B's event is handled, and then A's retried
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-b", time=at(60)))
    ledger.after_record = None
    retried = guard.handle(repush_of_a)

    # Then the changes to the tag were made one invocation at a time, the tag is back on A, and exactly
    # one violation was published
    assert interleaved == ["waited"]
    assert retried.result is GuardResult.UNCHANGED
    assert registry.tags[(REPO, "v1.2.3")] == owner
    assert len(violations(publisher)) == 1
    assert ledger.published_violations() == [ViolationKey(REPO, "moved", "v1.2.3", impostor, owner)]


def test_invocations_one_after_the_other_for_different_events_publish_one_violation(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-a", time=at(0)))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-a-retry", time=at(0)))  # a retry after a lost ack
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-b", time=at(60)))

    assert registry.tags[(REPO, "v1.2.3")] == owner
    assert len(violations(publisher)) == 1


# --- archived images ---------------------------------------------------------------------------


def test_an_archived_owner_is_a_violation_saying_so_not_a_crash(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    registry.archived.add(owner)
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    assert outcome.result is GuardResult.UNRECOVERABLE
    (detail,) = violations(publisher)
    assert "archived" in detail["summary"] and "restore it to STANDARD" in detail["summary"]


def test_restoring_an_archived_owner_puts_its_tags_back(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    registry.archived.add(owner)
    del registry.tags[(REPO, "v1.2.3")]
    guard.handle(image_action("DELETE", "v1.2.3", owner, "e-2", time=at(60)))
    assert (REPO, "v1.2.3") not in registry.tags

    registry.archived.discard(owner)
    outcome = guard.handle(
        image_action("UPDATE_STORAGE_CLASS", None, owner, "e-3", time=at(120), **{"target-storage-class": "STANDARD"})
    )

    assert outcome.result is GuardResult.RESTORED
    assert registry.tags[(REPO, "v1.2.3")] == owner
    assert len(violations(publisher)) == 1  # the restore itself is not a new violation


def test_restoring_an_archived_owner_quarantines_the_image_that_held_its_tag(
    guard: TagGuard, registry: FakeRegistry
) -> None:
    # Given A archived, and B pushed over A's v1.2.3 meanwhile (reported: A could not be read)
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    registry.archived.add(owner)
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    # When A is restored to STANDARD
    registry.archived.discard(owner)
    guard.handle(
        image_action("UPDATE_STORAGE_CLASS", None, owner, "e-3", time=at(120), **{"target-storage-class": "STANDARD"})
    )

    # Then A has its tag back, and B is kept under its quarantine tag as after any other revert
    assert registry.tags[(REPO, "v1.2.3")] == owner
    assert registry.tags.get((REPO, QUARANTINE.quarantine_tag_for(impostor))) == impostor


def test_archiving_moves_no_tag(guard: TagGuard, registry: FakeRegistry) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    outcome = guard.handle(
        image_action("UPDATE_STORAGE_CLASS", None, owner, "e-2", **{"target-storage-class": "ARCHIVE"})
    )
    assert outcome.result is GuardResult.NOT_PROTECTED and registry.writes == []


# --- release -----------------------------------------------------------------------------------


def test_a_released_tag_is_claimed_only_by_a_push_dated_after_the_release(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given v1.2.3 claimed by A, whose image was lost, and an operator's release at 12:10
    lost = registry.add_image(REPO, "lost")
    guard.handle(image_action("PUSH", "v1.2.3", lost, "e-1", time=at(0)))
    registry.remove_image(REPO, lost)
    ledger.clock = lambda: at(600)
    assert release(ledger, REPO, "v1.2.3", reason="image lost, re-releasing", actor="ops").digest == lost  # type: ignore[union-attr]
    rebuilt = registry.add_image(REPO, "rebuilt", "v1.2.3")
    stale = registry.add_image(REPO, "stale")

    # When a push dated before the release arrives late, then the re-release dated after it
    late = guard.handle(image_action("PUSH", "v1.2.3", stale, "e-late", time=at(300)))
    fresh = guard.handle(image_action("PUSH", "v1.2.3", rebuilt, "e-new", time=at(900)))

    # Then the late one is stale and changes nothing; the new one claims the tag afresh
    assert late.result is GuardResult.STALE
    assert fresh.result is GuardResult.CLAIMED
    assert ledger.current_claim(REPO, "v1.2.3").digest == rebuilt  # type: ignore[union-attr]
    assert registry.writes == [] and publisher.published == []


def test_a_push_dated_before_a_release_never_takes_the_tag_from_the_fresh_claim(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger
) -> None:
    # Given v1.2.3 released at 12:10 and claimed afresh by a push at 12:15
    lost = registry.add_image(REPO, "lost")
    guard.handle(image_action("PUSH", "v1.2.3", lost, "e-1", time=at(0)))
    registry.remove_image(REPO, lost)
    ledger.clock = lambda: at(600)
    release(ledger, REPO, "v1.2.3", reason="image lost, re-releasing", actor="ops")
    rebuilt = registry.add_image(REPO, "rebuilt", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", rebuilt, "e-new", time=at(900)))
    stale = registry.add_image(REPO, "stale")

    # When a push dated 12:05 (before the release) is delivered only now
    outcome = guard.handle(image_action("PUSH", "v1.2.3", stale, "e-late", time=at(300)))

    # Then it cannot claim the tag: the release said pushes before it never can
    assert outcome.result is not GuardResult.HANDED_OVER
    assert ledger.current_claim(REPO, "v1.2.3").digest == rebuilt  # type: ignore[union-attr]
    assert registry.tags[(REPO, "v1.2.3")] == rebuilt


def test_a_delete_after_a_release_does_not_forget_the_release(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger
) -> None:
    # Given v1.2.3 claimed by A at 12:00 and released at 12:10, and the tag then deleted from A
    owner = registry.add_image(REPO, "old", "v1.2.3", "sha-keep")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1", time=at(0)))
    ledger.clock = lambda: at(600)
    release(ledger, REPO, "v1.2.3", reason="re-releasing", actor="ops")
    del registry.tags[(REPO, "v1.2.3")]
    guard.handle(image_action("DELETE", "v1.2.3", owner, "e-delete", time=at(660)))

    # When A's original push (12:00, before the release) is delivered again
    outcome = guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1", time=at(0)))

    # Then it is stale: pushes dated before a release never claim the tag again
    assert outcome.result is GuardResult.STALE
    assert ledger.current_claim(REPO, "v1.2.3") is None


def test_a_release_needs_a_reason(ledger: FakeLedger) -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        release(ledger, REPO, "v1.2.3", reason=" ", actor="ops")


# --- pull-through cache ------------------------------------------------------------------------


def test_a_pull_through_cache_following_its_upstream_is_reported_not_reverted(
    ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given a pull-through cache repository whose cached v1.2.3 the guard claimed
    registry = FakeRegistry()
    guard = TagGuard(RULES, registry, ledger, publisher, clock=lambda: NOW)
    cache = RepositoryRef(REPO.registry_id, REPO.region, PULL_THROUGH)
    cached = registry.add_image(cache, "upstream-1", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", cached, "e-1", time=at(0), repository=PULL_THROUGH))

    # When the cache follows its upstream, which re-pushed v1.2.3
    moved = registry.add_image(cache, "upstream-2", "v1.2.3")
    outcome = guard.handle(image_action("PUSH", "v1.2.3", moved, "e-2", time=at(60), repository=PULL_THROUGH))

    # Then the move is reported as mirrored and left in place, and the claim follows upstream
    assert outcome.result is GuardResult.MIRRORED
    assert registry.tags[(cache, "v1.2.3")] == moved and registry.writes == []
    (detail,) = violations(publisher)
    assert detail["handling"] == "mirrored" and "pull-through cache" in detail["summary"]
    assert ledger.current_claim(cache, "v1.2.3").digest == moved  # type: ignore[union-attr]


# --- other reactions and backfill --------------------------------------------------------------


def test_other_reactions_see_a_rejected_push_as_not_accepted(registry: FakeRegistry, ledger: FakeLedger) -> None:
    acceptance = ClaimAcceptance(RULES, Ownership(ledger, registry))
    owner = registry.add_image(REPO, "release")
    impostor = registry.add_image(REPO, "impostor")
    assert acceptance.accepts(image_action("PUSH", "v1.2.3", owner, "e-1", time=at(0)))
    assert not acceptance.accepts(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))
    assert acceptance.accepts(image_action("PUSH", "latest", impostor, "e-3"))
    assert acceptance.accepts(image_action("PUSH", None, impostor, "e-4"))
    # an earlier push arriving late is not accepted yet: the guard hands the tag over to it (under the
    # tag's lease), and the PUSH event of its revert is accepted
    late_owner = image_action("PUSH", "v1.2.3", impostor, "e-5", time=at(-60))
    assert not acceptance.accepts(late_owner)
    assert ledger.current_claim(REPO, "v1.2.3").digest == owner  # type: ignore[union-attr]


def test_backfill_claims_protected_tags_by_first_push_and_reports_conflicts(
    registry: FakeRegistry, ledger: FakeLedger
) -> None:
    owner = registry.add_image(REPO, "release", "v1.0.0", "latest", pushed_at=at(-3600))
    other = registry.add_image(REPO, "other", "v1.1.0")
    ledger.claim(REPO, "v1.1.0", owner, at(-7200), "earlier")

    report = backfill(REPO, GuardRule(), registry, ledger, run_id="r-1")

    assert report.claimed == ["v1.0.0"]
    assert report.conflicts == [f"v1.1.0: registry has {other}, ledger has {owner}"]
    claim = ledger.current_claim(REPO, "v1.0.0")
    assert claim is not None and claim.pushed_at == at(-3600) and claim.event_id == "backfill:r-1"
    again = backfill(REPO, GuardRule(), registry, ledger)
    assert again.claimed == [] and again.already_claimed == ["v1.0.0"]


# --- attribution from CloudTrail ---------------------------------------------------------------

MALLORY = "arn:aws:iam::123456789012:user/mallory"
ALICE = "arn:aws:iam::123456789012:user/alice"


def api_call(
    event_name: str, tag: str, digest: str, actor: str = MALLORY, user_agent: str = "aws-cli/2.15"
) -> ApiCallEvent:
    if event_name == "PutImage":
        request = {"repositoryName": REPO.name, "imageTag": tag}
        response = {"image": {"repositoryName": REPO.name, "imageId": {"imageDigest": digest, "imageTag": tag}}}
    else:
        request = {"repositoryName": REPO.name, "imageIds": [{"imageTag": tag}]}
        response = {"imageIds": [{"imageDigest": digest, "imageTag": tag}], "failures": []}
    return ApiCallEvent.model_validate(
        {
            "version": "0",
            "id": f"ct-{event_name}-{actor}",
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.ecr",
            "account": REPO.registry_id,
            "time": "2026-11-28T12:03:00Z",
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


def test_cloudtrail_arriving_first_names_the_actor_in_the_violation(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    assert guard.attribute(api_call("PutImage", "v1.2.3", impostor)) == []

    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    (detail,) = violations(publisher)
    assert detail["actor"] == MALLORY
    assert f"by {MALLORY} at" in detail["summary"]


def test_cloudtrail_arriving_later_attributes_the_announced_violation_once(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))
    assert publisher.published[0][1]["actor"] == "unknown"

    attributed = guard.attribute(api_call("PutImage", "v1.2.3", impostor))
    replayed = guard.attribute(api_call("PutImage", "v1.2.3", impostor))

    assert len(attributed) == 1 and replayed == []
    detail_type, detail = publisher.published[1]
    assert detail_type == ATTRIBUTED_DETAIL_TYPE
    assert detail["actor"] == MALLORY
    assert detail["offending-digest"] == impostor
    assert "unknown" not in detail["summary"]


def test_a_delete_is_attributed_to_the_deleter_not_the_pusher(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    # Given alice pushed v1.2.3 and mallory deleted it; CloudTrail reports both calls before ECR's DELETE
    owner = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    guard.attribute(api_call("PutImage", "v1.2.3", owner, actor=ALICE))
    guard.attribute(api_call("BatchDeleteImage", "v1.2.3", owner, actor=MALLORY))
    del registry.tags[(REPO, "v1.2.3")]

    guard.handle(image_action("DELETE", "v1.2.3", owner, "e-2", time=at(60)))

    (detail,) = violations(publisher)
    assert detail["change"] == "deleted" and detail["actor"] == MALLORY


def test_a_delete_announced_first_is_attributed_later_to_the_deleter_only(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    owner = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    del registry.tags[(REPO, "v1.2.3")]
    guard.handle(image_action("DELETE", "v1.2.3", owner, "e-2", time=at(60)))

    by_pusher = guard.attribute(api_call("PutImage", "v1.2.3", owner, actor=ALICE))
    by_deleter = guard.attribute(api_call("BatchDeleteImage", "v1.2.3", owner, actor=MALLORY))

    assert by_pusher == []
    (detail,) = by_deleter
    assert detail["actor"] == MALLORY and detail["change"] == "deleted"


def test_the_applications_own_calls_are_never_recorded_or_blamed(
    guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger, publisher: FakePublisher
) -> None:
    # Given the guard's own PutImage (a revert) and BatchDeleteImage (an untag) reported by CloudTrail
    owner = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", owner, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    ours = f"Boto3/1.35 md/Botocore#1.35 {USER_AGENT_MARKER}/1.0"
    assert guard.attribute(api_call("PutImage", "v1.2.3", impostor, actor="role/guard", user_agent=ours)) == []
    assert guard.attribute(api_call("BatchDeleteImage", "v1.2.3", impostor, actor="role/guard", user_agent=ours)) == []

    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2", time=at(60)))

    assert ledger.actors == {}
    (detail,) = violations(publisher)
    assert detail["actor"] == "unknown"
    assert guard.attribute(api_call("PutImage", "v1.2.3", impostor, actor="role/guard", user_agent=ours)) == []
    assert len(publisher.published) == 1


def test_cloudtrail_for_unprotected_tags_and_failed_calls_is_ignored(guard: TagGuard, ledger: FakeLedger) -> None:
    digest = "sha256:" + "a" * 64
    assert guard.attribute(api_call("PutImage", "latest", digest)) == []
    assert ledger.actors == {}
    deleted = api_call("BatchDeleteImage", "v1.2.3", digest)
    assert deleted.detail.tag_changes() == [(REPO.name, "v1.2.3", digest)]
    failed = deleted.detail.model_copy(update={"error_code": "ImageTagAlreadyExistsException"})
    assert failed.tag_changes() == []
