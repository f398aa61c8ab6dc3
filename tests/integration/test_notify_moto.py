"""The notifier end to end: the Lambda handler against a moto server, findings injected, posting to a Slack stand-in.

The webhook URL lives in moto's Secrets Manager (pointing at the stand-in on loopback), as it would in
AWS; every test that posts checks the payload with slack_sdk's Block Kit models.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.adapters.findings import EcrFindings
from ecr_automation.adapters.slack import SlackDeliveryError, WebhookSecretError, webhook_url_of
from ecr_automation.adapters.sns import SnsSink
from ecr_automation.cli import main
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import notify
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.effects import CollectingSink
from ecr_automation.models.findings import Message, ScannedImage
from tests.conftest import EVENTS, load_event
from tests.support import builders
from tests.support.moto_server import MotoServer
from tests.support.slack_sink import ReceivedPost, SlackSink, block_kit_errors

ACCOUNT, REGION, REPOSITORY = "123456789012", "us-east-1", "team/web"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SLACK_MAX_BLOCKS, SLACK_MAX_TEXT, SLACK_MAX_HEADER = 50, 3000, 150
RULES = """
[[notify]]
repositories = ["*"]
threshold = "HIGH"
max_findings = 10
"""


# -- findings as DescribeImageScanFindings returns them ---------------------------------------------
def basic_finding(
    cve: str, severity: str, *, package: str = "openssl", version: str = "3.0.11", score: str = "7.5", **extra: Any
) -> dict[str, Any]:
    return {
        "name": cve,
        "severity": severity,
        "uri": f"https://security-tracker.debian.org/tracker/{cve}",
        "description": f"{cve} in {package}",
        "attributes": [
            {"key": "package_name", "value": package},
            {"key": "package_version", "value": version},
            {"key": "CVSS3_SCORE", "value": score},
        ],
        **extra,
    }


def enhanced_finding(
    cve: str, severity: str, *, package: str = "libnghttp2-14", fixed: str = "1.52.0-1+deb12u1", exploit: bool = False
) -> dict[str, Any]:
    return {
        "awsAccountId": ACCOUNT,
        "findingArn": f"arn:aws:inspector2:{REGION}:{ACCOUNT}:finding/{cve.lower()}",
        "severity": severity,
        "status": "ACTIVE",
        "title": f"{cve} - {package}",
        "type": "PACKAGE_VULNERABILITY",
        "exploitAvailable": "YES" if exploit else "NO",
        "fixAvailable": "YES",
        "score": 9.1 if severity == "CRITICAL" else 7.5,
        "packageVulnerabilityDetails": {
            "vulnerabilityId": cve,
            "source": "DEBIAN_CVE",
            "sourceUrl": f"https://security-tracker.debian.org/tracker/{cve}",
            "vulnerablePackages": [{"name": package, "version": "1.52.0", "fixedInVersion": fixed}],
        },
    }


def counts_of(findings: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
    return counts


# -- events ----------------------------------------------------------------------------------------
def basic_scan_event(digest: str, counts: dict[str, int], *, event_id: str, status: str = "COMPLETE") -> dict[str, Any]:
    detail = {
        "scan-status": status,
        "repository-name": REPOSITORY,
        "image-digest": digest,
        "image-tags": ["v1.2.3"],
        "finding-severity-counts": counts,
    }
    return builders.ecr_event("ECR Image Scan", detail, event_id=event_id)


def enhanced_scan_event(digest: str, counts: dict[str, int], *, event_id: str) -> dict[str, Any]:
    detail = {
        "scan-status": "INITIAL_SCAN_COMPLETE",
        "repository-name": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{REPOSITORY}",
        "image-digest": digest,
        "image-tags": ["v1.2.3"],
        "finding-severity-counts": {**counts, "TOTAL": sum(counts.values())},
    }
    return builders.ecr_event("Inspector2 Scan", detail, event_id=event_id, source="aws.inspector2")


def finding_event(
    digest: str, *, event_id: str, severity: str = "CRITICAL", status: str = "ACTIVE", pushed_days_ago: int = 12
) -> dict[str, Any]:
    event = copy.deepcopy(load_event("inspector-finding.json"))
    event["id"] = event_id
    detail = event["detail"]
    detail["findingArn"] = f"arn:aws:inspector2:{REGION}:{ACCOUNT}:finding/rescan-cve-2026-0001"
    detail["severity"], detail["status"] = severity, status
    detail["packageVulnerabilityDetails"]["vulnerabilityId"] = "CVE-2026-0001"
    detail["title"] = "CVE-2026-0001 - libnghttp2-14"
    image = detail["resources"][0]["details"]["awsEcrContainerImage"]
    image["imageHash"], image["repositoryName"], image["registry"] = digest, REPOSITORY, ACCOUNT
    image["imageTags"] = ["v1.2.3"]
    image["pushedAt"] = (datetime.now(UTC) - timedelta(days=pushed_days_ago)).isoformat()
    detail["firstObservedAt"] = datetime.now(UTC).isoformat()  # a rescan's finding: observed after the scan
    detail["resources"][0]["id"] = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{REPOSITORY}/{digest}"
    return event


# -- the stack -------------------------------------------------------------------------------------
@dataclass
class NotifyStack:
    aws: MotoServer
    slack: SlackSink
    effects: CollectingSink
    secret_arn: str

    @property
    def ecr(self) -> Any:
        return self.aws.client("ecr")

    def push(self, seed: str, tag: str = "v1.2.3") -> str:
        body = builders.image_manifest(seed)
        digest = builders.digest_of(body)
        self.ecr.put_image(
            repositoryName=REPOSITORY,
            imageManifest=body,
            imageManifestMediaType=OCI_MANIFEST,
            imageDigest=digest,
            imageTag=tag,
        )
        return digest

    def scanned(
        self, digest: str, *, basic: list[dict[str, Any]] | None = None, enhanced: list[dict[str, Any]] | None = None
    ) -> None:
        """The image's scan finished with these findings (served by DescribeImageScanFindings)."""
        findings: dict[str, Any] = {"findingSeverityCounts": counts_of([*(basic or []), *(enhanced or [])])}
        if basic is not None:
            findings["findings"] = basic
        if enhanced is not None:
            findings["enhancedFindings"] = enhanced
        self.aws.inject_scan_findings(
            [
                {
                    "registryId": ACCOUNT,
                    "repositoryName": REPOSITORY,
                    "imageId": {"imageDigest": digest},
                    "imageScanStatus": {"status": "ACTIVE" if enhanced is not None else "COMPLETE"},
                    "imageScanFindings": findings,
                }
            ]
        )
        self.ecr.start_image_scan(repositoryName=REPOSITORY, imageId={"imageDigest": digest})

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = notify.lambda_handler(event, LambdaContext("NotifyFunction"))  # type: ignore[arg-type]
        return result

    def posts(self) -> list[ReceivedPost]:
        return list(self.slack.received)

    def sent_records(self) -> list[str]:
        items = self.aws.client("dynamodb").query(
            TableName="ledger",
            KeyConditionExpression="pk = :pk AND begins_with(sk, :sent)",
            ExpressionAttributeValues={":pk": {"S": f"{ACCOUNT}#{REGION}#{REPOSITORY}"}, ":sent": {"S": "sent#"}},
            ConsistentRead=True,
        )["Items"]
        return sorted(item["sk"]["S"] for item in items)


