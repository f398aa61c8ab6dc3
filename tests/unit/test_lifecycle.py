"""Lifecycle guardrails: the policy model, ECR's evaluation semantics, what must stay, suggestions, the alert."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecr_automation.handlers.lifecycle_guard import check_policy
from ecr_automation.logic.lifecycle import (
    VIOLATION_DETAIL_TYPE,
    LifecycleChecker,
    LifecycleGuard,
    alias_names,
    check,
    compare,
    evaluate,
    family_pattern,
    guarded_images,
    render_text,
    violation_detail,
)
from ecr_automation.logic.notify import Notifier, render_lifecycle_violation
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.events.application import LifecycleViolationEvent
from ecr_automation.models.events.cloudtrail import ApiCallEvent, LifecyclePolicyPutEvent
from ecr_automation.models.lifecycle import (
    ActionType,
    LifecycleImage,
    LifecyclePolicyError,
    Preview,
    PreviewResult,
    StorageClass,
    parse_lifecycle_policy,
    policy_hash,
)
from ecr_automation.models.parsing import parse_event
from ecr_automation.rules import Rules, load_rules, parse_rules
from tests.conftest import ROOT, load_event
from tests.support.fakes import FakePublisher
from tests.support.notify_fakes import FakeFindings, FakeSentLedger, RecordingSink

NOW = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
REPOSITORY = RepositoryRef("123456789012", "us-east-1", "team/web")
BUNDLED = load_rules(ROOT / "functions" / "rules.toml")


def digest(seed: str) -> str:
    import hashlib  # noqa: PLC0415

    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def image(seed: str, *tags: str, days_ago: float, **more: Any) -> LifecycleImage:
    return LifecycleImage(digest(seed), tuple(tags), NOW - timedelta(days=days_ago), **more)


def rule(priority: int, action: str = "expire", **selection: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"rulePriority": priority, "selection": selection, "action": {"type": action}}
    if action == "transition":
        document["action"]["targetStorageClass"] = "archive"
    return document


def policy(*rules: dict[str, Any]) -> str:
    return json.dumps({"rules": list(rules)})


KEEP_FIVE = policy(rule(1, tagStatus="any", countType="imageCountMoreThan", countNumber=5))


def releases(count: int = 8) -> list[LifecycleImage]:
    """v1.0.0 .. v1.7.0, a week apart; the newest also holds v1.7, v1 and latest (retag's aliases)."""
    images = []
    for minor in range(count):
        tags = [f"v1.{minor}.0"] + (["v1.7", "v1", "latest"] if minor == count - 1 else [])
        images.append(image(f"v1.{minor}.0", *tags, days_ago=7 * (count - minor)))
    return images


def fates_of(text: str, images: list[LifecycleImage]) -> dict[str, int]:
    return {fate.image.digest: fate.rule.rule_priority for fate in evaluate(parse_lifecycle_policy(text), images, NOW)}


# -- the model --------------------------------------------------------------------------------------
def test_a_documented_policy_parses_and_round_trips() -> None:
    text = policy(
        rule(1, tagStatus="untagged", countType="sinceImagePushed", countUnit="days", countNumber=14),
        rule(2, tagStatus="tagged", tagPatternList=["prod*"], countType="imageCountMoreThan", countNumber=10),
        rule(3, "transition", tagStatus="any", countType="sinceImagePulled", countUnit="days", countNumber=90),
        rule(
            4,
            tagStatus="any",
            storageClass="archive",
            countType="sinceImageTransitioned",
            countUnit="days",
            countNumber=365,
        ),
    )
    parsed = parse_lifecycle_policy(text)
    assert [item.rule_priority for item in parsed.rules] == [1, 2, 3, 4]
    assert parse_lifecycle_policy(parsed.text()) == parsed
    assert policy_hash(text) == policy_hash(json.dumps(json.loads(text), indent=4))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "not JSON"),
        ("[]", "JSON object"),
        ("{}", "rules: field required"),
        ('{"rules": []}', "rules:"),
        (policy(rule(1, tagStatus="tagged", countType="imageCountMoreThan", countNumber=1)), "needs a tagPrefixList"),
        (
            policy(rule(1, tagStatus="untagged", tagPrefixList=["v"], countType="imageCountMoreThan", countNumber=1)),
            "takes no tagPrefixList",
        ),
        (
            policy(
                rule(1, tagStatus="any", countType="imageCountMoreThan", countNumber=1),
                rule(2, tagStatus="untagged", countType="imageCountMoreThan", countNumber=1),
            ),
            "must have the highest rulePriority",
        ),
        (
            policy(
                rule(1, tagStatus="untagged", countType="imageCountMoreThan", countNumber=1),
                rule(1, tagStatus="any", countType="imageCountMoreThan", countNumber=1),
            ),
            "used more than once",
        ),
        (
            policy(
                rule(
                    1, tagStatus="tagged", tagPatternList=["a*b*c*d*e*f"], countType="imageCountMoreThan", countNumber=1
                )
            ),
            "more than 4 wildcards",
        ),
        (policy(rule(1, tagStatus="any", countType="sinceImagePushed", countNumber=1)), "needs countUnit days"),
        (
            policy(rule(1, tagStatus="any", countType="imageCountMoreThan", countUnit="days", countNumber=1)),
            "takes no countUnit",
        ),
        (
            policy(rule(1, tagStatus="any", countType="sinceImageTransitioned", countUnit="days", countNumber=1)),
            "needs storageClass archive",
        ),
        (policy(rule(1, tagStatus="any", countType="imageCountMoreThan", countNumber=0)), "countNumber"),
        (policy(rule(1, tagStatus="any", countType="imageCountMoreThan", countNumber=True)), "countNumber"),
        (policy(rule(1, tagStatus="any", countType="sinceForever", countNumber=1)), "countType"),
        (policy(rule(1, tagStatus="any", countType="imageCountMoreThan", countNumber=1, keep=True)), "keep"),
        (
            json.dumps(
                {
                    "rules": [
                        {
                            "rulePriority": 1,
                            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
                            "action": {"type": "transition"},
                        }
                    ]
                }
            ),
            "needs targetStorageClass archive",
        ),
    ],
)
def test_a_policy_ecr_would_refuse_is_refused_with_one_line(text: str, reason: str) -> None:
    with pytest.raises(LifecyclePolicyError) as raised:
        parse_lifecycle_policy(text)
    assert reason in str(raised.value)
    assert "\n" not in str(raised.value)


