#!/usr/bin/env python
"""Load-and-fault harness: the tag guard and retag functions under production-shaped traffic.

What it does, in order (bench/README.md explains the report):

1. Generates a workload from a seed: SemVer releases spread over repositories, each a distinct image
   (a synthetic OCI manifest under its real sha256 digest), optionally with conflicting second pushes
   of protected tags.
2. Pushes every image into a moto server on 127.0.0.1, in shuffled order, and builds the
   ``ECR Image Action`` PUSH event ECR would emit for each (``time`` = its push time, in seconds);
   a conflicting push comes a few seconds after the push it conflicts with.
3. Delivers every event to both functions, in shuffled order, several times each (EventBridge is at
   least once), with a pool of concurrent invocations per function. Every successful PutImage the
   functions make becomes a new PUSH event, delivered the same way (as in AWS). A failed invocation
   is retried twice, after a delay and after the rest of the queue, then counted as dead-lettered
   (Lambda's async retries and its on-failure destination).
4. Optionally injects faults on the functions' own clients: throttling on a fraction of ECR and
   DynamoDB requests (the SDK's retries must absorb it), and an operation that fails on every attempt
   (the invocation must fail, never succeed without its effect).
5. Checks the final state against an expectation computed here, from what was pushed alone, never
   from the code under test; reports counts, latencies, AWS calls per event and the verdict.

Run ``.venv/bin/python bench/load.py --help``. Exit status: 0 verdict OK, 1 mismatches (or a timeout),
2 the harness could not run (bad options, the package does not import).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import heapq
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
# `tests.support` (table builders, the moto server) lives at the repository root; the package itself
# is installed in .venv, and functions/ is the fallback when it is not.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "functions") not in sys.path:
    sys.path.append(str(ROOT / "functions"))

# Read by Powertools when the handler modules are imported: no X-Ray daemon here, and its
# Metrics refuses to serialise without a namespace.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "ecr-automation")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ECRAutomation")

import boto3  # noqa: E402 - after the environment above
from botocore.awsrequest import AWSResponse  # noqa: E402
from botocore.config import Config  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-east-1"
LEDGER_TABLE = "bench-tag-ledger"
IDEMPOTENCY_TABLE = "bench-idempotency"
DEAD_LETTER_QUEUE = "bench-dead-letters"
RULES_FILE = ROOT / "functions" / "rules.toml"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
GUARD, RETAG = "TagGuardFunction", "RetagFunction"
FUNCTIONS = (GUARD, RETAG)
# Lambda's asynchronous invocation: the first try and two retries, then the on-failure destination.
MAX_ATTEMPTS = 3
# What the bundled rules.toml writes (the expectation below is computed for those rules).
DIGEST_TAG_PREFIX = "sha-"
QUARANTINE_TAG_PREFIX = "quarantine-"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# The error a --fail-always operation answers with on every attempt: ECR's and DynamoDB's 5xx,
# which the SDK retries like a real outage, so the invocation sees it only after all its retries.
FORCED_FAILURE_CODE = "InternalServerError"
# How long in-flight invocations get to finish once the time budget is spent (they are bounded by
# the clients' own timeouts and the ledger's 20 s lease wait).
DRAIN_SECONDS = 60.0


# --- the workload ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    repository: str
    manifest: str
    digest: str

    @property
    def short(self) -> str:
        return self.digest.split(":", 1)[1][:12]


@dataclass(frozen=True)
class Release:
    repository: str
    tag: str
    number: tuple[int, int, int]
    prerelease: str | None
    image: Image


@dataclass(frozen=True)
class Push:
    repository: str
    tag: str
    image: Image
    # A second push of an already pushed protected tag, with another image (a violation), this many
    # seconds after the first: far enough apart that the events' one-second `time` orders them.
    conflicting_after: float | None = None

    @property
    def conflicting(self) -> bool:
        return self.conflicting_after is not None


@dataclass
class Workload:
    repositories: list[str]
    releases: list[Release]
    pushes: list[Push]  # in push order


def synthetic_image(repository: str, seed: str) -> Image:
    """A small, valid OCI manifest unique to ``seed``, with the sha256 of its exact bytes as digest."""
    config_digest = "sha256:" + hashlib.sha256(f"config/{seed}".encode()).hexdigest()
    layer_digest = "sha256:" + hashlib.sha256(f"layer/{seed}".encode()).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": 32}
            ],
        },
        separators=(",", ":"),
    )
    return Image(repository, manifest, "sha256:" + hashlib.sha256(manifest.encode()).hexdigest())


def version_numbers(rng: random.Random, count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct versions, dense enough that minors and majors share aliases.

    Minor 10 and patches 10 and 11 are there on purpose: compared as strings they sort below 2,
    so an alias decided lexically instead of by SemVer precedence shows up as a mismatch.
    """
    minors = [0, 1, 2, 3, 4, 10]
    patches = [*range(10), 10, 11]
    majors = max(3, math.ceil(count / (len(minors) * len(patches))) + 1)
    grid = [(major, minor, patch) for major in range(1, majors + 1) for minor in minors for patch in patches]
    return rng.sample(grid, count)


def generate_workload(
    rng: random.Random, *, pushes: int, repositories: int, conflicts: int, prerelease_rate: float
) -> Workload:
    names = [f"bench/service-{index:02d}" for index in range(min(repositories, pushes))]
    releases: list[Release] = []
    for index, repository in enumerate(names):
        count = pushes // len(names) + (1 if index < pushes % len(names) else 0)
        for number in version_numbers(rng, count):
            prerelease = f"rc.{rng.randint(1, 12)}" if rng.random() < prerelease_rate else None
            tag = "v{}.{}.{}".format(*number) + (f"-{prerelease}" if prerelease else "")
            image = synthetic_image(repository, f"{repository}:{tag}")
            releases.append(Release(repository, tag, number, prerelease, image))
    if conflicts > len(releases):
        raise ValueError(f"--conflicts {conflicts}: only {len(releases)} releases to conflict with")

    # Releases are pushed in shuffled order; a conflicting push follows the push it conflicts with
    # a few seconds later (the pusher waits for it).
    order = list(releases)
    rng.shuffle(order)
    pushed = [Push(release.repository, release.tag, release.image) for release in order]
    for release in rng.sample(order, conflicts):
        image = synthetic_image(release.repository, f"{release.repository}:{release.tag}:conflict")
        pushed.append(Push(release.repository, release.tag, image, conflicting_after=rng.uniform(2.5, 5.0)))
    return Workload(names, releases, pushed)


# --- the expectation, from the workload alone -------------------------------------------------------


@dataclass
class Expectation:
    tags: dict[str, dict[str, str]]  # repository -> tag -> digest, every tag that must be there
    claims: dict[str, dict[str, str]]  # repository -> release tag -> digest of its claim
    # (repository, tag) -> the digest of the conflicting (later) push: violations to alert on.
    violations: dict[tuple[str, str], str]
    # Tags that may or may not be there: the digest tag of a conflicting image. Retag may have acted
    # on its push before the earlier push's event arrived, which nothing can know beforehand.
    tolerated: dict[str, dict[str, str]]
    release_of_digest: dict[str, str]  # digest -> "repository:tag", to name digests in mismatches


