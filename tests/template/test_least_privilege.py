"""What a reviewer checks in the template: scoped permissions, bounded retries, somewhere for failures to go."""

from __future__ import annotations

from typing import Any

import pytest

from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate
from tests.support.iam_grants import grants


def policies(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """Inline policies, a conditional one (``!If [cond, policy, !Ref AWS::NoValue]``) as its policy."""
    found = []
    for policy in properties.get("Policies", []):
        if isinstance(policy, dict) and "Fn::If" in policy:
            found.extend(branch for branch in policy["Fn::If"][1:] if isinstance(branch, dict) and "Ref" not in branch)
        elif isinstance(policy, dict):
            found.append(policy)
    return found


def statements(properties: dict[str, Any]) -> list[dict[str, Any]]:
    return [statement for policy in policies(properties) for statement in policy.get("Statement", [])]


def actions(statement: dict[str, Any]) -> list[str]:
    value = statement["Action"]
    return value if isinstance(value, list) else [value]


def functions(template: SamTemplate) -> dict[str, dict[str, Any]]:
    found = template.resources_of_type(FUNCTION_TYPE)
    assert found, "the template declares no function"
    return found


# IAM grants these on every resource or not at all; each is the only action of its statement.
ONLY_ON_EVERY_RESOURCE = {"ecr:GetAuthorizationToken"}


def test_no_wildcard_resources_or_actions(template: SamTemplate) -> None:
    """Every statement a function gets: inline, conditional, and those of the managed policies it references."""
    every = grants(template)
    for logical_id, properties in functions(template).items():
        assert statements(properties), f"{logical_id} has no inline policy"
        assert any(grant.function == logical_id for grant in every), logical_id
    for grant in every:
        where = f"{grant.function}/{grant.policy}/{grant.sid}"
        if grant.resource == "*" or (isinstance(grant.resource, list) and "*" in grant.resource):
            assert set(grant.actions) <= ONLY_ON_EVERY_RESOURCE, where
        assert not any(action.endswith(":*") or action == "*" for action in grant.actions), where


def test_dynamodb_access_is_limited_to_the_templates_tables(template: SamTemplate) -> None:
    tables = set(template.resources_of_type("AWS::DynamoDB::Table"))
    for logical_id, properties in functions(template).items():
        for statement in statements(properties):
            if any(action.startswith("dynamodb:") for action in actions(statement)):
                resource = statement["Resource"]
                assert isinstance(resource, dict) and "Fn::GetAtt" in resource, (logical_id, resource)
                assert resource["Fn::GetAtt"][0] in tables
                assert not {"dynamodb:Scan", "dynamodb:DeleteTable"} & set(actions(statement))


# Replication pushes to repositories the rules rename (mirror/{repository}): a parameter of their own,
# by default every repository of this account (other accounts decide through the roles they lend).
DESTINATION_SCOPE = {
    "Fn::If": [
        "HasReplicationDestinationScope",
        {"Ref": "ReplicationDestinationScope"},
        {"Fn::Sub": "arn:${AWS::Partition}:ecr:*:${AWS::AccountId}:repository/*"},
    ]
}
PUSH_ACTIONS = {"ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"}


def test_ecr_access_is_scoped_to_the_repository_parameter(template: SamTemplate) -> None:
    for logical_id, properties in functions(template).items():
        for statement in statements(properties):
            if not any(action.startswith("ecr:") for action in actions(statement)):
                continue
            if statement["Resource"] == "*":
                continue  # the registry login alone (test_no_wildcard_resources_or_actions)
            if statement["Resource"] == DESTINATION_SCOPE:
                assert logical_id == "ReplicationWorkerFunction", logical_id
                continue
            assert "${RepositoryScope}" in statement["Resource"]["Fn::Sub"], (logical_id, statement.get("Sid"))


def test_the_replication_worker_pulls_from_the_scope_and_pushes_only_to_destinations(template: SamTemplate) -> None:
    worker = functions(template)["ReplicationWorkerFunction"]
    by_sid = {statement["Sid"]: statement for statement in statements(worker)}
    pull, push = by_sid["PullFromSourceRepositories"], by_sid["PushToDestinationRepositories"]
    assert "${RepositoryScope}" in pull["Resource"]["Fn::Sub"]
    assert not PUSH_ACTIONS & set(actions(pull)) and "ecr:CreateRepository" not in actions(pull)
    assert set(actions(push)) >= PUSH_ACTIONS and push["Resource"] == DESTINATION_SCOPE
    assert actions(by_sid["RegistryLogin"]) == ["ecr:GetAuthorizationToken"]


def test_roles_are_assumable_only_by_their_arn(template: SamTemplate) -> None:
    for logical_id, properties in functions(template).items():
        for statement in statements(properties):
            if any(action.startswith("sts:") for action in actions(statement)):
                assert logical_id == "ReplicationWorkerFunction"
                assert actions(statement) == ["sts:AssumeRole"]
                assert statement["Resource"] == {"Ref": "ReplicationRoleArns"}


def test_tracing_and_bounded_async_retries_with_a_failure_destination(template: SamTemplate) -> None:
    assert template.body["Globals"]["Function"]["Tracing"] == "Active"
    shared = template.body["Globals"]["Function"]["EventInvokeConfig"]
    for logical_id, properties in functions(template).items():
        # SAM merges a function's EventInvokeConfig into the Globals one, key by key.
        config = {**shared, **properties.get("EventInvokeConfig", {})}
        assert 0 <= config["MaximumRetryAttempts"] <= 2, logical_id
        assert config["DestinationConfig"]["OnFailure"]["Type"] == "SQS"


def test_every_rule_has_a_dead_letter_queue_and_a_retry_policy(template: SamTemplate) -> None:
    for logical_id, properties in functions(template).items():
        for name, event in properties["Events"].items():
            if event["Type"] == "SQS":
                continue  # test_every_queue_trigger_redrives_to_a_dead_letter_queue
            assert event["Type"] == "EventBridgeRule", f"{logical_id}.{name}: use EventBridgeRule"
            assert "DeadLetterConfig" in event["Properties"], f"{logical_id}.{name}"
            retry = event["Properties"]["RetryPolicy"]
            assert retry["MaximumRetryAttempts"] <= 10 and retry["MaximumEventAgeInSeconds"] <= 86400


def test_every_queue_trigger_redrives_to_a_dead_letter_queue(template: SamTemplate) -> None:
    """An SQS-triggered function reports partial batch failures; its queue redelivers a failed message a
    bounded number of times, never while the function may still hold it, then dead-letters it."""
    queues = template.resources_of_type("AWS::SQS::Queue")
    default_timeout = template.body["Globals"]["Function"]["Timeout"]
    triggers = 0
    for logical_id, properties in functions(template).items():
        for name, event in properties["Events"].items():
            if event["Type"] != "SQS":
                continue
            triggers += 1
            source = event["Properties"]
            assert source["FunctionResponseTypes"] == ["ReportBatchItemFailures"], f"{logical_id}.{name}"
            assert 1 <= source["BatchSize"] <= 10
            # Bounded concurrency, set by a parameter: a burst of pushes never becomes a storm of ECR calls.
            concurrency = source["ScalingConfig"]["MaximumConcurrency"]
            parameter = template.body["Parameters"][concurrency["Ref"]]
            assert 2 <= parameter["MinValue"] <= parameter["Default"] <= parameter["MaxValue"] <= 1000
            queue = queues[source["Queue"]["Fn::GetAtt"][0]]
            timeout = properties.get("Timeout", default_timeout)
            assert queue["VisibilityTimeout"] >= 6 * timeout, (logical_id, queue["VisibilityTimeout"], timeout)
            redrive = queue["RedrivePolicy"]
            assert 1 < redrive["maxReceiveCount"] <= 10
            assert redrive["deadLetterTargetArn"]["Fn::GetAtt"][0] in queues
            assert "KmsMasterKeyId" in queue
            environment = properties.get("Environment", {}).get("Variables", {})
            assert int(environment["REPLICATION_MAX_RECEIVES"]) == redrive["maxReceiveCount"]
    assert triggers, "no SQS-triggered function: drop this test or the trigger's expectations"


@pytest.mark.parametrize("table", ["TagLedgerTable", "IdempotencyTable"])
def test_tables_are_on_demand_recoverable_and_encrypted(template: SamTemplate, table: str) -> None:
    properties = template.resources_of_type("AWS::DynamoDB::Table")[table]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert properties["SSESpecification"]["SSEEnabled"] is True


def test_no_secret_is_passed_in_the_environment(template: SamTemplate) -> None:
    variables = template.body["Globals"]["Function"]["Environment"]["Variables"]
    for properties in functions(template).values():
        variables = {**variables, **properties.get("Environment", {}).get("Variables", {})}
    parameters = template.body["Parameters"]
    for name, value in variables.items():
        if name.upper().endswith("_SECRET_ARN"):
            # Where a secret is, not what it holds: a parameter that can only be a Secrets Manager ARN.
            assert isinstance(value, dict) and set(value) == {"Ref"}, name
            pattern = parameters[value["Ref"]]["AllowedPattern"]
            assert ":secretsmanager:" in pattern and "://" not in pattern, name
            continue
        assert not any(word in name.upper() for word in ("SECRET", "TOKEN", "PASSWORD", "WEBHOOK")), name


def test_secrets_are_readable_only_by_their_arn(template: SamTemplate) -> None:
    for logical_id, properties in functions(template).items():
        for statement in statements(properties):
            if any(action.startswith("secretsmanager:") for action in actions(statement)):
                assert actions(statement) == ["secretsmanager:GetSecretValue"], logical_id
                # The default webhook's secret, or the secrets [[notify]] rules route to: named ARNs, never a pattern.
                assert statement["Resource"] in (
                    {"Ref": "SlackWebhookSecretArn"},
                    {"Ref": "SlackRouteSecretArns"},
                    # Registry credentials [[replicate]] targets name, read by the replication worker alone.
                    {"Ref": "ReplicationCredentialSecretArns"},
                ), logical_id
