#!/usr/bin/env python
"""Copy benchmark: ``ecr-automation copy`` against ``skopeo copy --all --preserve-digests``, two local registries.

What it does (bench/README.md, "Copy benchmark"):

1. Starts a source ``docker-registry`` on loopback and pushes, once, random (incompressible) images:
   a single-platform image of 3 layers of ``--layer-mib`` MiB, a 2-platform index, and a single layer of
   ``--big-mib`` MiB. Layers are generated into files under a temp dir, streamed, never held in memory.
2. For ``--rounds`` rounds, alternating which tool goes first, copies the image and the index with each tool
   (a subprocess each, as a user runs them) into a fresh destination registry process per copy; records
   wall time and that process's own peak RSS (``os.wait4``), and checks the destination digests.
3. Copies the big layer once with each tool (peak RSS), and times copying an image that is already present
   (the command line, and the copier in-process: what a warm Lambda pays).
4. Prints a human table and one JSON line; exit 1 when a target is missed or a digest differs.

Targets: median wall-time ratio ours/skopeo <= 1.0; peak RSS < 150 MiB for the big layer; an image already
present in < 0.2 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, and this file's name would shadow the
# standard library's `copy` module (dataclasses imports it): take the directory out before anything else.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import contextlib
import hashlib
import json
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "functions") not in sys.path:
    sys.path.append(str(ROOT / "functions"))

from tests.support.registry import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, OciRegistry  # noqa: E402

MiB = 1024 * 1024
GENERATE_CHUNK = 8 * MiB
OURS = [str(ROOT / ".venv" / "bin" / "ecr-automation"), "copy", "--insecure", "--all"]
SKOPEO = [
    "skopeo",
    "copy",
    "--quiet",
    "--all",
    "--preserve-digests",
    "--src-tls-verify=false",
    "--dest-tls-verify=false",
]
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)
TARGET_RATIO = 1.0
TARGET_BIG_RSS_MIB = 150
TARGET_PRESENT_SECONDS = 0.2


@dataclass(frozen=True)
class Image:
    name: str  # what the table calls it
    repository: str
    tag: str
    digest: str
    bytes: int


@dataclass(frozen=True)
class Run:
    tool: str
    image: str
    round: int
    seconds: float
    peak_rss_mib: float


# -- source images ----------------------------------------------------------------------------------------------
def random_layer(directory: Path, size: int, seed: int) -> tuple[Path, str]:
    """``size`` random bytes written to a file in chunks, hashed as they are written."""
    generator = random.Random(seed)
    path = directory / f"layer-{seed}"
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            chunk = generator.randbytes(min(GENERATE_CHUNK, remaining))
            hasher.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    return path, "sha256:" + hasher.hexdigest()


def push_image(
    registry: OciRegistry, scratch: Path, repository: str, tag: str | None, sizes: list[int], seed: int, arch: str
) -> tuple[str, bytes, int]:
    layers = []
    for offset, size in enumerate(sizes):
        path, digest = random_layer(scratch, size, seed + offset)
        registry.push_blob_file(repository, path, digest)
        path.unlink()  # the registry has it; keep the disk footprint to one layer at a time
        layers.append({"mediaType": OCI_LAYER, "digest": digest, "size": size})
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": registry.push_blob(repository, config), "size": len(config)},
            "layers": layers,
        }
    ).encode()
    reference = tag or "sha256:" + hashlib.sha256(manifest).hexdigest()
    return registry.push_manifest(repository, reference, manifest, OCI_MANIFEST), manifest, sum(sizes) + len(config)


def seed_source(registry: OciRegistry, scratch: Path, layer_mib: int, big_mib: int) -> dict[str, Image]:
    images: dict[str, Image] = {}
    layer = layer_mib * MiB
    digest, _, size = push_image(registry, scratch, "bench/image", "v1", [layer] * 3, 100, "amd64")
    images["image"] = Image(f"3 x {layer_mib} MiB", "bench/image", "v1", digest, size)
    children, total = [], 0
    for number, arch in enumerate(("amd64", "arm64")):
        child, manifest, size = push_image(
            registry, scratch, "bench/index", None, [layer, MiB], 200 + 10 * number, arch
        )
        children.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": child,
                "size": len(manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
        total += size
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    digest = registry.push_manifest("bench/index", "v1", index, OCI_INDEX)
    images["index"] = Image(f"2-platform index ({layer_mib}+1 MiB each)", "bench/index", "v1", digest, total)
    digest, _, size = push_image(registry, scratch, "bench/big", "v1", [big_mib * MiB], 300, "amd64")
    images["big"] = Image(f"1 layer of {big_mib} MiB", "bench/big", "v1", digest, size)
    return images


# -- running the tools --------------------------------------------------------------------------------------------
def host(registry: OciRegistry) -> str:
    return registry.url.removeprefix("http://")


def run_tool(tool: str, source: OciRegistry, destination: OciRegistry, image: Image) -> tuple[float, float]:
    """Wall seconds and the tool's own peak RSS in MiB.

    The tool runs under /usr/bin/time: a process's maxrss survives exec, so a tool forked straight from this
    (large) Python process would report this process's RSS; forked from `time`, it reports its own.
    """
    src = f"docker://{host(source)}/{image.repository}:{image.tag}"
    dst = f"docker://{host(destination)}/{image.repository}:{image.tag}"
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as measured:
        command = [TIME, "-o", measured.name, "-f", "%M", *(OURS if tool == "ours" else SKOPEO), src, dst]
        started = time.monotonic()
        finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        seconds = time.monotonic() - started
        if finished.returncode != 0:
            raise RuntimeError(f"{tool} failed ({finished.returncode}): {finished.stderr.decode().strip()[-500:]}")
        peak_kib = int(Path(measured.name).read_text().split()[-1])
    return seconds, peak_kib / 1024


def destination_digest(registry: OciRegistry, image: Image) -> str:
    response = registry.session.head(
        f"{registry.url}/v2/{image.repository}/manifests/{image.tag}",
        headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"},
        timeout=30,
    )
    return str(response.headers.get("Docker-Content-Digest", ""))


@contextlib.contextmanager
def fresh_registry() -> Iterator[OciRegistry]:
    registry = OciRegistry()
    try:
        yield registry
    finally:
        registry.stop()


def copy_once(tool: str, source: OciRegistry, image: Image, round_number: int = 0) -> Run:
    with fresh_registry() as destination:
        seconds, rss = run_tool(tool, source, destination, image)
        copied = destination_digest(destination, image)
        if copied != image.digest:
            raise RuntimeError(f"{tool} changed the digest of {image.name}: {copied} != {image.digest}")
    return Run(tool, image.name, round_number, seconds, rss)


def already_present(source: OciRegistry, image: Image) -> dict[str, float]:
    """A second copy of the same image: the command line (interpreter start included) and in-process."""
    from ecr_automation.adapters.oci import Copier  # noqa: PLC0415

    with fresh_registry() as destination:
        run_tool("ours", source, destination, image)
        cli_seconds, _ = run_tool("ours", source, destination, image)
        skopeo_seconds, _ = run_tool("skopeo", source, destination, image)
        with Copier(insecure=True) as copier:
            src = f"{host(source)}/{image.repository}:{image.tag}"
            dst = f"{host(destination)}/{image.repository}:{image.tag}"
            copier.copy(src, dst)  # connections opened, as in a warm Lambda
            started = time.monotonic()
            report = copier.copy(src, dst)
            in_process = time.monotonic() - started
        if report.blobs_copied or report.manifests_copied or destination_digest(destination, image) != image.digest:
            raise RuntimeError(f"an already-present copy uploaded something: {report}")
    return {"cli_seconds": cli_seconds, "in_process_seconds": in_process, "skopeo_seconds": skopeo_seconds}


# -- report -----------------------------------------------------------------------------------------------------
def summarize(
    runs: list[Run], big: list[Run], present: dict[str, float], images: dict[str, Image]
) -> dict[str, object]:
    per_image = {}
    for key in ("image", "index"):
        name = images[key].name
        ours = [run.seconds for run in runs if run.tool == "ours" and run.image == name]
        theirs = [run.seconds for run in runs if run.tool == "skopeo" and run.image == name]
        per_image[key] = {
            "bytes": images[key].bytes,
            "ours_median_s": round(statistics.median(ours), 3),
            "skopeo_median_s": round(statistics.median(theirs), 3),
            "ratio": round(statistics.median(ours) / statistics.median(theirs), 3),
            "ours_peak_rss_mib": round(max(r.peak_rss_mib for r in runs if r.tool == "ours" and r.image == name), 1),
            "skopeo_peak_rss_mib": round(
                max(r.peak_rss_mib for r in runs if r.tool == "skopeo" and r.image == name), 1
            ),
        }
    # One ratio per (image, round): both tools copied the same thing back to back, whoever went first.
    seconds = {(run.tool, run.image, run.round): run.seconds for run in runs}
    pair_ratios = [
        seconds[("ours", image, number)] / seconds[("skopeo", image, number)]
        for _, image, number in seconds
        if _ == "ours"
    ]
    big_by_tool = {run.tool: run for run in big}
    return {
        "kind": "copy_benchmark",
        "rounds": len({run.round for run in runs}),
        "median_ratio": round(statistics.median(pair_ratios), 3),
        "per_image": per_image,
        "big_layer": {
            "bytes": images["big"].bytes,
            "ours_s": round(big_by_tool["ours"].seconds, 3),
            "ours_peak_rss_mib": round(big_by_tool["ours"].peak_rss_mib, 1),
            "skopeo_s": round(big_by_tool["skopeo"].seconds, 3),
            "skopeo_peak_rss_mib": round(big_by_tool["skopeo"].peak_rss_mib, 1),
        },
        "already_present": {name: round(value, 4) for name, value in present.items()},
    }


def print_table(summary: dict[str, object]) -> None:
    per_image = summary["per_image"]
    big = summary["big_layer"]
    present = summary["already_present"]
    assert isinstance(per_image, dict) and isinstance(big, dict) and isinstance(present, dict)
    print(f"{'copy':<34}{'ours s':>9}{'skopeo s':>10}{'ratio':>7}{'ours RSS':>10}{'skopeo RSS':>12}", file=sys.stderr)
    for key, row in per_image.items():
        print(
            f"{key + ' (median)':<34}{row['ours_median_s']:>9.3f}{row['skopeo_median_s']:>10.3f}{row['ratio']:>7.2f}"
            f"{row['ours_peak_rss_mib']:>9.1f}M{row['skopeo_peak_rss_mib']:>11.1f}M",
            file=sys.stderr,
        )
    ratio = big["ours_s"] / big["skopeo_s"]
    print(
        f"{'big layer (' + str(big['bytes'] // MiB) + ' MiB)':<34}{big['ours_s']:>9.3f}{big['skopeo_s']:>10.3f}"
        f"{ratio:>7.2f}{big['ours_peak_rss_mib']:>9.1f}M{big['skopeo_peak_rss_mib']:>11.1f}M",
        file=sys.stderr,
    )
    print(
        f"{'already present':<34}{present['cli_seconds']:>9.3f}{present['skopeo_seconds']:>10.3f}"
        f"   (in-process, warm: {present['in_process_seconds']:.4f} s)",
        file=sys.stderr,
    )
    print(
        f"median wall-time ratio ours/skopeo over {summary['rounds']} rounds: {summary['median_ratio']}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both tools on both images (default 3)")
    parser.add_argument("--layer-mib", type=int, default=100)
    parser.add_argument("--big-mib", type=int, default=1024, help="the single big layer (default 1 GiB)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 16 MiB layers, a 64 MiB layer")
    parser.add_argument("--json", type=Path, help="also write the JSON summary here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.layer_mib, args.big_mib = 1, 16, 64
    for binary in ("docker-registry", "skopeo", TIME):
        if shutil.which(binary) is None:
            print(f"{binary} is not installed (apt-get install -y docker-registry skopeo time)", file=sys.stderr)
            return 2
    if not Path(OURS[0]).exists():
        print(f"{OURS[0]} is missing: install the package into .venv", file=sys.stderr)
        return 2
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="bench-copy-"))
    source = OciRegistry()
    try:
        images = seed_source(source, scratch, args.layer_mib, args.big_mib)
        runs: list[Run] = []
        for number in range(args.rounds):
            order = ("ours", "skopeo") if number % 2 == 0 else ("skopeo", "ours")
            for key in ("image", "index"):
                for tool in order:
                    runs.append(copy_once(tool, source, images[key], number))
        big = [copy_once(tool, source, images["big"]) for tool in ("ours", "skopeo")]
        present = already_present(source, images["image"])
    finally:
        source.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    summary = summarize(runs, big, present, images)
    summary["bench_seconds"] = round(time.monotonic() - started, 1)
    big_rss = summary["big_layer"]["ours_peak_rss_mib"]  # type: ignore[index]
    misses = []
    if summary["median_ratio"] > TARGET_RATIO:  # type: ignore[operator]
        misses.append("ratio")
    if big_rss >= TARGET_BIG_RSS_MIB:
        misses.append("big-layer RSS")
    if present["in_process_seconds"] >= TARGET_PRESENT_SECONDS:
        misses.append("already-present time")
    summary["targets_missed"] = misses
    print_table(summary)
    line = json.dumps(summary)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