def expected_state(workload: Workload) -> Expectation:
    tags: dict[str, dict[str, str]] = {repository: {} for repository in workload.repositories}
    claims: dict[str, dict[str, str]] = {repository: {} for repository in workload.repositories}
    tolerated: dict[str, dict[str, str]] = {repository: {} for repository in workload.repositories}
    release_of_digest: dict[str, str] = {}
    for release in workload.releases:
        # A release tag belongs to its own (earlier) push, whatever was pushed over it later.
        tags[release.repository][release.tag] = release.image.digest
        claims[release.repository][release.tag] = release.image.digest
        tags[release.repository][DIGEST_TAG_PREFIX + release.image.short] = release.image.digest
        release_of_digest[release.image.digest] = f"{release.repository}:{release.tag}"

    # Floating aliases: the highest stable release of their series by SemVer precedence, which for
    # MAJOR.MINOR.PATCH without pre-release is the numeric tuple order. Pre-releases move nothing.
    highest: dict[tuple[str, str], Release] = {}
    for release in workload.releases:
        if release.prerelease is not None:
            continue
        major, minor, _ = release.number
        for alias in (f"v{major}.{minor}", f"v{major}", "latest"):
            current = highest.get((release.repository, alias))
            if current is None or release.number > current.number:
                highest[release.repository, alias] = release
    for (repository, alias), release in highest.items():
        tags[repository][alias] = release.image.digest

    violations: dict[tuple[str, str], str] = {}
    for push in workload.pushes:
        if push.conflicting:
            # The later image is kept under the guard's quarantine tag; its release tag stays put.
            tags[push.repository][QUARANTINE_TAG_PREFIX + push.image.short] = push.image.digest
            tolerated[push.repository][DIGEST_TAG_PREFIX + push.image.short] = push.image.digest
            violations[push.repository, push.tag] = push.image.digest
            release_of_digest[push.image.digest] = f"{push.repository}:{push.tag} (conflicting push)"
    return Expectation(tags, claims, violations, tolerated, release_of_digest)


# --- faults and instrumentation on the functions' clients ---------------------------------------------


@dataclass(frozen=True)
class FaultPlan:
    throttle_rate: float = 0.0
    fail_operation: str | None = None  # e.g. "PutImage": answered with an error on every attempt
    fail_repository: str | None = None  # None: in every repository

    def fails_always(self, operation: str, body: Any) -> bool:
        if self.fail_operation is None or operation != self.fail_operation:
            return False
        return self.fail_repository is None or _names_repository(body, self.fail_repository)


def _names_repository(value: Any, repository: str) -> bool:
    """Whether a request body names ``repository``: ECR's repositoryName, or a ledger key ending in it."""
    if isinstance(value, str):
        return value == repository or value.endswith("#" + repository)
    if isinstance(value, dict):
        return any(_names_repository(item, repository) for item in value.values())
    if isinstance(value, list):
        return any(_names_repository(item, repository) for item in value)
    return False


class _Body:
    """The raw stream botocore reads an HTTP response body from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def error_response(url: str, status: int, code: str, message: str, service: str) -> AWSResponse:
    """An AWS JSON-protocol error answer, exactly as botocore parses it from the wire."""
    error_type = f"com.amazonaws.dynamodb.v20120810#{code}" if service == "dynamodb" else code
    body = json.dumps({"__type": error_type, "message": message}).encode()
    headers = {
        "Content-Type": "application/x-amz-json-1.0" if service == "dynamodb" else "application/x-amz-json-1.1",
        "Content-Length": str(len(body)),
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    return AWSResponse(url, status, headers, _Body(body))


@dataclass
class Probe:
    """What one invocation did on the wire; hooks run on the invoking thread, so no lock is needed."""

    function: str
    calls: Counter[str] = field(default_factory=Counter)  # "ecr.PutImage": API calls (before-call)
    attempts: Counter[str] = field(default_factory=Counter)  # HTTP attempts, retries included (before-send)
    errors: Counter[str] = field(default_factory=Counter)  # "ecr.PutImage ThrottlingException": after retries
    throttles: Counter[str] = field(default_factory=Counter)  # injected, by service
    forced_failures: int = 0


class Instrumentation:
    """The botocore hooks put on every client the functions use: count, inject faults, emit events."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.outside = Probe("outside an invocation")  # anything the harness did not expect
        self.on_push: Callable[[str, dict[str, Any]], None] = lambda _function, _event: None
        self.violations: list[dict[str, Any]] = []
        self.escaped: list[str] = []  # requests aimed anywhere but loopback (refused)

    # The probe of the invocation running on this thread.
    def begin(self, probe: Probe) -> None:
        self._local.probe = probe

    def end(self) -> None:
        self._local.probe = None

    def _probe(self) -> Probe:
        return getattr(self._local, "probe", None) or self.outside

    def attach(self, client: Any, service: str) -> None:
        events = client.meta.events
        events.register("before-parameter-build", _remember_params)
        events.register("before-call", self._before_call(service))
        events.register("before-send", self._before_send(service))
        events.register("after-call", self._after_call(service))

    def _before_call(self, service: str) -> Callable[..., None]:
        def count(model: Any, **_: Any) -> None:
            self._probe().calls[f"{service}.{model.name}"] += 1

        return count

    def _before_send(self, service: str) -> Callable[..., AWSResponse | None]:
        def send(request: Any, event_name: str, **_: Any) -> AWSResponse | None:
            operation = event_name.rsplit(".", 1)[-1]
            probe = self._probe()
            host = urlsplit(request.url).hostname
            if host not in LOOPBACK_HOSTS:  # all traffic stays on this machine, whatever the environment says
                with self._lock:
                    self.escaped.append(f"{service}.{operation} -> {host}")
                raise RuntimeError(f"bench: refused to send {service}.{operation} to {host}: loopback only")
            probe.attempts[f"{service}.{operation}"] += 1
            if self.plan.fail_operation == operation and self.plan.fails_always(operation, _json_body(request)):
                probe.forced_failures += 1
                return error_response(request.url, 500, FORCED_FAILURE_CODE, "injected: fails always", service)
            if service in {"ecr", "dynamodb"} and self.plan.throttle_rate > 0:
                with self._rng_lock:
                    throttled = self._rng.random() < self.plan.throttle_rate
                    code = (
                        self._rng.choice(("ProvisionedThroughputExceededException", "ThrottlingException"))
                        if service == "dynamodb"
                        else "ThrottlingException"
                    )
                if throttled:
                    probe.throttles[service] += 1
                    return error_response(request.url, 400, code, "Rate exceeded (injected)", service)
            return None

        return send

    def _after_call(self, service: str) -> Callable[..., None]:
        def observe(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
            operation = f"{service}.{model.name}"
            if http_response.status_code >= 300:
                self._probe().errors[
                    f"{operation} {parsed.get('Error', {}).get('Code', http_response.status_code)}"
                ] += 1
                return
            params = context.get("params", {})
            if operation == "ecr.PutImage":
                # ECR emits a PUSH event for every successful PutImage, whoever made it.
                image = parsed["image"]
                event = image_action_event(
                    image["repositoryName"], image["imageId"]["imageDigest"], params.get("imageTag"), now()
                )
                self.on_push(self._probe().function, event)
            elif operation == "events.PutEvents":
                with self._lock:
                    for entry in params.get("Entries", []):
                        if entry.get("DetailType") == "Tag Guard Violation":
                            self.violations.append(json.loads(entry["Detail"]))

        return observe


def _remember_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["params"] = dict(params)


def _json_body(request: Any) -> Any:
    try:
        return json.loads(request.body or b"{}")
    except (TypeError, ValueError):
        return {}


def instrumented_clients(config: Config, instrumentation: Instrumentation, *, per_worker: bool) -> Any:
    """The project's ``AwsClients`` built with ``config``, every client it hands out hooked once.

    ``per_worker``: each worker thread gets its own ``AwsClients`` (own session and clients), as each
    Lambda execution environment has its own: the adaptive mode's client-side rate limiter and the
    standard mode's retry quota then see one environment's traffic, not all of it. Otherwise one
    set serves every thread, which stresses the code's thread safety instead.
    """
    from ecr_automation.adapters.clients import AwsClients  # noqa: PLC0415 - the package may be mid-edit

    def new_session() -> boto3.session.Session:
        return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)

    class InstrumentedClients(AwsClients):
        def __init__(self) -> None:
            super().__init__(session=new_session(), config=config)
            self._per_worker: dict[int, AwsClients] = {}
            self._hooked: set[int] = set()
            self._hook_lock = threading.Lock()

        def client(self, service: str, region: str) -> Any:
            if per_worker:
                with self._hook_lock:
                    own = self._per_worker.get(threading.get_ident())
                    if own is None:
                        own = self._per_worker[threading.get_ident()] = AwsClients(session=new_session(), config=config)
                client = own.client(service, region)
            else:
                client = super().client(service, region)
            with self._hook_lock:
                if id(client) not in self._hooked:
                    self._hooked.add(id(client))
                    instrumentation.attach(client, client.meta.service_model.service_name)
            return client

    return InstrumentedClients()


