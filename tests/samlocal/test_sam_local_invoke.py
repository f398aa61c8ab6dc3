"""Every sample in events/ through `sam local invoke`, in the Lambda-like container, against moto.

Each sample goes to the function(s) whose EventBridge rule in template.yaml matches it (moto's own
EventPattern matcher), SQS samples to the function their queue invokes, and a sample no rule routes to
TagGuardFunction (what a user sees invoking it anyway). The stand-in first holds what the event reports
(LocalWorld.apply, as `ecr-automation invoke --embedded` does) and, where a case says so, what an earlier
event left. Asserted: the function's own result on stdout (sam exits 0 even when the function raises), and
the state left in moto: tags, ledger items, dead letters, published events and notifications.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto.events.models import EventPattern

from ecr_automation.local.runner import queue_sources
from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate
from tests.conftest import EVENTS
from tests.samlocal.sam import TEMPLATE
from tests.samlocal.stand_in import SamLocal, StandIn

TAGGED = "sha256:e80a9a9bcbbc57bd3b1ba40dac822ef748c634adf59c6c2042bb424e4dba58d4"
CONFLICTING = "sha256:afa020ece140278d794f21b5c1cbeb63b3833e6f51bf2cea5e129c8b6d5747f2"
LATEST = "sha256:fb900a40bfba0f5f60556137c88645fa28e42a54a54e27f5eedf99bdd2ee3025"
# Scenarios and findings are inputs of `simulate`, not events.
NOT_EVENTS = {"scenarios", "findings"}
UNROUTED_FUNCTION = "TagGuardFunction"


def samples() -> list[str]:
    return sorted(
        path.relative_to(EVENTS).as_posix() for path in EVENTS.rglob("*.json") if not NOT_EVENTS & set(path.parts)
    )


def routes() -> list[tuple[str, str]]:
    """(function, sample) for every sample: by the template's rules, SQS samples to the queue's function."""
    template = SamTemplate.load(TEMPLATE)
    sqs_functions = sorted({source.function for source in queue_sources(template)})
    pairs = []
    for sample in samples():
        event = json.loads((EVENTS / sample).read_text())
        if sample.startswith("sqs/"):
            pairs += [(function, sample) for function in sqs_functions]
            continue
        matched = [
            logical_id
            for logical_id, function in template.functions().items()
            if isinstance(event, dict)
            and any(EventPattern.load(json.dumps(rule.pattern)).matches_event(event) for rule in function.rules)  # type: ignore[arg-type]
        ]
        pairs += [(function, sample) for function in matched or [UNROUTED_FUNCTION]]
    return pairs


# -- what earlier events left ---------------------------------------------------------------------------
def claimed_by_tagged_push(stand: StandIn, sam_local: SamLocal) -> None:
    """v1.2.3 pushed and claimed: the tag guard ran on the tagged push's sample, the same way, first."""
    sample = EVENTS / "ecr-push-tagged.json"
    stand.world.apply(json.loads(sample.read_text()))
    seeded = sam_local.invoke(stand, "TagGuardFunction", sample, "ecr-push-tagged.json").result
    assert seeded.get("result") == "claimed", seeded
    assert stand.ledger("tag#")["v1.2.3"]["digest"] == TAGGED


def claimed_with_an_alias(stand: StandIn, sam_local: SamLocal) -> None:
    claimed_by_tagged_push(stand, sam_local)
    stand.world.ensure_image(stand.world.repository("team/web"), TAGGED, "v1.2")


RELEASES = [f"v1.{minor}.0" for minor in range(8)]


def release_digest(tag: str) -> str:
    return "sha256:" + hashlib.sha256(f"samlocal release {tag}".encode()).hexdigest()


def releases_under_the_put_policy(stand: StandIn, sam_local: SamLocal) -> None:
    """team/web holds eight releases, a day apart, and the lifecycle policy the CloudTrail event says was put."""
    del sam_local
    event = json.loads((EVENTS / "cloudtrail-put-lifecycle-policy.json").read_text())
    repository = stand.world.repository("team/web")
    start = datetime(2026, 10, 1, 12, tzinfo=UTC)
    for day, tag in enumerate(RELEASES):
        stand.world.ensure_image(repository, release_digest(tag), pushed_at=start + timedelta(days=day))
        stand.world.ensure_image(repository, release_digest(tag), tag)
    stand.world.ecr.put_lifecycle_policy(
        repositoryName="team/web", lifecyclePolicyText=event["detail"]["requestParameters"]["lifecyclePolicyText"]
    )


