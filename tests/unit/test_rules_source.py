"""Rules without a deploy: a new valid version is followed, an invalid one refused once, a dead store not hammered."""

from __future__ import annotations

import inspect
import io
import json
import re
from functools import cached_property
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.adapters.rules_source import (
    AppConfigRulesStore,
    FileRules,
    RemoteRules,
    RulesUnavailableError,
    SsmRulesStore,
    document_version,
    rules_source_for,
)
from ecr_automation.cli import main
from ecr_automation.config import BUNDLED_RULES_FILE, ConfigurationError, settings_from_environment
from ecr_automation.dependencies import RULE_DEPENDENT, Dependencies, use_dependencies
from ecr_automation.handlers import replicate_worker
from ecr_automation.local.runner import LambdaContext
from ecr_automation.logic.replicate import EcrDestination, ImageSource, ReplicationJob, job_id_of
from ecr_automation.rules import Rules
from tests.support.powertools_clock import PowertoolsClock

REGION, REPOSITORY = "us-east-1", "team/web"
# Version 1 protects release-* tags; version 2 protects hotfix-* tags instead; the invalid one names no action.
PROTECTS_RELEASE = "[[guard]]\nprotect_releases = false\nprotected = ['^release-']\n"
PROTECTS_HOTFIX = "[[guard]]\nprotect_releases = false\nprotected = ['^hotfix-']\n"
INVALID = "[[guard]]\nprotected = ['^release-']\non_violation = 'explode'\n"


def protects(rules: Rules | None, tag: str) -> bool:
    """The tag guard's decision for ``tag`` under ``rules``."""
    assert rules is not None
    rule = rules.guard_for(REPOSITORY)
    return rule is not None and rule.is_protected(tag)


class FakeStore:
    """A store serving whatever document was last published, or failing."""

    origin = "fake store"

    def __init__(self, document: str | Exception) -> None:
        self.document = document
        self.fetches = 0

    def fetch(self) -> str:
        self.fetches += 1
        if isinstance(self.document, Exception):
            raise self.document
        return self.document


class BytesStore:
    """A store answering bytes, as AppConfig does."""

    origin = "fake store"

    def __init__(self, document: bytes) -> None:
        self.document = document

    def fetch(self) -> bytes:
        return self.document


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the fallback logic ----------------------------------------------------------------------------------


def test_valid_then_invalid_then_valid_versions() -> None:
    # Given rules protecting release-* tags
    store = FakeStore(PROTECTS_RELEASE)
    source = RemoteRules(store, retry_seconds=60, clock=Clock())
    first = source.refresh()
    assert protects(first.rules, "release-1") and not first.changed and first.rejected is None

    # When an invalid version is published, Then it is refused once and the decisions stay
    store.document = INVALID
    refused, again = source.refresh(), source.refresh()
    assert refused.rejected is not None and "guard.0.on_violation" in refused.rejected
    assert document_version(INVALID) in refused.rejected  # the log names the version check-config prints
    assert refused.rules is first.rules and protects(refused.rules, "release-1")
    assert again.rejected is None and again.rules is first.rules

    # When a valid version follows, Then it replaces the rules and the decisions change
    store.document = PROTECTS_HOTFIX
    followed = source.refresh()
    assert followed.changed and followed.version == document_version(PROTECTS_HOTFIX)
    assert not protects(followed.rules, "release-1") and protects(followed.rules, "hotfix-1")

    # And the invalid version published again, after a valid one, is a new refusal: reported again
    store.document = INVALID
    assert source.refresh().rejected is not None


def test_a_cold_start_on_an_invalid_version_has_no_rules_until_a_valid_one() -> None:
    store = FakeStore(INVALID)
    source = RemoteRules(store, retry_seconds=60, clock=Clock())

    first, second = source.refresh(), source.refresh()

    assert first.rules is None and first.rejected is not None
    assert second.rejected is None  # reported once
    with pytest.raises(ConfigurationError, match=r"no valid rules to act on: fake store \(version \w+\): guard.0"):
        second.require()
    store.document = PROTECTS_RELEASE
    loaded = source.refresh()
    assert protects(loaded.require(), "release-1") and not loaded.changed


