"""Configuration: parsed once into typed models; invalid input fails fast with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecr_automation.config import BUNDLED_RULES_FILE, ConfigurationError, settings_from_environment
from ecr_automation.rules import load_rules, parse_rules


def test_settings_from_the_template_environment() -> None:
    settings = settings_from_environment(
        {
            "AWS_REGION": "eu-west-1",
            "TAG_LEDGER_TABLE": "ledger",
            "IDEMPOTENCY_TABLE": "",
            "DRY_RUN": "true",
            "RULES_FILE": "rules.toml",
            "LAMBDA_TASK_ROOT": "/var/task",
            "UNRELATED": "ignored",
        }
    )
    assert settings.region == "eu-west-1"
    assert settings.ledger_table == "ledger"
    assert settings.idempotency_table is None
    assert settings.dry_run is True
    assert settings.resolved_rules_file == Path("/var/task/rules.toml")


def test_region_falls_back_to_the_default_region() -> None:
    assert settings_from_environment({"AWS_DEFAULT_REGION": "ap-northeast-2"}).region == "ap-northeast-2"


def test_invalid_environment_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="DRY_RUN"):
        settings_from_environment({"AWS_REGION": "us-east-1", "DRY_RUN": "perhaps"})
    with pytest.raises(ConfigurationError, match="AWS_REGION"):
        settings_from_environment({})


def test_the_bundled_rules_file_is_valid() -> None:
    rules = load_rules(BUNDLED_RULES_FILE)
    assert rules.guard_for("team/web") is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[guard]]\nprotected = ['(']\n", "guard.0.protected.0"),
        ("[[guard]]\non_violation = 'explode'\n", "guard.0.on_violation"),
        ("[[guard]]\nquarantine_tag = 'no-placeholder'\n", "guard.0.quarantine_tag"),
        ("[[guard]]\nquarantine_tag = 'quarantine-{when}'\n", "guard.0.quarantine_tag"),
        ("[[guard]]\nprotect_releases = 'yes please'\n", "guard.0.protect_releases"),
        ("[[guard]]\nunknown_key = 1\n", "guard.0.unknown_key"),
        ("[[guard]\n", "not valid TOML"),
    ],
)
def test_invalid_rules_fail_with_one_line_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_rules(text, origin="rules.toml")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_rules_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read rules file"):
        load_rules(tmp_path / "absent.toml")


def test_first_matching_section_applies() -> None:
    rules = parse_rules(
        "[[guard]]\nrepositories = ['legacy/*']\nprotected = ['^release-']\n\n[[guard]]\nrepositories = ['*']\n"
    )
    legacy, other = rules.guard_for("legacy/app"), rules.guard_for("team/web")
    assert legacy is not None and other is not None
    assert legacy.protected == ["^release-"] and legacy.is_protected("release-1")
    assert other.protected == [] and not other.is_protected("release-1")
    assert legacy.is_protected("v1.2.3") and other.is_protected("v1.2.3")  # release tags by default
