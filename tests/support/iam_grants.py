"""What template.yaml lets each function do: its policy statements, and their resources rendered for a call.

A function's statements are its inline ``Policies`` (a conditional ``!If [cond, policy, !Ref AWS::NoValue]``
counts as its policy: the grant exists once the deployer configures what the condition tests), and those
of the template's managed policies it references (``Policies: [!Ref SomePolicy]``) or that name its role
(``Roles: [!Ref <Function>Role]``, the role SAM creates).

Rendering a resource for one recorded call: ``AWS::Partition`` is aws, ``AWS::Region`` the function's region,
``AWS::AccountId`` moto's account; a resource or parameter the function's environment refers to (TAG_LEDGER_TABLE:
!Ref TagLedgerTable) has the value the function's configuration held; other parameters their default. A whole
``Resource: !Ref Parameter`` left empty (a secret, topic or role ARN, or a list of them, the deployer gives)
renders as any ARN of the action's service: which ARNs belong there is the deployer's part (README).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate, TemplateError
from tests.support.aws_calls import HOME_ACCOUNT, PARTITION, Call, queue_arn

POLICY_TYPES = {"AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"}
# The service whose ARNs an action's resources are, where it is not the action's prefix.
RESOURCE_SERVICE = {"sts": "iam"}


@dataclass(frozen=True)
class Grant:
    function: str
    policy: str  # "inline" or the managed policy's logical id
    sid: str
    actions: tuple[str, ...]
    resource: Any  # as the template writes it
    condition: str | None = None

    def allows_action(self, action: str) -> bool:
        return any(wildcard_match(pattern, action, ignore_case=True) for pattern in self.actions)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements_of(policy: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(policy, dict) or not isinstance(policy.get("Statement"), list):
        raise TemplateError(f"{where}: not a policy document with a Statement list: {policy!r}")
    statements: list[dict[str, Any]] = []
    for statement in policy["Statement"]:
        statements.extend(_unconditional(statement, where))
    return statements


def _unconditional(value: Any, where: str) -> list[dict[str, Any]]:
    """A statement, or the statement branches of ``!If`` (``AWS::NoValue`` is no statement)."""
    if isinstance(value, dict) and "Fn::If" in value:
        return [found for branch in value["Fn::If"][1:] for found in _unconditional(branch, where)]
    if isinstance(value, dict) and value.get("Ref") == "AWS::NoValue":
        return []
    if not isinstance(value, dict) or "Action" not in value:
        raise TemplateError(f"{where}: not a statement: {value!r}")
    return [value]


def grants(template: SamTemplate) -> list[Grant]:
    """Every Allow statement of every function, one ``Grant`` each; fails on a policy shape it cannot read."""
    resources = template.body["Resources"]
    functions = template.resources_of_type(FUNCTION_TYPE)
    found: list[Grant] = []

    def add(function: str, policy: str, statements: Iterable[dict[str, Any]], condition: str | None) -> None:
        for index, statement in enumerate(statements):
            if statement.get("Effect") != "Allow":
                raise TemplateError(f"{function}/{policy}: only Allow statements are understood here")
            found.append(
                Grant(
                    function,
                    policy,
                    str(statement.get("Sid", f"#{index}")),
                    tuple(str(action) for action in _as_list(statement["Action"])),
                    statement["Resource"],
                    condition,
                )
            )

    def add_policy(function: str, policy: Any, condition: str | None) -> None:
        if isinstance(policy, dict) and "Fn::If" in policy:
            name, *branches = policy["Fn::If"]
            for branch in branches:
                if not (isinstance(branch, dict) and branch.get("Ref") == "AWS::NoValue"):
                    add_policy(function, branch, str(name))
        elif isinstance(policy, dict) and set(policy) == {"Ref"} and policy["Ref"] in resources:
            resource = resources[policy["Ref"]]
            if resource.get("Type") not in POLICY_TYPES:
                raise TemplateError(f"{function}: Policies names {policy['Ref']}, not a policy resource")
            document = resource["Properties"]["PolicyDocument"]
            add(function, policy["Ref"], _statements_of(document, policy["Ref"]), condition)
        elif isinstance(policy, dict) and "Statement" in policy:
            add(function, "inline", _statements_of(policy, f"{function} inline policy"), condition)
        else:
            raise TemplateError(
                f"{function}: a policy this test cannot read (extend tests/support/iam_grants.py): {policy!r}"
            )

    for function, properties in functions.items():
        for policy in properties.get("Policies", []):
            add_policy(function, policy, None)
    # Policy resources attached to the roles SAM creates for the functions.
    for logical_id, resource in resources.items():
        if resource.get("Type") not in POLICY_TYPES:
            continue
        for role in _as_list(resource.get("Properties", {}).get("Roles", [])):
            name = role.get("Ref") if isinstance(role, dict) else None
            function = name.removesuffix("Role") if isinstance(name, str) else ""
            if function in functions:
                document = resource["Properties"]["PolicyDocument"]
                add(function, logical_id, _statements_of(document, logical_id), None)
    return found


# -- rendering -----------------------------------------------------------------------------------------------
def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM's matching: ``*`` any run of characters, ``?`` one character, everything else literal."""
    return _wildcard(pattern, ignore_case).fullmatch(value) is not None


