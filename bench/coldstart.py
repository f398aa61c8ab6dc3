#!/usr/bin/env python
"""How much each Lambda handler costs to import, against a minimal handler, measured in the same run.

The handlers are discovered: every module of ``functions/ecr_automation/handlers/`` that defines
``lambda_handler``. The floor is ``bench/minimal/minimal_handler.py`` (boto3 and Powertools Logger, Tracer and
Metrics, nothing else); ``bench/minimal/pydantic_floor.py`` (that and pydantic with one model) is shown
for reference. Each run imports every target once in a fresh interpreter, twice over:

- ``-X importtime``: the target module's cumulative import time, as Python reports it;
- plain: the whole process's CPU time (user + system, from ``wait4``), interpreter start included.

Targets are interleaved (each run visits them all, in an order rotated from run to run), so a machine
that slows down mid-way slows every target alike. Medians over ``--runs``; the ratio is the handler's
median over the minimal handler's. One warm-up import per target fills ``__pycache__`` first, as the
shipped bytecode does in Lambda.

The environment is Lambda's as far as imports go: ``LAMBDA_TASK_ROOT`` is set, so Tracer is enabled
and patches the SDK as it does in Lambda. ``--code DIR`` imports from a built artifact
(``sam build``'s ``.aws-sam/build/<Function>``, dependencies included; for this machine's architecture)
instead of the source tree and the virtualenv, with ``-S`` (no site-packages) and no bytecode written,
as in Lambda; add ``--no-bytecode`` to import a copy without its ``__pycache__`` directories, where every
module of the artifact compiles on every import, as it did before ``functions/Makefile`` shipped bytecode.

On a busy machine (timing medians move with the load) ``--instructions`` also counts the instructions
each import executes, under valgrind: deterministic, so one run each (``--runs 0`` for that alone).

Prints a table and one JSON line. Exit status: 0, or 1 with ``--check`` when a ratio is above
``--target`` (1.3 by default).
"""

from __future__ import annotations

import os
import sys

# bench/ holds a copy.py, which would shadow the standard library's for this script's own imports.
_HERE = os.path.dirname(os.path.abspath(__file__))  # noqa: PTH100, PTH120 - before pathlib is imported
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]  # noqa: PTH100

import argparse  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "functions" / "ecr_automation" / "handlers"
MINIMAL = "minimal_handler"
# Shown for reference, never checked: the minimal handler plus pydantic and one model, the floor of any
# handler here (every function parses its settings, rules and events with pydantic).
REFERENCES = ["pydantic_floor"]


def discover_handlers(directory: Path = HANDLERS) -> list[str]:
    """Every module of the handlers package that defines ``lambda_handler``, as an importable name."""
    found = []
    for path in sorted(directory.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "lambda_handler"
            for node in tree.body
        ):
            found.append(f"ecr_automation.handlers.{path.stem}")
    return found


def parse_importtime(stderr: str, module: str) -> int:
    """The cumulative microseconds ``-X importtime`` reports for ``module``."""
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == module:
            return int(parts[1])
    raise RuntimeError(f"{module} is not in the -X importtime output:\n{stderr[-2000:]}")


def imported_modules(stderr: str) -> dict[str, int]:
    """Every module ``-X importtime`` saw imported, with its own (self) microseconds."""
    modules: dict[str, int] = {}
    for line in stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0].strip().isdigit():
            modules[parts[2].strip()] = int(parts[0])
    return modules


