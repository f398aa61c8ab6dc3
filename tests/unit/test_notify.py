"""The notifier's pure core: the [[notify]] rules, summarising findings, rendering within Slack's limits,
escaping outside text, fingerprints, and the workflow on in-memory fakes (no AWS, no HTTP)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ecr_automation.config import BUNDLED_RULES_FILE, ConfigurationError
from ecr_automation.logic.notify import (
    MAX_BLOCKS,
    MAX_FIELD_TEXT,
    MAX_FIELDS,
    MAX_HEADER,
    MAX_TEXT,
    SCANNER_BASIC,
    SCANNER_ENHANCED,
    FindingsNotReadyError,
    Notifier,
    NotifyResult,
    ScanReport,
    escape_mrkdwn,
    finding_fingerprint,
    findings_console_url,
    image_reported_fingerprint,
    previous_release,
    render_failed_scan,
    render_new_finding,
    render_replication_failure,
    render_scan,
    render_violation,
    scan_fingerprint,
    summarize,
)
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.events.application import (
    ImageReplicationFailedEvent,
    TagGuardViolationAttributedEvent,
    TagGuardViolationEvent,
)
from ecr_automation.models.events.base import Severity, SeverityCounts
from ecr_automation.models.events.inspector_findings import InspectorFindingEvent
from ecr_automation.models.events.replication import ReplicationActionEvent
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.models.findings import Finding, Message, ScannedImage
from ecr_automation.rules import IgnoredVulnerability, NotifyRule, Rules, load_rules, parse_rules
from tests.conftest import load_event
from tests.support.fakes import FakeRegistry
from tests.support.notify_fakes import FakeFindings, FakeSentLedger, RecordingSink
from tests.support.slack_sink import block_kit_errors

REPO = RepositoryRef("123456789012", "us-east-1", "team/web")
DIGEST = "sha256:e80a9a9bcbbc57bd3b1ba40dac822ef748c634adf59c6c2042bb424e4dba58d4"
PREVIOUS_DIGEST = "sha256:" + "ab" * 32
IMAGE = ScannedImage(REPO, DIGEST, ("v1.2.3",))
TODAY = date(2026, 11, 28)
NOW = datetime(2026, 11, 28, 12, 30, tzinfo=UTC)
HOSTILE = "<!channel> & <https://evil.example|click>"


def finding(
    vulnerability_id: str = "CVE-2024-0001",
    severity: Severity = Severity.HIGH,
    **fields: Any,
) -> Finding:
    values: dict[str, Any] = {
        "package": "openssl",
        "installed_version": "3.0.1",
        "fixed_version": "3.0.2",
        "source_url": f"https://nvd.nist.gov/vuln/detail/{vulnerability_id}",
    }
    values.update(fields)
    return Finding(vulnerability_id, severity, **values)


def valid(message: Message) -> Message:
    """Assert ``message`` is what Slack accepts: slack_sdk's own models, and the limits they do not check."""
    payload = {"text": message.text, "blocks": message.blocks}
    assert block_kit_errors(payload) == []
    assert 0 < len(message.blocks) <= MAX_BLOCKS
    assert message.fingerprint
    for block in message.blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= MAX_HEADER
        if block["type"] == "section":
            assert "text" not in block or len(block["text"]["text"]) <= MAX_TEXT
            assert len(block.get("fields", [])) <= MAX_FIELDS
            assert all(len(item["text"]) <= MAX_FIELD_TEXT for item in block.get("fields", []))
        if block["type"] == "context":
            assert all(len(element["text"]) <= MAX_TEXT for element in block["elements"])
    return message


def texts(message: Message) -> list[str]:
    """Every text of a message: the fallback, headers, sections, fields and context elements."""
    found = [message.text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.blocks)
    return found


def all_text(message: Message) -> str:
    return "\n".join(texts(message))


# --- the [[notify]] section -----------------------------------------------------------------------


def refusal(toml: str) -> str:
    with pytest.raises(ConfigurationError) as error:
        parse_rules(toml, origin="rules.toml")
    message = str(error.value)
    assert "\n" not in message
    return message


def test_notify_defaults_and_first_match() -> None:
    rules = parse_rules(
        """
        [[notify]]
        repositories = ["team/*"]
        threshold = "CRITICAL"
        route = "arn:aws:secretsmanager:us-east-1:123456789012:secret:slack/team-AbCdEf"
        [[notify]]
        repositories = ["*"]
        """
    )
    team = rules.notify_for("team/web")
    other = rules.notify_for("infra/db")
    assert team is not None
    assert other is not None
    assert team.threshold is Severity.CRITICAL
    assert team.route.startswith("arn:aws:secretsmanager:")
    assert (other.threshold, other.post_clean, other.post_failures, other.new_only) == (
        Severity.HIGH,
        False,
        True,
        False,
    )
    assert (other.route, other.max_findings, other.alert_violations, other.alert_replication_failures) == (
        "",
        10,
        True,
        True,
    )
    assert Rules().notify_for("team/web") is None