def test_tag_patterns_match_whole_tags_and_every_listed_entry_must_match() -> None:
    parsed = parse_lifecycle_policy(
        policy(
            rule(1, tagStatus="tagged", tagPatternList=["prod*", "*-1"], countType="imageCountMoreThan", countNumber=1)
        )
    )
    selection = parsed.rules[0].selection
    assert selection.matches_tags(("prod", "beta-1"))
    assert not selection.matches_tags(("prod",))  # every pattern must match some tag
    assert not selection.matches_tags(("xprod-2",))
    assert not selection.matches_tags(())
    prefixes = parse_lifecycle_policy(
        policy(rule(1, tagStatus="tagged", tagPrefixList=["v", "rc"], countType="imageCountMoreThan", countNumber=1))
    ).rules[0]
    assert prefixes.selection.matches_tags(("v1.0.0", "rc-1"))
    assert not prefixes.selection.matches_tags(("v1.0.0",))


# -- evaluation: the ECR User Guide's examples and rules ------------------------------------------------
def test_user_guide_example_a_an_image_selected_by_a_higher_rule_is_skipped_by_a_lower_one() -> None:
    # Image A [beta-1, prod-1] 10 days, B [beta-2, prod-2] 9 days, C [beta-3] 8 days; rule 1 prod* keep 1,
    # rule 2 beta* keep 1: "Result: Image A is expired." (B is rule 1's, kept; C is rule 2's newest.)
    images = [
        image("A", "beta-1", "prod-1", days_ago=10),
        image("B", "beta-2", "prod-2", days_ago=9),
        image("C", "beta-3", days_ago=8),
    ]
    text = policy(
        rule(1, tagStatus="tagged", tagPatternList=["prod*"], countType="imageCountMoreThan", countNumber=1),
        rule(2, tagStatus="tagged", tagPatternList=["beta*"], countType="imageCountMoreThan", countNumber=1),
    )
    assert fates_of(text, images) == {digest("A"): 1}


