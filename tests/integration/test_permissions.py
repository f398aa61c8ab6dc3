"""Permissions proven, not asserted: what the functions did in the integration tests against template.yaml.

Runs last in the session (tests/integration/conftest.py orders it), over what ``tests.support.aws_calls``
recorded while every other integration test ran: each AWS operation a function made must be granted to
that function on the resource it touched, and each action the template grants a function must have been
made by that function on a resource the grant covers, or be one that no code of ours makes (below).
The recordings go to build/aws-calls.json for humans.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate
from tests.support.aws_calls import HOME_ACCOUNT, RECORDER, REPORT, TEMPLATE, Call
from tests.support.iam_grants import Grant, Renderer, grants, wildcard_match
from tests.support.member_template import member_role

# Granted, and never called by the function's code, because AWS calls them with the function's role:
# - Lambda's SQS event source mapping polls the function's trigger queue ("the Lambda execution role must
#   include sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes"); the local runner stands in for it.
EVENT_SOURCE_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
# - KMS, on the template's own key: SQS asks for a data key when the function sends to an encrypted queue, and
#   decrypts when it receives; Lambda decrypts the environment. moto encrypts nothing and asks no one.
KMS_ACTIONS = {"kms:GenerateDataKey", "kms:Decrypt"}
# - Powertools Idempotency reads a record (GetItem) only when a refused conditional put returns no item, which
#   DynamoDB (and moto) always return; the permission is in Powertools' documented set for the persistence layer.
IDEMPOTENCY_FALLBACK = ("dynamodb:GetItem", "IdempotencyTable")
ONLY_ON_EVERY_RESOURCE = {"ecr:GetAuthorizationToken"}


def feeding_tests_ran(config: pytest.Config) -> list[str]:
    """Why the recordings cannot be trusted as the whole integration tier's, if they cannot."""
    problems = []
    if hasattr(config, "workerinput"):
        problems.append("running in a pytest-xdist worker: each worker records only its share; run without -n")
    expected = RECORDER.expected_tests
    if not expected:
        problems.append("no other integration test was collected: run `pytest tests/integration` (or the suite)")
    missing_files = sorted(RECORDER.expected_files - RECORDER.collected_files)
    if missing_files:
        problems.append(f"integration test files not collected in this session: {', '.join(missing_files)}")
    not_run = sorted(test for test in expected if test not in RECORDER.outcomes)
    if not_run:
        problems.append(f"{len(not_run)} feeding test(s) did not run (deselected?), e.g. {not_run[:3]}")
    failed = sorted(test for test, outcome in RECORDER.outcomes.items() if outcome != "passed")
    if failed:
        problems.append(f"{len(failed)} feeding test(s) did not pass, so their recordings are partial: {failed[:5]}")
    if not any(call.function for call in RECORDER.calls):
        problems.append("no AWS call was attributed to any function: the recorder is not installed")
    return problems


def _resource_ids(value: Any) -> set[str]:
    """The template resources a statement's Resource names (Ref X / GetAtt X.Arn)."""
    found: set[str] = set()
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and "Fn::GetAtt" in item:
            found.add(str(item["Fn::GetAtt"][0]))
        elif isinstance(item, dict) and "Ref" in item:
            found.add(str(item["Ref"]))
    return found


def exemption(grant: Grant, action: str, template: SamTemplate) -> str | None:
    """Why ``action`` of ``grant`` is not expected in the recordings, or None when it is expected there."""
    named = _resource_ids(grant.resource)
    if action in EVENT_SOURCE_ACTIONS:
        properties = template.resources_of_type(FUNCTION_TYPE)[grant.function]
        queues = {
            str(event["Properties"]["Queue"]["Fn::GetAtt"][0])
            for event in properties.get("Events", {}).values()
            if event.get("Type") == "SQS"
        }
        if named and named <= queues:
            return "Lambda's SQS event source mapping polls the trigger queue with the function's role"
    if action in KMS_ACTIONS:
        keys = set(template.resources_of_type("AWS::KMS::Key"))
        if named and named <= keys:
            return "SQS and Lambda use the template's key for the function; moto encrypts nothing"
    if (action, named) == (IDEMPOTENCY_FALLBACK[0], {IDEMPOTENCY_FALLBACK[1]}):
        return "Powertools Idempotency's fallback read; DynamoDB returns the refused item itself"
    return None


def is_member_role(call: Call) -> bool:
    """Whether the call was made as the role org/member-account.yaml lends (MemberAccountRoleName names it)."""
    names = call.bound().get("MemberAccountRoleName", [])
    return any(call.principal.endswith(f":role/{name}") for name in names if name)