@cache
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


@dataclass(frozen=True)
class Renderer:
    """Renders a statement's Resource for one call of a function (see the module's docstring)."""

    template: SamTemplate

    def patterns(self, grant: Grant, call: Call, action: str) -> list[str]:
        return [str(pattern) for value in _as_list(grant.resource) for pattern in self._render(value, call, action)]

    def _parameter(self, name: str, call: Call, action: str, *, whole: bool = False) -> list[str]:
        bound = call.bound()
        if name in bound:
            return bound[name]
        spec = self.template.body.get("Parameters", {}).get(name)
        if spec is None:
            raise TemplateError(f"Ref {name}: neither a parameter nor a resource")
        default = str(spec.get("Default", ""))
        if default == "" and whole:
            # The resource is an ARN (or list) the deployer gives; a test that drives the code directly names its own.
            service = action.split(":", 1)[0]
            return [f"arn:{PARTITION}:{RESOURCE_SERVICE.get(service, service)}:*"]
        if spec.get("Type") == "CommaDelimitedList":
            return default.split(",")
        return [default]

    def _reference(self, name: str, call: Call, action: str, *, whole: bool = False) -> list[str]:
        pseudo = {"AWS::Partition": PARTITION, "AWS::Region": call.region, "AWS::AccountId": HOME_ACCOUNT}
        if name in pseudo:
            return [pseudo[name]]
        if name in self.template.body["Resources"]:
            return call.bound().get(name, [f"<{name}: not in this function's environment>"])
        return self._parameter(name, call, action, whole=whole)

    def _attribute(self, resource: str, attribute: str, call: Call) -> list[str]:
        bound = call.bound()
        if f"{resource}.{attribute}" in bound:
            return bound[f"{resource}.{attribute}"]
        kind = self.template.body["Resources"].get(resource, {}).get("Type")
        values = bound.get(resource, [])
        if attribute == "Arn" and values and kind == "AWS::DynamoDB::Table":
            return [f"arn:{PARTITION}:dynamodb:{call.region}:{HOME_ACCOUNT}:table/{value}" for value in values]
        if attribute == "Arn" and values and kind == "AWS::SQS::Queue":  # Ref is the queue's URL
            return [queue_arn(value, call.region) for value in values]
        return [f"<{resource}.{attribute}: not in this function's environment>"]

    def _render(self, value: Any, call: Call, action: str) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [rendered for item in value for rendered in self._render(item, call, action)]
        if isinstance(value, dict) and len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref":
                return self._reference(argument, call, action, whole=True)
            if function == "Fn::GetAtt":
                return self._attribute(argument[0], argument[1], call)
            if function == "Fn::Sub" and isinstance(argument, str):
                return self._substitute(argument, call, action)
            if function == "Fn::If":
                name, when_true, when_false = argument
                chosen = when_true if self.condition(name, call, action) else when_false
                return self._render(chosen, call, action)
        raise TemplateError(f"cannot render the resource {value!r}")

    def _substitute(self, text: str, call: Call, action: str) -> list[str]:
        """Every rendering of a ``!Sub`` string (a name bound to several values gives several)."""
        match = re.search(r"\$\{([^}!]+)\}", text)
        if match is None:
            return [text]
        name = match[1]
        if "." in name:
            resource, attribute = name.split(".", 1)
            values = self._attribute(resource, attribute, call)
        else:
            values = self._reference(name, call, action)
        head, tail = text[: match.start()], text[match.end() :]
        return [head + value + rest for value in values for rest in self._substitute(tail, call, action)]

    def condition(self, name: str, call: Call, action: str) -> bool:
        return bool(self._evaluate(self.template.body.get("Conditions", {})[name], call, action))

    def _evaluate(self, value: Any, call: Call, action: str) -> Any:
        evaluate: Callable[[Any], Any] = lambda inner: self._evaluate(inner, call, action)  # noqa: E731
        if isinstance(value, dict) and len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Fn::Not":
                return not evaluate(argument[0])
            if function == "Fn::Equals":
                return evaluate(argument[0]) == evaluate(argument[1])
            if function == "Fn::And":
                return all(evaluate(item) for item in argument)
            if function == "Fn::Or":
                return any(evaluate(item) for item in argument)
            if function == "Condition":
                return self.condition(argument, call, action)
            if function == "Fn::Join":
                return argument[0].join(str(item) for item in _as_list(evaluate(argument[1])))
            if function == "Ref":
                bound = call.bound()
                if argument in bound:
                    return bound[argument][0]
                spec = self.template.body.get("Parameters", {}).get(argument, {})
                default = str(spec.get("Default", ""))
                return default.split(",") if spec.get("Type") == "CommaDelimitedList" else default
        if isinstance(value, list):
            return [evaluate(item) for item in value]
        return value
