#!/usr/bin/env python
"""Summarise and render one scan of many findings, as the notifier does, and report time and memory.

For each scanner shape (basic: ECR's ``findings[]``; enhanced: ``enhancedFindings[]``, Inspector's
shape) it generates the findings deterministically from ``--seed``, as pages of up to 1,000 the way
``DescribeImageScanFindings`` returns them, and times, over ``--runs`` runs (the median counts):
parsing each finding (``Finding.from_basic`` / ``from_enhanced``), ``summarize`` (one pass, a bounded
heap of the top ``--max-findings``) and ``render_scan`` (the Block Kit message).

Memory: the peak that ``tracemalloc`` sees while ``summarize`` consumes the pages one at a time, next to
the size of the same findings held at once (a list of the parsed findings): it should stay flat as
``--findings`` grows, because only what the message shows is kept.

Prints one JSON line, then one line for people. Exit status: 0, or 1 with ``--check`` when a median is
above ``--target`` seconds.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "functions") not in sys.path:
    sys.path.append(str(ROOT / "functions"))

from ecr_automation.logic.notify import (  # noqa: E402 - after the path set-up above
    SCANNER_BASIC,
    SCANNER_ENHANCED,
    render_scan,
    summarize,
)
from ecr_automation.models.domain import RepositoryRef  # noqa: E402
from ecr_automation.models.findings import Finding, ScannedImage  # noqa: E402
from ecr_automation.rules import IgnoredVulnerability, NotifyRule  # noqa: E402

PAGE_SIZE = 1000  # the most DescribeImageScanFindings returns per page
TODAY = date(2026, 11, 28)
IMAGE = ScannedImage(
    RepositoryRef("123456789012", "us-east-1", "team/web"),
    "sha256:" + "e80a9a9bcbbc57bd" * 4,
    ("v1.2.3", "latest"),
)
# Roughly the mix of a large image's scan: few criticals, many mediums and lows.
SEVERITY_WEIGHTS = {"CRITICAL": 2, "HIGH": 10, "MEDIUM": 40, "LOW": 38, "INFORMATIONAL": 8, "UNDEFINED": 2}
PACKAGES = ["openssl", "libnghttp2-14", "zlib1g", "libc6", "curl", "glibc", "python3.11", "lodash", "log4j-core"]

Page = dict[str, Any]


def _severity(rng: random.Random) -> str:
    return rng.choices(list(SEVERITY_WEIGHTS), weights=list(SEVERITY_WEIGHTS.values()))[0]


def basic_finding(rng: random.Random, index: int) -> dict[str, Any]:
    cve = f"CVE-{2015 + index % 10}-{10000 + index}"
    return {
        "name": cve,
        "description": f"A flaw in {rng.choice(PACKAGES)} allows attackers to do things. " * 3,
        "uri": f"https://security-tracker.debian.org/tracker/{cve}",
        "severity": _severity(rng),
        "attributes": [
            {"key": "package_version", "value": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}-1"},
            {"key": "package_name", "value": rng.choice(PACKAGES)},
            {"key": "CVSS3_VECTOR", "value": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"},
            {"key": "CVSS3_SCORE", "value": f"{rng.uniform(1, 10):.1f}"},
        ],
    }


def enhanced_finding(rng: random.Random, index: int) -> dict[str, Any]:
    cve = f"CVE-{2015 + index % 10}-{10000 + index}"
    package = rng.choice(PACKAGES)
    version = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}"
    fixed = rng.random() < 0.6
    return {
        "awsAccountId": "123456789012",
        "findingArn": f"arn:aws:inspector2:us-east-1:123456789012:finding/{index:032x}",
        "title": f"{cve} - {package}",
        "description": f"A flaw in {package} allows attackers to do things. " * 3,
        "severity": _severity(rng),
        "status": "ACTIVE",
        "type": "PACKAGE_VULNERABILITY",
        "score": round(rng.uniform(1, 10), 1),
        "exploitAvailable": "YES" if rng.random() < 0.05 else "NO",
        "fixAvailable": "YES" if fixed else "NO",
        "packageVulnerabilityDetails": {
            "vulnerabilityId": cve,
            "source": "NVD",
            "sourceUrl": f"https://nvd.nist.gov/vuln/detail/{cve}",
            "vendorSeverity": "HIGH",
            "referenceUrls": [f"https://nvd.nist.gov/vuln/detail/{cve}"],
            "vulnerablePackages": [
                {
                    "name": package,
                    "version": version,
                    "fixedInVersion": version + ".1" if fixed else "NotAvailable",
                    "packageManager": "OS",
                    "arch": "X86_64",
                }
            ],
        },
        "remediation": {"recommendation": {"text": f"Upgrade {package}."}},
        "resources": [{"type": "AWS_ECR_CONTAINER_IMAGE", "id": "arn:aws:ecr:..."}],
    }


SHAPES: dict[str, tuple[Callable[[random.Random, int], dict[str, Any]], Callable[[Any], Finding], str, str]] = {
    SCANNER_BASIC: (basic_finding, Finding.from_basic, "findings", SCANNER_BASIC),
    SCANNER_ENHANCED: (enhanced_finding, Finding.from_enhanced, "enhancedFindings", SCANNER_ENHANCED),
}


def pages(shape: str, count: int, seed: int) -> Iterator[Page]:
    """The scan's pages, generated one at a time (as the paginator reads them): same seed, same pages."""
    make, _, key, _ = SHAPES[shape]
    rng = random.Random(f"{seed}-{shape}")
    for start in range(0, count, PAGE_SIZE):
        yield {"imageScanFindings": {key: [make(rng, index) for index in range(start, min(start + PAGE_SIZE, count))]}}


