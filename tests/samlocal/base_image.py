"""A Lambda-like base image for `sam local invoke`, built offline: no image registry is reachable here.

Debian trixie's python3.13 (debootstrap from the mirror apt already uses), the Lambda runtime interface
client (awslambdaric) in /var/runtime, and a /var/runtime/bootstrap that runs it; imported with
`docker import`. SAM layers its own aws-lambda-rie on top (it needs only sh, mv and chmod in the image).
The image is tagged with a hash of this recipe: a later run finds it and builds nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.samlocal.docker_host import DockerHost, DockerUnavailableError, cache_root

REPOSITORY = "ecr-automation-lambda-base"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
BOOTSTRAP = """#!/bin/sh
# The runtime's bootstrap: the runtime interface client runs the handler Lambda names in $_HANDLER.
export PYTHONPATH="/var/task:/opt/python:/var/runtime${PYTHONPATH:+:$PYTHONPATH}"
cd "${LAMBDA_TASK_ROOT:-/var/task}" 2>/dev/null || true
exec /usr/bin/python3.13 -m awslambdaric "$_HANDLER"
"""
# (Lambda architecture, pip platform) by the host's machine: the image runs natively, never under emulation.
ARCHITECTURES = {"x86_64": ("x86_64", "manylinux2014_x86_64"), "aarch64": ("arm64", "manylinux2014_aarch64")}
RECIPE = {
    "suite": "trixie",
    "variant": "minbase",
    "include": ["python3.13"],
    "runtime_client": "awslambdaric>=3,<5",
    "python_version": "3.13",
    "bootstrap": BOOTSTRAP,
    "prune": ["var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"],
    "changes": [
        "ENV LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime LANG=C.UTF-8 TZ=:UTC",
        "WORKDIR /var/task",
        'ENTRYPOINT ["/var/runtime/bootstrap"]',
    ],
}


class ImageBuildError(RuntimeError):
    """The base image could not be built; the message says which step failed and why."""


def lambda_architecture() -> str:
    machine = platform.machine()
    if machine not in ARCHITECTURES:
        raise ImageBuildError(f"no Lambda architecture runs natively on a {machine} host")
    return ARCHITECTURES[machine][0]


def image_reference() -> str:
    recipe = {**RECIPE, "platform": ARCHITECTURES.get(platform.machine(), ("", platform.machine()))[1]}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return f"{REPOSITORY}:{digest}"


def debian_mirror() -> str:
    """The Debian archive apt is configured with (deb822 .sources or sources.list), not a security one."""
    override = os.environ.get("ECR_AUTOMATION_DEBIAN_MIRROR")
    if override:
        return override
    candidates: list[str] = []
    sources_dir = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []:
        for stanza in path.read_text(errors="replace").split("\n\n"):
            fields = {
                key.strip().lower(): value.strip()
                for key, _, value in (line.partition(":") for line in stanza.splitlines() if not line.startswith("#"))
                if value
            }
            if "deb" in fields.get("types", "").split() and "security" not in fields.get("suites", ""):
                candidates.extend(fields.get("uris", "").split())
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for line in sources_list.read_text(errors="replace").splitlines():
            match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and "security" not in match[2]:
                candidates.append(match[1])
    return next((uri.rstrip("/") for uri in candidates if "/debian" in uri), FALLBACK_MIRROR)


def _run(step: str, argv: list[str], timeout: float = 900) -> None:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ImageBuildError(f"{step}: {error}") from None
    if completed.returncode != 0:
        tail = " | ".join((completed.stderr or completed.stdout).strip().splitlines()[-6:])
        raise ImageBuildError(f"{step} failed (exit {completed.returncode}): {tail}")


def ensure_base_image(docker: DockerHost) -> str:
    """The base image's reference, built first if the daemon does not hold it yet."""
    reference = image_reference()
    if docker.has_image(reference):
        return reference
    _, pip_platform = ARCHITECTURES.get(platform.machine(), (None, None))
    if pip_platform is None:
        raise ImageBuildError(f"no Lambda architecture runs natively on a {platform.machine()} host")
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError("debootstrap is not installed (scripts/bootstrap.sh all installs it)")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root to build the base image")
    work = cache_root()
    work.mkdir(parents=True, exist_ok=True)
    root_parent = Path(tempfile.mkdtemp(prefix="rootfs-", dir=work))
    rootfs = root_parent / "rootfs"
    try:
        mirror = debian_mirror()
        _run(
            f"debootstrap {RECIPE['suite']} from {mirror}",
            [
                debootstrap,
                f"--variant={RECIPE['variant']}",
                f"--include={','.join(RECIPE['include'])}",
                str(RECIPE["suite"]),
                str(rootfs),
                mirror,
            ],
        )
        runtime = rootfs / "var" / "runtime"
        _run(
            "pip install awslambdaric into /var/runtime",
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "--target",
                str(runtime),
                "--platform",
                pip_platform,
                "--only-binary=:all:",
                "--python-version",
                str(RECIPE["python_version"]),
                "--implementation",
                "cp",
                str(RECIPE["runtime_client"]),
            ],
        )
        bootstrap = runtime / "bootstrap"
        bootstrap.write_text(BOOTSTRAP)
        bootstrap.chmod(0o755)
        for directory in ("var/task", "opt"):
            (rootfs / directory).mkdir(parents=True, exist_ok=True)
        for pruned in RECIPE["prune"]:
            shutil.rmtree(rootfs / str(pruned), ignore_errors=True)
        _import(docker, rootfs, reference)
    finally:
        shutil.rmtree(root_parent, ignore_errors=True)
    _forget_older_recipes(docker, reference)
    return reference


def _forget_older_recipes(docker: DockerHost, reference: str) -> None:
    """Remove base images of earlier recipes, so the cached data root does not grow with every change.
    (SAM's own `rapid-*` images, built on top, it replaces itself.)"""
    listed = docker.run("images", REPOSITORY, "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
    stale = [image for image in listed if image != reference and not image.split(":", 1)[1].startswith("rapid")]
    if stale:
        docker.run("rmi", *stale, check=False)


def _import(docker: DockerHost, rootfs: Path, reference: str) -> None:
    changes = [argument for change in RECIPE["changes"] for argument in ("--change", str(change))]
    with subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        try:
            docker.run("import", *changes, "-", reference, stdin=tar.stdout.fileno(), timeout=600)
        except DockerUnavailableError as error:
            raise ImageBuildError(f"docker import: {error}") from None
        finally:
            tar.stdout.close()
    if tar.returncode != 0:
        raise ImageBuildError(f"tar of the root file system failed (exit {tar.returncode})")
