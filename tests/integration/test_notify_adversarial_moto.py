"""Adversarial tests of the notifier against the moto server and the Slack stand-in.

Partial delivery (Slack accepted, SNS did not), SNS's size limit, the sent-ledger's TTL, concurrent
invocations, Slack failure paths, and the webhook URL under DEBUG logging on every failure path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ecr_automation.adapters import slack as slack_adapter
from ecr_automation.adapters.slack import SlackDeliveryError
from ecr_automation.dependencies import get_dependencies
from ecr_automation.handlers import notify
from ecr_automation.models.events.scans import ImageScanEvent
from tests.integration.test_notify_moto import (
    ACCOUNT,
    REGION,
    NotifyStack,
    assert_within_slack_limits,
    basic_finding,
    basic_scan_event,
    counts_of,
    enhanced_finding,
    enhanced_scan_event,
    finding_event,
    install,
    stack,
)

__all__ = ["stack"]  # the fixture, imported for pytest


def reinstall(stack: NotifyStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> None:
    install(
        {**stack.aws.env(), "TAG_LEDGER_TABLE": "ledger", "SLACK_WEBHOOK_SECRET_ARN": stack.secret_arn, **env},
        monkeypatch,
        stack.effects,
    )


# -- exactly once across sinks ---------------------------------------------------------------------
def test_sns_failing_after_slack_accepted_does_not_post_to_slack_again_on_retry(
    stack: NotifyStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    topic_arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts"  # not created yet: SNS refuses the publish
    reinstall(stack, monkeypatch, tmp_path, NOTIFY_TOPIC_ARN=topic_arn)
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
    stack.scanned(digest, basic=findings)
    event = basic_scan_event(digest, counts_of(findings), event_id="scan-sns-down")

    with pytest.raises(Exception, match=r"NotFound|does not exist"):
        stack.invoke(event)
    assert len(stack.posts()) == 1  # Slack accepted before SNS failed
    # Slack's delivery is marked (so the retry skips it); SNS's and the message's are not.
    assert [record for record in stack.sent_records() if "SlackWebhookSink" not in record] == []

    stack.aws.client("sns").create_topic(Name="alerts")  # SNS is back: Lambda's retry
    assert stack.invoke(event)["result"] == "posted"
    assert len(stack.posts()) == 1, f"the channel got the same alert {len(stack.posts())} times"


def test_a_scan_message_of_non_ascii_text_fits_sns(
    stack: NotifyStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Package names and versions come from the image (its author controls them); emoji cost 12 bytes each
    in ``json.dumps``'s default ASCII output, so 40 findings within Slack's limits overflow SNS's 256 KiB."""
    rules = tmp_path / "rules40.toml"
    rules.write_text('[[notify]]\nrepositories = ["*"]\nthreshold = "HIGH"\nmax_findings = 40\n')
    topic_arn = stack.aws.client("sns").create_topic(Name="alerts")["TopicArn"]
    reinstall(stack, monkeypatch, tmp_path, NOTIFY_TOPIC_ARN=topic_arn, RULES_FILE=str(rules))
    digest = stack.push("release")
    findings = []
    for n in range(40):
        raw = enhanced_finding(f"CVE-2024-{n:04d}", "CRITICAL", package="🔥" * 120, fixed="🔥" * 60)
        raw["packageVulnerabilityDetails"]["sourceUrl"] = "https://nvd.nist.gov/" + "🔥" * 370
        raw["packageVulnerabilityDetails"]["vulnerablePackages"][0]["version"] = "🔥" * 60
        findings.append(raw)
    stack.scanned(digest, enhanced=findings)

    result = stack.invoke(enhanced_scan_event(digest, counts_of(findings), event_id="scan-emoji"))

    assert result["result"] == "posted"
    (post,) = stack.posts()
    assert_within_slack_limits(post)


# -- the sent-ledger over time ---------------------------------------------------------------------
def test_a_rescan_finding_on_an_image_reported_more_than_90_days_ago_still_posts(stack: NotifyStack) -> None:
    """The image#<digest> mark expires with the ledger's 90-day TTL: after it, continuous-rescan findings on
    long-lived images (base images, LTS releases) are silently dropped as "scan not reported yet"."""
    digest = stack.push("release")
    findings = [enhanced_finding("CVE-2023-44487", "HIGH")]
    stack.scanned(digest, enhanced=findings)
    assert stack.invoke(enhanced_scan_event(digest, counts_of(findings), event_id="scan-old"))["result"] == "posted"

    # DynamoDB's TTL, 91 days later: every item whose expires_at has passed is gone.
    dynamodb = stack.aws.client("dynamodb")
    later = int((datetime.now(UTC) + timedelta(days=91)).timestamp())
    for item in dynamodb.scan(TableName="ledger")["Items"]:
        if "expires_at" in item and int(item["expires_at"]["N"]) <= later:
            dynamodb.delete_item(TableName="ledger", Key={"pk": item["pk"], "sk": item["sk"]})

    result = stack.invoke(finding_event(digest, event_id="rescan-91-days", pushed_days_ago=91))
    assert result["result"] == "posted", result


