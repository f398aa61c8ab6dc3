"""The tag guard and retag handlers against the moto server, and what they left there, for integration tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.handlers import retag as retag_handler
from ecr_automation.handlers import tag_guard
from ecr_automation.local.runner import LambdaContext
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.effects import CollectingSink
from tests.support import builders
from tests.support.moto_server import MotoServer

ACCOUNT, REGION, REPOSITORY = "123456789012", "us-east-1", "team/web"
REPO = RepositoryRef(ACCOUNT, REGION, REPOSITORY)
LEDGER_TABLE, VIOLATIONS_QUEUE = "ledger", "violations"


@dataclass
class GuardStack:
    aws: MotoServer
    sink: CollectingSink
    manifests: dict[str, str] = field(default_factory=dict)

    @property
    def ecr(self) -> Any:
        return self.aws.client("ecr")

    def push(self, seed: str, *tags: str) -> str:
        """What `docker push` does to the registry: the image lands, each tag moves to it."""
        body = builders.image_manifest(seed)
        digest = builders.digest_of(body)
        self.manifests[digest] = body
        for tag in tags or (None,):
            kwargs = {"imageTag": tag} if tag else {}
            with contextlib.suppress(self.ecr.exceptions.ImageAlreadyExistsException):  # pushed before
                self.ecr.put_image(
                    repositoryName=REPOSITORY,
                    imageManifest=body,
                    imageManifestMediaType=builders.OCI_MANIFEST,
                    imageDigest=digest,
                    **kwargs,
                )
        return digest

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """The tag guard's Lambda handler."""
        result: dict[str, Any] = tag_guard.lambda_handler(event, LambdaContext("TagGuardFunction"))  # type: ignore[arg-type]
        return result

    def retag(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = retag_handler.lambda_handler(event, LambdaContext("RetagFunction"))  # type: ignore[arg-type]
        return result

    def tag(self, tag: str) -> str | None:
        try:
            details = self.ecr.describe_images(repositoryName=REPOSITORY, imageIds=[{"imageTag": tag}])["imageDetails"]
        except self.ecr.exceptions.ImageNotFoundException:
            return None
        return str(details[0]["imageDigest"])

    def manifest_bytes(self, tag: str) -> str:
        images = self.ecr.batch_get_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": tag}])["images"]
        return str(images[0]["imageManifest"])

    def claim(self, tag: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = (
            self.aws.client("dynamodb")
            .get_item(
                TableName=LEDGER_TABLE, Key={"pk": {"S": REPO.key}, "sk": {"S": f"tag#{tag}"}}, ConsistentRead=True
            )
            .get("Item")
        )
        return item

    def published(self) -> list[dict[str, Any]]:
        """The events the functions published since the last call, as an EventBridge rule delivers them to SQS."""
        sqs = self.aws.client("sqs")
        url = sqs.get_queue_url(QueueName=VIOLATIONS_QUEUE)["QueueUrl"]
        received: list[dict[str, Any]] = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                received.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return received


@contextlib.contextmanager
def guard_stack(aws: MotoServer, environ: Any) -> Iterator[GuardStack]:
    """A repository, the ledger table and a queue receiving this application's events; ``environ`` is pytest's
    monkeypatch, which sets the variables the template gives the functions."""
    for name, value in aws.env().items():
        environ.setenv(name, value)
    environ.setenv("TAG_LEDGER_TABLE", LEDGER_TABLE)
    environ.delenv("IDEMPOTENCY_TABLE", raising=False)
    aws.client("ecr").create_repository(repositoryName=REPOSITORY)
    builders.create_table_like(aws.client("dynamodb"), "TagLedgerTable", LEDGER_TABLE)
    sqs = aws.client("sqs")
    queue_arn = sqs.get_queue_attributes(
        QueueUrl=sqs.create_queue(QueueName=VIOLATIONS_QUEUE)["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    events = aws.client("events")
    events.put_rule(Name=VIOLATIONS_QUEUE, EventPattern=json.dumps({"source": ["ecr-automation"]}))
    events.put_targets(Rule=VIOLATIONS_QUEUE, Targets=[{"Id": "queue", "Arn": queue_arn}])
    sink = CollectingSink()
    use_dependencies(Dependencies(settings_from_environment(), clients=AwsClients(), sink=sink))
    try:
        yield GuardStack(aws, sink)
    finally:
        use_dependencies(None)
