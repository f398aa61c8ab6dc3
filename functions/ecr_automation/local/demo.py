"""``ecr-automation demo``: a narrated scenario on the embedded stand-ins, for a first look."""

from __future__ import annotations

import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any, TextIO

from ecr_automation.local.standin import LOCAL_ACCOUNT, LOCAL_REGION, ecr_image_action, synthetic_manifest
from ecr_automation.local.template import SamTemplate
from ecr_automation.models.domain import RepositoryRef

REPOSITORY = RepositoryRef(LOCAL_ACCOUNT, LOCAL_REGION, "team/web")
SAMPLE_FINDINGS = Path(__file__).resolve().parents[3] / "events" / "findings" / "enhanced-scan-findings.json"
# The bundled rules plus one [[replicate]] entry: team/* -> eu-west-1 as mirror/{repository}.
DEMO_RULES = Path(__file__).resolve().parent / "demo-rules.toml"
MIRROR = RepositoryRef(LOCAL_ACCOUNT, "eu-west-1", "mirror/team/web")
REPLICATION_STEP = (
    "The rules gain a [[replicate]] entry (team/* -> eu-west-1, local/demo-rules.toml) and EventBridge "
    "delivers v1.10.0's push once more: v1.10.0 is replicated to eu-west-1 (mirror/team/web) with the same digest"
)

# Each image is a real one (a config and small layers, whose bytes a local registry holds when the
# demo replicates); its digest is the sha256 of its manifest.
IMAGES = {name: synthetic_manifest(f"demo image {name}") for name in ("1.9.0", "1.10.0", "1.9.5", "impostor")}


def _digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(IMAGES[name].encode()).hexdigest()


V1_9_0, V1_10_0, V1_9_5, IMPOSTOR = (_digest(name) for name in ("1.9.0", "1.10.0", "1.9.5", "impostor"))


def _push(tag: str | None, digest: str) -> dict[str, Any]:
    return ecr_image_action(REPOSITORY, digest, action="PUSH", tag=tag)


def _delete(tag: str, digest: str) -> dict[str, Any]:
    return ecr_image_action(REPOSITORY, digest, action="DELETE", tag=tag)


def _scan(digest: str, tags: list[str], counts: dict[str, int]) -> dict[str, Any]:
    event = _push(None, digest)
    event["detail-type"] = "ECR Image Scan"
    event["resources"] = [REPOSITORY.arn]
    event["detail"] = {
        "scan-status": "COMPLETE",
        "repository-name": REPOSITORY.name,
        "image-digest": digest,
        "image-tags": tags,
        "finding-severity-counts": counts,
    }
    return event


def _inspector_scan(digest: str, tags: list[str], counts: dict[str, int]) -> dict[str, Any]:
    event = _scan(digest, tags, counts)
    event["source"] = "aws.inspector2"
    event["detail-type"] = "Inspector2 Scan"
    event["detail"]["scan-status"] = "INITIAL_SCAN_COMPLETE"
    event["detail"]["repository-name"] = REPOSITORY.arn
    event["detail"]["finding-severity-counts"] = {**counts, "TOTAL": sum(counts.values())}
    return event


def findings() -> list[dict[str, Any]]:
    """What Amazon Inspector found in v1.9.5 (the sample under events/findings/), as ECR serves it."""
    response: dict[str, Any] = json.loads(SAMPLE_FINDINGS.read_text(encoding="utf-8"))
    response["imageId"] = {"imageDigest": V1_9_5}
    for finding in response["imageScanFindings"]["enhancedFindings"]:
        for resource in finding["resources"]:
            resource["details"]["awsEcrContainerImage"].update(imageHash=V1_9_5, imageTags=["v1.9.5"])
    return [response]


def scenario() -> list[tuple[str, object]]:
    malformed = _push("v9.9.9", V1_9_0)
    malformed["detail"]["image-digest"] = "md5:not-a-digest"
    release = _push("v1.10.0", V1_10_0)
    return [
        (
            f"CI pushes {REPOSITORY.name}:v1.9.0: the guard claims it, retag adds aliases and a digest tag",
            _push("v1.9.0", V1_9_0),
        ),
        ("CI pushes v1.10.0: v1 and latest move forward (1.10 > 1.9, numerically)", release),
        ("A hotfix v1.9.5 is pushed later: only v1.9 moves; v1 and latest stay on v1.10.0", _push("v1.9.5", V1_9_5)),
        (
            "Someone pushes another image as v1.10.0: reverted, quarantined, reported; retag ignores it",
            _push("v1.10.0", IMPOSTOR),
        ),
        (
            "Someone deletes v1.10.0: the image survives under its other tags, and the guard restores the tag",
            _delete("v1.10.0", V1_10_0),
        ),
        (
            "Amazon Inspector's scan of v1.9.5 finds a CRITICAL and three HIGH: Slack gets the CVEs that matter "
            "and their fixes; no promotion, and the reason is given",
            _inspector_scan(V1_9_5, ["v1.9.5"], {"CRITICAL": 1, "HIGH": 3, "MEDIUM": 2}),
        ),
        ("The scan of v1.10.0 is clean: it is promoted to `scanned`", _scan(V1_10_0, ["v1.10.0"], {})),
        ("A malformed event arrives: rejected with a one-line reason, never reaching a function", malformed),
        # The same event again (EventBridge delivers at least once): it changes nothing, but now a rule replicates it.
        (REPLICATION_STEP, release),
    ]


def _short(value: object) -> str:
    text = str(value)
    return text[:19] + "…" if text.startswith("sha256:") else text


