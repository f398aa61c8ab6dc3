"""The OCI copier against two real `docker-registry` processes on loopback, and a fault-injecting proxy.

Every test reads the destination back with manifest GETs and asserts that its digests equal the source's.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ecr_automation import cli
from ecr_automation.adapters.oci import (
    Copier,
    CopyError,
    CopyInterrupted,
    EcrCredentials,
    EcrTokenProvider,
    Reference,
    UploadMode,
)
from ecr_automation.adapters.oci.auth import Credentials, StaticCredentials
from tests.integration.conftest import ACCOUNT, _registry
from tests.support.moto_server import REGION, MotoServer
from tests.support.registry import OCI_INDEX, OCI_MANIFEST, OciRegistry, sha256_digest

pytestmark = pytest.mark.slow

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EVERY_MANIFEST_TYPE = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
KiB = 1024


# -- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def second_registry() -> Iterator[OciRegistry]:
    """The destination: a second `docker-registry` process, so blobs really travel between two registries."""
    registry = _registry()
    yield registry
    registry.stop()


@pytest.fixture
def repo() -> str:
    """A fresh repository name per test: the registries live for the whole session."""
    return f"team/app-{uuid.uuid4().hex[:10]}"


def host(registry: OciRegistry) -> str:
    return registry.url.removeprefix("http://")


def layer(size: int) -> bytes:
    return secrets.token_bytes(size)


# -- reading the destination back ----------------------------------------------------------------------------
def manifest_at(registry: OciRegistry, repository: str, reference: str) -> tuple[bytes, str]:
    """Exact bytes and the registry's digest header, accepting every manifest type (so nothing is converted)."""
    response = registry.session.get(
        f"{registry.url}/v2/{repository}/manifests/{reference}", headers={"Accept": EVERY_MANIFEST_TYPE}, timeout=30
    )
    response.raise_for_status()
    return response.content, response.headers["Docker-Content-Digest"]


def assert_same_image(
    source: OciRegistry,
    source_repo: str,
    destination: OciRegistry,
    destination_repo: str,
    reference: str,
    source_reference: str | None = None,
) -> str:
    """The destination holds byte-identical manifests, children and blobs under the same digests."""
    raw, digest = manifest_at(source, source_repo, source_reference or reference)
    copied_raw, copied_digest = manifest_at(destination, destination_repo, reference)
    assert copied_digest == digest == sha256_digest(copied_raw)
    assert copied_raw == raw
    document = json.loads(raw)
    for child in document.get("manifests", []):
        assert_same_image(source, source_repo, destination, destination_repo, child["digest"])
    for blob in [document["config"], *document["layers"]] if "config" in document else []:
        data = destination.blob(destination_repo, blob["digest"])
        assert sha256_digest(data) == blob["digest"]
    return digest


# -- building images -------------------------------------------------------------------------------------------
def push_docker_list(registry: OciRegistry, repository: str, tag: str) -> str:
    """A Docker v2 manifest list of two Docker v2 manifests (the media types `docker build` produces)."""
    entries = []
    for architecture in ("amd64", "arm64"):
        layer_bytes = layer(40 * KiB)
        config = json.dumps({"architecture": architecture, "os": "linux"}).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": DOCKER_CONFIG,
                    "digest": registry.push_blob(repository, config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": DOCKER_LAYER,
                        "digest": registry.push_blob(repository, layer_bytes),
                        "size": len(layer_bytes),
                    }
                ],
            },
            indent=3,  # unusual whitespace: a copier that re-serialises would change the digest
        ).encode()
        digest = registry.push_manifest(repository, sha256_digest(manifest), manifest, DOCKER_MANIFEST)
        entries.append(
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": {"architecture": architecture, "os": "linux"},
            }
        )
    manifest_list = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": entries}).encode()
    return registry.push_manifest(repository, tag, manifest_list, DOCKER_MANIFEST_LIST)