def lifecycle_violation_published(stand: StandIn, result: dict[str, Any]) -> None:
    """The three oldest of eight releases fall outside "keep the 5 newest": reported, the policy left as it is."""
    del result
    published = [event for event in stand.captured_events() if event["detail-type"] == "Lifecycle Policy Violation"]
    assert len(published) == 1, stand.captured_events()
    expired = {image["image-digest"] for image in published[0]["detail"]["images"]}
    assert expired == {release_digest(tag) for tag in RELEASES[:3]}
    assert set(stand.tags()) == set(RELEASES), "nothing expired, nothing changed"


# -- state checks -------------------------------------------------------------------------------------------
def claims(expected: dict[str, str]) -> Callable[[StandIn, dict[str, Any]], None]:
    def check(stand: StandIn, result: dict[str, Any]) -> None:
        del result
        assert {tag: item["digest"] for tag, item in stand.ledger("tag#").items()} == expected

    return check


def tags_include(expected: dict[str, str]) -> Callable[[StandIn, dict[str, Any]], None]:
    def check(stand: StandIn, result: dict[str, Any]) -> None:
        del result
        tags = stand.tags()
        assert {tag: tags.get(tag) for tag in expected} == expected, tags

    return check


def tags_written(stand: StandIn, result: dict[str, Any]) -> None:
    """Every tag the function says it wrote is in ECR, on the pushed digest."""
    tags = stand.tags()
    assert result["written"], result
    assert {tag: tags.get(tag) for tag in result["written"]} == dict.fromkeys(result["written"], result["digest"])


def nothing_written(stand: StandIn, result: dict[str, Any]) -> None:
    assert result["written"] == []
    assert not {tag for tag in stand.tags() if tag in {"scanned", "v1", "v1.2"}}, stand.tags()


def violation_published(detail_type: str) -> Callable[[StandIn, dict[str, Any]], None]:
    def check(stand: StandIn, result: dict[str, Any]) -> None:
        del result
        published = [event for event in stand.captured_events() if event["detail-type"] == detail_type]
        assert len(published) == 1, stand.captured_events()
        assert published[0]["detail"]["image-tag"] == "v1.2.3"
        assert published[0]["detail"]["claimed-digest"] == TAGGED

    return check


def notified(stand: StandIn, result: dict[str, Any]) -> None:
    """Each message the function says it posted went out on its SNS topic, once, and is recorded as sent."""
    published = stand.notifications()
    assert result["messages"], result
    for message in result["messages"]:
        assert sum(message in body for body in published) == 1, (message, published)
    assert stand.ledger(""), "the notifier records what it posted, so a redelivery posts nothing"


def nothing_notified(stand: StandIn, result: dict[str, Any]) -> None:
    assert result["messages"] == []
    assert stand.notifications() == []


def nothing_queued(stand: StandIn, result: dict[str, Any]) -> None:
    assert result["jobs"] == []
    assert stand.messages("ReplicationQueue") == []


def actor_recorded(stand: StandIn, result: dict[str, Any]) -> None:
    del result
    actors = stand.ledger("actor#")
    assert any(CONFLICTING in key for key in actors), actors
    assert any("ci-deployer" in str(item) for item in actors.values()), actors


def each_record_dead_lettered(stand: StandIn, result: dict[str, Any]) -> None:
    assert result == {"batchItemFailures": []}
    letters = stand.dead_letters()
    assert len(letters) == 2, letters
    bodies = [json.loads(letter["Body"]) for letter in letters]
    # The message body exactly as SQS delivered it: a string holding the event's JSON.
    events = [json.loads(body) if isinstance(body, str) else body for body in bodies]
    assert {event["detail"]["image-tag"] for event in events} == {"v1.2.3", "latest"}
    for letter in letters:
        assert letter["MessageAttributes"]["reason"]["StringValue"].startswith("not a replication job")
        assert letter["MessageAttributes"]["function"]["StringValue"] == "ReplicationWorkerFunction"


