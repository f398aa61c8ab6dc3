"""Read what the runner needs from template.yaml: functions, their environment and their rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FUNCTION_TYPE = "AWS::Serverless::Function"
EVENTBRIDGE_RULE_TYPES = {"EventBridgeRule", "CloudWatchEvent"}


class TemplateError(ValueError):
    pass


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags (!Ref, !Sub, ...) as their long form."""


def _construct_intrinsic(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


@dataclass(frozen=True)
class EventRule:
    name: str
    pattern: dict[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    handler: str
    environment: dict[str, Any]
    rules: list[EventRule] = field(default_factory=list)


@dataclass(frozen=True)
class SamTemplate:
    path: Path
    body: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> SamTemplate:
        try:
            body = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
        except (OSError, yaml.YAMLError) as error:
            raise TemplateError(f"cannot read template {path}: {error}") from None
        if not isinstance(body, dict) or "Resources" not in body:
            raise TemplateError(f"{path} is not a CloudFormation template")
        return cls(path, body)

    @property
    def code_root(self) -> Path:
        code_uri = self.body.get("Globals", {}).get("Function", {}).get("CodeUri", ".")
        return (self.path.parent / str(code_uri)).resolve()

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource.get("Properties", {})
            for logical_id, resource in self.body["Resources"].items()
            if resource.get("Type") == resource_type
        }

    def parameter_defaults(self) -> dict[str, str]:
        return {name: str(spec.get("Default", "")) for name, spec in self.body.get("Parameters", {}).items()}

    def functions(self) -> dict[str, FunctionSpec]:
        global_env = self.body.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        specs = {}
        for logical_id, properties in self.resources_of_type(FUNCTION_TYPE).items():
            environment = {**global_env, **properties.get("Environment", {}).get("Variables", {})}
            rules = [
                EventRule(f"{logical_id}{name}", event["Properties"]["Pattern"])
                for name, event in properties.get("Events", {}).items()
                if event.get("Type") in EVENTBRIDGE_RULE_TYPES
            ]
            specs[logical_id] = FunctionSpec(logical_id, properties["Handler"], environment, rules)
        return specs

    def function(self, logical_id: str) -> FunctionSpec:
        functions = self.functions()
        if logical_id not in functions:
            raise TemplateError(f"no function {logical_id!r} in {self.path.name}; there are: {', '.join(functions)}")
        return functions[logical_id]


def resolve(value: Any, reference: Callable[[str], str], attribute: Callable[[str, str], str]) -> str:
    """Render an environment value: plain strings, Ref, GetAtt and Sub (what the template uses)."""
    if isinstance(value, str | int | float | bool):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return reference(argument)
        if function == "Fn::GetAtt":
            return attribute(argument[0], argument[1])
        if function == "Fn::Sub" and isinstance(argument, str):
            return _substitute(argument, reference, attribute)
    raise TemplateError(f"cannot render {value!r} locally")


def _substitute(text: str, reference: Callable[[str], str], attribute: Callable[[str, str], str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if "." in name:
            resource, attr = name.split(".", 1)
            return attribute(resource, attr)
        return reference(name)

    return re.sub(r"\$\{([^}!]+)\}", replace, text)
