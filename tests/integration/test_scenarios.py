"""Scenario files: `simulate` plays history and delivery apart, in any account and region, and checks the outcome."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from ecr_automation.cli import main
from ecr_automation.local.runner import LocalRunner
from ecr_automation.local.scenario import image_manifest
from tests.conftest import EVENTS, ROOT

SCENARIOS = sorted(path.relative_to(EVENTS).as_posix() for path in (EVENTS / "scenarios").glob("*.json"))
LOCAL = ("123456789012", "us-east-1")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err


def digest_of(image: str) -> str:
    return image_manifest(image)[1]


def write_scenario(tmp_path: Path, scenario: dict[str, Any], name: str = "scenario.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(scenario))
    return str(path)


def push(tag: str, image: str, second: int, repository: str = "team/api") -> dict[str, Any]:
    return {"push": repository, "tag": tag, "image": image, "time": f"2026-11-01T12:00:{second:02d}Z"}


def expected_state(scenario: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """What the file's ``expect`` says, in the final state's terms, worked out without the runner's resolver."""
    expected: dict[str, dict[str, str | None]] = {}
    for label, tags in scenario.get("expect", {}).items():
        declared = scenario.get("repositories", {}).get(label, {})
        account, region = declared.get("account", LOCAL[0]), declared.get("region", LOCAL[1])
        name = declared.get("name", label)
        key = name if (account, region) == LOCAL else f"{account}/{region}/{name}"
        for written_tag, image in tags.items():
            tag = re.sub(r"\{short_digest:([^}]+)\}", lambda match: digest_of(match[1])[7:19], written_tag)
            expected.setdefault(key, {})[tag] = None if image is None else digest_of(image)
    return expected


def test_there_are_scenarios_for_the_trust_issue_and_another_account() -> None:
    assert {
        "scenarios/immutable-delete-then-repush.json",
        "scenarios/late-earlier-push.json",
        "scenarios/delete-before-push.json",
        "scenarios/other-account-region.json",
    } <= set(SCENARIOS)


@pytest.mark.parametrize("sample", SCENARIOS)
def test_every_scenario_ends_as_it_expects(sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = json.loads((EVENTS / sample).read_text())
    assert scenario["description"] and scenario["expect"]

    code, lines, err = run(capsys, "simulate", str(EVENTS / sample))

    assert code == 0, err
    assert err == ""
    state = lines[-1]["state"]
    for key, tags in expected_state(scenario).items():
        for tag, digest in tags.items():
            assert state.get(key, {}).get(tag) == digest, f"{key}:{tag}"
    published = [line["detail_type"] for line in lines if line.get("kind") == "event_published"]
    for detail_type, count in scenario.get("expect_published", {}).items():
        assert published.count(detail_type) == count


def test_another_account_and_region_is_acted_on_there(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "simulate", str(EVENTS / "scenarios" / "other-account-region.json"))

    assert code == 0, err
    release = digest_of("release")
    assert lines[-1]["state"] == {
        "111111111111/eu-west-1/team/api": dict.fromkeys(
            sorted(["latest", f"sha-{release[7:19]}", "v2", "v2.0", "v2.0.0"]), release
        )
    }
    deliveries = [line["delivery"] for line in lines if line.get("kind") == "event_delivered"]
    assert deliveries == [1, 2]
    writes = [line for line in lines if line.get("kind") == "tag_retagged"]
    assert len(writes) == 4  # the duplicate delivery wrote nothing


def test_a_plain_event_from_another_account_and_region_simulates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    event = json.loads((EVENTS / "ecr-push-tagged.json").read_text())
    event.update(account="111111111111", region="eu-west-1")
    path = tmp_path / "push.json"
    path.write_text(json.dumps(event))

    # As an organisation deployment runs it: the member role is assumed in account 111111111111.
    code, lines, err = run(capsys, "simulate", "--env", "MEMBER_ACCOUNT_EXTERNAL_ID=example-org-external-id", str(path))

    assert code == 0, err
    (key,) = lines[-1]["state"]
    assert key == "111111111111/eu-west-1/team/web"
    assert lines[-1]["state"][key]["v1.2.3"] == lines[-1]["state"][key]["v1"] == event["detail"]["image-digest"]


def test_image_names_map_to_the_sha256_of_distinct_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "simulate", str(EVENTS / "scenarios" / "late-earlier-push.json"))

    named = {line["image"]: line["digest"] for line in lines if line.get("kind") == "image_named"}
    assert set(named) == {"a", "b"} and named["a"] != named["b"]
    for image, digest in named.items():
        assert digest == "sha256:" + hashlib.sha256(image_manifest(image)[0].encode()).hexdigest()
    assert code in {0, 1}


