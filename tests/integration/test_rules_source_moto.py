"""Rules without a deploy, end to end: every function's Lambda handler reads its rules from SSM (the moto
server) or AppConfig, follows a new version, refuses an invalid one with one log line and one metric, and
keeps deciding with the last valid rules.

moto 5.2.5 does not implement AppConfig's data plane (StartConfigurationSession answers "Not yet implemented"):
here AppConfig is tests/support/appconfig_data.py, a stand-in speaking its wire protocol on loopback, so boto3
and Powertools run their whole stack; the unit tier also checks the exact requests with botocore's Stubber.
"""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.response import StreamingBody
from moto.events.models import EventPattern

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.adapters.rules_source import AppConfigRulesStore, RemoteRules
from ecr_automation.config import ConfigurationError, settings_from_environment
from ecr_automation.dependencies import Dependencies, get_dependencies, use_dependencies
from ecr_automation.handlers import tag_guard
from ecr_automation.local.runner import LambdaContext
from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate
from ecr_automation.models.effects import CollectingSink
from tests.conftest import EVENTS, ROOT
from tests.support import builders
from tests.support.appconfig_data import AppConfigData
from tests.support.guard_stack import GuardStack, guard_stack
from tests.support.moto_server import MotoServer
from tests.support.powertools_clock import PowertoolsClock

