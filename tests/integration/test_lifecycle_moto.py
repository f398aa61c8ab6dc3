"""Lifecycle guardrails against a moto server: the CLI over real HTTP, and the Lambda path end to end.

moto stores lifecycle policies but implements no preview (StartLifecyclePolicyPreview answers 500): the
check says the preview was unavailable and its own evaluation stands. Push times are set in moto's
backend (it stamps whole seconds of the wall clock), a week apart, as a real history would have them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

import ecr_automation.adapters.lifecycle as adapter
from ecr_automation.adapters.clients import AwsClients
from ecr_automation.adapters.lifecycle import PREVIEW_CLIENT_CONFIG, EcrLifecycle
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, get_dependencies, use_dependencies
from ecr_automation.handlers import lifecycle_guard, notify
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.effects import CollectingSink
from tests.conftest import ROOT, load_event
from tests.support import builders
from tests.support.moto_server import MotoServer
from tests.support.slack_sink import SlackSink, block_kit_errors

ACCOUNT, REGION = "123456789012", "us-east-1"
KEEP_FIVE = load_event("cloudtrail-put-lifecycle-policy.json")["detail"]["requestParameters"]["lifecyclePolicyText"]
UNTAGGED_ONLY = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "expire untagged images after a day",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 1,
                },
                "action": {"type": "expire"},
            }
        ]
    }
)


def push(aws: MotoServer, repository: str, seed: str, tags: list[str], pushed_at: datetime) -> str:
    """An image under ``tags``, first pushed at ``pushed_at`` (moto's backend backdated, as ECR records it)."""
    from moto.ecr.models import ecr_backends  # noqa: PLC0415 - the server runs in this process

    body = builders.image_manifest(seed)
    digest = builders.digest_of(body)
    for tag in tags:
        aws.client("ecr").put_image(
            repositoryName=repository,
            imageManifest=body,
            imageManifestMediaType=builders.OCI_MANIFEST,
            imageDigest=digest,
            imageTag=tag,
        )
    for image in ecr_backends[ACCOUNT][REGION].repositories[repository].images:
        if image.get_image_digest() == digest:
            image.image_pushed_at = int(pushed_at.timestamp())
    return digest


def release_history(aws: MotoServer, repository: str) -> dict[str, str]:
    """v1.0.0 .. v1.7.0 a week apart, the newest also under v1.7, v1 and latest (what retag leaves)."""
    aws.client("ecr").create_repository(repositoryName=repository)
    start = datetime.now(UTC) - timedelta(days=60)
    digests = {}
    for minor in range(8):
        tags = [f"v1.{minor}.0"] + (["v1.7", "v1", "latest"] if minor == 7 else [])
        digests[f"v1.{minor}.0"] = push(
            aws, repository, f"{repository}-{minor}", tags, start + timedelta(days=7 * minor)
        )
    return digests


def run_cli(aws: MotoServer, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**aws.env(), "PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'functions'}"}
    return subprocess.run(
        [sys.executable, "-m", "ecr_automation", "lifecycle", "check", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_cli_reports_the_oldest_releases_a_keep_five_policy_would_expire(aws: MotoServer) -> None:
    ecr = aws.client("ecr")
    digests = release_history(aws, "team/web")
    ecr.put_lifecycle_policy(repositoryName="team/web", lifecyclePolicyText=KEEP_FIVE)
    release_history(aws, "team/api")
    ecr.put_lifecycle_policy(repositoryName="team/api", lifecyclePolicyText=UNTAGGED_ONLY)
    ecr.create_repository(repositoryName="team/empty")

    completed = run_cli(aws)  # no REPO: every repository the caller can list

    assert completed.returncode == 1, completed.stderr
    out = completed.stdout
    assert "team/web: policy" in out and "VIOLATION" in out
    expired = [line for line in out.splitlines() if line.strip().startswith("EXPIRED:")]
    assert [line.split("[")[1].split("]")[0] for line in expired] == ["v1.0.0", "v1.1.0", "v1.2.0"]
    assert all("protected v1." in line and "by rule 1" in line for line in expired)
    assert "team/api: policy" in out and ": ok:" in out
    assert "team/empty: no lifecycle policy" in out
    assert "ECR preview: unavailable" in out and "our evaluation stands" in out
    assert '"tagPatternList": [\n' in out or '"v*.*.*"' in out
    # Read only: the policies are exactly as they were put.
    assert ecr.get_lifecycle_policy(repositoryName="team/web")["lifecyclePolicyText"] == KEEP_FIVE
    assert ecr.get_lifecycle_policy(repositoryName="team/api")["lifecyclePolicyText"] == UNTAGGED_ONLY
    assert len(ecr.describe_images(repositoryName="team/web")["imageDetails"]) == len(digests)


def test_the_cli_json_report_and_exit_codes_per_repository(aws: MotoServer) -> None:
    ecr = aws.client("ecr")
    digests = release_history(aws, "team/web")
    ecr.put_lifecycle_policy(repositoryName="team/web", lifecyclePolicyText=KEEP_FIVE)
    release_history(aws, "team/api")
    ecr.put_lifecycle_policy(repositoryName="team/api", lifecyclePolicyText=UNTAGGED_ONLY)

    compliant = run_cli(aws, "team/api", "--json")
    assert compliant.returncode == 0, compliant.stderr
    (report,) = [json.loads(line) for line in compliant.stdout.splitlines()]
    assert report["violated"] is False and report["preview"]["status"] == "unavailable"

    violated = run_cli(aws, "team/web", "--json", "--no-preview")
    assert violated.returncode == 1, violated.stderr
    (report,) = [json.loads(line) for line in violated.stdout.splitlines()]
    assert [conflict["image-digest"] for conflict in report["conflicts"]] == [
        digests["v1.0.0"],
        digests["v1.1.0"],
        digests["v1.2.0"],
    ]
    assert report["suggestions"][0]["resolves"] is True

    missing = run_cli(aws, "team/nothing")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_describe_images_is_read_across_pages(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    aws.client("ecr").create_repository(repositoryName="team/many")
    start = datetime.now(UTC) - timedelta(days=30)
    for number in range(7):
        push(aws, "team/many", f"many-{number}", [f"build-{number}"], start + timedelta(hours=number))
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(adapter, "DESCRIBE_PAGE", 2)  # four pages
    source = EcrLifecycle(AwsClients(), preview_clients=AwsClients(config=PREVIEW_CLIENT_CONFIG))
    repository = RepositoryRef(ACCOUNT, REGION, "team/many")

    images = source.images(repository)
    preview = source.preview(repository, UNTAGGED_ONLY)

    assert sorted(image.tags for image in images) == [(f"build-{number}",) for number in range(7)]
    assert [image.pushed_at for image in sorted(images, key=lambda item: item.tags)] == [
        datetime.fromtimestamp(int((start + timedelta(hours=number)).timestamp()), UTC) for number in range(7)
    ]
    assert not preview.available and "unavailable" in preview.note


# -- the Lambda path: CloudTrail event -> violation published -> Slack message -----------------------
@pytest.fixture
def lambda_stack(
    aws: MotoServer, slack_sink: SlackSink, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[MotoServer, SlackSink, CollectingSink, str]]:
    builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", "ledger")
    # What EventBridge would deliver to the notifier: the default bus's rule for this application's alerts.
    sqs = aws.client("sqs")
    queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = aws.client("events")
    events.put_rule(Name="alerts", EventPattern=json.dumps({"source": ["ecr-automation"]}))
    events.put_targets(Rule="alerts", Targets=[{"Id": "queue", "Arn": queue_arn}])
    secret = aws.client("secretsmanager").create_secret(Name="slack", SecretString=slack_sink.url)["ARN"]
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / "functions" / "rules.toml").read_text())
    for name in ("IDEMPOTENCY_TABLE", "NOTIFY_TOPIC_ARN", "DEAD_LETTER_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        **aws.env(),
        "TAG_LEDGER_TABLE": "ledger",
        "RULES_FILE": str(rules),
        "SLACK_WEBHOOK_SECRET_ARN": secret,
    }.items():
        monkeypatch.setenv(name, value)
    effects = CollectingSink()
    use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=effects))
    yield aws, slack_sink, effects, queue_url
    use_dependencies(None)


