"""What a release costs in AWS calls, across the tag guard and retag together, counted with botocore's hooks.

The figure is written in docs/design.md ("Cost per release push"); this test keeps it true.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import retag, tag_guard
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.effects import CollectingSink
from tests.support import builders
from tests.support.moto_server import MotoServer

REPOSITORY, REGION = "team/web", "us-east-1"
BUDGET = 10


class CountingClients(AwsClients):
    """The functions' own clients, counting every AWS operation they call."""

    def __init__(self) -> None:
        super().__init__(session=boto3.Session())
        self.calls: Counter[str] = Counter()

    def client(self, service: str, region: str) -> Any:
        client = super().client(service, region)
        if not getattr(client, "_counted", False):
            client._counted = True
            client.meta.events.register("before-call.*.*", self._count)
        return client

    def _count(self, event_name: str, **_: Any) -> None:
        self.calls[event_name.split(".", 2)[-1]] += 1


@pytest.fixture
def clients(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingClients]:
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TAG_LEDGER_TABLE", "ledger")
    monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    monkeypatch.delenv("RULES_FILE", raising=False)  # the bundled rules
    aws.client("ecr").create_repository(repositoryName=REPOSITORY)
    builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", "ledger")
    counting = CountingClients()
    use_dependencies(Dependencies(settings_from_environment(), clients=counting, sink=CollectingSink()))
    yield counting
    use_dependencies(None)


def _release(aws: MotoServer, seed: str, tag: str) -> dict[str, Any]:
    body = builders.image_manifest(seed)
    digest = builders.digest_of(body)
    aws.client("ecr").put_image(
        repositoryName=REPOSITORY,
        imageManifest=body,
        imageManifestMediaType=builders.OCI_MANIFEST,
        imageDigest=digest,
        imageTag=tag,
    )
    event = builders.image_action("PUSH", tag, digest, event_id=f"push-{tag}")
    return {**event, "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}  # delivered promptly


@pytest.mark.parametrize("first", ["guard first", "retag first"])
def test_a_first_release_push_costs_at_most_ten_calls_for_both_functions(
    clients: CountingClients, aws: MotoServer, first: str
) -> None:
    event = _release(aws, "one", "v1.2.3")
    handlers = [tag_guard.lambda_handler, retag.lambda_handler]
    if first == "retag first":
        handlers.reverse()

    results = [handler(event, LambdaContext("budget")) for handler in handlers]  # type: ignore[arg-type]

    assert {result["status"] for result in results} == {"processed"}
    assert sum(clients.calls.values()) <= BUDGET, clients.calls
    assert clients.calls["PutImage"] == 4  # v1.2, v1, latest, sha-...: the writes themselves
    assert clients.calls["BatchGetImage"] == 1 and clients.calls["DescribeImages"] == 0


def test_a_second_release_in_a_warm_environment(clients: CountingClients, aws: MotoServer) -> None:
    first = _release(aws, "one", "v1.2.3")
    for handler in (tag_guard.lambda_handler, retag.lambda_handler):
        handler(first, LambdaContext("budget"))  # type: ignore[arg-type]
    clients.calls.clear()

    event = _release(aws, "two", "v1.3.0")
    for handler in (tag_guard.lambda_handler, retag.lambda_handler):
        handler(event, LambdaContext("budget"))  # type: ignore[arg-type]

    # The older release's tags are read once, for v1 and latest alike.
    assert clients.calls == {
        "UpdateItem": 2,  # the guard's claim, and retag's look at the same claim
        "PutItem": 1,  # the lease
        "DeleteItem": 1,  # the lease, released
        "BatchGetImage": 1,
        "DescribeImages": 1,
        "PutImage": 4,
    }