def test_the_bundled_rules_notify_every_repository_at_high() -> None:
    rule = load_rules(BUNDLED_RULES_FILE).notify_for("any/repository")
    assert rule is not None
    assert rule.threshold is Severity.HIGH
    assert rule.repositories == ["*"]


def test_ignore_entries_parse_and_match_case_insensitively() -> None:
    rule = parse_rules(
        """
        [[notify]]
        ignore = [
          { id = "CVE-2023-44487", reason = "HTTP/2 not exposed", expires = 2027-03-31 },
          { id = "GHSA-abcd-efgh-jkmn", reason = "dev dependency", expires = 2026-01-01 },
        ]
        """
    ).notify_for("x")
    assert rule is not None
    exception = rule.exception_for("cve-2023-44487")
    assert exception is not None
    assert exception.expires == date(2027, 3, 31)
    assert rule.exception_for("CVE-2023-99999") is None


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('threshold = "SEVERE"', "notify.0.threshold"),
        ("max_findings = 41", "notify.0.max_findings"),
        ("max_findings = 0", "notify.0.max_findings"),
        ('max_findings = "10"', "notify.0.max_findings"),
        ('post_clean = "yes"', "notify.0.post_clean"),
        ('route = "https://hooks.slack.com/services/T/B/X"', "notify.0.route"),
        ('ignore = [{ id = "not a cve", reason = "x", expires = 2027-01-01 }]', "notify.0.ignore.0.id"),
        ('ignore = [{ id = "CVE-2023-1234", reason = "", expires = 2027-01-01 }]', "notify.0.ignore.0.reason"),
        ('ignore = [{ id = "CVE-2023-1234", reason = "x" }]', "notify.0.ignore.0.expires"),
        ('ignore = [{ id = "CVE-2023-1234", reason = "x", expires = "someday" }]', "notify.0.ignore.0.expires"),
        (
            'ignore = [{ id = "CVE-2023-1234", reason = "a", expires = 2027-01-01 },'
            ' { id = "cve-2023-1234", reason = "b", expires = 2027-01-01 }]',
            "notify.0.ignore",
        ),
        ("webhook = 'x'", "notify.0.webhook"),
    ],
)
def test_invalid_notify_entries_are_refused_naming_the_field(entry: str, named: str) -> None:
    message = refusal(f"[[notify]]\n{entry}\n")
    assert f"rules.toml: {named}" in message


# --- summarising --------------------------------------------------------------------------------


def rule(**fields: Any) -> NotifyRule:
    return NotifyRule(**fields)


def test_the_findings_that_matter_most_come_first() -> None:
    findings = [
        finding("CVE-A", Severity.CRITICAL, epss=0.1, score=9.8),
        finding("CVE-B", Severity.HIGH, exploit_available=True, epss=0.01, score=7.0),
        finding("CVE-C", Severity.CRITICAL, epss=0.9, score=9.0),
        finding("CVE-D", Severity.CRITICAL, epss=0.1, score=9.9),
        finding("CVE-E", Severity.HIGH),
        finding("CVE-F", Severity.CRITICAL),
    ]
    report = summarize(findings, rule(), today=TODAY)
    # exploit available, then severity, then EPSS, then score (a missing signal ranks last)
    assert [f.vulnerability_id for f in report.top] == ["CVE-B", "CVE-C", "CVE-D", "CVE-A", "CVE-F", "CVE-E"]


def test_threshold_counts_everything_and_reports_only_at_or_above() -> None:
    findings = [
        finding("CVE-1", Severity.CRITICAL),
        finding("CVE-2", Severity.HIGH, fixed_version=None),
        finding("CVE-3", Severity.MEDIUM),
        finding("CVE-4", Severity.LOW, fixed_version=None),
        finding("CVE-5", Severity.HIGH, status="SUPPRESSED"),
    ]
    report = summarize(findings, rule(threshold=Severity.HIGH), today=TODAY)
    assert report.counts.as_dict() == {"CRITICAL": 1, "HIGH": 1, "MEDIUM": 1, "LOW": 1}
    assert report.fixable == 2
    assert [f.vulnerability_id for f in report.top] == ["CVE-1", "CVE-2"]
    assert (report.reportable, report.reportable_fixable, report.more) == (2, 1, 0)


