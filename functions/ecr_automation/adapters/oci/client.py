"""The OCI distribution API of one registry host over urllib3: auth challenges, manifests, blobs, uploads.

Errors come out as two kinds only: ``TransientError`` (worth retrying: connection trouble, 5xx, 429) and
``PermanentError`` (a retry will not help: 4xx). Retrying is the caller's decision (the copier's).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urljoin

import urllib3
from urllib3.exceptions import HTTPError
from urllib3.response import BaseHTTPResponse

from ecr_automation.adapters.oci.auth import CredentialSource

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_MEDIA_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
USER_AGENT = "ecr-automation-copier/1"
# A registry's 401 for a bearer token is retried once with a fresh token; a token's own lifetime when the
# token service does not say (the distribution token spec's default).
BEARER_DEFAULT_EXPIRES_SECONDS = 60
RETRY_AFTER_MAX_SECONDS = 60.0
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# Redirects are followed (ECR and Docker Hub serve blobs from S3 or a CDN; urllib3 drops Authorization when
# the redirect leaves the host); everything else is retried by the copier, which knows what a retry costs.
_FOLLOW_REDIRECTS_ONLY = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)


class TransientError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_SECONDS)


def _error_detail(response: BaseHTTPResponse) -> str:
    """The registry's own error code and message (distribution spec error body), never request headers."""
    try:
        errors = json.loads(response.data or b"{}").get("errors") or []
        first = errors[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def check(response: BaseHTTPResponse, what: str, ok: Iterable[int]) -> None:
    """Raise the right kind of error unless ``response.status`` is one of ``ok``."""
    if response.status in set(ok):
        return
    detail = _error_detail(response) if response.status >= 400 else ""
    message = f"{what}: HTTP {response.status}" + (f" ({detail})" if detail else "")
    if response.status in TRANSIENT_STATUSES:
        raise TransientError(message, _retry_after(response.headers.get("Retry-After")))
    raise PermanentError(message, response.status)


_CHALLENGE_PARAMETER = re.compile(r'([A-Za-z_]+)=(?:"([^"]*)"|([^,\s]*))')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` -> ("bearer", {"realm": ..., ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): quoted or bare for key, quoted, bare in _CHALLENGE_PARAMETER.findall(rest)}
    return scheme.lower(), params


@dataclass
class _BearerToken:
    value: str
    expires_at: float  # time.monotonic()


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry served it: its bytes are what the digest covers."""

    raw: bytes
    media_type: str
    digest: str


class RegistryClient:
    """One registry host: one urllib3 PoolManager (keep-alive connections shared by the copier's threads)."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: CredentialSource | None = None,
        basic_without_challenge: bool = False,
        connections: int = 6,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
    ) -> None:
        self.host = host
        self.base_url = f"{'http' if insecure else 'https'}://{host}"
        self._credentials = credentials
        self._http = urllib3.PoolManager(
            num_pools=4,
            maxsize=connections,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
            headers={"User-Agent": USER_AGENT},
        )
        self._lock = threading.Lock()
        # What the registry asked for in its first 401: None until then ("none" = it never asked).
        self._scheme: str | None = "basic" if basic_without_challenge and credentials else None
        self._challenge: dict[str, str] = {}
        self._tokens: dict[str, _BearerToken] = {}

    def close(self) -> None:
        self._http.clear()

    # -- authenticated requests -------------------------------------------------------------------------
    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        with self._lock:
            scheme = self._scheme
            token = self._tokens.get(" ".join(scopes))
        if scheme == "basic" and self._credentials is not None:
            return self._credentials.credentials().basic_header()
        if scheme == "bearer":
            if token is None or time.monotonic() >= token.expires_at:
                token = self._fetch_bearer(scopes)
            return f"Bearer {token.value}"
        return None

    def _fetch_bearer(self, scopes: tuple[str, ...]) -> _BearerToken:
        with self._lock:
            challenge = dict(self._challenge)
        realm = challenge.get("realm")
        if not realm:
            raise PermanentError(f"{self.host}: bearer challenge without a realm")
        query: list[tuple[str, str]] = [("service", challenge["service"])] if "service" in challenge else []
        query += [("scope", scope) for scope in scopes]
        headers = {"Accept": "application/json"}
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.credentials().basic_header()
        try:
            response = self._http.request(
                "GET", f"{realm}?{urlencode(query)}", headers=headers, retries=_FOLLOW_REDIRECTS_ONLY
            )
        except HTTPError as error:
            raise TransientError(f"token service {realm}: {type(error).__name__}") from None
        check(response, f"token service {realm}", {200})
        body = json.loads(response.data)
        value = body.get("token") or body.get("access_token")
        if not value:
            raise PermanentError(f"token service {realm} returned no token")
        lifetime = float(body.get("expires_in") or BEARER_DEFAULT_EXPIRES_SECONDS)
        # Renew a little early so a token never lapses between fetching and using it.
        token = _BearerToken(str(value), time.monotonic() + max(lifetime - 10, lifetime / 2))
        with self._lock:
            self._tokens[" ".join(scopes)] = token
        return token

    def _learn_challenge(self, header: str | None, scopes: tuple[str, ...], sent: str | None) -> None:
        """A 401: switch to what the registry asks for, or raise if that cannot succeed."""
        scheme, params = _parse_challenge(header or "")
        if scheme == "basic":
            if self._credentials is None:
                raise PermanentError(f"{self.host} requires credentials", 401)
            if sent is not None and sent.startswith("Basic "):
                self._credentials.invalidate()  # an expired ECR token is refetched; given ones fail next time
            with self._lock:
                self._scheme = "basic"
        elif scheme == "bearer":
            with self._lock:
                self._scheme = "bearer"
                self._challenge = params
                self._tokens.pop(" ".join(scopes), None)
        else:
            raise PermanentError(f"{self.host}: HTTP 401 with an unsupported challenge {scheme!r}", 401)

    def request(
        self,
        method: str,
        url: str,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        stream: bool = False,
    ) -> BaseHTTPResponse:
        """One request, authenticating as the registry asks. ``body`` given as an iterable is sent once: a 401
        after it was consumed becomes a ``TransientError`` (the caller restarts the upload)."""
        replayable = body is None or isinstance(body, bytes)
        url = urljoin(self.base_url + "/", url)
        sent: str | None = None
        for attempt in range(3):
            request_headers = dict(headers or {})
            sent = self._authorization(scopes)
            if sent is not None:
                request_headers["Authorization"] = sent
            try:
                response = self._http.request(
                    method,
                    url,
                    headers=request_headers,
                    body=body,
                    preload_content=not stream,
                    retries=_FOLLOW_REDIRECTS_ONLY if method in {"GET", "HEAD"} else False,
                )
            except HTTPError as error:
                raise TransientError(f"{method} {self.host}: {type(error).__name__}: {error}") from None
            if response.status != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate")
            response.drain_conn()
            response.release_conn()
            if not replayable:
                raise TransientError(f"{method} {self.host}: authorization lapsed during an upload")
            if attempt == 2:
                break
            self._learn_challenge(challenge, scopes, sent)
        raise PermanentError(f"{method} {url}: HTTP 401 (authentication failed)", 401)

    # -- manifests ---------------------------------------------------------------------------------------
    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        response = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scopes=(f"repository:{repository}:pull",),
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        if response.status == 404:
            return None
        check(response, f"GET manifest {repository}:{reference}", {200})
        raw = response.data
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if media_type not in INDEX_MEDIA_TYPES | IMAGE_MEDIA_TYPES:
            media_type = str(json.loads(raw).get("mediaType") or media_type)
        return Manifest(raw, media_type, response.headers.get("Docker-Content-Digest", ""))

    def head_manifest(self, repository: str, reference: str, scope_action: str = "pull") -> str | None:
        """The digest ``reference`` names at this registry, or None when it names nothing."""
        response = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            scopes=(f"repository:{repository}:{scope_action}",),
            headers={"Accept": ACCEPT_MANIFESTS},
        )
        if response.status == 404:
            return None
        check(response, f"HEAD manifest {repository}:{reference}", {200})
        return response.headers.get("Docker-Content-Digest") or None

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> tuple[str, bool]:
        """PUT the exact bytes; returns the digest the registry computed and whether it indexed the subject."""
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scopes=(f"repository:{repository}:pull,push",),
            headers={"Content-Type": manifest.media_type},
            body=manifest.raw,
        )
        check(response, f"PUT manifest {repository}:{reference}", {200, 201})
        return response.headers.get("Docker-Content-Digest", ""), "OCI-Subject" in response.headers

    def referrers(self, repository: str, digest: str) -> bytes | None:
        """The referrers API's index for ``digest``, or None when the registry does not offer the API."""
        response = self.request(
            "GET",
            f"/v2/{repository}/referrers/{digest}",
            scopes=(f"repository:{repository}:pull",),
            headers={"Accept": OCI_INDEX},
        )
        if response.status in {400, 404, 405} or (
            response.status == 200 and not response.headers.get("Content-Type", "").startswith(OCI_INDEX)
        ):
            return None  # the spec's signal to fall back to the sha256-<hex> tag
        check(response, f"GET referrers {repository}@{digest}", {200})
        return bytes(response.data)

    # -- blobs ---------------------------------------------------------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scopes=(f"repository:{repository}:pull,push",)
        )
        if response.status == 404:
            return False
        check(response, f"HEAD blob {digest}", {200})
        return True

    def open_blob(self, repository: str, digest: str) -> BaseHTTPResponse:
        """A streaming GET: the caller reads it and releases (or closes) it."""
        response = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", scopes=(f"repository:{repository}:pull",), stream=True
        )
        if response.status != 200:
            try:
                check(response, f"GET blob {digest}", {200})  # reads the (small) error body for its detail
            finally:
                response.release_conn()
        return response

    def start_upload(self, repository: str, *, mount: tuple[str, str] | None = None) -> tuple[bool, str]:
        """(mounted, location). With ``mount=(digest, from_repository)`` a 201 means done without a byte sent;
        a 202 (the registry refused the mount) opens an ordinary upload session."""
        path = f"/v2/{repository}/blobs/uploads/"
        scopes: tuple[str, ...] = (f"repository:{repository}:pull,push",)
        if mount is not None:
            path += "?" + urlencode({"mount": mount[0], "from": mount[1]})
            scopes += (f"repository:{mount[1]}:pull",)
        response = self.request("POST", path, scopes=scopes, body=b"")
        check(response, f"start upload to {repository}", {201, 202})
        location = urljoin(self.base_url + "/", response.headers.get("Location", ""))
        return response.status == 201, location

    @staticmethod
    def _with_query(location: str, **query: str) -> str:
        return location + ("&" if "?" in location else "?") + urlencode(query)

    def upload_whole(self, repository: str, location: str, body: Iterator[bytes], size: int, digest: str) -> None:
        """A monolithic upload: the whole blob streamed in one PUT (one request, no chunk round trips)."""
        response = self.request(
            "PUT",
            self._with_query(location, digest=digest),
            scopes=(f"repository:{repository}:pull,push",),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=body,
        )
        check(response, f"upload blob {digest}", {201})

    def upload_chunk(self, repository: str, location: str, body: Iterator[bytes], start: int, length: int) -> str:
        """One PATCH of ``length`` bytes at offset ``start``; returns the location for the next request."""
        response = self.request(
            "PATCH",
            location,
            scopes=(f"repository:{repository}:pull,push",),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{start}-{start + length - 1}",
            },
            body=body,
        )
        check(response, f"upload chunk at {start} of {location.rsplit('/', 1)[-1][:36]}", {202})
        return urljoin(self.base_url + "/", response.headers.get("Location", location))

    def finish_upload(self, repository: str, location: str, digest: str) -> None:
        response = self.request(
            "PUT",
            self._with_query(location, digest=digest),
            scopes=(f"repository:{repository}:pull,push",),
            headers={"Content-Length": "0"},
            body=b"",
        )
        check(response, f"finish upload of blob {digest}", {201})

    def cancel_upload(self, repository: str, location: str) -> None:
        """Best effort: a session left behind is garbage-collected by the registry anyway."""
        with contextlib.suppress(TransientError, PermanentError):
            self.request("DELETE", location, scopes=(f"repository:{repository}:pull,push",))


def parse_manifest(manifest: Manifest) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(manifest.raw)
    return document