def test_an_unmet_expectation_exits_1_with_one_line_naming_the_tag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scenario = {
        "events": {"push-a": push("v1.2.3", "a", 0)},
        "happen": ["push-a"],
        "deliver": ["push-a"],
        "expect": {"team/api": {"v1.2.3": "a", "v9.9.9": None, "v1": "a"}},
        "expect_published": {"Tag Guard Violation": 0},
    }
    assert run(capsys, "simulate", write_scenario(tmp_path, scenario))[0] == 0

    scenario["expect"] = {"team/api": {"v1.2.3": None, "v9.9.9": None}}
    code, lines, err = run(capsys, "simulate", write_scenario(tmp_path, scenario))

    assert code == 1
    assert err.splitlines() == [
        f"{tmp_path / 'scenario.json'}: expected team/api:v1.2.3 absent, but it is on a (sha256:{digest_of('a')[7:19]})"
    ]
    assert lines[-2]["kind"] == "scenario_checked" and lines[-2]["mismatches"] == 1


def test_an_unmet_published_count_exits_1_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    scenario = {
        "events": {"push-a": push("v1.2.3", "a", 0)},
        "happen": ["push-a"],
        "expect_published": {"Tag Guard Violation": 1},
    }
    code, _, err = run(capsys, "simulate", write_scenario(tmp_path, scenario))

    assert code == 1
    assert len(err.splitlines()) == 1 and "'Tag Guard Violation'" in err and "but 0 were" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"deliver": ["push-a", "push-c"]}, "deliver[1]: no event 'push-c' (events: push-a)"),
        ({"happen": ["push-a", "push-a"]}, "happen[1]: 'push-a' already happened; deliver it twice instead"),
        ({"timeline": [{"deliver": "push-a"}, {"happen": "push-a"}], "happen": []}, "delivered before it happens"),
        ({"expect": {"team/api": {"v1.2.3": "c"}}}, "expect.team/api.v1.2.3: no image 'c'"),
        ({"expected": {}}, "expected: Extra inputs are not permitted"),
        ({"repositories": {"team/api": {"imageTagMutability": "FROZEN"}}}, "repositories.team/api.imageTagMutability"),
    ],
)
def test_a_malformed_scenario_is_a_usage_error_with_one_line(
    change: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scenario = {"events": {"push-a": push("v1.2.3", "a", 0)}, "happen": ["push-a"], **change}

    code, lines, err = run(capsys, "simulate", write_scenario(tmp_path, scenario))

    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert lines == []  # nothing ran


def test_an_immutable_repository_refuses_a_push_over_an_existing_tag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scenario = {
        "repositories": {"team/api": {"imageTagMutability": "IMMUTABLE"}},
        "events": {"push-a": push("v1.2.3", "a", 0), "push-b": push("v1.2.3", "b", 5)},
        "happen": ["push-a", "push-b"],
        "deliver": ["push-b", "push-a"],
        "expect": {"team/api": {"v1.2.3": "a"}},
        "expect_published": {"Tag Guard Violation": 0},
    }

    code, lines, err = run(capsys, "simulate", write_scenario(tmp_path, scenario))

    assert code == 0, err
    (refused,) = [line for line in lines if line.get("kind") == "registry_refused"]
    assert refused["event_id"] == "push-b" and "ImageTagAlreadyExistsException" in refused["reason"]
    (skipped,) = [line for line in lines if line.get("kind") == "delivery_skipped"]
    assert skipped["event_id"] == "push-b"
    delivered = [line["event_id"] for line in lines if line.get("kind") == "event_delivered"]
    assert delivered == ["push-a"]
    assert digest_of("b") not in lines[-1]["state"]["team/api"].values()


def test_an_event_never_delivered_is_lost_and_a_given_file_is_applied_when_delivered(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sample = json.loads((EVENTS / "ecr-push-tagged.json").read_text())
    scenario = {
        "events": {
            "push-a": push("v1.2.3", "a", 0, repository="team/lost"),
            "raw": {"file": str(EVENTS / "ecr-push-tagged.json")},
        },
        "happen": ["push-a"],
        "deliver": ["raw"],
        "expect": {"team/lost": {"v1.2.3": "a", "v1": None}, "team/web": {"v1": sample["detail"]["image-digest"]}},
    }

    code, lines, err = run(capsys, "simulate", write_scenario(tmp_path, scenario))

    assert code == 0, err
    assert [line["event_id"] for line in lines if line.get("kind") == "event_lost"] == ["push-a"]
    assert not [line for line in lines if line.get("event_id") == "scenario:push-a" and "function" in line]


def test_a_timeline_interleaves_history_and_delivery(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    scenario = {
        "events": {"push-a": push("v1.2.3", "a", 0), "push-b": push("v1.3.0", "b", 5)},
        "timeline": [{"happen": "push-a"}, {"deliver": "push-a"}, {"happen": "push-b"}, {"deliver": "push-b"}],
        "expect": {"team/api": {"v1": "b", "v1.2": "a", "v1.3": "b"}},
    }

    code, lines, err = run(capsys, "simulate", write_scenario(tmp_path, scenario))

    assert code == 0, err
    steps = [
        (line["kind"], line["event_id"])
        for line in lines
        if line.get("kind") in {"registry_changed", "event_delivered"}
    ]
    assert steps == [
        ("registry_changed", "push-a"),
        ("event_delivered", "push-a"),
        ("registry_changed", "push-b"),
        ("event_delivered", "push-b"),
    ]


def test_the_cli_prints_no_library_warnings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    invoke = LocalRunner.invoke

    def invoke_like_powertools(self: LocalRunner, function_id: str, event: object) -> Any:
        warnings.warn("No application metrics to publish.", UserWarning, stacklevel=1)
        return invoke(self, function_id, event)

    monkeypatch.setattr(LocalRunner, "invoke", invoke_like_powertools)
    scenario = {"events": {"push-a": push("v1.2.3", "a", 0)}, "happen": ["push-a"]}

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        code, _, err = run(capsys, "simulate", write_scenario(tmp_path, scenario))

    assert code == 0, err
    assert "Warning" not in err
    assert shown == []


def test_the_installed_command_runs_a_scenario_without_warnings() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ecr_automation", "simulate", str(EVENTS / "scenarios" / "other-account-region.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "always"},
    )
    assert completed.returncode == 0, completed.stderr
    assert not [line for line in completed.stderr.splitlines() if "Warning" in line]


def test_a_long_run_prints_nothing_on_stderr(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Over 100 invocations in one process: Powertools would print its unpublished metrics on stderr.
    scenario = {"events": {"push-a": push("v1.2.3", "a", 0)}, "happen": ["push-a"], "deliver": ["push-a"] * 60}

    code, lines, err = run(capsys, "simulate", write_scenario(tmp_path, scenario))

    assert code == 0, err
    assert err == ""
    assert len([line for line in lines if line.get("kind") == "event_delivered"]) == 60