def test_ignored_findings_stay_quiet_until_their_exception_expires() -> None:
    exceptions = [
        IgnoredVulnerability(id="CVE-2024-0001", reason="not reachable", expires=TODAY),  # holds today
        IgnoredVulnerability(id="CVE-2024-0002", reason="waiting for upstream", expires=TODAY - timedelta(days=1)),
    ]
    findings = [finding("CVE-2024-0001"), finding("CVE-2024-0002"), finding("CVE-2024-0003")]
    report = summarize(findings, rule(ignore=exceptions), today=TODAY)
    assert report.ignored == 1
    assert {f.vulnerability_id for f in report.top} == {"CVE-2024-0002", "CVE-2024-0003"}
    assert [(e.vulnerability_id, e.expired_on) for e in report.expired] == [("CVE-2024-0002", date(2026, 11, 27))]

    text = all_text(valid(render_scan(report, IMAGE, scanner=SCANNER_ENHANCED)))
    assert "Exception for *CVE-2024-0002* expired on 2026-11-27 (waiting for upstream)" in text
    assert "1 finding ignored by accepted exceptions" in text


def test_new_only_leaves_out_known_findings_and_says_how_many() -> None:
    findings = [finding("CVE-NEW"), finding("CVE-OLD-1"), finding("CVE-OLD-2"), finding("CVE-LOW", Severity.LOW)]
    known = ["CVE-OLD-1", "CVE-OLD-2", "CVE-LOW"]
    report = summarize(findings, rule(new_only=True), today=TODAY, known=known)
    assert [f.vulnerability_id for f in report.top] == ["CVE-NEW"]
    assert report.known_left_out == 2
    text = all_text(valid(render_scan(report, IMAGE, scanner=SCANNER_ENHANCED, compared_with="v1.2.2")))
    assert "1 new finding at HIGH or above" in text
    assert "2 known findings left out (already in v1.2.2)" in text

    # without new-only the same known ids change nothing
    assert summarize(findings, rule(), today=TODAY, known=known).reportable == 3


def test_summarize_reads_once_and_keeps_only_what_it_shows() -> None:
    consumed = 0

    def pages() -> Iterator[Finding]:
        nonlocal consumed
        for index in range(5000):
            consumed += 1
            yield finding(f"CVE-2024-{index:05d}", Severity.CRITICAL if index % 7 == 0 else Severity.HIGH)

    report = summarize(pages(), rule(max_findings=5), today=TODAY)
    assert consumed == 5000
    assert len(report.top) == 5
    assert report.more == 4995
    assert all(f.severity is Severity.CRITICAL for f in report.top)


def test_500_findings_stay_within_slacks_limits() -> None:
    long = "x" * 900
    findings = [
        finding(
            f"CVE-2024-{index:05d}",
            Severity.CRITICAL if index % 3 else Severity.HIGH,
            package=f"pkg-{index}-{long}",
            installed_version=long,
            fixed_version=long,
            source_url="https://example.com/" + "a" * 380,
            epss=index / 1000,
            score=7.5,
        )
        for index in range(500)
    ]
    for limit in (10, 40):
        report = summarize(findings, rule(max_findings=limit), today=TODAY)
        message = valid(render_scan(report, IMAGE, scanner=SCANNER_ENHANCED))
        text = all_text(message)
        assert f"and {500 - limit} more at HIGH or above" in text
        assert text.count("• ") == limit


def test_an_untagged_image_says_untagged() -> None:
    image = ScannedImage(REPO, DIGEST)
    message = valid(render_scan(summarize([finding()], rule(), today=TODAY), image, scanner=SCANNER_BASIC))
    fields = [item["text"] for block in message.blocks for item in block.get("fields", [])]
    assert "*Tags*\nuntagged" in fields
    assert "team/web@e80a9a9bcbbc" in message.blocks[0]["text"]["text"]
    assert "`e80a9a9bcbbc`" in all_text(message)


def test_a_scan_message_names_the_image_and_links_to_its_findings() -> None:
    report = summarize([finding("CVE-2023-44487", fixed_version=None)], rule(), today=TODAY)
    message = valid(render_scan(report, IMAGE, scanner=SCANNER_ENHANCED))
    text = all_text(message)
    url = (
        "https://us-east-1.console.aws.amazon.com/ecr/repositories/private/123456789012/team/web/_/image/"
        f"{DIGEST}/scan-results?region=us-east-1"
    )
    assert findings_console_url(IMAGE) == url
    assert f"<{url}|View the scan results in the ECR console>" in text
    for expected in ("team/web", "`v1.2.3`", "us-east-1", "123456789012", "1 high", "0 with a fix available"):
        assert expected in text
    assert "*<https://nvd.nist.gov/vuln/detail/CVE-2023-44487|CVE-2023-44487>*" in text
    assert "`openssl` 3.0.1 → no fix" in text


