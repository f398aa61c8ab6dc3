"""The local runner: every sample event goes through `invoke` and `simulate`; exit codes and output are the contract."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ecr_automation.cli import main
from tests.conftest import EVENTS, ROOT
from tests.support import builders
from tests.support.moto_server import MotoServer

VALID = sorted(path.relative_to(EVENTS).as_posix() for path in EVENTS.glob("*.json"))
UNKNOWN = sorted(path.relative_to(EVENTS).as_posix() for path in EVENTS.glob("unknown/*.json"))
MALFORMED = sorted(path.relative_to(EVENTS).as_posix() for path in EVENTS.glob("malformed/*.json"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, lines, captured.err


def test_there_are_samples_of_every_kind() -> None:
    assert len(VALID) >= 15 and UNKNOWN and MALFORMED


@pytest.mark.parametrize("sample", VALID + UNKNOWN)
def test_every_well_formed_sample_simulates_cleanly(sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "simulate", str(EVENTS / sample))
    assert code == 0, err
    assert err == ""
    assert all("kind" in line for line in lines[:-1])
    assert set(lines[-1]) == {"state"}


@pytest.mark.parametrize("sample", VALID + UNKNOWN)
def test_every_well_formed_sample_invokes_the_guard_cleanly(sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, "invoke", "TagGuardFunction", str(EVENTS / sample), "--embedded")
    assert code == 0, err
    assert lines[-1]["kind"] == "invocation"
    assert lines[-1]["status"] in {"processed", "ignored"}


@pytest.mark.parametrize("sample", MALFORMED)
def test_every_malformed_sample_is_rejected_with_one_line(sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["simulate", str(EVENTS / sample)],
        ["invoke", "TagGuardFunction", str(EVENTS / sample), "--embedded"],
    ):
        code, lines, err = run(capsys, *argv)
        assert code == 1
        assert len(err.strip().splitlines()) == 1, err
        assert "rejected" in err and "Traceback" not in err
        assert any(line.get("kind") == "event_rejected" for line in lines)


def test_a_conflicting_push_ends_with_the_tag_on_the_first_digest(capsys: pytest.CaptureFixture[str]) -> None:
    first = json.loads((EVENTS / "ecr-push-tagged.json").read_text())
    second = json.loads((EVENTS / "ecr-push-conflicting.json").read_text())
    assert first["detail"]["image-tag"] == second["detail"]["image-tag"]
    assert first["detail"]["image-digest"] != second["detail"]["image-digest"]

    code, lines, err = run(
        capsys, "simulate", str(EVENTS / "ecr-push-tagged.json"), str(EVENTS / "ecr-push-conflicting.json")
    )

    assert code == 0, err
    repository = first["detail"]["repository-name"]
    tags = lines[-1]["state"][repository]
    assert tags[first["detail"]["image-tag"]] == first["detail"]["image-digest"]
    quarantine = f"quarantine-{second['detail']['image-digest'][7:19]}"
    assert tags[quarantine] == second["detail"]["image-digest"]
    kinds = [line.get("kind") for line in lines]
    assert kinds.count("tag_reverted") == 1 and kinds.count("image_quarantined") == 1
    published = [line for line in lines if line.get("kind") == "event_published"]
    assert [line["detail_type"] for line in published] == ["Tag Guard Violation"]


def test_simulate_replays_change_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    push, conflict = str(EVENTS / "ecr-push-tagged.json"), str(EVENTS / "ecr-push-conflicting.json")
    code, once, _ = run(capsys, "simulate", push, conflict)
    code_twice, twice, _ = run(capsys, "simulate", push, conflict, conflict, push)
    assert code == code_twice == 0
    assert once[-1] == twice[-1]
    writes = [line for line in twice if line.get("kind") in {"tag_reverted", "image_quarantined", "event_published"}]
    assert len(writes) == 3


def test_simulate_stops_a_feedback_loop_at_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    push, conflict = str(EVENTS / "ecr-push-tagged.json"), str(EVENTS / "ecr-push-conflicting.json")
    code, _, err = run(capsys, "simulate", push, conflict, "--max-events", "2")
    assert code == 1
    assert "did not settle after 2 events" in err


def test_unreadable_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert run(capsys, "simulate", str(tmp_path / "absent.json"))[0] == 2
    code, _, err = run(capsys, "invoke", "TagGuardFunction", str(broken))
    assert code == 2 and "is not JSON" in err
    assert run(capsys, "invoke", "NoSuchFunction", str(EVENTS / "ecr-push-tagged.json"))[0] == 2


def test_check_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    bad = tmp_path / "rules.toml"
    bad.write_text("[[guard]]\non_violation = 'explode'\n")
    code = main(["check-config", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and "guard.0.on_violation" in err and len(err.strip().splitlines()) == 1


def test_the_installed_command_rejects_without_a_traceback() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ecr_automation", "simulate", str(EVENTS / "malformed" / "missing-digest.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        f"{EVENTS / 'malformed' / 'missing-digest.json'}: rejected: detail.image-digest: field required"
    ]


def test_demo_runs_end_to_end() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ecr_automation", "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert "tag_reverted" in completed.stdout and "tag_restored" in completed.stdout
    final_tags = completed.stdout.split("Final tags:", 1)[1]
    assert "team/web:v1.10.0" in final_tags and "team/web:scanned" in final_tags
    # The last step replicates v1.10.0 to eu-west-1 through the queue, real bytes between local registries.
    step = completed.stdout.split("v1.10.0 is replicated to eu-west-1 (mirror/team/web) with the same digest", 1)[1]
    for effect in ("replication_job_queued", "repository_created", "image_copied", "Image Replicated"):
        assert effect in step.split("Final tags:", 1)[0]
    replicated = completed.stdout.split("\nReplicated:", 1)[1].splitlines()
    mirror = next(line.split() for line in replicated if line.strip().startswith("mirror/team/web:v1.10.0"))
    source = next(line.split() for line in replicated if line.strip().startswith("team/web:v1.10.0"))
    assert mirror[1] == source[1] and mirror[1].startswith("sha256:") and source[2] == "identical"


def _push_file(tmp_path: Path, tag: str, seed: str) -> Path:
    event = json.loads((EVENTS / "ecr-push-tagged.json").read_text())
    event["id"] = f"push-{tag}"
    event["detail"]["image-tag"] = tag
    event["detail"]["image-digest"] = "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
    path = tmp_path / f"push-{tag}.json"
    path.write_text(json.dumps(event))
    return path


def test_simulate_out_of_order_releases_keep_aliases_on_the_newest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pushes = [_push_file(tmp_path, tag, tag) for tag in ("v1.9.0", "v1.10.0", "v1.9.5")]

    code, lines, err = run(capsys, "simulate", *map(str, pushes))

    assert code == 0, err
    tags = lines[-1]["state"]["team/web"]
    assert tags["v1"] == tags["latest"] == tags["v1.10"] == tags["v1.10.0"]
    assert tags["v1.9"] == tags["v1.9.5"]
    assert tags["v1.9.0"] != tags["v1.9"]


def test_simulate_of_one_push_converges_to_exactly_the_expected_tags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    push = _push_file(tmp_path, "v2.3.4", "release")
    digest = json.loads(push.read_text())["detail"]["image-digest"]

    code, lines, err = run(capsys, "simulate", str(push))

    assert code == 0, err
    expected = {"v2.3.4", "v2.3", "v2", "latest", f"sha-{digest[7:19]}"}
    assert lines[-1]["state"]["team/web"] == dict.fromkeys(sorted(expected), digest)
    writes = [line for line in lines if line.get("kind", "").startswith("tag_") and line["kind"] != "tag_claimed"]
    assert len(writes) == len(expected) - 1  # the pushed tag itself was the push


def test_invoke_against_a_moto_server_uses_the_standard_sdk_environment(aws: MotoServer) -> None:
    event = json.loads((EVENTS / "ecr-push-tagged.json").read_text())
    ecr = aws.client("ecr")
    ecr.create_repository(repositoryName=event["detail"]["repository-name"])
    # The push the event reports (moto keeps the digest it is given): the guard checks a late event's
    # claim against the registry.
    ecr.put_image(
        repositoryName=event["detail"]["repository-name"],
        imageManifest=builders.image_manifest("sample"),
        imageManifestMediaType=builders.OCI_MANIFEST,
        imageDigest=event["detail"]["image-digest"],
        imageTag=event["detail"]["image-tag"],
    )
    builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", "ledger-on-moto")
    env = {
        **aws.env(),
        "PATH": "/usr/bin:/bin",
        "TAG_LEDGER_TABLE": "ledger-on-moto",
        "IDEMPOTENCY_TABLE": "",
        "DEAD_LETTER_QUEUE_URL": "",
    }

    completed = subprocess.run(
        [sys.executable, "-m", "ecr_automation", "invoke", "TagGuardFunction", str(EVENTS / "ecr-push-tagged.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    last = json.loads(completed.stdout.splitlines()[-1])
    assert last["status"] == "processed" and last["result"]["result"] == "claimed"
    item = aws.client("dynamodb").get_item(
        TableName="ledger-on-moto",
        Key={"pk": {"S": f"123456789012#us-east-1#{event['detail']['repository-name']}"}, "sk": {"S": "tag#v1.2.3"}},
    )["Item"]
    assert item["digest"]["S"] == event["detail"]["image-digest"]


def test_scan_events_come_with_findings_that_agree_with_their_counts() -> None:
    from ecr_automation.local.standin import LocalWorld, embedded_aws  # noqa: PLC0415
    from ecr_automation.local.template import SamTemplate  # noqa: PLC0415

    event = json.loads((EVENTS / "ecr-scan-findings.json").read_text())
    given = json.loads((EVENTS / "ecr-scan-clean.json").read_text())
    given["detail"]["image-digest"] = "sha256:" + "c" * 64
    given["detail"]["image-tags"] = ["v9.9.9"]
    explicit = {
        "repositoryName": "team/web",
        "imageId": {"imageDigest": given["detail"]["image-digest"]},
        "imageScanStatus": {"status": "COMPLETE"},
        "imageScanFindings": {"findings": [{"name": "CVE-2024-9999", "severity": "LOW"}]},
    }
    with embedded_aws():
        world = LocalWorld(SamTemplate.load(ROOT / "template.yaml"))
        world.inject_findings([explicit])
        world.apply(event)
        world.apply(given)
        served = world.ecr.describe_image_scan_findings(
            repositoryName="team/web", imageId={"imageDigest": event["detail"]["image-digest"]}
        )["imageScanFindings"]
        served_given = world.ecr.describe_image_scan_findings(
            repositoryName="team/web", imageId={"imageDigest": given["detail"]["image-digest"]}
        )["imageScanFindings"]

    counts = event["detail"]["finding-severity-counts"]
    assert len(served["findings"]) == sum(counts.values())
    assert {severity: [f["severity"] for f in served["findings"]].count(severity) for severity in counts} == counts
    assert [finding["name"] for finding in served_given["findings"]] == ["CVE-2024-9999"]


def test_simulate_delete_by_digest_of_a_release_is_reported_critical(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(
        capsys, "simulate", str(EVENTS / "ecr-push-tagged.json"), str(EVENTS / "ecr-delete-by-digest.json")
    )
    assert code == 0, err
    (published,) = [line for line in lines if line.get("kind") == "event_published"]
    assert published["detail"]["severity"] == "CRITICAL"
    assert lines[-1]["state"]["team/web"] == {}


# -- replication: real bytes in local registries ----------------------------------------------------------
REPLICATE_TO_EU = """
[[replicate]]
repositories = ["team/*"]

