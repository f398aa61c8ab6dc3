"""Retag decisions and workflow, on in-memory fakes of the registry and the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from ecr_automation.adapters.ledger import LeaseLostError
from ecr_automation.config import ConfigurationError
from ecr_automation.logic.ownership import ClaimAcceptance, Ownership
from ecr_automation.logic.retag import (
    RetagEvent,
    Retagger,
    RetagOutcome,
    RetagResult,
    alias_candidates,
    digest_tag,
    forward_decision,
    pattern_tags,
    promotion_tags,
)
from ecr_automation.models.domain import RepositoryRef, short_digest
from ecr_automation.models.events.base import SeverityCounts
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.models.versions import Version, parse_version
from ecr_automation.rules import AliasRule, GuardRule, PatternRule, PromoteRule, RetagRule, Rules, parse_rules
from tests.support import builders
from tests.support.fakes import FakeLedger, FakeRegistry

REPO = RepositoryRef("123456789012", "us-east-1", "team/web")
GUARD = GuardRule(mutable=["^latest$", "^quarantine-"])
RETAG = RetagRule(
    digest_tag="sha-{short_digest}",
    patterns=[PatternRule(match=r"^main-(?P<sha>[0-9a-f]{7,40})$", tags=["main"])],
    promote=[PromoteRule(block_at="HIGH", tags=["scanned"])],
)
RULES = Rules(guard=[GUARD], retag=[RETAG])


def _envelope(detail_type: str, source: str, detail: dict[str, Any], event_id: str) -> dict[str, Any]:
    return builders.ecr_event(detail_type, detail, event_id=event_id, source=source)


def push(
    tag: str | None,
    digest: str,
    event_id: str = "e-push",
    action: str = "PUSH",
    *,
    time: str = builders.TIME,
    repository: str = REPO.name,
) -> ImageActionEvent:
    detail: dict[str, Any] = {"result": "SUCCESS", "repository-name": repository, "image-digest": digest}
    detail["action-type"] = action
    if tag is not None:
        detail["image-tag"] = tag
    envelope = _envelope("ECR Image Action", "aws.ecr", detail, event_id)
    envelope["time"] = time
    return ImageActionEvent.model_validate(envelope)


def basic_scan(
    digest: str, counts: dict[str, int], status: str = "COMPLETE", event_id: str = "e-scan"
) -> ImageScanEvent:
    detail = {
        "scan-status": status,
        "repository-name": REPO.name,
        "image-digest": digest,
        "image-tags": [],
        "finding-severity-counts": counts,
    }
    return ImageScanEvent.model_validate(_envelope("ECR Image Scan", "aws.ecr", detail, event_id))


def inspector_scan(digest: str, counts: dict[str, int], event_id: str = "e-inspector") -> InspectorScanEvent:
    detail = {
        "scan-status": "INITIAL_SCAN_COMPLETE",
        "repository-name": REPO.arn,
        "image-digest": digest,
        "image-tags": [],
        "finding-severity-counts": {**counts, "TOTAL": sum(counts.values())},
    }
    return InspectorScanEvent.model_validate(_envelope("Inspector2 Scan", "aws.inspector2", detail, event_id))


def version(text: str) -> Version:
    parsed = parse_version(text)
    assert parsed is not None
    return parsed


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


def make_retagger(rules: Rules, registry: FakeRegistry, ledger: FakeLedger) -> Retagger:
    """Retag as deployed: it asks the guard's ownership whether it may act on a push."""
    return Retagger(rules, registry, ledger, ClaimAcceptance(rules, Ownership(ledger, registry)))


@pytest.fixture
def retagger(registry: FakeRegistry, ledger: FakeLedger) -> Retagger:
    return make_retagger(RULES, registry, ledger)


def tags_on(registry: FakeRegistry, digest: str) -> set[str]:
    return {tag for (repo, tag), value in registry.tags.items() if repo == REPO and value == digest}


def release(registry: FakeRegistry, retagger: Retagger, tag: str, seed: str | None = None) -> str:
    """Push ``tag`` as a new image and let retag react, as ECR and EventBridge would."""
    digest = registry.add_image(REPO, seed or tag, tag)
    retagger.handle(push(tag, digest, f"push-{tag}"))
    return digest


# --- decisions --------------------------------------------------------------------------------