def push_index_with_attestation(registry: OciRegistry, repository: str, tag: str, layer_size: int = 64 * KiB) -> str:
    """What `docker buildx build --platform linux/amd64,linux/arm64 --provenance` pushes: two platform
    manifests and an attestation manifest (platform unknown/unknown) pointing at one of them."""
    children = []
    for platform in ("linux/amd64", "linux/arm64"):
        digest, manifest = registry.push_image(repository, None, [layer(layer_size), layer(16 * KiB)], platform)
        os_name, architecture = platform.split("/")
        children.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": {"os": os_name, "architecture": architecture},
            }
        )
    provenance = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicate": {}}).encode()
    attestation_digest, attestation = registry.push_image(repository, None, [provenance], "unknown/unknown")
    children.append(
        {
            "mediaType": OCI_MANIFEST,
            "digest": attestation_digest,
            "size": len(attestation),
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": children[0]["digest"],
            },
        }
    )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    return registry.push_manifest(repository, tag, index, OCI_INDEX)


def push_signature(registry: OciRegistry, repository: str, subject: str, subject_size: int) -> tuple[str, bytes]:
    """An OCI 1.1 artifact (a signature) whose `subject` is ``subject``."""
    empty = registry.push_blob(repository, b"{}")
    payload = layer(512)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
            "config": {"mediaType": EMPTY_CONFIG, "digest": empty, "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": registry.push_blob(repository, payload),
                    "size": len(payload),
                }
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
        }
    ).encode()
    return registry.push_manifest(repository, sha256_digest(manifest), manifest, OCI_MANIFEST), manifest


# -- a loopback proxy that injects faults ----------------------------------------------------------------------
@dataclass
class Faults:
    """What the proxy does to requests; each ``*_once`` rule fires on the first matching request only."""

    drop_blob_get_midway_once: bool = False  # headers and half the body, then the connection is cut
    answer_500_once: Callable[[str, str], bool] | None = None  # (method, path) -> fail this one?
    answer_429_once: Callable[[str, str], bool] | None = None  # with Retry-After: 1
    missing_blob: str | None = None  # a blob GET for this digest answers 404, every time
    slow_blob_get_seconds: float = 0.0
    corrupt_blob_get_once: bool = False  # one byte of a blob flipped in transit, once
    refuse_mounts: bool = False  # a POST ?mount= is forwarded as a plain upload start (the registry's 202)
    bearer_token: str | None = None  # require `Authorization: Bearer <token>`, served from /token
    fired: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def once(self, name: str) -> bool:
        with self.lock:
            if name in self.fired:
                return False
            self.fired.append(name)
            return True


