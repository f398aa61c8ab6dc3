"""The notifier: which scans, findings, violations and replication failures are worth a message, and the message.

Decisions and rendering are pure functions; ``Notifier`` applies them through the ports (findings,
the sent-ledger, the sinks, the registry). Delivery is "exactly once in effect": every message has a
fingerprint, a fingerprint already in the ledger posts nothing, and it is written to the ledger only
after every sink accepted the message, so a sink that fails leaves the event to Lambda's retries.

Messages are Slack Block Kit as plain dicts, within Slack's limits, and every text that comes from
outside (scanners, registries, CloudTrail) is escaped for mrkdwn: a description holding
``<!channel>`` or ``<https://evil.example|click>`` can neither ping a channel nor forge a link.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from ecr_automation.logic.platforms import counts_decide
from ecr_automation.logic.ports import FindingsSource, MessageSink, Registry, SentLedger
from ecr_automation.models.domain import RepositoryRef, short_digest
from ecr_automation.models.events.application import (
    ImageReplicationFailedEvent,
    LifecycleViolationEvent,
    TagGuardViolationAttributedEvent,
    TagGuardViolationEvent,
    ViolationDetail,
)
from ecr_automation.models.events.base import Severity, SeverityCounts
from ecr_automation.models.events.inspector_findings import InspectorFindingEvent
from ecr_automation.models.events.replication import ReplicationActionEvent
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.models.findings import Finding, Message, ScannedImage
from ecr_automation.models.versions import Version, highest_version
from ecr_automation.rules import IgnoredVulnerability, NotifyRule, Rules

NotifyEvent = (
    ImageScanEvent
    | InspectorScanEvent
    | InspectorFindingEvent
    | TagGuardViolationEvent
    | TagGuardViolationAttributedEvent
    | ReplicationActionEvent
    | ImageReplicationFailedEvent
    | LifecycleViolationEvent
)

SCANNER_BASIC = "basic"
SCANNER_ENHANCED = "enhanced"
_SCANNER_NAMES = {SCANNER_BASIC: "ECR basic scanning", SCANNER_ENHANCED: "Amazon Inspector (enhanced scanning)"}

# Slack's limits (Block Kit reference): blocks per message, characters per text object and header,
# fields per section and characters per field, elements per context block.
MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_HEADER = 150
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
# The plain-text fallback (notifications, SNS e-mail): short, the blocks carry the detail.
MAX_FALLBACK = 1000
# Expired exceptions listed one by one before "and N more".
MAX_EXPIRED_LISTED = 5

# How much of each outside value a message shows (before escaping, which may lengthen it).
_ID_CHARS = 80
_URL_CHARS = 400
_PACKAGE_CHARS = 120
_VERSION_CHARS = 60
_TITLE_CHARS = 200
_DESCRIPTION_CHARS = 600
_SHORT_CHARS = 300

# What each way a scan can end without results means, in one sentence for the message.
_SCAN_FAILURE_REASONS = {
    "FAILED": "The scan did not complete. Start it again (`aws ecr start-image-scan`) or push the image again.",
    "UNSUPPORTED_IMAGE": (
        "The scanner does not support this image's operating system or format: its vulnerabilities are unknown."
    ),
    "SCAN_ELIGIBILITY_EXPIRED": "The image is no longer rescanned: its scan eligibility period has passed.",
}

_SEVERITY_EMOJI = {
    Severity.CRITICAL: ":red_circle:",
    Severity.HIGH: ":large_orange_circle:",
    Severity.MEDIUM: ":large_yellow_circle:",
    Severity.LOW: ":large_blue_circle:",
    Severity.INFORMATIONAL: ":white_circle:",
    Severity.UNDEFINED: ":white_circle:",
}

# What makes an outside URL safe to link: http(s), and nothing that could end the link or start a label.
_LINKABLE_URL = re.compile(r"https?://[^\s|<>]+", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_MRKDWN_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_PLAIN_LOOKALIKES = str.maketrans({"<": "\u2039", ">": "\u203a"})


@dataclass(frozen=True)
class _AlertKind:
    """An alert this application raises, and the [[notify]] switch that turns it on."""

    name: str
    wanted: Callable[[NotifyRule], bool]


_ALERTS_VIOLATIONS = _AlertKind("violations", lambda rule: rule.alert_violations)
_ALERTS_REPLICATION_FAILURES = _AlertKind("replication failures", lambda rule: rule.alert_replication_failures)


class NotifyResult(StrEnum):
    POSTED = "posted"
    NOTHING_TO_POST = "nothing_to_post"  # the rule says this event is not worth a message
    DUPLICATE = "duplicate"  # the same message was already delivered
    NO_RULE = "no_rule"
    IGNORED = "ignored"  # not an event the notifier reports (a successful replication, a switched-off alert)


@dataclass(frozen=True)
class NotifyOutcome:
    result: str  # a NotifyResult value
    messages: list[Message] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": str(self.result),
            "fingerprints": [message.fingerprint for message in self.messages],
            "notes": self.notes,
        }


class FindingsNotReadyError(RuntimeError):
    """The scan event arrived, but its findings cannot be read yet: raise so that Lambda retries later."""


# --- text ---------------------------------------------------------------------------------------


def escape_mrkdwn(text: str) -> str:
    """``text`` with the three characters Slack parses as control sequences escaped (``&``, ``<``, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escaped(text: str, limit: int) -> str:
    """Outside text on one line, escaped, at most ``limit`` characters (cut between entities, never inside one)."""
    text = _WHITESPACE.sub(" ", text).strip()
    escaped = escape_mrkdwn(text)
    if len(escaped) <= limit:
        return escaped
    pieces: list[str] = []
    size = 0
    for char in text:
        piece = _MRKDWN_ENTITIES.get(char, char)
        if size + len(piece) > limit - 1:
            break
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces) + "…"


