"""Adversarial tests of the notifier's pure core and workflow (in-memory fakes, no AWS, no HTTP).

Hostile text from every outside source, Slack's limits, exactly-once in effect under reordering and
updates, noise control edges, rules refused at load, and memory with 100,000 findings.
"""

from __future__ import annotations

import copy
import gc
import re
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ecr_automation.adapters.findings import EcrFindings
from ecr_automation.config import ConfigurationError
from ecr_automation.logic.notify import (
    MAX_BLOCKS,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER,
    MAX_TEXT,
    SCANNER_BASIC,
    SCANNER_ENHANCED,
    Notifier,
    NotifyResult,
    render_failed_scan,
    render_new_finding,
    render_replication_failure,
    render_scan,
    render_violation,
    scan_fingerprint,
    summarize,
)
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.events.application import TagGuardViolationAttributedEvent
from ecr_automation.models.events.base import Severity
from ecr_automation.models.events.inspector_findings import InspectorFindingEvent
from ecr_automation.models.events.replication import ReplicationActionEvent
from ecr_automation.models.events.scans import ImageScanEvent
from ecr_automation.models.findings import Finding, Message, ScannedImage
from ecr_automation.rules import IgnoredVulnerability, NotifyRule, Rules, parse_rules
from tests.conftest import load_event
from tests.support.fakes import FakeRegistry
from tests.support.notify_fakes import FakeFindings, FakeSentLedger, RecordingSink
from tests.support.slack_sink import block_kit_errors

REPO = RepositoryRef("123456789012", "us-east-1", "team/web")
DIGEST = "sha256:e80a9a9bcbbc57bd3b1ba40dac822ef748c634adf59c6c2042bb424e4dba58d4"
IMAGE = ScannedImage(REPO, DIGEST, ("v1.2.3",))
NOW = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
TODAY = NOW.date()

ZERO_WIDTH_RTL = "\u200b\u200d\u202e\u2066"
HOSTILE_PAYLOADS = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123>",
    "<#C123>",
    "<!subteam^S123>",
    "<https://evil.example|click>",
    "&lt;!channel&gt; &amp;",
    "``` *bold _it_ ~s~ ` >quote",
    f"<!chan{ZERO_WIDTH_RTL}nel> {ZERO_WIDTH_RTL}<https://evil.example|x>",
    "🔥💣 <!here> 🔥" * 20,
    "A" * 10_000 + "<!channel>",
    "line\nbreak\n<!channel>\r\n\t<@U123>",
]
# Our own links: the console and the finding sources this module controls (plus the default NVD-like ones).
OWN_LINK = re.compile(r"<(https://[^|<>\s]+)\|[^<>|]*>")


def finding(vulnerability_id: str = "CVE-2024-0001", severity: Severity = Severity.HIGH, **fields: Any) -> Finding:
    values: dict[str, Any] = {
        "package": "openssl",
        "installed_version": "3.0.1",
        "fixed_version": "3.0.2",
        "source_url": f"https://nvd.nist.gov/vuln/detail/{vulnerability_id}",
    }
    values.update(fields)
    return Finding(vulnerability_id, severity, **values)


def rule(**fields: Any) -> NotifyRule:
    return NotifyRule(repositories=["*"], **fields)