PARAMETER = "/ecr-automation/rules"
PROTECTS_RELEASE = "[[guard]]\nprotect_releases = false\nprotected = ['^release-']\n"
PROTECTS_HOTFIX = "[[guard]]\nprotect_releases = false\nprotected = ['^hotfix-']\n"
INVALID = "[[guard]]\nprotected = ['^release-']\non_violation = 'explode'\n"
REFUSED = "rules version refused"
TEMPLATE = ROOT / "template.yaml"


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The reasons of the refusals logged, one per log record."""
    return [str(record.reason) for record in caplog.records if record.getMessage().startswith(REFUSED)]  # type: ignore[attr-defined]


def counted(capsys: pytest.CaptureFixture[str], metric: str) -> float:
    """The sum of ``metric`` over the EMF records the handler printed since the last call."""
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return sum(sum(record.get(metric, [])) for record in records if "_aws" in record)


class Pushes:
    def __init__(self, stack: GuardStack) -> None:
        self.stack, self.count, self.digest = stack, 0, ""

    def __call__(self, tag: str) -> dict[str, Any]:
        """Push a new image under ``tag`` and hand the push event to the tag guard."""
        self.count += 1
        self.digest = self.stack.push(f"image-{self.count}", tag)
        return self.stack.invoke(builders.image_action("PUSH", tag, self.digest, event_id=f"e-{self.count}"))


@pytest.fixture
def ssm_stack(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[GuardStack]:
    monkeypatch.setenv("RULES_SOURCE", "ssm")
    monkeypatch.setenv("RULES_SSM_PARAMETER", PARAMETER)
    monkeypatch.setenv("RULES_CACHE_SECONDS", "60")
    tag_guard.metrics.clear_metrics()
    with guard_stack(aws, monkeypatch) as stack:
        yield stack


def test_the_guard_follows_the_ssm_parameter_and_refuses_an_invalid_version(
    ssm_stack: GuardStack,
    aws: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, ssm, push = PowertoolsClock(monkeypatch), aws.client("ssm"), Pushes(ssm_stack)

    def publish(document: str) -> None:
        ssm.put_parameter(Name=PARAMETER, Value=document, Type="String", Overwrite=True)
        clock.advance(61)  # the cache time passes

    # Given rules protecting release-* tags: a first push claims, a second one is reverted
    publish(PROTECTS_RELEASE)
    assert push("release-1")["result"] == "claimed"
    first = push.digest
    assert push("release-1")["result"] == "reverted" and ssm_stack.tag("release-1") == first

    # When a version protecting hotfix-* instead is published, Then release-1 may move and hotfix-1 is claimed
    publish(PROTECTS_HOTFIX)
    assert push("release-1")["result"] == "not_protected" and ssm_stack.tag("release-1") == push.digest
    assert push("hotfix-1")["result"] == "claimed"
    capsys.readouterr()

    # When an invalid version is published, Then the decisions stay those of the last valid version,
    # with one error logged and one RulesRejected counted however many invocations follow
    publish(INVALID)
    assert push("release-1")["result"] == "not_protected"
    clock.advance(61)
    assert push("hotfix-1")["result"] == "reverted"
    assert counted(capsys, "RulesRejected") == 1
    (reason,) = refusals(caplog)
    assert reason.startswith(f"SSM parameter {PARAMETER} (version ") and "guard.0.on_violation" in reason

    # When a valid version is published again, Then it is followed
    publish(PROTECTS_RELEASE)
    assert push("release-1")["result"] == "reverted"  # protected again: the first claim holds
    assert ssm_stack.tag("release-1") == first

    # When the parameter disappears, Then the last valid rules still decide, and that is reported once
    ssm.delete_parameter(Name=PARAMETER)
    clock.advance(61)
    assert push("release-1")["result"] == "reverted"
    assert push("release-1")["result"] == "reverted"
    assert counted(capsys, "RulesUnavailable") == 1 and counted(capsys, "RulesRejected") == 0
    assert len(refusals(caplog)) == 1


@pytest.mark.filterwarnings("ignore:No application metrics")  # the second failed invocation counts nothing
def test_a_cold_start_on_an_invalid_version_fails_the_event(
    ssm_stack: GuardStack, aws: MotoServer, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    aws.client("ssm").put_parameter(Name=PARAMETER, Value=INVALID, Type="String")
    push = Pushes(ssm_stack)
    capsys.readouterr()

    for _ in range(2):
        with pytest.raises(ConfigurationError, match="no valid rules to act on: SSM parameter"):
            push("release-1")

    # Nothing was decided: no claim, no tag written; the event goes to Lambda's retries, then the DLQ
    assert ssm_stack.claim("release-1") is None
    assert len(refusals(caplog)) == 1 and counted(capsys, "RulesRejected") == 1


def _configuration(document: bytes, token: str) -> dict[str, Any]:
    return {
        "Configuration": StreamingBody(io.BytesIO(document), len(document)),
        "NextPollConfigurationToken": token,
        "NextPollIntervalInSeconds": 60,
        "ContentType": "application/toml",
    }


@pytest.fixture
def appconfig(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppConfigData]:
    data = AppConfigData()
    monkeypatch.setenv("AWS_ENDPOINT_URL_APPCONFIGDATA", data.endpoint_url)
    for name, value in {
        "RULES_APPCONFIG_APPLICATION": "app1234",
        "RULES_APPCONFIG_ENVIRONMENT": "env1234",
        "RULES_APPCONFIG_PROFILE": "prf1234",
        "RULES_CACHE_SECONDS": "60",
    }.items():
        monkeypatch.setenv(name, value)
    yield data
    data.stop()


class Clocks:
    """Powertools' cache clock and the rules source's retry clock, moved forward together."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.powertools, self.now = PowertoolsClock(monkeypatch), 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.powertools.advance(seconds)
        self.now += seconds