def _plain(text: str, limit: int) -> str:
    """Text for a plain_text object (a header): one line, at most ``limit`` characters.

    Slack parses no mentions or links in plain_text, and would show an entity as written, so nothing is
    escaped; angle brackets become look-alikes all the same, so no client can ever read a control sequence.
    """
    text = _WHITESPACE.sub(" ", text).strip().translate(_PLAIN_LOOKALIKES)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def linked(url: str | None, label: str, *, bold: bool = False) -> str:
    """``label`` (already escaped) linked to ``url`` when it is a safe http(s) URL, else with the URL as text.

    A URL holding ``|``, ``<``, ``>`` or white space could end the link early or carry a label of its own.
    """
    shown = f"*{label}*" if bold else label
    if not url:
        return shown
    if len(url) <= _URL_CHARS and _LINKABLE_URL.fullmatch(url):
        link = f"<{escape_mrkdwn(url)}|{label}>"
        return f"*{link}*" if bold else link
    return f"{shown} ({_escaped(url, _SHORT_CHARS)})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- Block Kit ----------------------------------------------------------------------------------


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _plain(text, MAX_HEADER), "emoji": True}}


def _mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object Slack takes verbatim: our own <url|label> links still work, but nothing from
    outside (a bare @channel, @here, a URL) is turned into a mention or a link by Slack's auto-parsing."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text[:MAX_TEXT])}


