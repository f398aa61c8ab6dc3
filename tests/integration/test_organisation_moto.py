"""One deployment for an organisation, against the moto server with two accounts.

Account A runs the functions (moto's default account); account B is a member: its repositories are reached
through the member role org/member-account.yaml creates there, assumed with the external id. moto switches
accounts on assumed-role credentials, and here (unlike the rest of the suite, see ``callers_own_registry``)
serves each ECR request from the caller's own account, as real ECR does without a repository policy: what
lands in B's registry proves the calls were made as B's role. moto does not evaluate trust policies (any
AssumeRole succeeds, the role need not even exist), so the refused role is STS's real answer recorded with
botocore's Stubber.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from ecr_automation.adapters.clients import MEMBER_SESSION_SECONDS, AwsClients, MemberAccounts
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, get_dependencies, member_accounts, use_dependencies
from ecr_automation.errors import MemberAccountAccessError
from ecr_automation.handlers import lifecycle_guard, notify, replicate_planner, replicate_worker, retag, tag_guard
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.effects import CollectingSink
from ecr_automation.models.findings import ScannedImage
from tests.conftest import load_event
from tests.support import builders
from tests.support.member_template import member_role
from tests.support.moto_server import TEST_CLIENT_CONFIG, MotoServer
from tests.support.registry import OciRegistry, RegistryNotInstalledError

ACCOUNT_A, ACCOUNT_B, REGION, REPOSITORY = "123456789012", "210987654321", "us-east-1", "team/web"
ROLE_NAME, EXTERNAL_ID = "ecr-automation-member", "org-ext-5b1c"
LEDGER_TABLE, DEAD_LETTERS = "ledger", "dead-letters"


@pytest.fixture(autouse=True)
def callers_own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the suite's moto patch that serves any named registryId whoever asks (local/moto_patches.py): a
    request naming B's registry with A's credentials then fails (RepositoryNotFound), as in real ECR."""
    from moto.ecr.models import ecr_backends  # noqa: PLC0415
    from moto.ecr.responses import ECRResponse  # noqa: PLC0415

    monkeypatch.setattr(
        ECRResponse, "ecr_backend", property(lambda self: ecr_backends[self.current_account][self.region])
    )