def delivered(aws: MotoServer, queue_url: str) -> list[dict[str, Any]]:
    messages = aws.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_a_policy_put_is_checked_published_once_and_alerted(
    lambda_stack: tuple[MotoServer, SlackSink, CollectingSink, str],
) -> None:
    aws, slack, _, queue_url = lambda_stack
    digests = release_history(aws, "team/web")
    aws.client("ecr").put_lifecycle_policy(repositoryName="team/web", lifecyclePolicyText=KEEP_FIVE)
    event = load_event("cloudtrail-put-lifecycle-policy.json")

    result = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))

    assert result["status"] == "processed" and result["result"] == "violation", result
    assert result["preview"] == "unavailable"
    (published,) = delivered(aws, queue_url)
    # moto's SQS target leaves the envelope's account out; EventBridge always sends it.
    published.setdefault("account", ACCOUNT)
    assert published["detail-type"] == "Lifecycle Policy Violation"
    assert published["resources"] == [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/web"]
    detail = published["detail"]
    assert [image["image-digest"] for image in detail["images"]] == [digests[f"v1.{n}.0"] for n in range(3)]
    assert detail["actor"] == event["detail"]["userIdentity"]["arn"]

    # The same policy put again (or the event redelivered): nothing more is published.
    again = {**event, "id": "another-delivery"}
    second = lifecycle_guard.lambda_handler(again, LambdaContext("LifecycleGuardFunction"))
    assert second["result"] == "already_published"
    assert delivered(aws, queue_url) == []
    assert aws.client("ecr").get_lifecycle_policy(repositoryName="team/web")["lifecyclePolicyText"] == KEEP_FIVE

    # The notifier turns the published event into one Slack message naming the releases and the fix.
    outcome = notify.lambda_handler(published, LambdaContext("NotifyFunction"))
    assert outcome["result"] == "posted", outcome
    (post,) = slack.wait_for(1)
    assert block_kit_errors(post.body) == []
    text = json.dumps(post.body)
    assert "team/web:v1.0.0" in text and "team/web:v1.2.0" in text and "v*.*.*" in text
    again_outcome = notify.lambda_handler(published, LambdaContext("NotifyFunction"))
    assert again_outcome["result"] == "duplicate"


def test_a_compliant_policy_publishes_nothing(lambda_stack: tuple[MotoServer, SlackSink, CollectingSink, str]) -> None:
    aws, _, _, queue_url = lambda_stack
    release_history(aws, "team/web")
    event = load_event("cloudtrail-put-lifecycle-policy.json")
    event["detail"]["requestParameters"]["lifecyclePolicyText"] = UNTAGGED_ONLY

    result = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))

    assert result["result"] == "compliant"
    assert delivered(aws, queue_url) == []


