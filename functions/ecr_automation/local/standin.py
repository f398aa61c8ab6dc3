"""An in-process AWS stand-in (moto) holding what the template declares, and the world events imply.

``ObservedClients`` hands the functions boto3 clients whose successful PutImage / BatchDeleteImage /
PutEvents calls become EventBridge events again, as they do in AWS.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.local.template import SamTemplate
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.events import REPOSITORY_ARN_PATTERN

LOCAL_ACCOUNT = "123456789012"
LOCAL_REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
    "AWS_REGION": LOCAL_REGION,
}

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

    def __init__(self, on_event: EventCallback, account: str = LOCAL_ACCOUNT) -> None:
        super().__init__()
        self._on_event = on_event
        self._account = account

    def client(self, service: str, region: str) -> Any:
        client = super().client(service, region)
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
                    RepositoryRef(self._account, region, image["repositoryName"]),
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
            repository = context.get("params", {}).get("repositoryName", "")
            for image_id in parsed.get("imageIds", []):
                self._on_event(
                    ecr_image_action(
                        RepositoryRef(self._account, region, repository),
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

    from ecr_automation.local.moto_patches import keep_images_when_tags_move  # noqa: PLC0415

    keep_images_when_tags_move()
    with mock_aws():
        yield


class LocalWorld:
    """Creates the template's tables and queues, and the repositories and images events name."""

    def __init__(self, template: SamTemplate, region: str = LOCAL_REGION, account: str = LOCAL_ACCOUNT) -> None:
        import boto3  # noqa: PLC0415

        self.template = template
        self.region = region
        self.account = account
        # A plain client: seeding the world is not something the functions did, so it emits nothing.
        self._session = boto3.Session(region_name=region)
        self.ecr = self._session.client("ecr")
        self.touched_repositories: set[str] = set()
        self._findings_given: set[str] = set()
        self._physical: dict[str, str] = {}

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
        for logical_id in self.template.resources_of_type("AWS::SQS::Queue"):
            self._physical[logical_id] = sqs.create_queue(QueueName=logical_id)["QueueUrl"]

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
        if attribute == "Arn":
            return f"arn:aws:local:{self.region}:{self.account}:{resource}"
        return f"{resource}.{attribute}"

    def queue_messages(self, logical_id: str) -> list[dict[str, Any]]:
        sqs = self._session.client("sqs")
        url = self._physical[logical_id]
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        return [dict(message) for message in response.get("Messages", [])]

    # -- the world events imply --------------------------------------------------------------
    def ensure_repository(self, name: str) -> None:
        self.touched_repositories.add(name)
        with contextlib.suppress(self.ecr.exceptions.RepositoryAlreadyExistsException):
            self.ecr.create_repository(repositoryName=name)

    def ensure_image(self, repository: str, digest: str, tag: str | None = None) -> None:
        """Make ``repository`` hold ``digest`` (under ``tag``), as a push of it would have."""
        self.ensure_repository(repository)
        manifest = synthetic_manifest(digest)
        kwargs: dict[str, Any] = {"imageTag": tag} if tag else {}
        with contextlib.suppress(self.ecr.exceptions.ImageAlreadyExistsException):  # already there: fine
            self.ecr.put_image(
                repositoryName=repository,
                imageManifest=manifest,
                imageManifestMediaType="application/vnd.oci.image.manifest.v1+json",
                imageDigest=digest,
                **kwargs,
            )

    def delete_tag(self, repository: str, tag: str) -> None:
        self.ensure_repository(repository)
        self.ecr.batch_delete_image(repositoryName=repository, imageIds=[{"imageTag": tag}])

    def apply(self, event: object) -> None:
        """Bring the stand-in to the state an incoming event describes (it reports a past fact)."""
        if not isinstance(event, dict):
            return
        detail = event.get("detail")
        if not isinstance(detail, dict) or event.get("source") not in {"aws.ecr", "aws.inspector2"}:
            return
        repository = detail.get("repository-name")
        digest = detail.get("image-digest")
        if not isinstance(repository, str) or not isinstance(digest, str):
            return
        if match := REPOSITORY_ARN_PATTERN.match(repository):
            repository = match["name"]
        try:
            if event.get("detail-type") == "ECR Image Action" and detail.get("action-type") == "DELETE":
                if isinstance(detail.get("image-tag"), str):
                    self.delete_tag(repository, detail["image-tag"])
                else:  # deleted by digest: the image and all its tags
                    self.ensure_repository(repository)
                    self.ecr.batch_delete_image(repositoryName=repository, imageIds=[{"imageDigest": digest}])
                return
            tags = [detail["image-tag"]] if isinstance(detail.get("image-tag"), str) else detail.get("image-tags") or []
            self.ensure_image(repository, digest)
            for tag in tags:
                self.ensure_image(repository, digest, tag)
            counts = detail.get("finding-severity-counts")
            if isinstance(counts, dict):  # a scan completed: its findings become readable
                if digest not in self._findings_given:
                    self._synthesise_findings(
                        repository, digest, counts, enhanced=event.get("source") == "aws.inspector2"
                    )
                with contextlib.suppress(self.ecr.exceptions.LimitExceededException):
                    self.ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": digest})
        except Exception:  # noqa: S110 - a malformed event is the function's to reject, not the world's
            pass

    def inject_findings(self, results: list[dict[str, Any]]) -> None:
        """Serve these DescribeImageScanFindings responses (matched by digest) instead of synthesised ones."""
        from moto.ecr.models import ecr_backends  # noqa: PLC0415

        ecr_backends[self.account][self.region].scan_finding_results.extend(results)
        self._findings_given.update(str(result.get("imageId", {}).get("imageDigest")) for result in results)

    def _synthesise_findings(self, repository: str, digest: str, counts: dict[str, Any], *, enhanced: bool) -> None:
        """Findings that agree with a scan event's counts, so DescribeImageScanFindings answers like ECR would."""
        findings: list[dict[str, Any]] = []
        for severity, count in counts.items():
            if severity == "TOTAL" or not isinstance(count, int):
                continue
            for number in range(count):
                name = f"CVE-0000-{severity[:4]}{number:03d}"
                if enhanced:
                    findings.append(
                        {
                            "awsAccountId": self.account,
                            "severity": severity,
                            "status": "ACTIVE",
                            "title": name,
                            "type": "PACKAGE_VULNERABILITY",
                            "findingArn": f"arn:aws:inspector2:{self.region}:{self.account}:finding/{name}",
                            "packageVulnerabilityDetails": {"vulnerabilityId": name, "vulnerablePackages": []},
                        }
                    )
                else:
                    findings.append({"name": name, "severity": severity, "description": "simulated", "attributes": []})
        key = "enhancedFindings" if enhanced else "findings"
        self.inject_findings(
            [
                {
                    "registryId": self.account,
                    "repositoryName": repository,
                    "imageId": {"imageDigest": digest},
                    "imageScanStatus": {"status": "COMPLETE", "description": "simulated by ecr-automation"},
                    "imageScanFindings": {
                        key: findings,
                        "findingSeverityCounts": {k: v for k, v in counts.items() if k != "TOTAL"},
                    },
                }
            ]
        )
        with contextlib.suppress(Exception):  # moto refuses a second scan of the same image: fine
            self.ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": digest})

    def state(self) -> dict[str, dict[str, str]]:
        """Every touched repository's tags and the digest each points at."""
        state: dict[str, dict[str, str]] = {}
        for repository in sorted(self.touched_repositories):
            tags: dict[str, str] = {}
            paginator = self.ecr.get_paginator("list_images")
            for page in paginator.paginate(repositoryName=repository, filter={"tagStatus": "TAGGED"}):
                for image_id in page["imageIds"]:
                    tags[image_id["imageTag"]] = image_id["imageDigest"]
            state[repository] = dict(sorted(tags.items()))
        return state


def synthetic_manifest(digest: str) -> str:
    """A small, valid OCI manifest unique to ``digest`` (moto keeps the digest it is given)."""
    config_digest = "sha256:" + hashlib.sha256(digest.encode()).hexdigest()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
            "layers": [],
        },
        separators=(",", ":"),
    )