def install(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, effects: CollectingSink) -> None:
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=effects))


@pytest.fixture
def stack(
    aws: MotoServer, slack_sink: SlackSink, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[NotifyStack]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    aws.client("ecr").create_repository(repositoryName=REPOSITORY)
    builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", "ledger")
    secret_arn = aws.client("secretsmanager").create_secret(Name="ecr-automation/slack", SecretString=slack_sink.url)[
        "ARN"
    ]
    monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    monkeypatch.delenv("NOTIFY_TOPIC_ARN", raising=False)
    effects = CollectingSink()
    install(
        {
            **aws.env(),
            "TAG_LEDGER_TABLE": "ledger",
            "RULES_FILE": str(rules),
            "SLACK_WEBHOOK_SECRET_ARN": secret_arn,
        },
        monkeypatch,
        effects,
    )
    yield NotifyStack(aws, slack_sink, effects, secret_arn)
    use_dependencies(None)


def texts_of(payload: dict[str, Any]) -> list[str]:
    """Every text Slack would render: the fallback, and each text object in the blocks."""
    texts = [str(payload.get("text", ""))]
    for block in payload.get("blocks", []):
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(field["text"] for field in block.get("fields", []))
        texts.extend(element.get("text", "") for element in block.get("elements", []))
    return texts


def assert_within_slack_limits(post: ReceivedPost) -> None:
    assert post.errors == [], post.errors
    assert block_kit_errors(post.body) == []
    blocks = post.body["blocks"]
    assert len(blocks) <= SLACK_MAX_BLOCKS
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= SLACK_MAX_HEADER
        elif "text" in block:
            assert len(block["text"]["text"]) <= SLACK_MAX_TEXT


# -- scans -----------------------------------------------------------------------------------------
def test_a_high_basic_scan_posts_once_with_its_top_cves(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [
        basic_finding("CVE-2024-0001", "HIGH", package="zlib1g", version="1.2.13", score="7.5"),
        basic_finding("CVE-2024-0002", "CRITICAL", package="openssl", version="3.0.11", score="9.8"),
        basic_finding("CVE-2024-0003", "HIGH", package="curl", version="7.88.1", score="8.1"),
        *(basic_finding(f"CVE-2024-01{n:02d}", "MEDIUM", score="5.0") for n in range(5)),
    ]
    stack.scanned(digest, basic=findings)

    result = stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-1"))

    assert result["status"] == "processed" and result["result"] == "posted"
    (post,) = stack.posts()
    assert post.path == "/services/T000/B000/XXXXXXXX"
    assert_within_slack_limits(post)
    body = "\n".join(texts_of(post.body))
    assert "team/web:v1.2.3" in body and digest[7:19] in body
    # The critical one first, then the highs by score; mediums are below the threshold: counted, not listed.
    order = [body.index(cve) for cve in ("CVE-2024-0002", "CVE-2024-0003", "CVE-2024-0001")]
    assert order == sorted(order)
    assert "CVE-2024-0100" not in body
    assert "<https://security-tracker.debian.org/tracker/CVE-2024-0002|" in body
    assert "openssl" in body and "3.0.11" in body
    assert "CVE-2024-0002" in post.body["text"]
    assert any(record.startswith("sent#scan#") for record in stack.sent_records())


def test_an_enhanced_scan_reads_enhanced_findings_with_their_fixes(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [
        enhanced_finding("CVE-2023-44487", "HIGH", exploit=True),
        enhanced_finding("CVE-2024-1111", "CRITICAL", package="openssl", fixed="3.0.13-1~deb12u1"),
        enhanced_finding("CVE-2024-2222", "MEDIUM", package="bash"),
    ]
    stack.scanned(digest, enhanced=findings)

    result = stack.invoke(enhanced_scan_event(digest, counts_of(findings), event_id="inspector-scan-1"))

    assert result["result"] == "posted"
    (post,) = stack.posts()
    assert_within_slack_limits(post)
    body = "\n".join(texts_of(post.body))
    # An exploit available outranks severity.
    assert body.index("CVE-2023-44487") < body.index("CVE-2024-1111")
    assert "1.52.0-1+deb12u1" in body and "3.0.13-1~deb12u1" in body
    assert "CVE-2024-2222" not in body


def test_500_findings_stay_within_slacks_limits_and_say_how_many_more(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [
        basic_finding(f"CVE-2025-{n:05d}", "CRITICAL" if n % 50 == 0 else "HIGH", package=f"package-{n}" * 5)
        for n in range(500)
    ]
    stack.scanned(digest, basic=findings)

    stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-500"))

    (post,) = stack.posts()
    assert_within_slack_limits(post)
    body = "\n".join(texts_of(post.body))
    assert "and 490 more" in body
    assert "CVE-2025-00000" in body  # a critical one leads
    assert len(post.body["text"]) <= 3000


def test_hostile_text_arrives_escaped(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [
        basic_finding(
            "CVE-2024-6666",
            "CRITICAL",
            package="<!channel> <https://evil.example|click here>",
            version="1.0 & <@U0123>",
        )
    ]
    findings[0]["uri"] = "https://evil.example/x|<!here>"
    stack.scanned(digest, basic=findings)

    stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-hostile"))

    (post,) = stack.posts()
    assert_within_slack_limits(post)
    for text in texts_of(post.body):
        assert "<!channel>" not in text and "<!here>" not in text and "<@U0123>" not in text
        assert "<https://evil.example" not in text
    body = "\n".join(texts_of(post.body))
    assert "&lt;!channel&gt;" in body and "&amp;" in body


# -- delivery --------------------------------------------------------------------------------------
def test_rate_limited_then_accepted_posts_once(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
    stack.scanned(digest, basic=findings)
    stack.slack.fail_next(429)

    result = stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-429"))

    assert result["result"] == "posted"
    assert len(stack.posts()) == 1


def test_slack_down_fails_the_invocation_marks_nothing_and_a_replay_posts_once(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
    stack.scanned(digest, basic=findings)
    event = basic_scan_event(digest, counts_of(findings), event_id="scan-500s")
    stack.slack.fail_next(500, times=3)  # the first attempt and both retries

    with pytest.raises(SlackDeliveryError) as failure:
        stack.invoke(event)

    assert "500" in str(failure.value) and stack.slack.url not in str(failure.value)
    assert stack.posts() == []
    assert stack.sent_records() == []

    # Lambda's retry (or a replay from the dead-letter queue) once Slack is back: posted once.
    assert stack.invoke(event)["result"] == "posted"
    assert stack.invoke(event)["result"] == "duplicate"
    assert len(stack.posts()) == 1


def test_a_redelivered_event_posts_once(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
    stack.scanned(digest, basic=findings)
    event = basic_scan_event(digest, counts_of(findings), event_id="scan-twice")

    first, second = stack.invoke(event), stack.invoke(event)

    assert (first["result"], second["result"]) == ("posted", "duplicate")
    assert len(stack.posts()) == 1


def test_a_second_scan_finding_the_same_set_posts_nothing(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL"), basic_finding("CVE-2024-0003", "HIGH")]
    stack.scanned(digest, basic=findings)

    stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-a"))
    rescan = stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-b"))

    assert rescan["result"] == "duplicate"
    assert len(stack.posts()) == 1


def test_new_only_lists_only_the_findings_the_previous_release_did_not_have(stack: NotifyStack, tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text(RULES + "new_only = true\n")  # read on the first event
    previous = stack.push("release-1.2.3", tag="v1.2.3")
    stack.scanned(previous, basic=[basic_finding("CVE-2024-1111", "CRITICAL"), basic_finding("CVE-2024-2222", "HIGH")])
    # moto hands each injected result to the image on its first read: v1.2.3's is read before v1.3.0's is injected.
    stack.ecr.describe_image_scan_findings(repositoryName=REPOSITORY, imageId={"imageDigest": previous})
    current = stack.push("release-1.3.0", tag="v1.3.0")
    findings = [basic_finding("CVE-2024-1111", "CRITICAL"), basic_finding("CVE-2024-3333", "HIGH")]
    stack.scanned(current, basic=findings)
    event = basic_scan_event(current, counts_of(findings), event_id="scan-v1.3.0")
    event["detail"]["image-tags"] = ["v1.3.0"]

    result = stack.invoke(event)

    assert result["result"] == "posted", result
    (post,) = stack.posts()
    assert block_kit_errors(post.body) == []
    text = " ".join(texts_of(post.body))
    assert "CVE-2024-3333" in text  # new in v1.3.0
    assert "CVE-2024-1111" not in text and "CVE-2024-2222" not in text  # v1.2.3 had it; v1.3.0 has not
    assert "1 known finding left out (already in v1.2.3)" in text


def test_a_failed_scan_says_why(stack: NotifyStack) -> None:
    digest = stack.push("release")

    result = stack.invoke(basic_scan_event(digest, {}, event_id="scan-failed", status="FAILED"))

    assert result["result"] == "posted"
    (post,) = stack.posts()
    assert_within_slack_limits(post)
    assert "FAILED" in "\n".join(texts_of(post.body))


# -- continuous rescans ----------------------------------------------------------------------------
def test_a_new_critical_on_a_reported_image_posts_and_a_closed_one_nothing(stack: NotifyStack) -> None:
    digest = stack.push("release")
    findings = [enhanced_finding("CVE-2023-44487", "HIGH")]
    stack.scanned(digest, enhanced=findings)
    stack.invoke(enhanced_scan_event(digest, counts_of(findings), event_id="inspector-scan"))
    assert len(stack.posts()) == 1

    new = stack.invoke(finding_event(digest, event_id="finding-1"))
    again = stack.invoke(finding_event(digest, event_id="finding-1-rescored"))  # same finding, a score change
    closed = stack.invoke(finding_event(digest, event_id="finding-1-closed", status="CLOSED"))

    assert new["result"] == "posted"
    assert (again["result"], closed["result"]) == ("duplicate", "nothing_to_post")
    posts = stack.posts()
    assert len(posts) == 2
    assert_within_slack_limits(posts[1])
    header = posts[1].body["blocks"][0]["text"]["text"]
    assert "New CRITICAL in team/web:v1.2.3" in header and "12 days ago" in header
    assert "CVE-2026-0001" in "\n".join(texts_of(posts[1].body))


def test_a_finding_on_an_image_whose_scan_was_not_reported_waits_for_the_scan(stack: NotifyStack) -> None:
    digest = stack.push("release")

    result = stack.invoke(finding_event(digest, event_id="finding-early"))

    assert result["result"] == "nothing_to_post"
    assert stack.posts() == []


# -- this application's events ---------------------------------------------------------------------
def test_a_tag_guard_violation_posts_an_alert(stack: NotifyStack) -> None:
    event = load_event("guard-violation.json")

    result = stack.invoke(event)
    stack.invoke(event)

    assert result["result"] == "posted"
    (post,) = stack.posts()
    assert_within_slack_limits(post)
    body = "\n".join(texts_of(post.body))
    assert "team/web:v1.2.3" in body and "moved" in body and "quarantine-afa020ece140" in body


def test_a_failed_replication_posts_an_alert(stack: NotifyStack) -> None:
    result = stack.invoke(load_event("ecr-replication-failed.json"))

    assert result["result"] == "posted"
    (post,) = stack.posts()
    assert_within_slack_limits(post)
    assert "Replication failed" in post.body["blocks"][0]["text"]["text"]


# -- the webhook secret ----------------------------------------------------------------------------
def test_a_missing_secret_is_one_clear_error(
    stack: NotifyStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:ecr-automation/nowhere-AbCdEf"
    install({"SLACK_WEBHOOK_SECRET_ARN": missing}, monkeypatch, stack.effects)

    with pytest.raises(WebhookSecretError) as failure:
        stack.invoke(load_event("guard-violation.json"))

    assert str(failure.value) == f"Slack webhook secret {missing}: cannot be read (ResourceNotFoundException)"
    assert stack.sent_records() == []
    assert '"AlertsFailed":[1.0]' in capsys.readouterr().out  # counted before raising
    (logged,) = [record for record in caplog.records if record.getMessage().startswith("alert not delivered")]
    assert getattr(logged, "error", "") == f"WebhookSecretError: {failure.value}"


def test_a_malformed_secret_is_one_clear_error_without_its_value(
    stack: NotifyStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = stack.aws.client("secretsmanager")
    arn = secrets.create_secret(Name="ecr-automation/bad", SecretString='{"uri": "hooks.example/T0/B0/leaky"}')["ARN"]
    install({"SLACK_WEBHOOK_SECRET_ARN": arn}, monkeypatch, stack.effects)

    with pytest.raises(WebhookSecretError) as failure:
        stack.invoke(load_event("guard-violation.json"))

    assert arn in str(failure.value) and "leaky" not in str(failure.value)


def test_a_secret_holding_json_with_a_url_works(stack: NotifyStack, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = stack.aws.client("secretsmanager")
    arn = secrets.create_secret(Name="ecr-automation/json", SecretString=json.dumps({"url": stack.slack.url}))["ARN"]
    install({"SLACK_WEBHOOK_SECRET_ARN": arn}, monkeypatch, stack.effects)

    assert stack.invoke(load_event("guard-violation.json"))["result"] == "posted"
    assert len(stack.posts()) == 1


def test_the_webhook_url_appears_in_no_log_output_or_effect(
    stack: NotifyStack, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # even with every library's DEBUG logs on
    notify.logger.setLevel("DEBUG")
    try:
        digest = stack.push("release")
        findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
        stack.scanned(digest, basic=findings)
        stack.slack.fail_next(429)
        stack.invoke(basic_scan_event(digest, counts_of(findings), event_id="scan-logged"))
        stack.slack.fail_next(500, times=3)
        with pytest.raises(SlackDeliveryError):
            stack.invoke(load_event("guard-violation.json"))
    finally:
        notify.logger.setLevel("INFO")

    captured = capsys.readouterr()
    secret_part = stack.slack.url.split("/services/", 1)[1]
    effects = json.dumps([effect.as_dict() for effect in stack.effects.effects], default=str)
    records = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "GetSecretValue" in records  # botocore's DEBUG records were captured, and looked at
    assert "<a secret value: not logged>" in records  # its record of GetSecretValue's answer, blanked
    for output in (captured.out, captured.err, caplog.text, records, effects):
        assert secret_part not in output
    assert len(stack.posts()) == 1
    assert "slack_message_sent" in effects


# -- the adapters on their own ---------------------------------------------------------------------
def test_findings_are_read_page_by_page_as_they_are_consumed() -> None:
    clients = AwsClients()
    ecr = clients.client("ecr", REGION)
    digest = "sha256:" + "c" * 64
    request = {
        "registryId": ACCOUNT,
        "repositoryName": REPOSITORY,
        "imageId": {"imageDigest": digest},
        "maxResults": 1000,
    }
    pages = [
        {"findings": [basic_finding("CVE-2024-0001", "HIGH")]},
        {"enhancedFindings": [enhanced_finding("CVE-2024-0002", "CRITICAL", exploit=True)]},
        {"findings": [basic_finding("CVE-2024-0003", "LOW")]},
    ]
    with Stubber(ecr) as stubber:
        for number, page in enumerate(pages):
            response: dict[str, Any] = {
                "registryId": ACCOUNT,
                "repositoryName": REPOSITORY,
                "imageId": {"imageDigest": digest},
                "imageScanStatus": {"status": "COMPLETE"},
                "imageScanFindings": page,
            }
            expected = dict(request)
            if number < len(pages) - 1:
                response["nextToken"] = f"page-{number + 1}"
            if number:
                expected["nextToken"] = f"page-{number}"
            stubber.add_response("describe_image_scan_findings", response, expected)

        findings = EcrFindings(clients).findings(ScannedImage(RepositoryRef(ACCOUNT, REGION, REPOSITORY), digest))
        assert findings is not None
        assert len(stubber._queue) == 2  # only the first page was read
        first = next(findings)
        assert len(stubber._queue) == 2
        rest = list(findings)
        stubber.assert_no_pending_responses()

    assert [finding.vulnerability_id for finding in (first, *rest)] == [
        "CVE-2024-0001",
        "CVE-2024-0002",
        "CVE-2024-0003",
    ]
    enhanced = rest[0]
    assert enhanced.exploit_available and enhanced.fixed_version == "1.52.0-1+deb12u1" and enhanced.score == 9.1
    assert first.package == "openssl" and first.installed_version == "3.0.11" and first.score == 7.5
    assert first.fixed_version is None


def test_an_image_without_a_scan_has_no_findings(stack: NotifyStack) -> None:

    digest = stack.push("never-scanned")
    source = EcrFindings(AwsClients())

    assert source.findings(ScannedImage(RepositoryRef(ACCOUNT, REGION, REPOSITORY), digest)) is None


def test_the_sns_sink_publishes_text_and_blocks(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:

    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    sns, sqs = aws.client("sns"), aws.client("sqs")
    topic = sns.create_topic(Name="ecr-alerts")["TopicArn"]
    queue = sqs.create_queue(QueueName="ecr-alerts-mail")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    effects = CollectingSink()
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*CVE-2024-0002*"}}]
    text = "x" * 150 + "\nsecond line"

    SnsSink(AwsClients(), topic, REGION, effects).send(Message(text, blocks, "fp-1"), route="")

    (received,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    envelope = json.loads(received["Body"])
    assert envelope["Subject"] == "x" * 97 + "..."
    assert json.loads(envelope["Message"]) == {"text": text, "blocks": blocks}
    assert effects.kinds() == ["sns_message_published"]


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("https://hooks.slack.com/services/T0/B0/abc", True),
        ('{"url": "https://hooks.slack.com/services/T0/B0/abc"}', True),
        ("  https://hooks.slack.com/services/T0/B0/abc\n", True),
        ("http://127.0.0.1:9/services/T0/B0/abc", True),
        ("http://hooks.slack.com/services/T0/B0/abc", False),  # the credential in the clear
        ("hooks.slack.com/services/T0/B0/abc", False),
        ('{"webhook": "https://hooks.slack.com/services/T0/B0/abc"}', False),
        ("{not json", False),
        ("", False),
    ],
)
def test_what_a_webhook_secret_may_hold(value: str, accepted: bool) -> None:

    if accepted:
        assert webhook_url_of("my-secret", value).startswith("http")
        return
    with pytest.raises(WebhookSecretError) as failure:
        webhook_url_of("my-secret", value)
    assert "my-secret" in str(failure.value) and (not value.strip() or value.strip() not in str(failure.value))


# -- the local runner ------------------------------------------------------------------------------
def cli_lines(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line.strip()], captured.err


def test_simulate_routes_a_guard_violation_to_the_notifier_and_prints_the_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, lines, err = cli_lines(capsys, "simulate", str(EVENTS / "scenarios" / "late-earlier-push.json"))

    assert code == 0, err
    assert not [line for line in lines if line.get("kind") == "event_unrouted"]
    (message,) = [line for line in lines if line.get("kind") == "slack_message"]
    assert message["function"] == "NotifyFunction" and message["route"] == "default"
    assert set(message["payload"]) == {"text", "blocks"}
    assert block_kit_errors(message["payload"]) == []
    assert "Tag guard" in message["payload"]["blocks"][0]["text"]["text"]
    assert "hooks.slack.com" not in json.dumps(lines)


def test_simulate_serves_enhanced_findings_written_in_inspectors_shape(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scan = load_event("inspector-scan.json")
    digest = scan["detail"]["image-digest"]
    finding = copy.deepcopy(load_event("inspector-finding.json")["detail"])  # as Inspector writes it
    finding["inspectorScore"] = 8.8
    findings = tmp_path / "findings.json"
    findings.write_text(
        json.dumps(
            [
                {
                    "repositoryName": REPOSITORY,
                    "imageId": {"imageDigest": digest},
                    "imageScanFindings": {"enhancedFindings": [finding], "findingSeverityCounts": {"HIGH": 1}},
                }
            ]
        )
    )
    events = tmp_path / "scan.json"
    events.write_text(json.dumps(scan))

    code, lines, err = cli_lines(capsys, "simulate", str(events), "--findings", str(findings))

    assert code == 0, err
    (message,) = [line for line in lines if line.get("kind") == "slack_message"]
    body = "\n".join(texts_of(message["payload"]))
    assert "CVE-2023-44487" in body and "1.52.0-1+deb12u1" in body and "score 8.8" in body
    assert "CVE-0000" not in body  # served, not synthesised
