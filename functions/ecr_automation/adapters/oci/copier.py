"""Copy an image between registries with every digest preserved: blobs streamed, then manifests, then tags.

Order, as a registry demands it: the blobs of every platform manifest (several at a time), then each child
manifest by digest, then the index (under its tags, or its digest), so the registry never sees a manifest
before what it references. Manifests are PUT as the exact bytes read, so digests cannot change.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from urllib3.response import BaseHTTPResponse

from ecr_automation.adapters.oci.auth import (
    CredentialSource,
    EcrCredentials,
    EcrTokenProvider,
    ecr_registry,
)
from ecr_automation.adapters.oci.client import (
    IMAGE_MEDIA_TYPES,
    INDEX_MEDIA_TYPES,
    OCI_INDEX,
    Manifest,
    PermanentError,
    RegistryClient,
    TransientError,
)
from ecr_automation.adapters.oci.reference import Reference

_T = TypeVar("_T")
MiB = 1024 * 1024
# Bytes read, hashed and sent at a time: large enough that Python's per-call overhead vanishes next to the
# socket work, small enough that four blobs in flight hold a few MiB.
PIECE_SIZE = 1 * MiB
# ECR's upload parts other than the last must be 5 MiB or more, and its layer API caps a part at 10 MiB.
ECR_CHUNK_SIZE = 8 * MiB
DEFAULT_WORKERS = 4
DEFAULT_MAX_ATTEMPTS = 5
BACKOFF_CAP_SECONDS = 8.0
# Referrers of referrers (a signature of an SBOM) are followed this deep; real graphs are one or two levels.
REFERRERS_MAX_DEPTH = 3
COSIGN_TAG_SUFFIXES = (".sig", ".att", ".sbom")
_NON_DISTRIBUTABLE = ("nondistributable", "foreign")


class UploadMode(StrEnum):
    AUTO = "auto"  # chunked for ECR (its known limits), whole for every other registry
    WHOLE = "whole"  # POST, then one streamed PUT ?digest=: one request per blob
    CHUNKED = "chunked"  # POST, PATCH chunk after chunk, PUT ?digest=


class CopyError(RuntimeError):
    """A copy failed in a way retrying will not fix; names the blob or manifest and the reason."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"{subject}: {reason}")
        self.subject = subject
        self.reason = reason


class CopyInterrupted(RuntimeError):  # noqa: N818 - the name callers catch: not an error, a pause
    """The deadline came: the copy stopped between blobs. Copying again resumes (present blobs are skipped)."""


@dataclass
class CopyReport:
    source: str
    destination: str
    digest: str
    manifests_copied: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_copied: int = 0
    tags_written: list[str] = field(default_factory=list)
    seconds: float = 0.0
    referrers_copied: int = 0
    tag_conflicts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _DigestMismatchError(Exception):
    pass


class _SourceReadError(Exception):
    """Reading the source blob failed mid-stream; raised out of an upload body, so urllib3 aborts that request."""


def _descriptors(index: bytes) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = json.loads(index).get("manifests") or []
    return manifests


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _VerifiedStream:
    """The source blob, read piece by piece and hashed as it passes. The digest is checked before the last
    piece is handed on, so a corrupt blob never completes an upload."""

    def __init__(self, response: BaseHTTPResponse, size: int, digest: str) -> None:
        self._response = response
        self._size = size
        self._digest = digest
        self._hasher = hashlib.sha256()
        self.read_bytes = 0

    def _verify(self) -> None:
        actual = "sha256:" + self._hasher.hexdigest()
        if actual != self._digest:
            raise _DigestMismatchError(f"content hashes to {actual}")

    def pieces(self, limit: int) -> Iterator[bytes]:
        remaining = limit
        if self._size == 0:
            self._verify()
        while remaining > 0:
            try:
                data = self._response.read(min(PIECE_SIZE, remaining), decode_content=False)
            except Exception as error:  # any read failure is the source's, and worth a retry
                raise _SourceReadError(f"reading the source failed: {type(error).__name__}") from error
            if not data:
                raise _SourceReadError(f"the source ended after {self.read_bytes} of {self._size} bytes")
            self._hasher.update(data)
            self.read_bytes += len(data)
            remaining -= len(data)
            if self.read_bytes == self._size:
                self._verify()
            yield data


@dataclass
class _Progress:
    report: CopyReport
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self.report, name, getattr(self.report, name) + value)


