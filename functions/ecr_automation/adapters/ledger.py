"""The tag ledger in DynamoDB: which digest each protected tag belongs to, claimed first-come.

One item per (registry, region, repository, tag) claim, plus one item per violation seen, so a
replayed event can recognise that its violation was already handled and alerted.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.models.domain import RepositoryRef
from ecr_automation.models.effects import Effect, EffectSink

CLAIM_PREFIX = "tag#"
LOCK_PREFIX = "lock#"
VIOLATION_PREFIX = "violation#"
ACTOR_PREFIX = "actor#"


class LeaseTimeoutError(RuntimeError):
    """Another invocation held the lease too long: raise, and let Lambda retry the event later."""


@dataclass(frozen=True)
class Claim:
    repository: RepositoryRef
    tag: str
    digest: str
    claimed_at: str
    event_id: str


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class TagLedger:
    def __init__(self, clients: AwsClients, table_name: str, region: str, sink: EffectSink) -> None:
        self._clients = clients
        self._table_name = table_name
        self._region = region
        self._sink = sink

    @property
    def _dynamodb(self) -> Any:
        return self._clients.client("dynamodb", self._region)

    def claim(self, repository: RepositoryRef, tag: str, digest: str, event_id: str) -> Claim:
        """Claim ``tag`` for ``digest`` unless another digest holds it; returns the winning claim.

        The conditional write makes the first digest win atomically, even when pushes race.
        """
        now = datetime.now(UTC).isoformat()
        item = {
            "pk": {"S": repository.key},
            "sk": {"S": CLAIM_PREFIX + tag},
            "repository": {"S": repository.name},
            "tag": {"S": tag},
            "digest": {"S": digest},
            "claimed_at": {"S": now},
            "event_id": {"S": event_id},
        }
        try:
            self._dynamodb.put_item(
                TableName=self._table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            existing: dict[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
            if existing is None:  # older SDKs/stand-ins do not return the item: read it
                existing = self._read(repository, CLAIM_PREFIX + tag)
            if existing is None:  # deleted between the two calls: a retry will claim it
                raise RuntimeError(f"claim on {repository.name}:{tag} vanished while being read") from None
            return _claim_from_item(repository, existing)
        self._sink.record(Effect("tag_claimed", {"repository": repository.name, "tag": tag, "digest": digest}))
        return Claim(repository, tag, digest, now, event_id)

    def current_claim(self, repository: RepositoryRef, tag: str) -> Claim | None:
        item = self._read(repository, CLAIM_PREFIX + tag)
        return _claim_from_item(repository, item) if item else None

    def claims(self, repository: RepositoryRef) -> Iterator[Claim]:
        paginator = self._dynamodb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": repository.key}, ":prefix": {"S": CLAIM_PREFIX}},
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                yield _claim_from_item(repository, item)

    def record_violation(
        self, repository: RepositoryRef, tag: str, offending_digest: str, event_id: str, detail: dict[str, Any]
    ) -> bool:
        """Remember a violation; True while its alert has not been sent yet.

        The item is written before the alert and marked afterwards, so a crash in between leads to
        the alert on retry (at least once), and a replay after success leads to none.
        """
        try:
            self._dynamodb.put_item(
                TableName=self._table_name,
                Item={
                    "pk": {"S": repository.key},
                    "sk": {"S": self._violation_key(tag, offending_digest, event_id)},
                    "tag": {"S": tag},
                    "digest": {"S": offending_digest},
                    "event_id": {"S": event_id},
                    "seen_at": {"S": datetime.now(UTC).isoformat()},
                    "alerted": {"BOOL": False},
                    "detail": {"S": json.dumps(detail, sort_keys=True)},
                },
                ConditionExpression="attribute_not_exists(pk) OR alerted = :no",
                ExpressionAttributeValues={":no": {"BOOL": False}},
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def mark_violation_alerted(self, repository: RepositoryRef, tag: str, offending_digest: str, event_id: str) -> None:
        self._dynamodb.update_item(
            TableName=self._table_name,
            Key={"pk": {"S": repository.key}, "sk": {"S": self._violation_key(tag, offending_digest, event_id)}},
            UpdateExpression="SET alerted = :yes",
            ExpressionAttributeValues={":yes": {"BOOL": True}},
        )

    def actor_of(self, repository: RepositoryRef, tag: str, digest: str) -> str | None:
        item = self._read(repository, f"{ACTOR_PREFIX}{tag}#{digest}")
        return item["actor"]["S"] if item else None

    def record_actor(self, repository: RepositoryRef, tag: str, digest: str, actor: str) -> list[dict[str, Any]]:
        """Remember who put ``digest`` under ``tag`` (from CloudTrail, which arrives later than ECR's event).

        Returns the details of alerted violations that did not name an actor yet; each is returned once.
        """
        self._dynamodb.put_item(
            TableName=self._table_name,
            Item={"pk": {"S": repository.key}, "sk": {"S": f"{ACTOR_PREFIX}{tag}#{digest}"}, "actor": {"S": actor}},
        )
        attributed = []
        paginator = self._dynamodb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={
                ":pk": {"S": repository.key},
                ":prefix": {"S": f"{VIOLATION_PREFIX}{tag}#{digest}#"},
            },
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                try:
                    self._dynamodb.update_item(
                        TableName=self._table_name,
                        Key={"pk": item["pk"], "sk": item["sk"]},
                        UpdateExpression="SET actor = :actor",
                        ConditionExpression="alerted = :yes AND attribute_not_exists(actor)",
                        ExpressionAttributeValues={":actor": {"S": actor}, ":yes": {"BOOL": True}},
                    )
                except ClientError as error:
                    if _is_condition_failure(error):
                        continue
                    raise
                attributed.append(json.loads(item["detail"]["S"]))
        return attributed

    @contextmanager
    def hold(
        self, repository: RepositoryRef, names: list[str], *, lease_seconds: float = 30, wait_seconds: float = 20
    ) -> Iterator[None]:
        """Hold leases on ``names`` (e.g. floating tags) so one decision-and-write runs at a time per name.

        A lease expires on its own, so a crashed holder cannot block others for long; taking names in
        sorted order means two holders never wait on each other.
        """
        owner = uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        held: list[str] = []
        try:
            for name in sorted(set(names)):
                self._acquire(repository, name, owner, lease_seconds, deadline)
                held.append(name)
            yield
        finally:
            for name in held:
                self._release(repository, name, owner)

    def _acquire(self, repository: RepositoryRef, name: str, owner: str, lease_seconds: float, deadline: float) -> None:
        delay = 0.02
        while True:
            now = time.time()
            try:
                self._dynamodb.put_item(
                    TableName=self._table_name,
                    Item={
                        "pk": {"S": repository.key},
                        "sk": {"S": LOCK_PREFIX + name},
                        "owner": {"S": owner},
                        "expires_at": {"N": str(now + lease_seconds)},
                    },
                    ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                    ExpressionAttributeValues={":now": {"N": str(now)}},
                )
            except ClientError as error:
                if not _is_condition_failure(error):
                    raise
                if time.monotonic() + delay > deadline:
                    raise LeaseTimeoutError(f"{repository.name}:{name} stayed busy; retry later") from None
                time.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter, not cryptography
                delay = min(delay * 2, 0.5)
                continue
            return

    def _release(self, repository: RepositoryRef, name: str, owner: str) -> None:
        try:
            self._dynamodb.delete_item(
                TableName=self._table_name,
                Key={"pk": {"S": repository.key}, "sk": {"S": LOCK_PREFIX + name}},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as error:
            if not _is_condition_failure(error):  # the lease expired and another holder took it: theirs now
                raise

    @staticmethod
    def _violation_key(tag: str, offending_digest: str, event_id: str) -> str:
        return f"{VIOLATION_PREFIX}{tag}#{offending_digest}#{event_id}"

    def _read(self, repository: RepositoryRef, sort_key: str) -> dict[str, Any] | None:
        response = self._dynamodb.get_item(
            TableName=self._table_name,
            Key={"pk": {"S": repository.key}, "sk": {"S": sort_key}},
            ConsistentRead=True,
        )
        item: dict[str, Any] | None = response.get("Item")
        return item


def _claim_from_item(repository: RepositoryRef, item: dict[str, Any]) -> Claim:
    return Claim(
        repository=repository,
        tag=item["tag"]["S"],
        digest=item["digest"]["S"],
        claimed_at=item["claimed_at"]["S"],
        event_id=item["event_id"]["S"],
    )