def test_keep_five_of_any_expires_the_oldest_releases() -> None:
    images = releases()
    expired = [fate.image.tags[0] for fate in evaluate(parse_lifecycle_policy(KEEP_FIVE), images, NOW)]
    assert expired == ["v1.0.0", "v1.1.0", "v1.2.0"]


def test_age_rules_count_from_push_pull_or_archive() -> None:
    pulled = image("pulled", "a", days_ago=100, last_pulled_at=NOW - timedelta(days=3))
    never = image("never", "b", days_ago=100)
    young = image("young", "c", days_ago=5)
    archived = image(
        "archived", "d", days_ago=400, storage_class=StorageClass.ARCHIVE, archived_at=NOW - timedelta(days=200)
    )
    recent_archive = image(
        "recent", "e", days_ago=400, storage_class=StorageClass.ARCHIVE, archived_at=NOW - timedelta(days=20)
    )
    images = [pulled, never, young, archived, recent_archive]
    text = policy(
        rule(1, "transition", tagStatus="any", countType="sinceImagePulled", countUnit="days", countNumber=30),
        rule(
            2,
            tagStatus="any",
            storageClass="archive",
            countType="sinceImageTransitioned",
            countUnit="days",
            countNumber=90,
        ),
    )
    fates = {fate.image.digest: fate.action for fate in evaluate(parse_lifecycle_policy(text), images, NOW)}
    assert fates == {never.digest: ActionType.TRANSITION, archived.digest: ActionType.EXPIRE}


def test_untagged_rules_never_touch_tagged_images() -> None:
    images = [image("t", "v1.0.0", days_ago=50), image("u", days_ago=40), image("u2", days_ago=30)]
    text = policy(rule(1, tagStatus="untagged", countType="imageCountMoreThan", countNumber=1))
    assert fates_of(text, images) == {digest("u"): 1}


# -- what must stay -----------------------------------------------------------------------------------
def test_release_tags_are_protected_and_retag_aliases_are_targets() -> None:
    images = [*releases(), image("dev", "main-abc1234", "main", days_ago=1)]
    guarded = guarded_images(BUNDLED, "team/web", images)
    newest = images[7]
    assert guarded[newest.digest].protected == ("v1.7.0",)
    assert set(guarded[newest.digest].aliases) == {"v1.7", "v1", "latest"}
    assert digest("dev") not in guarded
    assert alias_names(BUNDLED, "docker-hub/library/nginx", ["v1.2.3"]) == set()  # pull-through: no retag


def test_without_a_guard_rule_only_alias_targets_count() -> None:
    rules = parse_rules('[[retag]]\nrepositories = ["*"]\n')
    guarded = guarded_images(rules, "team/web", releases())
    assert [why.protected for why in guarded.values()] == [()]
    assert set(next(iter(guarded.values())).aliases) == {"v1.7", "v1", "latest"}


def test_an_old_latest_without_a_release_is_reported_as_an_alias_target() -> None:
    images = [image("old", "latest", days_ago=400), image("new", "v2.0.0", days_ago=1)]
    text = policy(rule(1, tagStatus="any", countType="sinceImagePushed", countUnit="days", countNumber=30))
    report = check(REPOSITORY, text, images, BUNDLED, NOW)
    assert [(conflict.image.digest, conflict.why.aliases) for conflict in report.expiring] == [
        (digest("old"), ("latest",))
    ]
    assert report.severity == "HIGH"
    assert report.suggestions[0].resolves
    keep = report.suggestions[0].policy.rules[0].selection
    assert keep.tag_pattern_list == ("latest",)


