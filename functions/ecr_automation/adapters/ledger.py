"""The tag ledger in DynamoDB: who owns each protected tag, what was reported, and short leases.

One partition per (registry, region, repository). Sort keys:
- ``tag#<tag>``: the claim (digest, push time, event); a release record after ``guard release``; or,
  before any claim, the record of a delete delivered ahead of its push;
- ``violation#<change>#<tag>#<digest>#<occurrence>``: a violation, recorded before acting, closed after alerting;
- ``actor#<PUSH|DELETE>#<tag>#<digest>``: who made that change, from CloudTrail;
- ``release#<tag>#<time>``: the audit trail of releases;
- ``lock#<name>``: a lease;
- ``child#<platform digest>#<index digest>``: which index names which platform manifest;
- ``sent#<fingerprint>``: a message the notifier delivered (expires after 90 days, table TTL ``expires_at``).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.models.domain import (
    Claim,
    ClaimAttempt,
    PendingViolation,
    RepositoryRef,
    ViolationKey,
    ViolationState,
)
from ecr_automation.models.effects import Effect, EffectSink

CLAIM_PREFIX = "tag#"
LOCK_PREFIX = "lock#"
VIOLATION_PREFIX = "violation#"
ACTOR_PREFIX = "actor#"
RELEASE_PREFIX = "release#"
CHILD_PREFIX = "child#"
SENT_PREFIX = "sent#"
# How long a delivered message is remembered (an identical rescan within it posts nothing).
SENT_RECORD_DAYS = 90
# Long enough for one delivery with Slack's retries; a sender that died frees it after this.
SEND_RESERVATION_SECONDS = 300
CHANGE_OF_ACTION = {"PUSH": "moved", "DELETE": "deleted"}

# A lease outlives the longest invocation that can hold it (template.yaml: Timeout 60 s), so a live
# holder never loses it; the margin covers a write still in flight when Lambda stops the function.
LEASE_SECONDS = 75.0
# A holder writes only while its lease has at least this long left.
FENCE_MARGIN_SECONDS = 10.0
LEASE_WAIT_SECONDS = 20.0


class LeaseTimeoutError(RuntimeError):
    """Another invocation held the lease too long: raise, and let Lambda retry the event later."""


class LeaseLostError(RuntimeError):
    """This holder's lease ran out before it finished: it writes nothing more and the event is retried."""


class ClaimChangedError(RuntimeError):
    """A claim changed between reading and handing it over: the retry decides afresh."""


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _epoch(moment: datetime) -> str:
    return f"{moment.timestamp():.3f}"


def _moment(value: str) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


class HeldLease:
    def __init__(self, name: str, expires_at: float) -> None:
        self.name = name
        self.expires_at = expires_at

    def check(self) -> None:
        if time.time() > self.expires_at - FENCE_MARGIN_SECONDS:
            raise LeaseLostError(f"lease on {self.name} ran out before its holder finished; retry")


