"""What ships and what runs: the deployed requirements match the package's, and CI runs the README's command."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_sam_build_requirements_match_the_runtime_dependencies() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    shipped = [
        line.strip()
        for line in (ROOT / "functions" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(shipped) == sorted(declared)


def test_the_local_stand_ins_are_never_a_runtime_dependency() -> None:
    declared = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]).lower()
    assert "moto" not in declared and "pyyaml" not in declared


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "exec make test"
    makefile = (ROOT / "Makefile").read_text()
    assert "test:\n\t@scripts/check.sh" in makefile
