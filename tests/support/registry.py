"""A real OCI registry (CNCF distribution, Debian's `docker-registry`) on loopback, and a small client for it."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import bcrypt
import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
STARTUP_SECONDS = 20


class RegistryNotInstalledError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OciRegistry:
    """One fresh `docker-registry serve` process, filesystem storage in a temp dir, optional basic auth."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RegistryNotInstalledError("docker-registry not installed: run make test (it installs it)")
        self._root = Path(tempfile.mkdtemp(prefix="oci-registry-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = (user, password) if user and password else None
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self._root / "data")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        if self.auth:
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()  # type: ignore[union-attr]
            (self._root / "htpasswd").write_text(f"{user}:{hashed}\n")
            config["auth"] = {"htpasswd": {"realm": "test", "path": str(self._root / "htpasswd")}}
        config_path = self._root / "config.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        self._log = (self._root / "registry.log").open("w")
        self._process = subprocess.Popen([binary, "serve", str(config_path)], stdout=self._log, stderr=self._log)
        self._wait_until_ready()
        self.session = requests.Session()
        if self.auth:
            self.session.auth = self.auth  # type: ignore[assignment]

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code in {200, 401}:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {(self._root / 'registry.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._log.close()
        shutil.rmtree(self._root, ignore_errors=True)

    # -- the OCI distribution API ------------------------------------------------------------
    def push_blob(self, repository: str, data: bytes) -> str:
        digest = sha256_digest(data)
        started = self.session.post(f"{self.url}/v2/{repository}/blobs/uploads/", timeout=30)
        started.raise_for_status()
        location = started.headers["Location"]
        location = location if location.startswith("http") else self.url + location
        separator = "&" if "?" in location else "?"
        finished = self.session.put(
            f"{location}{separator}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=60,
        )
        finished.raise_for_status()
        return digest

    def push_blob_file(self, repository: str, path: Path, digest: str) -> str:
        """Upload a blob from a file, streamed (a large layer never sits in memory)."""
        started = self.session.post(f"{self.url}/v2/{repository}/blobs/uploads/", timeout=30)
        started.raise_for_status()
        location = started.headers["Location"]
        location = location if location.startswith("http") else self.url + location
        separator = "&" if "?" in location else "?"
        with path.open("rb") as body:
            finished = self.session.put(
                f"{location}{separator}digest={digest}",
                data=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)},
                timeout=600,
            )
        finished.raise_for_status()
        return digest

    def blob(self, repository: str, digest: str) -> bytes:
        response = self.session.get(f"{self.url}/v2/{repository}/blobs/{digest}", timeout=60)
        response.raise_for_status()
        return response.content

    def blob_exists(self, repository: str, digest: str) -> bool:
        return self.session.head(f"{self.url}/v2/{repository}/blobs/{digest}", timeout=10).status_code == 200

    def push_manifest(self, repository: str, reference: str, manifest: bytes, media_type: str) -> str:
        response = self.session.put(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            data=manifest,
            headers={"Content-Type": media_type},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.headers["Docker-Content-Digest"])

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        response = self.session.get(
            f"{self.url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join([OCI_INDEX, OCI_MANIFEST])},
            timeout=30,
        )
        response.raise_for_status()
        return response.content, response.headers["Content-Type"], response.headers["Docker-Content-Digest"]

    def tags(self, repository: str) -> list[str]:
        response = self.session.get(f"{self.url}/v2/{repository}/tags/list", timeout=30)
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])

    def push_image(
        self, repository: str, tag: str | None, layers: list[bytes], platform: str = "linux/amd64"
    ) -> tuple[str, bytes]:
        """An OCI image of ``layers``; returns its digest and exact manifest bytes."""
        os_name, architecture = platform.split("/", 1)
        config = json.dumps(
            {
                "architecture": architecture,
                "os": os_name,
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer) for layer in layers]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": self.push_blob(repository, config), "size": len(config)},
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": self.push_blob(repository, layer), "size": len(layer)}
                    for layer in layers
                ],
            }
        ).encode()
        digest = self.push_manifest(repository, tag or sha256_digest(manifest), manifest, OCI_MANIFEST)
        return digest, manifest

    def push_index(self, repository: str, tag: str, platforms: dict[str, list[bytes]]) -> tuple[str, bytes]:
        """One image per platform, then an OCI index referencing them, pushed under ``tag``."""
        children = []
        for platform, layers in platforms.items():
            digest, manifest = self.push_image(repository, None, layers, platform)
            os_name, architecture = platform.split("/", 1)
            children.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "platform": {"os": os_name, "architecture": architecture},
                }
            )
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
        return self.push_manifest(repository, tag, index, OCI_INDEX), index
