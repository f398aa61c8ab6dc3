"""org/member-account.yaml: passes the offline checkers, forwards what the central functions listen to, and lends
them exactly the ECR actions they use on their own account's repositories; template.yaml admits the organisation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.events.models import EventPattern

from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate
from tests.conftest import EVENTS
from tests.support.member_template import MEMBER_TEMPLATE
from tests.template.conftest import TEMPLATE, run_tool, tool

# The statements the central functions act on their own account's repositories with.
REPOSITORY_SCOPE = {
    "Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/${RepositoryScope}"
}
MEMBER_REPOSITORIES = {"Fn::Sub": "arn:${AWS::Partition}:ecr:*:${AWS::AccountId}:repository/${RepositoryScope}"}
AWS_SOURCES = {"aws.ecr", "aws.inspector2"}


@pytest.fixture(scope="module")
def member() -> SamTemplate:
    return SamTemplate.load(MEMBER_TEMPLATE)


def _statements(properties: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A function's inline statements, both branches of a conditional one included."""
    for policy in properties.get("Policies", []):
        if isinstance(policy, dict) and "Fn::If" in policy:
            for branch in policy["Fn::If"][1:]:
                if isinstance(branch, dict) and "Statement" in branch:
                    yield from branch["Statement"]
        elif isinstance(policy, dict):
            yield from policy.get("Statement", [])


def _actions(statement: dict[str, Any]) -> set[str]:
    value = statement["Action"]
    return set(value if isinstance(value, list) else [value])


def _central_ecr_use(template: SamTemplate) -> dict[str, set[str]]:
    """Per function, the ECR actions it is granted on its own repositories (RepositoryScope) or on every resource."""
    found: dict[str, set[str]] = {}
    for logical_id, properties in template.resources_of_type(FUNCTION_TYPE).items():
        for statement in _statements(properties):
            if statement["Resource"] in (REPOSITORY_SCOPE, "*"):
                found.setdefault(logical_id, set()).update(a for a in _actions(statement) if a.startswith("ecr:"))
    return {logical_id: actions for logical_id, actions in found.items() if actions}


def _member_role(member: SamTemplate) -> dict[str, Any]:
    return member.resources_of_type("AWS::IAM::Role")["MemberRole"]


def _member_statements(member: SamTemplate) -> list[dict[str, Any]]:
    return [
        statement for policy in _member_role(member)["Policies"] for statement in policy["PolicyDocument"]["Statement"]
    ]


# -- the offline checkers -------------------------------------------------------------------------------------
def test_cfn_lint_with_serverless_rules() -> None:
    completed = run_tool(tool("cfn-lint"), str(MEMBER_TEMPLATE), "-a", "cfn_lint_serverless.rules")
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.slow
def test_checkov_offline_with_reasoned_skips(member: SamTemplate) -> None:
    skips = [
        skip
        for resource in member.body["Resources"].values()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert all(len(skip.get("comment", "")) > 20 for skip in skips), "every skipped check says why"
    config = Path(TEMPLATE.parent / ".checkov.yaml")

    completed = run_tool(tool("checkov"), "-f", str(MEMBER_TEMPLATE), "--config-file", str(config))

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Failed checks: 0" in completed.stdout


# -- the member role ------------------------------------------------------------------------------------------
def test_the_member_role_grants_exactly_the_ecr_actions_the_central_functions_use(
    template: SamTemplate, member: SamTemplate
) -> None:
    used = set().union(*_central_ecr_use(template).values())
    granted = set().union(*(_actions(statement) for statement in _member_statements(member)))
    assert granted == used, f"missing: {sorted(used - granted)}, not used centrally: {sorted(granted - used)}"


def test_the_member_role_acts_only_on_the_scoped_repositories_of_its_account(member: SamTemplate) -> None:
    for statement in _member_statements(member):
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        if statement["Resource"] == "*":
            assert _actions(statement) == {"ecr:GetAuthorizationToken"}  # IAM grants it on every resource or none
        else:
            assert statement["Resource"] == MEMBER_REPOSITORIES


def test_only_the_central_function_roles_with_the_external_id_may_assume_the_member_role(member: SamTemplate) -> None:
    role = _member_role(member)
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow" and trust["Action"] == "sts:AssumeRole"
    assert trust["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccountId}:root"}}
    assert trust["Condition"]["StringEquals"] == {"sts:ExternalId": {"Ref": "ExternalId"}}
    assert trust["Condition"]["ArnLike"] == {
        "aws:PrincipalArn": {
            "Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccountId}:role/${CentralFunctionRoleNames}"
        }
    }
    assert role["RoleName"] == {"Ref": "MemberRoleName"} and role["MaxSessionDuration"] == 3600
    assert member.body["Parameters"]["ExternalId"]["NoEcho"] is True


def test_both_templates_agree_on_the_member_role_name(template: SamTemplate, member: SamTemplate) -> None:
    central, lent = template.body["Parameters"], member.body["Parameters"]
    assert central["MemberAccountRoleName"]["Default"] == lent["MemberRoleName"]["Default"]
    assert central["MemberAccountRoleName"]["AllowedPattern"] == lent["MemberRoleName"]["AllowedPattern"]
    assert central["MemberAccountExternalId"]["NoEcho"] is True


