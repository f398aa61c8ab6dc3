"""The metrics the code can emit (read from its source) and the ones docs/metrics.md documents.

Code side: every ``add_metric(name=..., unit=MetricUnit.X)`` call in the package. A literal ``name`` is
the metric; a computed one must come from a module-level name table (a dict bound to a ``METRIC...``
name, e.g. ``METRIC_BY_RESULT``) whose values are literal names. Anything else fails loudly: a name
this scan cannot read is a metric the reference could silently miss.
"""

from __future__ import annotations

import ast
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

PACKAGE = ROOT / "functions" / "ecr_automation"
METRICS_DOC = ROOT / "docs" / "metrics.md"
TABLE_HEADER = re.compile(r"^\|\s*metric\s*\|\s*unit\s*\|")
ROW = re.compile(r"^\|\s*`(?P<name>[A-Za-z0-9]+)`\s*\|\s*(?P<unit>[A-Za-z/]+)\s*\|\s*(?P<emitted_by>[^|]*)\|")

# What the issue calls the business metrics, by the names the code gives them.
BUSINESS_METRICS = {
    "TagsClaimed": "tags claimed",
    "ViolationsReverted": "violations",
    "ViolationsReported": "violations",
    "ViolationsUnrecoverable": "violations",
    "TagsWritten": "tags written",
    "AlertsSent": "alerts sent",
    "ImagesReplicated": "images replicated",
    "BytesCopied": "bytes copied",
    "EventsRejected": "events rejected",
    "EventsIgnored": "events ignored",
}


@dataclass(frozen=True)
class Emission:
    name: str
    unit: str
    module: str  # path relative to the package
    line: int


class UnreadableMetricNameError(AssertionError):
    pass


def _metric_tables(tree: ast.Module) -> list[str]:
    """String values of module-level dicts bound to a name starting with METRIC."""
    names: list[str] = []
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if not isinstance(value, ast.Dict):
            continue
        if not any(isinstance(target, ast.Name) and target.id.startswith("METRIC") for target in targets):
            continue
        for item in value.values:
            if not (isinstance(item, ast.Constant) and isinstance(item.value, str)):
                raise UnreadableMetricNameError(f"a value of a METRIC table is not a literal string: {ast.dump(item)}")
            names.append(item.value)
    return names


def _reads_a_table(name: ast.expr | None) -> bool:
    """A variable (bound from the table, as ``if metric := METRIC_BY_RESULT.get(...)``) or the table indexed."""
    if isinstance(name, ast.Name):
        return True
    if isinstance(name, ast.Subscript) and isinstance(name.value, ast.Name):
        return name.value.id.startswith("METRIC")
    return False


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def code_emissions(package: Path = PACKAGE) -> list[Emission]:
    emissions: list[Emission] = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module = path.relative_to(package).as_posix()
        tables: list[str] | None = None
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "add_metric":
                continue
            where = f"{module}:{node.lineno}"
            name, unit = _keyword(node, "name"), _keyword(node, "unit")
            if not (
                isinstance(unit, ast.Attribute) and isinstance(unit.value, ast.Name) and unit.value.id == "MetricUnit"
            ):
                raise UnreadableMetricNameError(f"{where}: add_metric needs unit=MetricUnit.<Unit>")
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                emissions.append(Emission(name.value, unit.attr, module, node.lineno))
                continue
            if tables is None:
                tables = _metric_tables(tree)
            if tables and _reads_a_table(name):
                emissions.extend(Emission(value, unit.attr, module, node.lineno) for value in tables)
                continue
            raise UnreadableMetricNameError(
                f"{where}: add_metric(name=...) must be a literal, or come from a module-level METRIC... dict "
                "of literal names, so tests/unit/test_metrics_doc.py can read it"
            )
    return emissions


@dataclass(frozen=True)
class DocumentedMetric:
    name: str
    unit: str
    emitted_by: str


def documented_metrics(doc: Path = METRICS_DOC) -> dict[str, DocumentedMetric]:
    """The rows of the metrics table (the one whose header starts ``| metric | unit |``)."""
    rows: dict[str, DocumentedMetric] = {}
    in_table = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if TABLE_HEADER.match(line):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        if set(line.replace("|", "").strip()) <= {"-", ":", " "}:
            continue  # the separator row
        match = ROW.match(line)
        assert match, f"docs/metrics.md: cannot read the row {line!r} (expected | `Name` | Unit | ...)"
        name = match["name"]
        assert name not in rows, f"docs/metrics.md: {name} has two rows"
        rows[name] = DocumentedMetric(name, match["unit"], match["emitted_by"].strip())
    assert rows, "docs/metrics.md has no metrics table"
    return rows


def emf_records(text: str) -> list[dict[str, Any]]:
    """The Embedded Metric Format objects among printed lines (Powertools' ``log_metrics`` output)."""
    records = []
    for line in text.splitlines():
        if '"_aws"' not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "CloudWatchMetrics" in record.get("_aws", {}):
            records.append(record)
    return records


def emitted_units(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Metric name -> the units it was published with, over EMF records."""
    units: dict[str, set[str]] = defaultdict(set)
    for record in records:
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                units[metric["Name"]].add(metric["Unit"])
    return units