# -- the check and its suggestions ------------------------------------------------------------------
def test_the_scenario_reports_the_oldest_releases_and_a_keep_rule_that_fixes_it() -> None:
    report = check(REPOSITORY, KEEP_FIVE, releases(), BUNDLED, NOW)
    assert report.violated and report.severity == "CRITICAL"
    assert sorted(tag for conflict in report.expiring for tag in conflict.why.protected) == [
        "v1.0.0",
        "v1.1.0",
        "v1.2.0",
    ]
    first = report.suggestions[0]
    assert first.resolves
    assert first.policy.document()["rules"][0] == {
        "rulePriority": 1,
        "description": "keep v*.*.* (protected releases and aliases; never reached)",
        "selection": {
            "tagStatus": "tagged",
            "tagPatternList": ["v*.*.*"],
            "countType": "imageCountMoreThan",
            "countNumber": 10000,
        },
        "action": {"type": "expire"},
    }
    assert first.policy.rules[1].rule_priority == 2  # the old rule 1 moved down to make room
    summaries = [suggestion.summary for suggestion in report.suggestions]
    assert any("untagged" in summary for summary in summaries)
    assert any("raise countNumber of rule 1 to 8" in summary for summary in summaries)
    assert all(suggestion.resolves for suggestion in report.suggestions)
    text = render_text(report)
    assert "VIOLATION" in text and "v1.0.0" in text and '"v*.*.*"' in text
    assert "ECR preview: unavailable" in text


def test_a_compliant_policy_reports_nothing_to_fix() -> None:
    text = policy(rule(1, tagStatus="untagged", countType="imageCountMoreThan", countNumber=1))
    report = check(REPOSITORY, text, releases(), BUNDLED, NOW)
    assert not report.violated and report.suggestions == []


@pytest.mark.parametrize(
    ("tag", "pattern"),
    [
        ("v1.2.3", "v*.*.*"),
        ("1.2.3", "*.*.*"),
        ("v1.2.3-rc.1", "v*.*.*-rc.*"),
        ("release-2024-01", "release-*-*"),
        ("a1b2c3d4e5", "a*b*c*d*"),
        ("latest", "latest"),
    ],
)
def test_family_patterns_stay_within_ecrs_four_wildcards(tag: str, pattern: str) -> None:
    assert family_pattern(tag) == pattern
    parse_lifecycle_policy(
        policy(rule(1, tagStatus="tagged", tagPatternList=[pattern], countType="imageCountMoreThan", countNumber=1))
    )


def test_the_preview_is_compared_and_its_extra_findings_reported() -> None:
    images = releases()
    ours = evaluate(parse_lifecycle_policy(KEEP_FIVE), images, NOW)
    same = Preview(tuple(PreviewResult(f.image.digest, f.image.tags, ActionType.EXPIRE, 1) for f in ours))
    assert compare(ours, same).status == "agrees"
    extra = Preview((*same.results, PreviewResult(images[3].digest, images[3].tags, ActionType.EXPIRE, 1)))  # type: ignore[misc]
    report = check(REPOSITORY, KEEP_FIVE, images, BUNDLED, NOW, preview=extra)
    assert report.preview.status == "disagrees"
    assert report.preview.only_preview == (images[3].digest,)
    assert [conflict.source for conflict in report.expiring].count("preview") == 1


# -- the Lambda path: publish once per (repository, policy); the notifier's message --------------------
class FakeSource:
    def __init__(self, images: list[LifecycleImage], text: str | None = None) -> None:
        self._images = images
        self.text = text

    def policy_text(self, repository: RepositoryRef) -> str | None:
        return self.text

    def images(self, repository: RepositoryRef) -> list[LifecycleImage]:
        return list(self._images)

    def preview(self, repository: RepositoryRef, policy_text: str) -> Preview:
        return Preview(None, "ECR's preview is unavailable here (test)")

    def repositories(self, registry_id: str, region: str) -> Any:
        return iter(["team/web"])