@dataclass
class OrgStack:
    aws: MotoServer
    sink: CollectingSink
    admins: dict[str, boto3.Session]
    dead_letter_url: str
    manifests: dict[str, str] = field(default_factory=dict)

    def ecr(self, account: str) -> Any:
        return self.admins[account].client("ecr", region_name=REGION, config=TEST_CLIENT_CONFIG)

    def push(self, account: str, seed: str, tag: str) -> str:
        body = builders.image_manifest(f"{account}-{seed}")
        digest = builders.digest_of(body)
        with contextlib.suppress(self.ecr(account).exceptions.ImageAlreadyExistsException):
            self.ecr(account).put_image(
                repositoryName=REPOSITORY,
                imageManifest=body,
                imageManifestMediaType=builders.OCI_MANIFEST,
                imageDigest=digest,
                imageTag=tag,
            )
        return digest

    def tag(self, account: str, tag: str) -> str | None:
        try:
            details = self.ecr(account).describe_images(repositoryName=REPOSITORY, imageIds=[{"imageTag": tag}])
        except self.ecr(account).exceptions.ImageNotFoundException:
            return None
        return str(details["imageDetails"][0]["imageDigest"])

    def claim(self, account: str, tag: str) -> str | None:
        key = RepositoryRef(account, REGION, REPOSITORY).key
        item = (
            self.aws.client("dynamodb")
            .get_item(TableName=LEDGER_TABLE, Key={"pk": {"S": key}, "sk": {"S": f"tag#{tag}"}}, ConsistentRead=True)
            .get("Item")
        )
        return str(item["digest"]["S"]) if item else None

    def guard(self, account: str, action: str, tag: str, digest: str, event_id: str) -> dict[str, Any]:
        event = builders.image_action(action, tag, digest, event_id=event_id)
        event["account"] = account
        result: dict[str, Any] = tag_guard.lambda_handler(event, LambdaContext("TagGuardFunction"))  # type: ignore[arg-type]
        return result

    def dead_letters(self) -> list[dict[str, Any]]:
        sqs = self.aws.client("sqs")
        messages = sqs.receive_message(
            QueueUrl=self.dead_letter_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        return [
            {"event": json.loads(message["Body"]), "reason": message["MessageAttributes"]["reason"]["StringValue"]}
            for message in messages
        ]


def admin_session(aws: MotoServer, account: str) -> boto3.Session:
    """Whoever deploys the stacks in ``account`` (moto: assumed-role credentials land in the role's account)."""
    if account == ACCOUNT_A:
        return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    credentials = aws.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/administrator", RoleSessionName="deploy"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )


def deploy_member_role(session: boto3.Session, account: str) -> None:
    """The member role as org/member-account.yaml declares it, rendered for ``account``."""
    trust, permissions = member_role(
        {
            "AWS::AccountId": account,
            "CentralAccountId": ACCOUNT_A,
            "ExternalId": EXTERNAL_ID,
            "MemberRoleName": ROLE_NAME,
        }
    )
    iam = session.client("iam", config=TEST_CLIENT_CONFIG)
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    for number, document in enumerate(permissions):
        iam.put_role_policy(RoleName=ROLE_NAME, PolicyName=f"policy-{number}", PolicyDocument=json.dumps(document))


@pytest.fixture
def org_environment(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, boto3.Session]:
    """Both accounts' repository team/web, B's member role, and the variables the template gives the functions."""
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TAG_LEDGER_TABLE", LEDGER_TABLE)
    monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    monkeypatch.setenv("APPLICATION_ACCOUNT_ID", ACCOUNT_A)
    monkeypatch.setenv("MEMBER_ACCOUNT_ROLE_NAME", ROLE_NAME)
    monkeypatch.setenv("MEMBER_ACCOUNT_EXTERNAL_ID", EXTERNAL_ID)
    admins = {account: admin_session(aws, account) for account in (ACCOUNT_A, ACCOUNT_B)}
    for session in admins.values():
        session.client("ecr", config=TEST_CLIENT_CONFIG).create_repository(repositoryName=REPOSITORY)
    deploy_member_role(admins[ACCOUNT_B], ACCOUNT_B)
    builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", LEDGER_TABLE)
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", aws.client("sqs").create_queue(QueueName=DEAD_LETTERS)["QueueUrl"])
    return admins


def _stack(aws: MotoServer, admins: dict[str, boto3.Session], clients: AwsClients | None) -> Iterator[OrgStack]:
    settings = settings_from_environment()
    sink = CollectingSink()
    use_dependencies(Dependencies(settings, clients=clients, sink=sink))
    try:
        yield OrgStack(aws, sink, admins, str(settings.dead_letter_queue_url))
    finally:
        use_dependencies(None)


@pytest.fixture
def org(aws: MotoServer, org_environment: dict[str, boto3.Session]) -> Iterator[OrgStack]:
    # No clients given: the functions' own wiring (dependencies.member_accounts) builds them from the settings.
    yield from _stack(aws, org_environment, None)


def test_a_tag_moved_in_a_member_account_is_reverted_in_that_accounts_registry(org: OrgStack) -> None:
    # Given B's release v1.0.0, claimed through an event from account B,
    released = org.push(ACCOUNT_B, "release", "v1.0.0")
    assert org.guard(ACCOUNT_B, "PUSH", "v1.0.0", released, "b-1")["result"] == "claimed"
    # When someone in B pushes another image over it,
    moved = org.push(ACCOUNT_B, "hotfix", "v1.0.0")
    assert org.tag(ACCOUNT_B, "v1.0.0") == moved

    result = org.guard(ACCOUNT_B, "PUSH", "v1.0.0", moved, "b-2")

    # Then the guard put B's tag back, in B's registry, and A's same-named repository was never touched.
    assert result["result"] == "reverted"
    assert org.tag(ACCOUNT_B, "v1.0.0") == released
    assert org.tag(ACCOUNT_A, "v1.0.0") is None
    assert org.claim(ACCOUNT_B, "v1.0.0") == released


def test_the_ledger_keeps_each_accounts_claim_on_a_same_named_repository(org: OrgStack) -> None:
    # Given team/web:v1.0.0 pushed in both accounts, different images,
    in_a = org.push(ACCOUNT_A, "release", "v1.0.0")
    in_b = org.push(ACCOUNT_B, "release", "v1.0.0")

    # When each account's push arrives, Then each is a first claim, not a violation of the other's,
    assert org.guard(ACCOUNT_A, "PUSH", "v1.0.0", in_a, "a-1")["result"] == "claimed"
    assert org.guard(ACCOUNT_B, "PUSH", "v1.0.0", in_b, "b-1")["result"] == "claimed"
    assert (org.claim(ACCOUNT_A, "v1.0.0"), org.claim(ACCOUNT_B, "v1.0.0")) == (in_a, in_b)

    # and a move in A is reverted in A (own credentials) to A's image, leaving B alone.
    moved = org.push(ACCOUNT_A, "hotfix", "v1.0.0")
    assert org.guard(ACCOUNT_A, "PUSH", "v1.0.0", moved, "a-2")["result"] == "reverted"
    assert (org.tag(ACCOUNT_A, "v1.0.0"), org.tag(ACCOUNT_B, "v1.0.0")) == (in_a, in_b)


def test_the_notifier_reads_a_member_accounts_scan_findings_there(org: OrgStack) -> None:
    # Given an image scanned in B with a finding (moto keeps scan results per account),
    digest = org.push(ACCOUNT_B, "scanned", "v2.0.0")
    result = {
        "registryId": ACCOUNT_B,
        "repositoryName": REPOSITORY,
        "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": "COMPLETE"},
        "imageScanFindings": {"findings": [{"name": "CVE-2026-0001", "severity": "HIGH"}]},
    }
    requests.post(
        f"{org.aws.endpoint_url}/moto-api/static/ecr/scan-finding-results",
        json={"account_id": ACCOUNT_B, "region": REGION, "results": [result]},
        timeout=10,
    ).raise_for_status()
    org.ecr(ACCOUNT_B).start_image_scan(repositoryName=REPOSITORY, imageId={"imageDigest": digest})

    # When the notifier's findings source reads it, Then it reads B's scan, as B's member role.
    found = get_dependencies().findings.findings(ScannedImage(RepositoryRef(ACCOUNT_B, REGION, REPOSITORY), digest))

    assert found is not None
    assert [(finding.vulnerability_id, finding.severity.value) for finding in found] == [("CVE-2026-0001", "HIGH")]


