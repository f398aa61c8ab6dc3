"""The configuration reference (docs/configuration.md) says what the code does, key for key.

Every key is derived from the code: the rules file's pydantic models (walked from ``Rules`` through
nested tables and arrays of tables), the ``Settings`` model's environment aliases, and template.yaml's
parameters and function environments. The reference must document each one with the right type and
default, and nothing else.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ecr_automation.config import Settings
from ecr_automation.errors import BUNDLED_RULES_FILE
from ecr_automation.local.template import SamTemplate
from ecr_automation.rules import Regex, Rules, parse_rules
from tests.conftest import ROOT

REFERENCE = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"
TEMPLATE = ROOT / "template.yaml"
FUNCTION_TYPE = "AWS::Serverless::Function"
# Keys of type "tag template" or "repository template": strings rendered from placeholders.
TAG_TEMPLATE_KEYS = {"quarantine_tag", "digest_tag", "tags"}
REPOSITORY_TEMPLATE_KEYS = {"repository"}
REGEX_METADATA = get_args(Regex)[1:]


# -- the reference, as tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    cells: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.cells[column]

    @property
    def text(self) -> str:
        return " ".join(self.cells.values())


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _tables(markdown: str) -> Iterator[tuple[str, str, list[Row]]]:
    """(``##`` heading, ``###`` heading, rows) of every table, rows keyed by the header's column names."""
    chapter = section = ""
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            chapter, section = line[3:].strip(), ""
        elif line.startswith("### "):
            section = line[4:].strip()
        elif line.startswith("|") and index + 1 < len(lines) and set(lines[index + 1]) <= set("|-: "):
            header = _cells(line)
            rows = []
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                cells = _cells(lines[index])
                assert len(cells) == len(header), f"{REFERENCE.name}: row with {len(cells)} cells: {lines[index]}"
                rows.append(Row(dict(zip(header, cells, strict=True))))
                index += 1
            yield chapter, section, rows
            continue
        index += 1


def _code(cell: str) -> str:
    """The text of a cell that is one code span (``x``), else the cell as written."""
    found = re.fullmatch(r"`([^`]*)`", cell)
    return found.group(1) if found else cell


def _plain(cell: str) -> str:
    return cell.replace("`", "")


@pytest.fixture(scope="module")
def reference() -> str:
    return REFERENCE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def rules_tables(reference: str) -> dict[str, list[Row]]:
    """The rules file chapter's tables by TOML table path ("" for the top level, "retag.aliases", ...)."""
    tables: dict[str, list[Row]] = {}
    for chapter, section, rows in _tables(reference):
        if chapter != "The rules file":
            continue
        header = re.fullmatch(r"`\[{1,2}([a-z_.]+)\]{1,2}`", section)
        path = header.group(1) if header else "" if section == "Top level" else None
        assert path is not None, f"rules table under an unexpected heading: {section!r}"
        assert path not in tables, f"two tables for [{path}]"
        tables[path] = rows
    return tables


def _chapter_rows(reference: str, name: str) -> list[Row]:
    found = [rows for chapter, _, rows in _tables(reference) if chapter == name]
    assert len(found) == 1, f"expected one table under '## {name}'"
    return found[0]


# -- the model, as expected rows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    table: str  # TOML table path, "" for the top level
    name: str
    type: str  # what the type cell starts with
    default: str  # the default cell, exactly
    values: tuple[str, ...] = ()  # allowed values the row must name


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``| None``, and whether None was allowed."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        assert len(members) == 1, f"unexpected union {annotation}"
        return members[0], True
    return annotation, False


def _model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _items(annotation: Any) -> Any | None:
    return get_args(annotation)[0] if get_origin(annotation) is list else None


def _choices(annotation: Any) -> tuple[str, ...]:
    if get_origin(annotation) is Literal:
        return tuple(str(value) for value in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return tuple(str(member.value) for member in annotation)
    return ()


def _rules_type(name: str, annotation: Any, metadata: list[Any] | None = None) -> str:
    annotation, _ = _unwrap(annotation)
    # pydantic keeps a field's own Annotated metadata apart from its annotation; nested ones stay in place.
    if annotation == Regex or (annotation is str and metadata and all(m in metadata for m in REGEX_METADATA)):
        return "RE2 pattern"
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if (items := _items(annotation)) is not None:
        if _model(items) is not None:
            return "array of tables"
        if name in TAG_TEMPLATE_KEYS:
            return "array of tag templates"
        return f"array of {_rules_type('', items)}s"
    if _model(annotation) is not None:
        return "table"
    if choices := _choices(annotation):
        return "one of " + ", ".join(f'"{choice}"' for choice in choices)
    if annotation is str and name in TAG_TEMPLATE_KEYS:
        return "tag template"
    if annotation is str and name in REPOSITORY_TEMPLATE_KEYS:
        return "string (repository template)"
    names = {bool: "boolean", int: "integer", str: "string", date: "date"}
    assert annotation in names, f"{name}: no TOML type known for {annotation}"
    return names[annotation]


def _default_value(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return _toml(value.value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, BaseModel):
        return "{}"  # the table with each of its own keys at its default
    raise AssertionError(f"no TOML rendering for {value!r}")


def _rules_default(field: FieldInfo) -> str:
    value = _default_value(field)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    return f"`{_toml(value)}`"


def _rules_keys(model: type[BaseModel], table: str = "") -> Iterator[Key]:
    for name, field in model.model_fields.items():
        key = field.alias or name
        annotation, _ = _unwrap(field.annotation)
        expected_type = _rules_type(name, field.annotation, field.metadata)
        yield Key(table, key, expected_type, _rules_default(field), _choices(annotation))
        nested = _model(annotation) or _model(_items(annotation))
        if nested is not None:
            yield from _rules_keys(nested, f"{table}.{key}" if table else key)


def _env_type(annotation: Any) -> str:
    annotation, _ = _unwrap(annotation)
    if choices := _choices(annotation):
        return "one of " + ", ".join(choices)
    if get_origin(annotation) is dict:
        return "JSON object"
    names = {bool: "boolean", int: "integer", str: "string", Path: "path"}
    assert annotation in names, f"no environment type known for {annotation}"
    return names[annotation]


def _env_default(field: FieldInfo) -> str:
    value = _default_value(field)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if value == BUNDLED_RULES_FILE:
        return f"`{BUNDLED_RULES_FILE.relative_to(ROOT / 'functions')}`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if set(value) == {"Ref"} and isinstance(value["Ref"], str):
            yield value["Ref"]
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


@dataclass(frozen=True)
class TemplateVariable:
    functions: str  # "all", or the function logical ids in backticks, comma separated
    sources: tuple[str, ...]  # what the "set by" cell must name


def _template_variables(template: SamTemplate) -> dict[str, TemplateVariable]:
    parameters = template.body.get("Parameters", {})
    resources = template.body["Resources"]

    def sources(value: Any) -> tuple[str, ...]:
        if isinstance(value, str | int | float):
            return (f"template: `{value}`",)
        names = []
        for ref in _refs(value):
            if ref in parameters:
                names.append(f"parameter `{ref}`")
            elif ref in resources:
                names.append(f"resource `{ref}`")
        return tuple(names)

    found: dict[str, TemplateVariable] = {}
    shared = template.body.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    for name, value in shared.items():
        found[name] = TemplateVariable("all", sources(value))
    per_function: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != FUNCTION_TYPE:
            continue
        variables = (resource.get("Properties", {}).get("Environment") or {}).get("Variables", {})
        for name, value in variables.items():
            if name in found:
                continue  # a function overriding a shared value: still every function's variable
            per_function.setdefault(name, []).append(logical_id)
            values.setdefault(name, value)
    for name, functions in per_function.items():
        found[name] = TemplateVariable(", ".join(f"`{f}`" for f in sorted(functions)), sources(values[name]))
    return found


# -- the rules file ----------------------------------------------------------------------------------


def test_every_rules_key_is_documented_with_its_type_and_default(rules_tables: dict[str, list[Row]]) -> None:
    problems = []
    for key in _rules_keys(Rules):
        where = f"{key.table}.{key.name}" if key.table else key.name
        rows = [row for row in rules_tables.get(key.table, []) if _code(row["key"]) == key.name]
        if len(rows) != 1:
            problems.append(f"{where}: documented {len(rows)} times (table [{key.table}])")
            continue
        row = rows[0]
        if not _plain(row["type"]).startswith(key.type):
            problems.append(f"{where}: type {row['type']!r}, expected it to start with {key.type!r}")
        if row["default"] != key.default:
            problems.append(f"{where}: default {row['default']!r}, the model's is {key.default!r}")
        if len(_plain(row["meaning"])) < 10:
            problems.append(f"{where}: no meaning given")
        problems.extend(f"{where}: allowed value {value} not named" for value in key.values if value not in row.text)
    assert not problems, "\n".join(problems)


def test_the_reference_names_no_rules_key_the_model_lacks(rules_tables: dict[str, list[Row]]) -> None:
    known = {(key.table, key.name) for key in _rules_keys(Rules)}
    tables = {table for table, _ in known} | {f"{t}.{n}".lstrip(".") for t, n in known}
    extra = [f"[{table}]" for table in rules_tables if table not in tables]
    extra += [
        f"{table}.{_code(row['key'])}".lstrip(".")
        for table, rows in rules_tables.items()
        for row in rows
        if (table, _code(row["key"])) not in known
    ]
    assert not extra, f"documented but not in the rules model: {extra}"


def test_every_table_of_the_model_has_its_own_section(rules_tables: dict[str, list[Row]]) -> None:
    tables = {key.table for key in _rules_keys(Rules)}
    assert tables <= set(rules_tables), f"no section for: {sorted(tables - set(rules_tables))}"


def _toml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", markdown, flags=re.DOTALL)


@pytest.mark.parametrize("document", [REFERENCE, README], ids=lambda path: path.name)
def test_every_rules_example_is_a_valid_rules_file(document: Path) -> None:
    blocks = _toml_blocks(document.read_text(encoding="utf-8"))
    for block in blocks:
        parse_rules(block, origin=f"{document.name} example")  # raises ConfigurationError naming the key


def test_the_readme_links_the_reference() -> None:
    assert "](docs/configuration.md)" in README.read_text(encoding="utf-8")


# -- the environment and the template ------------------------------------------------------------------


def test_every_setting_is_documented_with_its_type_and_default(reference: str) -> None:
    rows = {_code(row["variable"]): row for row in _chapter_rows(reference, "Environment variables")}
    problems = []
    for name, field in Settings.model_fields.items():
        variable = field.alias or name
        row = rows.get(variable)
        if row is None:
            problems.append(f"{variable}: not documented")
            continue
        if not _plain(row["type"]).startswith(_env_type(field.annotation)):
            problems.append(f"{variable}: type {row['type']!r}, expected {_env_type(field.annotation)!r}")
        if row["default"] != _env_default(field):
            problems.append(f"{variable}: default {row['default']!r}, the model's is {_env_default(field)!r}")
        if len(_plain(row["meaning"])) < 10:
            problems.append(f"{variable}: no meaning given")
    assert not problems, "\n".join(problems)


def test_every_variable_the_template_sets_is_documented_with_where_it_comes_from(reference: str) -> None:
    rows = {_code(row["variable"]): row for row in _chapter_rows(reference, "Environment variables")}
    template_variables = _template_variables(SamTemplate.load(TEMPLATE))
    problems = []
    for variable, expected in template_variables.items():
        row = rows.get(variable)
        if row is None:
            problems.append(f"{variable}: set by template.yaml, not documented")
            continue
        if row["functions"] != expected.functions:
            problems.append(f"{variable}: functions {row['functions']!r}, template.yaml: {expected.functions!r}")
        problems.extend(
            f"{variable}: 'set by' should name {source}" for source in expected.sources if source not in row["set by"]
        )
    settings = {field.alias or name for name, field in Settings.model_fields.items()}
    for variable, row in rows.items():
        if variable not in settings and variable not in template_variables:
            problems.append(f"{variable}: documented, but neither read by config.py nor set by template.yaml")
        set_elsewhere = row["set by"] == "Lambda"
        if (
            variable in settings
            and variable not in template_variables
            and row["functions"] != "none"
            and not set_elsewhere
        ):
            problems.append(f"{variable}: template.yaml does not set it: functions should be 'none'")
    assert not problems, "\n".join(problems)


def test_every_template_parameter_is_documented_with_its_type_and_default(reference: str) -> None:
    rows = {_code(row["parameter"]): row for row in _chapter_rows(reference, "Template parameters")}
    parameters = SamTemplate.load(TEMPLATE).body.get("Parameters", {})
    problems = []
    for name, parameter in parameters.items():
        row = rows.get(name)
        if row is None:
            problems.append(f"{name}: not documented")
            continue
        default = parameter.get("Default")
        expected = "required" if default is None else "`" + (str(default) or '""') + "`"
        if row["default"] != expected:
            problems.append(f"{name}: default {row['default']!r}, template.yaml's is {expected!r}")
        if row["type"] != parameter["Type"]:
            problems.append(f"{name}: type {row['type']!r}, template.yaml's is {parameter['Type']!r}")
        if len(_plain(row["meaning"])) < 10:
            problems.append(f"{name}: no meaning given")
    problems += [f"{name}: documented, not a parameter of template.yaml" for name in rows if name not in parameters]
    assert not problems, "\n".join(problems)


# -- links -----------------------------------------------------------------------------------------------

LINKED_DOCUMENTS = [README, REFERENCE, ROOT / "docs" / "iam-troubleshooting.md", ROOT / "docs" / "operations.md"]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", document.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("document", LINKED_DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_and_anchor_resolves(document: Path) -> None:
    assert document.exists(), f"{document.relative_to(ROOT)} is missing"
    text = re.sub(r"```.*?```", "", document.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    assert not broken, f"{document.name}: " + "; ".join(broken)
