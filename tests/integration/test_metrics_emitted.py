"""Each business metric is emitted by a real run of the functions, as the EMF lines Powertools prints.

The runs are the local runner's (the template's functions, their environment from the template, moto
and a local registry standing in for AWS): the demo, two `simulate` runs for the other violation kinds,
and every function invoked once with a malformed event and once with one it does not handle.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecr_automation.cli import main
from ecr_automation.local.template import SamTemplate
from tests.conftest import EVENTS, ROOT
from tests.support.metrics import BUSINESS_METRICS, documented_metrics, emf_records, emitted_units

TEMPLATE = ROOT / "template.yaml"
MALFORMED = EVENTS / "malformed" / "missing-digest.json"
UNHANDLED = EVENTS / "unknown" / "unknown-detail-type.json"


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """Everything the functions print, Powertools' metrics included (the CLI sends it to stderr)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def run_cli(*argv: str) -> tuple[int, list[dict[str, Any]]]:
    with captured() as buffer:
        code = main(list(argv))
    return code, emf_records(buffer.getvalue())


def run_demo_verbose() -> list[dict[str, Any]]:
    """The demo's scenario (claims, retags, violations, Slack alerts, a replication), with metrics on."""
    from ecr_automation.local.demo import DEMO_RULES, IMAGES, REPLICATION_STEP, findings, scenario  # noqa: PLC0415
    from ecr_automation.local.simulation import run_simulation  # noqa: PLC0415

    with captured() as buffer:
        errors, _ = run_simulation(
            SamTemplate.load(TEMPLATE),
            scenario(),
            io.StringIO(),
            overrides={},
            findings=findings(),
            images=list(IMAGES.values()),
            overrides_from={REPLICATION_STEP: {"RULES_FILE": str(DEMO_RULES)}},
            verbose=True,
        )
    assert [error for error in errors if "rejected" not in error] == []
    return emf_records(buffer.getvalue())


def sqs_event_with_body(body: str, tmp_path: Path) -> Path:
    event = json.loads((EVENTS / "sqs" / "replication-job.json").read_text())
    event["Records"][0]["body"] = body
    path = tmp_path / "sqs-not-a-job.json"
    path.write_text(json.dumps(event))
    return path


def names(records: list[dict[str, Any]]) -> set[str]:
    return set(emitted_units(records))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    tmp_path = tmp_path_factory.mktemp("metrics")
    pair = [str(EVENTS / "ecr-push-tagged.json"), str(EVENTS / "ecr-push-conflicting.json")]
    results: dict[str, list[dict[str, Any]]] = {"demo": run_demo_verbose()}
    code, results["dry run"] = run_cli("simulate", "--verbose", "--dry-run", *pair)
    assert code == 0
    gone = [pair[0], str(EVENTS / "ecr-delete-by-digest.json"), pair[1]]
    code, results["image gone"] = run_cli("simulate", "--verbose", *gone)
    assert code == 0
    not_a_job = sqs_event_with_body('{"job_id": 1}', tmp_path)
    for function, spec in SamTemplate.load(TEMPLATE).functions().items():
        if spec.rules:  # fed by EventBridge
            _, results[f"{function} malformed"] = run_cli("invoke", function, str(MALFORMED), "--embedded", "--verbose")
            code, results[f"{function} unhandled"] = run_cli(
                "invoke", function, str(UNHANDLED), "--embedded", "--verbose"
            )
            assert code == 0
        else:  # fed by SQS
            code, results[f"{function} malformed"] = run_cli(
                "invoke", function, str(not_a_job), "--embedded", "--verbose"
            )
            assert code == 0
    return results


@pytest.mark.slow
@pytest.mark.parametrize("metric", sorted(BUSINESS_METRICS))
def test_each_business_metric_is_emitted_with_its_documented_unit(
    runs: dict[str, list[dict[str, Any]]], metric: str
) -> None:
    units = emitted_units([record for records in runs.values() for record in records])
    assert metric in units, f"{metric} ({BUSINESS_METRICS[metric]}) was not emitted by any run"
    assert units[metric] == {documented_metrics()[metric].unit}


@pytest.mark.slow
def test_the_demo_emits_the_guard_retag_notify_and_replication_metrics(runs: dict[str, list[dict[str, Any]]]) -> None:
    emitted = names(runs["demo"])
    assert {"TagsClaimed", "ViolationsReverted", "TagsWritten", "AlertsSent", "ImagesReplicated"} <= emitted
    copied = [value for record in runs["demo"] if "BytesCopied" in record for value in record["BytesCopied"]]
    assert sum(copied) > 0  # real blobs crossed to the local registry


@pytest.mark.slow
def test_violations_that_are_only_reported_or_cannot_be_repaired_are_counted_apart(
    runs: dict[str, list[dict[str, Any]]],
) -> None:
    assert "ViolationsReported" in names(runs["dry run"])
    assert "ViolationsReverted" not in names(runs["dry run"])
    assert "ViolationsUnrecoverable" in names(runs["image gone"])


@pytest.mark.slow
def test_every_function_counts_what_it_rejects_and_ignores(runs: dict[str, list[dict[str, Any]]]) -> None:
    for function, spec in SamTemplate.load(TEMPLATE).functions().items():
        assert "EventsRejected" in names(runs[f"{function} malformed"]), function
        if spec.rules:
            assert "EventsIgnored" in names(runs[f"{function} unhandled"]), function


@pytest.mark.slow
def test_metrics_land_in_the_template_namespace_with_the_documented_dimensions(
    runs: dict[str, list[dict[str, Any]]],
) -> None:
    variables = SamTemplate.load(TEMPLATE).body["Globals"]["Function"]["Environment"]["Variables"]
    records = [record for records in runs.values() for record in records]
    directives = [directive for record in records for directive in record["_aws"]["CloudWatchMetrics"]]
    assert {directive["Namespace"] for directive in directives} == {variables["POWERTOOLS_METRICS_NAMESPACE"]}
    assert {tuple(map(tuple, directive["Dimensions"])) for directive in directives} == {(("service",),)}
    assert {record["service"] for record in records} == {variables["POWERTOOLS_SERVICE_NAME"]}
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert f"`{variables['POWERTOOLS_METRICS_NAMESPACE']}`" in doc