# Which function the invocation running on this thread belongs to (set by the dispatcher).
_invocation = threading.local()


def bench_dependencies(settings: Any, clients: Any, sink: Any) -> Any:
    """The one dependency container every invocation shares, with one idempotency store per function.

    Powertools prefixes idempotency keys with AWS_LAMBDA_FUNCTION_NAME, which differs per function
    in Lambda, where one process only ever runs one function. Here both functions share a process
    (and one environment), so without this their keys for one event id would collide: the second
    function would be answered with the first one's stored result. Each function therefore gets its
    own persistence layer whose key prefix names the function, as it would in Lambda.
    """
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer  # noqa: PLC0415

    from ecr_automation.dependencies import Dependencies  # noqa: PLC0415

    class FunctionScopedStore(DynamoDBPersistenceLayer):
        def __init__(self, function: str, **kwargs: Any) -> None:
            self._scope = function  # before super(): its __init__ assigns function_name
            super().__init__(**kwargs)

        @property
        def function_name(self) -> str:
            return self._scoped_name

        @function_name.setter
        def function_name(self, value: str) -> None:
            # One atomic assignment: concurrent invocations of one function configure the same store.
            self._scoped_name = f"{self._scope}#{value}"

    class BenchDependencies(Dependencies):
        def __init__(self) -> None:
            super().__init__(settings, clients=clients, sink=sink)
            self._stores: dict[tuple[str, int], Any] = {}
            self._stores_lock = threading.Lock()

        @property
        def idempotency_store(self) -> Any:
            if not self.settings.idempotency_table:
                return None
            function = getattr(_invocation, "function", "outside an invocation")
            # One store per function and worker: each execution environment builds its own.
            key = (function, threading.get_ident())
            with self._stores_lock:
                store = self._stores.get(key)
            if store is None:
                store = FunctionScopedStore(
                    function,
                    table_name=self.settings.idempotency_table,
                    boto3_client=self.clients.client("dynamodb", self.settings.region),
                )
                with self._stores_lock:
                    self._stores[key] = store
            return store

    return BenchDependencies()


# --- events ---------------------------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def image_action_event(
    repository: str, digest: str, tag: str | None, at: datetime, event_id: str | None = None
) -> dict[str, Any]:
    """The ``ECR Image Action`` PUSH event, as EventBridge delivers it (no image-tag for a push by digest)."""
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": digest,
        "action-type": "PUSH",
    }
    if tag is not None:
        detail["image-tag"] = tag
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": ACCOUNT,
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),  # EventBridge's resolution: seconds
        "region": REGION,
        "resources": [],
        "detail": detail,
    }


@dataclass
class EventRecord:
    event: dict[str, Any]
    origin: str  # "push", "conflicting push", or the function whose write caused it

    @property
    def repository(self) -> str:
        return str(self.event["detail"]["repository-name"])


# --- delivery ---------------------------------------------------------------------------------------------


@dataclass(order=True)
class Delivery:
    """One copy of one event on its way to one function; ordered by (round, key): a shuffled queue."""

    round: int
    key: float
    sequence: int
    function: str = field(compare=False)
    event_id: str = field(compare=False)
    attempt: int = field(compare=False, default=1)
    errors: list[str] = field(compare=False, default_factory=list)
    forced: list[bool] = field(compare=False, default_factory=list)  # per attempt: hit a --fail-always call


@dataclass
class LambdaContext:
    """The parts of the Lambda context object Powertools reads."""

    function_name: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class FunctionStats:
    invocations: int = 0  # every attempt
    deliveries: int = 0
    succeeded: int = 0  # deliveries whose last attempt returned
    failed_attempts: int = 0
    retried: int = 0  # deliveries that needed more than one attempt
    dead_lettered: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # processed / ignored / rejected
    results: Counter[str] = field(default_factory=Counter)  # the functions' own outcome names
    errors: Counter[str] = field(default_factory=Counter)  # exception types of failed attempts
    calls: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    call_errors: Counter[str] = field(default_factory=Counter)
    throttles: Counter[str] = field(default_factory=Counter)
    forced_failures: int = 0
    # Invocations that met a --fail-always call and still returned: an effect silently dropped.
    succeeded_despite_forced: list[str] = field(default_factory=list)