def test_an_unreadable_store_is_asked_again_only_after_the_cache_time() -> None:
    # Given a cold start whose store cannot be read
    store, clock = FakeStore(RulesUnavailableError("fake store: AccessDenied")), Clock()
    source = RemoteRules(store, retry_seconds=60, clock=clock)
    first = source.refresh()
    assert first.rules is None and first.unavailable == "fake store: AccessDenied"
    with pytest.raises(ConfigurationError, match="AccessDenied"):
        first.require()

    # When invocations follow within the cache time, Then the store is not asked and nothing is reported again
    clock.now += 59
    quiet = source.refresh()
    assert store.fetches == 1 and quiet.unavailable is None and quiet.rules is None

    # When the cache time has passed and the store answers, Then its rules are used
    store.document = PROTECTS_RELEASE
    clock.now += 1
    assert protects(source.refresh().rules, "release-1") and store.fetches == 2


def test_a_warm_function_keeps_its_rules_through_an_outage_reported_once() -> None:
    store, clock = FakeStore(PROTECTS_RELEASE), Clock()
    source = RemoteRules(store, retry_seconds=30, clock=clock)
    rules = source.refresh().rules

    store.document = RulesUnavailableError("fake store: throttled")
    outage = source.refresh()
    clock.now += 31
    still = source.refresh()

    assert outage.rules is rules and outage.unavailable == "fake store: throttled"
    assert still.rules is rules and still.unavailable is None and store.fetches == 3
    store.document = PROTECTS_HOTFIX
    clock.now += 31
    assert source.refresh().changed


def test_the_bundled_file_is_the_default_source() -> None:
    settings = settings_from_environment({"AWS_REGION": REGION})
    source = rules_source_for(settings, AwsClients())
    assert isinstance(source, FileRules)
    refresh = source.refresh()
    assert refresh.rules is source.refresh().rules and protects(refresh.rules, "v1.2.3")
    assert refresh.origin == str(BUNDLED_RULES_FILE)


# -- the dependencies follow the rules ---------------------------------------------------------------------


@pytest.fixture
def dependencies() -> Dependencies:
    settings = settings_from_environment({"AWS_REGION": REGION, "TAG_LEDGER_TABLE": "ledger"})
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    return Dependencies(settings, clients=AwsClients(session))


def test_rule_dependent_objects_are_rebuilt_only_when_the_rules_change(dependencies: Dependencies) -> None:
    store = FakeStore(PROTECTS_RELEASE)
    dependencies.__dict__["rules_source"] = RemoteRules(store, retry_seconds=60, clock=Clock())
    dependencies.refresh_rules()
    guard, retagger, registry, ledger = (
        dependencies.tag_guard,
        dependencies.retagger,
        dependencies.registry,
        dependencies.ledger,
    )

    dependencies.refresh_rules()  # the same rules
    assert dependencies.tag_guard is guard and dependencies.retagger is retagger

    store.document = PROTECTS_HOTFIX
    dependencies.refresh_rules()
    assert protects(dependencies.rules, "hotfix-1")
    assert dependencies.tag_guard is not guard and dependencies.retagger is not retagger
    # The adapters (and their clients) are kept
    assert dependencies.registry is registry and dependencies.ledger is ledger
    assert dependencies.tag_guard._rules is dependencies.rules  # the guard decides with them


def test_an_override_survives_the_first_refresh(dependencies: Dependencies) -> None:
    # The local runner replaces the message sinks before the first invocation; the first refresh keeps them.
    sinks: list[Any] = []
    dependencies.message_sinks = sinks
    dependencies.refresh_rules()
    assert dependencies.message_sinks is sinks


def test_every_property_built_on_the_rules_is_rebuilt_when_they_change() -> None:
    # Derived from the code: a cached property reading self.rules, or one of those that do, is rule-dependent.
    properties = {
        name: inspect.getsource(value.func)
        for name, value in vars(Dependencies).items()
        if isinstance(value, cached_property) and name not in {"rules", "rules_source"}
    }
    dependent = set(RULE_DEPENDENT)
    reads = re.compile(r"self\.(\w+)\b")
    changed = True
    while changed:
        found = {name for name, source in properties.items() if {"rules", *dependent} & set(reads.findall(source))}
        changed = not found <= dependent
        dependent |= found
    assert dependent == set(RULE_DEPENDENT)
    assert set(RULE_DEPENDENT) <= set(properties)