def test_basic_scans_do_not_pretend_to_know_fixes() -> None:
    report = summarize([finding(fixed_version=None)], rule(), today=TODAY)
    text = all_text(valid(render_scan(report, IMAGE, scanner=SCANNER_BASIC)))
    assert "basic scanning reports no fixed versions" in text
    assert "no fix known" in text


# --- hostile text -------------------------------------------------------------------------------


def assert_harmless(message: Message) -> None:
    for text in texts(message):
        assert "<!channel>" not in text
        assert "<https://evil.example" not in text
        assert "evil.example|click>" not in text
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in all_text(message)


def test_outside_text_in_a_scan_is_escaped_and_never_linked() -> None:
    hostile = finding(
        "CVE-2024-6666",
        package=HOSTILE,
        installed_version=HOSTILE,
        fixed_version=HOSTILE,
        title=HOSTILE,
        source_url="https://evil.example|click",
    )
    unlinkable = finding("CVE-2024-7777", source_url="javascript:alert(1)")
    report = summarize([hostile, unlinkable], rule(), today=TODAY)
    message = valid(render_scan(report, IMAGE, scanner=SCANNER_ENHANCED))
    assert_harmless(message)
    text = all_text(message)
    assert "*CVE-2024-6666* (https://evil.example|click)" in text  # shown, not linked
    assert "<javascript" not in text


def test_outside_text_in_a_new_finding_is_escaped() -> None:
    hostile = finding("CVE-2024-6666", title=HOSTILE, description=HOSTILE, package=HOSTILE, finding_arn="arn:x")
    message = valid(render_new_finding(hostile, IMAGE, now=NOW))
    assert_harmless(message)


def test_an_actor_in_a_violation_is_escaped() -> None:
    event = load_event("guard-violation-attributed.json")
    event["detail"]["actor"] = HOSTILE
    event["detail"]["summary"] = f"team/web:v1.2.3 was moved by {HOSTILE}"
    message = valid(render_violation(TagGuardViolationAttributedEvent.model_validate(event)))
    assert_harmless(message)
    # the header is plain_text, never parsed by Slack: shown as written, angle brackets as look-alikes
    assert message.blocks[0]["text"]["text"].endswith("\u2039!channel\u203a & \u2039https://evil.example|click\u203a")


def test_escape_mrkdwn_escapes_the_ampersand_first() -> None:
    assert escape_mrkdwn("a&b<c>") == "a&amp;b&lt;c&gt;"
    assert escape_mrkdwn("&lt;") == "&amp;lt;"


# --- fingerprints -------------------------------------------------------------------------------


def test_the_same_findings_make_the_same_fingerprint_whatever_their_order() -> None:
    findings = [finding(f"CVE-2024-000{i}") for i in range(5)] + [finding("CVE-2024-0009", Severity.LOW)]
    first = summarize(findings, rule(max_findings=2), today=TODAY)
    again = summarize(list(reversed(findings)), rule(max_findings=2), today=TODAY)
    assert scan_fingerprint(DIGEST, first) == scan_fingerprint(DIGEST, again)
    # a finding below the threshold changes nothing; a new one at it does
    below = summarize([*findings, finding("CVE-2024-0010", Severity.MEDIUM)], rule(max_findings=2), today=TODAY)
    assert scan_fingerprint(DIGEST, below) == scan_fingerprint(DIGEST, first)
    new = summarize([*findings, finding("CVE-2024-0011")], rule(max_findings=2), today=TODAY)
    assert scan_fingerprint(DIGEST, new) != scan_fingerprint(DIGEST, first)
    assert scan_fingerprint(PREVIOUS_DIGEST, first) != scan_fingerprint(DIGEST, first)


def test_finding_fingerprints_ignore_scores_and_follow_severity() -> None:
    arn = "arn:aws:inspector2:us-east-1:123456789012:finding/abc"
    base = finding(finding_arn=arn, score=7.5)
    rescored = finding(finding_arn=arn, score=8.1, epss=0.5)
    raised = finding(severity=Severity.CRITICAL, finding_arn=arn)
    assert valid(render_new_finding(base, IMAGE, now=NOW)).fingerprint == finding_fingerprint(arn, Severity.HIGH)
    assert (
        render_new_finding(rescored, IMAGE, now=NOW).fingerprint == render_new_finding(base, IMAGE, now=NOW).fingerprint
    )
    assert (
        render_new_finding(raised, IMAGE, now=NOW).fingerprint != render_new_finding(base, IMAGE, now=NOW).fingerprint
    )