class Dispatcher:
    """Delivers events to the functions with a pool of workers each, like EventBridge + Lambda async.

    Each function has its own queue, ordered by random keys: a new event (a duplicate, or one the
    functions' writes caused) lands at a uniformly random place among what is still queued in the
    current round; a retry goes to the next round, after everything queued now.
    """

    def __init__(
        self,
        handlers: dict[str, Callable[[dict[str, Any], Any], Any]],
        *,
        concurrency: int,
        duplicates: int,
        retry_delay: float,
        rng: random.Random,
        deadline: float,
        max_events: int,
        progress: TextIO | None,
    ) -> None:
        self._handlers = handlers
        self._concurrency = concurrency
        self._duplicates = duplicates
        self._retry_delay = retry_delay
        self._rng = rng
        self._deadline = deadline
        self._max_events = max_events
        self._progress = progress
        self._cond = threading.Condition()
        self._queues: dict[str, list[Delivery]] = {function: [] for function in handlers}
        self._last: dict[str, tuple[int, float]] = dict.fromkeys(handlers, (0, 0.0))
        self._sequence = 0
        self._in_flight = 0
        self._running: Counter[tuple[str, str]] = Counter()  # (function, event id) -> invocations running
        self._delayed: list[tuple[float, int, Delivery]] = []  # (due, sequence, retry)
        self.events: dict[str, EventRecord] = {}
        self.stats: dict[str, FunctionStats] = {function: FunctionStats() for function in handlers}
        # (function, event id) -> how each delivery of it ended: "processed", "ignored", "rejected", "dead-lettered"
        self.endings: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.dead_letters: list[dict[str, Any]] = []
        # (function, event id) of the events whose handling met a --fail-always call at least once.
        self.forced_events: set[tuple[str, str]] = set()
        self.log: list[dict[str, Any]] = []  # every invocation's outcome, for the evidence of a mismatch
        self.timed_out = False
        self.overflowed = False
        self._stop_reporting = threading.Event()
        self.started = 0.0
        self.finished = 0.0
        self.instrumentation: Instrumentation | None = None

    def submit(self, event: dict[str, Any], origin: str) -> None:
        """An event EventBridge would deliver: ``duplicates`` copies to every function, shuffled in."""
        with self._cond:
            if len(self.events) >= self._max_events:
                self.overflowed = True  # the functions' writes keep causing writes: stop feeding them
                return
            self.events[event["id"]] = EventRecord(event, origin)
            for function in self._queues:
                last_round, last_key = self._last[function]
                for _ in range(self._duplicates):
                    self._push(Delivery(last_round, self._rng.uniform(last_key, 1.0), 0, function, event["id"]))
                    self.stats[function].deliveries += 1
            self._cond.notify_all()

    def _push(self, delivery: Delivery) -> None:
        self._sequence += 1
        delivery.sequence = self._sequence
        heapq.heappush(self._queues[delivery.function], delivery)

    def run(self) -> bool:
        """Deliver until nothing is queued or running, or the deadline; False if a worker is still stuck."""
        self.started = time.monotonic()
        workers = [
            threading.Thread(target=self._work, args=(function,), name=f"{function}-{index}", daemon=True)
            for function in self._handlers
            for index in range(self._concurrency)
        ]
        for worker in workers:
            worker.start()
        reporter = threading.Thread(target=self._report_progress, daemon=True)
        reporter.start()
        for worker in workers:
            # Daemon threads: one stuck past the drain allowance cannot keep the process alive.
            worker.join(timeout=max(0.0, self._deadline + DRAIN_SECONDS - time.monotonic()))
        self.finished = time.monotonic()
        self._stop_reporting.set()
        return not any(worker.is_alive() for worker in workers)

    def undelivered(self) -> int:
        with self._cond:
            return sum(len(queue) for queue in self._queues.values()) + len(self._delayed)

    def _work(self, function: str) -> None:
        handler = self._handlers[function]
        while True:
            with self._cond:
                while True:
                    if time.monotonic() > self._deadline:
                        self.timed_out = True
                        self._cond.notify_all()
                        return
                    self._release_due_retries()
                    queue = self._queues[function]
                    if queue:
                        delivery = heapq.heappop(queue)
                        self._last[function] = (delivery.round, delivery.key)
                        self._in_flight += 1
                        self._running[function, delivery.event_id] += 1
                        break
                    if self._in_flight == 0 and not self._delayed and not any(self._queues.values()):
                        self._cond.notify_all()
                        return  # nothing queued, waiting or running that could queue more: done
                    wait = 0.25
                    if self._delayed:
                        wait = min(wait, max(0.0, self._delayed[0][0] - time.monotonic()))
                    self._cond.wait(timeout=wait)
            try:
                self._invoke(function, handler, delivery)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._running[function, delivery.event_id] -= 1
                    self._cond.notify_all()

    def _release_due_retries(self) -> None:
        """Queue the retries whose delay is over, after everything queued for their function now.

        Lambda retries a minute or more later, longer than an invocation can live (its timeout), so
        by then any other copy of the same event in the same function has finished. The shorter
        delay here keeps that property by also waiting for such a copy to finish: otherwise a retry
        of a duplicate refused as in progress would be refused again, which Lambda never does.
        """
        now = time.monotonic()
        postponed = []
        while self._delayed and self._delayed[0][0] <= now:
            entry = heapq.heappop(self._delayed)
            retry = entry[2]
            if self._running[retry.function, retry.event_id]:
                postponed.append((now + 0.1, entry[1], retry))
                continue
            retry.round = max(retry.round, self._last[retry.function][0]) + 1
            retry.key = self._rng.random()
            self._push(retry)
        for entry in postponed:
            heapq.heappush(self._delayed, entry)

    def _invoke(self, function: str, handler: Callable[[dict[str, Any], Any], Any], delivery: Delivery) -> None:
        assert self.instrumentation is not None
        record = self.events[delivery.event_id]
        probe = Probe(function)
        _invocation.function = function
        _invocation.event_id = delivery.event_id
        self.instrumentation.begin(probe)
        started = time.perf_counter()
        error: str | None = None
        result: Any = None
        try:
            result = handler(copy.deepcopy(record.event), LambdaContext(function))
        except Exception as exc:  # any exception is a failed invocation, as Lambda sees it
            error = f"{type(exc).__name__}: {exc}"
        finally:
            elapsed = time.perf_counter() - started
            self.instrumentation.end()

        with self._cond:
            stats = self.stats[function]
            stats.invocations += 1
            stats.latencies.append(elapsed)
            stats.calls.update(probe.calls)
            stats.attempts.update(probe.attempts)
            stats.call_errors.update(probe.errors)
            stats.throttles.update(probe.throttles)
            stats.forced_failures += probe.forced_failures
            delivery.forced.append(probe.forced_failures > 0)
            outcome = json.dumps(result, default=str) if error is None else error
            self.log.append({"function": function, "event_id": delivery.event_id, "outcome": outcome[:400]})
            if probe.forced_failures:
                self.forced_events.add((function, delivery.event_id))
            key = (function, delivery.event_id)
            if error is None:
                stats.succeeded += 1
                if delivery.attempt > 1:
                    stats.retried += 1
                status = str(result.get("status", "?")) if isinstance(result, dict) else repr(result)
                stats.statuses[status] += 1
                if isinstance(result, dict) and "result" in result:
                    stats.results[str(result["result"])] += 1
                self.endings[key].append(status)
                if probe.forced_failures:
                    stats.succeeded_despite_forced.append(
                        f"{function} {describe(record.event)} returned {json.dumps(result, default=str)[:300]}"
                    )
                return
            stats.failed_attempts += 1
            stats.errors[error.split(":", 1)[0]] += 1
            delivery.errors.append(error[:500])
            if delivery.attempt < MAX_ATTEMPTS:
                # Lambda retries a failed async invocation about a minute later, then two: here after
                # --retry-delay seconds (then twice that), and after the rest of the queue. Without a
                # delay, a retry of a duplicate still in progress elsewhere would fail at once again.
                retry = Delivery(
                    delivery.round,
                    0.0,
                    0,
                    function,
                    delivery.event_id,
                    delivery.attempt + 1,
                    delivery.errors,
                    delivery.forced,
                )
                ready_at = time.monotonic() + self._retry_delay * 2 ** (delivery.attempt - 1)
                self._sequence += 1
                heapq.heappush(self._delayed, (ready_at, self._sequence, retry))
                self._cond.notify_all()
                return
            stats.dead_lettered += 1
            self.endings[key].append("dead-lettered")
            self.dead_letters.append(
                {
                    "function": function,
                    "event_id": delivery.event_id,
                    "event": describe(record.event),
                    "origin": record.origin,
                    "repository": record.repository,
                    "errors": list(delivery.errors),
                    "last_attempt_forced": delivery.forced[-1],
                }
            )

    def _report_progress(self) -> None:
        if self._progress is None:
            return
        while not self._stop_reporting.wait(timeout=10.0):
            with self._cond:
                queued = sum(len(queue) for queue in self._queues.values())
                waiting = len(self._delayed)
                done = sum(stats.invocations for stats in self.stats.values())
                failed = sum(stats.failed_attempts for stats in self.stats.values())
                in_flight = self._in_flight
                events = len(self.events)
            elapsed = time.monotonic() - self.started
            print(
                f"  [{elapsed:6.1f} s] invocations {done}, queued {queued}, retries waiting {waiting}, "
                f"in flight {in_flight}, "
                f"events {events}, failed attempts {failed}",
                file=self._progress,
                flush=True,
            )


def describe(event: dict[str, Any]) -> str:
    detail = event.get("detail", {})
    tag = detail.get("image-tag", "<by digest>")
    return f"PUSH {detail.get('repository-name')}:{tag}@{str(detail.get('image-digest', ''))[7:19]} ({event.get('id')})"


# --- the AWS stand-in -----------------------------------------------------------------------------------

# The project's moto server (with its fidelity patches), in a process of its own: like AWS, it does
# not share the functions' interpreter lock, and on two cores each side gets one.
MOTO_CHILD = """
import sys
sys.path[:0] = [{root!r}, {functions!r}]
from tests.support.moto_server import MotoServer
server = MotoServer()
print(server.endpoint_url, flush=True)
sys.stdin.read()  # until the harness closes our stdin, or dies
server.stop()
"""