# -- settings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"RULES_SOURCE": "ssm"}, "RULES_SOURCE=ssm needs RULES_SSM_PARAMETER"),
        (
            {"RULES_SOURCE": "appconfig", "RULES_APPCONFIG_APPLICATION": "abc1234", "RULES_APPCONFIG_PROFILE": ""},
            "needs RULES_APPCONFIG_ENVIRONMENT and RULES_APPCONFIG_PROFILE",
        ),
        (
            {
                "RULES_SOURCE": "appconfig",
                "RULES_APPCONFIG_APPLICATION": "a",
                "RULES_APPCONFIG_ENVIRONMENT": "e",
                "RULES_APPCONFIG_PROFILE": "p",
                "RULES_CACHE_SECONDS": "5",
            },
            "RULES_CACHE_SECONDS must be at least 15 with AppConfig",
        ),
        ({"RULES_SOURCE": "consul"}, "environment variable RULES_SOURCE: Input should be"),
        ({"RULES_CACHE_SECONDS": "-1"}, "environment variable RULES_CACHE_SECONDS"),
    ],
)
def test_a_rules_store_must_be_named_completely(environment: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        settings_from_environment({"AWS_REGION": REGION, **environment})


def test_the_template_renders_the_stores_not_chosen_as_empty() -> None:
    settings = settings_from_environment(
        {"AWS_REGION": REGION, "RULES_SOURCE": "ssm", "RULES_SSM_PARAMETER": "/r", "RULES_APPCONFIG_PROFILE": ""}
    )
    assert settings.rules_ssm_parameter == "/r" and settings.rules_appconfig_profile is None
    assert settings.rules_cache_seconds == 60


# -- the stores, through Powertools Parameters ---------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.mark.usefixtures("aws")
def test_ssm_is_read_once_per_cache_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = PowertoolsClock(monkeypatch)
    clients = AwsClients()
    ssm = clients.client("ssm", REGION)
    ssm.put_parameter(Name="/ecr-automation/rules", Value=PROTECTS_RELEASE, Type="String")
    calls: list[str] = []
    ssm.meta.events.register("before-call.ssm.GetParameter", lambda **_: calls.append("GetParameter"))
    source = RemoteRules(SsmRulesStore(clients, REGION, "/ecr-automation/rules", max_age=60), retry_seconds=60)

    first = source.refresh()
    ssm.put_parameter(Name="/ecr-automation/rules", Value=PROTECTS_HOTFIX, Type="String", Overwrite=True)
    clock.advance(59)
    cached = source.refresh()
    clock.advance(2)
    followed = source.refresh()

    assert protects(first.rules, "release-1") and cached.rules is first.rules and len(calls) == 2
    assert followed.changed and protects(followed.rules, "hotfix-1")


@pytest.mark.usefixtures("aws")
def test_a_missing_ssm_parameter_is_an_unreadable_store() -> None:
    source = RemoteRules(SsmRulesStore(AwsClients(), REGION, "/absent", max_age=60), retry_seconds=60)
    refresh = source.refresh()
    assert refresh.rules is None and refresh.unavailable is not None
    assert refresh.unavailable.startswith("SSM parameter /absent: ") and "ParameterNotFound" in refresh.unavailable


def _configuration(document: bytes, token: str) -> dict[str, Any]:
    return {
        "Configuration": StreamingBody(io.BytesIO(document), len(document)),
        "NextPollConfigurationToken": token,
        "NextPollIntervalInSeconds": 60,
        "ContentType": "application/toml",
    }


def test_appconfig_through_powertools_on_a_stubbed_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto 5.2.5 answers appconfigdata with "Not yet implemented": botocore's Stubber on the real client
    # checks each request against the service model instead.
    clock = PowertoolsClock(monkeypatch)
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    clients = AwsClients(session)
    stub = Stubber(clients.client("appconfigdata", REGION))
    session_request = {
        "ApplicationIdentifier": "app1234",
        "EnvironmentIdentifier": "env1234",
        "ConfigurationProfileIdentifier": "prf1234",
        "RequiredMinimumPollIntervalInSeconds": 60,
    }
    stub.add_response("start_configuration_session", {"InitialConfigurationToken": "t0"}, session_request)
    stub.add_response(
        "get_latest_configuration", _configuration(PROTECTS_RELEASE.encode(), "t1"), {"ConfigurationToken": "t0"}
    )
    # No change: AppConfig answers an empty body, and Powertools the document it kept
    stub.add_response("get_latest_configuration", _configuration(b"", "t2"), {"ConfigurationToken": "t1"})
    stub.add_response("get_latest_configuration", _configuration(INVALID.encode(), "t3"), {"ConfigurationToken": "t2"})
    stub.add_client_error(
        "get_latest_configuration", "BadRequestException", "token expired", expected_params={"ConfigurationToken": "t3"}
    )
    # After a failure a new session starts: an expired token would fail every poll
    stub.add_response("start_configuration_session", {"InitialConfigurationToken": "n0"}, session_request)
    stub.add_response(
        "get_latest_configuration", _configuration(PROTECTS_HOTFIX.encode(), "n1"), {"ConfigurationToken": "n0"}
    )
    store = AppConfigRulesStore(clients, REGION, "app1234", "env1234", "prf1234", max_age=60)
    poll = Clock()
    source = RemoteRules(store, retry_seconds=60, clock=poll)

    def later() -> Any:
        clock.advance(61)
        poll.now += 61
        return source.refresh()

    with stub:
        first = source.refresh()
        within = source.refresh()  # cached by Powertools: no call (the Stubber fails on an unexpected one)
        unchanged, refused, failed, followed = later(), later(), later(), later()
        stub.assert_no_pending_responses()

    assert protects(first.rules, "release-1") and within.rules is first.rules
    assert unchanged.rules is first.rules and not unchanged.changed and unchanged.rejected is None
    assert refused.rules is first.rules and refused.rejected is not None and "on_violation" in refused.rejected
    assert (
        failed.rules is first.rules and failed.unavailable is not None and "BadRequestException" in failed.unavailable
    )
    assert followed.changed and protects(followed.rules, "hotfix-1")
    assert store.origin == "AppConfig app1234/env1234/prf1234"


# -- check-config runs the functions' own check ------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        PROTECTS_RELEASE.encode(),
        INVALID.encode(),
        b"[[guard]\n",  # not TOML
        b"[[guard]]\nprotected = ['(?=x)']\n",  # RE2 refuses lookaround
        "[[notify]]\nroute = 'caf\u00e9'\n".encode("latin-1"),  # not UTF-8
        b"\xef\xbb\xbf[[guard]]\n",  # a byte order mark, which TOML does not allow
        b"[[guard]]\r\nprotected = ['^release-']\r\n",  # Windows line ends
    ],
)
def test_check_config_accepts_exactly_what_the_functions_accept(
    document: bytes, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(document)
    refresh = RemoteRules(BytesStore(document), retry_seconds=60, clock=Clock()).refresh()

    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()

    assert code == (0 if refresh.rules is not None else 1)
    if refresh.rules is not None:
        assert out.endswith(f"; version {document_version(document)}\n")
    else:
        # The same reason, naming the file instead of the store
        assert refresh.rejected is not None
        reason = refresh.rejected.split(": ", 1)[1]
        assert err == f"invalid: {path}: {reason}\n"


# -- the replication worker (SQS jobs, not events) follows the rules too -------------------------------------


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_the_replication_worker_copies_nothing_without_valid_rules(
    dependencies: Dependencies, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    source = ImageSource(
        account="123456789012", region=REGION, repository=REPOSITORY, digest="sha256:" + "a" * 64, tag="v1"
    )
    destination = EcrDestination(account="123456789012", region="eu-west-1", repository="mirror/team/web")
    job = ReplicationJob(job_id=job_id_of(source, destination), source=source, destination=destination)
    record = {
        "messageId": "m-1",
        "receiptHandle": "r-1",
        "body": job.model_dump_json(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:replication",
        "awsRegion": REGION,
    }
    dependencies.__dict__["rules_source"] = RemoteRules(FakeStore(INVALID), retry_seconds=60, clock=Clock())
    replicate_worker.metrics.clear_metrics()
    use_dependencies(dependencies)
    try:
        for _ in range(2):  # SQS delivers the job again
            with pytest.raises(BatchProcessingError):
                replicate_worker.lambda_handler(
                    {"Records": [record]},
                    LambdaContext("ReplicationWorkerFunction", timeout_seconds=300),
                )
    finally:
        use_dependencies(None)

    assert "replicator" not in dependencies.__dict__  # nothing was built to copy with
    refusals = [record for record in caplog.records if record.getMessage().startswith("rules version refused")]
    assert len(refusals) == 1 and "guard.0.on_violation" in refusals[0].reason  # type: ignore[attr-defined]
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert sum(sum(metric.get("RulesRejected", [])) for metric in emitted) == 1