def mrkdwn_texts(message: Message) -> list[str]:
    """The fallback and every mrkdwn text object (what Slack parses for mentions and links)."""
    found = [message.text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    return found


def plain_texts(message: Message) -> list[str]:
    return [block["text"]["text"] for block in message.blocks if block["type"] == "header"]


def valid(message: Message) -> Message:
    assert block_kit_errors({"text": message.text, "blocks": message.blocks}) == []
    assert 0 < len(message.blocks) <= MAX_BLOCKS
    for block in message.blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= MAX_HEADER
        if block["type"] == "section":
            assert "text" not in block or 0 < len(block["text"]["text"]) <= MAX_TEXT
            assert len(block.get("fields", [])) <= MAX_FIELDS
            assert all(len(item["text"]) <= MAX_FIELD_TEXT for item in block.get("fields", []))
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            assert all(len(element["text"]) <= MAX_TEXT for element in block["elements"])
    return message


def assert_no_control_sequence(message: Message, allowed_urls: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """No mention, no broadcast, no link but our own: every ``<`` Slack would parse opens a known link."""
    for text in mrkdwn_texts(message):
        links = OWN_LINK.findall(text)
        stripped = OWN_LINK.sub("", text)
        assert "<" not in stripped and ">" not in stripped, text[:300]
        for url in links:
            assert "evil" not in url and (
                url in allowed_urls
                or url.startswith("https://us-east-1.console.aws.amazon.com/ecr/")
                or url.startswith("https://nvd.nist.gov/")
            ), url
    for text in plain_texts(message):
        assert "<" not in text and ">" not in text


# --- hostile text -----------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE_PAYLOADS)
@pytest.mark.parametrize("where", ["package", "installed_version", "fixed_version", "title", "vulnerability_id"])
def test_hostile_finding_text_in_a_scan_neither_pings_nor_links(hostile: str, where: str) -> None:
    fields = {where: hostile} if where != "vulnerability_id" else {}
    vid = hostile if where == "vulnerability_id" else "CVE-2024-6666"
    report = summarize([finding(vid, Severity.CRITICAL, **fields), finding()], rule(), today=TODAY)
    for scanner in (SCANNER_BASIC, SCANNER_ENHANCED):
        message = valid(render_scan(report, IMAGE, scanner=scanner))
        assert_no_control_sequence(message)


@pytest.mark.parametrize("hostile", HOSTILE_PAYLOADS)
def test_hostile_text_in_a_new_finding_neither_pings_nor_links(hostile: str) -> None:
    hostile_finding = finding(
        "CVE-2024-6666",
        Severity.CRITICAL,
        title=hostile,
        description=hostile,
        package=hostile,
        installed_version=hostile,
        fixed_version=hostile,
        finding_arn="arn:aws:inspector2:us-east-1:123456789012:finding/x",
    )
    exception = IgnoredVulnerability(id="CVE-2024-6666", reason=hostile, expires=date(2026, 1, 1))
    message = valid(render_new_finding(hostile_finding, IMAGE, now=NOW, expired=exception))
    assert_no_control_sequence(message)


@pytest.mark.parametrize("hostile", HOSTILE_PAYLOADS)
def test_hostile_actor_summary_and_reasons_in_a_violation_neither_ping_nor_link(hostile: str) -> None:
    event = copy.deepcopy(load_event("guard-violation-attributed.json"))
    event["detail"]["actor"] = hostile
    event["detail"]["summary"] = hostile
    message = valid(render_violation(TagGuardViolationAttributedEvent.model_validate(event)))
    assert_no_control_sequence(message)


@pytest.mark.parametrize("hostile", HOSTILE_PAYLOADS)
def test_hostile_ignore_reason_in_an_expired_exception_is_escaped(hostile: str) -> None:
    exception = IgnoredVulnerability(id="CVE-2024-0001", reason=hostile, expires=TODAY - timedelta(days=1))
    report = summarize([finding()], rule(ignore=[exception]), today=TODAY)
    assert report.expired
    assert_no_control_sequence(valid(render_scan(report, IMAGE, scanner=SCANNER_ENHANCED)))


def test_a_failed_scan_with_a_hostile_status_and_description_is_escaped() -> None:
    message = valid(
        render_failed_scan(IMAGE, scanner=SCANNER_BASIC, status="<!channel>", description="<https://evil.example|x>")
    )
    assert_no_control_sequence(message)


def test_a_replication_failure_with_hostile_source_fields_is_escaped() -> None:
    event = copy.deepcopy(load_event("ecr-replication-failed.json"))
    event["detail"]["action-type"] = "<!channel>"
    event["detail"]["source-region"] = "<https://evil.example|x>"
    message = valid(render_replication_failure(ReplicationActionEvent.model_validate(event)))
    assert_no_control_sequence(message)


@pytest.mark.parametrize(
    ("url", "linked_as"),
    [
        ("javascript:alert(1)", None),
        ("http://a|b", None),
        ("https://ok.example/x>y", None),
        ("https://ok.example/<!channel>", None),
        ("https://ok.example/a b", None),
        ("data:text/html,<script>", None),
        ("HTTPS://nvd.nist.gov/vuln/detail/CVE-2024-1", "HTTPS://nvd.nist.gov/vuln/detail/CVE-2024-1"),
        ("https://nvd.nist.gov/?a=1&b=2", "https://nvd.nist.gov/?a=1&amp;b=2"),
    ],
)
def test_source_urls_link_only_when_safe(url: str, linked_as: str | None) -> None:
    report = summarize([finding("CVE-2024-6666", Severity.CRITICAL, source_url=url)], rule(), today=TODAY)
    message = valid(render_scan(report, IMAGE, scanner=SCANNER_ENHANCED))
    text = "\n".join(mrkdwn_texts(message))
    if linked_as is None:
        assert "*CVE-2024-6666*" in text  # shown, not linked
        for part in mrkdwn_texts(message):
            stripped = OWN_LINK.sub("", part)
            assert "<" not in stripped and ">" not in stripped
    else:
        assert f"<{linked_as}|CVE-2024-6666>" in text


def test_a_url_of_ampersands_stays_within_the_limits_once_escaped() -> None:
    url = "https://nvd.nist.gov/?" + "&" * 378  # 400 characters: linkable, five times longer escaped
    findings = [finding(f"CVE-2024-{n:04d}", Severity.CRITICAL, source_url=url) for n in range(40)]
    report = summarize(findings, rule(max_findings=40), today=TODAY)
    message = valid(render_scan(report, IMAGE, scanner=SCANNER_ENHANCED))
    assert sum(text.count("CVE-2024-") for text in mrkdwn_texts(message)[1:]) >= 40


# Slack's text objects parse "certain mentions" (``@channel``, ``@here``, ``@everyone``) in plain words
# unless ``verbatim`` is true (Block Kit reference, text object, ``verbatim``; formatting, "automatic
# parsing"). Escaping ``&``, ``<``, ``>`` does not stop them.
@pytest.mark.parametrize("mention", ["@channel", "@here", "@everyone"])
def test_a_bare_at_mention_in_outside_text_cannot_ping(mention: str) -> None:
    hostile = finding(
        "CVE-2024-6666",
        Severity.CRITICAL,
        title=f"hey {mention}",
        description=f"please look {mention}",
        package=f"{mention}",
        finding_arn="arn:x",
    )
    message = render_new_finding(hostile, IMAGE, now=NOW)
    for block in message.blocks:
        objects = [block.get("text")] if isinstance(block.get("text"), dict) else []
        objects += block.get("fields", []) + block.get("elements", [])
        for text_object in objects:
            if text_object.get("type") == "mrkdwn" and re.search(rf"(^|\W){mention}\b", text_object["text"]):
                assert text_object.get("verbatim") is True, f"{mention} reaches Slack unparsed-guarded: {text_object}"


# --- limits -----------------------------------------------------------------------------------


def test_everything_at_its_longest_stays_within_slacks_limits() -> None:
    long = "é" * 500 + "🔥" * 500
    findings = [
        finding(
            f"CVE-2024-{n:04d}" + "9" * 70,
            Severity.CRITICAL,
            package=long,
            installed_version=long,
            fixed_version=long,
            source_url="https://nvd.nist.gov/" + "x" * 370,
            epss=0.5,
            score=9.9,
            exploit_available=True,
        )
        for n in range(1000)
    ]
    ignore = [
        IgnoredVulnerability(id=f"CVE-2024-{n:04d}" + "9" * 70, reason=long, expires=TODAY - timedelta(days=1))
        for n in range(12)
    ]
    tags = tuple(f"v1.{n}.0" for n in range(30))
    image = ScannedImage(REPO, DIGEST, tags)
    report = summarize(findings, rule(max_findings=40, ignore=ignore, new_only=True), today=TODAY)
    message = valid(render_scan(report, image, scanner=SCANNER_ENHANCED, compared_with="v" + "1" * 500))
    assert "and 960 more" in "\n".join(mrkdwn_texts(message))
    assert len(message.text) <= 1000


def test_a_10kb_description_in_a_new_finding_is_cut() -> None:
    message = valid(
        render_new_finding(finding(description="x" * 10_000, title="t" * 10_000, finding_arn="a"), IMAGE, now=NOW)
    )
    assert len(message.blocks[1]["text"]["text"]) <= 1200


# --- fingerprints and the workflow -------------------------------------------------------------


class World:
    def __init__(self, notify: NotifyRule | None = None, *sinks: RecordingSink, now: datetime = NOW) -> None:
        self.rules = Rules(notify=[notify or rule()])
        self.findings = FakeFindings()
        self.sent = FakeSentLedger()
        self.sinks = list(sinks) or [RecordingSink()]
        self.registry = FakeRegistry()
        self.now = now
        self.notifier = Notifier(
            self.rules, self.findings, self.sent, list(self.sinks), self.registry, lambda: self.now
        )

    @property
    def posted(self) -> list[Message]:
        return self.sinks[0].messages

    def handle(self, event: Any) -> Any:
        outcome = self.notifier.handle(event)
        for message in outcome.messages:
            valid(message)
        return outcome


def scan_event(counts: dict[str, int] | None = None, **detail: Any) -> ImageScanEvent:
    event = copy.deepcopy(load_event("ecr-scan-findings.json"))
    if counts is not None:
        event["detail"]["finding-severity-counts"] = counts
    event["detail"].update(detail)
    return ImageScanEvent.model_validate(event)


def finding_event(**detail: Any) -> InspectorFindingEvent:
    """A finding event as a rescan sends it: first observed after the image's scan was reported."""
    event = copy.deepcopy(load_event("inspector-finding.json"))
    event["detail"]["firstObservedAt"] = "Nov 29, 2026, 9:00:00 AM"
    event["detail"].update(detail)
    return InspectorFindingEvent.model_validate(event)


def initial_scan_finding_event(**detail: Any) -> InspectorFindingEvent:
    """A finding event of the initial scan (first observed before the scan's summary was posted), delivered late."""
    return finding_event(firstObservedAt="Nov 28, 2026, 12:03:00 PM", **detail)


def the_events_finding(severity: Severity = Severity.HIGH) -> Finding:
    """The finding inspector-finding.json announces, as DescribeImageScanFindings would list it."""
    return Finding.from_inspector_event(finding_event(severity=severity.value).detail)


def test_the_same_set_in_any_order_and_split_across_pages_is_one_fingerprint() -> None:
    findings = [finding(f"CVE-2024-{n:04d}", Severity.CRITICAL if n % 3 else Severity.HIGH) for n in range(57)]
    world = World()
    world.findings.by_digest[DIGEST] = findings
    assert world.handle(scan_event()).result == NotifyResult.POSTED
    world.findings.by_digest[DIGEST] = list(reversed(findings))
    assert world.handle(scan_event()).result == NotifyResult.DUPLICATE
    world.findings.by_digest[DIGEST] = [*findings[30:], finding("CVE-2024-9999", Severity.LOW), *findings[:30]]
    assert world.handle(scan_event()).result == NotifyResult.DUPLICATE
    world.findings.by_digest[DIGEST] = [*findings, finding("CVE-2025-0001", Severity.HIGH)]
    assert world.handle(scan_event()).result == NotifyResult.POSTED
    assert len(world.posted) == 2


def test_a_finding_event_before_the_scan_then_the_scan_posts_once() -> None:
    world = World()
    world.findings.by_digest[DIGEST] = [the_events_finding()]
    assert world.handle(finding_event()).result == NotifyResult.NOTHING_TO_POST
    assert world.handle(scan_event()).result == NotifyResult.POSTED
    assert len(world.posted) == 1


def test_a_finding_event_arriving_after_the_scan_that_listed_it_posts_nothing_more() -> None:
    """EventBridge does not order events: Inspector's per-finding events of the initial scan may arrive
    after the scan's summary was posted. The summary named this finding: a second "New HIGH" is noise."""
    world = World()
    world.findings.by_digest[DIGEST] = [the_events_finding()]
    assert world.handle(scan_event()).result == NotifyResult.POSTED
    late = world.handle(initial_scan_finding_event())
    assert late.result != NotifyResult.POSTED, "the finding was already in the scan's message"
    assert len(world.posted) == 1


def test_a_score_only_update_of_a_finding_the_scan_reported_posts_nothing() -> None:
    world = World()
    world.findings.by_digest[DIGEST] = [the_events_finding()]
    assert world.handle(scan_event()).result == NotifyResult.POSTED
    rescored = world.handle(initial_scan_finding_event(inspectorScore=8.9, epss={"score": 0.99}))
    assert rescored.result != NotifyResult.POSTED, "issue 8: score-only updates post nothing"
    assert len(world.posted) == 1


def test_a_finding_event_twice_and_rescored_posts_once() -> None:
    world = World()
    world.findings.by_digest[DIGEST] = [finding("CVE-2099-0001")]
    world.handle(scan_event())
    assert world.handle(finding_event()).result == NotifyResult.POSTED
    assert world.handle(finding_event()).result == NotifyResult.DUPLICATE
    assert world.handle(finding_event(inspectorScore=9.9)).result == NotifyResult.DUPLICATE
    assert world.handle(finding_event(severity="CRITICAL")).result == NotifyResult.POSTED
    assert len(world.posted) == 3


def test_a_lowered_severity_posts_nothing() -> None:
    """Issue 8: post when a finding becomes ACTIVE or is *raised* in severity; CRITICAL -> HIGH is neither."""
    world = World()
    world.findings.by_digest[DIGEST] = [finding("CVE-2099-0001")]
    world.handle(scan_event())
    assert world.handle(finding_event(severity="CRITICAL")).result == NotifyResult.POSTED
    lowered = world.handle(finding_event(severity="HIGH"))
    assert lowered.result != NotifyResult.POSTED, "a lowered severity is not news"
    assert len(world.posted) == 2


@pytest.mark.parametrize("status", ["CLOSED", "SUPPRESSED"])
def test_closed_or_suppressed_then_nothing_even_when_raised(status: str) -> None:
    world = World()
    world.findings.by_digest[DIGEST] = [finding("CVE-2099-0001")]
    world.handle(scan_event())
    assert world.handle(finding_event(status=status, severity="CRITICAL")).result == NotifyResult.NOTHING_TO_POST
    assert len(world.posted) == 1


def test_a_second_sink_failing_after_the_first_accepted_does_not_duplicate_on_retry() -> None:
    """Slack accepted, SNS failed: the invocation fails, Lambda retries; Slack must not get it twice."""
    slack, sns = RecordingSink(), RecordingSink(failure=RuntimeError("SNS throttled"))
    world = World(rule(), slack, sns)
    world.findings.by_digest[DIGEST] = [finding(severity=Severity.CRITICAL)]
    with pytest.raises(RuntimeError):
        world.handle(scan_event())
    sns.failure = None
    world.handle(scan_event())
    assert len(sns.messages) == 1
    assert len(slack.messages) == 1, f"Slack got the same alert {len(slack.messages)} times"


# --- noise control ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "severity", "posts"),
    [
        (Severity.HIGH, Severity.HIGH, True),
        (Severity.HIGH, Severity.MEDIUM, False),
        (Severity.CRITICAL, Severity.HIGH, False),
        (Severity.LOW, Severity.LOW, True),
        (Severity.HIGH, Severity.UNDEFINED, False),
        (Severity.INFORMATIONAL, Severity.INFORMATIONAL, True),
    ],
)
def test_threshold_edges(threshold: Severity, severity: Severity, posts: bool) -> None:
    world = World(rule(threshold=threshold))
    world.findings.by_digest[DIGEST] = [finding(severity=severity)]
    result = world.handle(scan_event(counts={severity.value: 1})).result
    assert (result == NotifyResult.POSTED) is posts


@pytest.mark.parametrize(
    ("now", "expires", "ignored"),
    [
        (datetime(2026, 11, 28, 0, 0, tzinfo=UTC), date(2026, 11, 28), True),
        (datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC), date(2026, 11, 28), True),
        (datetime(2026, 11, 29, 0, 0, tzinfo=UTC), date(2026, 11, 28), False),
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), date(2026, 11, 27), False),
    ],
)
def test_ignore_entries_hold_through_their_day_in_utc(now: datetime, expires: date, ignored: bool) -> None:
    exception = IgnoredVulnerability(id="CVE-2024-0001", reason="accepted", expires=expires)
    world = World(rule(ignore=[exception]), now=now)
    world.findings.by_digest[DIGEST] = [finding()]
    outcome = world.handle(scan_event(counts={"HIGH": 1}))
    assert (outcome.result == NotifyResult.NOTHING_TO_POST) is ignored
    if not ignored:
        assert f"expired on {expires.isoformat()}" in "\n".join(mrkdwn_texts(world.posted[0]))


