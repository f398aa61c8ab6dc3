"""Tag guard decisions and workflow, on in-memory fakes of the registry, ledger and event bus."""

from __future__ import annotations

import pytest

from ecr_automation.logic.guard import (
    ATTRIBUTED_DETAIL_TYPE,
    VIOLATION_DETAIL_TYPE,
    GuardResult,
    TagGuard,
    backfill,
    is_guarded,
    push_is_accepted,
    quarantine_tag_for,
)
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.events import ApiCallEvent, ImageActionEvent
from ecr_automation.rules import GuardRule, Rules, parse_rules
from tests.support import builders
from tests.support.fakes import FakeLedger, FakePublisher, FakeRegistry

REPO = RepositoryRef("123456789012", "us-east-1", "team/web")
RULES = Rules(guard=[GuardRule(mutable=["^latest$"])])


def image_action(action: str, tag: str | None, digest: str, event_id: str = "e-1") -> ImageActionEvent:
    return ImageActionEvent.model_validate(builders.image_action(action, tag, digest, event_id=event_id))


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
    return TagGuard(RULES, registry, ledger, publisher)


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


def test_first_push_claims_the_tag(guard: TagGuard, registry: FakeRegistry, ledger: FakeLedger) -> None:
    digest = registry.add_image(REPO, "release", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", digest))

    assert outcome.result is GuardResult.CLAIMED
    assert ledger.current_claim(REPO, "v1.2.3").digest == digest  # type: ignore[union-attr]
    assert registry.writes == []


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
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2"))

    assert outcome.result is GuardResult.REVERTED
    assert registry.tags[(REPO, "v1.2.3")] == release
    quarantine = quarantine_tag_for(GuardRule(), impostor)
    assert registry.tags[(REPO, quarantine)] == impostor
    assert [kind for kind, _, _ in registry.writes] == ["image_quarantined", "tag_reverted"]
    assert len(publisher.published) == 1
    detail_type, detail = publisher.published[0]
    assert detail_type == VIOLATION_DETAIL_TYPE
    assert detail["claimed-digest"] == release
    assert detail["offending-digest"] == impostor
    assert detail["handling"] == "reverted"
    assert detail["quarantine-tag"] == quarantine
    assert detail["actor"] == "unknown"
    assert detail["severity"] == "HIGH"


def test_replayed_violation_changes_nothing_and_alerts_once(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    move = image_action("PUSH", "v1.2.3", impostor, "e-2")
    guard.handle(move)
    writes_after_first = list(registry.writes)

    guard.handle(move)

    assert registry.writes == writes_after_first
    assert len(publisher.published) == 1


def test_the_guards_own_revert_push_is_a_no_op(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2"))
    writes = list(registry.writes)

    for tag, digest in [("v1.2.3", release), (quarantine_tag_for(GuardRule(), impostor), impostor)]:
        outcome = guard.handle(image_action("PUSH", tag, digest, f"echo-{tag}"))
        assert outcome.result in {GuardResult.UNCHANGED, GuardResult.NOT_PROTECTED}

    assert registry.writes == writes
    assert len(publisher.published) == 1


def test_claimed_image_gone_is_a_critical_violation_and_nothing_is_guessed(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    registry.remove_image(REPO, release)
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2"))

    assert outcome.result is GuardResult.UNRECOVERABLE
    assert registry.writes == []
    assert registry.tags[(REPO, "v1.2.3")] == impostor
    ((_, detail),) = publisher.published
    assert detail["severity"] == "CRITICAL"
    assert "cannot be restored" in detail["summary"]


def test_deleted_protected_tag_is_restored(guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher) -> None:
    release = registry.add_image(REPO, "release", "v1.2.3", "sha-keep")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    del registry.tags[(REPO, "v1.2.3")]

    outcome = guard.handle(image_action("DELETE", "v1.2.3", release, "e-2"))
    replay = guard.handle(image_action("DELETE", "v1.2.3", release, "e-2"))

    assert outcome.result is GuardResult.RESTORED
    assert replay.result is GuardResult.ALREADY_RESTORED
    assert registry.tags[(REPO, "v1.2.3")] == release
    assert len(publisher.published) == 1
    assert publisher.published[0][1]["change"] == "deleted"


def test_delete_of_an_unclaimed_tag_is_reported_not_guessed(guard: TagGuard, registry: FakeRegistry) -> None:
    digest = registry.add_image(REPO, "old", "v0.9.0")
    outcome = guard.handle(image_action("DELETE", "v0.9.0", digest))
    assert outcome.result is GuardResult.UNCLAIMED_DELETE
    assert registry.writes == []


def test_natively_immutable_repositories_are_left_to_ecr(ledger: FakeLedger, publisher: FakePublisher) -> None:
    registry = FakeRegistry(mutability="IMMUTABLE")
    digest = registry.add_image(REPO, "release", "v1.2.3")
    outcome = TagGuard(RULES, registry, ledger, publisher).handle(image_action("PUSH", "v1.2.3", digest))
    assert outcome.result is GuardResult.LEFT_TO_ECR
    assert ledger.claims_by_tag == {}


def test_immutable_refusal_is_reported_not_crashed_on(ledger: FakeLedger, publisher: FakePublisher) -> None:
    registry = FakeRegistry()
    guard = TagGuard(RULES, registry, ledger, publisher)
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    registry.refuse_moves = True  # e.g. IMMUTABLE_WITH_EXCLUSION: ECR answers ImageTagAlreadyExistsException

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2"))

    assert outcome.result is GuardResult.REFUSED
    assert publisher.published[0][1]["handling"] == "refused"


def test_dry_run_reports_without_changing(ledger: FakeLedger, publisher: FakePublisher) -> None:
    registry = FakeRegistry(dry_run=True)
    guard = TagGuard(RULES, registry, ledger, publisher)
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")

    outcome = guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2"))

    assert outcome.result is GuardResult.DRY_RUN
    assert registry.tags[(REPO, "v1.2.3")] == impostor
    assert publisher.published[0][1]["handling"] == "dry_run"


def test_delete_mode_removes_the_offending_image_only_when_left_untagged(
    ledger: FakeLedger, publisher: FakePublisher
) -> None:
    rules = parse_rules('[[guard]]\non_violation = "delete"\n')
    registry = FakeRegistry()
    guard = TagGuard(rules, registry, ledger, publisher)
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    kept = registry.add_image(REPO, "also-nightly", "v2.0.0", "nightly")
    guard.handle(image_action("PUSH", "v2.0.0", kept, "e-3"))

    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2"))

    assert (REPO, impostor) not in registry.manifests
    assert registry.tags[(REPO, "v1.2.3")] == release


def test_other_reactions_see_a_rejected_push_as_not_accepted(registry: FakeRegistry, ledger: FakeLedger) -> None:
    release = registry.add_image(REPO, "release")
    impostor = registry.add_image(REPO, "impostor")
    assert push_is_accepted(image_action("PUSH", "v1.2.3", release, "e-1"), RULES, ledger)
    assert not push_is_accepted(image_action("PUSH", "v1.2.3", impostor, "e-2"), RULES, ledger)
    assert push_is_accepted(image_action("PUSH", "latest", impostor, "e-3"), RULES, ledger)
    assert push_is_accepted(image_action("PUSH", None, impostor, "e-4"), RULES, ledger)


def test_backfill_claims_protected_tags_and_reports_conflicts(registry: FakeRegistry, ledger: FakeLedger) -> None:
    release = registry.add_image(REPO, "release", "v1.0.0", "latest")
    other = registry.add_image(REPO, "other", "v1.1.0")
    ledger.claim(REPO, "v1.1.0", release, "earlier")

    report = backfill(REPO, GuardRule(), registry, ledger)

    assert report.claimed == ["v1.0.0"]
    assert report.conflicts == [f"v1.1.0: registry has {other}, ledger has {release}"]
    again = backfill(REPO, GuardRule(), registry, ledger)
    assert again.claimed == [] and again.already_claimed == ["v1.0.0"]


def api_call(
    event_name: str, tag: str, digest: str, actor: str = "arn:aws:iam::123456789012:user/mallory"
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
            "id": f"ct-{event_name}",
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
                "requestParameters": request,
                "responseElements": response,
            },
        }
    )


def test_cloudtrail_arriving_first_names_the_actor_in_the_violation(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    assert guard.attribute(api_call("PutImage", "v1.2.3", impostor)) == []

    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2"))

    ((_, detail),) = publisher.published
    assert detail["actor"] == "arn:aws:iam::123456789012:user/mallory"
    assert "by arn:aws:iam::123456789012:user/mallory at" in detail["summary"]


def test_cloudtrail_arriving_later_attributes_the_announced_violation_once(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    release = registry.add_image(REPO, "release", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    guard.handle(image_action("PUSH", "v1.2.3", impostor, "e-2"))
    assert publisher.published[0][1]["actor"] == "unknown"

    attributed = guard.attribute(api_call("PutImage", "v1.2.3", impostor))
    replayed = guard.attribute(api_call("PutImage", "v1.2.3", impostor))

    assert len(attributed) == 1 and replayed == []
    detail_type, detail = publisher.published[1]
    assert detail_type == ATTRIBUTED_DETAIL_TYPE
    assert detail["actor"] == "arn:aws:iam::123456789012:user/mallory"
    assert detail["offending-digest"] == impostor
    assert "unknown" not in detail["summary"]


def test_cloudtrail_for_unprotected_tags_and_failed_calls_is_ignored(guard: TagGuard, ledger: FakeLedger) -> None:
    digest = "sha256:" + "a" * 64
    assert guard.attribute(api_call("PutImage", "latest", digest)) == []
    assert ledger.actors == {}
    deleted = api_call("BatchDeleteImage", "v1.2.3", digest)
    assert deleted.detail.tag_changes() == [(REPO.name, "v1.2.3", digest)]
    failed = deleted.detail.model_copy(update={"error_code": "ImageTagAlreadyExistsException"})
    assert failed.tag_changes() == []


def test_an_image_deleted_by_digest_raises_a_critical_violation_per_claimed_tag(
    guard: TagGuard, registry: FakeRegistry, publisher: FakePublisher
) -> None:
    release = registry.add_image(REPO, "release", "v1.2.3", "v1.2.3-rc.1", "latest")
    guard.handle(image_action("PUSH", "v1.2.3", release, "e-1"))
    guard.handle(image_action("PUSH", "v1.2.3-rc.1", release, "e-2"))
    registry.remove_image(REPO, release)

    outcome = guard.handle(image_action("DELETE", None, release, "e-3"))

    assert outcome.result is GuardResult.UNRECOVERABLE
    assert sorted(detail["image-tag"] for _, detail in publisher.published) == ["v1.2.3", "v1.2.3-rc.1"]
    assert {detail["severity"] for _, detail in publisher.published} == {"CRITICAL"}


def test_a_delete_by_digest_of_an_unclaimed_image_is_not_a_violation(guard: TagGuard, registry: FakeRegistry) -> None:
    digest = registry.add_image(REPO, "scratch")
    assert guard.handle(image_action("DELETE", None, digest)).result is GuardResult.NOT_PROTECTED