# --- other renderers ----------------------------------------------------------------------------


def test_failed_and_unsupported_scans_say_why() -> None:
    failed = all_text(valid(render_failed_scan(IMAGE, scanner=SCANNER_BASIC, status="FAILED")))
    assert "*FAILED*: The scan did not complete" in failed
    unsupported = all_text(valid(render_failed_scan(IMAGE, scanner=SCANNER_BASIC, status="UNSUPPORTED_IMAGE")))
    assert "does not support this image's operating system" in unsupported


def test_a_clean_scan_from_counts_alone() -> None:
    report = ScanReport.from_counts(SeverityCounts(MEDIUM=2), Severity.HIGH)
    message = valid(render_scan(report, IMAGE, scanner=SCANNER_BASIC))
    assert message.blocks[0]["text"]["text"].startswith(":white_check_mark: No findings at HIGH or above")
    assert "2 medium" in all_text(message)


def test_a_new_finding_says_how_long_ago_the_image_shipped() -> None:
    image = ScannedImage(REPO, DIGEST, ("v1.9.0", "latest"), pushed_at=NOW - timedelta(days=12, hours=3))
    message = valid(render_new_finding(finding(severity=Severity.CRITICAL, finding_arn="arn:f"), image, now=NOW))
    assert message.blocks[0]["text"]["text"] == ":red_circle: New CRITICAL in team/web:v1.9.0, shipped 12 days ago"


# --- the workflow -------------------------------------------------------------------------------


class World:
    """A Notifier on fakes, with sample events at hand."""

    def __init__(self, notify: NotifyRule | None = None, *sinks: RecordingSink) -> None:
        self.rules = Rules(notify=[notify or NotifyRule()])
        self.findings = FakeFindings()
        self.sent = FakeSentLedger()
        self.sinks = list(sinks) or [RecordingSink()]
        self.registry = FakeRegistry()
        self.notifier = Notifier(
            self.rules, self.findings, self.sent, list(self.sinks), self.registry, clock=lambda: NOW
        )

    @property
    def posted(self) -> list[Message]:
        return self.sinks[0].messages

    def handle(self, event: Any) -> Any:
        outcome = self.notifier.handle(event)
        for message in outcome.messages:
            valid(message)
        json.dumps(outcome.as_dict())
        return outcome


def scan_event(counts: dict[str, int] | None = None, **detail: Any) -> ImageScanEvent:
    event = load_event("ecr-scan-findings.json")
    if counts is not None:
        event["detail"]["finding-severity-counts"] = counts
    event["detail"].update(detail)
    return ImageScanEvent.model_validate(event)


def inspector_scan_event(counts: dict[str, int]) -> InspectorScanEvent:
    event = load_event("inspector-scan.json")
    event["detail"]["finding-severity-counts"] = counts
    return InspectorScanEvent.model_validate(event)


def finding_event(**detail: Any) -> InspectorFindingEvent:
    """A rescan's finding: first observed the morning after the scan was reported (unless overridden)."""
    event = copy.deepcopy(load_event("inspector-finding.json"))
    event["detail"]["firstObservedAt"] = "Nov 29, 2026, 9:00:00 AM"
    event["detail"].update(detail)
    return InspectorFindingEvent.model_validate(event)


def test_a_scan_posts_once_and_a_redelivery_posts_nothing_more() -> None:
    world = World()
    world.findings.by_digest[DIGEST] = [finding("CVE-2024-0001", Severity.CRITICAL), finding("CVE-2024-0002")]
    first = world.handle(scan_event())
    assert first.result == NotifyResult.POSTED
    assert len(world.posted) == 1
    assert world.sinks[0].sent[0][1] == ""  # the deployment's default webhook
    # the message, its delivery to the one sink, and the image's scan as reported
    assert {first.messages[0].fingerprint, image_reported_fingerprint(DIGEST)} <= world.sent.fingerprints()
    assert len(world.sent.fingerprints()) == 3

    again = world.handle(scan_event())
    assert again.result == NotifyResult.DUPLICATE
    assert len(world.posted) == 1