def test_alias_candidates_follow_the_prefix_and_switches() -> None:
    names = [name for name, _ in alias_candidates(AliasRule(), version("v1.2.3"))]
    assert names == ["v1.2", "v1", "latest"]
    bare = [name for name, _ in alias_candidates(AliasRule(prefix="", latest=False), Version(1, 2, 3))]
    assert bare == ["1.2", "1"]
    assert [name for name, _ in alias_candidates(AliasRule(minor=False, major=False), version("v1.2.3"))] == ["latest"]


def test_alias_candidates_stand_for_their_own_series() -> None:
    (_, minor), (_, major), (_, latest) = alias_candidates(AliasRule(), version("v1.2.3"))
    assert minor(version("v1.2.9")) and not minor(version("v1.3.0"))
    assert major(version("v1.9.0")) and not major(version("v2.0.0"))
    assert latest(version("v0.0.1"))


@pytest.mark.parametrize(
    ("pushed", "held", "moves"),
    [
        ("v1.10.0", "v1.9.0", True),
        ("v1.9.5", "v1.10.0", False),
        ("v1.2.3", "v1.2.3-rc.1", True),
        ("v1.2.3-rc.1", "v1.2.3", False),
        ("v1.2.3_b2", "v1.2.3_b1", False),  # same precedence: the first one stays
    ],
)
def test_forward_decision_moves_only_to_higher_precedence(pushed: str, held: str, moves: bool) -> None:
    plan = forward_decision("v1", pushed, version(pushed), (held, version(held)))
    assert plan.write is moves
    if not moves:
        assert plan.reason.startswith(f"stays on {held}")


def test_forward_decision_moves_a_tag_held_by_an_image_without_version() -> None:
    plan = forward_decision("latest", "v1.0.0", version("v1.0.0"), None)
    assert plan.write and "no version tag" in plan.reason


def test_digest_tag_renders_the_first_12_hex_digits() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    assert digest_tag(RETAG, digest) == "sha-0123456789ab"
    assert digest_tag(RetagRule(), digest) is None  # disabled by default


def test_pattern_templates_use_named_groups_the_tag_and_the_digest() -> None:
    rule = RetagRule(
        patterns=[
            PatternRule(
                match=r"^(?P<branch>[a-z]+)-(?P<sha>[0-9a-f]{7,40})$", tags=["{branch}", "{branch}_{short_digest}"]
            ),
            PatternRule(match=r"^pr-(?P<number>\d+)$", tags=["preview-{number}"]),
        ]
    )
    digest = "sha256:" + "ab" * 32
    assert pattern_tags(rule, "main-abc1234", digest) == (["main", "main_abababababab"], [])
    assert pattern_tags(rule, "pr-42", digest) == (["preview-42"], [])
    assert pattern_tags(rule, "v1.2.3", digest) == ([], [])


def test_pattern_output_that_would_match_again_is_not_written() -> None:
    rule = RetagRule(patterns=[PatternRule(match=r"^build-(?P<n>\d+)$", tags=["build-{n}0", "{tag}"])])
    tags, notes = pattern_tags(rule, "build-7", "sha256:" + "0" * 64)
    assert tags == []  # "build-70" would chain; "{tag}" is the pushed tag itself
    assert notes == ["build-70 not written: it matches a pattern rule itself, so tags would chain"]