def test_new_only_with_a_pre_release_compares_with_a_lower_version_and_untagged_sees_all_new() -> None:
    world = World(rule(new_only=True))
    old = world.registry.add_image(REPO, "old", "v1.9.0")
    rc = world.registry.add_image(REPO, "rc", "v2.0.0-rc.1")
    world.findings.by_digest[old] = [finding("CVE-2024-0001")]
    world.findings.by_digest[rc] = [finding("CVE-2024-0001"), finding("CVE-2024-0002")]
    outcome = world.handle(scan_event(**{"image-digest": rc, "image-tags": ["v2.0.0-rc.1"]}))
    assert outcome.result == NotifyResult.POSTED
    assert "compared with v1.9.0" in outcome.notes
    text = "\n".join(mrkdwn_texts(world.posted[-1]))
    assert "CVE-2024-0002" in text and "CVE-2024-0001" not in text

    untagged = "sha256:" + "cd" * 32
    world.findings.by_digest[untagged] = [finding("CVE-2024-0001")]
    outcome = world.handle(scan_event(**{"image-digest": untagged, "image-tags": []}))
    assert outcome.result == NotifyResult.POSTED
    assert "untagged" in "\n".join(mrkdwn_texts(world.posted[-1]))


def test_new_only_the_first_release_reports_everything() -> None:
    world = World(rule(new_only=True))
    first = world.registry.add_image(REPO, "first", "v0.1.0")
    world.findings.by_digest[first] = [finding("CVE-2024-0001")]
    outcome = world.handle(scan_event(**{"image-digest": first, "image-tags": ["v0.1.0"]}))
    assert outcome.result == NotifyResult.POSTED
    assert any("no release before v0.1.0" in note for note in outcome.notes)