def test_a_rescan_with_a_new_cve_posts_again() -> None:
    world = World()
    world.findings.by_digest[DIGEST] = [finding("CVE-2024-0001")]
    assert world.handle(scan_event()).result == NotifyResult.POSTED
    world.findings.by_digest[DIGEST] = [finding("CVE-2024-0001"), finding("CVE-2024-0002")]
    assert world.handle(scan_event()).result == NotifyResult.POSTED
    assert len(world.posted) == 2


def test_a_sink_that_fails_leaves_nothing_marked_and_the_retry_posts() -> None:
    working, down = RecordingSink(), RecordingSink(failure=ConnectionError("slack is down"))
    world = World(NotifyRule(route="slack/team-web"), working, down)
    world.findings.by_digest[DIGEST] = [finding()]
    with pytest.raises(ConnectionError):
        world.handle(scan_event())
    # Only the sink that accepted is marked: the retry sends to the one that failed, and to it alone.
    assert [fingerprint for _, fingerprint in world.sent.marked] == [
        fingerprint for _, fingerprint in world.sent.marked if fingerprint.endswith("0.RecordingSink:slack/team-web")
    ]
    assert len(world.sent.marked) == 1

    down.failure = None  # Lambda's retry, once Slack answers again
    assert world.handle(scan_event()).result == NotifyResult.POSTED
    assert [route for _, route in down.sent] == ["slack/team-web"]
    assert len(working.sent) == 1  # not twice: its delivery was marked before the other sink failed
    assert len(world.sent.marked) == 4  # each sink's delivery, the message, the image's scan as reported


def test_a_scan_below_the_threshold_reads_no_findings() -> None:
    world = World()
    outcome = world.handle(scan_event({"MEDIUM": 4, "LOW": 2}))
    assert outcome.result == NotifyResult.NOTHING_TO_POST
    assert world.findings.reads == []
    assert world.posted == []
    # the scan was handled: findings that appear on this image later may post
    assert world.sent.already_sent(REPO, image_reported_fingerprint(DIGEST))


def test_a_clean_scan_posts_only_when_the_rule_asks() -> None:
    world = World(NotifyRule(post_clean=True))
    outcome = world.handle(scan_event({}))
    assert outcome.result == NotifyResult.POSTED
    assert "No findings at HIGH or above" in world.posted[0].blocks[0]["text"]["text"]
    assert world.findings.reads == []


def test_enhanced_counts_cannot_clear_a_threshold_below_medium() -> None:
    world = World(NotifyRule(threshold=Severity.LOW))
    world.findings.by_digest[DIGEST] = [finding("CVE-2024-0001", Severity.LOW)]
    outcome = world.handle(inspector_scan_event({"CRITICAL": 0, "HIGH": 0, "MEDIUM": 0, "TOTAL": 1}))
    assert outcome.result == NotifyResult.POSTED
    assert world.findings.reads == [DIGEST]
    assert "Amazon Inspector" in all_text(world.posted[0])


def test_all_findings_ignored_posts_nothing() -> None:
    exception = IgnoredVulnerability(id="CVE-2024-0001", reason="accepted", expires=date(2027, 1, 1))
    world = World(NotifyRule(ignore=[exception]))
    world.findings.by_digest[DIGEST] = [finding("CVE-2024-0001")]
    outcome = world.handle(scan_event())
    assert outcome.result == NotifyResult.NOTHING_TO_POST
    assert "1 ignored" in outcome.notes[-1]


def test_findings_that_cannot_be_read_yet_make_lambda_retry() -> None:
    world = World()
    with pytest.raises(FindingsNotReadyError):
        world.handle(scan_event())
    assert world.sent.marked == {}


def test_failed_scans_post_a_short_message_unless_the_rule_says_not_to() -> None:
    world = World()
    outcome = world.handle(scan_event({}, **{"scan-status": "FAILED"}))
    assert outcome.result == NotifyResult.POSTED
    assert "FAILED" in all_text(world.posted[0])
    assert world.handle(scan_event({}, **{"scan-status": "FAILED"})).result == NotifyResult.DUPLICATE

    quiet = World(NotifyRule(post_failures=False))
    assert quiet.handle(scan_event({}, **{"scan-status": "FAILED"})).result == NotifyResult.NOTHING_TO_POST


