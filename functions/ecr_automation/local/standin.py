"""An in-process AWS stand-in (moto) holding what the template declares, and the world events imply.

``ObservedClients`` hands the functions boto3 clients whose successful PutImage / BatchDeleteImage /
PutEvents calls become EventBridge events again, as they do in AWS.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ecr_automation.adapters.clients import AwsClients, MemberAccounts
from ecr_automation.local.template import SamTemplate
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.events.base import REPOSITORY_ARN_PATTERN

if TYPE_CHECKING:
    from ecr_automation.local.registry import LocalRegistry

LOCAL_ACCOUNT = "123456789012"
LOCAL_REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_REGION": LOCAL_REGION,
}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
# The annotation a synthetic manifest carries: its blobs are generated again from this seed.
SYNTHETIC_SEED = "dev.ecr-automation.synthetic-seed"
ACCOUNT_ID = re.compile(r"^\d{12}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")

EventCallback = Callable[[dict[str, Any]], None]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ecr_image_action(repository: RepositoryRef, digest: str, *, action: str, tag: str | None) -> dict[str, Any]:
    """The event ECR emits for a push or delete, as EventBridge delivers it."""
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repository.name,
        "image-digest": digest,
        "action-type": action,
    }
    if tag is not None:
        detail["image-tag"] = tag
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": repository.registry_id,
        "time": now_iso(),
        "region": repository.region,
        "resources": [],
        "detail": detail,
    }


class ObservedClients(AwsClients):
    """Clients whose writes are turned into the events AWS would emit for them."""

    def __init__(
        self, on_event: EventCallback, account: str = LOCAL_ACCOUNT, *, members: MemberAccounts | None = None
    ) -> None:
        super().__init__(members=members)
        self._on_event = on_event
        self._account = account

    def client(self, service: str, region: str) -> Any:
        return self._observed(super().client(service, region), service, region)

    def client_in(self, account: str, service: str, region: str) -> Any:
        """A member account's client (its member role's credentials) is observed like our own."""
        return self._observed(super().client_in(account, service, region), service, region)

    def _observed(self, client: Any, service: str, region: str) -> Any:
        if not getattr(client, "_ecr_automation_observed", False):
            client._ecr_automation_observed = True
            events = client.meta.events
            events.register("before-parameter-build", _remember_params)
            if service == "ecr":
                events.register("after-call.ecr.PutImage", self._after_put_image(region))
                events.register("after-call.ecr.BatchDeleteImage", self._after_batch_delete(region))
            if service == "events":
                events.register("after-call.events.PutEvents", self._after_put_events(region))
        return client

    def _after_put_image(self, region: str) -> Callable[..., None]:
        def emit(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            if http_response.status_code >= 300:
                return
            image = parsed["image"]
            self._on_event(
                ecr_image_action(
                    RepositoryRef(image.get("registryId") or self._account, region, image["repositoryName"]),
                    image["imageId"]["imageDigest"],
                    action="PUSH",
                    tag=context.get("params", {}).get("imageTag"),
                )
            )

        return emit

    def _after_batch_delete(self, region: str) -> Callable[..., None]:
        def emit(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            if http_response.status_code >= 300:
                return
            params = context.get("params", {})
            repository = RepositoryRef(
                params.get("registryId") or self._account, region, params.get("repositoryName", "")
            )
            for image_id in parsed.get("imageIds", []):
                self._on_event(
                    ecr_image_action(
                        repository,
                        image_id.get("imageDigest", ""),
                        action="DELETE",
                        tag=image_id.get("imageTag"),
                    )
                )

        return emit

    def _after_put_events(self, region: str) -> Callable[..., None]:
        def emit(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            if http_response.status_code >= 300:
                return
            for entry in context.get("params", {}).get("Entries", []):
                self._on_event(
                    {
                        "version": "0",
                        "id": str(uuid.uuid4()),
                        "detail-type": entry["DetailType"],
                        "source": entry["Source"],
                        "account": self._account,
                        "time": now_iso(),
                        "region": region,
                        "resources": entry.get("Resources", []),
                        "detail": json.loads(entry["Detail"]),
                    }
                )

        return emit


def _remember_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["params"] = dict(params)


@contextmanager
def embedded_aws() -> Iterator[None]:
    from moto import mock_aws  # noqa: PLC0415 - the local extra, loaded only when asked for

    from ecr_automation.local.moto_patches import make_moto_ecr_faithful  # noqa: PLC0415

    make_moto_ecr_faithful()
    with mock_aws():
        yield


@dataclass(frozen=True)
class RepositorySettings:
    """How a repository treats tags: CreateRepository's ``imageTagMutability`` and its exclusion filters."""

    image_tag_mutability: str = "MUTABLE"
    exclusion_filters: tuple[str, ...] = ()  # WILDCARD filters, the only type ECR has

    def as_parameters(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {"imageTagMutability": self.image_tag_mutability}
        if self.exclusion_filters:
            parameters["imageTagMutabilityExclusionFilters"] = [
                {"filter": pattern, "filterType": "WILDCARD"} for pattern in self.exclusion_filters
            ]
        return parameters


@dataclass(frozen=True)
class RegistryChange:
    """What a push or delete did to the registry: the digest it concerned, or why ECR refused it."""

    digest: str | None
    refusal: str | None = None


class LocalWorld:
    """Creates the template's tables and queues, and the repositories and images events name.

    Repositories live in the account and region their events name (``registryId`` = the event's
    account, a client per region), as they would in a multi-account organisation.
    """

    def __init__(self, template: SamTemplate, region: str = LOCAL_REGION, account: str = LOCAL_ACCOUNT) -> None:
        import boto3  # noqa: PLC0415

        self.template = template
        self.region = region
        self.account = account
        # Plain clients: seeding the world is not something the functions did, so it emits nothing.
        self._session = boto3.Session(region_name=region)
        self._ecr_by_region: dict[str, Any] = {}
        self.ecr = self.ecr_in(region)
        self.touched_repositories: set[RepositoryRef] = set()
        self._applied_events: set[str] = set()
        self._findings_given: set[str] = set()
        self._physical: dict[str, str] = {}
        self._manifests: dict[str, str] = {}
        self._queue_arns: dict[str, str] = {}
        self._max_receives: dict[str, int] = {}
        # Replication: a local registry per ECR registry (account, region), and the images whose bytes they hold.
        self._replicating = False
        self._registries: dict[tuple[str, str], LocalRegistry] = {}
        self._bytes_pushed: set[tuple[str, str, str, str]] = set()  # (account, region, repository, digest)
        # What the stand-in could not do (an image without bytes to replicate); reported as errors.
        self.problems: list[str] = []

    # -- template resources -------------------------------------------------------------------
    def create_template_resources(self) -> None:
        dynamodb = self._session.client("dynamodb")
        for logical_id, properties in self.template.resources_of_type("AWS::DynamoDB::Table").items():
            dynamodb.create_table(
                TableName=logical_id,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=properties["AttributeDefinitions"],
                KeySchema=properties["KeySchema"],
            )
            self._physical[logical_id] = logical_id
        sqs = self._session.client("sqs")
        queues = self.template.resources_of_type("AWS::SQS::Queue")
        for logical_id in queues:
            url = sqs.create_queue(QueueName=logical_id)["QueueUrl"]
            self._physical[logical_id] = url
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self._queue_arns[logical_id] = arn
        for logical_id, properties in queues.items():
            # A redrive policy as the template writes it: SQS moves a message after maxReceiveCount receives.
            policy = properties.get("RedrivePolicy")
            target = _get_att_resource(policy.get("deadLetterTargetArn")) if isinstance(policy, dict) else None
            if isinstance(policy, dict) and target in self._queue_arns:
                max_receives = int(policy.get("maxReceiveCount", 10))
                sqs.set_queue_attributes(
                    QueueUrl=self._physical[logical_id],
                    Attributes={
                        "RedrivePolicy": json.dumps(
                            {"deadLetterTargetArn": self._queue_arns[str(target)], "maxReceiveCount": str(max_receives)}
                        )
                    },
                )
                self._max_receives[logical_id] = max_receives

    def reference(self, name: str) -> str:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::StackName": "ecr-automation-local",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self._physical:
            return self._physical[name]
        defaults = self.template.parameter_defaults()
        if name in defaults:
            return defaults[name]
        return name

    def attribute(self, resource: str, attribute: str) -> str:
        if attribute == "Arn" and resource in self._queue_arns:
            return self._queue_arns[resource]
        if attribute == "Arn":
            return f"arn:aws:local:{self.region}:{self.account}:{resource}"
        return f"{resource}.{attribute}"

    def queue_messages(self, logical_id: str) -> list[dict[str, Any]]:
        sqs = self._session.client("sqs")
        url = self._physical[logical_id]
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        return [dict(message) for message in response.get("Messages", [])]

    # -- the queues functions consume (the runner delivers them like Lambda's SQS event source) --------
    def receive(self, queue: str, count: int) -> list[dict[str, Any]]:
        response = self._session.client("sqs").receive_message(
            QueueUrl=self._physical[queue],
            MaxNumberOfMessages=max(1, min(count, 10)),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        return [dict(message) for message in response.get("Messages", [])]

    def delete_message(self, queue: str, receipt_handle: str) -> None:
        self._session.client("sqs").delete_message(QueueUrl=self._physical[queue], ReceiptHandle=receipt_handle)

    def redeliver(self, queue: str, receipt_handle: str) -> None:
        """Visible again at once (not after the visibility timeout): the run goes on with its next receive."""
        self._session.client("sqs").change_message_visibility(
            QueueUrl=self._physical[queue], ReceiptHandle=receipt_handle, VisibilityTimeout=0
        )

    def queue_arn(self, queue: str) -> str:
        return self._queue_arns[queue]

    def max_receives(self, queue: str) -> int | None:
        """The queue's redrive maxReceiveCount; None when it has no dead-letter queue."""
        return self._max_receives.get(queue)

    def before_batch(self, queue: str, bodies: Sequence[str]) -> None:
        """Replication jobs about to be copied: the registries they name are running, their sources have bytes."""
        if not self._replicating:
            return
        for job in _ecr_jobs(bodies):
            source, destination = job["source"], job["destination"]
            self.registry_for(str(source["account"]), str(source["region"]))
            if destination.get("kind") == "ecr":
                self.registry_for(str(destination["account"]), str(destination["region"]))
            key = (str(source["account"]), str(source["region"]), str(source["repository"]), str(source["digest"]))
            problem = (
                f"{source['repository']}@{source['digest']}: no image bytes to replicate (simulate builds bytes "
                "only for the images it names: a scenario's image names, the demo's images)"
            )
            if key not in self._bytes_pushed and problem not in self.problems:
                self.problems.append(problem)

    def after_batch(self, queue: str, bodies: Sequence[str]) -> None:
        """Jobs the worker finished: ECR's API (moto) shows what its registry (the local one) now holds."""
        if not self._replicating:
            return
        for job in _ecr_jobs(bodies):
            destination, tag = job["destination"], str(job["source"]["tag"])
            if destination.get("kind") != "ecr":
                continue
            repository = RepositoryRef(
                str(destination["account"]), str(destination["region"]), destination["repository"]
            )
            registry = self._registries.get((repository.registry_id, repository.region))
            held = registry.manifest(repository.name, tag) if registry is not None else None
            if held is None:
                continue
            manifest, media_type, digest = held
            self.ensure_repository(repository)
            ecr, named = self._address(repository)
            with contextlib.suppress(ClientError):  # already there, or a tag this repository keeps: fine
                ecr.put_image(
                    **named,
                    imageManifest=manifest.decode(),
                    imageManifestMediaType=media_type,
                    imageDigest=digest,
                    imageTag=tag,
                )

    # -- local registries standing in for ECR's (replication) ----------------------------------------
    def start_replication(self) -> None:
        """Back images with real bytes in local registries; fails at once if ``docker-registry`` is missing."""
        self._replicating = True
        self.registry_for(self.account, self.region)

    def registry_for(self, account: str, region: str) -> LocalRegistry:
        from ecr_automation.adapters.replication import ecr_host  # noqa: PLC0415
        from ecr_automation.local.registry import LocalRegistry  # noqa: PLC0415

        if (account, region) not in self._registries:
            self._registries[(account, region)] = LocalRegistry(ecr_host(account, region))
        return self._registries[(account, region)]

    def registry_environment(self) -> dict[str, str]:
        """What points the functions' copier at the local registries (nothing when not replicating)."""
        from ecr_automation.adapters.replication import ecr_host  # noqa: PLC0415

        if not self._replicating:
            return {}
        overrides = {
            ecr_host(account, region): registry.url for (account, region), registry in self._registries.items()
        }
        return {"REGISTRY_ENDPOINT_OVERRIDES": json.dumps(overrides), "REGISTRY_INSECURE": "true"}

    def close(self) -> None:
        for registry in self._registries.values():
            registry.stop()
        self._registries.clear()

    def _push_bytes(self, repository: RepositoryRef, digest: str, tag: str | None) -> None:
        """The image's real bytes into the repository's registry, when the stand-in built the image."""
        manifest = self._manifests.get(digest)
        if manifest is None or _sha256(manifest.encode()) != digest:
            return  # no bytes have this digest: a job copying it is reported (``before_batch``)
        blobs = synthetic_blobs(manifest)
        if blobs is None:
            return
        registry = self.registry_for(repository.registry_id, repository.region)
        key = (repository.registry_id, repository.region, repository.name, digest)
        if key not in self._bytes_pushed:
            for blob_digest, data in blobs.items():
                registry.push_blob(repository.name, blob_digest, data)
        registry.push_manifest(repository.name, tag or digest, manifest.encode(), OCI_MANIFEST)
        self._bytes_pushed.add(key)

    # -- repositories in any account and region ------------------------------------------------
    def ecr_in(self, region: str) -> Any:
        if region not in self._ecr_by_region:
            self._ecr_by_region[region] = self._session.client("ecr", region_name=region)
        return self._ecr_by_region[region]

    def repository(self, name: str, account: str | None = None, region: str | None = None) -> RepositoryRef:
        return RepositoryRef(account or self.account, region or self.region, name)

    def state_key(self, repository: RepositoryRef) -> str:
        """The plain name in the default account and region (the common case), else ``account/region/name``."""
        if (repository.registry_id, repository.region) == (self.account, self.region):
            return repository.name
        return f"{repository.registry_id}/{repository.region}/{repository.name}"

    def _address(self, repository: RepositoryRef) -> tuple[Any, dict[str, str]]:
        """The client for the repository's region and the parameters naming it in its registry."""
        return self.ecr_in(repository.region), {
            "registryId": repository.registry_id,
            "repositoryName": repository.name,
        }

    def ensure_repository(self, repository: RepositoryRef, settings: RepositorySettings | None = None) -> None:
        """Create the repository if missing; ``settings`` are applied to it even if it exists."""
        self.touched_repositories.add(repository)
        ecr, named = self._address(repository)
        try:
            ecr.create_repository(**named, **(settings or RepositorySettings()).as_parameters())
        except ecr.exceptions.RepositoryAlreadyExistsException:
            if settings is not None:
                ecr.put_image_tag_mutability(**named, **settings.as_parameters())

    def register_manifest(self, manifest: str) -> str:
        """Remember a manifest so images of its digest carry it; returns its digest (sha256 of its bytes)."""
        digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
        self._manifests[digest] = manifest
        return digest

    def tags(self, repository: RepositoryRef) -> dict[str, str]:
        """The repository's tags and the digest each points at."""
        ecr, named = self._address(repository)
        tags: dict[str, str] = {}
        for page in ecr.get_paginator("list_images").paginate(**named, filter={"tagStatus": "TAGGED"}):
            for image_id in page["imageIds"]:
                tags[image_id["imageTag"]] = image_id["imageDigest"]
        return dict(sorted(tags.items()))

    def holds(self, repository: RepositoryRef, digest: str) -> bool:
        ecr, named = self._address(repository)
        try:
            ecr.describe_images(**named, imageIds=[{"imageDigest": digest}])
        except ecr.exceptions.ImageNotFoundException:
            return False
        return True

    def _put_image(self, repository: RepositoryRef, digest: str, tag: str | None, pushed_at: datetime | None) -> None:
        ecr, named = self._address(repository)
        first_push = pushed_at is not None and not self.holds(repository, digest)
        ecr.put_image(
            **named,
            imageManifest=self._manifests.get(digest) or synthetic_manifest(digest),
            imageManifestMediaType=OCI_MANIFEST,
            imageDigest=digest,
            **({"imageTag": tag} if tag else {}),
        )
        if first_push and pushed_at is not None:
            self._backdate(repository, digest, pushed_at)
        if self._replicating:
            self._push_bytes(repository, digest, tag)

    def _backdate(self, repository: RepositoryRef, digest: str, pushed_at: datetime) -> None:
        """ECR's imagePushedAt is the push's time; moto uses the wall clock, so set it to when the push happened."""
        from moto.ecr.models import ecr_backends  # noqa: PLC0415

        held = ecr_backends[repository.registry_id][repository.region].repositories[repository.name].images
        for image in held:
            if image.get_image_digest() == digest:
                image.image_pushed_at = int(pushed_at.timestamp())

    def ensure_image(
        self, repository: RepositoryRef, digest: str, tag: str | None = None, *, pushed_at: datetime | None = None
    ) -> None:
        """Make ``repository`` hold ``digest`` (under ``tag``), as a push of it would have."""
        self.ensure_repository(repository)
        ecr, _ = self._address(repository)
        with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):  # already there: fine
            self._put_image(repository, digest, tag, pushed_at)

    def push(self, repository: RepositoryRef, digest: str, tag: str | None, *, at: datetime) -> RegistryChange:
        """Push as a client would at ``at``: ECR refuses to move a tag its repository keeps immutable."""
        self.ensure_repository(repository)
        if (tag is None and self.holds(repository, digest)) or (
            tag is not None and self.tags(repository).get(tag) == digest
        ):
            return RegistryChange(digest)  # pushing what is already there: accepted, nothing changes
        try:
            self._put_image(repository, digest, tag, at)
        except ClientError as error:
            # moto says ImageAlreadyExistsException where ECR says ImageTagAlreadyExistsException.
            if error.response["Error"]["Code"] not in {"ImageAlreadyExistsException", "ImageTagAlreadyExistsException"}:
                raise
            return RegistryChange(
                digest,
                refusal=f"ImageTagAlreadyExistsException: tag {tag} of {repository.name} cannot be overwritten",
            )
        return RegistryChange(digest)

    def delete(self, repository: RepositoryRef, *, tag: str | None = None, digest: str | None = None) -> RegistryChange:
        """BatchDeleteImage of one tag (the image goes with its last tag) or of one image by digest."""
        self.ensure_repository(repository)
        ecr, named = self._address(repository)
        image_id = {"imageTag": tag} if tag is not None else {"imageDigest": str(digest)}
        response = ecr.batch_delete_image(**named, imageIds=[image_id])
        if failures := response.get("failures"):
            return RegistryChange(digest, refusal=f"{failures[0]['failureCode']}: {failures[0]['failureReason']}")
        return RegistryChange(response["imageIds"][0]["imageDigest"])

    def delete_tag(self, repository: RepositoryRef, tag: str) -> None:
        self.delete(repository, tag=tag)

    def apply(self, event: object) -> None:
        """Bring the stand-in to the state an incoming event describes (it reports a past fact).

        A second delivery of one event (the same id, as EventBridge redelivers it) reports the same change:
        it happened once, so the world is changed once.
        """
        if not isinstance(event, dict):
            return
        event_id = event.get("id")
        if isinstance(event_id, str):
            if event_id in self._applied_events:
                return
            self._applied_events.add(event_id)
        detail = event.get("detail")
        if not isinstance(detail, dict) or event.get("source") not in {"aws.ecr", "aws.inspector2"}:
            return
        name = detail.get("repository-name")
        digest = detail.get("image-digest")
        if not isinstance(name, str) or not isinstance(digest, str):
            return
        account, region = event.get("account"), event.get("region")
        if match := REPOSITORY_ARN_PATTERN.match(name):
            name, account, region = match["name"], match["account"], match["region"]
        repository = self.repository(
            name,
            account if isinstance(account, str) and ACCOUNT_ID.match(account) else None,
            region if isinstance(region, str) and REGION.match(region) else None,
        )
        with contextlib.suppress(Exception):  # a malformed event is the function's to reject, not the world's
            self._apply(event, detail, repository, digest)

    def _apply(self, event: dict[str, Any], detail: dict[str, Any], repository: RepositoryRef, digest: str) -> None:
        if event.get("detail-type") == "ECR Image Action" and detail.get("action-type") == "DELETE":
            tag = detail.get("image-tag")
            # A delete by digest takes the image and all its tags.
            self.delete(repository, **({"tag": tag} if isinstance(tag, str) else {"digest": digest}))
            return
        pushed_at = _event_time(event) if detail.get("action-type") == "PUSH" else None
        tags = [detail["image-tag"]] if isinstance(detail.get("image-tag"), str) else detail.get("image-tags") or []
        self.ensure_image(repository, digest, pushed_at=pushed_at)
        for tag in tags:
            self.ensure_image(repository, digest, tag)
        counts = detail.get("finding-severity-counts")
        if isinstance(counts, dict):  # a scan completed: its findings become readable
            if digest not in self._findings_given:
                self._synthesise_findings(repository, digest, counts, enhanced=event.get("source") == "aws.inspector2")
            ecr, named = self._address(repository)
            with contextlib.suppress(ecr.exceptions.LimitExceededException):
                ecr.start_image_scan(**named, imageId={"imageDigest": digest})

    def inject_findings(self, results: list[dict[str, Any]], region: str | None = None) -> None:
        """Serve these DescribeImageScanFindings responses (matched by digest) instead of synthesised ones."""
        from moto.ecr.models import ecr_backends  # noqa: PLC0415

        for result in results:
            account = str(result.get("registryId") or self.account)
            ecr_backends[account][region or self.region].scan_finding_results.append(as_ecr_answer(result))
        self._findings_given.update(str(result.get("imageId", {}).get("imageDigest")) for result in results)

    def _synthesise_findings(
        self, repository: RepositoryRef, digest: str, counts: dict[str, Any], *, enhanced: bool
    ) -> None:
        """Findings that agree with a scan event's counts, so DescribeImageScanFindings answers like ECR would."""
        findings: list[dict[str, Any]] = []
        for severity, count in counts.items():
            if severity == "TOTAL" or not isinstance(count, int):
                continue
            for number in range(count):
                name = f"CVE-0000-{severity[:4]}{number:03d}"
                arn = f"arn:aws:inspector2:{repository.region}:{repository.registry_id}:finding/{name}"
                if enhanced:
                    findings.append(
                        {
                            "awsAccountId": repository.registry_id,
                            "severity": severity,
                            "status": "ACTIVE",
                            "title": name,
                            "type": "PACKAGE_VULNERABILITY",
                            "findingArn": arn,
                            "packageVulnerabilityDetails": {"vulnerabilityId": name, "vulnerablePackages": []},
                        }
                    )
                else:
                    findings.append({"name": name, "severity": severity, "description": "simulated", "attributes": []})
        key = "enhancedFindings" if enhanced else "findings"
        self.inject_findings(
            [
                {
                    "registryId": repository.registry_id,
                    "repositoryName": repository.name,
                    "imageId": {"imageDigest": digest},
                    "imageScanStatus": {"status": "COMPLETE", "description": "simulated by ecr-automation"},
                    "imageScanFindings": {
                        key: findings,
                        "findingSeverityCounts": {k: v for k, v in counts.items() if k != "TOTAL"},
                    },
                }
            ],
            region=repository.region,
        )
        ecr, named = self._address(repository)
        with contextlib.suppress(Exception):  # moto refuses a second scan of the same image: fine
            ecr.start_image_scan(**named, imageId={"imageDigest": digest})

    def state(self) -> dict[str, dict[str, str]]:
        """Every touched repository's tags and the digest each points at, keyed by ``state_key``."""
        keyed = {self.state_key(repository): repository for repository in self.touched_repositories}
        return {key: self.tags(keyed[key]) for key in sorted(keyed)}


def as_ecr_answer(result: dict[str, Any]) -> dict[str, Any]:
    """A DescribeImageScanFindings response as ECR would give it, from what a user may write.

    Enhanced findings are often copied from Inspector (an ``Inspector2 Finding`` event's detail, or
    ``ListFindings``), which calls the score ``inspectorScore``; ECR calls it ``score`` and drops what
    its API does not have (EPSS among them). A result without a status is a finished scan.
    """
    answer = dict(result)
    findings = dict(answer.get("imageScanFindings") or {})
    enhanced = findings.get("enhancedFindings")
    if isinstance(enhanced, list):
        findings["enhancedFindings"] = [
            {**finding, "score": finding["inspectorScore"]}
            if isinstance(finding, dict) and "inspectorScore" in finding and "score" not in finding
            else finding
            for finding in enhanced
        ]
    answer["imageScanFindings"] = findings
    status = "ACTIVE" if isinstance(enhanced, list) and not findings.get("findings") else "COMPLETE"
    answer.setdefault("imageScanStatus", {"status": status, "description": "served by ecr-automation simulate"})
    return answer


def _get_att_resource(value: object) -> str | None:
    """The resource a ``!GetAtt X.Arn`` names (as the template loader keeps it)."""
    if isinstance(value, dict) and isinstance(value.get("Fn::GetAtt"), list) and value["Fn::GetAtt"]:
        return str(value["Fn::GetAtt"][0])
    return None


def _ecr_jobs(bodies: Sequence[str]) -> list[dict[str, Any]]:
    """The replication jobs among message bodies (anything else is the worker's to reject)."""
    jobs = []
    for body in bodies:
        with contextlib.suppress(ValueError):
            job = json.loads(body)
            if (
                isinstance(job, dict)
                and isinstance(job.get("source"), dict)
                and isinstance(job.get("destination"), dict)
                and {"account", "region", "repository", "digest", "tag"} <= set(job["source"])
                and (
                    job["destination"].get("kind") != "ecr"
                    or {"account", "region", "repository"} <= set(job["destination"])
                )
            ):
                jobs.append(job)
    return jobs


def _event_time(event: dict[str, Any]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(event.get("time")))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _synthetic_layers_and_config(seed: str) -> tuple[list[bytes], bytes]:
    """One or two small layers of seeded random bytes, and an image config naming them (all from ``seed``)."""
    generator = random.Random(f"ecr-automation synthetic image {seed}")  # noqa: S311 - stand-in content, not secrets
    layers = [generator.randbytes(generator.randint(512, 4096)) for _ in range(generator.randint(1, 2))]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [_sha256(layer) for layer in layers]},
            "config": {"Labels": {SYNTHETIC_SEED: seed}},
        },
        separators=(",", ":"),
    ).encode()
    return layers, config


def synthetic_manifest(seed: str) -> str:
    """A small, valid OCI image manifest unique to ``seed``: a config and one or two small layers.

    Its digest is the sha256 of these bytes; the blobs it names are generated again from the seed it
    carries as an annotation (``synthetic_blobs``), so a local registry can hold the whole image.
    (moto keeps whatever digest PutImage is given, so an event's digest need not be this one.)
    """
    layers, config = _synthetic_layers_and_config(seed)
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": _sha256(layer), "size": len(layer)} for layer in layers],
            "annotations": {SYNTHETIC_SEED: seed},
        },
        separators=(",", ":"),
    )


def synthetic_blobs(manifest: str) -> dict[str, bytes] | None:
    """The blobs (by digest) a ``synthetic_manifest`` names; None for any other manifest."""
    try:
        document = json.loads(manifest)
        seed = document["annotations"][SYNTHETIC_SEED]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(seed, str) or synthetic_manifest(seed) != manifest:
        return None
    layers, config = _synthetic_layers_and_config(seed)
    return {_sha256(blob): blob for blob in [config, *layers]}