def test_a_policy_put_on_a_repository_gone_since_is_reported_not_failed(
    lambda_stack: tuple[MotoServer, SlackSink, CollectingSink, str],
) -> None:
    aws, _, _, queue_url = lambda_stack
    event = load_event("cloudtrail-put-lifecycle-policy.json")

    result = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))

    assert result["result"] == "repository_not_found"
    assert delivered(aws, queue_url) == []


# -- where ECR's preview exists: cross-checked ------------------------------------------------------
@pytest.fixture
def ecr_preview(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """ECR's preview API on the moto server (moto has none), answering what the test sets: ECR's word.

    The first GetLifecyclePolicyPreview reports IN_PROGRESS, as a real preview does at first.
    """
    from moto.core.responses import ActionResult  # noqa: PLC0415
    from moto.ecr.responses import ECRResponse  # noqa: PLC0415

    preview: dict[str, Any] = {"results": [], "started": [], "polls": 0}

    def start_lifecycle_policy_preview(self: Any) -> Any:
        preview["started"].append(self._get_param("lifecyclePolicyText"))
        return ActionResult(
            {
                "registryId": ACCOUNT,
                "repositoryName": self._get_param("repositoryName"),
                "lifecyclePolicyText": self._get_param("lifecyclePolicyText"),
                "status": "IN_PROGRESS",
            }
        )

    def get_lifecycle_policy_preview(self: Any) -> Any:
        preview["polls"] += 1
        done = preview["polls"] > 1
        return ActionResult(
            {
                "registryId": ACCOUNT,
                "repositoryName": self._get_param("repositoryName"),
                "lifecyclePolicyText": preview["started"][-1],
                "status": "COMPLETE" if done else "IN_PROGRESS",
                "previewResults": preview["results"] if done else [],
                "summary": {"expiringImageTotalCount": len(preview["results"])},
            }
        )

    monkeypatch.setattr(ECRResponse, "start_lifecycle_policy_preview", start_lifecycle_policy_preview, raising=False)
    monkeypatch.setattr(ECRResponse, "get_lifecycle_policy_preview", get_lifecycle_policy_preview, raising=False)
    return preview


def preview_result(digest: str, tag: str) -> dict[str, Any]:
    return {
        "imageDigest": digest,
        "imageTags": [tag],
        "imagePushedAt": 1767225600,
        "action": {"type": "EXPIRE"},
        "appliedRulePriority": 1,
        "storageClass": "STANDARD",
    }


def test_ecrs_preview_agreeing_is_said_and_disagreeing_is_reported(
    lambda_stack: tuple[MotoServer, SlackSink, CollectingSink, str],
    ecr_preview: dict[str, Any],
) -> None:
    aws, _, _, queue_url = lambda_stack
    digests = release_history(aws, "team/web")
    # Poll without waiting (the stand-in's preview completes on its second read).
    get_dependencies().lifecycle_source = EcrLifecycle(AwsClients(), poll_seconds=0, sleep=lambda _: None)
    ecr_preview["results"] = [preview_result(digests[f"v1.{n}.0"], f"v1.{n}.0") for n in range(3)]
    event = load_event("cloudtrail-put-lifecycle-policy.json")

    agreed = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))

    assert agreed["result"] == "violation" and agreed["preview"] == "agrees", agreed
    assert ecr_preview["started"] == [KEEP_FIVE]  # the policy put, previewed as it was put
    (published,) = delivered(aws, queue_url)
    assert published["detail"]["preview"] == "agrees"

    # ECR says v1.3.0 goes too: its word counts, and the disagreement is reported.
    ecr_preview["results"].append(preview_result(digests["v1.3.0"], "v1.3.0"))
    ecr_preview["polls"] = 0
    event = {**event, "id": "next", "detail": {**event["detail"]}}
    text = json.loads(KEEP_FIVE)
    text["rules"][0]["description"] = "keep five, again"
    event["detail"]["requestParameters"] = {
        **event["detail"]["requestParameters"],
        "lifecyclePolicyText": json.dumps(text),
    }

    disagreed = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))

    assert disagreed["preview"] == "disagrees"
    (published,) = delivered(aws, queue_url)
    images = {image["image-digest"]: image["found-by"] for image in published["detail"]["images"]}
    assert images[digests["v1.3.0"]] == "preview" and published["detail"]["image-count"] == 4