def guard_with(images: list[LifecycleImage], rules: Rules = BUNDLED) -> tuple[LifecycleGuard, FakePublisher]:
    publisher = FakePublisher()
    checker = LifecycleChecker(rules, FakeSource(images), clock=lambda: NOW)
    return LifecycleGuard(checker, publisher, FakeSentLedger()), publisher


def test_the_sample_event_parses_and_publishes_one_violation_per_policy() -> None:
    raw = load_event("cloudtrail-put-lifecycle-policy.json")
    event = parse_event(raw, max_bytes=256 * 1024)
    assert isinstance(event, LifecyclePolicyPutEvent)
    request = event.detail.request_parameters
    assert request is not None and request.lifecycle_policy_text is not None
    assert request.repository_name == "team/web" and request.registry_id == "123456789012"
    assert (
        json.loads(request.lifecycle_policy_text)["rules"][0]["selection"]
        == json.loads(KEEP_FIVE)["rules"][0]["selection"]
    )
    guard, publisher = guard_with(releases())
    call: dict[str, Any] = {"actor": "alice", "event_id": event.id, "event_time": event.detail.event_time}
    outcome = guard.on_policy_put(REPOSITORY, request.lifecycle_policy_text, **call)
    assert outcome.result == "violation"
    again = guard.on_policy_put(REPOSITORY, request.lifecycle_policy_text, **call)
    assert again.result == "already_published"
    assert [detail_type for detail_type, _ in publisher.published] == [VIOLATION_DETAIL_TYPE]
    detail = publisher.published[0][1]
    assert detail["severity"] == "CRITICAL" and detail["image-count"] == 3
    assert json.loads(detail["suggested-policy"])["rules"][0]["selection"]["tagPatternList"] == ["v*.*.*"]


def test_a_failed_publish_leaves_the_violation_owed() -> None:
    guard, publisher = guard_with(releases())
    publisher.fail_with = RuntimeError("PutEvents down")
    call: dict[str, Any] = {"actor": "alice", "event_id": "e1", "event_time": NOW}
    with pytest.raises(RuntimeError):
        guard.on_policy_put(REPOSITORY, KEEP_FIVE, **call)
    publisher.fail_with = None
    assert guard.on_policy_put(REPOSITORY, KEEP_FIVE, **call).result == "violation"


def test_unreadable_and_compliant_policies_publish_nothing() -> None:
    guard, publisher = guard_with(releases())
    call: dict[str, Any] = {"actor": "alice", "event_id": "e1", "event_time": NOW}
    assert guard.on_policy_put(REPOSITORY, '{"rules": 3}', **call).result == "invalid_policy"
    untagged = policy(rule(1, tagStatus="untagged", countType="imageCountMoreThan", countNumber=1))
    assert guard.on_policy_put(REPOSITORY, untagged, **call).result == "compliant"
    assert guard.on_policy_put(REPOSITORY, None, **call).result == "no_policy"
    assert publisher.published == []


def violation_event(report_images: list[LifecycleImage], **detail_changes: Any) -> LifecycleViolationEvent:
    report = check(REPOSITORY, KEEP_FIVE, report_images, BUNDLED, NOW)
    detail = violation_detail(report, actor="arn:aws:sts::123456789012:assumed-role/a/b", event_id="e1", event_time=NOW)
    detail |= detail_changes
    raw = {
        "version": "0",
        "id": "v1",
        "detail-type": VIOLATION_DETAIL_TYPE,
        "source": "ecr-automation",
        "account": "123456789012",
        "time": NOW.isoformat(),
        "region": "us-east-1",
        "resources": [REPOSITORY.arn],
        "detail": json.loads(json.dumps(detail)),
    }
    event = parse_event(raw, max_bytes=256 * 1024)
    assert isinstance(event, LifecycleViolationEvent)
    return event