def member_role_allows(call: Call) -> bool:
    account = call.principal.split(":")[4]
    rendered = {
        "AWS::AccountId": account,
        "AWS::Region": call.region,
        "CentralAccountId": HOME_ACCOUNT,
        "ExternalId": "-",
    }
    _, policies = member_role(rendered)
    return any(
        any(wildcard_match(action, call.action, ignore_case=True) for action in as_list(statement["Action"]))
        and any(wildcard_match(str(resource), call.resource) for resource in as_list(statement["Resource"]))
        for policy in policies
        for statement in policy["Statement"]
        if statement.get("Effect") == "Allow"
    )


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def covers(renderer: Renderer, grant: Grant, call: Call) -> bool:
    return (
        grant.function == call.function
        and grant.allows_action(call.action)
        and any(wildcard_match(pattern, call.resource) for pattern in renderer.patterns(grant, call, call.action))
    )


def describe(call: Call, tests: Iterable[str]) -> str:
    who = call.function or "(no function)"
    return f"{who}: {call.action} on {call.resource} ({call.api}, region {call.region}; e.g. {sorted(tests)[0]})"


def test_every_call_is_granted_and_every_grant_was_needed(request: pytest.FixtureRequest) -> None:
    problems = feeding_tests_ran(request.config)
    template = SamTemplate.load(TEMPLATE)
    renderer = Renderer(template)
    granted = grants(template)
    attributed, nobody = RECORDER.attributed()
    # Made with the function configured as the template never deploys it: proves nothing either way.
    off_template = sorted(
        f"{describe(call, tests)}: touched {call.off_template}"
        for call, tests in attributed.items()
        if call.off_template
    )
    # Made as a role the function assumed (another account's): that role's policy decides, not the function's.
    # The member role org/member-account.yaml creates is checked against that template; other roles (the
    # replication targets' role_arn) belong to whoever lends them.
    as_member_role = {call: tests for call, tests in attributed.items() if call.principal and is_member_role(call)}
    not_granted_to_member_role = sorted(
        describe(call, tests) for call, tests in as_member_role.items() if not member_role_allows(call)
    )
    as_assumed_role = sorted(
        f"{describe(call, tests)} as {call.principal}"
        for call, tests in attributed.items()
        if call.principal and call not in as_member_role
    )
    calls = {call: tests for call, tests in attributed.items() if not call.off_template and not call.principal}

    # (a) every operation a function made is granted to it, on the resource it touched.
    ungranted = sorted(
        describe(call, tests) for call, tests in calls.items() if not any(covers(renderer, g, call) for g in granted)
    )

    # (b) every action granted to a function was made by it, on a resource the statement covers.
    by_function: dict[str, list[Call]] = {}
    for call in calls:
        by_function.setdefault(call.function, []).append(call)
    unused, exempted = [], []
    for grant in granted:
        for action in grant.actions:
            made = [
                call
                for call in by_function.get(grant.function, [])
                if wildcard_match(action, call.action, ignore_case=True)
            ]
            if any(
                any(wildcard_match(pattern, call.resource) for pattern in renderer.patterns(grant, call, action))
                for call in made
            ):
                continue
            reason = exemption(grant, action, template)
            if reason is not None:
                exempted.append(f"{grant.function}/{grant.sid}: {action}: {reason}")
            else:
                unused.append(f"{grant.function}/{grant.policy}/{grant.sid}: {action} on {grant.resource}")

    # The registry login is the only thing granted on every resource.
    on_everything = sorted(
        f"{grant.function}/{grant.sid}: {action}"
        for grant in granted
        if grant.resource == "*"
        for action in grant.actions
        if action not in ONLY_ON_EVERY_RESOURCE
    )

    path = RECORDER.write_report(
        {**attributed, **nobody},
        {
            "problems_with_the_recordings": problems,
            "made_but_not_granted": ungranted,
            "granted_but_never_made": unused,
            "granted_and_made_by_aws_for_the_function": sorted(exempted),
            "made_in_a_configuration_the_template_does_not_deploy": off_template,
            "made_as_the_member_role_not_granted_by_org_member_account_yaml": not_granted_to_member_role,
            "made_as_the_member_role": sorted(describe(call, tests) for call, tests in as_member_role.items()),
            "made_as_another_accounts_role_whose_policy_decides": as_assumed_role,
            "made_by_application_code_no_function_can_be_named_for": sorted(
                describe(call, tests) for call, tests in nobody.items()
            ),
        },
    )
    failures = [
        *(f"recordings: {problem}" for problem in problems),
        *(f"made but not granted: {line}" for line in ungranted),
        *(
            f"made as the member role, which org/member-account.yaml does not grant: {line}"
            for line in not_granted_to_member_role
        ),
        *(f"granted but never made by any test: {line}" for line in unused),
        *(f"granted on every resource: {line}" for line in on_everything),
    ]
    assert not failures, f"{len(failures)} problem(s); recordings in {path}:\n" + "\n".join(failures)
    assert path == REPORT