class FaultProxy:
    """A ThreadingHTTPServer forwarding to a real registry (keep-alive, HTTP/1.1), with ``Faults`` applied.
    The client's Host header is forwarded, so the registry's upload Locations point back through the proxy."""

    def __init__(self, upstream: OciRegistry, faults: Faults) -> None:
        self.faults = faults
        upstream_port = upstream.port
        upstream_auth = upstream.auth
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                return

            def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                faults = proxy.faults
                with faults.lock:
                    faults.requests.append((self.command, path))
                if len(body) < length:  # the client gave up mid-body: nothing to answer, nothing to forward
                    self.close_connection = True
                    return
                if faults.bearer_token is not None:
                    if path == "/token":
                        self._reply(200, json.dumps({"token": faults.bearer_token, "expires_in": 300}).encode())
                        return
                    if self.headers.get("Authorization") != f"Bearer {faults.bearer_token}":
                        realm = f"http://{self.headers['Host']}/token"
                        challenge = f'Bearer realm="{realm}",service="proxy",scope="repository:x:pull"'
                        self._reply(401, b"{}", {"WWW-Authenticate": challenge})
                        return
                is_blob_get = self.command == "GET" and "/blobs/sha256:" in path
                if faults.missing_blob and is_blob_get and path.endswith(faults.missing_blob):
                    error = {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]}
                    self._reply(404, json.dumps(error).encode(), {"Content-Type": "application/json"})
                    return
                if faults.answer_500_once and faults.answer_500_once(self.command, path) and faults.once("500"):
                    self._reply(500, b'{"errors":[{"code":"UNKNOWN","message":"injected"}]}')
                    return
                if faults.answer_429_once and faults.answer_429_once(self.command, path) and faults.once("429"):
                    self._reply(429, b"{}", {"Retry-After": "1"})
                    return
                if is_blob_get and faults.slow_blob_get_seconds:
                    time.sleep(faults.slow_blob_get_seconds)
                forward_path = self.path
                if faults.refuse_mounts and self.command == "POST" and "mount=" in self.path:
                    forward_path = path
                headers = {name: value for name, value in self.headers.items() if name.lower() not in {"authorization"}}
                if upstream_auth:
                    credentials = f"{upstream_auth[0]}:{upstream_auth[1]}".encode()
                    headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
                connection = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    connection.request(self.command, forward_path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    upstream_headers = [
                        (name, value)
                        for name, value in response.getheaders()
                        if name.lower() not in {"connection", "transfer-encoding", "keep-alive", "content-length"}
                    ]
                finally:
                    connection.close()
                big_blob = is_blob_get and response.status == 200 and len(data) > 1024 * KiB
                if big_blob and faults.corrupt_blob_get_once and faults.once("corrupt"):
                    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
                if big_blob and faults.drop_blob_get_midway_once and faults.once("drop"):
                    self.send_response(response.status)
                    for name, value in upstream_headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # mid-body: the client sees the connection reset
                    return
                self._reply(response.status, data, dict(upstream_headers))

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815 - http.server's names

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def count(self, method: str, contains: str = "") -> int:
        with self.faults.lock:
            return sum(1 for seen, path in self.faults.requests if seen == method and contains in path)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def start(upstream: OciRegistry, **faults: Any) -> FaultProxy:
        proxy = FaultProxy(upstream, Faults(**faults))
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


def insecure_copier(**options: Any) -> Copier:
    return Copier(insecure=True, backoff_seconds=0.01, **options)


# -- references ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/team/web:v1", Reference("127.0.0.1:5000", "team/web", "v1")),
        ("docker://localhost/web", Reference("localhost", "web")),
        ("nginx", Reference("registry-1.docker.io", "library/nginx")),
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/a/b:1.2@sha256:" + "a" * 64,
            Reference("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "a/b", "1.2", "sha256:" + "a" * 64),
        ),
    ],
)
def test_reference_parsing(text: str, expected: Reference) -> None:
    assert Reference.parse(text) == expected


# -- copies ----------------------------------------------------------------------------------------------------
def test_single_arch_image_is_copied_with_identical_digests(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str
) -> None:
    # Given an OCI image of three layers (one empty) in one registry
    digest, manifest = oci_registry.push_image(repo, "v1", [layer(300 * KiB), layer(5 * KiB), layer(0)])

    # When it is copied to another registry
    with insecure_copier() as copier:
        report = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"docker://{host(second_registry)}/{repo}")

    # Then every digest is preserved and the tag follows
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest == report.digest
    assert (report.blobs_copied, report.blobs_skipped, report.manifests_copied) == (4, 0, 1)
    assert report.tags_written == ["v1"]
    document = json.loads(manifest)
    assert report.bytes_copied == sum(blob["size"] for blob in [document["config"], *document["layers"]])


def test_multi_arch_index_with_an_attestation_is_copied_children_first(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str
) -> None:
    # Given a two-platform index with a build attestation
    digest = push_index_with_attestation(oci_registry, repo, "release")

    # When it is copied (by tag, into a renamed repository, with an extra tag)
    with insecure_copier() as copier:
        report = copier.copy(
            f"{host(oci_registry)}/{repo}:release", f"{host(second_registry)}/mirror/{repo}", tags=["stable"]
        )

    # Then the index, its three children and all their blobs are there, digest for digest
    assert assert_same_image(oci_registry, repo, second_registry, f"mirror/{repo}", "release") == digest
    assert assert_same_image(oci_registry, repo, second_registry, f"mirror/{repo}", "stable", "release") == digest
    assert report.manifests_copied == 4
    assert report.tags_written == ["release", "stable"]


def test_docker_v2_manifest_list_keeps_its_media_types_and_bytes(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str
) -> None:
    digest = push_docker_list(oci_registry, repo, "v2")

    with insecure_copier() as copier:
        copier.copy(f"{host(oci_registry)}/{repo}:v2", f"{host(second_registry)}/{repo}:v2")

    assert assert_same_image(oci_registry, repo, second_registry, repo, "v2") == digest
    response = second_registry.session.get(
        f"{second_registry.url}/v2/{repo}/manifests/v2", headers={"Accept": EVERY_MANIFEST_TYPE}, timeout=10
    )
    assert response.headers["Content-Type"] == DOCKER_MANIFEST_LIST


