"""Code paths whose permissions tests/integration/test_permissions.py found granted and never exercised.

Each test here proves through the handler, against moto, that a grant of template.yaml is needed.
"""

from __future__ import annotations

from typing import Any

import pytest

from ecr_automation.adapters.slack import SlackDeliveryError
from tests.integration.conftest import _registry
from tests.integration.test_notify_moto import (
    NotifyStack,
    basic_finding,
    basic_scan_event,
    counts_of,
    install,
    stack,
)
from tests.integration.test_replication import (
    MIRROR_REGION,
    Stack,
    assert_identical,
    make_stack,
    other_account_registry,
)
from tests.support import builders
from tests.support.moto_server import MotoServer

__all__ = ["make_stack", "other_account_registry", "stack"]  # the fixtures, imported for pytest


def idempotency_records(stack: NotifyStack) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.aws.client("dynamodb").scan(TableName="idempotency", ConsistentRead=True)[
        "Items"
    ]
    return items


def test_a_failed_notification_clears_its_idempotency_record_so_the_retry_posts(
    stack: NotifyStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NotifyFunction's Idempotency statement, dynamodb:DeleteItem: Powertools deletes the in-progress record of
    an invocation that raised, or Lambda's retry would be refused as already in progress."""
    builders.create_table_like(stack.aws.client("dynamodb"), "IdempotencyTable", "idempotency")
    install(
        {
            **stack.aws.env(),
            "TAG_LEDGER_TABLE": "ledger",
            "SLACK_WEBHOOK_SECRET_ARN": stack.secret_arn,
            "IDEMPOTENCY_TABLE": "idempotency",
        },
        monkeypatch,
        stack.effects,
    )
    digest = stack.push("release")
    findings = [basic_finding("CVE-2024-0002", "CRITICAL")]
    stack.scanned(digest, basic=findings)
    event = basic_scan_event(digest, counts_of(findings), event_id="scan-idempotent-retry")
    stack.slack.fail_next(500, times=3)  # the first attempt and both retries

    with pytest.raises(SlackDeliveryError):
        stack.invoke(event)
    assert idempotency_records(stack) == []  # cleared: the retry may run

    assert stack.invoke(event)["result"] == "posted"
    assert [record["status"]["S"] for record in idempotency_records(stack)] == ["COMPLETED"]
    assert stack.invoke(event)["result"] == "posted"  # answered from the record: the same result, no second post
    assert len(stack.posts()) == 1


def test_a_created_destination_repository_gets_the_source_repositorys_tags(make_stack: Any) -> None:
    """ReplicationWorkerFunction: ecr:ListTagsForResource on the source repository, and ecr:TagResource on the
    destination it creates (CreateRepository with tags needs it), for create_repository.copy_resource_tags."""
    stack: Stack = make_stack(
        '[[replicate]]\nrepositories = ["team/*"]\n'
        f'[[replicate.targets]]\nregion = "{MIRROR_REGION}"\nrepository = "mirror/{{repository}}"\n'
        "create_repository = { scan_on_push = false, copy_resource_tags = true }\n"
    )
    tags = [{"Key": "team", "Value": "payments"}, {"Key": "cost-centre", "Value": "42"}]
    stack.aws.client("ecr").create_repository(repositoryName=stack.repository, tags=tags)
    digest = stack.push("v3.1.0")

    stack.pushed("v3.1.0", digest)
    assert stack.replicate_all()["batchItemFailures"] == []

    mirror = stack.aws.client("ecr", MIRROR_REGION)
    (created,) = mirror.describe_repositories(repositoryNames=[f"mirror/{stack.repository}"])["repositories"]
    copied = mirror.list_tags_for_resource(resourceArn=created["repositoryArn"])["tags"]
    assert sorted((tag["Key"], tag["Value"]) for tag in copied) == sorted((tag["Key"], tag["Value"]) for tag in tags)


def test_a_registry_target_is_pushed_to_with_the_credentials_its_secret_holds(make_stack: Any, aws: MotoServer) -> None:
    """ReplicationWorkerFunction's RegistryCredentialSecrets: secretsmanager:GetSecretValue on the secret a
    registry target names (credentials_secret), and no ECR token for that registry."""
    registry = _registry("pusher", "s3cret-for-tests")
    try:
        secret = aws.client("secretsmanager").create_secret(
            Name="ecr-automation/registry-push", SecretString='{"username": "pusher", "password": "s3cret-for-tests"}'
        )["ARN"]
        stack: Stack = make_stack(
            '[[replicate]]\nrepositories = ["team/*"]\n'
            f'[[replicate.targets]]\nregistry = "{registry.url}"\nrepository = "copy/{{repository}}"\n'
            f'credentials_secret = "{secret}"\n'
        )
        digest = stack.push("v4.0.0")

        stack.pushed("v4.0.0", digest)
        assert stack.replicate_all()["batchItemFailures"] == []

        assert (
            assert_identical(stack.source, stack.repository, registry, f"copy/{stack.repository}", "v4.0.0") == digest
        )
    finally:
        registry.stop()