@dataclass
class Environment:
    python: str
    code: Path | None

    def variables(self) -> dict[str, str]:
        task_root = self.code or ROOT / "functions"
        path = [str(ROOT / "bench" / "minimal")] + ([str(self.code)] if self.code else [str(ROOT / "functions")])
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PYTHON", "POWERTOOLS_", "AWS_", "LAMBDA_", "_X_AMZN"))
        }
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(path),
                "LAMBDA_TASK_ROOT": str(task_root),
                "AWS_LAMBDA_FUNCTION_NAME": "coldstart-bench",
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "POWERTOOLS_SERVICE_NAME": "ecr-automation",
                "POWERTOOLS_METRICS_NAMESPACE": "ECRAutomation",
            }
        )
        if self.code is not None:
            env["PYTHONDONTWRITEBYTECODE"] = "1"  # Lambda's code directory is read-only
        return env

    def argv(self, module: str, *, importtime: bool) -> list[str]:
        flags = ["-X", "importtime"] if importtime else []
        # -S with a built artifact: only the artifact's own packages, as in Lambda's task root.
        isolation = ["-S"] if self.code else []
        return [self.python, *isolation, *flags, "-c", f"import {module}"]

    def instructions(self, module: str) -> int:
        """Instructions one fresh import of ``module`` executes (valgrind's callgrind): the same on every run."""
        valgrind = shutil.which("valgrind")
        if valgrind is None:
            raise RuntimeError("--instructions needs valgrind (apt-get install valgrind)")
        completed = subprocess.run(
            [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *self.argv(module, importtime=False)],
            env={**self.variables(), "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        collected = [line for line in completed.stderr.splitlines() if "Collected :" in line]
        if completed.returncode != 0 or not collected:
            raise RuntimeError(f"valgrind on {module} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
        return int(collected[-1].rsplit(":", 1)[1].strip())

    def run(self, module: str, *, importtime: bool) -> tuple[float, str]:
        """(CPU seconds of the whole process, its stderr) for one fresh import of ``module``."""
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                self.argv(module, importtime=importtime), env=self.variables(), stdout=subprocess.DEVNULL, stderr=stderr
            )
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            stderr.seek(0)
            text = stderr.read().decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"importing {module} failed ({process.returncode}):\n{text[-3000:]}")
        return usage.ru_utime + usage.ru_stime, text


@dataclass
class Samples:
    importtime_us: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    modules: dict[str, int] = field(default_factory=dict)
    instructions: int | None = None


def measure(environment: Environment, targets: list[str], runs: int, *, instructions: bool) -> dict[str, Samples]:
    samples = {target: Samples() for target in targets}
    for target in targets:  # warm-up: fills __pycache__ (source tree only) and the OS's file cache
        _, stderr = environment.run(target, importtime=True)
        samples[target].modules = imported_modules(stderr)
    for run in range(runs):
        shift = run % len(targets)
        for target in targets[shift:] + targets[:shift]:
            _, stderr = environment.run(target, importtime=True)
            samples[target].importtime_us.append(parse_importtime(stderr, target))
            cpu, _ = environment.run(target, importtime=False)
            samples[target].cpu_s.append(cpu)
    if instructions:
        for target in targets:
            samples[target].instructions = environment.instructions(target)
    return samples


def _ratio(value: float | None, floor: float | None) -> float | None:
    return None if value is None or not floor else round(value / floor, 2)


def _median(values: list[float] | list[int]) -> float | None:
    return statistics.median(values) if values else None


def heaviest_extras(handler: Samples, minimal: Samples, count: int) -> list[tuple[str, int]]:
    """The modules a handler imports beyond the minimal handler, by their own import time."""
    extras = {name: us for name, us in handler.modules.items() if name not in minimal.modules}
    return sorted(extras.items(), key=lambda item: -item[1])[:count]


def report(samples: dict[str, Samples], target_ratio: float, explain: int) -> dict[str, Any]:
    minimal = samples[MINIMAL]
    floor_it, floor_cpu = _median(minimal.importtime_us), _median(minimal.cpu_s)
    results: list[dict[str, Any]] = []
    for name, measured in samples.items():
        importtime, cpu = _median(measured.importtime_us), _median(measured.cpu_s)
        extras = {} if name in (MINIMAL, *REFERENCES) else dict(heaviest_extras(measured, minimal, explain))
        results.append(
            {
                "module": name,
                "importtime_ms": None if importtime is None else round(importtime / 1000, 1),
                "importtime_ratio": _ratio(importtime, floor_it),
                "cpu_ms": None if cpu is None else round(cpu * 1000, 1),
                "cpu_ratio": _ratio(cpu, floor_cpu),
                "instructions_m": None if measured.instructions is None else round(measured.instructions / 1e6),
                "instructions_ratio": _ratio(measured.instructions, minimal.instructions),
                "modules": len(measured.modules),
                "extra_modules": len(set(measured.modules) - set(minimal.modules)),
                "heaviest_extras_us": extras,
            }
        )
    ratios = ("importtime_ratio", "cpu_ratio", "instructions_ratio")
    ok = all(
        row[ratio] is None or row[ratio] <= target_ratio
        for row in results
        if row["module"] not in REFERENCES
        for ratio in ratios
    )
    return {"target_ratio": target_ratio, "results": results, "ok": ok}


def print_table(summary: dict[str, Any], runs: int) -> None:
    print(f"median of {runs} runs; ratio = handler / {MINIMAL}; target <= {summary['target_ratio']}")
    print(
        f"{'module':42} {'importtime':>11} {'ratio':>6} {'CPU':>9} {'ratio':>6} "
        f"{'instr.':>7} {'ratio':>6} {'modules':>8}"
    )

    def cell(value: float | None, unit: str, width: int) -> str:
        return f"{'-' if value is None else f'{value:.1f}' if unit else f'{value:.2f}'}{unit}".rjust(width)

    for row in summary["results"]:
        note = "  (reference)" if row["module"] in REFERENCES else ""
        print(
            f"{row['module']:42} {cell(row['importtime_ms'], ' ms', 11)} {cell(row['importtime_ratio'], '', 6)} "
            f"{cell(row['cpu_ms'], ' ms', 9)} {cell(row['cpu_ratio'], '', 6)} "
            f"{'-' if row['instructions_m'] is None else str(row['instructions_m']) + 'M':>7} "
            f"{cell(row['instructions_ratio'], '', 6)} {row['modules']:>8}{note}"
        )
    for row in summary["results"]:
        if row["heaviest_extras_us"]:
            extras = ", ".join(f"{name} {us / 1000:.1f}" for name, us in row["heaviest_extras_us"].items())
            print(f"  {row['module']} (+{row['extra_modules']} modules), heaviest own ms: {extras}")
    print("OK" if summary["ok"] else "ABOVE TARGET")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="interleaved runs (default 15)")
    parser.add_argument("--target", type=float, default=1.3, help="highest ratio allowed (default 1.3)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio is above --target")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run (default: this one)")
    parser.add_argument("--code", type=Path, help="import from this built artifact instead of the source tree")
    parser.add_argument("--no-bytecode", action="store_true", help="compile every module from source each time")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions under valgrind (one run: deterministic)"
    )
    parser.add_argument("--explain", type=int, default=6, help="show this many heaviest extra modules")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("handlers", nargs="*", help="handler modules (default: every one found)")
    args = parser.parse_args(argv)

    handlers = args.handlers or discover_handlers(args.code / "ecr_automation" / "handlers" if args.code else HANDLERS)
    if not handlers:
        print("no handler found", file=sys.stderr)
        return 2
    if args.no_bytecode and not args.code:
        print("--no-bytecode needs --code: the artifact is copied without its bytecode", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="coldstart-code-") as stripped:
        code = args.code.resolve() if args.code else None
        if code is not None and args.no_bytecode:
            # What `sam build` shipped before functions/Makefile: every module compiles on every cold start.
            code = Path(shutil.copytree(code, Path(stripped) / "code", ignore=shutil.ignore_patterns("__pycache__")))
        environment = Environment(args.python, code)
        try:
            samples = measure(environment, [MINIMAL, *REFERENCES, *handlers], args.runs, instructions=args.instructions)
        except RuntimeError as error:
            print(error, file=sys.stderr)
            return 2
    summary = report(samples, args.target, args.explain)
    summary.update({"runs": args.runs, "python": args.python, "code": str(args.code or ""), "cpus": os.cpu_count()})
    print_table(summary, args.runs)
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if args.check and not summary["ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