@dataclass
class _Job:
    source: RegistryClient
    destination: RegistryClient
    source_repository: str
    destination_repository: str
    deadline: float | None
    progress: _Progress
    chunk_size: int | None  # None: whole uploads
    same_registry: bool


@dataclass
class _Tree:
    """What one root manifest needs at the destination: its blobs, and its manifests children first."""

    manifests: list[Manifest] = field(default_factory=list)
    blobs: dict[str, int] = field(default_factory=dict)  # digest -> size


class Copier:
    """Copies images; safe to reuse for many copies (connections and tokens are kept), not across processes."""

    def __init__(
        self,
        *,
        source_credentials: CredentialSource | None = None,
        destination_credentials: CredentialSource | None = None,
        ecr_tokens: EcrTokenProvider | None = None,
        insecure: bool = False,
        workers: int = DEFAULT_WORKERS,
        upload_mode: UploadMode = UploadMode.AUTO,
        chunk_size: int = ECR_CHUNK_SIZE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_seconds: float = 0.25,
    ) -> None:
        self._credentials = {"source": source_credentials, "destination": destination_credentials}
        self._ecr_tokens = ecr_tokens
        self._insecure = insecure
        self._workers = max(1, workers)
        self._upload_mode = upload_mode
        self._chunk_size = chunk_size
        self._max_attempts = max(1, max_attempts)
        self._backoff_seconds = backoff_seconds
        self._clients: dict[tuple[str, str], RegistryClient] = {}
        self._clients_lock = threading.Lock()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def __enter__(self) -> Copier:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- public ------------------------------------------------------------------------------------------
    def copy(
        self,
        source: Reference | str,
        destination: Reference | str,
        *,
        tags: Sequence[str] = (),
        referrers: bool = False,
        deadline: float | None = None,
        protected: Callable[[str], bool] | None = None,
    ) -> CopyReport:
        """Copy ``source`` to ``destination``'s repository, tagged with the destination's tag (or the source's
        when the destination names none) and ``tags``. A tag for which ``protected`` says True is never moved
        when it already names another digest: it is listed in ``tag_conflicts`` instead."""
        started = time.monotonic()
        source = Reference.parse(source) if isinstance(source, str) else source
        destination = Reference.parse(destination) if isinstance(destination, str) else destination
        # The destination's tag, else the source's (unless the destination names a digest), then ``tags``.
        implied_tag = None if destination.digest else destination.tag or source.tag
        wanted_tags = list(dict.fromkeys(tag for tag in (implied_tag, *tags) if tag))
        job = _Job(
            source=self._client(source.registry, "source"),
            destination=self._client(destination.registry, "destination"),
            source_repository=source.repository,
            destination_repository=destination.repository,
            deadline=deadline,
            progress=_Progress(CopyReport(str(source), str(destination), digest="")),
            chunk_size=self._chunk_size_for(destination.registry),
            same_registry=source.registry == destination.registry,
        )
        root = self._fetch_manifest(job, source.manifest_reference, source.digest)
        if destination.digest and destination.digest != root.digest:
            raise CopyError(str(destination), f"the source is {root.digest}, not the digest the destination names")
        job.progress.report.digest = root.digest
        tree = self._copy_tree(job, root, wanted_tags, protected)
        if referrers:
            subjects = [manifest.digest for manifest in tree.manifests] if tree.manifests else [root.digest]
            self._copy_referrers(job, subjects, visited=set(subjects), depth=1)
        report = job.progress.report
        report.seconds = round(time.monotonic() - started, 3)
        return report

    # -- clients and credentials ---------------------------------------------------------------------------
    def _client(self, host: str, role: str) -> RegistryClient:
        with self._clients_lock:
            key = (role, host)
            if key not in self._clients:
                credentials = self._credentials[role]
                ecr = ecr_registry(host)
                if credentials is None and ecr is not None:
                    credentials = EcrCredentials(self._ecr_provider(), *ecr)
                self._clients[key] = RegistryClient(
                    host,
                    insecure=self._insecure,
                    credentials=credentials,
                    # ECR always wants Basic with its token: skip the round trip that would ask.
                    basic_without_challenge=ecr is not None,
                    connections=self._workers + 2,
                )
            return self._clients[key]

    def _ecr_provider(self) -> EcrTokenProvider:
        if self._ecr_tokens is None:
            # Only ECR registries need boto3: importing it lazily keeps other copies (and the CLI) light.
            from ecr_automation.adapters.clients import AwsClients  # noqa: PLC0415

            self._ecr_tokens = EcrTokenProvider.from_clients(AwsClients())
        return self._ecr_tokens

    def _chunk_size_for(self, host: str) -> int | None:
        if self._upload_mode is UploadMode.CHUNKED or (
            self._upload_mode is UploadMode.AUTO and ecr_registry(host) is not None
        ):
            return self._chunk_size
        return None

    # -- retries --------------------------------------------------------------------------------------------
    def _check_deadline(self, job: _Job, before: str) -> None:
        if job.deadline is not None and time.monotonic() >= job.deadline:
            report = job.progress.report
            raise CopyInterrupted(
                f"deadline reached before {before}: {report.blobs_copied} blob(s) copied, "
                f"{report.blobs_skipped} already present; copy again to resume"
            )

    def _pause(self, job: _Job, attempt: int, retry_after: float | None, subject: str) -> None:
        # Exponential backoff with full jitter, unless the registry said how long to wait.
        delay = retry_after
        if delay is None:
            delay = random.uniform(0, min(BACKOFF_CAP_SECONDS, self._backoff_seconds * 2**attempt))  # noqa: S311
        if job.deadline is not None and time.monotonic() + delay >= job.deadline:
            raise CopyInterrupted(f"deadline reached while waiting to retry {subject}; copy again to resume")
        time.sleep(delay)

    def _retrying(self, job: _Job, subject: str, operation: Callable[[], _T]) -> _T:
        for attempt in range(self._max_attempts):
            try:
                return operation()
            except PermanentError as error:
                raise CopyError(subject, str(error)) from None
            except TransientError as error:
                if attempt + 1 == self._max_attempts:
                    raise CopyError(subject, f"{error} (gave up after {self._max_attempts} attempts)") from None
                self._pause(job, attempt, error.retry_after, subject)
        raise AssertionError("unreachable")

    # -- manifests -------------------------------------------------------------------------------------------
    def _fetch_manifest(self, job: _Job, reference: str, expected_digest: str | None) -> Manifest:
        subject = f"manifest {job.source_repository}@{reference}"
        manifest = self._retrying(job, subject, lambda: job.source.get_manifest(job.source_repository, reference))
        if manifest is None:
            raise CopyError(subject, "not found at the source")
        digest = _sha256(manifest.raw)
        for claimed in (expected_digest, manifest.digest):
            if claimed and claimed != digest:
                raise CopyError(subject, f"the bytes hash to {digest}, not {claimed}")
        return Manifest(manifest.raw, manifest.media_type, digest)

    def _put_manifest(self, job: _Job, manifest: Manifest, reference: str) -> bool:
        """PUT the exact bytes; True when the destination indexed the manifest's subject (referrers API)."""
        subject = f"manifest {manifest.digest}"
        digest, indexed_subject = self._retrying(
            job, subject, lambda: job.destination.put_manifest(job.destination_repository, reference, manifest)
        )
        if digest and digest != manifest.digest:
            raise CopyError(subject, f"the destination stored it as {digest}")
        return indexed_subject

    def _walk(self, job: _Job, manifest: Manifest, tree: _Tree, seen: set[str]) -> None:
        """Children before parents; each manifest and blob once, however often it is referenced."""
        if manifest.digest in seen:
            return
        seen.add(manifest.digest)
        document = json.loads(manifest.raw)
        if manifest.media_type in INDEX_MEDIA_TYPES:
            for child in document.get("manifests") or []:
                self._walk(job, self._fetch_manifest(job, child["digest"], child["digest"]), tree, seen)
        elif manifest.media_type in IMAGE_MEDIA_TYPES:
            for blob in [document.get("config") or {}, *(document.get("layers") or [])]:
                media_type = str(blob.get("mediaType", ""))
                # Windows base layers and the like live outside registries (their `urls`): not ours to copy.
                if "digest" in blob and not any(mark in media_type for mark in _NON_DISTRIBUTABLE):
                    tree.blobs[blob["digest"]] = int(blob.get("size", 0))
        else:
            raise CopyError(f"manifest {manifest.digest}", f"unsupported media type {manifest.media_type!r}")
        tree.manifests.append(manifest)

    def _copy_tree(self, job: _Job, root: Manifest, tags: list[str], protected: Callable[[str], bool] | None) -> _Tree:
        present = self._retrying(
            job,
            f"manifest {root.digest}",
            lambda: job.destination.head_manifest(job.destination_repository, root.digest, "pull,push"),
        )
        tree = _Tree()
        if present != root.digest:
            # A registry accepts a manifest only once everything it references is there, so a present root
            # means a complete image: only the manifests are walked (and read) when it is missing.
            self._walk(job, root, tree, set())
            self._copy_blobs(job, tree.blobs)
            self._check_deadline(job, "the manifests")
            for manifest in tree.manifests[:-1]:
                self._put_manifest(job, manifest, manifest.digest)
                job.progress.add(manifests_copied=1)
            if not tags:
                self._put_manifest(job, root, root.digest)
            job.progress.add(manifests_copied=1)
        else:
            tree.manifests = [root]
        self._write_tags(job, root, tags, protected, root_was_present=present == root.digest)
        return tree

    def _write_tags(
        self,
        job: _Job,
        root: Manifest,
        tags: list[str],
        protected: Callable[[str], bool] | None,
        *,
        root_was_present: bool,
    ) -> None:
        report = job.progress.report
        for tag in tags:
            must_look = root_was_present or (protected is not None and protected(tag))
            if must_look:
                current = self._retrying(
                    job, f"tag {tag}", functools.partial(job.destination.head_manifest, job.destination_repository, tag)
                )
                if current == root.digest:
                    continue
                if current is not None and protected is not None and protected(tag):
                    report.tag_conflicts.append(tag)
                    continue
            self._put_manifest(job, root, tag)
            report.tags_written.append(tag)

    # -- blobs ------------------------------------------------------------------------------------------------
    def _copy_blobs(self, job: _Job, blobs: dict[str, int]) -> None:
        if not blobs:
            return
        # Largest first, so the long transfers overlap instead of one trailing alone at the end.
        ordered = sorted(blobs.items(), key=lambda item: item[1], reverse=True)
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=min(self._workers, len(ordered)), thread_name_prefix="blob") as pool:
            futures: list[Future[None]] = [
                pool.submit(self._copy_blob, job, digest, size, stop) for digest, size in ordered
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failures = [future.exception() for future in done if future.exception() is not None]
            if failures:
                stop.set()  # blobs not yet started stay unstarted; those in flight finish or fail on their own
                wait(futures)
                failures = [future.exception() for future in futures if future.exception() is not None]
                # A real failure says more than the interruptions it caused in the other workers.
                failures.sort(key=lambda error: isinstance(error, CopyInterrupted))
                raise failures[0]  # type: ignore[misc]

    def _copy_blob(self, job: _Job, digest: str, size: int, stop: threading.Event) -> None:
        if stop.is_set():
            raise CopyInterrupted(f"stopped before blob {digest}: another blob failed")
        self._check_deadline(job, f"blob {digest}")
        subject = f"blob {digest}"
        if self._retrying(job, subject, lambda: job.destination.has_blob(job.destination_repository, digest)):
            job.progress.add(blobs_skipped=1)
            return
        for attempt in range(self._max_attempts):
            location: str | None = None
            try:
                mount = (digest, job.source_repository) if job.same_registry else None
                mounted, location = job.destination.start_upload(job.destination_repository, mount=mount)
                if mounted:
                    job.progress.add(blobs_mounted=1)
                    return
                self._stream_blob(job, digest, size, location)
                job.progress.add(blobs_copied=1, bytes_copied=size)
                return
            except PermanentError as error:
                self._abandon(job, location)
                raise CopyError(subject, str(error)) from None
            except (TransientError, _SourceReadError, _DigestMismatchError) as error:
                # The upload starts again from scratch: a fresh session, the source read from byte 0.
                self._abandon(job, location)
                if attempt + 1 == self._max_attempts:
                    raise CopyError(subject, f"{error} (gave up after {self._max_attempts} attempts)") from None
                self._pause(job, attempt, getattr(error, "retry_after", None), subject)

    def _abandon(self, job: _Job, location: str | None) -> None:
        if location is not None:
            job.destination.cancel_upload(job.destination_repository, location)

    def _stream_blob(self, job: _Job, digest: str, size: int, location: str) -> None:
        response = job.source.open_blob(job.source_repository, digest)
        finished = False
        try:
            announced = response.headers.get("Content-Length")
            if announced is not None and int(announced) != size:
                raise PermanentError(f"the source serves {announced} bytes where the manifest says {size}")
            stream = _VerifiedStream(response, size, digest)
            if job.chunk_size is None:
                job.destination.upload_whole(job.destination_repository, location, stream.pieces(size), size, digest)
            else:
                offset = 0
                while offset < size:
                    length = min(job.chunk_size, size - offset)
                    location = job.destination.upload_chunk(
                        job.destination_repository, location, stream.pieces(length), offset, length
                    )
                    offset += length
                if size == 0:
                    stream.pieces(0)
                job.destination.finish_upload(job.destination_repository, location, digest)
            finished = True
        finally:
            if not finished:
                response.close()  # a half-read connection must not go back to the pool
            response.release_conn()

    # -- referrers ---------------------------------------------------------------------------------------------
    def _copy_referrers(self, job: _Job, subjects: list[str], visited: set[str], depth: int) -> None:
        """Signatures, SBOMs and attestations attached to ``subjects``: found through the referrers API, or
        the ``sha256-<hex>`` tag the spec falls back to, or cosign's ``sha256-<hex>.sig/.att/.sbom`` tags."""
        if depth > REFERRERS_MAX_DEPTH:
            return
        for subject in subjects:
            self._check_deadline(job, f"the referrers of {subject}")
            fallback_tag = subject.replace(":", "-")
            listing = self._retrying(
                job,
                f"referrers of {subject}",
                functools.partial(job.source.referrers, job.source_repository, subject),
            )
            tagged_index: Manifest | None = None
            if listing is None:
                tagged_index = self._fetch_optional(job, fallback_tag)
                descriptors = _descriptors(tagged_index.raw) if tagged_index else []
            else:
                descriptors = _descriptors(listing)
            indexed_by_destination = True
            for descriptor in descriptors:
                digest = descriptor["digest"]
                if digest in visited:
                    continue
                visited.add(digest)
                referrer = self._fetch_manifest(job, digest, digest)
                tree = self._copy_tree(job, referrer, [], None)
                job.progress.add(referrers_copied=1)
                indexed_by_destination &= self._destination_indexes(job, referrer)
                self._copy_referrers(job, [m.digest for m in tree.manifests], visited, depth + 1)
            if tagged_index is not None:
                self._write_tags(job, tagged_index, [fallback_tag], None, root_was_present=True)
            elif descriptors and not indexed_by_destination:
                self._merge_fallback_index(job, fallback_tag, descriptors)
            for suffix in COSIGN_TAG_SUFFIXES:
                tagged = self._fetch_optional(job, fallback_tag + suffix)
                if tagged is not None and tagged.digest not in visited:
                    visited.add(tagged.digest)
                    self._copy_tree(job, tagged, [fallback_tag + suffix], None)
                    job.progress.add(referrers_copied=1)

    def _fetch_optional(self, job: _Job, tag: str) -> Manifest | None:
        found = self._retrying(job, f"tag {tag}", lambda: job.source.head_manifest(job.source_repository, tag))
        return self._fetch_manifest(job, tag, found) if found else None

    def _destination_indexes(self, job: _Job, referrer: Manifest) -> bool:
        """Whether the destination answers its referrers API for this referrer's subject."""
        subject = (json.loads(referrer.raw).get("subject") or {}).get("digest")
        if not subject:
            return True
        listing = self._retrying(
            job,
            f"referrers of {subject} at the destination",
            lambda: job.destination.referrers(job.destination_repository, subject),
        )
        return listing is not None

    def _merge_fallback_index(self, job: _Job, tag: str, descriptors: list[dict[str, Any]]) -> None:
        """The destination has no referrers API: keep its ``sha256-<hex>`` tag index listing the referrers."""
        current = self._retrying(
            job, f"tag {tag}", lambda: job.destination.get_manifest(job.destination_repository, tag)
        )
        index: dict[str, Any] = (
            json.loads(current.raw) if current else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        )
        listed: list[dict[str, Any]] = index.setdefault("manifests", [])
        known = {entry["digest"] for entry in listed}
        additions = [descriptor for descriptor in descriptors if descriptor["digest"] not in known]
        if not additions:
            return
        listed += additions
        raw = json.dumps(index, separators=(",", ":")).encode()
        self._put_manifest(job, Manifest(raw, OCI_INDEX, _sha256(raw)), tag)
        job.progress.report.tags_written.append(tag)
