"""Replication: the rules section, planning (pure) and the worker's workflow with fakes."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.adapters.replication import JobQueue, QueueSendError, parse_registry_credentials
from ecr_automation.config import ConfigurationError, settings_from_environment
from ecr_automation.logic.replicate import (
    IMAGE_REPLICATED,
    IMAGE_REPLICATION_FAILED,
    CopyFailedError,
    CopyOutcome,
    CopyPausedError,
    EcrDestination,
    RegistryDestination,
    ReplicationJob,
    ReplicationResult,
    Replicator,
    TagProtection,
    plan,
)
from ecr_automation.models.effects import CollectingSink
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.models.events.scans import ImageScanEvent, InspectorScanEvent
from ecr_automation.rules import Rules, parse_rules
from tests.conftest import load_event
from tests.support.fakes import FakePublisher

DIGEST = "sha256:e80a9a9bcbbc57bd3b1ba40dac822ef748c634adf59c6c2042bb424e4dba58d4"
OTHER_DIGEST = "sha256:" + "b" * 64

PUSH_RULES = """
[[guard]]
repositories = ["*"]

[[replicate]]
repositories = ["team/*"]
tags_allow = ['^v[0-9]', '^latest$']
tags_deny = ['-rc\\.']

[[replicate.targets]]
region = "eu-west-1"
repository = "mirror/{repository}"

[[replicate.targets]]
registry = "https://ghcr.io/"
repository = "example/{repository}"
credentials_secret = "ghcr-push"
"""

SCAN_RULES = """
[[replicate]]
repositories = ["team/web"]
gate = "scan"
block_at = "HIGH"

