"""`sam build` of a native-architecture copy of template.yaml, and `sam local invoke` of its functions.

The copy differs from template.yaml only where a local run needs it: the architecture this host runs
natively (arm64 under qemu was unreliable here), absolute code paths (the copy lives elsewhere), and the
variables a user sets with `--env-vars` to reach a local stand-in, declared for every function
(`--env-vars` only sets variables the template declares).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecr_automation.local.template import FUNCTION_TYPE, SamTemplate
from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
# Declared so `sam local invoke --env-vars` can set them: where the SDK finds AWS (the stand-in), and no
# X-Ray daemon to trace to.
LOCAL_VARIABLES = {"AWS_ENDPOINT_URL": "", "POWERTOOLS_TRACE_DISABLED": "false"}
CODE_PROPERTIES = {"CodeUri", "ContentUri"}


class SamError(RuntimeError):
    """sam is missing or failed; the message says why."""


def sam_binary() -> str:
    directory = os.environ.get("ECR_AUTOMATION_TOOLS_BIN", str(ROOT / ".venv-tools" / "bin"))
    path = Path(directory) / "sam"
    if path.exists():
        return str(path)
    found = shutil.which("sam")
    if found is None:
        raise SamError("sam is not installed: run `make test` (scripts/bootstrap.sh installs .venv-tools)")
    return found


def local_copy(architecture: str) -> dict[str, Any]:
    """template.yaml as JSON (CloudFormation's long form), changed only as the module docstring says."""
    body: dict[str, Any] = json.loads(json.dumps(SamTemplate.load(TEMPLATE).body))
    function_globals = body.setdefault("Globals", {}).setdefault("Function", {})
    function_globals["Architectures"] = [architecture]
    variables = function_globals.setdefault("Environment", {}).setdefault("Variables", {})
    for name, default in LOCAL_VARIABLES.items():
        variables.setdefault(name, default)
    for section in (function_globals, *(resource.get("Properties", {}) for resource in body["Resources"].values())):
        for key in CODE_PROPERTIES & set(section):
            if isinstance(section[key], str) and not section[key].startswith("s3://"):
                section[key] = str((ROOT / section[key]).resolve())
    for resource in body["Resources"].values():
        if resource.get("Type") == FUNCTION_TYPE and "Architectures" in resource.get("Properties", {}):
            resource["Properties"]["Architectures"] = [architecture]
    return body


def sam_environment(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "SAM_CLI_TELEMETRY": "0", **extra}


def sam_build(architecture: str, work: Path, cache: Path, env: dict[str, str]) -> Path:
    """Build the copy; returns the built template (what `sam local invoke -t` reads)."""
    if shutil.which("python3.13", path=env.get("PATH")) is None:
        raise SamError("sam build needs python3.13 on PATH (the functions' runtime); make test puts it there")
    work.mkdir(parents=True, exist_ok=True)
    copy = work / "template.json"
    copy.write_text(json.dumps(local_copy(architecture), indent=1))
    build_dir = work / "build"
    completed = subprocess.run(
        [
            sam_binary(),
            "build",
            "--template-file",
            str(copy),
            "--build-dir",
            str(build_dir),
            "--cached",
            "--cache-dir",
            str(cache),
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=sam_environment(env),
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        raise SamError(f"sam build of the {architecture} copy failed:\n{completed.stdout}\n{completed.stderr}")
    return build_dir / "template.yaml"


@dataclass(frozen=True)
class Invocation:
    """What one `sam local invoke` printed: the function's result (stdout) and its logs (stderr)."""

    function: str
    sample: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> Any:
        """The function's own return value, or Lambda's error object when it raised."""
        lines = [line for line in self.stdout.strip().splitlines() if line.strip()]
        if self.returncode != 0 or not lines:
            raise AssertionError(
                f"sam local invoke {self.function} -e {self.sample} exited {self.returncode} "
                f"without a result:\n{self.stdout}\n{self.stderr[-3000:]}"
            )
        return json.loads(lines[-1])

    @property
    def report(self) -> dict[str, float]:
        """The REPORT line's durations in ms (Init Duration, Duration), as Lambda prints them."""
        for line in self.stderr.splitlines():
            if line.startswith("REPORT RequestId"):
                fields = dict(part.split(": ", 1) for part in line.split("\t")[1:] if ": " in part)
                return {name: float(value.split()[0]) for name, value in fields.items() if value.endswith(" ms")}
        raise AssertionError(f"no REPORT line from {self.function}:\n{self.stderr[-3000:]}")


def sam_local_invoke(
    built_template: Path,
    function: str,
    event: Path,
    *,
    image: str,
    env_vars: Path,
    env: dict[str, str],
    region: str,
    sample: str | None = None,
    timeout: float = 300,
) -> Invocation:
    completed = subprocess.run(
        [
            sam_binary(),
            "local",
            "invoke",
            function,
            "--template-file",
            str(built_template),
            "--event",
            str(event),
            "--invoke-image",
            image,
            "--skip-pull-image",
            "--env-vars",
            str(env_vars),
            "--region",
            region,
        ],
        capture_output=True,
        text=True,
        cwd=built_template.parent,
        env=sam_environment(env),
        timeout=timeout,
        check=False,
    )
    return Invocation(function, sample or event.name, completed.returncode, completed.stdout, completed.stderr)