@pytest.mark.parametrize(("post_clean", "posts"), [(False, False), (True, True)])
def test_post_clean(post_clean: bool, posts: bool) -> None:
    world = World(rule(post_clean=post_clean))
    world.findings.by_digest[DIGEST] = []
    assert (world.handle(scan_event(counts={})).result == NotifyResult.POSTED) is posts
    assert world.findings.reads == []  # the counts decide: no finding is read


@pytest.mark.parametrize("status", ["FAILED", "UNSUPPORTED_IMAGE"])
@pytest.mark.parametrize(("post_failures", "posts"), [(False, False), (True, True)])
def test_post_failures(status: str, post_failures: bool, posts: bool) -> None:
    world = World(rule(post_failures=post_failures))
    outcome = world.handle(scan_event(counts={}, **{"scan-status": status}))
    assert (outcome.result == NotifyResult.POSTED) is posts
    assert world.handle(scan_event(counts={}, **{"scan-status": status})).result != NotifyResult.POSTED


WEBHOOK = "https://hooks.slack.com/services/T0SECRET/B0SECRET/verysecretpath"


@pytest.mark.parametrize(
    "entry",
    [
        'threshold = "SEVERE"',
        'threshold = "high"',
        'post_clean = "false"',
        "post_failures = 1",
        "max_findings = 0",
        "max_findings = 41",
        'treshold = "HIGH"',
        f'route = "{WEBHOOK}"',
        'ignore = [{ id = "cve-2024-0001", reason = "x", expires = 2027-01-01 }]',
        'ignore = [{ id = "CVE-2024-0001", reason = "", expires = 2027-01-01 }]',
        'ignore = [{ id = "CVE-2024-0001", reason = "x" }]',
        'ignore = [{ id = "CVE-2024-0001", reason = "x", expires = "2027-02-30" }]',
        'ignore = [{ id = "CVE-2024-0001", reason = "x", expires = 2027-01-01, until = 1 }]',
        'ignore = [{ id = "GHSA-abcd-efgh-ijkl", reason = "x", expires = 2027-01-01 }, '
        '{ id = "ghsa-ABCD-efgh-ijkl", reason = "y", expires = 2027-01-01 }]',
    ],
)
def test_bad_notify_rules_are_refused_at_load_without_echoing_values(entry: str) -> None:
    if entry.startswith('threshold = "high"'):
        # A lower-case severity may be accepted as the same severity: either is fine, silently wrong is not.
        try:
            rules = parse_rules(f'[[notify]]\nrepositories = ["*"]\n{entry}\n', origin="rules.toml")
        except ConfigurationError:
            return
        assert rules.notify[0].threshold == Severity.HIGH
        return
    with pytest.raises(ConfigurationError) as refused:
        parse_rules(f'[[notify]]\nrepositories = ["*"]\n{entry}\n', origin="rules.toml")
    assert "verysecretpath" not in str(refused.value)