def findings_of(shape: str, source: Iterator[Page]) -> Iterator[Finding]:
    """What the findings adapter hands the notifier: parsed findings, one page held at a time."""
    _, parse, key, _ = SHAPES[shape]
    for page in source:
        yield from (parse(raw) for raw in page["imageScanFindings"][key])


def bench_rule(max_findings: int) -> NotifyRule:
    return NotifyRule(
        threshold="HIGH",
        max_findings=max_findings,
        ignore=[
            IgnoredVulnerability(id="CVE-2016-10001", reason="accepted", expires=date(2027, 1, 1)),
            IgnoredVulnerability(id="CVE-2017-10002", reason="expired", expires=date(2026, 1, 1)),
        ],
    )


def measure(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    rule = bench_rule(args.max_findings)
    scanner = SHAPES[shape][3]
    # The pages are generated before the clock starts: the adapter's network reads are not this code's.
    generated = list(pages(shape, args.findings, args.seed))
    timings = []
    message_blocks = 0
    for _ in range(args.runs):
        gc.collect()
        started = time.perf_counter()
        report = summarize(findings_of(shape, iter(generated)), rule, today=TODAY)
        message = render_scan(report, IMAGE, scanner=scanner)
        timings.append(time.perf_counter() - started)
        message_blocks = len(message.blocks)

    # Peak memory while summarize consumes the scan one page at a time, generated on the fly...
    del generated
    gc.collect()
    tracemalloc.start()
    summarize(findings_of(shape, pages(shape, args.findings, args.seed)), rule, today=TODAY)
    _, streaming_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # ...next to the same findings held at once.
    gc.collect()
    tracemalloc.start()
    held = list(findings_of(shape, pages(shape, args.findings, args.seed)))
    held_size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del held

    return {
        "scanner": shape,
        "findings": args.findings,
        "runs": args.runs,
        "median_s": round(statistics.median(timings), 4),
        "min_s": round(min(timings), 4),
        "max_s": round(max(timings), 4),
        "reportable": report.reportable,
        "shown": len(report.top),
        "blocks": message_blocks,
        "summarize_peak_bytes": streaming_peak,
        "findings_held_bytes": held_size,
        "peak_vs_held": round(streaming_peak / held_size, 3) if held_size else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--findings", type=int, default=10_000, help="findings in the scan (default 10000)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs; the median is reported (default 7)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-findings", type=int, default=10, help="findings the message lists (1..40)")
    parser.add_argument("--target", type=float, default=0.5, help="seconds a median may take (default 0.5)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a median is above --target")
    args = parser.parse_args(argv)
    if args.findings < 1 or args.runs < 1 or not 1 <= args.max_findings <= 40:
        parser.error("--findings and --runs must be positive, --max-findings within 1..40")

    results = [measure(shape, args) for shape in SHAPES]
    within = all(result["median_s"] <= args.target for result in results)
    print(json.dumps({"bench": "render", "target_s": args.target, "within_target": within, "results": results}))
    print(
        "; ".join(
            f"{r['scanner']}: {r['findings']} findings summarised and rendered in {r['median_s'] * 1000:.0f} ms"
            f" (median of {r['runs']}), summarise peak {r['summarize_peak_bytes'] / 1024:.0f} KiB"
            f" vs {r['findings_held_bytes'] / 1024 / 1024:.1f} MiB for the findings held at once"
            for r in results
        )
        + f" -- target {args.target} s: {'met' if within else 'MISSED'}"
    )
    return 1 if args.check and not within else 0


if __name__ == "__main__":
    sys.exit(main())