def test_the_alert_names_the_releases_the_rule_and_the_fix_and_is_sent_once() -> None:
    event = violation_event(releases())
    message = render_lifecycle_violation(event)
    text = json.dumps(message.blocks)
    assert message.fingerprint == f"lifecycle#{event.detail.policy_hash}"
    assert "team/web:v1.0.0" in text and "by rule 1" in text and "v*.*.*" in text
    assert message.text.startswith("[CRITICAL] the lifecycle policy of team/web would expire 3 image(s)")
    sink = RecordingSink()
    notifier = Notifier(BUNDLED, FakeFindings(), FakeSentLedger(), [sink], registry=None, clock=lambda: NOW)  # type: ignore[arg-type]
    assert notifier.handle(event).result == "posted"
    assert notifier.handle(event).result == "duplicate"
    assert len(sink.messages) == 1


def test_outside_text_in_the_alert_cannot_ping_or_break_the_code_block() -> None:
    event = violation_event(
        releases(), actor="<!channel>", suggestion="<https://evil.example|click>", **{"suggested-policy": "```<!here>"}
    )
    text = json.dumps(render_lifecycle_violation(event).blocks)
    assert "<!channel>" not in text and "<!here>" not in text and "<https://evil" not in text
    assert text.count("```") == 2


def test_the_events_samples_are_what_the_code_produces() -> None:
    sample = load_event("lifecycle-violation.json")
    assert isinstance(parse_event(sample, max_bytes=256 * 1024), LifecycleViolationEvent)
    put = load_event("cloudtrail-put-lifecycle-policy.json")
    assert policy_hash(put["detail"]["requestParameters"]["lifecyclePolicyText"]) == sample["detail"]["policy-hash"]


# -- properties of the evaluator against the documented semantics ---------------------------------------
TAGS = st.sampled_from(["v1.0.0", "v1.1.0", "v2.0.0", "latest", "v1", "prod-1", "prod-2", "beta-1", "main"])
IMAGES = st.lists(
    st.tuples(st.lists(TAGS, max_size=3, unique=True), st.integers(min_value=0, max_value=400)),
    max_size=12,
).map(
    lambda specs: [
        LifecycleImage(digest(f"i{number}"), tuple(sorted(tags)), NOW - timedelta(days=age, minutes=number))
        for number, (tags, age) in enumerate(specs)
    ]
)
SELECTIONS = st.one_of(
    st.just({"tagStatus": "untagged"}),
    st.builds(
        lambda patterns: {"tagStatus": "tagged", "tagPatternList": patterns},
        st.lists(st.sampled_from(["v*", "prod*", "*-1", "v1.*.*", "latest", "beta*"]), min_size=1, max_size=2),
    ),
    st.builds(
        lambda prefixes: {"tagStatus": "tagged", "tagPrefixList": prefixes},
        st.lists(st.sampled_from(["v", "prod", "beta", "ma"]), min_size=1, max_size=2),
    ),
)
COUNTS = st.one_of(
    st.builds(lambda n: {"countType": "imageCountMoreThan", "countNumber": n}, st.integers(1, 8)),
    st.builds(lambda n: {"countType": "sinceImagePushed", "countUnit": "days", "countNumber": n}, st.integers(1, 300)),
)


@st.composite
def policies(draw: st.DrawFn) -> str:
    count = draw(st.integers(1, 4))
    rules = [rule(number + 1, **draw(SELECTIONS), **draw(COUNTS)) for number in range(count)]
    if draw(st.booleans()):
        rules.append(rule(count + 1, tagStatus="any", **draw(COUNTS)))
    return policy(*rules)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=policies(), images=IMAGES)
def test_every_image_is_acted_on_only_by_the_first_rule_whose_tags_it_meets(
    text: str, images: list[LifecycleImage]
) -> None:
    parsed = parse_lifecycle_policy(text)
    fates = evaluate(parsed, images, NOW)
    assert len({fate.image.digest for fate in fates}) == len(fates)  # at most one rule per image
    for fate in fates:
        first = next(item for item in parsed.rules if item.selection.matches_tags(fate.image.tags))
        assert first is fate.rule