def test_copy_by_digest_pushes_no_tag(oci_registry: OciRegistry, second_registry: OciRegistry, repo: str) -> None:
    digest, _ = oci_registry.push_image(repo, "v1", [layer(10 * KiB)])

    with insecure_copier() as copier:
        report = copier.copy(f"{host(oci_registry)}/{repo}@{digest}", f"{host(second_registry)}/{repo}@{digest}")

    assert assert_same_image(oci_registry, repo, second_registry, repo, digest) == digest
    assert report.tags_written == []
    listing = second_registry.session.get(f"{second_registry.url}/v2/{repo}/tags/list", timeout=10)
    assert listing.status_code == 404 or not listing.json().get("tags")  # docker-registry: 404 when untagged


def test_shared_layers_are_copied_once(oci_registry: OciRegistry, second_registry: OciRegistry, repo: str) -> None:
    # Given two images sharing a base layer
    base = layer(200 * KiB)
    first, _ = oci_registry.push_image(repo, "a", [base, layer(10 * KiB)])
    second, _ = oci_registry.push_image(repo, "b", [base, layer(11 * KiB)])

    with insecure_copier() as copier:
        copier.copy(f"{host(oci_registry)}/{repo}:a", f"{host(second_registry)}/{repo}")
        # When the second image is copied after the first
        report = copier.copy(f"{host(oci_registry)}/{repo}:b", f"{host(second_registry)}/{repo}")

    # Then the shared layer is skipped (HEAD), only the new config and layer travel
    assert (report.blobs_skipped, report.blobs_copied) == (1, 2)
    assert report.bytes_copied < 20 * KiB
    assert assert_same_image(oci_registry, repo, second_registry, repo, "a") == first
    assert assert_same_image(oci_registry, repo, second_registry, repo, "b") == second


def test_an_image_already_present_is_fast_and_uploads_nothing(
    oci_registry: OciRegistry,
    second_registry: OciRegistry,
    repo: str,
    proxy_factory: Callable[..., FaultProxy],
) -> None:
    digest = push_index_with_attestation(oci_registry, repo, "v1")
    proxy = proxy_factory(second_registry)
    with insecure_copier() as copier:
        copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{proxy.host}/{repo}:v1")
        proxy.faults.requests.clear()

        # When the same image is copied again
        started = time.monotonic()
        report = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{proxy.host}/{repo}:v1")
        elapsed = time.monotonic() - started

    # Then the destination only answered two HEADs (the digest, the tag): nothing was uploaded
    assert proxy.faults.requests == [("HEAD", f"/v2/{repo}/manifests/{digest}"), ("HEAD", f"/v2/{repo}/manifests/v1")]
    assert (report.blobs_copied, report.manifests_copied, report.tags_written) == (0, 0, [])
    assert elapsed < 0.2
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest


def test_a_tag_added_later_costs_one_manifest_put(
    oci_registry: OciRegistry,
    second_registry: OciRegistry,
    repo: str,
    proxy_factory: Callable[..., FaultProxy],
) -> None:
    digest = push_index_with_attestation(oci_registry, repo, "v1.2.3")
    proxy = proxy_factory(second_registry)
    with insecure_copier() as copier:
        copier.copy(f"{host(oci_registry)}/{repo}:v1.2.3", f"{proxy.host}/{repo}")
        # Given the source gains a tag for the same digest
        raw, _ = manifest_at(oci_registry, repo, "v1.2.3")
        oci_registry.push_manifest(repo, "v1.2", raw, OCI_INDEX)
        proxy.faults.requests.clear()

        # When that tag is copied
        report = copier.copy(f"{host(oci_registry)}/{repo}:v1.2", f"{proxy.host}/{repo}")

    # Then the destination saw exactly one write: the manifest PUT under the new tag
    writes = [(method, path) for method, path in proxy.faults.requests if method not in {"GET", "HEAD"}]
    assert writes == [("PUT", f"/v2/{repo}/manifests/v1.2")]
    assert report.tags_written == ["v1.2"]
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1.2") == digest