# --- memory -----------------------------------------------------------------------------------


def generated(count: int) -> Iterator[Finding]:
    severities = [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW]
    for n in range(count):
        yield Finding(
            f"CVE-2025-{n:06d}",
            severities[n % 4],
            package=f"package-{n % 977}",
            installed_version=f"1.{n % 100}.0",
            fixed_version=f"1.{n % 100}.1" if n % 2 else None,
            score=float(n % 100) / 10,
            source_url=f"https://nvd.nist.gov/vuln/detail/CVE-2025-{n:06d}",
        )


def peak_of(action: Any) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        result = action()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_summarising_100000_findings_costs_what_10000_cost() -> None:
    small, _ = peak_of(lambda: summarize(generated(10_000), rule(max_findings=40), today=TODAY))
    large, report = peak_of(lambda: summarize(generated(100_000), rule(max_findings=40), today=TODAY))
    assert report.reportable == 50_000 and len(report.top) == 40
    assert large < small * 1.5 + 64 * 1024, (small, large)
    assert large < 4 * 1024 * 1024


class _LazyPaginator:
    """DescribeImageScanFindings pages made on demand (nothing held but the page being read)."""

    def __init__(self, total: int, page_size: int) -> None:
        self.total, self.page_size = total, page_size

    def paginate(self, **_: Any) -> Iterator[dict[str, Any]]:
        for start in range(0, self.total, self.page_size):
            yield {
                "imageScanStatus": {"status": "COMPLETE"},
                "imageScanFindings": {
                    "findings": [
                        {
                            "name": f"CVE-2025-{n:06d}",
                            "severity": "HIGH" if n % 7 else "CRITICAL",
                            "uri": f"https://nvd.nist.gov/vuln/detail/CVE-2025-{n:06d}",
                            "description": "d" * 200,
                            "attributes": [
                                {"key": "package_name", "value": f"pkg-{n}"},
                                {"key": "package_version", "value": "1.0"},
                                {"key": "CVSS3_SCORE", "value": "7.5"},
                            ],
                        }
                        for n in range(start, min(start + self.page_size, self.total))
                    ]
                },
            }


