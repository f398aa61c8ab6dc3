#!/usr/bin/env python
"""A cold invocation under `sam local invoke`, with the bytecode the artifact ships and without it.

Lambda's code directory is read-only (and `sam local invoke` mounts the artifact read-only at /var/task),
so a module without a usable .pyc is compiled on every cold start. This builds the native-architecture
copy of the template the way tests/samlocal does (`sam build`, functions/Makefile where the template uses
it), takes one function's artifact twice:

- **with**: as built. If the artifact holds no .pyc (a build without functions/Makefile), the bench
  compiles one itself, ``python3.13 -m compileall --invalidation-mode unchecked-hash``, and says so;
- **without**: the same artifact with every ``__pycache__/`` and ``*.pyc`` removed;

and invokes each in a fresh container (every `sam local invoke` is a cold start), alternating, against a
moto server on the Docker bridge reset before each run. Medians of the REPORT line's Init Duration and
Duration, and of the whole `sam local invoke` wall time; the ratio is without over with.

Under SAM's runtime interface emulator the runtime starts when the first invocation arrives, so the
handler's imports land in Duration and Init Duration stays near zero: both are reported as printed.

Needs what the tier needs: root, dockerd (started here if none runs), debootstrap, .venv-tools' sam,
python3.13 on PATH. Prints a table and one JSON line.
"""

from __future__ import annotations

import os
import sys

# bench/ holds a copy.py, which would shadow the standard library's for this script's own imports.
_HERE = os.path.dirname(os.path.abspath(__file__))  # noqa: PTH100, PTH120 - before pathlib is imported
_ROOT = os.path.dirname(_HERE)  # noqa: PTH120
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]  # noqa: PTH100
sys.path[:0] = [_ROOT, os.path.join(_ROOT, "functions")]  # noqa: PTH118

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(_ROOT)
VARIANTS = ("with", "without")


def count_bytecode(directory: Path) -> int:
    return sum(1 for _ in directory.rglob("*.pyc"))


def prepare_variants(built_template: Path, function: str, work: Path) -> tuple[dict[str, Path], bool, dict[str, int]]:
    """Two built trees holding ``function``'s artifact: as built (compiled here if it has no .pyc), and without."""
    artifact = built_template.parent / function
    compiled_here = False
    counts = {}
    templates = {}
    for variant in VARIANTS:
        tree = work / f"build-{variant}"
        shutil.copytree(artifact, tree / function, symlinks=True)
        shutil.copy2(built_template, tree / "template.yaml")
        code = tree / function
        if variant == "with" and count_bytecode(code) == 0:
            compiled_here = True
            compile_all = ["python3.13", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
            subprocess.run([*compile_all, "-s", str(code), "-p", "/var/task", str(code)], check=True)
        if variant == "without":
            for cache in [path for path in code.rglob("__pycache__") if path.is_dir()]:
                shutil.rmtree(cache)
            for stray in code.rglob("*.pyc"):
                stray.unlink()
        counts[variant] = count_bytecode(code)
        templates[variant] = tree / "template.yaml"
    return templates, compiled_here, counts


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    from tests.samlocal.base_image import ensure_base_image, lambda_architecture  # noqa: PLC0415
    from tests.samlocal.docker_host import DockerHost, cache_root  # noqa: PLC0415
    from tests.samlocal.sam import sam_build, sam_local_invoke  # noqa: PLC0415
    from tests.samlocal.stand_in import BridgeMotoServer, prepare_stand_in, stand_in_credentials  # noqa: PLC0415
    from tests.support.moto_server import REGION  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--function", default="TagGuardFunction")
    parser.add_argument("--event", default=str(ROOT / "events" / "ecr-push-tagged.json"))
    parser.add_argument("--runs", type=int, default=5, help="invocations of each variant (alternating)")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    event_path = Path(args.event).resolve()
    event = json.loads(event_path.read_text())
    docker = DockerHost()
    moto = None
    work = Path(tempfile.mkdtemp(prefix="cold-invoke-"))
    try:
        image = ensure_base_image(docker)
        moto = BridgeMotoServer(docker.bridge_address())
        os.environ.update(stand_in_credentials(moto))
        cache = cache_root() / "sam-cache"
        cache.mkdir(parents=True, exist_ok=True)
        built = sam_build(lambda_architecture(), work / "sam", cache, dict(os.environ))
        templates, compiled_here, counts = prepare_variants(built, args.function, work)
        sam_env = {**docker.env, **stand_in_credentials(moto)}

        samples: dict[str, dict[str, list[float]]] = {
            variant: {"init": [], "duration": [], "wall": []} for variant in VARIANTS
        }
        results: dict[str, Any] = {}
        for run in range(args.runs):
            order = VARIANTS if run % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                stand = prepare_stand_in(moto, work)
                stand.world.apply(event)
                started = time.monotonic()
                invocation = sam_local_invoke(
                    templates[variant],
                    args.function,
                    event_path,
                    image=image,
                    env_vars=stand.env_vars_file(),
                    env=sam_env,
                    region=REGION,
                )
                wall = time.monotonic() - started
                result = invocation.result
                if isinstance(result, dict) and "errorType" in result:
                    print(f"{args.function} raised ({variant}): {result['errorType']}: {result.get('errorMessage')}")
                    return 1
                results[variant] = result
                report = invocation.report
                samples[variant]["init"].append(report.get("Init Duration", 0.0))
                samples[variant]["duration"].append(report["Duration"])
                samples[variant]["wall"].append(wall * 1000)
                print(
                    f"run {run + 1} {variant:>7}: init {report.get('Init Duration', 0.0):8.2f} ms"
                    f"  duration {report['Duration']:8.1f} ms  sam local invoke {wall * 1000:8.0f} ms",
                    flush=True,
                )
    finally:
        if moto is not None:
            moto.stop()
        docker.stop()
        shutil.rmtree(work, ignore_errors=True)

    medians = {variant: {key: median(values) for key, values in samples[variant].items()} for variant in VARIANTS}
    report_out = {
        "function": args.function,
        "event": event_path.name,
        "runs": args.runs,
        "bytecode_files": counts,
        "bytecode_compiled_by_bench": compiled_here,
        "median_ms": medians,
        "ratio_without_over_with": {
            key: (medians["without"][key] / medians["with"][key]) if medians["with"][key] else None
            for key in ("init", "duration", "wall")
        },
        "result": results.get("with"),
    }
    print()
    print(f"{args.function} on {event_path.name}, {args.runs} cold invocations each, medians:")
    print(f"{'':>28}{'with .pyc':>12}{'without':>12}{'ratio':>8}")
    for key, label in (
        ("init", "Init Duration (ms)"),
        ("duration", "Duration (ms)"),
        ("wall", "sam local invoke (ms)"),
    ):
        ratio = report_out["ratio_without_over_with"][key]
        print(
            f"{label:>28}{medians['with'][key]:12.1f}{medians['without'][key]:12.1f}"
            f"{(f'{ratio:8.2f}' if ratio else '       -')}"
        )
    source = "compiled by this bench (the artifact had none)" if compiled_here else "shipped by the build"
    print(f"bytecode: {counts['with']} .pyc files, {source}; without: {counts['without']}")
    print(json.dumps(report_out))
    if args.json:
        Path(args.json).write_text(json.dumps(report_out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