def test_blobs_are_mounted_within_one_registry(oci_registry: OciRegistry, repo: str) -> None:
    digest, _ = oci_registry.push_image(repo, "v1", [layer(100 * KiB), layer(3 * KiB)])

    with insecure_copier() as copier:
        report = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{host(oci_registry)}/{repo}-copy:v1")

    assert (report.blobs_mounted, report.blobs_copied, report.bytes_copied) == (3, 0, 0)
    assert assert_same_image(oci_registry, repo, oci_registry, f"{repo}-copy", "v1") == digest


def test_a_refused_mount_falls_back_to_a_copy(
    oci_registry: OciRegistry, repo: str, proxy_factory: Callable[..., FaultProxy]
) -> None:
    # Given one registry that refuses cross-repository mounts (202: ECR without BLOB_MOUNTING does)
    digest, _ = oci_registry.push_image(repo, "v1", [layer(20 * KiB)])
    proxy = proxy_factory(oci_registry, refuse_mounts=True)

    with insecure_copier() as copier:
        report = copier.copy(f"{proxy.host}/{repo}:v1", f"{proxy.host}/{repo}-other:v1")

    # Then each blob was asked to mount once, and copied through the upload session the refusal opened
    assert (report.blobs_mounted, report.blobs_copied) == (0, 2)
    assert proxy.count("POST", "/blobs/uploads/") == 2
    assert assert_same_image(oci_registry, repo, oci_registry, f"{repo}-other", "v1") == digest


def test_chunked_uploads_as_for_ecr(oci_registry: OciRegistry, second_registry: OciRegistry, repo: str) -> None:
    # ECR gets PATCH chunks (its parts must be 5 MiB or more except the last); small chunks here exercise it.
    digest, _ = oci_registry.push_image(repo, "v1", [layer(300 * KiB + 7), layer(64 * KiB), layer(0)])

    with insecure_copier(upload_mode=UploadMode.CHUNKED, chunk_size=64 * KiB) as copier:
        report = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{host(second_registry)}/{repo}:v1")

    assert report.blobs_copied == 4
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest


def test_referrers_through_the_fallback_tag_scheme_are_copied_when_asked(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str
) -> None:
    # Given an image with a signature attached the OCI 1.1 fallback way (a `sha256-<hex>` tag indexing its
    # referrers), and a cosign-style `sha256-<hex>.sig` tag
    digest, manifest = oci_registry.push_image(repo, "v1", [layer(8 * KiB)])
    signature, signature_manifest = push_signature(oci_registry, repo, digest, len(manifest))
    fallback_tag = digest.replace(":", "-")
    fallback_index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": signature,
                    "size": len(signature_manifest),
                    "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
                }
            ],
        }
    ).encode()
    oci_registry.push_manifest(repo, fallback_tag, fallback_index, OCI_INDEX)
    cosign_digest, _ = oci_registry.push_image(repo, f"{fallback_tag}.sig", [layer(300)])

    with insecure_copier() as copier:
        # When copied without referrers, none follow; with them, all do
        plain = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{host(second_registry)}/{repo}-plain:v1")
        report = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{host(second_registry)}/{repo}:v1", referrers=True)

    assert plain.referrers_copied == 0
    assert second_registry.tags(f"{repo}-plain") == ["v1"]
    assert report.referrers_copied == 2
    assert second_registry.tags(repo) == sorted(["v1", fallback_tag, f"{fallback_tag}.sig"])
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest
    assert assert_same_image(oci_registry, repo, second_registry, repo, signature) == signature
    assert assert_same_image(oci_registry, repo, second_registry, repo, fallback_tag) == sha256_digest(fallback_index)
    assert assert_same_image(oci_registry, repo, second_registry, repo, f"{fallback_tag}.sig") == cosign_digest