# -- a member role that refuses us ---------------------------------------------------------------------------
class _ClientsWithSts(AwsClients):
    """The functions' clients, except STS: a client whose answers were recorded with Stubber."""

    def __init__(self, members: MemberAccounts, sts: Any) -> None:
        super().__init__(members=members)
        self._sts = sts

    def client(self, service: str, region: str) -> Any:
        return self._sts if service == "sts" else super().client(service, region)


def _sts() -> Any:
    return boto3.client("sts", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")


def _assume_params(external_id: str) -> dict[str, Any]:
    return {
        "RoleArn": f"arn:aws:iam::{ACCOUNT_B}:role/{ROLE_NAME}",
        "RoleSessionName": "ecr-automation",
        "ExternalId": external_id,
        "DurationSeconds": MEMBER_SESSION_SECONDS,
    }


@pytest.fixture
def refused(
    aws: MotoServer, org_environment: dict[str, boto3.Session], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OrgStack, Stubber]]:
    monkeypatch.setenv("MEMBER_ACCOUNT_EXTERNAL_ID", "not-the-agreed-id")
    sts = _sts()
    members = member_accounts(settings_from_environment())
    assert members is not None
    with Stubber(sts) as stubber:
        # What STS answers when the trust policy's sts:ExternalId condition does not match.
        stubber.add_client_error(
            "assume_role",
            service_error_code="AccessDenied",
            service_message=f"User: arn:aws:sts::{ACCOUNT_A}:assumed-role/guard/fn is not authorized to perform: "
            f"sts:AssumeRole on resource: arn:aws:iam::{ACCOUNT_B}:role/{ROLE_NAME}",
            http_status_code=403,
            expected_params=_assume_params("not-the-agreed-id"),
        )
        yield from ((stack, stubber) for stack in _stack(aws, org_environment, _ClientsWithSts(members, sts)))