[[replicate.targets]]
region = "us-west-2"
"""


def push(tag: str | None, *, digest: str = DIGEST, repository: str = "team/web", event_id: str = "e-1") -> Any:
    raw = copy.deepcopy(load_event("ecr-push-tagged.json"))
    raw["id"] = event_id
    raw["detail"]["repository-name"] = repository
    raw["detail"]["image-digest"] = digest
    if tag is None:
        del raw["detail"]["image-tag"]
    else:
        raw["detail"]["image-tag"] = tag
    return ImageActionEvent.model_validate(raw)


def basic_scan(counts: dict[str, int], *, status: str = "COMPLETE", tags: list[str] | None = None) -> ImageScanEvent:
    raw = copy.deepcopy(load_event("ecr-scan-clean.json"))
    raw["detail"]["finding-severity-counts"] = counts
    raw["detail"]["scan-status"] = status
    if tags is not None:
        raw["detail"]["image-tags"] = tags
    return ImageScanEvent.model_validate(raw)


@dataclass
class Acceptance:
    accepted: bool = True
    asked: list[str] = field(default_factory=list)

    def accepts(self, event: ImageActionEvent) -> bool:
        self.asked.append(event.id)
        return self.accepted


# -- the rules section -----------------------------------------------------------------------------------
def test_every_matching_replicate_entry_applies() -> None:
    rules = parse_rules(
        PUSH_RULES + '\n[[replicate]]\nrepositories = ["*"]\n[[replicate.targets]]\nregion = "ap-south-1"\n'
    )
    assert len(rules.replicate_for("team/web")) == 2
    assert len(rules.replicate_for("other")) == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ('repository = "x"', "needs a region (ECR) or a registry URL"),
        ('region = "eu-west-1"\naccount = "210987654321"', "needs role_arn"),
        (
            'region = "eu-west-1"\naccount = "210987654321"\nrole_arn = "arn:aws:iam::111111111111:role/r"',
            "belongs to account 111111111111",
        ),
        ('registry = "https://ghcr.io"\nregion = "eu-west-1"', "takes no region"),
        ('region = "eu-west-1"\ncredentials_secret = "s"', "credentials_secret is for registry targets"),
        ('region = "eu-west-1"\nrepository = "{name}"', "unknown placeholder {name}"),
        ('region = "eu-west-1"\nrepository = "Mirror/{repository}"', "renders repository names registries refuse"),
        ('registry = "ftp://example.com"', "String should match pattern"),
        ('registry = "https://ghcr.io/some/path"', "String should match pattern"),
    ],
)
def test_a_target_that_names_no_registry_is_refused_at_load(target: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_rules(f"[[replicate]]\n[[replicate.targets]]\n{target}\n")


def test_a_tag_pattern_re2_refuses_is_refused_at_load() -> None:
    with pytest.raises(ConfigurationError, match="RE2 cannot compile"):
        parse_rules("[[replicate]]\ntags_deny = ['(?=x)']\n[[replicate.targets]]\nregion = \"eu-west-1\"\n")


def test_a_role_alone_names_its_account() -> None:
    rules = parse_rules(
        '[[replicate]]\n[[replicate.targets]]\nregion = "eu-west-1"\nrole_arn = "arn:aws:iam::210987654321:role/r"\n'
    )
    assert rules.replicate[0].targets[0].destination_account == "210987654321"


# -- planning a push --------------------------------------------------------------------------------------
def test_a_tagged_push_plans_one_job_per_target_with_the_rename() -> None:
    planned = plan(push("v1.2.3"), parse_rules(PUSH_RULES), Acceptance())
    destinations = {job.destination.describe() for job in planned.jobs}
    assert destinations == {"123456789012.dkr.ecr.eu-west-1/mirror/team/web", "https://ghcr.io/example/team/web"}
    ecr_job = next(job for job in planned.jobs if isinstance(job.destination, EcrDestination))
    assert ecr_job.source.digest == DIGEST and ecr_job.source.tag == "v1.2.3"
    assert ecr_job.create_repository is not None and ecr_job.create_repository.scan_on_push
    registry_job = next(job for job in planned.jobs if isinstance(job.destination, RegistryDestination))
    assert registry_job.create_repository is None
    assert isinstance(registry_job.destination, RegistryDestination)
    assert registry_job.destination.credentials_secret == "ghcr-push"


@pytest.mark.parametrize(
    ("tag", "planned"), [("v1.2.3", True), ("latest", True), ("v2.0.0-rc.1", False), ("dev", False)]
)
def test_tag_filters_allow_then_deny(tag: str, planned: bool) -> None:
    jobs = plan(push(tag), parse_rules(PUSH_RULES), Acceptance()).jobs
    assert bool(jobs) is planned


def test_a_push_the_guard_rejected_is_not_replicated() -> None:
    acceptance = Acceptance(accepted=False)
    planned = plan(push("v1.2.3"), parse_rules(PUSH_RULES), acceptance)
    assert planned.jobs == []
    assert acceptance.asked == ["e-1"]
    assert any("tag guard rejected" in note for note in planned.notes)


def test_the_guard_is_not_asked_when_no_rule_wants_the_push() -> None:
    acceptance = Acceptance()
    assert plan(push("dev"), parse_rules(PUSH_RULES), acceptance).jobs == []
    assert plan(push("v1.2.3", repository="other/web"), parse_rules(PUSH_RULES), acceptance).jobs == []
    assert acceptance.asked == []


def test_pushes_by_digest_quarantine_tags_and_deletes_plan_nothing() -> None:
    rules = parse_rules(PUSH_RULES)
    assert plan(push(None), rules, Acceptance()).jobs == []
    assert plan(push("quarantine-0123456789ab"), rules, Acceptance()).jobs == []
    delete = push("v1.2.3").model_copy(
        update={"detail": push("v1.2.3").detail.model_copy(update={"action_type": "DELETE"})}
    )
    planned = plan(delete, rules, Acceptance())
    assert planned.jobs == [] and "deletes never are" in planned.notes[0]


def test_job_ids_are_stable_and_distinct_per_tag_and_target() -> None:
    rules = parse_rules(PUSH_RULES)
    first = plan(push("v1.2.3", event_id="e-1"), rules, Acceptance()).jobs
    again = plan(push("v1.2.3", event_id="e-2"), rules, Acceptance()).jobs
    assert [job.job_id for job in first] == [job.job_id for job in again]
    other_tag = plan(push("latest"), rules, Acceptance()).jobs
    assert len({job.job_id for job in [*first, *other_tag]}) == 4


def test_a_job_survives_the_queue_as_json() -> None:
    (job, *_) = plan(push("v1.2.3"), parse_rules(PUSH_RULES), Acceptance()).jobs
    assert ReplicationJob.model_validate_json(job.model_dump_json()) == job
    assert json.loads(job.model_dump_json())["destination"]["kind"] in {"ecr", "registry"}


def test_a_push_gated_rule_ignores_scans_and_a_scan_gated_rule_ignores_pushes() -> None:
    assert plan(basic_scan({}), parse_rules(PUSH_RULES), Acceptance()).jobs == []
    assert plan(push("v1.2.3"), parse_rules(SCAN_RULES), Acceptance()).jobs == []


# -- planning on a scan -----------------------------------------------------------------------------------
def test_a_clean_scan_replicates_every_tag_of_the_image() -> None:
    planned = plan(basic_scan({"MEDIUM": 3}, tags=["v1.2.3", "latest"]), parse_rules(SCAN_RULES), Acceptance())
    assert sorted(job.source.tag for job in planned.jobs) == ["latest", "v1.2.3"]
    assert {job.destination.describe() for job in planned.jobs} == {"123456789012.dkr.ecr.us-west-2/team/web"}


def test_a_dirty_scan_plans_nothing_and_says_why() -> None:
    planned = plan(basic_scan({"HIGH": 1, "LOW": 4}), parse_rules(SCAN_RULES), Acceptance())
    assert planned.jobs == []
    assert planned.notes == ["1 finding(s) at HIGH or above (HIGH=1, LOW=4): not replicated"]


def test_a_failed_scan_plans_nothing() -> None:
    planned = plan(basic_scan({}, status="FAILED"), parse_rules(SCAN_RULES), Acceptance())
    assert planned.jobs == [] and "FAILED" in planned.notes[0]


def test_an_enhanced_scan_cannot_decide_a_gate_below_medium() -> None:
    rules = parse_rules(SCAN_RULES.replace('block_at = "HIGH"', 'block_at = "LOW"'))
    raw = copy.deepcopy(load_event("inspector-scan.json"))
    raw["detail"]["finding-severity-counts"] = {"TOTAL": 0}
    planned = plan(InspectorScanEvent.model_validate(raw), rules, Acceptance())
    assert planned.jobs == [] and "cannot be decided" in planned.notes[0]


def test_an_enhanced_clean_scan_replicates() -> None:
    raw = copy.deepcopy(load_event("inspector-scan.json"))
    raw["detail"]["finding-severity-counts"] = {"MEDIUM": 2, "TOTAL": 2}
    planned = plan(InspectorScanEvent.model_validate(raw), parse_rules(SCAN_RULES), Acceptance())
    assert [job.source.tag for job in planned.jobs] == ["v1.2.3"]


def test_the_source_itself_is_never_a_target() -> None:
    rules = parse_rules('[[replicate]]\n[[replicate.targets]]\nregion = "us-east-1"\n')
    planned = plan(push("v1.2.3"), rules, Acceptance())
    assert planned.jobs == [] and "the source itself" in planned.notes[0]


# -- the worker ------------------------------------------------------------------------------------------
@dataclass
class FakeCopier:
    outcome: CopyOutcome | None = None
    error: Exception | None = None
    protected_seen: list[bool] = field(default_factory=list)

    def copy(self, job: ReplicationJob, *, deadline: float | None, protected: TagProtection) -> CopyOutcome:
        self.protected_seen.append(protected(job.source.tag))
        if self.error is not None:
            raise self.error
        return self.outcome or CopyOutcome(
            digest=job.source.digest, blobs_copied=2, blobs_skipped=1, bytes_copied=1234, tags_written=[job.source.tag]
        )


@dataclass
class FakeDestinations:
    ensured: list[str] = field(default_factory=list)

    def ensure_repository(self, job: ReplicationJob) -> bool:
        self.ensured.append(job.destination.repository)
        return True


def ecr_job(rules: Rules, tag: str = "v1.2.3") -> ReplicationJob:
    return next(job for job in plan(push(tag), rules, Acceptance()).jobs if isinstance(job.destination, EcrDestination))


def test_a_copied_image_publishes_image_replicated() -> None:
    rules = parse_rules(PUSH_RULES)
    publisher, destinations = FakePublisher(), FakeDestinations()
    replicator = Replicator(rules, FakeCopier(), destinations, publisher)

    outcome = replicator.replicate(ecr_job(rules), deadline=None, final_attempt=False)

    assert outcome.result is ReplicationResult.REPLICATED and outcome.repository_created
    assert destinations.ensured == ["mirror/team/web"]
    ((detail_type, detail),) = publisher.published
    assert detail_type == IMAGE_REPLICATED
    assert detail["image-digest"] == DIGEST and detail["tags"] == ["v1.2.3"]
    assert detail["bytes-copied"] == 1234 and detail["blobs-skipped"] == 1
    assert detail["destination"]["repository"] == "mirror/team/web"


def test_a_permanent_failure_raises_and_is_published_on_the_last_delivery_only() -> None:
    rules = parse_rules(PUSH_RULES)
    publisher = FakePublisher()
    replicator = Replicator(
        rules, FakeCopier(error=CopyFailedError("blob sha256:abc: HTTP 403")), FakeDestinations(), publisher
    )

    with pytest.raises(CopyFailedError):
        replicator.replicate(ecr_job(rules), deadline=None, final_attempt=False)
    assert publisher.published == []
    with pytest.raises(CopyFailedError):
        replicator.replicate(ecr_job(rules), deadline=None, final_attempt=True)
    ((detail_type, detail),) = publisher.published
    assert detail_type == IMAGE_REPLICATION_FAILED and detail["reason"] == "blob sha256:abc: HTTP 403"


def test_a_paused_copy_is_no_failure() -> None:
    rules = parse_rules(PUSH_RULES)
    publisher = FakePublisher()
    replicator = Replicator(rules, FakeCopier(error=CopyPausedError("deadline")), FakeDestinations(), publisher)
    with pytest.raises(CopyPausedError):
        replicator.replicate(ecr_job(rules), deadline=0.0, final_attempt=True)
    assert publisher.published == []


def test_a_protected_tag_elsewhere_at_the_destination_is_a_reported_conflict_not_a_retry() -> None:
    rules = parse_rules(PUSH_RULES)
    publisher = FakePublisher()
    copier = FakeCopier(outcome=CopyOutcome(digest=DIGEST, blobs_skipped=3, tag_conflicts=["v1.2.3"]))
    replicator = Replicator(rules, copier, FakeDestinations(), publisher)

    outcome = replicator.replicate(ecr_job(rules), deadline=None, final_attempt=False)

    assert outcome.result is ReplicationResult.CONFLICT
    assert copier.protected_seen == [True]  # the destination's guard rule protects release tags
    ((detail_type, detail),) = publisher.published
    assert detail_type == IMAGE_REPLICATION_FAILED
    assert detail["conflicts"] == ["v1.2.3"] and detail["tags"] == []
    assert "left as they are" in detail["reason"]


def test_a_mutable_tag_is_not_protected_at_the_destination() -> None:
    rules = parse_rules(PUSH_RULES)
    copier = FakeCopier()
    Replicator(rules, copier, FakeDestinations(), FakePublisher()).replicate(
        ecr_job(rules, "latest"), deadline=None, final_attempt=False
    )
    assert copier.protected_seen == [False]


def test_a_copy_under_another_digest_is_a_failure() -> None:
    rules = parse_rules(PUSH_RULES)
    replicator = Replicator(
        rules, FakeCopier(outcome=CopyOutcome(digest=OTHER_DIGEST)), FakeDestinations(), FakePublisher()
    )
    with pytest.raises(CopyFailedError, match="not the source's"):
        replicator.replicate(ecr_job(rules), deadline=None, final_attempt=False)


def test_the_failure_event_never_names_registry_credentials() -> None:
    rules = parse_rules(PUSH_RULES)
    job = next(
        job
        for job in plan(push("v1.2.3"), rules, Acceptance()).jobs
        if isinstance(job.destination, RegistryDestination)
    )
    publisher = FakePublisher()
    with pytest.raises(CopyFailedError):
        Replicator(rules, FakeCopier(error=CopyFailedError("x")), FakeDestinations(), publisher).replicate(
            job, deadline=None, final_attempt=True
        )
    assert "ghcr-push" not in json.dumps(publisher.published)


# -- adapters without the network --------------------------------------------------------------------------
def test_registry_credentials_parse_both_forms_and_errors_never_quote_the_secret() -> None:
    assert parse_registry_credentials("robot:s3cret").password == "s3cret"
    assert parse_registry_credentials('{"username": "robot", "password": "s3cret"}').username == "robot"
    with pytest.raises(ValueError, match="user:password") as refused:
        parse_registry_credentials("s3cret-without-user")
    assert "s3cret" not in str(refused.value)
    assert "s3cret" not in repr(parse_registry_credentials("robot:s3cret"))


def stubbed_sqs() -> AwsClients:
    """AwsClients serving one SQS client with fixed credentials (no credential lookup on the network)."""
    client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    clients = AwsClients()
    clients._clients[("sqs", "us-east-1")] = client
    return clients


def test_the_queue_sends_ten_per_call_and_retries_failed_entries() -> None:
    jobs = [ecr_job(parse_rules(PUSH_RULES), f"v1.{minor}.0") for minor in range(12)]
    clients = stubbed_sqs()
    stubber = Stubber(clients.client("sqs", "us-east-1"))
    first, second = [job.job_id for job in jobs[:10]], [job.job_id for job in jobs[10:]]
    stubber.add_response(
        "send_message_batch",
        {
            "Successful": [{"Id": i, "MessageId": "m", "MD5OfMessageBody": "x"} for i in first[1:]],
            "Failed": [{"Id": first[0], "SenderFault": False, "Code": "InternalError"}],
        },
    )
    stubber.add_response(
        "send_message_batch",
        {"Successful": [{"Id": first[0], "MessageId": "m", "MD5OfMessageBody": "x"}], "Failed": []},
    )
    stubber.add_response(
        "send_message_batch",
        {"Successful": [{"Id": i, "MessageId": "m", "MD5OfMessageBody": "x"} for i in second], "Failed": []},
    )
    sink = CollectingSink()
    with stubber:
        sent = JobQueue(clients, "https://sqs/queue", "us-east-1", sink, sleep=lambda _: None).send(jobs)
    assert sent == 12
    assert sink.kinds().count("replication_job_queued") == 12


def test_the_queue_raises_when_sqs_refuses_a_job() -> None:
    job = ecr_job(parse_rules(PUSH_RULES))
    clients = stubbed_sqs()
    stubber = Stubber(clients.client("sqs", "us-east-1"))
    stubber.add_response(
        "send_message_batch",
        {"Successful": [], "Failed": [{"Id": job.job_id, "SenderFault": True, "Code": "InvalidMessageContents"}]},
    )
    with stubber, pytest.raises(QueueSendError, match="InvalidMessageContents"):
        JobQueue(clients, "https://sqs/queue", "us-east-1", CollectingSink(), sleep=lambda _: None).send([job])


def test_a_dry_run_reports_the_jobs_it_would_queue_and_sends_none() -> None:
    jobs = [ecr_job(parse_rules(PUSH_RULES))]
    clients = stubbed_sqs()
    sink = CollectingSink()
    # No response is stubbed: any call to SQS would fail the test.
    with Stubber(clients.client("sqs", "us-east-1")) as stubber:
        sent = JobQueue(clients, "https://sqs/queue", "us-east-1", sink, dry_run=True).send(jobs * 2)
        stubber.assert_no_pending_responses()
    assert sent == 1
    assert sink.kinds() == ["replication_job_skipped"]
    assert sink.effects[0].fields["dry_run"] is True


# -- settings ----------------------------------------------------------------------------------------------
def test_endpoint_overrides_are_json_of_hosts_to_urls() -> None:
    settings = settings_from_environment(
        {
            "AWS_REGION": "us-east-1",
            "REGISTRY_ENDPOINT_OVERRIDES": '{"123456789012.dkr.ecr.us-east-1.amazonaws.com": "http://127.0.0.1:5000"}',
            "REGISTRY_INSECURE": "true",
        }
    )
    assert settings.registry_endpoint_overrides == {
        "123456789012.dkr.ecr.us-east-1.amazonaws.com": "http://127.0.0.1:5000"
    }
    assert settings.registry_insecure
    with pytest.raises(ConfigurationError, match="REGISTRY_ENDPOINT_OVERRIDES"):
        settings_from_environment({"AWS_REGION": "us-east-1", "REGISTRY_ENDPOINT_OVERRIDES": '{"h": "ftp://x"}'})


def test_the_sample_sqs_event_carries_the_job_the_planner_makes_for_the_sample_push() -> None:
    record = load_event("sqs/replication-job.json")["Records"][0]
    job = ReplicationJob.model_validate_json(record["body"])
    rules = parse_rules(
        '[[replicate]]\nrepositories = ["team/*"]\n'
        '[[replicate.targets]]\nregion = "us-west-2"\nrepository = "mirror/{repository}"\n'
    )
    (planned,) = plan(push("v1.2.3", event_id=job.planned_by), rules, Acceptance()).jobs
    assert planned == job
    assert record["messageAttributes"]["job_id"]["stringValue"] == job.job_id


# -- a multi-arch image passes the scan gate once every platform's scan is clean -------------------------
def test_a_multi_arch_image_is_replicated_once_every_platform_scan_is_clean() -> None:
    from ecr_automation.logic.replicate import PlatformScans  # noqa: PLC0415
    from ecr_automation.models.domain import RepositoryRef  # noqa: PLC0415
    from ecr_automation.models.events.base import SeverityCounts  # noqa: PLC0415
    from tests.support.fakes import FakeLedger, FakeRegistry  # noqa: PLC0415

    # Given an index (tagged v1.2.3) naming two platforms, as retag recorded it when the index was pushed
    repository = RepositoryRef("123456789012", "us-east-1", "team/web")
    registry, ledger = FakeRegistry(), FakeLedger()
    amd64, arm64 = registry.add_image(repository, "amd64"), registry.add_image(repository, "arm64")
    index = registry.add_index(repository, [(amd64, "amd64"), (arm64, "arm64")], "v1.2.3")
    ledger.record_children(repository, index, [amd64, arm64])
    platforms = PlatformScans(registry, ledger)

    def platform_scan(digest: str, counts: dict[str, int]) -> ImageScanEvent:
        event = basic_scan(counts, tags=[])
        return event.model_copy(update={"detail": event.detail.model_copy(update={"image_digest": digest})})

    # When the first platform's clean scan arrives, the other not scanned yet: nothing, and why
    waiting = plan(platform_scan(amd64, {}), parse_rules(SCAN_RULES), Acceptance(), platforms)
    assert waiting.jobs == [] and "waiting for the scan of platform" in waiting.notes[0]

    # When the other platform's scan is dirty: nothing, and why
    registry.scans[amd64] = SeverityCounts()
    dirty = plan(platform_scan(arm64, {"HIGH": 2}), parse_rules(SCAN_RULES), Acceptance(), platforms)
    assert dirty.jobs == [] and "2 finding(s) at HIGH or above" in dirty.notes[0]

    # When it is clean: the index is replicated under its tag, by its own digest
    clean = plan(platform_scan(arm64, {"LOW": 1}), parse_rules(SCAN_RULES), Acceptance(), platforms)
    assert [(job.source.digest, job.source.tag) for job in clean.jobs] == [(index, "v1.2.3")]
