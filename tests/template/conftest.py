"""The template tier: the checkers run as subprocesses from the tools virtualenv."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecr_automation.local.template import SamTemplate
from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"


def tool(name: str) -> str:
    """A checker from .venv-tools (or PATH); missing means the set-up is broken: fail, never skip."""
    directory = os.environ.get("ECR_AUTOMATION_TOOLS_BIN", str(ROOT / ".venv-tools" / "bin"))
    path = Path(directory) / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test` (scripts/bootstrap.sh installs it)")
    return found


def run_tool(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def template() -> SamTemplate:
    return SamTemplate.load(TEMPLATE)


@pytest.fixture(scope="session")
def sam_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    build_dir = tmp_path_factory.mktemp("sam-build")
    completed = run_tool(
        tool("sam"),
        "build",
        "--template-file",
        str(TEMPLATE),
        "--build-dir",
        str(build_dir),
        "--cache-dir",
        str(tmp_path_factory.mktemp("sam-cache")),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    yield build_dir
