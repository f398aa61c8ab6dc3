"""The load-and-fault harness (bench/load.py), run in-process on small workloads.

Both functions run concurrently against a moto server of the harness's own, with duplicate and
out-of-order delivery, feedback from their own writes, and injected faults; the harness computes
the expected end state from what it pushed and reports. These tests hold its verdict and the
consistency of its numbers; its full-size runs are for people (bench/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.load import GUARD, RETAG, main

THROTTLE_CODES = ("ThrottlingException", "ProvisionedThroughputExceededException")


def test_throttled_duplicated_conflicting_workload_converges(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    # Seed 7 has the later push of a conflict handled first in most runs: it caught retag handing a
    # claim over without anyone reverting the tag (fixed in e2cfd71). Standard retries and short
    # retry delays keep the run near 20 s; adaptive mode is slower under throttling (bench/README.md).
    status = main(
        [
            *("--pushes", "40", "--repositories", "4", "--concurrency", "4", "--duplicates", "2"),
            *("--throttle", "0.1", "--conflicts", "2", "--seed", "7"),
            *("--retry-mode", "standard", "--retry-delay", "0.5", "--timeout", "120", "--quiet"),
            *("--json", str(report_path)),
        ]
    )

    report = json.loads(report_path.read_text())
    (run,) = report["runs"]
    assert run["verdict"]["ok"], "\n".join(run["verdict"]["mismatches"])
    assert status == 0 and report["ok"]

    events = run["events"]
    assert events["pushes"] == 40 and events["conflicting_pushes"] == 2
    assert events["distinct"] == events["pushes"] + events["conflicting_pushes"] + events["feedback"]
    assert events["feedback"] > 0  # the functions' PutImage calls came back as PUSH events
    assert events["deliveries"] == events["distinct"] * 2 * 2  # two copies, two functions
    for function in (GUARD, RETAG):
        stats = run["functions"][function]
        assert stats["deliveries"] == events["distinct"] * 2
        assert stats["succeeded"] == stats["deliveries"] and stats["dead_lettered"] == 0
        assert stats["invocations"] == stats["succeeded"] + stats["failed_attempts"]
        latency = stats["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        for counts in stats["aws_calls"].values():
            assert counts["calls"] <= counts["attempts"]
    assert run["invocations"] >= events["distinct"] * 2 * 2
    assert run["throughput_per_second"] > 0

    # Every injected throttle was either retried by the SDK or surfaced as an error after its retries.
    assert run["throttles_injected"] > 0
    surfaced = sum(
        count
        for stats in run["functions"].values()
        for error, count in stats["aws_errors_after_retries"].items()
        if error.endswith(THROTTLE_CODES)
    )
    assert run["retries_observed"] >= run["throttles_injected"] - surfaced
    assert run["violations_published"] >= 2  # one per conflicting push, at least once


def test_an_operation_that_always_fails_dead_letters_instead_of_succeeding(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    # Small: the failing repository's retag invocations queue behind its lease while each spends
    # the SDK's seven attempts on PutImage.
    status = main(
        [
            *("--pushes", "6", "--repositories", "2", "--concurrency", "4", "--duplicates", "1"),
            *("--fail-always", "PutImage", "--fail-repository", "bench/service-00", "--seed", "3"),
            *("--retry-mode", "standard", "--retry-delay", "0.5", "--timeout", "120", "--quiet"),
            *("--json", str(report_path)),
        ]
    )

    report = json.loads(report_path.read_text())
    (run,) = report["runs"]
    # The expectation holds everywhere else, and the failing repository's invocations failed loudly.
    assert run["verdict"]["ok"], "\n".join(run["verdict"]["mismatches"])
    assert status == 0
    assert run["verdict"]["skipped_repositories"] == ["bench/service-00"]
    assert run["forced_failures"] > 0

    retag = run["functions"][RETAG]
    assert retag["dead_lettered"] > 0
    assert retag["failed_attempts"] >= 3 * retag["dead_lettered"]  # the first try and both retries failed
    for stats in run["functions"].values():
        assert stats["succeeded_despite_forced_failure"] == 0
    assert run["dead_lettered"] == len(run["dead_letters"]) > 0
    for letter in run["dead_letters"]:
        assert letter["repository"] == "bench/service-00" and letter["expected"]
        assert len(letter["errors"]) == 3 and any("PutImage operation" in error for error in letter["errors"])
    # Every push into the failing repository was dead-lettered by retag, none of them succeeded.
    failing_pushes = {letter["event_id"] for letter in run["dead_letters"] if letter["origin"] == "push"}
    assert len(failing_pushes) == 3