class MotoProcess:
    def __init__(self) -> None:
        script = MOTO_CHILD.format(root=str(ROOT), functions=str(ROOT / "functions"))
        # Its request log (one line per request) goes to a file, read only if it fails to start.
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self._process.stdout is not None
        self.endpoint_url = self._process.stdout.readline().strip()
        if not self.endpoint_url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the moto server did not start: {self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._log.seek(0)
            return self._log.read()[-2000:]
        return "(no log)"

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self._process.stdin is not None:
                self._process.stdin.close()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()  # ours, by its handle
            self._process.wait(timeout=15)
        self._log.close()


class MotoInProcess:
    def __init__(self) -> None:
        from tests.support.moto_server import MotoServer  # noqa: PLC0415

        self._server = MotoServer()
        self.endpoint_url = self._server.endpoint_url

    def stop(self) -> None:
        self._server.stop()


def reset_moto(endpoint_url: str) -> None:
    if urlsplit(endpoint_url).hostname not in LOOPBACK_HOSTS:
        raise RuntimeError(f"refusing to reset {endpoint_url}: loopback only")
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


class Harness:
    """The harness's own view of AWS: seeding and checking, never instrumented, never faulted."""

    def __init__(self, endpoint_url: str) -> None:
        self._session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        self._endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(
                service,
                endpoint_url=self._endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 3}),
            )
        return self._clients[service]

    def create_resources(self, workload: Workload) -> str:
        from tests.support.builders import create_table_like  # noqa: PLC0415 - the template's key schema

        create_table_like(self.client("dynamodb"), "TagLedgerTable", LEDGER_TABLE)
        create_table_like(self.client("dynamodb"), "IdempotencyTable", IDEMPOTENCY_TABLE)
        for repository in workload.repositories:
            self.client("ecr").create_repository(repositoryName=repository)
        return str(self.client("sqs").create_queue(QueueName=DEAD_LETTER_QUEUE)["QueueUrl"])

    def push_all(self, pushes: list[Push], rng: random.Random) -> list[tuple[dict[str, Any], Push]]:
        """Push in order; each conflicting push once its delay after the push it conflicts with is over."""
        events: list[tuple[dict[str, Any], Push]] = []
        pushed_at: dict[tuple[str, str], float] = {}
        for push in pushes:
            if not push.conflicting:
                events.append((self.push(push, str(uuid.UUID(int=rng.getrandbits(128), version=4))), push))
                pushed_at[push.repository, push.tag] = time.monotonic()
        conflicting = [push for push in pushes if push.conflicting_after is not None]
        due = {id(push): pushed_at[push.repository, push.tag] + (push.conflicting_after or 0.0) for push in conflicting}
        for push in sorted(conflicting, key=lambda push: due[id(push)]):
            time.sleep(max(0.0, due[id(push)] - time.monotonic()))
            events.append((self.push(push, str(uuid.UUID(int=rng.getrandbits(128), version=4))), push))
        return events

    def push(self, push: Push, event_id: str) -> dict[str, Any]:
        """What `docker push` does: the image lands, the tag moves to it; and the event ECR emits.

        Its `time` is the moment of the push, to the second, as ECR stamps it; the functions see
        the delay between push and delivery a backlog of this size really causes.
        """
        self.client("ecr").put_image(
            repositoryName=push.repository,
            imageManifest=push.image.manifest,
            imageManifestMediaType=OCI_MANIFEST,
            imageDigest=push.image.digest,
            imageTag=push.tag,
        )
        return image_action_event(push.repository, push.image.digest, push.tag, now(), event_id)

    def tags(self, repository: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        paginator = self.client("ecr").get_paginator("list_images")
        for page in paginator.paginate(repositoryName=repository, filter={"tagStatus": "TAGGED"}):
            for image_id in page["imageIds"]:
                tags[image_id["imageTag"]] = image_id["imageDigest"]
        return tags

    def ledger_claims(self) -> list[dict[str, Any]]:
        """Claim items (sk ``tag#<tag>``): only pk, sk and digest are read, the rest may change."""
        claims = []
        for page in self.client("dynamodb").get_paginator("scan").paginate(TableName=LEDGER_TABLE, ConsistentRead=True):
            for item in page.get("Items", []):
                sort_key = item.get("sk", {}).get("S", "")
                if sort_key.startswith("tag#"):
                    claims.append(
                        {
                            "pk": item.get("pk", {}).get("S", ""),
                            "tag": sort_key.removeprefix("tag#"),
                            "digest": item.get("digest", {}).get("S"),
                        }
                    )
        return claims

    def dead_letter_messages(self, queue_url: str) -> int:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))


@contextlib.contextmanager
def functions_environment(endpoint_url: str) -> Iterator[None]:
    """Point the functions' SDK at the moto server, as `sam local` or a test would, and undo it after.

    Per-service endpoint variables are removed so that nothing can be sent elsewhere; the
    before-send hook refuses non-loopback requests besides.
    """
    changes: dict[str, str | None] = {"AWS_ENDPOINT_URL": endpoint_url, "POWERTOOLS_METRICS_DISABLED": "true"}
    for name in os.environ:
        if name.startswith("AWS_ENDPOINT_URL_"):
            changes[name] = None
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- checking the end state -------------------------------------------------------------------------------


