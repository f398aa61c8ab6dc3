"""org/member-account.yaml, read as CloudFormation would render it for one member account."""

from __future__ import annotations

from typing import Any

from ecr_automation.local.template import SamTemplate, resolve
from tests.conftest import ROOT

MEMBER_TEMPLATE = ROOT / "org" / "member-account.yaml"


def load() -> SamTemplate:
    return SamTemplate.load(MEMBER_TEMPLATE)


def render(value: Any, parameters: dict[str, str]) -> Any:
    """Policy documents with Ref and Sub filled in from ``parameters`` (pseudo parameters included)."""
    if isinstance(value, list):
        return [render(item, parameters) for item in value]
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in {"Ref", "Fn::Sub"}:
        return resolve(value, parameters.__getitem__, lambda resource, attribute: f"{resource}.{attribute}")
    if isinstance(value, dict):
        return {key: render(item, parameters) for key, item in value.items()}
    return value


def member_role(parameters: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The member role's trust policy and its permission policies, rendered."""
    template = load()
    defaults = {name: spec["Default"] for name, spec in template.body["Parameters"].items() if "Default" in spec}
    values = {"AWS::Partition": "aws", **defaults, **parameters}
    role = template.resources_of_type("AWS::IAM::Role")["MemberRole"]
    trust = render(role["AssumeRolePolicyDocument"], values)
    permissions = [render(policy["PolicyDocument"], values) for policy in role["Policies"]]
    return trust, permissions