# -- authentication ------------------------------------------------------------------------------------------
def test_ecr_token_from_moto_authenticates_both_ways(
    aws: MotoServer, oci_registry: OciRegistry, oci_registry_auth: OciRegistry, repo: str
) -> None:
    # Given a registry that accepts exactly the ECR token (user AWS, the token's password), as ECR does
    calls: list[tuple[str, str]] = []

    def ecr_client(account: str, region: str) -> Any:
        calls.append((account, region))
        return aws.client("ecr", region)

    tokens = EcrTokenProvider(ecr_client)
    ecr = EcrCredentials(tokens, ACCOUNT, REGION)
    digest, _ = oci_registry.push_image(repo, "v1", [layer(50 * KiB)])

    # When an image is copied into it and back out, authenticating with GetAuthorizationToken's token
    with insecure_copier(destination_credentials=ecr) as copier:
        pushed = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{host(oci_registry_auth)}/{repo}:v1")
    with insecure_copier(source_credentials=ecr) as copier:
        pulled = copier.copy(f"{host(oci_registry_auth)}/{repo}:v1", f"{host(oci_registry)}/{repo}-back:v1")

    # Then both copies succeeded with identical digests and the token was fetched once (cached)
    assert pushed.digest == pulled.digest == digest
    assert assert_same_image(oci_registry, repo, oci_registry_auth, repo, "v1") == digest
    assert assert_same_image(oci_registry_auth, repo, oci_registry, f"{repo}-back", "v1") == digest
    assert calls == [(ACCOUNT, REGION)]


def test_wrong_credentials_fail_without_showing_them(
    oci_registry: OciRegistry, oci_registry_auth: OciRegistry, repo: str
) -> None:
    oci_registry.push_image(repo, "v1", [layer(1 * KiB)])
    wrong = StaticCredentials(Credentials("AWS", "not-the-token-s3cret"))
    with insecure_copier(destination_credentials=wrong) as copier, pytest.raises(CopyError) as raised:
        copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{host(oci_registry_auth)}/{repo}:v1")
    assert "401" in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert "s3cret" not in repr(wrong)


def test_bearer_token_flow(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str, proxy_factory: Callable[..., FaultProxy]
) -> None:
    # A registry that answers 401 with a Bearer challenge (Docker Hub, GHCR, Harbor): token, then retry
    digest, _ = oci_registry.push_image(repo, "v1", [layer(30 * KiB)])
    source = proxy_factory(oci_registry, bearer_token="tok-" + uuid.uuid4().hex)
    with insecure_copier() as copier:
        copier.copy(f"{source.host}/{repo}:v1", f"{host(second_registry)}/{repo}:v1")
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest
    assert source.count("GET", "/token") == 1  # cached for later requests of the same scope


# -- faults ----------------------------------------------------------------------------------------------------
def test_transient_faults_are_retried_and_the_copy_completes(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str, proxy_factory: Callable[..., FaultProxy]
) -> None:
    # Given a source that cuts a blob download midway once, and a destination that answers 500 once to an
    # upload and 429 (Retry-After) once to a blob HEAD
    digest = push_index_with_attestation(oci_registry, repo, "v1", layer_size=2 * 1024 * KiB)
    source = proxy_factory(oci_registry, drop_blob_get_midway_once=True)
    destination = proxy_factory(
        second_registry,
        answer_500_once=lambda method, path: method == "PUT" and "/blobs/uploads/" in path,
        answer_429_once=lambda method, path: method == "HEAD" and "/blobs/" in path,
    )

    # When the image is copied through them
    with insecure_copier() as copier:
        report = copier.copy(f"{source.host}/{repo}:v1", f"{destination.host}/{repo}:v1")

    # Then every fault fired, the interrupted uploads restarted, and the copy is digest-identical
    assert sorted(source.faults.fired + destination.faults.fired) == ["429", "500", "drop"]
    assert destination.count("DELETE", "/blobs/uploads/") >= 2  # each broken upload session was abandoned
    assert report.manifests_copied == 4
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest


def test_a_permanent_failure_names_the_blob(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str, proxy_factory: Callable[..., FaultProxy]
) -> None:
    digest, manifest = oci_registry.push_image(repo, "v1", [layer(10 * KiB), layer(20 * KiB)])
    missing = json.loads(manifest)["layers"][1]["digest"]
    source = proxy_factory(oci_registry, missing_blob=missing)

    with insecure_copier() as copier, pytest.raises(CopyError) as raised:
        copier.copy(f"{source.host}/{repo}:v1", f"{host(second_registry)}/{repo}:v1")

    assert raised.value.subject == f"blob {missing}"
    assert "404" in raised.value.reason
    assert "BLOB_UNKNOWN" in raised.value.reason
    assert source.count("GET", missing) == 1  # permanent: not retried
    # Nothing half-made: no manifest at the destination, and what was copied is intact
    assert second_registry.session.head(f"{second_registry.url}/v2/{repo}/manifests/{digest}").status_code == 404
    # The fix (the blob back) and a second copy complete the image, skipping what is there
    with insecure_copier() as copier:
        report = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{host(second_registry)}/{repo}:v1")
    assert report.blobs_copied >= 1
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest


def test_a_blob_corrupted_in_transit_is_never_committed_and_is_fetched_again(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str, proxy_factory: Callable[..., FaultProxy]
) -> None:
    # Given a source that serves one blob with a flipped byte once
    digest, _ = oci_registry.push_image(repo, "v1", [layer(3 * 1024 * KiB)])
    source = proxy_factory(oci_registry, corrupt_blob_get_once=True)
    destination = proxy_factory(second_registry)

    with insecure_copier() as copier:
        report = copier.copy(f"{source.host}/{repo}:v1", f"{destination.host}/{repo}:v1")

    # Then the hash check caught it before the upload completed, that session was abandoned, the blob was
    # fetched again, and the copy is digest-identical
    assert source.faults.fired == ["corrupt"]
    assert destination.count("DELETE", "/blobs/uploads/") == 1
    # the config's upload, the layer's first upload (cut short before its last piece) and its second
    assert destination.count("PUT", "/blobs/uploads/") == 3
    assert report.blobs_copied == 2
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest


def test_a_deadline_stops_between_blobs_and_the_next_copy_resumes(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str, proxy_factory: Callable[..., FaultProxy]
) -> None:
    # Given a slow source (each blob takes 0.3 s) and one blob at a time
    digest, _ = oci_registry.push_image(repo, "v1", [layer(30 * KiB), layer(20 * KiB), layer(10 * KiB)])
    source = proxy_factory(oci_registry, slow_blob_get_seconds=0.3)

    # When the deadline falls during the second blob
    with insecure_copier(workers=1) as copier, pytest.raises(CopyInterrupted):
        copier.copy(f"{source.host}/{repo}:v1", f"{host(second_registry)}/{repo}:v1", deadline=time.monotonic() + 0.45)
    copied_before = sum(1 for method, path in source.faults.requests if method == "GET" and "/blobs/" in path)
    assert 1 <= copied_before < 4

    # Then the retry skips what arrived and completes the image
    with insecure_copier() as copier:
        report = copier.copy(f"{host(oci_registry)}/{repo}:v1", f"{host(second_registry)}/{repo}:v1")
    assert report.blobs_skipped == copied_before
    assert report.blobs_copied == 4 - copied_before
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest


# -- the command line -------------------------------------------------------------------------------------------
def test_cli_copy_prints_one_report_line(
    oci_registry: OciRegistry, second_registry: OciRegistry, repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = push_index_with_attestation(oci_registry, repo, "v1")

    code = cli.main(
        ["copy", "--insecure", "--all", f"docker://{host(oci_registry)}/{repo}:v1", f"{host(second_registry)}/{repo}"]
    )

    out, err = capsys.readouterr()
    assert code == 0, err
    (line,) = out.splitlines()
    report = json.loads(line)
    assert report["digest"] == digest
    assert report["manifests_copied"] == 4
    assert assert_same_image(oci_registry, repo, second_registry, repo, "v1") == digest


def test_cli_copy_failure_names_the_blob(
    oci_registry: OciRegistry,
    second_registry: OciRegistry,
    repo: str,
    proxy_factory: Callable[..., FaultProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    digest, manifest = oci_registry.push_image(repo, "v1", [layer(10 * KiB)])
    missing = json.loads(manifest)["layers"][0]["digest"]
    source = proxy_factory(oci_registry, missing_blob=missing)

    code = cli.main(["copy", "--insecure", f"{source.host}/{repo}:v1", f"{host(second_registry)}/{repo}:v1"])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    (line,) = err.splitlines()
    assert f"blob {missing}" in line
    assert second_registry.session.head(f"{second_registry.url}/v2/{repo}/manifests/{digest}").status_code == 404
