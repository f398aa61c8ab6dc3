"""The template passes every offline checker, and `sam build` ships what the functions need, and no more."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecr_automation.local.template import SamTemplate
from tests.template.conftest import TEMPLATE, run_tool, tool


def test_cfn_lint_with_serverless_rules() -> None:
    completed = run_tool(tool("cfn-lint"), str(TEMPLATE), "-a", "cfn_lint_serverless.rules")
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_sam_validate_lint() -> None:
    completed = run_tool(tool("sam"), "validate", "--lint", "--template-file", str(TEMPLATE))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "is a valid SAM Template" in completed.stdout + completed.stderr


@pytest.mark.slow
def test_checkov_offline_with_documented_skips() -> None:
    config = Path(TEMPLATE.parent / ".checkov.yaml")
    skipped = [line for line in config.read_text().splitlines() if line.strip().startswith("- CKV")]
    reasons = [line for line in config.read_text().splitlines() if line.strip().startswith("#")]
    assert len(reasons) >= len(skipped), "every skipped check needs its reason in .checkov.yaml"

    completed = run_tool(tool("checkov"), "-f", str(TEMPLATE), "--config-file", str(config))

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Failed checks: 0" in completed.stdout


@pytest.mark.slow
def test_sam_build_ships_code_rules_and_runtime_dependencies(sam_build: Path, template: SamTemplate) -> None:
    for logical_id, function in template.functions().items():
        artifact = sam_build / logical_id
        module = function.handler.rsplit(".", 1)[0].replace(".", "/") + ".py"
        assert (artifact / module).is_file(), f"{logical_id}: {module} missing"
        assert (artifact / "rules.toml").is_file()
        assert (artifact / "aws_lambda_powertools").is_dir()
        assert (artifact / "pydantic").is_dir()
        assert (artifact / "slack_sdk").is_dir()
        assert not (artifact / "moto").exists(), "moto must never ship to Lambda"
        assert not (artifact / "yaml").exists(), "the local runner's YAML parser must not ship"


@pytest.mark.slow
def test_sam_build_takes_arm64_wheels(sam_build: Path, template: SamTemplate) -> None:
    for logical_id in template.functions():
        compiled = list((sam_build / logical_id / "pydantic_core").glob("_pydantic_core*.so"))
        assert compiled, f"{logical_id}: pydantic_core has no compiled module"
        assert all("aarch64" in path.name for path in compiled), [path.name for path in compiled]