@settings(max_examples=300, deadline=None)
@given(text=policies(), images=IMAGES)
def test_within_a_rule_older_images_go_before_newer_ones(text: str, images: list[LifecycleImage]) -> None:
    parsed = parse_lifecycle_policy(text)
    fates = evaluate(parsed, images, NOW)
    expired = {fate.image.digest for fate in fates}
    for fate in fates:
        owned = [
            other
            for other in images
            if next((item for item in parsed.rules if item.selection.matches_tags(other.tags)), None) is fate.rule
        ]
        older = [other for other in owned if other.pushed_at < fate.image.pushed_at]
        assert all(other.digest in expired for other in older)


@settings(max_examples=200, deadline=None)
@given(text=policies(), images=IMAGES, order=st.randoms(use_true_random=False))
def test_the_order_images_are_listed_in_changes_nothing(text: str, images: list[LifecycleImage], order: Any) -> None:
    parsed = parse_lifecycle_policy(text)
    shuffled = list(images)
    order.shuffle(shuffled)
    assert evaluate(parsed, images, NOW) == evaluate(parsed, shuffled, NOW)


@settings(max_examples=200, deadline=None)
@given(text=policies(), images=IMAGES, more=st.integers(1, 5))
def test_raising_a_count_never_expires_more(text: str, images: list[LifecycleImage], more: int) -> None:
    parsed = parse_lifecycle_policy(text)
    raised = parsed.model_copy(
        update={
            "rules": tuple(
                item.model_copy(
                    update={
                        "selection": item.selection.model_copy(
                            update={"count_number": item.selection.count_number + more}
                        )
                    }
                )
                for item in parsed.rules
            )
        }
    )
    before = {fate.image.digest for fate in evaluate(parsed, images, NOW)}
    after = {fate.image.digest for fate in evaluate(raised, images, NOW)}
    assert after <= before


@settings(max_examples=300, deadline=None)
@given(text=policies(), images=IMAGES)
def test_every_suggestion_offered_as_resolving_does_resolve(text: str, images: list[LifecycleImage]) -> None:
    report = check(REPOSITORY, text, images, BUNDLED, NOW)
    if not report.violated:
        assert report.suggestions == []
        return
    assert report.suggestions and report.suggestions[0].resolves  # the keep rule always works for releases
    for suggestion in report.suggestions:
        after = check(REPOSITORY, suggestion.policy.text(), images, BUNDLED, NOW)
        assert after.violated is not suggestion.resolves


def test_a_single_any_rule_keeps_exactly_the_newest_n() -> None:
    images = releases()
    for keep in range(1, 10):
        text = policy(rule(1, tagStatus="any", countType="imageCountMoreThan", countNumber=keep))
        expired = {fate.image.digest for fate in evaluate(parse_lifecycle_policy(text), images, NOW)}
        newest = sorted(images, key=lambda item: item.pushed_at, reverse=True)
        assert expired == {item.digest for item in newest[keep:]}


def test_storage_classes_are_evaluated_apart() -> None:
    archived = replace(image("arch", "v0.1.0", days_ago=900), storage_class=StorageClass.ARCHIVE)
    fates = evaluate(parse_lifecycle_policy(KEEP_FIVE), [*releases(), archived], NOW)
    assert archived.digest not in {fate.image.digest for fate in fates}


def test_a_failed_put_is_ignored_without_reading_anything() -> None:
    raw = load_event("cloudtrail-put-lifecycle-policy.json")
    raw["detail"]["errorCode"] = "AccessDenied"
    event = parse_event(raw, max_bytes=256 * 1024)
    assert isinstance(event, LifecyclePolicyPutEvent)

    class NoDependencies:
        @property
        def lifecycle_guard(self) -> LifecycleGuard:
            raise AssertionError("a failed call put no policy: nothing to check")

    result = check_policy(event, NoDependencies())  # type: ignore[arg-type]
    assert result["result"] == "ignored" and "AccessDenied" in result["note"]


def test_other_cloudtrail_calls_keep_their_generic_model() -> None:
    assert type(parse_event(load_event("cloudtrail-put-image.json"), max_bytes=256 * 1024)) is ApiCallEvent