@dataclass
class TracingSink:
    """Collects the functions' effects, each with the invocation that caused it (for evidence)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self, effect: Any) -> None:
        with self._lock:
            self.records.append(
                {
                    "function": getattr(_invocation, "function", None),
                    "event_id": getattr(_invocation, "event_id", None),
                    "kind": effect.kind,
                    **getattr(effect, "fields", {}),
                }
            )


def evidence_for(repository: str, tag: str, dispatcher: Dispatcher, sink: TracingSink) -> list[dict[str, Any]]:
    """Every event that pushed ``repository:tag``, in the order of its time, with how each function handled it."""
    history = []
    for event_id, record in sorted(dispatcher.events.items(), key=lambda item: item[1].event["time"]):
        detail = record.event["detail"]
        if detail["repository-name"] != repository or detail.get("image-tag") != tag:
            continue
        history.append(
            {
                "event": describe(record.event),
                "time": record.event["time"],
                "origin": record.origin,
                "outcomes": [entry for entry in dispatcher.log if entry["event_id"] == event_id],
                "effects": [effect for effect in sink.records if effect["event_id"] == event_id],
            }
        )
    return history


@dataclass
class Verdict:
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped_repositories: list[str] = field(default_factory=list)
    # Release tags that ended wrong, and for the first few what happened to them, event by event.
    suspects: list[tuple[str, str]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def check_final_state(
    harness: Harness,
    workload: Workload,
    expectation: Expectation,
    dispatcher: Dispatcher,
    instrumentation: Instrumentation,
    plan: FaultPlan,
    dead_letter_queue_url: str,
) -> Verdict:
    verdict = Verdict()
    failing = {
        repository
        for repository in workload.repositories
        if plan.fail_operation is not None and plan.fail_repository in {None, repository}
    }
    verdict.skipped_repositories = sorted(failing)
    name = expectation.release_of_digest

    def named(digest: str | None) -> str:
        if digest is None:
            return "nothing"
        return f"{digest[7:19]} ({name.get(digest, 'an image nobody pushed')})"

    # Registry: every tag that must be there, and nothing else.
    for repository in workload.repositories:
        if repository in failing:
            continue
        actual = harness.tags(repository)
        for tag, digest in sorted(expectation.tags[repository].items()):
            if actual.get(tag) != digest:
                if tag in expectation.claims[repository]:
                    verdict.suspects.append((repository, tag))
                verdict.mismatches.append(
                    f"{repository}:{tag} points at {named(actual.get(tag))}, expected {named(digest)}"
                )
        for tag, digest in sorted(actual.items()):
            if tag in expectation.tags[repository]:
                continue
            if expectation.tolerated[repository].get(tag) == digest:
                verdict.notes.append(f"{repository}:{tag} on a quarantined image (retag saw its push first)")
                continue
            verdict.mismatches.append(f"{repository}:{tag} is unexpected, on {named(digest)}")

    # Ledger: exactly one claim per release tag, for the right digest, and no claim for anything else.
    claims_by_repository: dict[str, dict[str, str | None]] = defaultdict(dict)
    known_partitions = {f"{ACCOUNT}#{REGION}#{repository}": repository for repository in workload.repositories}
    for claim in harness.ledger_claims():
        repository = known_partitions.get(claim["pk"])
        if repository is None:
            verdict.mismatches.append(f"ledger: claim in an unknown partition {claim['pk']!r} for {claim['tag']}")
            continue
        claims_by_repository[repository][claim["tag"]] = claim["digest"]
    for repository in workload.repositories:
        if repository in failing:
            continue
        claims = claims_by_repository.get(repository, {})
        for tag, digest in sorted(expectation.claims[repository].items()):
            if tag not in claims:
                verdict.mismatches.append(f"ledger: no claim for {repository}:{tag}")
            elif claims[tag] != digest:
                verdict.mismatches.append(
                    f"ledger: {repository}:{tag} claimed for {named(claims[tag])}, expected {named(digest)}"
                )
        for tag in sorted(set(claims) - set(expectation.claims[repository])):
            verdict.mismatches.append(f"ledger: claim for {repository}:{tag}, which is no release tag")

    # Alerts: at least one per conflicting push (at least once, by design), none for anything else.
    alerted: Counter[tuple[str, str, str]] = Counter(
        (str(v.get("repository-name")), str(v.get("image-tag")), str(v.get("offending-digest")))
        for v in instrumentation.violations
    )
    for (repository, tag), offending in sorted(expectation.violations.items()):
        if repository in failing:
            continue
        count = alerted.get((repository, tag, offending), 0)
        if count == 0:
            verdict.suspects.append((repository, tag))
            verdict.mismatches.append(
                f"no Tag Guard Violation for {repository}:{tag} pushed over by {named(offending)}"
            )
        elif count > 1:
            verdict.notes.append(f"{count} Tag Guard Violation events for {repository}:{tag} (at least once)")
    for (repository, tag, offending), count in sorted(alerted.items()):
        if expectation.violations.get((repository, tag)) != offending:
            verdict.mismatches.append(
                f"unexpected Tag Guard Violation x{count}: {repository}:{tag}, offending {named(offending)}"
            )

    # Nothing lost: every event ended processed or deliberately ignored, in every function.
    for event_id, record in dispatcher.events.items():
        for function in FUNCTIONS:
            endings = dispatcher.endings.get((function, event_id), [])
            if any(ending in {"processed", "ignored"} for ending in endings):
                if "rejected" in endings:
                    verdict.mismatches.append(f"{function} rejected {describe(record.event)}")
                continue
            if record.repository in failing and endings and all(ending == "dead-lettered" for ending in endings):
                continue  # judged with the dead letters below
            verdict.mismatches.append(
                f"{function}: {describe(record.event)} from {record.origin} ended {endings or 'undelivered'}"
            )

    # Dead letters: none, unless --fail-always, and then only for events whose handling met the
    # always-failing call. Not necessarily on every attempt: while one copy of an event is failing
    # through the SDK's retries, a duplicate is refused as in progress, or waits for the
    # repository's lease that copy holds; in Lambda its retries would come minutes later.
    for letter in dispatcher.dead_letters:
        letter["expected"] = (
            letter["repository"] in failing and (letter["function"], letter["event_id"]) in dispatcher.forced_events
        )
        if letter["expected"]:
            continue
        last_error = letter["errors"][-1][:300]
        verdict.mismatches.append(
            f"dead-lettered: {letter['function']} {letter['event']} from {letter['origin']}: {last_error}"
        )
    for stats in dispatcher.stats.values():
        for silent in stats.succeeded_despite_forced:
            verdict.mismatches.append(f"succeeded although {plan.fail_operation} failed on every attempt: {silent}")
    if plan.fail_operation is not None:
        forced = sum(stats.forced_failures for stats in dispatcher.stats.values())
        dead = sum(stats.dead_lettered for stats in dispatcher.stats.values())
        if forced == 0:
            verdict.mismatches.append(f"--fail-always {plan.fail_operation}: no invocation ever called it in scope")
        elif dead == 0:
            verdict.mismatches.append(
                f"--fail-always {plan.fail_operation}: failed {forced} times, no invocation failed"
            )

    rejected = harness.dead_letter_messages(dead_letter_queue_url)
    if rejected:
        verdict.mismatches.append(f"{rejected} event(s) rejected into the dead-letter queue")
    if instrumentation.escaped:
        verdict.mismatches.append(f"requests aimed outside loopback (refused): {sorted(set(instrumentation.escaped))}")
    if instrumentation.outside.calls:
        verdict.notes.append(f"AWS calls outside any invocation: {dict(instrumentation.outside.calls)}")
    return verdict


# --- one run ------------------------------------------------------------------------------------------------


@dataclass
class Options:
    pushes: int = 500
    repositories: int = 20
    concurrency: int = 16
    duplicates: int = 3
    conflicts: int = 0
    prerelease_rate: float = 0.05
    throttle: float = 0.0
    fail_always: str | None = None
    fail_repository: str | None = None
    retry_mode: str | None = None
    compare_retry_modes: bool = False
    retry_delay: float = 5.0
    seed: int = 1
    timeout: float = 600.0
    max_events: int | None = None
    moto: str = "process"
    shared_clients: bool = False
    json_path: Path | None = None
    quiet: bool = False


def client_config(mode: str | None) -> Config:
    """The functions' client Config from clients.py, with another retry mode when asked.

    Always a copy: botocore rewrites a Config's ``retries`` dict in place when it builds a client
    (``max_attempts``, which counts retries, becomes ``total_max_attempts``, which counts attempts).
    """
    from ecr_automation.adapters.clients import DEFAULT_CLIENT_CONFIG  # noqa: PLC0415

    retries = dict(DEFAULT_CLIENT_CONFIG.retries or {})
    if mode is not None:
        retries["mode"] = mode
    return DEFAULT_CLIENT_CONFIG.merge(Config(retries=retries))


def describe_retries(config: Config) -> tuple[str, int | None]:
    """The retry mode and the most attempts one call makes, first try included (before any client exists)."""
    retries = dict(config.retries or {})
    if "total_max_attempts" in retries:
        return str(retries.get("mode", "legacy")), int(retries["total_max_attempts"])
    if "max_attempts" in retries:
        return str(retries.get("mode", "legacy")), int(retries["max_attempts"]) + 1
    return str(retries.get("mode", "legacy")), None


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def run_once(options: Options, endpoint_url: str, retry_mode: str | None, deadline: float) -> dict[str, Any]:
    """Seed, push, deliver, check: one run of the workload against a freshly reset moto server."""
    from ecr_automation.config import settings_from_environment  # noqa: PLC0415 - the package may be mid-edit
    from ecr_automation.dependencies import use_dependencies  # noqa: PLC0415
    from ecr_automation.handlers import retag, tag_guard  # noqa: PLC0415

    progress = None if options.quiet else sys.stderr
    rng = random.Random(options.seed)
    workload = generate_workload(
        rng,
        pushes=options.pushes,
        repositories=options.repositories,
        conflicts=options.conflicts,
        prerelease_rate=options.prerelease_rate,
    )
    expectation = expected_state(workload)
    plan = FaultPlan(
        throttle_rate=options.throttle,
        fail_operation=options.fail_always,
        fail_repository=None
        if options.fail_repository == "*"
        else (options.fail_repository or workload.repositories[0]),
    )

    reset_moto(endpoint_url)
    harness = Harness(endpoint_url)
    dead_letter_queue_url = harness.create_resources(workload)
    push_started = time.monotonic()
    events = harness.push_all(workload.pushes, rng)
    push_seconds = time.monotonic() - push_started

    config = client_config(retry_mode)
    mode, max_attempts = describe_retries(config)
    instrumentation = Instrumentation(plan, seed=options.seed + 1)
    dispatcher = Dispatcher(
        {GUARD: tag_guard.lambda_handler, RETAG: retag.lambda_handler},
        concurrency=options.concurrency,
        duplicates=options.duplicates,
        retry_delay=options.retry_delay,
        rng=random.Random(options.seed + 2),
        deadline=deadline,
        max_events=options.max_events or 20 * max(1, options.pushes) + 100,
        progress=progress,
    )
    dispatcher.instrumentation = instrumentation
    instrumentation.on_push = lambda function, event: dispatcher.submit(event, f"a write by {function}")
    environment = {
        "AWS_REGION": REGION,
        "TAG_LEDGER_TABLE": LEDGER_TABLE,
        "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
        "DEAD_LETTER_QUEUE_URL": dead_letter_queue_url,
        "RULES_FILE": str(RULES_FILE),
        "EVENT_BUS_NAME": "default",
    }
    sink = TracingSink()
    loggers = [(module.logger, module.logger.log_level) for module in (tag_guard, retag)]
    if progress is not None:
        shown = mode if retry_mode else f"{mode} (clients.py's)"
        print(
            f"run: {len(workload.pushes)} pushes into {len(workload.repositories)} repositories, retry mode {shown}, "
            f"throttle {options.throttle:.0%}, concurrency {options.concurrency}, duplicates {options.duplicates}",
            file=progress,
            flush=True,
        )
    with functions_environment(endpoint_url), contextlib.redirect_stdout(_Discard()), warnings.catch_warnings():
        # Powertools warns on every invocation that added no metric; that is no news here.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        # The functions' logs and metrics go to stdout in Lambda; here they would drown the report.
        for logger, _ in loggers:
            logger.setLevel("CRITICAL")
        clients = instrumented_clients(config, instrumentation, per_worker=not options.shared_clients)
        use_dependencies(bench_dependencies(settings_from_environment(environment), clients, sink))
        settled = False
        try:
            for event, push in events:
                dispatcher.submit(event, "conflicting push" if push.conflicting else "push")
            settled = dispatcher.run()
        finally:
            if settled:
                # Only once no invocation is left running: one that outlived the deadline keeps the
                # instrumented clients, whose before-send refuses anything but loopback.
                use_dependencies(None)
            for logger, level in loggers:
                logger.setLevel(level)

    wall = dispatcher.finished - dispatcher.started
    verdict = Verdict()
    if dispatcher.timed_out:
        verdict.mismatches.append(
            f"timed out: {dispatcher.undelivered()} deliveries still queued; the final state was not checked"
        )
    elif dispatcher.overflowed:
        verdict.mismatches.append(f"more than {len(dispatcher.events)} events: the functions' writes did not settle")
    else:
        verdict = check_final_state(
            harness, workload, expectation, dispatcher, instrumentation, plan, dead_letter_queue_url
        )
        for repository, tag in list(dict.fromkeys(verdict.suspects))[:5]:
            verdict.evidence[f"{repository}:{tag}"] = evidence_for(repository, tag, dispatcher, sink)
    return build_report(
        options, workload, dispatcher, instrumentation, plan, (mode, max_attempts), verdict, wall, push_seconds, sink
    )


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def build_report(
    options: Options,
    workload: Workload,
    dispatcher: Dispatcher,
    instrumentation: Instrumentation,
    plan: FaultPlan,
    retries: tuple[str, int | None],
    verdict: Verdict,
    wall: float,
    push_seconds: float,
    sink: Any,
) -> dict[str, Any]:
    origins = Counter(
        "push"
        if record.origin == "push"
        else "conflicting push"
        if record.origin.startswith("conflicting")
        else "feedback"
        for record in dispatcher.events.values()
    )
    distinct = len(dispatcher.events)
    functions: dict[str, Any] = {}
    for function, stats in dispatcher.stats.items():
        operations = {}
        for operation in sorted(set(stats.calls) | set(stats.attempts)):
            calls, attempts = stats.calls[operation], stats.attempts[operation]
            operations[operation] = {
                "calls": calls,
                "per_event": round(calls / distinct, 3) if distinct else 0.0,
                "per_invocation": round(calls / stats.invocations, 3) if stats.invocations else 0.0,
                "attempts": attempts,
                "retries": attempts - calls,
            }
        functions[function] = {
            "deliveries": stats.deliveries,
            "invocations": stats.invocations,
            "succeeded": stats.succeeded,
            "failed_attempts": stats.failed_attempts,
            "retried_then_succeeded": stats.retried,
            "dead_lettered": stats.dead_lettered,
            "statuses": dict(stats.statuses),
            "results": dict(stats.results),
            "errors": dict(stats.errors),
            "latency_ms": {
                name: round(percentile(stats.latencies, fraction) * 1000, 1)
                for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
            "aws_calls": operations,
            "aws_calls_per_event": round(sum(stats.calls.values()) / distinct, 2) if distinct else 0.0,
            "aws_errors_after_retries": dict(stats.call_errors),
            "throttles_injected": dict(stats.throttles),
            "forced_failures": stats.forced_failures,
            "succeeded_despite_forced_failure": len(stats.succeeded_despite_forced),
        }
    invocations = sum(stats.invocations for stats in dispatcher.stats.values())
    calls = sum(sum(stats.calls.values()) for stats in dispatcher.stats.values())
    attempts = sum(sum(stats.attempts.values()) for stats in dispatcher.stats.values())
    return {
        "retry_mode": retries[0],
        "max_attempts_per_call": retries[1],
        "workload": {
            "seed": options.seed,
            "repositories": len(workload.repositories),
            "releases": len(workload.releases),
            "prereleases": sum(1 for release in workload.releases if release.prerelease),
            "conflicts": sum(1 for push in workload.pushes if push.conflicting),
            "concurrency": options.concurrency,
            "duplicates": options.duplicates,
            "clients": "shared" if options.shared_clients else "per worker",
            "throttle_rate": plan.throttle_rate,
            "fail_always": plan.fail_operation,
            "fail_repository": plan.fail_repository if plan.fail_operation else None,
        },
        "events": {
            "distinct": distinct,
            "pushes": origins["push"],
            "conflicting_pushes": origins["conflicting push"],
            "feedback": origins["feedback"],
            "deliveries": sum(stats.deliveries for stats in dispatcher.stats.values()),
        },
        "push_seconds": round(push_seconds, 2),
        "wall_seconds": round(wall, 2),
        "invocations": invocations,
        "throughput_per_second": round(invocations / wall, 1) if wall > 0 else 0.0,
        "functions": functions,
        "aws_calls": calls,
        "aws_attempts": attempts,
        "throttles_injected": sum(sum(stats.throttles.values()) for stats in dispatcher.stats.values()),
        "retries_observed": attempts - calls,
        "forced_failures": sum(stats.forced_failures for stats in dispatcher.stats.values()),
        "failed_attempts": sum(stats.failed_attempts for stats in dispatcher.stats.values()),
        "dead_lettered": sum(stats.dead_lettered for stats in dispatcher.stats.values()),
        "dead_letters": dispatcher.dead_letters[:50],
        "violations_published": len(instrumentation.violations),
        "effects": dict(Counter(record["kind"] for record in sink.records)),
        "timed_out": dispatcher.timed_out,
        "verdict": {
            "ok": verdict.ok,
            "mismatches": verdict.mismatches,
            "notes": verdict.notes,
            "skipped_repositories": verdict.skipped_repositories,
            "evidence": verdict.evidence,
        },
    }


# --- the report, for people -----------------------------------------------------------------------------


def format_run(run: dict[str, Any]) -> str:
    workload, events = run["workload"], run["events"]
    title = (
        f"== retry mode {run['retry_mode']} (at most {run['max_attempts_per_call']} attempts per call), "
        f"throttle {workload['throttle_rate']:.0%}"
    )
    if workload["fail_always"]:
        title += f", --fail-always {workload['fail_always']} in {workload['fail_repository'] or 'every repository'}"
    lines = [
        title,
        f"workload: {workload['releases']} releases ({workload['prereleases']} pre-releases) "
        f"in {workload['repositories']} repositories, {workload['conflicts']} conflicting pushes, "
        f"seed {workload['seed']}; concurrency {workload['concurrency']} per function "
        f"(clients {workload['clients']}), each event delivered {workload['duplicates']}x",
        f"events: {events['distinct']} distinct ({events['pushes']} pushes, "
        f"{events['conflicting_pushes']} conflicting, {events['feedback']} caused by the functions' writes), "
        f"{events['deliveries']} deliveries",
        f"wall time {run['wall_seconds']:.1f} s (pushing {run['push_seconds']:.1f} s before), "
        f"{run['invocations']} invocations, {run['throughput_per_second']:.1f} invocations/s",
        "",
        f"{'function':<18}{'deliveries':>11}{'invocations':>12}{'ok':>7}{'failed':>8}{'retried':>8}{'dead':>6}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'calls/event':>12}",
    ]
    for function, stats in run["functions"].items():
        latency = stats["latency_ms"]
        lines.append(
            f"{function:<18}{stats['deliveries']:>11}{stats['invocations']:>12}{stats['succeeded']:>7}"
            f"{stats['failed_attempts']:>8}{stats['retried_then_succeeded']:>8}{stats['dead_lettered']:>6}"
            f"{latency['p50']:>9.1f}{latency['p95']:>9.1f}{latency['p99']:>9.1f}{stats['aws_calls_per_event']:>12.2f}"
        )
    lines.append("")
    lines.append(f"{'AWS calls':<18}{'operation':<28}{'calls':>8}{'per event':>11}{'attempts':>10}{'retries':>9}")
    for function, stats in run["functions"].items():
        for operation, counts in stats["aws_calls"].items():
            lines.append(
                f"{function:<18}{operation:<28}{counts['calls']:>8}{counts['per_event']:>11.3f}"
                f"{counts['attempts']:>10}{counts['retries']:>9}"
            )
    lines.append("")
    lines.append(
        f"throttles injected {run['throttles_injected']}, retries observed {run['retries_observed']}, "
        f"forced failures {run['forced_failures']}, failed invocations {run['failed_attempts']}, "
        f"dead-lettered {run['dead_lettered']}, violations published {run['violations_published']}"
    )
    for function, stats in run["functions"].items():
        if stats["errors"] or stats["aws_errors_after_retries"]:
            after_retries = stats["aws_errors_after_retries"]
            lines.append(f"{function} errors: invocations {stats['errors']}; AWS after retries {after_retries}")
        lines.append(f"{function} outcomes: {stats['statuses']} {stats['results']}")
    verdict = run["verdict"]
    if verdict["skipped_repositories"]:
        lines.append(f"final state not checked in {verdict['skipped_repositories']} (--fail-always)")
    for note in verdict["notes"][:20]:
        lines.append(f"note: {note}")
    if len(verdict["notes"]) > 20:
        lines.append(f"note: ... and {len(verdict['notes']) - 20} more")
    count = len(verdict["mismatches"])
    lines.append("verdict: OK" if verdict["ok"] else f"verdict: FAILED, {count} mismatch(es)")
    for mismatch in verdict["mismatches"][:60]:
        lines.append(f"  MISMATCH {mismatch}")
    if len(verdict["mismatches"]) > 60:
        lines.append(f"  ... and {len(verdict['mismatches']) - 60} more (all of them in --json)")
    for subject, history in verdict["evidence"].items():
        lines.append(f"  what happened to {subject}, by event time:")
        for entry in history:
            lines.append(f"    {entry['time']} {entry['event']} from {entry['origin']}")
            for outcome in entry["outcomes"]:
                lines.append(f"      {outcome['function']}: {outcome['outcome'][:160]}")
            for effect in entry["effects"]:
                shown = {key: value for key, value in effect.items() if key not in {"event_id", "repository"}}
                lines.append(f"      effect {json.dumps(shown, default=str)[:160]}")
    return "\n".join(lines)


def format_comparison(runs: list[dict[str, Any]]) -> str:
    lines = [
        "== retry modes compared (same workload and seed; latencies in ms)",
        f"{'mode':<10}{'wall s':>8}{'inv/s':>8}{'guard p50':>11}{'guard p95':>11}{'retag p50':>11}{'retag p95':>11}"
        f"{'retag p99':>11}{'throttles':>11}{'retries':>9}{'failed':>8}{'dead':>6}  verdict",
    ]
    for run in runs:
        guard, retag_latency = run["functions"][GUARD]["latency_ms"], run["functions"][RETAG]["latency_ms"]
        lines.append(
            f"{run['retry_mode']:<10}{run['wall_seconds']:>8.1f}{run['throughput_per_second']:>8.1f}"
            f"{guard['p50']:>11.1f}{guard['p95']:>11.1f}{retag_latency['p50']:>11.1f}{retag_latency['p95']:>11.1f}"
            f"{retag_latency['p99']:>11.1f}{run['throttles_injected']:>11}{run['retries_observed']:>9}"
            f"{run['failed_attempts']:>8}{run['dead_lettered']:>6}  {'OK' if run['verdict']['ok'] else 'FAILED'}"
        )
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------------------


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/load.py",
        description="Load and fault harness for the tag guard and retag functions (bench/README.md).",
    )
    parser.add_argument("--pushes", type=int, default=500, help="release pushes (default 500)")
    parser.add_argument("--repositories", type=int, default=20, help="repositories (default 20)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent invocations per function (default 16)")
    parser.add_argument("--duplicates", type=int, default=3, help="deliveries of every event (default 3)")
    parser.add_argument("--conflicts", type=int, default=0, help="protected tags pushed again with another image")
    parser.add_argument("--prereleases", type=float, default=0.05, help="fraction of releases that are pre-releases")
    parser.add_argument("--throttle", type=float, default=0.0, help="fraction of ECR/DynamoDB requests throttled")
    parser.add_argument("--fail-always", metavar="OPERATION", help="an API operation (e.g. PutImage) that always fails")
    parser.add_argument(
        "--fail-repository", metavar="NAME", help="where --fail-always applies: a repository (default the first), or *"
    )
    parser.add_argument("--retry-mode", choices=["standard", "adaptive"], help="default: what clients.py configures")
    parser.add_argument("--compare-retry-modes", action="store_true", help="run with standard, then adaptive")
    parser.add_argument(
        "--retry-delay", type=float, default=5.0, help="seconds before a failed invocation's first retry (default 5)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for everything (default 600)")
    parser.add_argument("--max-events", type=int, help="stop if the functions' writes cause more events than this")
    parser.add_argument("--moto", choices=["process", "inprocess"], default="process", help="where moto runs")
    parser.add_argument(
        "--shared-clients", action="store_true", help="one client set for all workers (default: one per worker)"
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the report as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    namespace = parser.parse_args(argv)
    options = Options(
        pushes=namespace.pushes,
        repositories=namespace.repositories,
        concurrency=namespace.concurrency,
        duplicates=namespace.duplicates,
        conflicts=namespace.conflicts,
        prerelease_rate=namespace.prereleases,
        throttle=namespace.throttle,
        fail_always=namespace.fail_always,
        fail_repository=namespace.fail_repository,
        retry_mode=namespace.retry_mode,
        compare_retry_modes=namespace.compare_retry_modes,
        retry_delay=namespace.retry_delay,
        seed=namespace.seed,
        timeout=namespace.timeout,
        max_events=namespace.max_events,
        moto=namespace.moto,
        shared_clients=namespace.shared_clients,
        json_path=namespace.json_path,
        quiet=namespace.quiet,
    )
    problems = [
        message
        for failed, message in (
            (options.pushes < 1 or options.repositories < 1, "--pushes and --repositories must be at least 1"),
            (options.concurrency < 1 or options.duplicates < 1, "--concurrency and --duplicates must be at least 1"),
            (not 0 <= options.throttle < 1, "--throttle is a fraction in [0, 1)"),
            (not 0 <= options.prerelease_rate <= 1, "--prereleases is a fraction in [0, 1]"),
            (options.conflicts < 0 or options.conflicts > options.pushes, "--conflicts: 0 to --pushes"),
            (options.timeout <= 0, "--timeout must be positive"),
            (options.retry_delay < 0, "--retry-delay cannot be negative"),
            (options.compare_retry_modes and options.retry_mode is not None, "--compare-retry-modes sets the mode"),
        )
        if failed
    ]
    if problems:
        parser.error("; ".join(problems))
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    started = time.monotonic()
    try:
        import ecr_automation.handlers.retag  # noqa: PLC0415 - fail early and clearly
        import ecr_automation.handlers.tag_guard  # noqa: F401, PLC0415
    except ImportError as error:
        print(f"bench: the package does not import: {error}", file=sys.stderr)
        return 2
    modes: list[str | None] = ["standard", "adaptive"] if options.compare_retry_modes else [options.retry_mode]
    server: MotoProcess | MotoInProcess = MotoProcess() if options.moto == "process" else MotoInProcess()
    runs: list[dict[str, Any]] = []
    try:
        for index, mode in enumerate(modes):
            # Each run gets an equal share of what is left of the time budget.
            remaining = options.timeout - (time.monotonic() - started)
            deadline = time.monotonic() + remaining / (len(modes) - index)
            runs.append(run_once(options, server.endpoint_url, mode, deadline))
            print(format_run(runs[-1]), flush=True)
            print(flush=True)
    finally:
        server.stop()
    if len(runs) > 1:
        print(format_comparison(runs), flush=True)
    ok = all(run["verdict"]["ok"] for run in runs)
    if options.json_path is not None:
        report = {"ok": ok, "runs": runs, "seconds": round(time.monotonic() - started, 1)}
        options.json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