[[replicate.targets]]
region = "eu-west-1"
repository = "mirror/{repository}"
"""
MIRROR_KEY = "123456789012/eu-west-1/mirror/team/api"


def _replicating_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / "functions" / "rules.toml").read_text() + REPLICATE_TO_EU)
    return rules


def _release_scenario(tmp_path: Path) -> Path:
    scenario = tmp_path / "release.json"
    scenario.write_text(
        json.dumps(
            {
                "description": "a release pushed to team/api, replicated to eu-west-1",
                "events": {"push": {"push": "team/api", "tag": "v1.2.3", "image": "release"}},
                "happen": ["push"],
                "expect": {"team/api": {"v1.2.3": "release"}, MIRROR_KEY: {"v1.2.3": "release"}},
            }
        )
    )
    return scenario


def test_simulate_replicates_real_bytes_with_identical_digests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from ecr_automation.local.scenario import image_manifest  # noqa: PLC0415

    release = image_manifest("release")[1]

    code, lines, err = run(
        capsys, "simulate", str(_release_scenario(tmp_path)), "--config", str(_replicating_rules(tmp_path))
    )

    assert code == 0, err
    state = lines[-1]["state"]
    # The destination's tags are read from its registry: the copier wrote them there, byte for byte.
    mirror, source = state[MIRROR_KEY], state["team/api"]
    assert mirror["v1.2.3"] == source["v1.2.3"] == release
    assert mirror and all(source[tag] == digest for tag, digest in mirror.items())  # aliases too, same digests
    copied = [line for line in lines if line.get("kind") == "image_copied"]
    assert copied and {line["digest"] for line in copied} == {release}
    assert copied[0]["blobs_copied"] >= 2 and copied[0]["bytes_copied"] > 0  # a config and real layers
    deliveries = [line for line in lines if line.get("kind") == "queue_delivered"]
    assert deliveries and all(line["failed"] == 0 for line in deliveries)
    assert any(line.get("detail_type") == "Image Replicated" for line in lines)


def test_simulate_reports_a_replication_without_bytes_and_dead_letters_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A push event whose digest no image of the stand-in has: the worker fails it until the DLQ takes it."""
    event = json.loads((EVENTS / "ecr-push-tagged.json").read_text())
    event["detail"]["repository-name"] = "team/api"
    path = tmp_path / "push.json"
    path.write_text(json.dumps(event))

    code, lines, err = run(capsys, "simulate", str(path), "--config", str(_replicating_rules(tmp_path)))

    assert code == 1
    assert "moved to the dead-letter queue" in err and "no image bytes to replicate" in err
    deliveries = [line for line in lines if line.get("kind") == "queue_delivered"]
    # The tag and retag's four tags: five jobs in one batch, failed five times (the template's maxReceiveCount).
    assert len(deliveries) == 5 and deliveries[-1]["dead_lettered"] == deliveries[-1]["messages"] == 5
    assert any(line.get("detail_type") == "Image Replication Failed" for line in lines)


def test_simulate_without_docker_registry_says_so_in_one_line(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecr_automation",
            "simulate",
            str(_release_scenario(tmp_path)),
            "--config",
            str(_replicating_rules(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PATH": str(tmp_path)},  # no docker-registry on it
    )
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        "ecr-automation: docker-registry is not installed: replication in simulate/demo needs it "
        "(scripts/bootstrap.sh app installs it; Debian package docker-registry)"
    ]


def test_the_demo_rules_are_the_bundled_rules_plus_one_replicate_entry() -> None:
    from ecr_automation.errors import BUNDLED_RULES_FILE  # noqa: PLC0415
    from ecr_automation.local.demo import DEMO_RULES  # noqa: PLC0415
    from ecr_automation.rules import load_rules  # noqa: PLC0415

    demo, bundled = load_rules(DEMO_RULES), load_rules(BUNDLED_RULES_FILE)
    assert demo.model_copy(update={"replicate": []}) == bundled
    (rule,) = demo.replicate
    assert rule.repositories == ["team/*"]
    assert [(target.region, target.repository) for target in rule.targets] == [("eu-west-1", "mirror/{repository}")]