def test_new_only_compares_with_the_previous_release() -> None:
    world = World(NotifyRule(new_only=True))
    world.registry.tags[(REPO, "v1.2.3")] = DIGEST
    world.registry.tags[(REPO, "v1.2.2")] = PREVIOUS_DIGEST
    world.registry.tags[(REPO, "v1.3.0")] = "sha256:" + "cd" * 32  # newer: not the previous release
    world.registry.tags[(REPO, "v1.2.3-rc.1")] = "sha256:" + "ef" * 32  # a pre-release of this one
    world.findings.by_digest[PREVIOUS_DIGEST] = [finding("CVE-OLD")]
    world.findings.by_digest[DIGEST] = [finding("CVE-OLD"), finding("CVE-NEW")]
    outcome = world.handle(scan_event())
    assert outcome.result == NotifyResult.POSTED
    assert world.findings.reads == [DIGEST, PREVIOUS_DIGEST]
    text = all_text(world.posted[0])
    assert "CVE-NEW" in text
    assert "CVE-OLD" not in text
    assert "1 known finding left out (already in v1.2.2)" in text


def test_previous_release_without_one_everything_is_new() -> None:
    assert previous_release(IMAGE, [("v1.2.3", DIGEST, None), ("latest", DIGEST, None)])[0] is None
    untagged = ScannedImage(REPO, DIGEST)
    previous, note = previous_release(untagged, [("v1.0.0", PREVIOUS_DIGEST, None)])
    assert previous is None
    assert "no release tag" in note


def report_the_scan(world: World) -> None:
    world.findings.by_digest[DIGEST] = [finding("CVE-2024-0001")]
    assert world.handle(scan_event()).result == NotifyResult.POSTED


def test_a_finding_on_an_image_whose_scan_was_not_reported_posts_nothing() -> None:
    world = World()
    outcome = world.handle(finding_event())
    assert outcome.result == NotifyResult.NOTHING_TO_POST
    assert "not reported yet" in outcome.notes[0]
    assert world.posted == []


def test_a_new_finding_on_a_reported_image_posts_once_and_again_when_raised() -> None:
    world = World()
    report_the_scan(world)
    first = world.handle(finding_event())
    assert first.result == NotifyResult.POSTED
    header = world.posted[-1].blocks[0]["text"]["text"]
    assert header.startswith(":large_orange_circle: New HIGH in team/web:v1.2.3")
    assert "CVE-2023-44487" in all_text(world.posted[-1])

    rescored = world.handle(finding_event(inspectorScore=8.8, epss={"score": 0.97}))
    assert rescored.result == NotifyResult.DUPLICATE
    raised = world.handle(finding_event(severity="CRITICAL"))
    assert raised.result == NotifyResult.POSTED
    assert len(world.posted) == 3  # the scan, the finding, the raised finding


@pytest.mark.parametrize("status", ["CLOSED", "SUPPRESSED"])
def test_closed_or_suppressed_findings_post_nothing(status: str) -> None:
    world = World()
    report_the_scan(world)
    assert world.handle(finding_event(status=status)).result == NotifyResult.NOTHING_TO_POST
    assert len(world.posted) == 1


def test_a_finding_below_the_threshold_or_ignored_posts_nothing() -> None:
    exception = IgnoredVulnerability(id="CVE-2023-44487", reason="HTTP/2 not exposed", expires=date(2027, 1, 1))
    world = World(NotifyRule(ignore=[exception]))
    report_the_scan(world)
    assert world.handle(finding_event(severity="MEDIUM")).result == NotifyResult.NOTHING_TO_POST
    ignored = world.handle(finding_event())
    assert ignored.result == NotifyResult.NOTHING_TO_POST
    assert "ignored until 2027-01-01" in ignored.notes[0]


def test_a_finding_whose_exception_expired_posts_and_says_so() -> None:
    exception = IgnoredVulnerability(id="CVE-2023-44487", reason="HTTP/2 not exposed", expires=date(2026, 10, 1))
    world = World(NotifyRule(ignore=[exception]))
    report_the_scan(world)
    assert world.handle(finding_event()).result == NotifyResult.POSTED
    assert "Exception for *CVE-2023-44487* expired on 2026-10-01" in all_text(world.posted[-1])


def test_violations_and_their_attribution_each_post_once() -> None:
    world = World()
    violation = TagGuardViolationEvent.model_validate(load_event("guard-violation.json"))
    attributed = TagGuardViolationAttributedEvent.model_validate(load_event("guard-violation-attributed.json"))
    assert world.handle(violation).result == NotifyResult.POSTED
    assert world.handle(attributed).result == NotifyResult.POSTED
    assert world.handle(violation).result == NotifyResult.DUPLICATE
    first, second = (all_text(message) for message in world.posted)
    for expected in ("moved", "reverted", "`quarantine-afa020ece140`", "`e80a9a9bcbbc`", "`afa020ece140`", "HIGH"):
        assert expected in first
    assert "arn:aws:sts::123456789012:assumed-role/ci-deployer/ci-runner" in second
    assert world.posted[1].blocks[0]["text"]["text"].startswith(":warning: Tag guard: team/web:v1.2.3 was moved by")