class TagLedger:
    def __init__(
        self,
        clients: AwsClients,
        table_name: str,
        region: str,
        sink: EffectSink,
        *,
        lease_seconds: float = LEASE_SECONDS,
        lease_wait_seconds: float = LEASE_WAIT_SECONDS,
    ) -> None:
        self._clients = clients
        self._table_name = table_name
        self._region = region
        self._sink = sink
        self._lease_seconds = lease_seconds
        self._lease_wait_seconds = lease_wait_seconds

    @property
    def _dynamodb(self) -> Any:
        return self._clients.client("dynamodb", self._region)

    # -- claims ------------------------------------------------------------------------------------
    def claim(
        self, repository: RepositoryRef, tag: str, digest: str, pushed_at: datetime, event_id: str
    ) -> ClaimAttempt:
        """Claim ``tag`` for ``digest`` unless a digest holds it already; one conditional write.

        A released tag is claimed only by a push made after the release.
        """
        item = self._claim_item(repository, tag, digest, pushed_at, event_id)
        fields = {name: value for name, value in item.items() if name not in {"pk", "sk"}}
        try:
            # An update, not a put: a delete delivered ahead of this push stays recorded on the claim.
            claimed = self._dynamodb.update_item(
                TableName=self._table_name,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in fields),
                ConditionExpression="attribute_not_exists(#digest) AND "
                "(attribute_not_exists(released_at) OR released_at <= :pushed_at)",
                ExpressionAttributeNames={f"#{name}": name for name in fields},
                ExpressionAttributeValues={f":{name}": value for name, value in fields.items()},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            existing: dict[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
            if existing is None:  # older stand-ins do not return the item: read it
                existing = self._read(repository, CLAIM_PREFIX + tag)
            if existing is None:  # deleted between the two calls: a retry will claim it
                raise ClaimChangedError(f"claim on {repository.name}:{tag} vanished while being read") from None
            if "digest" not in existing:
                return ClaimAttempt(None, released_at=_moment(existing["released_at"]["N"]))
            return ClaimAttempt(_claim_from_item(repository, existing))
        self._sink.record(Effect("tag_claimed", {"repository": repository.name, "tag": tag, "digest": digest}))
        return ClaimAttempt(_claim_from_item(repository, claimed), created=True)

    def hand_over(self, previous: Claim, digest: str, pushed_at: datetime, event_id: str) -> Claim:
        """Give ``previous``'s tag to ``digest``, only if the claim is still exactly ``previous``."""
        item = self._claim_item(previous.repository, previous.tag, digest, pushed_at, event_id)
        item["handed_over_from"] = {"S": previous.digest}
        if previous.released_at is not None:
            item["released_at"] = {"N": _epoch(previous.released_at)}
        try:
            self._dynamodb.put_item(
                TableName=self._table_name,
                Item=item,
                ConditionExpression="digest = :digest AND pushed_at = :pushed_at AND "
                "(attribute_not_exists(released_at) OR released_at <= :new_pushed_at)",
                ExpressionAttributeValues={
                    ":digest": {"S": previous.digest},
                    ":pushed_at": {"N": _epoch(previous.pushed_at)},
                    ":new_pushed_at": {"N": _epoch(pushed_at)},
                },
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise ClaimChangedError(f"claim on {previous.repository.name}:{previous.tag} changed; retry") from None
            raise
        self._sink.record(
            Effect(
                "claim_handed_over",
                {"repository": previous.repository.name, "tag": previous.tag, "from": previous.digest, "to": digest},
            )
        )
        return _claim_from_item(previous.repository, item)

    def date_back(self, claim: Claim, pushed_at: datetime) -> Claim:
        """An earlier push of the claimed digest dates the claim back (only if the claim is still as read)."""
        try:
            self._dynamodb.update_item(
                TableName=self._table_name,
                Key={"pk": {"S": claim.repository.key}, "sk": {"S": CLAIM_PREFIX + claim.tag}},
                UpdateExpression="SET pushed_at = :earlier",
                ConditionExpression="digest = :digest AND pushed_at = :pushed_at",
                ExpressionAttributeValues={
                    ":earlier": {"N": _epoch(pushed_at)},
                    ":digest": {"S": claim.digest},
                    ":pushed_at": {"N": _epoch(claim.pushed_at)},
                },
            )
        except ClientError as error:
            if _is_condition_failure(error):
                raise ClaimChangedError(f"claim on {claim.repository.name}:{claim.tag} changed; retry") from None
            raise
        return replace(claim, pushed_at=pushed_at)

    def record_unclaimed_delete(
        self, repository: RepositoryRef, tag: str, digest: str, deleted_at: datetime, event_id: str
    ) -> bool:
        """Remember a delete of a tag nobody claims yet (its PUSH may still be on its way); False if claimed now.

        An update, so that a release recorded at the same key is kept.
        """
        try:
            self._dynamodb.update_item(
                TableName=self._table_name,
                Key={"pk": {"S": repository.key}, "sk": {"S": CLAIM_PREFIX + tag}},
                UpdateExpression="SET repository = :repository, #tag = :tag, deleted_digest = :digest, "
                "deleted_at = :deleted_at, deleted_event_id = :event_id",
                ConditionExpression="attribute_not_exists(digest)",
                ExpressionAttributeNames={"#tag": "tag"},
                ExpressionAttributeValues={
                    ":repository": {"S": repository.name},
                    ":tag": {"S": tag},
                    ":digest": {"S": digest},
                    ":deleted_at": {"N": _epoch(deleted_at)},
                    ":event_id": {"S": event_id},
                },
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def current_claim(self, repository: RepositoryRef, tag: str) -> Claim | None:
        item = self._read(repository, CLAIM_PREFIX + tag)
        return _claim_from_item(repository, item) if item and "digest" in item else None

    def claims(self, repository: RepositoryRef) -> Iterator[Claim]:
        for item in self._query(repository, CLAIM_PREFIX):
            if "digest" in item:
                yield _claim_from_item(repository, item)

    def release(self, repository: RepositoryRef, tag: str, *, reason: str, actor: str) -> Claim | None:
        """Replace the claim by a release record (and keep an audit record); None when nothing was claimed."""
        previous = self.current_claim(repository, tag)
        if previous is None:
            return None
        now = datetime.now(UTC)
        # Event times have whole seconds: a push in the second of the release counts as after it.
        released_at = now.replace(microsecond=0)
        record = {
            "tag": {"S": tag},
            "repository": {"S": repository.name},
            "released_at": {"N": _epoch(released_at)},
            "released_reason": {"S": reason},
            "released_by": {"S": actor},
            "previous_digest": {"S": previous.digest},
        }
        pk = {"S": repository.key}
        self._dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self._table_name,
                        "Item": {"pk": pk, "sk": {"S": CLAIM_PREFIX + tag}, **record},
                        "ConditionExpression": "digest = :digest",
                        "ExpressionAttributeValues": {":digest": {"S": previous.digest}},
                    }
                },
                {
                    "Put": {
                        "TableName": self._table_name,
                        "Item": {"pk": pk, "sk": {"S": f"{RELEASE_PREFIX}{tag}#{now.isoformat()}"}, **record},
                    }
                },
            ]
        )
        self._sink.record(
            Effect(
                "claim_released",
                {"repository": repository.name, "tag": tag, "digest": previous.digest, "reason": reason, "by": actor},
            )
        )
        return previous

    # -- violations --------------------------------------------------------------------------------
    def record_violation(self, key: ViolationKey, event_id: str) -> ViolationState:
        """Record a violation before acting on it; an earlier record says who has it and how far they got.

        A new record is also noted on the tag's claim until it is alerted, so that any later look at the
        claim (the retry of this event above all) sees an alert still owed.
        """
        try:
            self._dynamodb.put_item(
                TableName=self._table_name,
                Item={
                    "pk": {"S": key.repository.key},
                    "sk": {"S": _violation_key(key)},
                    "tag": {"S": key.tag},
                    "digest": {"S": key.offending_digest},
                    "change": {"S": key.change},
                    "event_id": {"S": event_id},
                    "seen_at": {"S": datetime.now(UTC).isoformat()},
                    "alerted": {"BOOL": False},
                    "closed": {"BOOL": False},
                },
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            found = error.response.get("Item") or self._read(key.repository, _violation_key(key)) or {}
            if found.get("closed", {}).get("BOOL"):  # type: ignore[attr-defined]
                return ViolationState.CLOSED
            ours = {found.get("event_id", {}).get("S"), found.get("alerting", {}).get("S")}  # type: ignore[attr-defined]
            return ViolationState.PENDING if event_id in ours else ViolationState.TAKEN
        pending = {
            "change": key.change,
            "offending": key.offending_digest,
            "occurrence": key.occurrence,
            "event": event_id,
        }
        try:
            self._dynamodb.update_item(
                TableName=self._table_name,
                Key={"pk": {"S": key.repository.key}, "sk": {"S": CLAIM_PREFIX + key.tag}},
                UpdateExpression="SET pending_violation = :pending",
                ConditionExpression="attribute_exists(digest)",
                ExpressionAttributeValues={":pending": {"S": json.dumps(pending, sort_keys=True)}},
            )
        except ClientError as error:
            if not _is_condition_failure(error):  # no claim to note it on: the record itself still says it
                raise
        return ViolationState.NEW

    def claim_alert(self, key: ViolationKey, event_id: str) -> bool:
        """Become the one invocation that alerts this violation (or stay it, on the same event's retry)."""
        try:
            self._dynamodb.update_item(
                TableName=self._table_name,
                Key={"pk": {"S": key.repository.key}, "sk": {"S": _violation_key(key)}},
                UpdateExpression="SET alerting = :me",
                ConditionExpression="closed = :no AND (attribute_not_exists(alerting) OR alerting = :me)",
                ExpressionAttributeValues={":me": {"S": event_id}, ":no": {"BOOL": False}},
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def close_violation(self, key: ViolationKey, detail: dict[str, Any] | None) -> None:
        """Close a violation: alerted with ``detail``, or (None) found already undone, owing nothing."""
        values: dict[str, Any] = {":yes": {"BOOL": True}, ":alerted": {"BOOL": detail is not None}}
        update = "SET closed = :yes, alerted = :alerted"
        if detail is not None:
            update += ", detail = :detail"
            values[":detail"] = {"S": json.dumps(detail, sort_keys=True)}
        self._dynamodb.update_item(
            TableName=self._table_name,
            Key={"pk": {"S": key.repository.key}, "sk": {"S": _violation_key(key)}},
            UpdateExpression=update,
            ExpressionAttributeValues=values,
        )
        try:  # the alert is no longer owed (unless another violation was noted since)
            self._dynamodb.update_item(
                TableName=self._table_name,
                Key={"pk": {"S": key.repository.key}, "sk": {"S": CLAIM_PREFIX + key.tag}},
                UpdateExpression="REMOVE pending_violation",
                ConditionExpression="contains(pending_violation, :occurrence) AND contains(pending_violation, :digest)",
                ExpressionAttributeValues={
                    ":occurrence": {"S": key.occurrence},
                    ":digest": {"S": key.offending_digest},
                },
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise

    def actor_of(self, repository: RepositoryRef, action: str, tag: str, digest: str) -> str | None:
        item = self._read(repository, f"{ACTOR_PREFIX}{action}#{tag}#{digest}")
        return item["actor"]["S"] if item else None

    def record_actor(
        self, repository: RepositoryRef, action: str, tag: str, digest: str, actor: str
    ) -> list[dict[str, Any]]:
        """Remember who pushed or deleted ``tag`` on ``digest`` (CloudTrail arrives later than ECR's event).

        Returns the details of alerted violations of that kind that did not name an actor yet, each once.
        """
        self._dynamodb.put_item(
            TableName=self._table_name,
            Item={
                "pk": {"S": repository.key},
                "sk": {"S": f"{ACTOR_PREFIX}{action}#{tag}#{digest}"},
                "actor": {"S": actor},
            },
        )
        attributed = []
        prefix = f"{VIOLATION_PREFIX}{CHANGE_OF_ACTION[action]}#{tag}#{digest}#"
        for item in self._query(repository, prefix):
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

    # -- multi-arch --------------------------------------------------------------------------------
    def record_children(self, repository: RepositoryRef, index_digest: str, children: list[str]) -> None:
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": repository.key},
                        "sk": {"S": f"{CHILD_PREFIX}{child}#{index_digest}"},
                        "index": {"S": index_digest},
                    }
                }
            }
            for child in children
        ]
        for start in range(0, len(requests), 25):  # BatchWriteItem takes 25 at a time
            pending: dict[str, Any] = {self._table_name: requests[start : start + 25]}
            while pending:
                pending = self._dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}

    def parents_of(self, repository: RepositoryRef, child_digest: str) -> list[str]:
        return [item["index"]["S"] for item in self._query(repository, f"{CHILD_PREFIX}{child_digest}#")]

    # -- leases ------------------------------------------------------------------------------------
    @contextmanager
    def hold(self, repository: RepositoryRef, name: str, *, owner: str) -> Iterator[HeldLease]:
        """Hold the lease ``name`` so one decision-and-write runs at a time, even for two copies of one event.

        ``owner`` (the event id) is recorded for whoever inspects the table; the holder is this very call, so
        two concurrent deliveries of one event cannot both hold it. A holder that died keeps others out
        until the lease expires; they wait, then raise, and Lambda retries them later.
        """
        token = f"{owner}:{uuid.uuid4().hex}"
        lease = self._acquire(repository, name, token)
        try:
            yield lease
        finally:
            self._release(repository, name, token)

    def _acquire(self, repository: RepositoryRef, name: str, owner: str) -> HeldLease:
        delay = 0.02
        deadline = time.monotonic() + self._lease_wait_seconds
        while True:
            now = time.time()
            expires_at = now + self._lease_seconds
            try:
                self._dynamodb.put_item(
                    TableName=self._table_name,
                    Item={
                        "pk": {"S": repository.key},
                        "sk": {"S": LOCK_PREFIX + name},
                        "owner": {"S": owner},
                        "expires_at": {"N": str(expires_at)},
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
            return HeldLease(f"{repository.name}:{name}", expires_at)

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

    # -- reading -----------------------------------------------------------------------------------
    @staticmethod
    def _claim_item(
        repository: RepositoryRef, tag: str, digest: str, pushed_at: datetime, event_id: str
    ) -> dict[str, Any]:
        return {
            "pk": {"S": repository.key},
            "sk": {"S": CLAIM_PREFIX + tag},
            "repository": {"S": repository.name},
            "tag": {"S": tag},
            "digest": {"S": digest},
            "pushed_at": {"N": _epoch(pushed_at)},
            "claimed_at": {"S": datetime.now(UTC).isoformat()},
            "event_id": {"S": event_id},
        }

    def _query(self, repository: RepositoryRef, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self._dynamodb.get_paginator("query")
        for page in paginator.paginate(
            TableName=self._table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": repository.key}, ":prefix": {"S": prefix}},
            ConsistentRead=True,
        ):
            yield from page.get("Items", [])

    def _read(self, repository: RepositoryRef, sort_key: str) -> dict[str, Any] | None:
        response = self._dynamodb.get_item(
            TableName=self._table_name,
            Key={"pk": {"S": repository.key}, "sk": {"S": sort_key}},
            ConsistentRead=True,
        )
        item: dict[str, Any] | None = response.get("Item")
        return item

    # -- messages sent (the notifier's SentLedger) --------------------------------------------------
    def recorded(self, repository: RepositoryRef, fingerprint: str) -> str | None:
        """The summary recorded with a delivered message, or None when it was never delivered."""
        item = self._read(repository, SENT_PREFIX + fingerprint)
        if item is None or item.get("state", {}).get("S", "sent") != "sent":
            return None
        return str(item.get("summary", {}).get("S", ""))

    def reserve(self, repository: RepositoryRef, fingerprint: str) -> bool:
        """Become the one sender of a message for a few minutes; False when it is sent or being sent."""
        now = time.time()
        try:
            self._dynamodb.put_item(
                TableName=self._table_name,
                Item={
                    "pk": {"S": repository.key},
                    "sk": {"S": SENT_PREFIX + fingerprint},
                    "state": {"S": "sending"},
                    "reserved_until": {"N": str(now + SEND_RESERVATION_SECONDS)},
                    "expires_at": {"N": str(int(now) + SENT_RECORD_DAYS * 24 * 60 * 60)},
                },
                ConditionExpression="attribute_not_exists(pk) OR (#state = :sending AND reserved_until < :now)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":sending": {"S": "sending"}, ":now": {"N": str(now)}},
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return False
            raise
        return True

    def unreserve(self, repository: RepositoryRef, fingerprint: str) -> None:
        try:
            self._dynamodb.delete_item(
                TableName=self._table_name,
                Key={"pk": {"S": repository.key}, "sk": {"S": SENT_PREFIX + fingerprint}},
                ConditionExpression="#state = :sending",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":sending": {"S": "sending"}},
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise

    def mark_sent(self, repository: RepositoryRef, fingerprint: str, summary: str, *, keep: bool = False) -> None:
        """Record a delivered message; unless ``keep``, the record expires (table TTL) after 90 days."""
        now = datetime.now(UTC)
        item = {
            "pk": {"S": repository.key},
            "sk": {"S": SENT_PREFIX + fingerprint},
            "state": {"S": "sent"},
            "repository": {"S": repository.name},
            "summary": {"S": summary[:1000]},
            "sent_at": {"S": now.isoformat()},
        }
        if not keep:
            item["expires_at"] = {"N": str(int(now.timestamp()) + SENT_RECORD_DAYS * 24 * 60 * 60)}
        self._dynamodb.put_item(TableName=self._table_name, Item=item)
        self._sink.record(
            Effect(
                "message_marked_sent", {"repository": repository.name, "fingerprint": fingerprint, "summary": summary}
            )
        )


def _deleted_after(item: dict[str, Any], pushed_at: datetime) -> datetime | None:
    """When the claim item records a delete of its own digest's tag made after the push, that moment."""
    if "deleted_at" not in item or item.get("deleted_digest", {}).get("S") != item["digest"]["S"]:
        return None
    deleted_at = _moment(item["deleted_at"]["N"])
    return deleted_at if deleted_at >= pushed_at else None


def _violation_key(key: ViolationKey) -> str:
    return f"{VIOLATION_PREFIX}{key.change}#{key.tag}#{key.offending_digest}#{key.occurrence}"


def _claim_from_item(repository: RepositoryRef, item: dict[str, Any]) -> Claim:
    pushed_at = _moment(item["pushed_at"]["N"]) if "pushed_at" in item else datetime.min.replace(tzinfo=UTC)
    return Claim(
        repository=repository,
        tag=item["tag"]["S"],
        digest=item["digest"]["S"],
        pushed_at=pushed_at,
        event_id=item["event_id"]["S"],
        claimed_at=item["claimed_at"]["S"],
        deleted_after=_deleted_after(item, pushed_at),
        released_at=_moment(item["released_at"]["N"]) if "released_at" in item else None,
        handed_over_from=item["handed_over_from"]["S"] if "handed_over_from" in item else None,
        pending_violation=_pending(item),
    )


def _pending(item: dict[str, Any]) -> PendingViolation | None:
    if "pending_violation" not in item:
        return None
    noted = json.loads(item["pending_violation"]["S"])
    return PendingViolation(noted["change"], noted["offending"], noted["occurrence"], noted["event"])