def test_a_member_role_that_refuses_us_dead_letters_the_event_with_one_clear_line(
    refused: tuple[OrgStack, Stubber], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    org, stubber = refused
    pushed = org.push(ACCOUNT_B, "release", "v1.0.0")

    result = org.guard(ACCOUNT_B, "PUSH", "v1.0.0", pushed, "b-1")

    stubber.assert_no_pending_responses()
    assert result["status"] == "dead_lettered"
    reason = result["reason"]
    assert "\n" not in reason and ACCOUNT_B in reason and f"role/{ROLE_NAME}" in reason and "AccessDenied" in reason
    assert "not-the-agreed-id" not in reason  # the external id is never written out
    # The event waits whole in the dead-letter queue, with the reason, for a replay once B is set up.
    (parked,) = org.dead_letters()
    assert parked["event"]["id"] == "b-1" and parked["event"]["account"] == ACCOUNT_B and parked["reason"] == reason
    # One log record (botocore's own traceback of the refresh is kept out), one metric, one effect; nothing
    # was written in B.
    assert [(record.levelname, record.getMessage()) for record in caplog.records if record.levelname != "INFO"] == [
        ("ERROR", "member account refused")
    ]
    output = capsys.readouterr().out
    assert '"MemberAccountRefusals":[1.0]' in output
    assert "not-the-agreed-id" not in output + caplog.text
    assert [effect.kind for effect in org.sink.effects if effect.kind == "member_account_refused"] == [
        "member_account_refused"
    ]
    assert org.tag(ACCOUNT_B, "v1.0.0") == pushed


def test_the_notifier_dead_letters_a_refused_member_accounts_scan_once_without_calling_it_an_alert_failure(
    refused: tuple[OrgStack, Stubber], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    org, stubber = refused
    digest = org.push(ACCOUNT_B, "scanned", "v1.0.0")
    event = builders.ecr_event(
        "ECR Image Scan",
        {
            "scan-status": "COMPLETE",
            "repository-name": REPOSITORY,
            "image-digest": digest,
            "image-tags": ["v1.0.0"],
            "finding-severity-counts": {"CRITICAL": 1},
        },
        event_id="b-scan",
    )
    event["account"] = ACCOUNT_B

    result = notify.lambda_handler(event, LambdaContext("NotifyFunction"))  # type: ignore[arg-type]

    stubber.assert_no_pending_responses()
    assert result["status"] == "dead_lettered" and ACCOUNT_B in result["reason"]
    assert [parked["event"]["id"] for parked in org.dead_letters()] == ["b-scan"]
    problems = [record.getMessage() for record in caplog.records if record.levelname != "INFO"]
    assert problems == ["member account refused"]  # not "alert not delivered": no alert failed, nothing retries
    output = capsys.readouterr().out
    assert '"MemberAccountRefusals":[1.0]' in output and "AlertsFailed" not in output


def test_the_replication_worker_logs_in_to_a_member_accounts_source_registry_as_its_member_role(
    refused: tuple[OrgStack, Stubber],
) -> None:
    _, stubber = refused
    tokens = get_dependencies().image_copier._source_tokens  # the source side's ECR token provider

    assert tokens.credentials(ACCOUNT_A, REGION).username == "AWS"  # our own registry: our own credentials
    with pytest.raises(MemberAccountAccessError, match=f"cannot act in account {ACCOUNT_B}"):
        tokens.credentials(ACCOUNT_B, REGION)  # B's registry: B's member role (refused here)
    stubber.assert_no_pending_responses()


def test_events_of_the_functions_own_account_never_ask_sts(refused: tuple[OrgStack, Stubber]) -> None:
    # Given STS would refuse the member role, When an event of account A arrives,
    org, stubber = refused
    pushed = org.push(ACCOUNT_A, "release", "v1.0.0")

    # Then it is handled with the functions' own credentials, and STS is not called at all.
    assert org.guard(ACCOUNT_A, "PUSH", "v1.0.0", pushed, "a-1")["result"] == "claimed"
    with pytest.raises(AssertionError, match="1 responses remaining"):
        stubber.assert_no_pending_responses()


# -- the member session: assumed lazily, once, renewed by botocore before it expires -------------------------
def _credentials(expires_in: timedelta, key: str) -> dict[str, Any]:
    return {
        "Credentials": {
            "AccessKeyId": key,
            "SecretAccessKey": "secret",
            "SessionToken": "token",
            "Expiration": datetime.now(UTC) + expires_in,
        },
        "AssumedRoleUser": {
            "AssumedRoleId": "AROA:ecr-automation",
            "Arn": f"arn:aws:sts::{ACCOUNT_B}:assumed-role/x/y",
        },
    }


# botocore renews credentials with less than 15 minutes left (advisory), and must with less than 10 (mandatory).
@pytest.mark.parametrize(
    "lifetimes",
    [[timedelta(hours=1)], [timedelta(minutes=12), timedelta(hours=1)]],
    ids=["an-hour-left-serves-every-request", "renewed-once-with-12-minutes-left"],
)
def test_the_member_role_is_assumed_on_first_use_and_again_only_near_expiry(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch, lifetimes: list[timedelta]
) -> None:
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    sts = _sts()
    clients = _ClientsWithSts(MemberAccounts(ACCOUNT_A, ROLE_NAME, EXTERNAL_ID, REGION), sts)
    with Stubber(sts) as stubber:
        for number, lifetime in enumerate(lifetimes):
            stubber.add_response(
                "assume_role", _credentials(lifetime, f"ASIA{number:016d}"), _assume_params(EXTERNAL_ID)
            )
        ecr = clients.client_in(ACCOUNT_B, "ecr", REGION)
        assert clients.client_in(ACCOUNT_B, "ecr", REGION) is ecr  # cached per account and region
        # Creating the client asked nothing; each request below needs valid credentials.
        for _ in range(3):
            ecr.describe_repositories()
        stubber.assert_no_pending_responses()


# -- every function that may act in a member account does so through the member role --------------------------
MIRROR_REGION = "us-west-2"
MEMBER_RULES = """
[[guard]]
repositories = ["*"]
protect_releases = true

[[retag]]
repositories = ["*"]
digest_tag = ""
[retag.aliases]
prefix = "v"
"""
KEEP_FIVE = load_event("cloudtrail-put-lifecycle-policy.json")["detail"]["requestParameters"]["lifecyclePolicyText"]
# To any OCI registry (anonymous here): the worker's only AWS side is the source, B's registry.
PUSH_REPLICATION = """
[[replicate]]
repositories = ["team/*"]
[[replicate.targets]]
registry = "{registry}"
repository = "mirror-b/{{repository}}"
"""
SCAN_REPLICATION = f"""
[[replicate]]
repositories = ["team/*"]
gate = "scan"
block_at = "HIGH"
[[replicate.targets]]
region = "{MIRROR_REGION}"
"""


def ecr_host(account: str, region: str) -> str:
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


@pytest.fixture(scope="module")
def member_registry() -> Iterator[OciRegistry]:
    """Account B's ECR registry: it accepts B's ECR token only (moto's: AWS / <account>-auth-token)."""
    try:
        registry = OciRegistry("AWS", f"{ACCOUNT_B}-auth-token")
    except RegistryNotInstalledError as error:
        pytest.fail(str(error))
    yield registry
    registry.stop()


@pytest.fixture
def member_org(
    aws: MotoServer,
    org_environment: dict[str, boto3.Session],
    member_registry: OciRegistry,
    oci_registry: OciRegistry,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Any]:
    """``org`` with a rules file of the test's, the replication queue, and B's and A's mirror registries."""
    stacks: list[Generator[OrgStack]] = []

    def make(extra_rules: str = "") -> OrgStack:
        rules = tmp_path / "rules.toml"
        rules.write_text(MEMBER_RULES + extra_rules)
        overrides = {
            ecr_host(ACCOUNT_B, REGION): member_registry.url,
            ecr_host(ACCOUNT_A, MIRROR_REGION): oci_registry.url,
        }
        queue_url = aws.client("sqs").create_queue(QueueName="replication")["QueueUrl"]
        for name, value in {
            "RULES_FILE": str(rules),
            "REPLICATION_QUEUE_URL": queue_url,
            "REGISTRY_ENDPOINT_OVERRIDES": json.dumps(overrides),
            "REGISTRY_INSECURE": "true",
        }.items():
            monkeypatch.setenv(name, value)
        stack = cast(Generator[OrgStack], _stack(aws, org_environment, None))
        stacks.append(stack)
        return next(stack)

    yield make
    for stack in stacks:
        stack.close()


def published(org: OrgStack, detail_type: str) -> list[dict[str, Any]]:
    return [
        effect.fields
        for effect in org.sink.effects
        if effect.kind == "event_published" and effect.fields.get("detail_type") == detail_type
    ]


def scanned_in(org: OrgStack, account: str, digest: str, counts: dict[str, int]) -> None:
    """``digest``'s basic scan in ``account`` finished with these counts (DescribeImageScanFindings serves them)."""
    result = {
        "registryId": account,
        "repositoryName": REPOSITORY,
        "imageId": {"imageDigest": digest, "imageTag": "-"},  # no tag: moto would match any untagged image
        "imageScanStatus": {"status": "COMPLETE"},
        "imageScanFindings": {"findings": [], "findingSeverityCounts": counts},
    }
    requests.post(
        f"{org.aws.endpoint_url}/moto-api/static/ecr/scan-finding-results",
        json={"account_id": account, "region": REGION, "results": [cast(dict[str, Any], result)]},
        timeout=10,
    ).raise_for_status()
    org.ecr(account).start_image_scan(repositoryName=REPOSITORY, imageId={"imageDigest": digest})


def scan_event(account: str, digest: str, counts: dict[str, int], event_id: str) -> dict[str, Any]:
    """ECR's basic scan event of a platform manifest (untagged: an index names it)."""
    detail = {
        "scan-status": "COMPLETE",
        "repository-name": REPOSITORY,
        "image-digest": digest,
        "image-tags": [],
        "finding-severity-counts": counts,
    }
    event = builders.ecr_event("ECR Image Scan", detail, event_id=event_id)
    event["account"] = account
    return event


def push_index_in(org: OrgStack, account: str, tag: str) -> tuple[str, list[str]]:
    """A multi-arch index under ``tag`` in ``account``'s team/web, its platform manifests pushed by digest first."""
    children = [(arch, builders.image_manifest(f"{account}-{tag}", arch)) for arch in ("amd64", "arm64")]
    ecr = org.ecr(account)
    for _, body in children:
        ecr.put_image(
            repositoryName=REPOSITORY,
            imageManifest=body,
            imageManifestMediaType=builders.OCI_MANIFEST,
            imageDigest=builders.digest_of(body),
        )
    index = builders.index_manifest(children)
    digest = builders.digest_of(index)
    ecr.put_image(
        repositoryName=REPOSITORY,
        imageManifest=index,
        imageManifestMediaType=builders.OCI_INDEX,
        imageDigest=digest,
        imageTag=tag,
    )
    return digest, [builders.digest_of(body) for _, body in children]


def own_environment(org: OrgStack) -> None:
    """A new execution environment (as each function has): its own clients, so its own member role session."""
    use_dependencies(Dependencies(settings_from_environment(), sink=org.sink))


def retag_in(account: str, tag: str, digest: str, event_id: str) -> dict[str, Any]:
    event = builders.image_action("PUSH", tag, digest, event_id=event_id)
    event["account"] = account
    result: dict[str, Any] = retag.lambda_handler(event, LambdaContext("RetagFunction"))
    return result


def tags_in(org: OrgStack, account: str) -> dict[str, str]:
    images = org.ecr(account).list_images(repositoryName=REPOSITORY, filter={"tagStatus": "TAGGED"})["imageIds"]
    return {image["imageTag"]: image["imageDigest"] for image in images}


def test_retag_writes_a_member_accounts_aliases_in_that_accounts_registry(member_org: Any) -> None:
    org: OrgStack = member_org()
    released = org.push(ACCOUNT_B, "release", "v3.1.4")

    result = retag_in(ACCOUNT_B, "v3.1.4", released, "b-release")

    assert result["status"] == "processed" and sorted(result["written"]) == ["latest", "v3", "v3.1"], result
    assert tags_in(org, ACCOUNT_B) == dict.fromkeys(["latest", "v3", "v3.1", "v3.1.4"], released)
    assert tags_in(org, ACCOUNT_A) == {}  # A's same-named repository was never written


def test_the_lifecycle_guard_reads_a_member_accounts_policy_there_and_publishes_the_violation(
    member_org: Any,
) -> None:
    from moto.ecr.models import ecr_backends  # noqa: PLC0415 - the server runs in this process

    org: OrgStack = member_org()
    # B's releases v1.0.0 .. v1.6.0, a week apart, and a policy in force that keeps the 5 newest images.
    start = datetime.now(UTC) - timedelta(days=60)
    digests = [org.push(ACCOUNT_B, f"b-{minor}", f"v1.{minor}.0") for minor in range(7)]
    for image in ecr_backends[ACCOUNT_B][REGION].repositories[REPOSITORY].images:
        image.image_pushed_at = int((start + timedelta(days=7 * digests.index(image.get_image_digest()))).timestamp())
    org.ecr(ACCOUNT_B).put_lifecycle_policy(repositoryName=REPOSITORY, lifecyclePolicyText=KEEP_FIVE)
    # CloudTrail's record of that put in B, without the policy text (it leaves out oversized parameters).
    event = load_event("cloudtrail-put-lifecycle-policy.json")
    event["account"] = ACCOUNT_B
    detail = event["detail"]
    detail["recipientAccountId"] = ACCOUNT_B
    detail["requestParameters"] = {"repositoryName": REPOSITORY, "registryId": ACCOUNT_B}
    detail["responseElements"] = {"registryId": ACCOUNT_B, "repositoryName": REPOSITORY}

    result = lifecycle_guard.lambda_handler(event, LambdaContext("LifecycleGuardFunction"))

    assert result["status"] == "processed" and result["result"] == "violation", result
    (violation,) = published(org, "Lifecycle Policy Violation")
    assert violation["detail"]["registry-id"] == ACCOUNT_B
    assert [image["image-digest"] for image in violation["detail"]["images"]] == digests[:2]
    # B's policy stays as it was put; A has none.
    assert org.ecr(ACCOUNT_B).get_lifecycle_policy(repositoryName=REPOSITORY)["lifecyclePolicyText"] == KEEP_FIVE
    with pytest.raises(ClientError, match="LifecyclePolicyNotFound"):
        org.ecr(ACCOUNT_A).get_lifecycle_policy(repositoryName=REPOSITORY)


def test_the_planners_scan_gate_reads_a_member_accounts_platform_scans_there(member_org: Any) -> None:
    org: OrgStack = member_org(SCAN_REPLICATION)
    index, (amd64, arm64) = push_index_in(org, ACCOUNT_B, "v2.0.0")
    retag_in(ACCOUNT_B, "v2.0.0", index, "b-index")  # retag records which platforms the index names
    own_environment(org)  # the planner runs in a Lambda environment of its own: it assumes B's role itself
    planner = LambdaContext("ReplicationPlannerFunction")
    # amd64's clean scan arrives first: arm64's is not in B yet, so nothing is queued.
    waiting = replicate_planner.lambda_handler(scan_event(ACCOUNT_B, amd64, {"LOW": 1}, "b-scan-amd64"), planner)
    assert waiting["jobs"] == [] and "waiting for the scan of platform" in " ".join(waiting["notes"]), waiting
    scanned_in(org, ACCOUNT_B, amd64, {"LOW": 1})

    # When arm64's clean scan arrives, amd64's is read in B (clean): the index is queued, from B, under its tags.
    planned = replicate_planner.lambda_handler(scan_event(ACCOUNT_B, arm64, {"LOW": 2}, "b-scan-arm64"), planner)

    assert sorted(job["tag"] for job in planned["jobs"]) == ["latest", "v2", "v2.0", "v2.0.0"], planned
    url = str(os.environ["REPLICATION_QUEUE_URL"])
    queued = org.aws.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    sources = {(job["source"]["account"], job["source"]["digest"]) for job in map(json.loads, _bodies(queued))}
    assert sources == {(ACCOUNT_B, index)}


def test_the_worker_pulls_from_a_member_accounts_registry_with_its_member_roles_token(
    member_org: Any, member_registry: OciRegistry, oci_registry: OciRegistry
) -> None:
    org: OrgStack = member_org(PUSH_REPLICATION.format(registry=oci_registry.url))
    # B's registry accepts only B's ECR token: what the worker gets through B's member role.
    digest, _ = member_registry.push_image(REPOSITORY, "v4.0.0", [b"member layer " * 1000])
    planned = replicate_planner.lambda_handler(
        _pushed_in_b("v4.0.0", digest), LambdaContext("ReplicationPlannerFunction")
    )
    assert len(planned["jobs"]) == 1, planned
    sqs = org.aws.client("sqs")
    messages = sqs.receive_message(QueueUrl=str(os.environ["REPLICATION_QUEUE_URL"]), AttributeNames=["All"])[
        "Messages"
    ]

    response = replicate_worker.lambda_handler(
        {"Records": [_sqs_record(message) for message in messages]},
        LambdaContext("ReplicationWorkerFunction", timeout_seconds=300),
    )

    assert response["batchItemFailures"] == []
    source, media_type, source_digest = member_registry.get_manifest(REPOSITORY, "v4.0.0")
    copied = oci_registry.get_manifest(f"mirror-b/{REPOSITORY}", "v4.0.0")
    assert copied == (source, media_type, source_digest) and source_digest == digest
    for blob in [json.loads(source)["config"], *json.loads(source)["layers"]]:
        assert oci_registry.blob(f"mirror-b/{REPOSITORY}", blob["digest"]) == member_registry.blob(
            REPOSITORY, blob["digest"]
        )


def _bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [str(message["Body"]) for message in messages]


def _pushed_in_b(tag: str, digest: str) -> dict[str, Any]:
    event = builders.image_action("PUSH", tag, digest, event_id=f"b-push-{tag}")
    event["account"] = ACCOUNT_B
    return event


def _sqs_record(message: dict[str, Any]) -> dict[str, Any]:
    url = str(os.environ["REPLICATION_QUEUE_URL"])
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT_A}:{url.rsplit('/', 1)[-1]}",
        "awsRegion": REGION,
    }