# -- forwarding -----------------------------------------------------------------------------------------------
def _forward_rule(member: SamTemplate) -> dict[str, Any]:
    return member.resources_of_type("AWS::Events::Rule")["ForwardToCentralBus"]


def _matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    return bool(EventPattern.load(json.dumps(pattern)).matches_event(event))  # type: ignore[arg-type]


def _samples() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(EVENTS.rglob("*.json")):
        event = json.loads(path.read_text())
        if isinstance(event, dict) and event.get("source") in AWS_SOURCES:
            yield path.relative_to(EVENTS).as_posix(), event


def test_every_aws_event_a_central_function_takes_is_forwarded(template: SamTemplate, member: SamTemplate) -> None:
    forward = _forward_rule(member)["EventPattern"]
    central = [rule.pattern for function in template.functions().values() for rule in function.rules]
    taken = {name: event for name, event in _samples() if any(_matches(pattern, event) for pattern in central)}
    assert taken, "no sample event reaches a central function"
    assert [name for name, event in taken.items() if not _matches(forward, event)] == []


def test_forwarding_covers_every_detail_type_and_api_call_the_central_rules_name(
    template: SamTemplate, member: SamTemplate
) -> None:
    forward = _forward_rule(member)["EventPattern"]
    forwarded_types = {kind for branch in forward["$or"] for kind in branch["detail-type"]}
    forwarded_calls = {name for branch in forward["$or"] for name in branch.get("detail", {}).get("eventName", [])}
    for function in template.functions().values():
        for rule in function.rules:
            if not set(rule.pattern.get("source", [])) & AWS_SOURCES:
                continue
            assert set(rule.pattern["detail-type"]) <= forwarded_types, rule.name
            assert set(rule.pattern.get("detail", {}).get("eventName", [])) <= forwarded_calls, rule.name
    assert set(forward["source"]) == AWS_SOURCES


def test_forwarding_targets_the_central_bus_with_a_role_retries_and_a_dead_letter_queue(member: SamTemplate) -> None:
    rule = _forward_rule(member)
    (target,) = rule["Targets"]
    assert rule["EventBusName"] == "default" and target["Arn"] == {"Ref": "CentralEventBusArn"}
    # The central bus admits the organisation, not this account by id: EventBridge then requires a role.
    assert target["RoleArn"] == {"Fn::GetAtt": ["ForwardingRole", "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ForwardingDeadLetterQueue", "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    forwarding = member.resources_of_type("AWS::IAM::Role")["ForwardingRole"]
    ((statement,),) = [policy["PolicyDocument"]["Statement"] for policy in forwarding["Policies"]]
    assert statement["Action"] == "events:PutEvents" and statement["Resource"] == {"Ref": "CentralEventBusArn"}
    (trust,) = forwarding["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}


# -- the central template -------------------------------------------------------------------------------------
def test_the_central_bus_admits_the_organisations_ecr_and_inspector_events_only(template: SamTemplate) -> None:
    resource = template.body["Resources"]["OrganizationEventBusPolicy"]
    assert resource["Condition"] == "HasOrganization"
    statement = resource["Properties"]["Statement"]
    assert statement["Action"] == "events:PutEvents" and statement["Principal"] == "*"
    assert statement["Condition"]["StringEquals"] == {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}
    # No member account may pose as this application (source ecr-automation) on the central bus.
    assert set(statement["Condition"]["ForAllValues:StringEquals"]["events:source"]) == AWS_SOURCES


def test_every_function_acting_in_ecr_may_assume_the_member_role_in_the_organisation_only(
    template: SamTemplate,
) -> None:
    resource = template.body["Resources"]["MemberAccountsPolicy"]
    assert resource["Condition"] == "HasOrganization"
    (statement,) = resource["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberAccountRoleName}"}
    assert statement["Condition"] == {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}}
    conditional = {"Fn::If": ["HasOrganization", {"Ref": "MemberAccountsPolicy"}, {"Ref": "AWS::NoValue"}]}
    functions = template.resources_of_type(FUNCTION_TYPE)
    acting = {
        logical_id
        for logical_id, actions in _central_ecr_use(template).items()
        if actions - {"ecr:GetAuthorizationToken"}
    }
    assert acting, "no function acts in ECR"
    assert {logical_id for logical_id in acting if conditional not in functions[logical_id]["Policies"]} == set()


def test_the_functions_learn_their_account_and_the_member_role_from_the_template(template: SamTemplate) -> None:
    variables = template.body["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["APPLICATION_ACCOUNT_ID"] == {"Ref": "AWS::AccountId"}
    assert variables["MEMBER_ACCOUNT_ROLE_NAME"] == {"Ref": "MemberAccountRoleName"}
    # The external id switches the member role on; the template's Rules allow it only with an organisation.
    assert variables["MEMBER_ACCOUNT_EXTERNAL_ID"] == {"Ref": "MemberAccountExternalId"}
    assert template.body["Parameters"]["MemberAccountExternalId"]["Default"] == ""
    assert {"OrganizationNeedsAnExternalId", "AnExternalIdNeedsAnOrganization"} <= set(template.body["Rules"])
