"""Logic is testable without AWS: importing it loads no SDK and no adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ecr_automation

LOGIC_MODULES = (
    "ecr_automation.logic.guard",
    "ecr_automation.logic.retag",
    "ecr_automation.logic.ownership",
    "ecr_automation.models.versions",
)

PROBE = f"""
import importlib, json, sys
for name in {LOGIC_MODULES!r}:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def loaded_by_logic() -> list[str]:
    """Every module a fresh interpreter holds after importing the logic modules, and nothing else."""
    package_root = str(Path(ecr_automation.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env, timeout=60
    )
    modules: list[str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return modules


# botocore itself is loaded by Powertools (its user-agent hook), which the event models build on; boto3,
# which creates clients and sessions, and every adapter stay out.
@pytest.mark.parametrize("forbidden", ["boto3", "botocore.client", "botocore.session", "ecr_automation.adapters"])
def test_importing_the_logic_loads_neither_the_aws_sdk_nor_any_adapter(
    loaded_by_logic: list[str], forbidden: str
) -> None:
    # Given a fresh interpreter, When it imports guard, retag, ownership and versions,
    # Then no module of the AWS SDK nor any adapter is loaded
    assert [name for name in loaded_by_logic if name == forbidden or name.startswith(forbidden + ".")] == []


def test_the_probe_sees_the_logic_it_imported(loaded_by_logic: list[str]) -> None:
    assert set(LOGIC_MODULES) <= set(loaded_by_logic)
