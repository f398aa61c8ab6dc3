"""Docker for the `sam local invoke` tier: the running daemon, or one this session starts and stops.

No service manager runs here (nor on a fresh CI machine): when no daemon answers, ``dockerd`` is started
as a child of the test session, with its images kept in a cache directory (so the Lambda base image
built once is found again) and its sockets and pid file in a fresh directory under /tmp.
Anything that goes wrong raises ``DockerUnavailableError`` with the reason, for the tests to fail on.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

STARTUP_SECONDS = 90
STOP_SECONDS = 30
DEFAULT_HOST = "unix:///var/run/docker.sock"
SIOCGIFADDR = 0x8915


class DockerUnavailableError(RuntimeError):
    """Docker is missing, or its daemon did not start or cannot be used; the message says why."""


def cache_root() -> Path:
    """Where this tier keeps what outlives a run (the daemon's images, SAM's build cache)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ecr-automation" / "samlocal"


def docker_cli() -> str:
    found = shutil.which("docker")
    if found is None:
        raise DockerUnavailableError("the docker client is not installed (scripts/bootstrap.sh all installs docker.io)")
    return found


class DockerHost:
    """A reachable Docker daemon: ``host`` is its DOCKER_HOST, ``started`` whether this session started it."""

    def __init__(self) -> None:
        self.cli = docker_cli()
        self.host = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        self.started = False
        self._process: subprocess.Popen[bytes] | None = None
        self._exec_root: Path | None = None
        self.log_path: Path | None = None
        if not self._answers(self.host):
            self._start()

    # -- the daemon ---------------------------------------------------------------------------------
    def _answers(self, host: str) -> bool:
        try:
            completed = subprocess.run(
                [self.cli, "--host", host, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return completed.returncode == 0 and bool(completed.stdout.strip())

    def _start(self) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerUnavailableError(
                f"no Docker daemon answers at {self.host} and dockerd is not installed "
                "(scripts/bootstrap.sh all installs docker.io)"
            )
        if os.geteuid() != 0:
            raise DockerUnavailableError(
                f"no Docker daemon answers at {self.host}, and starting dockerd needs root (this is uid {os.geteuid()})"
            )
        data_root = cache_root() / "docker"
        data_root.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to about 100 bytes: keep the daemon's runtime state short-named in /tmp.
        self._exec_root = Path(tempfile.mkdtemp(prefix="ecr-automation-dockerd-", dir="/tmp"))
        self.host = f"unix://{self._exec_root}/docker.sock"
        self.log_path = self._exec_root / "dockerd.log"
        argv = [
            dockerd,
            "--data-root",
            str(data_root),
            "--exec-root",
            str(self._exec_root / "exec"),
            "--pidfile",
            str(self._exec_root / "dockerd.pid"),
            "--host",
            self.host,
        ]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(  # a fixed binary, our own arguments
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started = True
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                reason = self._log_tail()
                self.stop()
                raise DockerUnavailableError(f"dockerd exited with status {self._process.returncode}: {reason}")
            if self._answers(self.host):
                return
            time.sleep(0.5)
        reason = self._log_tail()
        self.stop()
        raise DockerUnavailableError(f"dockerd did not answer within {STARTUP_SECONDS} s: {reason}")

    def _log_tail(self, lines: int = 8) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "no log"
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        interesting = [line for line in text if "level=error" in line or "level=fatal" in line or "failed" in line]
        return " | ".join((interesting or text)[-lines:]) or "no output"

    def stop(self) -> None:
        """Stop the daemon if this session started it (its containers go with it); a running one is left alone."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=STOP_SECONDS)
        if self._exec_root is not None:
            shutil.rmtree(self._exec_root, ignore_errors=True)
            self._exec_root = None

    # -- using it -----------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def run(
        self, *args: str, timeout: float = 300, stdin: int | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [self.cli, "--host", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=stdin,
            check=False,
        )
        if check and completed.returncode != 0:
            raise DockerUnavailableError(f"docker {' '.join(args)}: {completed.stderr.strip() or completed.stdout}")
        return completed

    def has_image(self, reference: str) -> bool:
        return self.run("image", "inspect", "--format", "{{.Id}}", reference, check=False).returncode == 0

    def bridge_address(self) -> str:
        """The host's address on the daemon's default bridge: what a container reaches the host at."""
        name = self.run(
            "network", "inspect", "bridge", "--format", '{{index .Options "com.docker.network.bridge.name"}}'
        ).stdout.strip()
        gateway = self.run(
            "network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}"
        ).stdout.strip()
        if gateway:
            return gateway
        if not name:
            raise DockerUnavailableError("the daemon's bridge network names no interface and no gateway")
        return interface_address(name)


def interface_address(name: str) -> str:
    """The IPv4 address of a local network interface (SIOCGIFADDR), e.g. docker0's."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            packed = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError as error:
            raise DockerUnavailableError(f"interface {name} has no IPv4 address here: {error}") from None
    return socket.inet_ntoa(packed[20:24])