def test_pattern_output_too_long_for_a_tag_is_reported() -> None:
    rule = RetagRule(patterns=[PatternRule(match=r"^x-(?P<rest>.+)$", tags=["{rest}{rest}"])])
    tags, notes = pattern_tags(rule, "x-" + "a" * 100, "sha256:" + "0" * 64)
    assert tags == [] and "renders no valid tag" in notes[0]


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('digest_tag = "sha-{digest}"', "unknown placeholder {digest} (known: {short_digest})"),
        ('digest_tag = "sha:{short_digest}"', "renders tags ECR refuses"),
        ('digest_tag = "sha-{short_digest:>20}"', "takes no format spec"),
        ('digest_tag = "sha-{"', "template 'sha-{'"),
        ("[[retag.patterns]]\nmatch = '^main-(?P<sha>.+)$'\ntags = ['{commit}']", "unknown placeholder {commit}"),
        ("[[retag.patterns]]\nmatch = '^main-(.+'\ntags = ['main']", "RE2 cannot compile regular expression"),
        ("[[retag.promote]]\nblock_at = 'SEVERE'\ntags = ['scanned']", "retag.0.promote.0.block_at"),
        ("[[retag.promote]]\ntags = ['{tag}-scanned']", "unknown placeholder {tag}"),
        ("[retag.aliases]\nprefix = 'v/'", "retag.0.aliases.prefix"),
    ],
)
def test_invalid_retag_rules_fail_fast_with_one_line(snippet: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_rules(f'[[retag]]\nrepositories = ["*"]\n{snippet}\n', origin="rules.toml")
    text = str(raised.value)
    assert "\n" not in text and text.startswith("rules.toml: retag.0") and message in text


def test_bundled_rules_file_has_a_retag_section() -> None:
    from ecr_automation.config import BUNDLED_RULES_FILE  # noqa: PLC0415
    from ecr_automation.rules import load_rules  # noqa: PLC0415

    rules = load_rules(BUNDLED_RULES_FILE)
    rule = rules.retag_for("any/repository")
    assert rule is not None and rule.digest_tag == "sha-{short_digest}" and rule.promote
    assert rules.guard_for("any/repository") is not None


def test_promotion_is_gated_on_the_counts_at_or_above_the_threshold() -> None:
    rules = [PromoteRule(block_at="CRITICAL", tags=["scanned"]), PromoteRule(block_at="MEDIUM", tags=["release"])]
    digest = "sha256:" + "0" * 64

    clean, notes = promotion_tags(rules, SeverityCounts(), digest, counts_below_medium=True)
    assert [tag for tag, _ in clean] == ["scanned", "release"] and notes == []

    earned, notes = promotion_tags(
        rules, SeverityCounts.model_validate({"HIGH": 2, "LOW": 5}), digest, counts_below_medium=True
    )
    assert [tag for tag, _ in earned] == ["scanned"]
    assert notes == ["release not added: 2 finding(s) at MEDIUM or above (HIGH=2, LOW=5)"]


def test_inspector_counts_cannot_decide_a_gate_below_medium() -> None:
    rules = [PromoteRule(block_at="LOW", tags=["pristine"])]
    earned, notes = promotion_tags(rules, SeverityCounts(), "sha256:" + "0" * 64, counts_below_medium=False)
    assert earned == [] and "reports no LOW counts" in notes[0]


# --- pushes -----------------------------------------------------------------------------------


def test_first_release_gets_aliases_and_digest_tag_with_one_read_of_the_manifest(
    registry: FakeRegistry, retagger: Retagger
) -> None:
    digest = registry.add_image(REPO, "one", "v1.2.3")

    outcome = retagger.handle(push("v1.2.3", digest))

    assert outcome.result is RetagResult.RETAGGED
    assert outcome.written == ["v1.2", "v1", "latest", f"sha-{short_digest(digest)}"]
    assert tags_on(registry, digest) == {"v1.2.3", "v1.2", "v1", "latest", f"sha-{short_digest(digest)}"}
    # One read of the manifest and of where every wanted tag points; no alias is held by another image.
    assert registry.calls["BatchGetImage"] == 1
    assert registry.calls["PutImage"] == 4
    assert registry.calls["DescribeImages"] == 0


def test_the_first_release_with_the_bundled_rules_costs_one_read_and_four_writes(
    registry: FakeRegistry, ledger: FakeLedger
) -> None:
    # Given the rules file shipped with the application
    from ecr_automation.config import BUNDLED_RULES_FILE  # noqa: PLC0415
    from ecr_automation.rules import load_rules  # noqa: PLC0415

    retagger = make_retagger(load_rules(BUNDLED_RULES_FILE), registry, ledger)
    digest = registry.add_image(REPO, "one", "v1.2.3")

    # When the first release is pushed
    outcome = retagger.handle(push("v1.2.3", digest))

    # Then one BatchGetImage answers everything, nothing is described, and four tags are written
    assert outcome.written == ["v1.2", "v1", "latest", f"sha-{short_digest(digest)}"]
    assert registry.calls["BatchGetImage"] == 1
    assert registry.calls["DescribeImages"] == 0
    assert registry.calls["PutImage"] == 4


def test_a_second_release_describes_only_the_image_holding_the_aliases(
    registry: FakeRegistry, retagger: Retagger
) -> None:
    first = release(registry, retagger, "v1.2.3")
    second = registry.add_image(REPO, "two", "v1.3.0")
    registry.calls.clear()

    outcome = retagger.handle(push("v1.3.0", second, "push-v1.3.0"))

    assert outcome.written == ["v1.3", "v1", "latest", f"sha-{short_digest(second)}"]
    assert registry.tags_on(REPO, first) == {"v1.2.3", "v1.2", f"sha-{short_digest(first)}"}
    assert registry.calls == {"BatchGetImage": 1, "DescribeImages": 1, "PutImage": 4}


def test_out_of_order_push_moves_only_its_own_minor_alias(registry: FakeRegistry, retagger: Retagger) -> None:
    newer = release(registry, retagger, "v1.4.0")

    older = registry.add_image(REPO, "v1.2.3", "v1.2.3")
    outcome = retagger.handle(push("v1.2.3", older))

    assert "v1.2" in outcome.written and "v1" not in outcome.written and "latest" not in outcome.written
    assert registry.tags[(REPO, "v1.2")] == older
    assert registry.tags[(REPO, "v1")] == newer and registry.tags[(REPO, "latest")] == newer
    skipped = {skip.tag: skip.reason for skip in outcome.skipped}
    assert skipped["v1"] == "stays on v1.4.0, newer than v1.2.3"


def test_versions_compare_numerically_not_lexically(registry: FakeRegistry, retagger: Retagger) -> None:
    v190 = release(registry, retagger, "v1.9.0")
    v1100 = release(registry, retagger, "v1.10.0")
    v195 = release(registry, retagger, "v1.9.5")

    assert registry.tags[(REPO, "v1")] == v1100
    assert registry.tags[(REPO, "latest")] == v1100
    assert registry.tags[(REPO, "v1.10")] == v1100
    assert registry.tags[(REPO, "v1.9")] == v195
    assert tags_on(registry, v190) == {"v1.9.0", f"sha-{short_digest(v190)}"}


def test_prereleases_never_move_stable_aliases(registry: FakeRegistry, retagger: Retagger) -> None:
    stable = release(registry, retagger, "v1.4.0")

    candidate = registry.add_image(REPO, "rc", "v2.0.0-rc.1")
    outcome = retagger.handle(push("v2.0.0-rc.1", candidate))

    assert outcome.written == [f"sha-{short_digest(candidate)}"]
    assert outcome.notes == ["v2.0.0-rc.1 is a pre-release: aliases stay where they are"]
    assert registry.tags[(REPO, "latest")] == stable
    assert (REPO, "v2") not in registry.tags


def test_prereleases_move_aliases_when_a_rule_says_so(registry: FakeRegistry, ledger: FakeLedger) -> None:
    rules = Rules(guard=[GUARD], retag=[RetagRule(aliases=AliasRule(include_prereleases=True))])
    retagger = make_retagger(rules, registry, ledger)
    release(registry, retagger, "v1.4.0")
    rc = release(registry, retagger, "v2.0.0-rc.1")
    assert registry.tags[(REPO, "v2")] == rc and registry.tags[(REPO, "latest")] == rc

    final = release(registry, retagger, "v2.0.0")
    late_rc = release(registry, retagger, "v2.0.0-rc.2")  # delivered late: precedence below v2.0.0

    assert registry.tags[(REPO, "v2.0")] == final and registry.tags[(REPO, "latest")] == final
    assert tags_on(registry, late_rc) == {"v2.0.0-rc.2"}


def test_a_stable_alias_left_on_a_prerelease_is_moved_by_the_next_release(
    registry: FakeRegistry, retagger: Retagger
) -> None:
    rc = registry.add_image(REPO, "rc", "v1.5.0-rc.1", "v1", "latest")  # e.g. set by hand
    stable = release(registry, retagger, "v1.4.2")
    assert registry.tags[(REPO, "v1")] == stable and registry.tags[(REPO, "latest")] == stable
    assert tags_on(registry, rc) == {"v1.5.0-rc.1"}


def test_build_metadata_does_not_move_aliases(registry: FakeRegistry, retagger: Retagger) -> None:
    first = release(registry, retagger, "v1.2.3_build.1")
    second = registry.add_image(REPO, "b2", "v1.2.3_build.2")

    outcome = retagger.handle(push("v1.2.3_build.2", second))

    assert registry.tags[(REPO, "v1.2")] == first
    assert {skip.tag: skip.reason for skip in outcome.skipped}["v1"] == (
        "stays on v1.2.3_build.1: same precedence as v1.2.3_build.2"
    )


def test_an_alias_on_an_image_without_version_tag_is_moved_and_says_so(
    registry: FakeRegistry, retagger: Retagger
) -> None:
    registry.add_image(REPO, "hand-made", "latest", "experiment")
    digest = registry.add_image(REPO, "one", "v0.1.0")

    outcome = retagger.handle(push("v0.1.0", digest))

    assert registry.tags[(REPO, "latest")] == digest
    assert {skip.tag for skip in outcome.skipped} == set()
    assert "latest" in outcome.written


def test_pattern_rule_adds_its_tags(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = registry.add_image(REPO, "build", "main-abc1234")
    outcome = retagger.handle(push("main-abc1234", digest))
    assert outcome.written == [f"sha-{short_digest(digest)}", "main"]


def test_the_pushes_caused_by_retag_itself_write_nothing(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = registry.add_image(REPO, "one", "v1.2.3")
    first = retagger.handle(push("v1.2.3", digest, "e-1"))
    registry.calls.clear()

    for tag in first.written:  # ECR emits a PUSH event for every PutImage
        echo = retagger.handle(push(tag, digest, f"echo-{tag}"))
        assert echo.result is RetagResult.UNCHANGED, echo

    assert registry.calls["PutImage"] == 0 and registry.calls["DescribeImages"] == 0
    assert registry.calls["BatchGetImage"] == len(first.written)  # one look at the wanted tags each


def test_a_replayed_push_writes_nothing(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = registry.add_image(REPO, "one", "v1.2.3")
    event = push("v1.2.3", digest, "e-1")
    retagger.handle(event)
    writes = list(registry.writes)
    registry.calls.clear()

    replay = retagger.handle(event)

    assert replay.result is RetagResult.UNCHANGED
    assert registry.writes == writes
    assert registry.calls == {"BatchGetImage": 1}
    assert {skip.reason for skip in replay.skipped} == {"already there"}


def test_a_push_whose_tag_has_moved_on_since_is_stale(registry: FakeRegistry, ledger: FakeLedger) -> None:
    rules = Rules(retag=[RetagRule(patterns=[PatternRule(match="^main$", tags=["stable"])])])
    retagger = make_retagger(rules, registry, ledger)
    first = registry.add_image(REPO, "first", "main")
    second = registry.add_image(REPO, "second", "main")  # main moved on before the first event arrived
    retagger.handle(push("main", second, "e-2"))

    late = retagger.handle(push("main", first, "e-1"))

    assert late.result is RetagResult.IGNORED
    assert late.notes == [f"main has moved on to {short_digest(second)} since this push: nothing to derive"]
    assert registry.tags[(REPO, "stable")] == second


def test_never_acts_on_a_push_the_guard_rejected(registry: FakeRegistry, retagger: Retagger) -> None:
    original = release(registry, retagger, "v1.2.3")
    impostor = registry.add_image(REPO, "impostor", "v1.2.3")
    registry.calls.clear()

    outcome = retagger.handle(push("v1.2.3", impostor, "e-impostor", time="2026-11-28T12:05:00Z"))

    assert outcome.result is RetagResult.REFUSED
    assert outcome.notes == ["the tag guard rejected this push of v1.2.3"]
    assert registry.calls == {}
    assert registry.tags[(REPO, "latest")] == original


def test_the_guards_quarantine_push_is_ignored(registry: FakeRegistry, retagger: Retagger) -> None:
    impostor = registry.add_image(REPO, "impostor")
    quarantine = GUARD.quarantine_tag_for(impostor)
    registry.tags[(REPO, quarantine)] = impostor

    outcome = retagger.handle(push(quarantine, impostor))

    assert outcome.result is RetagResult.IGNORED
    assert registry.calls == {}


def test_never_writes_a_protected_tag(registry: FakeRegistry, ledger: FakeLedger) -> None:
    rule = RetagRule(patterns=[PatternRule(match=r"^release-(?P<v>\d+\.\d+\.\d+)$", tags=["v{v}", "stable"])])
    retagger = make_retagger(Rules(guard=[GUARD], retag=[rule]), registry, ledger)
    digest = registry.add_image(REPO, "one", "release-1.2.3")

    outcome = retagger.handle(push("release-1.2.3", digest))

    assert outcome.written == ["stable"]
    assert {skip.tag: skip.reason for skip in outcome.skipped} == {
        "v1.2.3": "protected by the tag guard: retag never moves it"
    }
    assert (REPO, "v1.2.3") not in registry.tags


@pytest.mark.parametrize(
    ("tag", "action", "note"),
    [
        ("v1.2.3", "DELETE", "action DELETE adds no tag"),
        ("v1.2.3", "UPDATE_STORAGE_CLASS", "action UPDATE_STORAGE_CLASS adds no tag"),
        (None, "PUSH", "push by digest: no tag to derive from"),
    ],
)
def test_events_with_nothing_to_derive_are_clear_no_ops(
    registry: FakeRegistry, retagger: Retagger, tag: str | None, action: str, note: str
) -> None:
    digest = registry.add_image(REPO, "one")
    outcome = retagger.handle(push(tag, digest, action=action))
    assert outcome == RetagOutcome(RetagResult.IGNORED, digest, notes=[note])
    assert registry.calls == {}


def test_untagged_pushes_get_a_digest_tag_only_when_asked(registry: FakeRegistry, ledger: FakeLedger) -> None:
    rule = RetagRule(digest_tag="sha-{short_digest}", digest_tag_untagged_pushes=True)
    retagger = make_retagger(Rules(retag=[rule]), registry, ledger)
    digest = registry.add_image(REPO, "child")

    outcome = retagger.handle(push(None, digest))

    assert outcome.written == [f"sha-{short_digest(digest)}"]


def test_a_repository_without_rule_is_left_alone(registry: FakeRegistry, ledger: FakeLedger) -> None:
    rules = Rules(retag=[RetagRule(repositories=["other/*"])])
    digest = registry.add_image(REPO, "one", "v1.0.0")
    outcome = make_retagger(rules, registry, ledger).handle(push("v1.0.0", digest))
    assert outcome.result is RetagResult.NO_RULE and registry.calls == {}


def test_immutable_refusals_are_reported_not_crashed_on(ledger: FakeLedger) -> None:
    registry = FakeRegistry(refuse_moves=True)
    retagger = make_retagger(RULES, registry, ledger)
    old = release(registry, retagger, "v1.0.0")
    new = registry.add_image(REPO, "new", "v1.1.0")

    outcome = retagger.handle(push("v1.1.0", new))

    assert outcome.result is RetagResult.RETAGGED
    assert outcome.written == ["v1.1", f"sha-{short_digest(new)}"]  # new tags are fine
    assert [skip.tag for skip in outcome.refused] == ["v1", "latest"]
    assert registry.tags[(REPO, "latest")] == old


def test_dry_run_writes_nothing_and_says_what_it_would_write(ledger: FakeLedger) -> None:
    registry = FakeRegistry(dry_run=True)
    digest = registry.add_image(REPO, "one", "v1.0.0")

    outcome = make_retagger(RULES, registry, ledger).handle(push("v1.0.0", digest))

    assert outcome.result is RetagResult.DRY_RUN and outcome.written == []
    assert [skip.tag for skip in outcome.skipped] == ["v1.0", "v1", "latest", f"sha-{short_digest(digest)}"]
    assert all(skip.reason.startswith("dry run: would write") for skip in outcome.skipped)
    assert tags_on(registry, digest) == {"v1.0.0"}


def test_an_image_deleted_before_retag_is_reported(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = registry.add_image(REPO, "one", "v1.0.0")
    registry.remove_image(REPO, digest)

    outcome = retagger.handle(push("v1.0.0", digest))

    assert outcome.result is RetagResult.IMAGE_GONE and registry.writes == []


# --- scans ------------------------------------------------------------------------------------


def scan_outcome(retagger: Retagger, event: RetagEvent) -> RetagOutcome:
    return retagger.handle(event)


def test_a_clean_basic_scan_promotes(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = release(registry, retagger, "v1.0.0")
    outcome = scan_outcome(retagger, basic_scan(digest, {"MEDIUM": 3, "LOW": 1}))
    assert outcome.result is RetagResult.RETAGGED and outcome.written == ["scanned"]
    assert registry.tags[(REPO, "scanned")] == digest


def test_a_dirty_scan_adds_nothing_and_says_why(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = release(registry, retagger, "v1.0.0")
    registry.calls.clear()

    outcome = scan_outcome(retagger, basic_scan(digest, {"CRITICAL": 1, "HIGH": 2}))

    assert outcome.result is RetagResult.BLOCKED
    assert outcome.notes == ["scanned not added: 3 finding(s) at HIGH or above (CRITICAL=1, HIGH=2)"]
    assert registry.calls["PutImage"] == 0 and (REPO, "scanned") not in registry.tags


def test_a_failed_scan_promotes_nothing(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = release(registry, retagger, "v1.0.0")
    outcome = scan_outcome(retagger, basic_scan(digest, {}, status="FAILED"))
    assert outcome.result is RetagResult.BLOCKED and outcome.notes == ["scan FAILED: nothing promoted"]


def test_a_clean_enhanced_scan_promotes(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = release(registry, retagger, "v1.0.0")
    outcome = scan_outcome(retagger, inspector_scan(digest, {"MEDIUM": 4}))
    assert outcome.written == ["scanned"]


def test_promotion_moves_only_forward(registry: FakeRegistry, retagger: Retagger) -> None:
    old = release(registry, retagger, "v1.0.0")
    new = release(registry, retagger, "v1.1.0")
    scan_outcome(retagger, basic_scan(new, {}, event_id="scan-new"))

    late = scan_outcome(retagger, basic_scan(old, {}, event_id="scan-old"))  # e.g. a manual re-scan

    assert registry.tags[(REPO, "scanned")] == new
    assert {skip.tag: skip.reason for skip in late.skipped} == {"scanned": "stays on v1.1.0, newer than v1.0.0"}


def test_a_replayed_scan_writes_nothing(registry: FakeRegistry, retagger: Retagger) -> None:
    digest = release(registry, retagger, "v1.0.0")
    event = basic_scan(digest, {})
    scan_outcome(retagger, event)
    registry.calls.clear()

    again = scan_outcome(retagger, event)

    assert again.result is RetagResult.UNCHANGED
    assert registry.calls == {"BatchGetImage": 1, "DescribeImages": 1}  # the view, and the image's own tags


def test_a_quarantined_image_is_never_promoted(registry: FakeRegistry, retagger: Retagger) -> None:
    impostor = registry.add_image(REPO, "impostor")
    registry.tags[(REPO, GUARD.quarantine_tag_for(impostor))] = impostor

    outcome = scan_outcome(retagger, basic_scan(impostor, {}))

    assert outcome.result is RetagResult.REFUSED and (REPO, "scanned") not in registry.tags


def test_scans_without_promotion_rule_are_left_alone(registry: FakeRegistry, ledger: FakeLedger) -> None:
    digest = registry.add_image(REPO, "one", "v1.0.0")
    outcome = make_retagger(Rules(retag=[RetagRule()]), registry, ledger).handle(basic_scan(digest, {}))
    assert outcome.result is RetagResult.NO_RULE and registry.calls == {}


def test_floating_tags_are_decided_and_written_under_one_lease_per_repository(
    registry: FakeRegistry, ledger: FakeLedger, retagger: Retagger
) -> None:
    release(registry, retagger, "v1.2.3")
    assert ledger.leases_taken == ["floating-tags"]
    assert ledger.held == {}  # released afterwards

    ledger.leases_taken.clear()
    digest = registry.add_image(REPO, "main", "main-abc1234")
    retagger.handle(push("main-abc1234", digest, "e-main"))
    assert ledger.leases_taken == []  # digest and pattern tags are not floating: no lease needed


def test_a_holder_whose_lease_runs_out_writes_nothing_more_and_raises(
    registry: FakeRegistry, ledger: FakeLedger, retagger: Retagger
) -> None:
    # Given a lease that is lost right after the first write
    ledger.lease_checks_allowed = 1
    digest = registry.add_image(REPO, "one", "v1.2.3")

    # When retag writes the aliases of the first release
    with pytest.raises(LeaseLostError):
        retagger.handle(push("v1.2.3", digest))

    # Then only the first tag was written; the retry of the event writes the rest
    assert registry.calls["PutImage"] == 1
    assert registry.tags_on(REPO, digest) == {"v1.2.3", "v1.2"}
    assert ledger.held == {}


# --- what retag leaves alone --------------------------------------------------------------------


def test_a_quarantined_image_gets_no_aliases(registry: FakeRegistry, retagger: Retagger) -> None:
    # Given an image the guard quarantined, now pushed under a release tag of its own
    stable = release(registry, retagger, "v1.4.0")
    impostor = registry.add_image(REPO, "impostor", "v9.9.9")
    registry.tags[(REPO, GUARD.quarantine_tag_for(impostor))] = impostor

    outcome = retagger.handle(push("v9.9.9", impostor, "e-impostor"))

    assert outcome.result is RetagResult.REFUSED
    assert outcome.written == []
    assert registry.tags[(REPO, "latest")] == stable and (REPO, "v9") not in registry.tags
    assert registry.tags_on(REPO, impostor) == {"v9.9.9", GUARD.quarantine_tag_for(impostor)}


def test_a_pull_through_cache_repository_is_left_to_its_upstream(registry: FakeRegistry, ledger: FakeLedger) -> None:
    cache = RepositoryRef(REPO.registry_id, REPO.region, "ecr-public/library/nginx")
    retagger = make_retagger(RULES, registry, ledger)
    digest = registry.add_image(cache, "nginx", "1.27.0")

    outcome = retagger.handle(push("1.27.0", digest, repository=cache.name))

    assert outcome.result is RetagResult.IGNORED
    assert outcome.notes == ["a pull-through cache mirrors its upstream's tags"]
    assert registry.writes == [] and registry.calls["BatchGetImage"] == 0


# --- promotion: forward only, and multi-arch ---------------------------------------------------


def test_a_promotion_tag_stays_on_a_release_when_an_unversioned_image_scans_clean(
    registry: FakeRegistry, retagger: Retagger
) -> None:
    # Given a release that earned "scanned"
    released = release(registry, retagger, "v1.0.0")
    retagger.handle(basic_scan(released, {}, event_id="scan-release"))
    assert registry.tags[(REPO, "scanned")] == released

    # When a branch build without any version tag scans clean
    build = registry.add_image(REPO, "branch", "main-abc1234")
    retagger.handle(push("main-abc1234", build, "push-branch"))
    outcome = retagger.handle(basic_scan(build, {}, event_id="scan-branch"))

    # Then "scanned" stays on the release
    assert registry.tags[(REPO, "scanned")] == released
    assert {skip.tag: skip.reason for skip in outcome.skipped} == {
        "scanned": f"stays on v1.0.0: {short_digest(build)} has no version tag"
    }


def multi_arch_release(registry: FakeRegistry, retagger: Retagger) -> tuple[str, str, str, str]:
    """Push a v1.0.0 index of two platforms and an attestation, as buildx does; returns their digests."""
    amd64 = registry.add_image(REPO, "amd64")
    arm64 = registry.add_image(REPO, "arm64")
    attestation = registry.add_image(REPO, "attestation")
    index = registry.add_index(REPO, [(amd64, "amd64"), (arm64, "arm64")], "v1.0.0", attestations=[attestation])
    outcome = retagger.handle(push("v1.0.0", index, "push-index"))
    assert outcome.result is RetagResult.RETAGGED and "scanned" not in outcome.written
    return index, amd64, arm64, attestation


def test_a_tagged_push_of_an_index_records_its_platforms_not_its_attestations(
    registry: FakeRegistry, ledger: FakeLedger, retagger: Retagger
) -> None:
    index, amd64, arm64, attestation = multi_arch_release(registry, retagger)

    assert ledger.parents_of(REPO, amd64) == [index]
    assert ledger.parents_of(REPO, arm64) == [index]
    assert ledger.parents_of(REPO, attestation) == []


def test_a_multi_arch_index_is_promoted_only_once_every_platform_scanned_clean(
    registry: FakeRegistry, retagger: Retagger
) -> None:
    # Given a v1.0.0 index whose platform manifests have not been scanned yet
    index, amd64, arm64, _ = multi_arch_release(registry, retagger)

    # When the first platform's clean scan arrives
    registry.scans[amd64] = SeverityCounts()
    first = retagger.handle(basic_scan(amd64, {}, event_id="scan-amd64"))

    # Then nothing is promoted: the other platform has no scan yet
    assert first.result is RetagResult.BLOCKED
    assert first.notes == [f"waiting for the scan of platform {short_digest(arm64)}: nothing promoted yet"]
    assert (REPO, "scanned") not in registry.tags

    # When the second platform's clean scan arrives (the attestation is never scanned and never waited for)
    registry.scans[arm64] = SeverityCounts()
    second = retagger.handle(basic_scan(arm64, {}, event_id="scan-arm64"))

    # Then the index (not a platform) is promoted
    assert second.written == ["scanned"]
    assert registry.tags[(REPO, "scanned")] == index


def test_one_dirty_platform_keeps_a_multi_arch_index_from_promotion(registry: FakeRegistry, retagger: Retagger) -> None:
    index, amd64, arm64, _ = multi_arch_release(registry, retagger)
    registry.scans[amd64] = SeverityCounts.model_validate({"HIGH": 1})
    retagger.handle(basic_scan(amd64, {"HIGH": 1}, event_id="scan-amd64"))

    outcome = retagger.handle(basic_scan(arm64, {}, event_id="scan-arm64"))

    assert outcome.result is RetagResult.BLOCKED
    assert outcome.notes == ["scanned not added: 1 finding(s) at HIGH or above (HIGH=1)"]
    assert (REPO, "scanned") not in registry.tags and registry.tags_on(REPO, index) >= {"v1.0.0"}