class _LazyClients:
    def __init__(self, total: int) -> None:
        self.total = total

    def client(self, service: str, region: str) -> Any:
        del service, region
        total = self.total

        class _Client:
            def get_paginator(self, name: str) -> _LazyPaginator:
                assert name == "describe_image_scan_findings"
                return _LazyPaginator(total, 1000)

        return _Client()


def _notify_through_pages(total: int) -> list[Message]:
    sink = RecordingSink()
    notifier = Notifier(
        Rules(notify=[rule(max_findings=40)]),
        EcrFindings(_LazyClients(total)),  # type: ignore[arg-type]
        FakeSentLedger(),
        [sink],
        FakeRegistry(),
        lambda: NOW,
    )
    assert notifier.handle(scan_event(counts={"HIGH": total})).result == NotifyResult.POSTED
    return sink.messages


def test_a_100000_finding_scan_read_page_by_page_does_not_grow_memory() -> None:
    small, _ = peak_of(lambda: _notify_through_pages(5_000))
    large, messages = peak_of(lambda: _notify_through_pages(100_000))
    assert large < small * 1.5 + 256 * 1024, (small, large)
    assert "and 99960 more" in "\n".join(mrkdwn_texts(valid(messages[0])))


def test_fingerprint_is_order_independent_for_100000_findings() -> None:
    forward = summarize(generated(20_000), rule(), today=TODAY)
    backward = summarize(reversed(list(generated(20_000))), rule(), today=TODAY)
    assert scan_fingerprint(DIGEST, forward) == scan_fingerprint(DIGEST, backward)