# -- concurrency -----------------------------------------------------------------------------------
def test_two_concurrent_scans_of_the_same_image_with_the_same_set_post_once(
    stack: NotifyStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
    stack.scanned(digest, basic=findings)
    events = [
        ImageScanEvent.model_validate(basic_scan_event(digest, counts_of(findings), event_id=f"scan-{n}"))
        for n in range(2)
    ]
    barrier = threading.Barrier(2, timeout=3)
    real_post = slack_adapter._post

    def meeting_post(url: str, message: Any) -> tuple[int, str]:
        # both invocations are about to post: a lease or a conditional claim would prevent this
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return real_post(url, message)

    monkeypatch.setattr(slack_adapter, "_post", meeting_post)
    notifier = get_dependencies().notifier
    results: list[str] = []
    threads = [threading.Thread(target=lambda e=e: results.append(str(notifier.handle(e).result))) for e in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert sorted(results) == ["duplicate", "posted"], results
    assert len(stack.posts()) == 1


# -- Slack failing -----------------------------------------------------------------------------------
def test_500_twice_then_ok_posts_once(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
    stack.scanned(digest, basic=findings)
    stack.slack.fail_next(500, times=2)
    assert stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-500-ok"))["result"] == "posted"
    assert len(stack.posts()) == 1


def test_429_then_ok_posts_once_after_retry_after(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
    stack.scanned(digest, basic=findings)
    stack.slack.fail_next(429, times=2)
    started = datetime.now(UTC)
    assert stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-429s"))["result"] == "posted"
    assert datetime.now(UTC) - started >= timedelta(seconds=2)  # Retry-After: 1, honoured twice
    assert len(stack.posts()) == 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def all_loggers_at_debug() -> list[tuple[logging.Logger, int]]:
    saved = []
    for name in ("", "botocore", "boto3", "urllib3", "slack_sdk", "aws_lambda_powertools", "urllib"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
    return saved


def test_connection_refused_and_slack_errors_never_reveal_the_webhook_url(
    stack: NotifyStack,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret_path = "T0REFUSED/B0REFUSED/refusedsecretpath"
    refused_url = f"http://127.0.0.1:{closed_port()}/services/{secret_path}"
    secrets = stack.aws.client("secretsmanager")
    refused_arn = secrets.create_secret(Name="ecr-automation/refused", SecretString=json.dumps({"url": refused_url}))[
        "ARN"
    ]
    caplog.set_level(logging.DEBUG)
    saved = all_loggers_at_debug()
    notify.logger.setLevel("DEBUG")
    errors: list[BaseException] = []
    try:
        digest = stack.push("release")
        findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
        stack.scanned(digest, basic=findings)
        event = basic_scan_event(digest, counts_of(findings), event_id="scan-refused")
        install(
            {
                **stack.aws.env(),
                "TAG_LEDGER_TABLE": "ledger",
                "SLACK_WEBHOOK_SECRET_ARN": refused_arn,
                "RULES_FILE": str(_rules(tmp_path)),
            },
            monkeypatch,
            stack.effects,
        )
        with pytest.raises(SlackDeliveryError) as refused:
            stack.invoke(event)
        errors.append(refused.value)
        assert stack.sent_records() == []

        # Slack answering 500 past the retries, with the stand-in's real webhook.
        install(
            {
                **stack.aws.env(),
                "TAG_LEDGER_TABLE": "ledger",
                "SLACK_WEBHOOK_SECRET_ARN": stack.secret_arn,
                "RULES_FILE": str(_rules(tmp_path)),
            },
            monkeypatch,
            stack.effects,
        )
        stack.slack.fail_next(500, times=3)
        with pytest.raises(SlackDeliveryError) as down:
            stack.invoke(event)
        errors.append(down.value)
        assert stack.sent_records() == []
        assert stack.invoke(event)["result"] == "posted"  # the replay posts once
    finally:
        notify.logger.setLevel("INFO")
        for logger, level in saved:
            logger.setLevel(level)

    captured = capsys.readouterr()
    stand_in_secret = stack.slack.url.split("/services/", 1)[1]
    effects = json.dumps([effect.as_dict() for effect in stack.effects.effects], default=str)
    records = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    chains = "\n".join(
        "".join(traceback.format_exception(error)) + repr(error.__context__) + repr(error.__cause__) for error in errors
    )
    for output in (captured.out, captured.err, caplog.text, records, effects, chains):
        assert secret_path not in output and "refusedsecretpath" not in output
        assert stand_in_secret not in output
    assert len(stack.posts()) == 1


def _rules(tmp_path: Path) -> Path:
    path = tmp_path / "plain.toml"
    path.write_text('[[notify]]\nrepositories = ["*"]\nthreshold = "HIGH"\n')
    return path


def test_a_hostile_scan_end_to_end_arrives_escaped_and_valid(stack: NotifyStack) -> None:
    digest = stack.push("release")
    hostile = "<!channel> <!here> <@U123> <https://evil.example|click> &lt;b&gt; `*_ \u202e\u200b 🔥"
    findings = [
        basic_finding("CVE-2024-6666", "CRITICAL", package=hostile, version=hostile * 50),
        {**basic_finding("CVE-2024-7777", "HIGH"), "uri": "http://a|b", "description": hostile * 400},
        {**basic_finding("CVE-2024-8888", "HIGH"), "uri": "javascript:alert(1)"},
    ]
    stack.scanned(digest, basic=findings)
    assert stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-hostile"))["result"] == "posted"
    (post,) = stack.posts()
    assert_within_slack_limits(post)
    raw = json.dumps(post.body)
    for forbidden in ("<!channel>", "<!here>", "<@U123>", "<https://evil", "<http://a|b", "<javascript"):
        assert forbidden not in raw
