"""Local OCI registries standing in for ECR registries: Debian's ``docker-registry`` on loopback (local extra only).

``simulate`` and ``demo`` start one per ECR registry host in play when the rules replicate, push the
synthetic images' real bytes into the source's, and point the functions at them through
``REGISTRY_ENDPOINT_OVERRIDES`` (plain HTTP: ``REGISTRY_INSECURE=true``). They take no credentials:
the copier offers the ECR token moto hands out, and the registry does not ask for it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import urllib3

from ecr_automation.errors import ConfigurationError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
STARTUP_SECONDS = 20


class RegistryUnavailableError(ConfigurationError):
    """``docker-registry`` is not installed, or did not start; the message is one line."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalRegistry:
    """One fresh ``docker-registry serve`` process on loopback, filesystem storage in a temporary directory."""

    def __init__(self, name: str) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RegistryUnavailableError(
                "docker-registry is not installed: replication in simulate/demo needs it "
                "(scripts/bootstrap.sh app installs it; Debian package docker-registry)"
            )
        self.name = name
        self._root = Path(tempfile.mkdtemp(prefix="ecr-automation-registry-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "version": 0.1,
            "log": {"level": "error"},
            "storage": {"filesystem": {"rootdirectory": str(self._root / "data")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        config_path = self._root / "config.yml"
        config_path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        self._log = (self._root / "registry.log").open("w", encoding="utf-8")
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own config file
            [binary, "serve", str(config_path)], stdout=self._log, stderr=self._log
        )
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=30))
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                if self._request("GET", "/v2/").status in {200, 401}:
                    return
            except urllib3.exceptions.HTTPError:
                time.sleep(0.05)
        log = (self._root / "registry.log").read_text(encoding="utf-8").strip().splitlines()
        self.stop()
        raise RegistryUnavailableError(f"docker-registry did not start: {log[-1] if log else 'no output'}")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._log.close()
        self._http.clear()
        shutil.rmtree(self._root, ignore_errors=True)

    def _request(self, method: str, path: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        url = path if path.startswith("http") else self.url + path
        return self._http.request(method, url, **kwargs)

    def _checked(self, method: str, path: str, **kwargs: Any) -> urllib3.BaseHTTPResponse:
        response = self._request(method, path, **kwargs)
        if response.status >= 300:
            body = response.data[:200].decode(errors="replace")
            raise RuntimeError(f"{self.name}: {method} {path.split('?', maxsplit=1)[0]}: HTTP {response.status} {body}")
        return response

    # -- the parts of the distribution API the stand-in needs -------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        return self._request("HEAD", f"/v2/{repository}/blobs/{digest}").status == 200

    def push_blob(self, repository: str, digest: str, data: bytes) -> None:
        if self.has_blob(repository, digest):
            return
        started = self._checked("POST", f"/v2/{repository}/blobs/uploads/")
        location = str(started.headers["Location"])
        separator = "&" if "?" in location else "?"
        self._checked(
            "PUT",
            f"{location}{separator}digest={digest}",
            body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
        )

    def push_manifest(self, repository: str, reference: str, manifest: bytes, media_type: str) -> str:
        response = self._checked(
            "PUT", f"/v2/{repository}/manifests/{reference}", body=manifest, headers={"Content-Type": media_type}
        )
        return str(response.headers["Docker-Content-Digest"])

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """The manifest's exact bytes, media type and digest; None when the registry has no such manifest."""
        response = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])},
        )
        if response.status == 404:
            return None
        if response.status >= 300:
            raise RuntimeError(f"{self.name}: GET manifest {repository}:{reference}: HTTP {response.status}")
        return response.data, str(response.headers["Content-Type"]), str(response.headers["Docker-Content-Digest"])

    def tags(self, repository: str) -> list[str]:
        response = self._request("GET", f"/v2/{repository}/tags/list")
        if response.status == 404:
            return []
        if response.status >= 300:
            raise RuntimeError(f"{self.name}: GET tags of {repository}: HTTP {response.status}")
        return sorted(json.loads(response.data).get("tags") or [])