def test_a_critical_violation_is_marked_critical() -> None:
    event = load_event("guard-violation.json")
    event["detail"].update({"severity": "CRITICAL", "handling": "unrecoverable", "change": "deleted"})
    message = valid(render_violation(TagGuardViolationEvent.model_validate(event)))
    assert message.blocks[0]["text"]["text"].startswith(":rotating_light: Tag guard: protected tag")
    assert "*Severity*\nCRITICAL" in all_text(message)


def test_violation_alerts_can_be_switched_off() -> None:
    world = World(NotifyRule(alert_violations=False, alert_replication_failures=False))
    violation = TagGuardViolationEvent.model_validate(load_event("guard-violation.json"))
    replication = ReplicationActionEvent.model_validate(load_event("ecr-replication-failed.json"))
    assert world.handle(violation).result == NotifyResult.IGNORED
    assert world.handle(replication).result == NotifyResult.IGNORED
    assert world.posted == []


def test_failed_replications_post_and_successful_ones_do_not() -> None:
    world = World()
    failed = ReplicationActionEvent.model_validate(load_event("ecr-replication-failed.json"))
    succeeded = ReplicationActionEvent.model_validate(load_event("ecr-replication-success.json"))
    assert world.handle(failed).result == NotifyResult.POSTED
    assert world.handle(failed).result == NotifyResult.DUPLICATE
    assert world.handle(succeeded).result == NotifyResult.IGNORED
    text = all_text(valid(render_replication_failure(failed)))
    assert "from *210987654321 / eu-west-1* to *123456789012 / us-east-1*" in text
    assert world.posted[0].fingerprint == f"replication#{failed.id}"


def test_a_repository_without_a_notify_rule_gets_nothing() -> None:
    world = World(NotifyRule(repositories=["other/*"]))
    assert world.handle(scan_event()).result == NotifyResult.NO_RULE
    assert world.handle(finding_event()).result == NotifyResult.NO_RULE
    assert world.findings.reads == []


# --- normalising scanner output -----------------------------------------------------------------


def test_basic_and_enhanced_findings_normalise() -> None:
    basic = Finding.from_basic(
        {
            "name": "CVE-2023-0464",
            "uri": "https://security-tracker.debian.org/tracker/CVE-2023-0464",
            "severity": "HIGH",
            "attributes": [
                {"key": "package_name", "value": "openssl"},
                {"key": "package_version", "value": "3.0.8-1"},
                {"key": "CVSS3_SCORE", "value": "7.5"},
            ],
        }
    )
    assert (basic.package, basic.installed_version, basic.score, basic.fixed_version) == (
        "openssl",
        "3.0.8-1",
        7.5,
        None,
    )
    enhanced = Finding.from_enhanced(
        {
            "findingArn": "arn:f",
            "severity": "UNTRIAGED",
            "status": "ACTIVE",
            "score": 5.3,
            "exploitAvailable": "YES",
            "packageVulnerabilityDetails": {
                "vulnerabilityId": "GHSA-abcd-efgh-jkmn",
                "sourceUrl": "https://github.com/advisories/GHSA-abcd-efgh-jkmn",
                "vulnerablePackages": [{"name": "lodash", "version": "4.17.20", "fixedInVersion": "NotAvailable"}],
            },
        }
    )
    assert enhanced.severity is Severity.UNDEFINED
    assert (enhanced.score, enhanced.exploit_available, enhanced.fixed_version) == (5.3, True, None)
    from_event = Finding.from_inspector_event(finding_event().detail)
    assert (from_event.vulnerability_id, from_event.fixed_version, from_event.epss) == (
        "CVE-2023-44487",
        "1.52.0-1+deb12u1",
        0.82,
    )


def test_a_replication_that_failed_for_good_is_alerted_once() -> None:
    world = World()
    event = ImageReplicationFailedEvent.model_validate(load_event("replication-failed.json"))

    first, again = world.handle(event), world.handle(event)

    assert (first.result, again.result) == (NotifyResult.POSTED, NotifyResult.DUPLICATE)
    text = all_text(world.posted[0])
    assert "team/web:v1.2.3" in text and "mirror/team/web" in text and "404 BLOB_UNKNOWN" in text
    quiet = World(NotifyRule(alert_replication_failures=False))
    assert quiet.handle(event).result == NotifyResult.IGNORED