def test_without_the_policy_text_in_cloudtrail_the_policy_in_force_is_read(
    lambda_stack: tuple[MotoServer, SlackSink, CollectingSink, str],
) -> None:
    aws, _, _, queue_url = lambda_stack
    release_history(aws, "team/web")
    aws.client("ecr").put_lifecycle_policy(repositoryName="team/web", lifecyclePolicyText=KEEP_FIVE)
    event = load_event("cloudtrail-put-lifecycle-policy.json")
    del event["detail"]["requestParameters"]["lifecyclePolicyText"]  # CloudTrail leaves out oversized parameters

    result = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))

    assert result["result"] == "violation"
    (published,) = delivered(aws, queue_url)
    assert published["detail"]["image-count"] == 3


def test_a_publish_that_fails_is_retried_whole_and_published_once(
    lambda_stack: tuple[MotoServer, SlackSink, CollectingSink, str],
) -> None:
    aws, _, _, queue_url = lambda_stack
    release_history(aws, "team/web")
    event = load_event("cloudtrail-put-lifecycle-policy.json")
    events = get_dependencies().clients.client("events", REGION)

    with Stubber(events) as refusing:
        refusing.add_client_error("put_events", service_error_code="InternalException", http_status_code=500)
        with pytest.raises(ClientError):
            lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))
    assert delivered(aws, queue_url) == []

    retried = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))  # Lambda's retry

    assert retried["result"] == "violation"
    assert len(delivered(aws, queue_url)) == 1


def test_a_malformed_policy_event_is_dead_lettered_with_one_line(
    lambda_stack: tuple[MotoServer, SlackSink, CollectingSink, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    aws, _, effects, _ = lambda_stack
    sqs = aws.client("sqs")
    dead_letters = sqs.create_queue(QueueName="dead-letters")["QueueUrl"]
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", dead_letters)
    use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=effects))
    event = load_event("cloudtrail-put-lifecycle-policy.json")
    event["detail"]["requestParameters"]["repositoryName"] = "Team Web"

    result = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))

    assert result["status"] == "rejected" and "repositoryName" in result["reason"]
    assert "\n" not in result["reason"]
    (parked,) = sqs.receive_message(QueueUrl=dead_letters, MessageAttributeNames=["All"])["Messages"]
    assert json.loads(parked["Body"])["id"] == event["id"]