def copy_failed_for_redelivery(stand: StandIn, result: dict[str, Any]) -> None:
    """No registry serves the job's source here: the invocation fails so SQS redelivers the job (its first
    delivery, so no final failure is published), and nothing reaches the destination."""
    assert "errorType" in result, result
    assert "team/web" in json.dumps(result), result
    assert stand.captured_events() == []
    assert stand.dead_letters() == []
    ecr_west = stand.world.ecr_in("us-west-2")
    held = [
        image
        for repository in ecr_west.describe_repositories()["repositories"]
        for image in ecr_west.list_images(repositoryName=repository["repositoryName"])["imageIds"]
    ]
    assert held == []


@dataclass(frozen=True)
class Case:
    result: dict[str, Any]  # a subset of the function's result
    setup: Callable[[StandIn, SamLocal], None] | None = None
    checks: tuple[Callable[[StandIn, dict[str, Any]], None], ...] = ()
    reason: str | None = None  # rejected / ignored: the reason starts so
    expect_error: bool = False  # the function raised (Lambda's error object on stdout)


PROCESSED = {"status": "processed"}
GUARD, RETAG, NOTIFY, PLANNER, WORKER, LIFECYCLE = (
    "TagGuardFunction",
    "RetagFunction",
    "NotifyFunction",
    "ReplicationPlannerFunction",
    "ReplicationWorkerFunction",
    "LifecycleGuardFunction",
)


def rejected(reason: str) -> Case:
    return Case({"status": "rejected"}, reason=reason)


def ignored(reason: str) -> Case:
    return Case({"status": "ignored"}, reason=reason)