def test_the_guard_follows_an_appconfig_profile(
    aws: MotoServer,
    appconfig: AppConfigData,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("RULES_SOURCE", "appconfig")
    tag_guard.metrics.clear_metrics()
    clocks = Clocks(monkeypatch)

    def deploy(document: str) -> None:
        appconfig.deploy("app1234", "env1234", "prf1234", document.encode())
        clocks.advance(61)  # the cache time passes

    deploy(PROTECTS_RELEASE)
    with guard_stack(aws, monkeypatch) as stack:
        # What rules_source_for builds, with the retry clock the test moves
        dependencies = get_dependencies()
        store = AppConfigRulesStore(dependencies.clients, "us-east-1", "app1234", "env1234", "prf1234", max_age=60)
        dependencies.__dict__["rules_source"] = RemoteRules(store, retry_seconds=60, clock=clocks)
        push = Pushes(stack)
        assert push("release-1")["result"] == "claimed"
        first = push.digest
        clocks.advance(61)  # AppConfig answers "no change" (an empty body): the rules stay
        assert push("release-1")["result"] == "reverted"
        deploy(PROTECTS_HOTFIX)
        assert push("release-1")["result"] == "not_protected"
        capsys.readouterr()
        deploy(INVALID)
        assert push("release-1")["result"] == "not_protected"  # the invalid version changed nothing
        assert push("hotfix-1")["result"] == "claimed"
        assert len(refusals(caplog)) == 1 and counted(capsys, "RulesRejected") == 1

        # The session's token expires (24 hours): that poll fails and the last valid rules still decide ...
        appconfig.expire_tokens()
        deploy(PROTECTS_RELEASE)
        assert push("hotfix-1")["result"] == "reverted"
        assert counted(capsys, "RulesUnavailable") == 1
        # ... and once the cache time has passed a new session reads the version deployed meanwhile
        clocks.advance(61)
        assert push("release-1")["result"] == "reverted" and stack.tag("release-1") == first
    assert appconfig.requests.count("StartConfigurationSession") == 2


# -- every function reads its rules from the store, and acts on none that are invalid ----------------------

NOT_SAMPLES = {"scenarios", "findings", "malformed", "unknown", "sqs"}


def candidate_events(template: SamTemplate, function: str) -> list[dict[str, Any]]:
    """Sample events the template routes to ``function``: matched by its EventBridge rules, or SQS batches."""
    properties = template.resources_of_type(FUNCTION_TYPE)[function]
    if any(event["Type"] == "SQS" for event in properties.get("Events", {}).values()):
        return [json.loads(path.read_text()) for path in sorted((EVENTS / "sqs").glob("*.json"))]
    patterns = [EventPattern.load(json.dumps(rule.pattern)) for rule in template.function(function).rules]
    samples = [
        json.loads(path.read_text())
        for path in sorted(EVENTS.rglob("*.json"))
        if not NOT_SAMPLES & set(path.relative_to(EVENTS).parts)
    ]
    return [sample for sample in samples if any(pattern.matches_event(sample) for pattern in patterns)]


@pytest.mark.filterwarnings("ignore:No application metrics")
@pytest.mark.parametrize("source", ["ssm", "appconfig"])
def test_every_function_reads_the_store_and_acts_on_no_invalid_rules(
    source: str,
    aws: MotoServer,
    appconfig: AppConfigData,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    template = SamTemplate.load(TEMPLATE)
    # Each function as the template configures it: the variables only other functions get are unset.
    shared = set(template.body["Globals"]["Function"]["Environment"]["Variables"])
    for spec in template.functions().values():
        for name in set(spec.environment) - shared:
            monkeypatch.delenv(name, raising=False)
    for name, value in {
        **aws.env(),
        "RULES_SOURCE": source,
        "RULES_SSM_PARAMETER": PARAMETER,
    }.items():
        monkeypatch.setenv(name, value)
    aws.client("ssm").put_parameter(Name=PARAMETER, Value=INVALID, Type="String")
    appconfig.deploy("app1234", "env1234", "prf1234", INVALID.encode())

    refused: dict[str, int] = {}
    for function, spec in template.functions().items():
        module_name, handler_name = spec.handler.rsplit(".", 1)
        handler = getattr(importlib.import_module(module_name), handler_name)
        use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=CollectingSink()))
        before = len(refusals(caplog))
        try:
            for event in candidate_events(template, function):
                # A cold start on an invalid version: the event fails (Lambda retries it, then the DLQ)
                with pytest.raises((ConfigurationError, BatchProcessingError)):
                    handler(event, LambdaContext(function))
                if len(refusals(caplog)) > before:
                    break
        finally:
            use_dependencies(None)
        refused[function] = len(refusals(caplog)) - before

    assert refused == dict.fromkeys(template.functions(), 1)
