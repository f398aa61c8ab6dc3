"""Retag end to end against a moto server over HTTP: real EcrRegistry, real TagLedger, AWS calls counted."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.adapters.ecr import EcrRegistry
from ecr_automation.adapters.ledger import LeaseLostError, LeaseTimeoutError, TagLedger
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import retag as retag_handler
from ecr_automation.local.runner import LambdaContext
from ecr_automation.logic.ownership import ClaimAcceptance, Ownership
from ecr_automation.logic.retag import Retagger, RetagResult
from ecr_automation.models.domain import MANIFEST_MEDIA_TYPES, RepositoryRef, short_digest
from ecr_automation.models.effects import CollectingSink
from ecr_automation.models.events.image_action import ImageActionEvent
from ecr_automation.rules import AliasRule, GuardRule, RetagRule, Rules
from tests.support import builders
from tests.support.builders import OCI_INDEX, OCI_MANIFEST, digest_of, image_manifest, index_manifest
from tests.support.fakes import FakeLedger
from tests.support.moto_server import MotoServer

ACCOUNT, REGION = "123456789012", "us-east-1"
RULES = Rules(
    guard=[GuardRule(mutable=["^latest$", "^quarantine-"])],
    retag=[RetagRule(digest_tag="sha-{short_digest}")],
)
# Tests that expect errors must not have boto3 retry moto's answers.
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


def push_event(repository: str, tag: str | None, digest: str, event_id: str) -> dict[str, Any]:
    return builders.image_action("PUSH", tag, digest, event_id=event_id, repository=repository)


@pytest.fixture
def moto_endpoint(aws: MotoServer) -> str:
    return aws.endpoint_url  # the session's server, reset for this test


@dataclass
class RetagStack:
    endpoint: str
    clients: AwsClients
    sink: CollectingSink
    registry: EcrRegistry
    ledger: TagLedger
    calls: Counter[str] = field(default_factory=Counter)

    @property
    def ecr(self) -> Any:
        return self.clients.client("ecr", REGION)

    def create_repository(self, name: str, mutability: str = "MUTABLE") -> None:
        self.ecr.create_repository(repositoryName=name, imageTagMutability=mutability)

    def put(self, repository: str, body: str, media_type: str, tag: str | None = None) -> str:
        """What a client push does; moto needs the digest given, or it invents its own."""
        digest = digest_of(body)
        self.ecr.put_image(
            repositoryName=repository,
            imageManifest=body,
            imageManifestMediaType=media_type,
            imageDigest=digest,
            **({"imageTag": tag} if tag else {}),
        )
        return digest

    def release(self, repository: str, seed: str, tag: str, retagger: Retagger) -> str:
        digest = self.put(repository, image_manifest(seed), OCI_MANIFEST, tag)
        retagger.handle(ImageActionEvent.model_validate(push_event(repository, tag, digest, f"push-{tag}")))
        return digest

    def retagger(self, rules: Rules = RULES) -> Retagger:
        acceptance = ClaimAcceptance(rules, Ownership(self.ledger, self.registry))
        return Retagger(rules, self.registry, self.ledger, acceptance)

    def tags(self, repository: str) -> dict[str, str]:
        images = self.ecr.list_images(repositoryName=repository, filter={"tagStatus": "TAGGED"})["imageIds"]
        return {image["imageTag"]: image["imageDigest"] for image in images}

    def manifest_by_tag(self, repository: str, tag: str) -> tuple[str, str, str]:
        image = self.ecr.batch_get_image(
            repositoryName=repository, imageIds=[{"imageTag": tag}], acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES)
        )["images"][0]
        return image["imageManifest"], image["imageManifestMediaType"], image["imageId"]["imageDigest"]

    def count_calls(self) -> Counter[str]:
        self.calls.clear()
        return self.calls


@pytest.fixture
def stack(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RetagStack]:
    for name, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    clients = AwsClients(session=boto3.Session(), config=NO_RETRIES)
    builders.create_table_like(clients.client("dynamodb", REGION), "TagLedgerTable", "ledger")
    sink = CollectingSink()
    stack = RetagStack(
        moto_endpoint, clients, sink, EcrRegistry(clients, sink), TagLedger(clients, "ledger", REGION, sink)
    )

    def count(event_name: str, **_: Any) -> None:
        stack.calls[event_name.rsplit(".", 1)[-1]] += 1

    stack.ecr.meta.events.register("before-call.ecr.*", count)
    yield stack


def test_single_arch_image_is_retagged_with_unchanged_bytes_and_digest(stack: RetagStack) -> None:
    stack.create_repository("team/web")
    body = image_manifest("one")
    digest = stack.put("team/web", body, OCI_MANIFEST, "v1.2.3")

    outcome = stack.retagger().handle(ImageActionEvent.model_validate(push_event("team/web", "v1.2.3", digest, "e-1")))

    sha_tag = f"sha-{short_digest(digest)}"
    assert outcome.result is RetagResult.RETAGGED
    assert stack.tags("team/web") == dict.fromkeys(["v1.2.3", "v1.2", "v1", "latest", sha_tag], digest)
    for tag in ["v1.2", "v1", "latest", sha_tag]:
        assert stack.manifest_by_tag("team/web", tag) == (body, OCI_MANIFEST, digest)
    assert [effect.fields["tag"] for effect in stack.sink.effects if effect.kind == "tag_retagged"] == outcome.written


def test_multi_arch_index_stays_an_index_with_the_same_digest(stack: RetagStack) -> None:
    stack.create_repository("team/multi")
    children = [("amd64", image_manifest("multi", "amd64")), ("arm64", image_manifest("multi", "arm64"))]
    for _, child in children:
        stack.put("team/multi", child, OCI_MANIFEST)  # pushed by digest first, as buildx does
    index = index_manifest(children)
    digest = stack.put("team/multi", index, OCI_INDEX, "v2.0.0")

    outcome = stack.retagger().handle(
        ImageActionEvent.model_validate(push_event("team/multi", "v2.0.0", digest, "e-1"))
    )

    assert outcome.written == ["v2.0", "v2", "latest", f"sha-{short_digest(digest)}"]
    for tag in outcome.written:
        manifest, media_type, tagged_digest = stack.manifest_by_tag("team/multi", tag)
        assert (manifest, media_type, tagged_digest) == (index, OCI_INDEX, digest)
        assert digest_of(manifest) == digest
    # The platform manifests stay untagged children: retag does not touch them.
    assert set(stack.tags("team/multi").values()) == {digest}


def test_aws_calls_per_push_are_counted_and_a_converged_run_writes_nothing(stack: RetagStack) -> None:
    stack.create_repository("team/web")
    retagger = stack.retagger()
    digest = stack.put("team/web", image_manifest("one"), OCI_MANIFEST, "v1.2.3")
    event = ImageActionEvent.model_validate(push_event("team/web", "v1.2.3", digest, "e-1"))

    calls = stack.count_calls()
    first = retagger.handle(event)
    # One BatchGetImage for the image and every tag it wants, one PutImage per tag.
    assert calls == {"BatchGetImage": 1, "PutImage": 4}

    calls = stack.count_calls()
    for tag in first.written:  # the PUSH events caused by retag's own PutImage calls
        echo = retagger.handle(ImageActionEvent.model_validate(push_event("team/web", tag, digest, f"echo-{tag}")))
        assert echo.result is RetagResult.UNCHANGED
    assert calls == {"BatchGetImage": len(first.written)}

    calls = stack.count_calls()
    newer = stack.put("team/web", image_manifest("two"), OCI_MANIFEST, "v1.3.0")
    calls.clear()
    second = retagger.handle(ImageActionEvent.model_validate(push_event("team/web", "v1.3.0", newer, "e-2")))
    assert second.written == ["v1.3", "v1", "latest", f"sha-{short_digest(newer)}"]
    # v1 and latest point at the same older image: its tags are read once.
    assert calls == {"BatchGetImage": 1, "DescribeImages": 1, "PutImage": 4}


def test_a_replayed_event_writes_nothing(stack: RetagStack) -> None:
    stack.create_repository("team/web")
    retagger = stack.retagger()
    digest = stack.put("team/web", image_manifest("one"), OCI_MANIFEST, "v1.0.0")
    event = ImageActionEvent.model_validate(push_event("team/web", "v1.0.0", digest, "e-1"))
    retagger.handle(event)
    before = stack.tags("team/web")

    calls = stack.count_calls()
    replay = retagger.handle(event)

    assert replay.result is RetagResult.UNCHANGED
    assert calls == {"BatchGetImage": 1}
    assert stack.tags("team/web") == before


def test_out_of_order_releases_leave_the_major_alias_and_latest_on_the_newest(stack: RetagStack) -> None:
    stack.create_repository("team/web")
    retagger = stack.retagger()
    stack.release("team/web", "a", "v1.9.0", retagger)
    newest = stack.release("team/web", "b", "v1.10.0", retagger)
    patch = stack.release("team/web", "c", "v1.9.5", retagger)

    tags = stack.tags("team/web")
    assert tags["v1"] == tags["latest"] == tags["v1.10"] == newest
    assert tags["v1.9"] == patch


def test_a_push_the_guard_rejected_is_not_acted_on(stack: RetagStack) -> None:
    stack.create_repository("team/web")
    retagger = stack.retagger()
    original = stack.release("team/web", "original", "v1.0.0", retagger)
    impostor = stack.put("team/web", image_manifest("impostor"), OCI_MANIFEST, "v1.0.0")

    calls = stack.count_calls()
    outcome = retagger.handle(ImageActionEvent.model_validate(push_event("team/web", "v1.0.0", impostor, "e-bad")))

    assert outcome.result is RetagResult.REFUSED
    assert calls == {}
    assert stack.tags("team/web")["latest"] == original


def test_an_immutable_repository_refuses_moves_and_is_reported(stack: RetagStack) -> None:
    stack.create_repository("team/frozen", mutability="IMMUTABLE")
    retagger = stack.retagger()
    old = stack.release("team/frozen", "old", "v1.0.0", retagger)
    new = stack.put("team/frozen", image_manifest("new"), OCI_MANIFEST, "v1.1.0")

    outcome = retagger.handle(ImageActionEvent.model_validate(push_event("team/frozen", "v1.1.0", new, "e-2")))

    # moto answers ImageAlreadyExistsException where ECR answers ImageTagAlreadyExistsException.
    assert outcome.written == ["v1.1", f"sha-{short_digest(new)}"]
    assert [skip.tag for skip in outcome.refused] == ["v1", "latest"]
    tags = stack.tags("team/frozen")
    assert tags["v1"] == tags["latest"] == old


class _StubbedClients(AwsClients):
    def __init__(self, ecr: Any) -> None:
        super().__init__()
        self._ecr = ecr

    def client(self, service: str, region: str) -> Any:
        assert (service, region) == ("ecr", REGION)
        return self._ecr


def test_real_ecrs_tag_already_exists_error_is_reported_not_crashed_on() -> None:
    # Given real ECR's answers, recorded with Stubber: only "latest" would move, and ECR refuses.
    ecr = boto3.client("ecr", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    repository = RepositoryRef(ACCOUNT, REGION, "team/frozen")
    body = image_manifest("new")
    old, new = digest_of(image_manifest("old")), digest_of(body)
    scope = {"registryId": ACCOUNT, "repositoryName": repository.name}
    stubber = Stubber(ecr)
    stubber.add_response(
        "batch_get_image",
        {
            "images": [
                {"imageId": {"imageDigest": new}, "imageManifest": body, "imageManifestMediaType": OCI_MANIFEST},
                {"imageId": {"imageDigest": old, "imageTag": "latest"}, "imageManifest": "{}"},
                {"imageId": {"imageDigest": new, "imageTag": "v1.1.0"}, "imageManifest": body},
            ],
            "failures": [],
        },
        {
            **scope,
            "imageIds": [{"imageDigest": new}, {"imageTag": "latest"}, {"imageTag": "v1.1.0"}],
            "acceptedMediaTypes": list(MANIFEST_MEDIA_TYPES),
        },
    )
    stubber.add_response(
        "describe_images",
        {"imageDetails": [{"imageDigest": old, "imageTags": ["latest", "v1.0.0"]}]},
        {**scope, "imageIds": [{"imageDigest": old}]},
    )
    stubber.add_client_error(
        "put_image",
        service_error_code="ImageTagAlreadyExistsException",
        service_message="The image tag 'latest' already exists in the repository and cannot be overwritten",
        http_status_code=400,
        expected_params={
            **scope,
            "imageManifest": body,
            "imageManifestMediaType": OCI_MANIFEST,
            "imageTag": "latest",
            "imageDigest": new,
        },
    )
    sink = CollectingSink()
    rules = Rules(retag=[RetagRule(aliases=AliasRule(minor=False, major=False))])

    ledger = FakeLedger()  # no guard rule: no claim may be made, only the lease on the floating tags
    registry = EcrRegistry(_StubbedClients(ecr), sink)
    with stubber:
        outcome = Retagger(rules, registry, ledger, ClaimAcceptance(rules, Ownership(ledger, registry))).handle(
            ImageActionEvent.model_validate(push_event(repository.name, "v1.1.0", new, "e-1"))
        )

    stubber.assert_no_pending_responses()
    assert ledger.claims_by_tag == {} and ledger.leases_taken == ["floating-tags"]
    assert outcome.result is RetagResult.UNCHANGED
    assert [(skip.tag, skip.reason) for skip in outcome.refused] == [
        ("latest", "the repository refuses to move it (tag immutability)")
    ]
    assert sink.kinds() == ["tag_write_refused"]


def test_the_handler_counts_tags_written_and_skipped(
    stack: RetagStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the bundled rules file and the environment the template gives RetagFunction
    monkeypatch.setenv("TAG_LEDGER_TABLE", "ledger")
    monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    monkeypatch.delenv("RULES_FILE", raising=False)
    stack.create_repository("team/web")
    digest = stack.put("team/web", image_manifest("one"), OCI_MANIFEST, "v1.2.3")
    use_dependencies(Dependencies(settings_from_environment(), clients=stack.clients, sink=stack.sink))
    try:
        # When the push and then its echo are delivered
        result = retag_handler.lambda_handler(
            push_event("team/web", "v1.2.3", digest, "e-1"),
            LambdaContext("RetagFunction"),
        )
        echo = retag_handler.lambda_handler(
            push_event("team/web", "latest", digest, "e-2"),
            LambdaContext("RetagFunction"),
        )
    finally:
        use_dependencies(None)

    # Then
    assert result["status"] == "processed" and result["result"] == "retagged"
    assert result["written"] == ["v1.2", "v1", "latest", f"sha-{short_digest(digest)}"]
    assert echo["result"] == "unchanged" and echo["written"] == []
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metrics[0]["TagsWritten"] == [4.0] and "TagsSkipped" not in metrics[0]
    assert metrics[1]["TagsSkipped"] == [1.0] and "TagsWritten" not in metrics[1]


def test_releases_handled_at_the_same_instant_leave_the_aliases_on_the_newest(stack: RetagStack) -> None:
    stack.create_repository("team/web")
    retagger = stack.retagger()
    versions = [f"v1.{minor}.0" for minor in range(8)]
    digests = {version: stack.put("team/web", image_manifest(version), OCI_MANIFEST, version) for version in versions}
    events = [ImageActionEvent.model_validate(push_event("team/web", v, d, f"push-{v}")) for v, d in digests.items()]
    barrier = threading.Barrier(len(events))
    errors: list[BaseException] = []

    def handle(event: ImageActionEvent) -> None:
        barrier.wait()
        try:
            retagger.handle(event)
        except BaseException as error:  # surfaced below: a thread's failure must fail the test
            errors.append(error)

    threads = [threading.Thread(target=handle, args=(event,)) for event in reversed(events)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    tags = stack.tags("team/web")
    assert tags["v1"] == tags["latest"] == digests["v1.7.0"]
    assert all(tags[f"v1.{minor}"] == digests[f"v1.{minor}.0"] for minor in range(8))


def test_a_lease_is_exclusive_until_released_or_expired(stack: RetagStack) -> None:
    repository = RepositoryRef(ACCOUNT, REGION, "team/web")
    impatient = TagLedger(stack.clients, "ledger", REGION, stack.sink, lease_wait_seconds=0.3)
    with (
        stack.ledger.hold(repository, "floating-tags", owner="e-1"),
        pytest.raises(LeaseTimeoutError),
        impatient.hold(repository, "floating-tags", owner="e-2"),
    ):
        pass
    with (
        stack.ledger.hold(repository, "floating-tags", owner="e-1"),
        pytest.raises(LeaseTimeoutError),
        impatient.hold(repository, "floating-tags", owner="e-1"),
    ):
        pass  # not even a second copy of the same event gets in: two deliveries never both hold it
    with impatient.hold(repository, "floating-tags", owner="e-2"):
        pass  # released: free again
    brief = TagLedger(stack.clients, "ledger", REGION, stack.sink, lease_seconds=0.05, lease_wait_seconds=0.3)
    with brief.hold(repository, "other", owner="e-3") as lease:
        time.sleep(0.1)
        with impatient.hold(repository, "other", owner="e-4"):
            pass  # the first holder's lease ran out: a crashed holder does not block for long
        with pytest.raises(LeaseLostError):
            lease.check()  # and the first holder, were it still alive, may write nothing more