CASES: dict[tuple[str, str], Case] = {
    # -- the tag guard -----------------------------------------------------------------------------------
    (GUARD, "ecr-push-tagged.json"): Case(
        {**PROCESSED, "result": "claimed", "tag": "v1.2.3"}, checks=(claims({"v1.2.3": TAGGED}),)
    ),
    (GUARD, "ecr-push-conflicting.json"): Case(
        {**PROCESSED, "result": "reverted", "tag": "v1.2.3"},
        setup=claimed_by_tagged_push,
        checks=(
            claims({"v1.2.3": TAGGED}),
            tags_include({"v1.2.3": TAGGED, "quarantine-afa020ece140": CONFLICTING}),
            violation_published("Tag Guard Violation"),
        ),
    ),
    (GUARD, "ecr-push-latest.json"): Case(
        {**PROCESSED, "result": "not_protected", "tag": "latest"}, checks=(claims({}), tags_include({"latest": LATEST}))
    ),
    # The image keeps another tag (an alias retag wrote), so the deleted release tag can be put back.
    (GUARD, "ecr-delete.json"): Case(
        {**PROCESSED, "result": "restored", "tag": "v1.2.3"},
        setup=claimed_with_an_alias,
        checks=(claims({"v1.2.3": TAGGED}), tags_include({"v1.2.3": TAGGED, "v1.2": TAGGED})),
    ),
    # The whole image is gone (by digest, every tag): nothing to put back, so a CRITICAL loss is reported.
    (GUARD, "ecr-delete-by-digest.json"): Case(
        {**PROCESSED, "result": "unrecoverable", "tag": "v1.2.3"},
        setup=claimed_by_tagged_push,
        checks=(violation_published("Tag Guard Violation"),),
    ),
    # -- the lifecycle guard: the policy the call put would expire the three oldest releases -------------------
    (LIFECYCLE, "cloudtrail-put-lifecycle-policy.json"): Case(
        {**PROCESSED, "result": "violation"},
        setup=releases_under_the_put_policy,
        checks=(lifecycle_violation_published,),
    ),
    (NOTIFY, "lifecycle-violation.json"): Case({**PROCESSED, "result": "posted"}, checks=(notified,)),
    (GUARD, "ecr-restore.json"): Case({**PROCESSED, "result": "unchanged"}, checks=(claims({}),)),
    (GUARD, "cloudtrail-put-image.json"): Case(
        {**PROCESSED, "result": "recorded", "violations_attributed": 0}, checks=(actor_recorded,)
    ),
    (GUARD, "ecr-archive.json"): Case({**PROCESSED, "result": "not_protected", "notes": ["archiving moves no tag"]}),
    # -- retag ---------------------------------------------------------------------------------------------
    (RETAG, "ecr-push-tagged.json"): Case(
        {**PROCESSED, "result": "retagged", "written": ["v1.2", "v1", "latest", "sha-e80a9a9bcbbc"]},
        checks=(tags_written,),
    ),
    (RETAG, "ecr-push-conflicting.json"): Case(
        {**PROCESSED, "result": "retagged", "written": ["v1.2", "v1", "latest", "sha-afa020ece140"]},
        checks=(tags_written,),
    ),
    (RETAG, "ecr-push-latest.json"): Case(
        {**PROCESSED, "result": "retagged", "written": ["sha-fb900a40bfba"]}, checks=(tags_written,)
    ),
    (RETAG, "ecr-push-by-digest.json"): Case(
        {**PROCESSED, "result": "ignored", "notes": ["push by digest: no tag to derive from"]},
        checks=(nothing_written,),
    ),
    (RETAG, "ecr-scan-clean.json"): Case(
        {**PROCESSED, "result": "retagged", "written": ["scanned"]}, checks=(tags_written,)
    ),
    (RETAG, "ecr-scan-findings.json"): Case({**PROCESSED, "result": "blocked"}, checks=(nothing_written,)),
    (RETAG, "inspector-scan.json"): Case({**PROCESSED, "result": "blocked"}, checks=(nothing_written,)),
    # -- the notifier (posts to its SNS topic here; no Slack webhook is configured) --------------------------
    (NOTIFY, "ecr-scan-findings.json"): Case({**PROCESSED, "result": "posted"}, checks=(notified,)),
    (NOTIFY, "ecr-scan-clean.json"): Case({**PROCESSED, "result": "nothing_to_post"}, checks=(nothing_notified,)),
    (NOTIFY, "ecr-scan-failed.json"): Case({**PROCESSED, "result": "posted"}, checks=(notified,)),
    (NOTIFY, "inspector-scan.json"): Case({**PROCESSED, "result": "posted"}, checks=(notified,)),
    (NOTIFY, "inspector-finding.json"): Case({**PROCESSED, "result": "nothing_to_post"}, checks=(nothing_notified,)),
    (NOTIFY, "guard-violation.json"): Case({**PROCESSED, "result": "posted"}, checks=(notified,)),
    (NOTIFY, "guard-violation-attributed.json"): Case({**PROCESSED, "result": "posted"}, checks=(notified,)),
    (NOTIFY, "ecr-replication-failed.json"): Case({**PROCESSED, "result": "posted"}, checks=(notified,)),
    (NOTIFY, "replication-failed.json"): Case({**PROCESSED, "result": "posted"}, checks=(notified,)),
    # -- the replication planner (the default rules replicate nothing) ---------------------------------------
    **{
        (PLANNER, sample): Case({**PROCESSED, "result": "nothing"}, checks=(nothing_queued,))
        for sample in (
            "ecr-push-tagged.json",
            "ecr-push-conflicting.json",
            "ecr-push-latest.json",
            "ecr-scan-findings.json",
            "ecr-scan-clean.json",
            "inspector-scan.json",
        )
    },
    # -- the replication worker, invoked by its queue -------------------------------------------------------
    (WORKER, "sqs/sqs-batch.json"): Case({}, checks=(each_record_dead_lettered,)),
    (WORKER, "sqs/replication-job.json"): Case({}, expect_error=True, checks=(copy_failed_for_redelivery,)),
    # -- bad input: rejected, whole, to the dead-letter queue --------------------------------------------------
    **{
        (function, "malformed/missing-digest.json"): rejected("detail.image-digest")
        for function in (GUARD, RETAG, PLANNER)
    },
    **{
        (function, "malformed/bad-repository-name.json"): rejected("detail.repository-name")
        for function in (GUARD, RETAG, PLANNER)
    },
    **{(function, "malformed/bad-tag.json"): rejected("detail.image-tag") for function in (GUARD, RETAG, PLANNER)},
    **{
        (function, "malformed/mistyped-counts.json"): rejected("detail.finding-severity-counts")
        for function in (RETAG, NOTIFY, PLANNER)
    },
    (GUARD, "malformed/not-an-object.json"): rejected("event is a JSON list"),
    (GUARD, "malformed/wrong-source.json"): rejected("source: 'my.app'"),
    # -- events no rule routes here: ignored, one line saying why ---------------------------------------------
    (GUARD, "unknown/unknown-detail-type.json"): ignored("unknown detail-type 'ECR Something New'"),
    (GUARD, "unknown/unknown-action-type.json"): ignored("unknown action-type 'TELEPORT'"),
    (GUARD, "ecr-pull-through-cache.json"): ignored("'ECR Pull Through Cache Action' is not handled"),
    (GUARD, "ecr-referrer-action.json"): ignored("'ECR Referrer Action' is not handled"),
    (GUARD, "ecr-replication-success.json"): ignored("'ECR Replication Action' is not handled"),
    (GUARD, "ecr-scan-resource-change.json"): ignored("'ECR Scan Resource Change' is not handled"),
}