def _plain(mrkdwn: str) -> str:
    """Slack's markup as terminal text: links by their label, no emphasis, entities decoded."""
    text = re.sub(r"<(?:https?://[^|>]+)\|([^>]+)>", r"\1", mrkdwn)
    text = re.sub(r":[a-z_]+: ?", "", text).replace("*", "").replace("`", "")
    return html.unescape(text)


def _replication_summary(detail: dict[str, Any]) -> str:
    """An ``Image Replicated`` / ``Image Replication Failed`` detail in one line (they carry no summary)."""
    source, destination = detail.get("source"), detail.get("destination")
    if not isinstance(source, dict) or not isinstance(destination, dict):
        return ""
    where = destination.get("url") or f"{destination.get('account')}.dkr.ecr.{destination.get('region')}"
    text = (
        f"{source.get('repository-name')}:{source.get('image-tag')} -> {where}/{destination.get('repository')}"
        f" as {_short(detail.get('image-digest'))}"
    )
    if "bytes-copied" in detail:
        text += f", {detail['blobs-copied']} blob(s) copied ({detail['bytes-copied']} bytes)"
    if detail.get("reason"):
        text += f": {detail['reason']}"
    return text


class _Narrator:
    """Turns the runner's JSON effect lines into indented, readable lines."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._line(json.loads(line))
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def _line(self, effect: dict[str, Any]) -> None:
        kind = effect.pop("kind", "?")
        who = effect.pop("function", "")
        effect.pop("event_id", None)
        effect.pop("input", None)
        if kind == "message_marked_sent":
            return  # bookkeeping: the slack_message line above says what was sent
        if kind == "slack_message":
            self._slack(who, effect)
            return
        if kind == "note":
            text = "; ".join(effect.get("notes", []))
        elif kind == "event_published":
            detail = effect.get("detail", {})
            text = f"{effect.get('detail_type')}: {detail.get('summary') or _replication_summary(detail)}"
        else:
            effect.pop("job_id", None)  # 64 hex digits: the destination says which job
            text = ", ".join(f"{key}={_short(value)}" for key, value in effect.items())
        self._out.write(f"     {who or 'runner':<18} {kind:<20} {text}\n")

    def _slack(self, who: str, effect: dict[str, Any]) -> None:
        """A Slack message as a reader sees it: its header, then its list of findings, if any."""
        blocks = effect.get("payload", {}).get("blocks", [])
        header = next((block["text"]["text"] for block in blocks if block["type"] == "header"), "")
        self._out.write(f"     {who:<18} {'slack_message':<20} {_plain(header)}\n")
        for block in blocks:
            text = block.get("text", {}).get("text", "") if block["type"] == "section" else ""
            for line in text.splitlines():
                if line.lstrip().startswith(("•", "`")):
                    self._out.write(f"{'':<45}{_plain(line.strip())}\n")

    def narrate(self, label: str) -> None:
        self._step = getattr(self, "_step", 0) + 1
        self._out.write(f"\n{self._step}. {label}\n")


def run_demo(template: SamTemplate, out: TextIO) -> int:
    from ecr_automation.local.simulation import run_simulation  # noqa: PLC0415

    out.write("ecr-automation demo: the template's functions on an embedded AWS stand-in (moto),\n")
    out.write("events routed by the template's EventBridge rules, the functions' own writes fed back as events.\n")
    narrator = _Narrator(out)
    errors, state = run_simulation(
        template,
        scenario(),
        narrator,  # type: ignore[arg-type]
        overrides={},
        findings=findings(),
        on_input=narrator.narrate,
        images=list(IMAGES.values()),
        overrides_from={REPLICATION_STEP: {"RULES_FILE": str(DEMO_RULES)}},
    )
    mirror_key = f"{MIRROR.registry_id}/{MIRROR.region}/{MIRROR.name}"
    mirrored = state.pop(mirror_key, {})
    out.write("\nFinal tags:\n")
    for repository, tags in state.items():
        for tag, digest in tags.items():
            out.write(f"  {repository}:{tag:<24} -> {_short(digest)}\n")
    errors = errors + _replicas(out, state.get(REPOSITORY.name, {}), mirrored)
    expected_rejections = [error for error in errors if "rejected" in error]
    unexpected = [error for error in errors if error not in expected_rejections]
    out.write(f"\n{len(expected_rejections)} event rejected as intended; {len(unexpected)} unexpected error(s).\n")
    for error in unexpected:
        out.write(f"  error: {error}\n")
    return 0 if not unexpected and len(expected_rejections) == 1 else 1


def _replicas(out: TextIO, source: dict[str, str], mirrored: dict[str, str]) -> list[str]:
    """The destination's tags and digests next to the source's; an error for each that differs."""
    out.write(f"\nReplicated: {MIRROR.region} {MIRROR.name} next to {REPOSITORY.region} {REPOSITORY.name}:\n")
    if not mirrored:
        out.write("  nothing\n")
        return [f"{MIRROR.name} in {MIRROR.region} holds no replica"]
    problems = []
    for tag, digest in mirrored.items():
        original = source.get(tag, "absent")
        verdict = "identical" if original == digest else "DIFFERENT"
        out.write(f"  {MIRROR.name}:{tag:<10} {digest}\n")
        out.write(f"  {REPOSITORY.name}:{tag:<17} {original}  {verdict}\n")
        if original != digest:
            problems.append(f"{MIRROR.name}:{tag} is {digest}, but {REPOSITORY.name}:{tag} is {original}")
    return problems