def _field_sections(pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Label/value pairs (values already escaped) as sections of at most ten fields each."""
    fields = [_mrkdwn(f"*{label}*\n{value}"[:MAX_FIELD_TEXT]) for label, value in pairs]
    return [{"type": "section", "fields": fields[i : i + MAX_FIELDS]} for i in range(0, len(fields), MAX_FIELDS)]


def _context(texts: list[str]) -> dict[str, Any]:
    elements = [_mrkdwn(text[:MAX_TEXT]) for text in texts if text][:MAX_CONTEXT_ELEMENTS]
    return {"type": "context", "elements": elements}


_DIVIDER: dict[str, Any] = {"type": "divider"}


def _pack(lines: list[str], limit: int = MAX_TEXT) -> list[str]:
    """Lines joined into as few texts of at most ``limit`` characters as they fit in."""
    texts: list[str] = []
    current = ""
    for line in lines:
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            texts.append(current)
        current = line[:limit]
    if current:
        texts.append(current)
    return texts


def _message(text: str, blocks: list[dict[str, Any]], fingerprint: str) -> Message:
    # Everything above keeps each message far below the block limit; this keeps the promise if a
    # future change does not (the last block is the context, which says where to look).
    if len(blocks) > MAX_BLOCKS:
        blocks = [*blocks[: MAX_BLOCKS - 1], blocks[-1]]
    return Message(text=text[:MAX_FALLBACK], blocks=blocks, fingerprint=fingerprint)


# --- images -------------------------------------------------------------------------------------


def findings_console_url(image: ScannedImage) -> str:
    """The ECR console page with the image's scan results."""
    repository = image.repository
    region = repository.region
    return (
        f"https://{region}.console.aws.amazon.com/ecr/repositories/private/{repository.registry_id}/"
        f"{repository.name}/_/image/{image.digest}/scan-results?region={region}"
    )


def repository_console_url(repository: RepositoryRef) -> str:
    region = repository.region
    return (
        f"https://{region}.console.aws.amazon.com/ecr/repositories/private/{repository.registry_id}/"
        f"{repository.name}?region={region}"
    )


def image_label(repository: str, tags: Iterable[str], digest: str) -> str:
    """``repo:tag`` by the image's highest release tag (else its first tag), or ``repo@<12 hex>`` untagged."""
    tags = sorted(tags)
    release = highest_version(tags)
    if release is not None:
        return f"{repository}:{release[0]}"
    if tags:
        return f"{repository}:{tags[0]}"
    return f"{repository}@{short_digest(digest)}"


def _tags_text(tags: Iterable[str]) -> str:
    tags = sorted(tags)
    if not tags:
        return "untagged"
    shown = ", ".join(f"`{_escaped(tag, 128)}`" for tag in tags[:10])
    return shown + (f" and {len(tags) - 10} more" if len(tags) > 10 else "")


def _image_fields(image: ScannedImage, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    repository = image.repository
    return [
        ("Repository", _escaped(repository.name, 256)),
        ("Tags", _tags_text(image.tags)),
        ("Digest", f"`{short_digest(image.digest)}`"),
        ("Region", _escaped(repository.region, 64)),
        ("Account", _escaped(repository.registry_id, 64)),
        *extra,
    ]


def _image_label(image: ScannedImage) -> str:
    return image_label(image.repository.name, image.tags, image.digest)


# --- the scan report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiredException:
    """An ignore entry whose date has passed while the vulnerability is still there."""

    vulnerability_id: str
    expired_on: date
    reason: str


@dataclass(frozen=True)
class ScanReport:
    """What a scan message says: counts, the findings that matter most, and what was left out and why.

    Holds only what the message shows: the top findings and counters, whatever the number of findings read.
    """

    threshold: Severity
    counts: SeverityCounts  # every active finding, any severity
    fixable: int | None  # how many active findings have a fix; None: only the event's counts were seen
    top: tuple[Finding, ...]  # the findings shown, most important first
    reportable: int  # findings at or above the threshold, neither ignored nor known: shown or counted
    reportable_fixable: int
    # An order-independent digest of the reportable findings' ids (a sum of per-id hashes): equal for
    # the same findings however the pages come, different when one is added or removed.
    finding_set: str
    ignored: int = 0  # left out by an ignore entry that still holds
    expired: tuple[ExpiredException, ...] = ()
    known_left_out: int = 0  # left out in new-only mode: the previous release has them too
    new_only: bool = False

    @property
    def more(self) -> int:
        """Reportable findings the message counts without listing them."""
        return self.reportable - len(self.top)

    @property
    def clean(self) -> bool:
        """Nothing at or above the threshold is left to report."""
        return self.reportable == 0

    @classmethod
    def from_counts(cls, counts: SeverityCounts, threshold: Severity) -> ScanReport:
        """The report of a scan whose event counts show nothing at or above the threshold (no findings read)."""
        return cls(threshold, counts, None, (), 0, 0, "")


_FINDING_SET_BITS = 128
_FINDING_SET_MASK = (1 << _FINDING_SET_BITS) - 1


def _id_hash(vulnerability_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(vulnerability_id.encode(), digest_size=16).digest(), "big")


def importance_key(finding: Finding) -> tuple[bool, int, float, float, str, str, str]:
    """Sorts the findings that matter most first: exploit available, severity, EPSS, score; then by id."""
    return (
        not finding.exploit_available,
        -finding.severity.rank,
        -(finding.epss if finding.epss is not None else -1.0),
        -(finding.score if finding.score is not None else -1.0),
        finding.vulnerability_id,
        finding.package or "",
        finding.installed_version or "",
    )


@dataclass
class _Tally:
    by_severity: Counter[Severity] = field(default_factory=Counter)
    fixable: int = 0
    reportable: int = 0
    reportable_fixable: int = 0
    finding_set: int = 0
    ignored: int = 0
    known: int = 0
    expired: dict[str, ExpiredException] = field(default_factory=dict)


def summarize(findings: Iterable[Finding], rule: NotifyRule, *, today: date, known: Iterable[str] = ()) -> ScanReport:
    """What a scan message reports about ``findings`` under ``rule``, reading them once.

    Memory holds the ``rule.max_findings`` most important findings (a bounded heap) and counters, never
    the findings read: a scan of any size costs the same. Inactive (suppressed, closed) findings count
    nowhere. An ignore entry holds through its ``expires`` day; after it the finding is reported again
    and the report names the expired exception. With ``rule.new_only``, findings whose id is in
    ``known`` (the previous release's) are left out and counted.
    """
    threshold_rank = rule.threshold.rank
    known_ids = frozenset(known) if rule.new_only else frozenset()
    tally = _Tally()

    def reportable() -> Iterator[Finding]:
        for finding in findings:
            if not finding.active:
                continue
            tally.by_severity[finding.severity] += 1
            fixable = finding.fix_available
            tally.fixable += fixable
            if finding.severity.rank < threshold_rank:
                continue
            exception = rule.exception_for(finding.vulnerability_id)
            if exception is not None and not exception.expired(today):
                tally.ignored += 1
                continue
            if finding.vulnerability_id in known_ids:
                tally.known += 1
                continue
            if exception is not None:
                tally.expired.setdefault(
                    exception.id, ExpiredException(exception.id, exception.expires, exception.reason)
                )
            tally.reportable += 1
            tally.reportable_fixable += fixable
            tally.finding_set = (tally.finding_set + _id_hash(finding.vulnerability_id)) & _FINDING_SET_MASK
            yield finding

    # nsmallest keeps a heap of max_findings entries while it consumes the generator once.
    top = heapq.nsmallest(rule.max_findings, reportable(), key=importance_key)
    counts = SeverityCounts.model_validate({severity.value: count for severity, count in tally.by_severity.items()})
    return ScanReport(
        threshold=rule.threshold,
        counts=counts,
        fixable=tally.fixable,
        top=tuple(top),
        reportable=tally.reportable,
        reportable_fixable=tally.reportable_fixable,
        finding_set=f"{tally.finding_set:032x}" if tally.reportable else "",
        ignored=tally.ignored,
        expired=tuple(sorted(tally.expired.values(), key=lambda entry: entry.vulnerability_id)),
        known_left_out=tally.known,
        new_only=rule.new_only,
    )


# --- fingerprints -------------------------------------------------------------------------------


def scan_fingerprint(digest: str, report: ScanReport) -> str:
    """The same image with the same findings at or above the threshold is reported once."""
    return f"scan#{digest}#{report.finding_set or 'clean'}"


def failed_scan_fingerprint(digest: str, status: str) -> str:
    return f"scan#{digest}#{status}"


def image_reported_fingerprint(digest: str) -> str:
    """Marked once a scan of the image was handled: later single-finding events may then post."""
    return f"image#{digest}"


def finding_fingerprint(finding_arn: str, severity: Severity) -> str:
    """A score-only update keeps the fingerprint (posts nothing); a raised severity makes a new one."""
    return f"finding#{finding_arn}#{severity.value}"


def violation_fingerprint(detail: ViolationDetail, *, attributed: bool) -> str:
    # The attribution that follows a violation names the same incident, and is a message of its own.
    kind = "violation-attributed" if attributed else "violation"
    return f"{kind}#{detail.source_event_id}#{detail.image_tag}#{detail.change}"


def replication_fingerprint(event_id: str) -> str:
    return f"replication#{event_id}"


def lifecycle_fingerprint(policy_hash: str) -> str:
    """One message per (repository, policy): the ledger's partition is the repository."""
    return f"lifecycle#{policy_hash}"


# --- rendering ----------------------------------------------------------------------------------


def _counts_text(counts: SeverityCounts) -> str:
    parts = [f"{count} {severity.value.lower()}" for severity in Severity if (count := counts.count(severity))]
    return " · ".join(parts) if parts else "no findings"


def _fix_text(finding: Finding, scanner: str) -> str:
    if finding.fixed_version:
        return f"fixed in {_escaped(finding.fixed_version, _VERSION_CHARS)}"
    # Basic scanning reports no fixed versions at all: say what is known, not more.
    return "no fix known" if scanner == SCANNER_BASIC else "no fix"


def finding_line(finding: Finding, scanner: str) -> str:
    """One finding as a mrkdwn line: id linked to its source, severity, signals, package and versions."""
    vulnerability = linked(finding.source_url, _escaped(finding.vulnerability_id, _ID_CHARS), bold=True)
    signals = [f"{_SEVERITY_EMOJI[finding.severity]} {finding.severity.value}"]
    if finding.exploit_available:
        signals.append("exploit available")
    if finding.epss is not None:
        signals.append(f"EPSS {finding.epss:.2f}")
    if finding.score is not None:
        signals.append(f"score {finding.score:.1f}")
    package = _escaped(finding.package, _PACKAGE_CHARS) if finding.package else "unknown package"
    installed = _escaped(finding.installed_version, _VERSION_CHARS) if finding.installed_version else "?"
    return f"• {vulnerability} · {' · '.join(signals)}\n      `{package}` {installed} → {_fix_text(finding, scanner)}"


def _expired_lines(expired: tuple[ExpiredException, ...]) -> list[str]:
    lines = [
        f":warning: Exception for *{_escaped(entry.vulnerability_id, _ID_CHARS)}* expired on "
        f"{entry.expired_on.isoformat()} ({_escaped(entry.reason, _SHORT_CHARS)}): it is reported again."
        for entry in expired[:MAX_EXPIRED_LISTED]
    ]
    if len(expired) > MAX_EXPIRED_LISTED:
        lines.append(f"and {len(expired) - MAX_EXPIRED_LISTED} more expired exceptions")
    return lines


def render_scan(
    report: ScanReport,
    image: ScannedImage,
    *,
    scanner: str,
    compared_with: str | None = None,
    console_url: str | None = None,
) -> Message:
    """The message for a completed scan: with findings, or clean (what a rule with ``post_clean`` posts).

    ``compared_with`` names the previous release a new-only report was compared with.
    """
    label = _image_label(image)
    threshold = report.threshold.value
    url = console_url or findings_console_url(image)
    scanner_name = _SCANNER_NAMES.get(scanner, scanner)
    if report.clean:
        headline = f":white_check_mark: No findings at {threshold} or above in {label}"
        if report.known_left_out:
            headline = f":white_check_mark: No new findings at {threshold} or above in {label}"
    else:
        worst = report.top[0].severity if report.top else report.threshold
        noun = "new finding" if report.new_only else "finding"
        headline = f"{_SEVERITY_EMOJI[worst]} {_plural(report.reportable, noun)} at {threshold} or above in {label}"

    summary = f"*Findings:* {_counts_text(report.counts)}"
    if report.fixable is not None and (scanner != SCANNER_BASIC or report.fixable):
        summary += f" — {report.fixable} with a fix available"
    elif scanner == SCANNER_BASIC:
        summary += " — basic scanning reports no fixed versions"
    summary += f"\n{linked(url, 'View the scan results in the ECR console')}"

    blocks: list[dict[str, Any]] = [
        _header(headline),
        *_field_sections(_image_fields(image, ("Scanner", escape_mrkdwn(scanner_name)))),
        _section(summary),
    ]
    if report.expired:
        blocks.append(_section("\n".join(_expired_lines(report.expired))))
    if report.top:
        blocks.append(_DIVIDER)
        lines = [finding_line(finding, scanner) for finding in report.top]
        if report.more:
            lines.append(f"and {report.more} more at {threshold} or above")
        blocks.extend(_section(text) for text in _pack(lines))

    notes = [f"Threshold {threshold}"]
    if report.top:
        notes.append(f"{report.reportable_fixable} of {report.reportable} fixable")
    if report.ignored:
        notes.append(f"{_plural(report.ignored, 'finding')} ignored by accepted exceptions")
    if report.new_only:
        where = f"already in {_escaped(compared_with, 128)}" if compared_with else "known from the previous release"
        notes.append(f"{_plural(report.known_left_out, 'known finding')} left out ({where})")
    blocks.append(_context([" · ".join(notes)]))

    fallback = f"{label}: {_counts_text(report.counts)}"
    if not report.clean:
        noun = "new finding" if report.new_only else "finding"
        fallback = f"{_plural(report.reportable, noun)} at {threshold} or above in {label}: " + ", ".join(
            finding.vulnerability_id for finding in report.top[:5]
        )
    return _message(escape_mrkdwn(fallback), blocks, scan_fingerprint(image.digest, report))


def render_failed_scan(image: ScannedImage, *, scanner: str, status: str, description: str | None = None) -> Message:
    """A scan that ended without results (FAILED, UNSUPPORTED_IMAGE, ...): why, and where to look."""
    label = _image_label(image)
    reason = description or _SCAN_FAILURE_REASONS.get(status, f"The scan ended with status {status}.")
    blocks = [
        _header(f":warning: Scan {status.replace('_', ' ').lower()}: {label}"),
        _section(f"*{_escaped(status, 64)}*: {_escaped(reason, _DESCRIPTION_CHARS)}"),
        *_field_sections(_image_fields(image, ("Scanner", escape_mrkdwn(_SCANNER_NAMES.get(scanner, scanner))))),
        _context([linked(findings_console_url(image), "View the image in the ECR console")]),
    ]
    fallback = escape_mrkdwn(f"Scan {status} for {label}: {reason}")
    return _message(fallback, blocks, failed_scan_fingerprint(image.digest, status))


def _age(pushed_at: datetime | None, now: datetime) -> str:
    if pushed_at is None:
        return ""
    days = (now - pushed_at).days
    if days <= 0:
        return "shipped today"
    return f"shipped {_plural(days, 'day')} ago"


def render_new_finding(
    finding: Finding,
    image: ScannedImage,
    *,
    now: datetime,
    expired: IgnoredVulnerability | None = None,
) -> Message:
    """A finding that became active (or worse) on an image whose scan was already reported."""
    label = _image_label(image)
    age = _age(image.pushed_at, now)
    headline = f"{_SEVERITY_EMOJI[finding.severity]} New {finding.severity.value} in {label}" + (
        f", {age}" if age else ""
    )
    lines = [finding_line(finding, SCANNER_ENHANCED)]
    if finding.title:
        lines.append(f"*{_escaped(finding.title, _TITLE_CHARS)}*")
    if finding.description:
        lines.append(_escaped(finding.description, _DESCRIPTION_CHARS))
    blocks = [_header(headline), _section("\n".join(lines))]
    if expired is not None and expired.expired(now.date()):
        blocks.append(
            _section("\n".join(_expired_lines((ExpiredException(expired.id, expired.expires, expired.reason),))))
        )
    blocks += [
        *_field_sections(_image_fields(image)),
        _context(
            [
                linked(findings_console_url(image), "View the scan results in the ECR console"),
                "Continuous rescanning found it after the image's scan was reported",
            ]
        ),
    ]
    fallback = escape_mrkdwn(f"New {finding.severity.value} {finding.vulnerability_id} in {label}")
    fingerprint = finding_fingerprint(finding.finding_arn or finding.vulnerability_id, finding.severity)
    return _message(fallback, blocks, fingerprint)


def render_violation(event: TagGuardViolationEvent | TagGuardViolationAttributedEvent) -> Message:
    """A protected tag moved or deleted (or, later, who did it): who, what, when, and what the guard did."""
    detail = event.detail
    attributed = isinstance(event, TagGuardViolationAttributedEvent)
    repository = RepositoryRef(detail.registry_id, detail.region, detail.repository_name)
    tag_label = f"{detail.repository_name}:{detail.image_tag}"
    emoji = ":rotating_light:" if detail.severity == "CRITICAL" else ":warning:"
    if attributed:
        headline = f"{emoji} Tag guard: {tag_label} was {detail.change} by {detail.actor}"
    else:
        headline = f"{emoji} Tag guard: protected tag {tag_label} was {detail.change}"
    quarantine = f"`{_escaped(detail.quarantine_tag, 128)}`" if detail.quarantine_tag else "none"
    pairs = [
        ("Severity", detail.severity),
        ("Change", _escaped(detail.change, 64)),
        ("Handling", _escaped(detail.handling, 64)),
        ("Who", _escaped(detail.actor, _SHORT_CHARS)),
        ("When", _escaped(detail.source_event_time.isoformat(), 64)),
        ("Owner image", f"`{short_digest(detail.claimed_digest)}`"),
        ("Offending image", f"`{short_digest(detail.offending_digest)}`"),
        ("Quarantine tag", quarantine),
        ("Region", _escaped(detail.region, 64)),
        ("Account", _escaped(detail.registry_id, 64)),
    ]
    lead = (
        "CloudTrail names who caused this earlier violation."
        if attributed
        else "A protected tag belongs to the image of its first push."
    )
    blocks = [
        _header(headline),
        _section(f"{_escaped(detail.summary, _DESCRIPTION_CHARS)}\n_{lead}_"),
        *_field_sections(pairs),
        _context(
            [
                linked(
                    repository_console_url(repository), f"{_escaped(detail.repository_name, 256)} in the ECR console"
                ),
                f"source event {_escaped(detail.source_event_id, 128)}",
            ]
        ),
    ]
    return _message(
        escape_mrkdwn(f"[{detail.severity}] {detail.summary}"),
        blocks,
        violation_fingerprint(detail, attributed=attributed),
    )


def render_replication_failure(event: ReplicationActionEvent) -> Message:
    """A native replication that failed into this (destination) region."""
    detail = event.detail
    repository = RepositoryRef(event.account, event.region, detail.repository_name)
    image = ScannedImage(repository, detail.image_digest, (detail.image_tag,) if detail.image_tag else ())
    label = _image_label(image)
    source = f"{detail.source_account} / {detail.source_region}"
    destination = f"{event.account} / {event.region}"
    blocks = [
        _header(f":x: Replication failed: {label}"),
        _section(
            f"ECR could not replicate {_escaped(label, 400)} from *{_escaped(source, 128)}* "
            f"to *{_escaped(destination, 128)}*. The image is missing in this region until it is pushed again."
        ),
        *_field_sections(
            _image_fields(
                image,
                ("Source", _escaped(source, 128)),
                ("Action", _escaped(detail.action_type, 64)),
            )
        ),
        _context(
            [
                linked(repository_console_url(repository), "The repository in the ECR console"),
                f"event {_escaped(event.id, 128)} at {event.time.isoformat()}",
            ]
        ),
    ]
    return _message(
        escape_mrkdwn(f"Replication of {label} from {source} to {destination} failed"),
        blocks,
        replication_fingerprint(event.id),
    )


def render_own_replication_failure(event: ImageReplicationFailedEvent) -> Message:
    """A replication job of this application's that failed for good (after the queue's last delivery)."""
    detail = event.detail
    source = detail.source
    repository = RepositoryRef(source.account, source.region, source.repository_name)
    image = ScannedImage(repository, detail.image_digest, (source.image_tag,) if source.image_tag else ())
    label = _image_label(image)
    destination = _destination_label(detail.destination)
    conflicts = ", ".join(_escaped(conflict, 128) for conflict in detail.conflicts[:10])
    blocks = [
        _header(f":x: Replication failed: {label}"),
        _section(
            f"{_escaped(label, 400)} was not replicated to *{_escaped(destination, 300)}*: "
            f"{_escaped(detail.reason, 1500)}"
            + (f"\nProtected tags that name another image there (never overwritten): {conflicts}" if conflicts else "")
        ),
        *_field_sections(_image_fields(image, ("Destination", _escaped(destination, 300)))),
        _context([f"job {_escaped(detail.job_id, 128)} · event {_escaped(event.id, 128)} at {event.time.isoformat()}"]),
    ]
    return _message(
        escape_mrkdwn(f"Replication of {label} to {destination} failed: {detail.reason}")[:MAX_TEXT],
        blocks,
        replication_fingerprint(detail.job_id),
    )


# Images a lifecycle alert lists one by one before "and N more"; the suggested policy shown at most this long.
MAX_LIFECYCLE_IMAGES = 10
_POLICY_CHARS = 2400


def render_lifecycle_violation(event: LifecycleViolationEvent) -> Message:
    """A lifecycle policy just put would expire protected tags or alias targets: which, by which rule, the fix."""
    detail = event.detail
    repository = RepositoryRef(detail.registry_id, detail.region, detail.repository_name)
    emoji = ":rotating_light:" if detail.severity == "CRITICAL" else ":warning:"
    what = "protected tags" if any(image.protected_tags for image in detail.images) else "alias targets"
    lines = []
    for image in detail.images[:MAX_LIFECYCLE_IMAGES]:
        label = image_label(detail.repository_name, image.image_tags, image.image_digest)
        why = [f"protected {_tags_text(image.protected_tags)}"] if image.protected_tags else []
        why += [f"alias target of {_tags_text(image.alias_tags)}"] if image.alias_tags else []
        pushed = f", pushed {image.pushed_at.date().isoformat()}" if image.pushed_at else ""
        lines.append(
            f"• {_escaped(label, 300)} (`{short_digest(image.image_digest)}`): {'; '.join(why)}"
            f" — {_escaped(image.action, 32)} by rule {image.rule_priority}{pushed}"
        )
    if detail.image_count > len(lines):
        lines.append(f"… and {detail.image_count - len(lines)} more")
    pairs = [
        ("Severity", detail.severity),
        ("Images", str(detail.image_count)),
        ("Who", _escaped(detail.actor, _SHORT_CHARS)),
        ("When", _escaped(detail.source_event_time.isoformat(), 64)),
        ("Policy", f"`{_escaped(detail.policy_hash, 32)}`"),
        ("ECR preview", _escaped(detail.preview, 64)),
        ("Region", _escaped(detail.region, 64)),
        ("Account", _escaped(detail.registry_id, 64)),
    ]
    fix = f"*Suggested change:* {_escaped(detail.suggestion, _DESCRIPTION_CHARS)}"
    if detail.suggested_policy:
        # Outside text in a code block: escaped, and no fence of its own that could end ours.
        policy = escape_mrkdwn(detail.suggested_policy.replace("`", "'"))
        if len(policy) > _POLICY_CHARS:
            policy = policy[:_POLICY_CHARS].rsplit("\n", 1)[0] + "\n…"
        fix += f"\n```{policy}```"
    check = f"`ecr-automation lifecycle check {_escaped(detail.repository_name, 256)}` shows every image"
    blocks = [
        _header(f"{emoji} Lifecycle policy: {detail.repository_name} would expire {what}"),
        _section(
            f"{_escaped(detail.summary, _DESCRIPTION_CHARS)}\n"
            "_ECR expires images within a day of their meeting a rule; the policy was not changed._"
        ),
        *_field_sections(pairs),
        *[_section(text) for text in _pack(lines)],
        _section(fix[:MAX_TEXT]),
        _context(
            [
                linked(
                    repository_console_url(repository), f"{_escaped(detail.repository_name, 256)} in the ECR console"
                ),
                check,
                f"source event {_escaped(detail.source_event_id, 128)}",
            ]
        ),
    ]
    return _message(
        escape_mrkdwn(f"[{detail.severity}] {detail.summary}"), blocks, lifecycle_fingerprint(detail.policy_hash)
    )


def _destination_label(destination: dict[str, Any]) -> str:
    """Where a job was going: a registry URL or an ECR account/region, and the repository."""
    where = destination.get("registry") or "/".join(
        str(part) for part in (destination.get("account"), destination.get("region")) if part
    )
    repository = destination.get("repository") or ""
    return f"{where} {repository}".strip() or "its destination"


# --- the workflow -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviousRelease:
    image: ScannedImage
    tag: str


def previous_release(
    image: ScannedImage, tagged: Iterable[tuple[str, str, datetime | None]]
) -> tuple[PreviousRelease | None, str]:
    """The release before ``image``'s own highest release tag, from the repository's (tag, digest, time).

    A stable release is compared with the stable release before it; a pre-release with any version
    below it. Returns the release (or None) and a note saying which, or why there is none.
    """
    own_tags = set(image.tags)
    others: dict[str, str] = {}
    for tag, digest, _ in tagged:
        if digest == image.digest:
            own_tags.add(tag)
        else:
            others[tag] = digest
    own = highest_version(own_tags)
    if own is None:
        return None, "the image has no release tag: every finding is new"
    own_version = own[1]

    def before_own(version: Version) -> bool:
        return version.precedence < own_version.precedence and (own_version.is_prerelease or not version.is_prerelease)

    previous = highest_version(others, before_own)
    if previous is None:
        return None, f"no release before {own[0]}: every finding is new"
    tag = previous[0]
    return PreviousRelease(ScannedImage(image.repository, others[tag], (tag,)), tag), f"compared with {tag}"


class Notifier:
    # The constructor's positional order is the API the handler wires (as Retagger's is).
    def __init__(  # noqa: PLR0917
        self,
        rules: Rules,
        findings: FindingsSource,
        sent: SentLedger,
        sinks: list[MessageSink],
        registry: Registry,
        clock: Callable[[], datetime],
    ) -> None:
        self._rules = rules
        self._findings = findings
        self._sent = sent
        self._sinks = sinks
        self._registry = registry
        self._clock = clock

    def handle(self, event: NotifyEvent) -> NotifyOutcome:
        if isinstance(event, ImageScanEvent | InspectorScanEvent):
            return self._on_scan(event)
        if isinstance(event, InspectorFindingEvent):
            return self._on_finding(event)
        if isinstance(event, TagGuardViolationEvent | TagGuardViolationAttributedEvent):
            return self._on_violation(event)
        if isinstance(event, ImageReplicationFailedEvent):
            return self._on_own_replication_failure(event)
        if isinstance(event, LifecycleViolationEvent):
            return self._on_lifecycle_violation(event)
        return self._on_replication(event)

    # -- scans -------------------------------------------------------------------------------------
    def _on_scan(self, event: ImageScanEvent | InspectorScanEvent) -> NotifyOutcome:
        detail = event.detail
        name = detail.repository_name
        rule = self._rules.notify_for(name)
        if rule is None:
            return NotifyOutcome(NotifyResult.NO_RULE, notes=[f"no notify rule for {name}"])
        repository = RepositoryRef(event.account, event.region, name)
        image = ScannedImage(repository, detail.image_digest, tuple(detail.image_tags))
        scanner = SCANNER_BASIC if isinstance(event, ImageScanEvent) else SCANNER_ENHANCED
        if not detail.complete:
            if not rule.post_failures:
                return NotifyOutcome(
                    NotifyResult.NOTHING_TO_POST, notes=[f"scan {detail.scan_status}: the rule posts no failures"]
                )
            message = render_failed_scan(image, scanner=scanner, status=detail.scan_status)
            return self._deliver(repository, rule, message, [f"scan {detail.scan_status}"])

        counts = detail.finding_severity_counts
        decided_by_counts = counts_decide(rule.threshold, inspector_counts=scanner != SCANNER_BASIC)
        notes: list[str] = []
        compared_with: str | None = None
        if decided_by_counts and counts.at_or_above(rule.threshold) == 0:
            report = ScanReport.from_counts(counts, rule.threshold)
            notes.append(f"nothing at {rule.threshold} or above in the scan's counts: findings not read")
        else:
            report, compared_with, more_notes = self._summarize(image, rule)
            notes += more_notes

        if report.clean and not rule.post_clean:
            # The scan is handled all the same: findings that appear on this image later may post.
            self._mark_reported(repository, image)
            return NotifyOutcome(NotifyResult.NOTHING_TO_POST, notes=[*notes, _why_clean(report)])
        message = render_scan(report, image, scanner=scanner, compared_with=compared_with)
        outcome = self._deliver(repository, rule, message, notes)
        self._mark_reported(repository, image)
        return outcome

    def _mark_reported(self, repository: RepositoryRef, image: ScannedImage) -> None:
        """Remember, for good (an image can be rescanned for years), that and when its scan was handled."""
        summary = f"{REPORTED_AT}{self._clock().isoformat()} {_image_label(image)}"
        self._sent.mark_sent(repository, image_reported_fingerprint(image.digest), summary, keep=True)

    def _summarize(self, image: ScannedImage, rule: NotifyRule) -> tuple[ScanReport, str | None, list[str]]:
        findings = self._findings.findings(image)
        if findings is None:
            raise FindingsNotReadyError(f"the scan findings of {_image_label(image)} cannot be read yet")
        known: Iterable[str] = ()
        compared_with: str | None = None
        notes: list[str] = []
        if rule.new_only:
            previous, note = previous_release(image, self._registry.tagged_images(image.repository))
            notes.append(note)
            if previous is not None:
                previous_findings = self._findings.findings(previous.image)
                if previous_findings is None:
                    notes.append(f"{previous.tag} has no scan results: every finding is new")
                else:
                    known = {finding.vulnerability_id for finding in previous_findings if finding.active}
                    compared_with = previous.tag
        report = summarize(findings, rule, today=self._clock().date(), known=known)
        return report, compared_with, notes

    # -- single findings (continuous rescans) ------------------------------------------------------
    def _on_finding(self, event: InspectorFindingEvent) -> NotifyOutcome:
        """Post a finding that became active (or more severe) on an image whose scan was reported.

        Findings of an image whose scan was not reported yet belong to that scan's summary. New-only
        mode does not apply: a finding a rescan adds is new to the image by definition.
        """
        detail = event.detail
        container = detail.container_image
        if container is None:
            return NotifyOutcome(NotifyResult.IGNORED, notes=["not a finding about an ECR container image"])
        rule = self._rules.notify_for(container.repository_name)
        if rule is None:
            return NotifyOutcome(NotifyResult.NO_RULE, notes=[f"no notify rule for {container.repository_name}"])
        finding = Finding.from_inspector_event(detail)
        now = self._clock()
        exception = rule.exception_for(finding.vulnerability_id)
        repository = RepositoryRef(container.registry, event.region, container.repository_name)
        image = ScannedImage(repository, container.image_hash, tuple(container.image_tags), container.pushed_at)
        if (reason := self._quiet_finding(finding, rule, image, exception, now.date())) is not None:
            told_already = reason.startswith(ALREADY_POSTED)
            return NotifyOutcome(
                NotifyResult.DUPLICATE if told_already else NotifyResult.NOTHING_TO_POST, notes=[reason]
            )
        message = render_new_finding(finding, image, now=now, expired=exception)
        outcome = self._deliver(repository, rule, message, [])
        if finding.finding_arn:  # the highest severity people were told of, for good
            self._sent.mark_sent(repository, _told_fingerprint(finding.finding_arn), finding.severity.value, keep=True)
        return outcome

    def _quiet_finding(
        self,
        finding: Finding,
        rule: NotifyRule,
        image: ScannedImage,
        exception: IgnoredVulnerability | None,
        today: date,
    ) -> str | None:
        """Why a single finding posts nothing, cheapest test first; None when it posts."""
        if not finding.active:
            return f"finding {finding.status}: nothing to post"
        if finding.severity.rank < rule.threshold.rank:
            return f"{finding.severity} is below the threshold {rule.threshold}"
        if exception is not None and not exception.expired(today):
            return f"{finding.vulnerability_id} is ignored until {exception.expires.isoformat()}: {exception.reason}"
        return self._already_told(finding, image)

    def _already_told(self, finding: Finding, image: ScannedImage) -> str | None:
        """Why people know of this finding already (the scan that counted it, or an earlier post); None if not."""
        reported = self._sent.recorded(image.repository, image_reported_fingerprint(image.digest))
        if reported is None:
            return "the image's scan was not reported yet: its summary will include this finding"
        told = self._sent.recorded(image.repository, _told_fingerprint(finding.finding_arn or ""))
        if told is not None and finding.severity.rank <= _severity_rank(told):
            return f"{ALREADY_POSTED}{finding.vulnerability_id} at {told}: only a raised severity posts again"
        reported_at = _reported_at(reported)
        first_seen = finding.first_observed_at
        if told is None and first_seen is not None and reported_at is not None and first_seen <= reported_at:
            # Delivered late, or updated (a score, EPSS): the scan that was reported already counted it.
            return f"{finding.vulnerability_id} was part of the scan reported at {reported_at.isoformat()}"
        return None

    # -- this application's events and replication -------------------------------------------------
    def _on_violation(self, event: TagGuardViolationEvent | TagGuardViolationAttributedEvent) -> NotifyOutcome:
        detail = event.detail
        repository = RepositoryRef(detail.registry_id, detail.region, detail.repository_name)
        return self._alert(repository, lambda: render_violation(event), _ALERTS_VIOLATIONS)

    def _on_lifecycle_violation(self, event: LifecycleViolationEvent) -> NotifyOutcome:
        detail = event.detail
        repository = RepositoryRef(detail.registry_id, detail.region, detail.repository_name)
        return self._alert(repository, lambda: render_lifecycle_violation(event), _ALERTS_VIOLATIONS)

    def _on_replication(self, event: ReplicationActionEvent) -> NotifyOutcome:
        detail = event.detail
        if detail.result != "FAILED":
            return NotifyOutcome(NotifyResult.IGNORED, notes=[f"replication {detail.result}: nothing to report"])
        repository = RepositoryRef(event.account, event.region, detail.repository_name)
        return self._alert(repository, lambda: render_replication_failure(event), _ALERTS_REPLICATION_FAILURES)

    def _on_own_replication_failure(self, event: ImageReplicationFailedEvent) -> NotifyOutcome:
        source = event.detail.source
        repository = RepositoryRef(source.account, source.region, source.repository_name)
        return self._alert(repository, lambda: render_own_replication_failure(event), _ALERTS_REPLICATION_FAILURES)

    def _alert(self, repository: RepositoryRef, render: Callable[[], Message], kind: _AlertKind) -> NotifyOutcome:
        """An alert goes where its repository's rule routes it, if that rule alerts this kind; rendered only then."""
        rule = self._rules.notify_for(repository.name)
        if rule is None:
            return NotifyOutcome(NotifyResult.NO_RULE, notes=[f"no notify rule for {repository.name}"])
        if not kind.wanted(rule):
            return NotifyOutcome(NotifyResult.IGNORED, notes=[f"the rule does not alert {kind.name}"])
        return self._deliver(repository, rule, render(), [])

    # -- delivery ----------------------------------------------------------------------------------
    def _deliver(
        self, repository: RepositoryRef, rule: NotifyRule, message: Message, notes: list[str]
    ) -> NotifyOutcome:
        """Send to each sink once: reserved first (no two invocations send the same), marked after it accepted.

        Each sink has its own record, so a sink failing after another accepted re-sends only to the one that
        failed when Lambda retries; a sink that raises gives its reservation back and nothing is marked.
        """
        summary = message.text[:200]
        posted: list[str] = []
        for position, sink in enumerate(self._sinks):
            label = _sink_label(sink, position, rule.route)
            fingerprint = f"{message.fingerprint}@{label}"
            if self._sent.recorded(repository, fingerprint) is not None or not self._sent.reserve(
                repository, fingerprint
            ):
                continue  # delivered, or being delivered by another invocation right now
            try:
                sink.send(message, route=rule.route)
            except Exception:
                self._sent.unreserve(repository, fingerprint)
                raise
            self._sent.mark_sent(repository, fingerprint, summary)
            posted.append(label)
        if not posted:
            return NotifyOutcome(NotifyResult.DUPLICATE, notes=[*notes, f"already sent: {message.fingerprint}"])
        self._sent.mark_sent(repository, message.fingerprint, summary)
        return NotifyOutcome(NotifyResult.POSTED, [message], notes)


def _sink_label(sink: MessageSink, position: int, route: str) -> str:
    """Which destination: the sink (its place in the deployment's list, which is fixed) and the route."""
    return f"{position}.{type(sink).__name__}:{route or 'default'}"


ALREADY_POSTED = "already posted: "
# The image mark's summary starts with when the scan was handled.
REPORTED_AT = "reported_at="


def _reported_at(summary: str) -> datetime | None:
    if not summary.startswith(REPORTED_AT):
        return None
    try:
        return datetime.fromisoformat(summary[len(REPORTED_AT) :].split(" ", 1)[0])
    except ValueError:
        return None


def _told_fingerprint(finding_arn: str) -> str:
    return f"told#{finding_arn}"


def _severity_rank(value: str) -> int:
    return Severity(value).rank if value in Severity.__members__ else 0


def _why_clean(report: ScanReport) -> str:
    reasons = [f"nothing at {report.threshold} or above to post"]
    if report.ignored:
        reasons.append(f"{report.ignored} ignored")
    if report.known_left_out:
        reasons.append(f"{report.known_left_out} known from the previous release")
    return "; ".join(reasons) + " (post_clean is off)"