ROUTES = routes()


def test_every_routed_sample_has_a_case() -> None:
    missing = sorted(set(ROUTES) - set(CASES))
    stale = sorted(set(CASES) - set(ROUTES))
    assert not missing, f"add what these invocations must do to CASES: {missing}"
    assert not stale, f"CASES no sample is routed to any more: {stale}"


@pytest.mark.slow
@pytest.mark.parametrize(("function", "sample"), ROUTES, ids=[f"{function}:{sample}" for function, sample in ROUTES])
def test_sample_under_sam_local_invoke(sam_local: SamLocal, stand_in: StandIn, function: str, sample: str) -> None:
    case = CASES.get((function, sample))
    assert case is not None, f"no case for {function} {sample}"
    event_path = EVENTS / sample
    raw = json.loads(event_path.read_text())
    if case.setup is not None:
        case.setup(stand_in, sam_local)
    stand_in.world.apply(raw)  # what the event reports has happened (a push, a scan, a delete)

    invocation = sam_local.invoke(stand_in, function, event_path, sample)
    result = invocation.result

    if case.expect_error:
        assert set(result) >= {"errorType", "errorMessage"}, result
    else:
        assert "errorType" not in result, f"{function} raised on {sample}: {result}\n{invocation.stderr[-4000:]}"
        assert {key: result.get(key) for key in case.result} == case.result, result
    status = result.get("status") if isinstance(result, dict) else None
    if case.reason is not None:
        assert case.reason in str(result.get("reason")), result
    if status == "rejected":
        _assert_dead_lettered(stand_in, function, raw, result)
    elif not sample.startswith("sqs/"):  # the SQS cases check their dead letters themselves
        assert stand_in.dead_letters() == [], "nothing but rejected input goes to the dead-letter queue"
    if status == "ignored":
        assert stand_in.ledger("") == {}, "an ignored event leaves nothing in the ledger"
        assert stand_in.captured_events() == []
    for check in case.checks:
        check(stand_in, result)
    assert "Invoking" in invocation.stderr and "REPORT RequestId" in invocation.stderr, invocation.stderr[-2000:]


def _assert_dead_lettered(stand: StandIn, function: str, raw: object, result: dict[str, Any]) -> None:
    letters = stand.dead_letters()
    assert len(letters) == 1, letters
    assert json.loads(letters[0]["Body"]) == raw, "the event is dead-lettered whole"
    attributes = letters[0]["MessageAttributes"]
    assert attributes["reason"]["StringValue"] == result["reason"]
    assert attributes["function"]["StringValue"] == function
    assert stand.ledger("tag#") == {}


def test_the_copy_runs_natively_and_declares_the_stand_in_variables(sam_local: SamLocal) -> None:
    """What `sam local invoke` ran: the built copy, on this host's architecture, every function able to
    take AWS_ENDPOINT_URL from --env-vars."""
    built = SamTemplate.load(sam_local.built_template)
    function_globals = built.body["Globals"]["Function"]
    assert function_globals["Architectures"] in (["x86_64"], ["arm64"])
    assert "AWS_ENDPOINT_URL" in function_globals["Environment"]["Variables"]
    copy = json.loads(sam_local.built_template.parent.parent.joinpath("template.json").read_text())
    assert set(built.functions()) == {
        logical_id for logical_id, resource in copy["Resources"].items() if resource["Type"] == FUNCTION_TYPE
    }
    assert Path(sam_local.built_template).parent.joinpath("TagGuardFunction", "ecr_automation").is_dir()
