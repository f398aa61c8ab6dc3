"""docs/metrics.md and the code agree: every metric the code can emit has its row, every row is emitted."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

from ecr_automation.local.template import SamTemplate
from tests.conftest import ROOT
from tests.support.metrics import (
    BUSINESS_METRICS,
    UnreadableMetricNameError,
    code_emissions,
    documented_metrics,
)


def test_every_metric_the_code_emits_is_documented_with_its_unit() -> None:
    documented = documented_metrics()
    emissions = code_emissions()
    assert emissions, "the scan found no add_metric call: is the package path right?"

    missing = sorted({f"{e.name} ({e.module}:{e.line})" for e in emissions if e.name not in documented})
    assert missing == [], f"add a row to docs/metrics.md for: {missing}"
    wrong_unit = sorted(
        f"{e.name}: code says {e.unit}, docs/metrics.md says {documented[e.name].unit}"
        for e in emissions
        if documented[e.name].unit != e.unit
    )
    assert wrong_unit == []


def test_every_documented_metric_is_emitted_somewhere() -> None:
    emitted = {emission.name for emission in code_emissions()}
    stale = sorted(set(documented_metrics()) - emitted)
    assert stale == [], f"docs/metrics.md documents metrics no code emits: {stale}"


def test_each_metric_has_one_unit() -> None:
    units: dict[str, set[str]] = {}
    for emission in code_emissions():
        units.setdefault(emission.name, set()).add(emission.unit)
    assert {name: unit for name, unit in units.items() if len(unit) > 1} == {}


def test_the_business_metrics_are_documented_and_bytes_are_bytes() -> None:
    documented = documented_metrics()
    assert set(BUSINESS_METRICS) <= set(documented)
    assert documented["BytesCopied"].unit == "Bytes"
    assert all(documented[name].unit == "Count" for name in BUSINESS_METRICS if name != "BytesCopied")


def test_the_scan_reads_literal_names_and_metric_tables(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text(
        textwrap.dedent(
            """
            METRIC_BY_RESULT = {"a": "FirstMetric", "b": "SecondMetric"}
            metrics.add_metric(name="Literal", unit=MetricUnit.Bytes, value=1)
            metrics.add_metric(name=METRIC_BY_RESULT["a"], unit=MetricUnit.Count, value=1)
            if metric := METRIC_BY_RESULT.get(result):
                metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
            """
        )
    )
    found = {(emission.name, emission.unit) for emission in code_emissions(tmp_path)}
    assert found == {("Literal", "Bytes"), ("FirstMetric", "Count"), ("SecondMetric", "Count")}


@pytest.mark.parametrize(
    "source",
    [
        'name = "Computed" + suffix\nmetrics.add_metric(name=name, unit=MetricUnit.Count, value=1)',
        'metrics.add_metric(name=f"Tags{kind}", unit=MetricUnit.Count, value=1)',
        'metrics.add_metric(name="NoUnit", unit=unit, value=1)',
        'METRICS = {"a": prefix + "X"}\nmetrics.add_metric(name=METRICS["a"], unit=MetricUnit.Count, value=1)',
    ],
)
def test_a_name_the_scan_cannot_read_fails_loudly(tmp_path: Path, source: str) -> None:
    ast.parse(source)
    (tmp_path / "handler.py").write_text(source)
    with pytest.raises(UnreadableMetricNameError):
        code_emissions(tmp_path)


def test_the_functions_the_reference_names_exist() -> None:
    functions = set(SamTemplate.load(ROOT / "template.yaml").functions())
    named = {
        (metric.name, word)
        for metric in documented_metrics().values()
        for word in re.findall(r"\b[A-Z][A-Za-z]+Function\b", metric.emitted_by)
    }
    assert {(name, word) for name, word in named if word not in functions} == set()
