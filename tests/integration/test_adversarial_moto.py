"""Adversarial review against the moto server: the real handlers, the real DynamoDB ledger and its conditions.

Each test plays the history in ECR first, then delivers ECR's events to the Lambda handlers in an order,
with failures or concurrency real AWS produces, and reads the outcome back from the server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ecr_automation.adapters import ledger as ledger_module
from ecr_automation.adapters.clients import AwsClients
from ecr_automation.adapters.ledger import LeaseLostError, LeaseTimeoutError, TagLedger
from ecr_automation.adapters.publisher import EventPublisher
from ecr_automation.models.domain import RepositoryRef
from tests.support import builders
from tests.support.guard_stack import GuardStack, guard_stack
from tests.support.moto_server import MotoServer

ACCOUNT, REGION, REPOSITORY = "123456789012", "us-east-1", "team/web"
REPO = RepositoryRef(ACCOUNT, REGION, REPOSITORY)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TAG = "v1.2.3"


def event(action: str, tag: str | None, digest: str, event_id: str, time: str) -> dict[str, Any]:
    raw = builders.image_action(action, tag, digest, event_id=event_id)
    raw["time"] = time
    return raw


def second(value: int) -> str:
    """An event time: 12:00:SS on the day the builders use. Delivered a day late, as far as the guard knows."""
    return f"2026-11-28T12:00:{value:02d}Z"


class Stack(GuardStack):
    def guard(self, raw: dict[str, Any]) -> dict[str, Any]:
        return self.invoke(raw)

    def claim(self) -> str | None:  # type: ignore[override]
        item = super().claim(TAG)
        return item["digest"]["S"] if item and "digest" in item else None

    def violations(self) -> list[dict[str, Any]]:
        return [item for item in self.published() if item["detail-type"] == "Tag Guard Violation"]


@pytest.fixture
def stack(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with guard_stack(aws, monkeypatch) as shared:
        yield Stack(shared.aws, shared.sink)


def quarantine(digest: str) -> str:
    return f"quarantine-{digest[7:19]}"


# --- retag and the guard receive the same events --------------------------------------------------


def test_retag_handling_the_earlier_push_first_never_stops_the_guard(stack: Stack) -> None:
    """At HEAD 98614a1 this failed: retag's ClaimAcceptance handed the claim over to a with a's event id, and
    the guard then took its "claimed for this very push" shortcut: v1.2.3 stayed on b, nothing reported.
    """
    a = stack.push("a", TAG)
    stack.push("a", "sha-keep-a")
    b = stack.push("b", TAG)  # b moved the tag at 12:00:10
    push_a, push_b = event("PUSH", TAG, a, "e-a", second(0)), event("PUSH", TAG, b, "e-b", second(10))
    stack.guard(push_b)
    stack.retag(push_b)

    stack.retag(push_a)
    result = stack.guard(push_a)

    assert stack.claim() == a
    assert stack.tag(TAG) == a, f"guard said {result}"
    assert stack.tag(quarantine(b)) == b
    assert len(stack.violations()) == 1


# --- Lambda's retry after a failure mid-way --------------------------------------------------------


def test_a_delete_whose_alert_failed_is_alerted_by_the_retry(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """BUG (alert lost), with the real DynamoDB ledger: see the unit test of the same name."""
    a = stack.push("a", TAG, "sha-keep")
    stack.guard(event("PUSH", TAG, a, "e-a", second(0)))
    stack.ecr.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageTag": TAG}])
    delete = event("DELETE", TAG, a, "e-d", second(10))
    real_publish = EventPublisher.publish
    attempts = {"n": 0}

    def throttled_once(self: EventPublisher, *args: Any, **kwargs: Any) -> None:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("ThrottlingException: PutEvents")
        real_publish(self, *args, **kwargs)

    monkeypatch.setattr(EventPublisher, "publish", throttled_once)
    with pytest.raises(RuntimeError):
        stack.guard(delete)
    assert stack.tag(TAG) == a

    stack.guard(delete)  # Lambda's retry

    assert [v["detail"]["change"] for v in stack.violations()] == ["deleted"]


def test_a_move_whose_revert_was_throttled_ends_right_and_alerts_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = stack.push("a", TAG)
    stack.guard(event("PUSH", TAG, a, "e-a", second(0)))
    b = stack.push("b", TAG)
    move = event("PUSH", TAG, b, "e-b", second(10))
    from ecr_automation.adapters.ecr import EcrRegistry  # noqa: PLC0415 - patched only here

    real_put = EcrRegistry.put_tag
    attempts = {"n": 0}

    def throttled_once(self: EcrRegistry, image: Any, tag: str, **kwargs: Any) -> Any:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("ThrottlingException: PutImage")
        return real_put(self, image, tag, **kwargs)

    monkeypatch.setattr(EcrRegistry, "put_tag", throttled_once)
    with pytest.raises(RuntimeError):
        stack.guard(move)
    stack.guard(move)
    stack.guard(move)

    assert stack.tag(TAG) == a and stack.tag(quarantine(b)) == b
    assert len(stack.violations()) == 1


# --- concurrent invocations against DynamoDB's conditional writes ---------------------------------


def test_concurrent_invocations_for_one_incident_end_on_the_first_push_and_alert_once(stack: Stack) -> None:
    # a pushed at 12:00:00, b over it at 12:00:10; both events, a duplicate of b's and a retry of a's,
    # are handled at once by the guard and retag.
    a = stack.push("a", TAG)
    stack.push("a", "sha-keep-a")
    b = stack.push("b", TAG)
    deliveries = [
        (stack.guard, event("PUSH", TAG, a, "e-a", second(0))),
        (stack.guard, event("PUSH", TAG, b, "e-b", second(10))),
        (stack.retag, event("PUSH", TAG, a, "e-a", second(0))),
        (stack.retag, event("PUSH", TAG, b, "e-b", second(10))),
    ]
    barrier = threading.Barrier(len(deliveries))
    errors: list[BaseException] = []

    def run(handler: Any, raw: dict[str, Any]) -> None:
        barrier.wait()
        for _ in range(3):  # Lambda retries a failed invocation
            try:
                handler(raw)
                return
            except Exception as error:
                errors.append(error)

    threads = [threading.Thread(target=run, args=delivery) for delivery in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for handler, raw in deliveries[:2]:  # and each event redelivered afterwards
        handler(raw)

    assert stack.claim() == a
    assert stack.tag(TAG) == a
    assert stack.tag(quarantine(b)) == b
    assert len(stack.violations()) == 1, errors


# --- lease fencing on the real ledger -------------------------------------------------------------


class FakeTime:
    """``time`` for the ledger module: a wall clock the test moves; monotonic time and sleeping stay real."""

    def __init__(self, start: float) -> None:
        self.now = start
        import time as real  # noqa: PLC0415

        self.monotonic = real.monotonic
        self.sleep = real.sleep

    def time(self) -> float:
        return self.now


def test_a_holder_whose_lease_ran_out_never_writes_after_another_took_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeTime(1_000_000.0)
    monkeypatch.setattr(ledger_module, "time", clock)
    ledger = TagLedger(AwsClients(), "ledger", REGION, stack.sink, lease_seconds=30, lease_wait_seconds=0.2)

    with ledger.hold(REPO, "floating-tags", owner="e-slow") as slow:
        slow.check()  # fresh: may write
        clock.now += 25  # within the fence margin of its end: no more writes
        with pytest.raises(LeaseLostError):
            slow.check()
        clock.now += 10  # expired: another invocation takes it
        with ledger.hold(REPO, "floating-tags", owner="e-fast") as fast:
            fast.check()
            with pytest.raises(LeaseLostError):
                slow.check()
    # The slow holder's exit did not release the other's lease.
    item = stack.aws.client("dynamodb").get_item(
        TableName="ledger", Key={"pk": {"S": REPO.key}, "sk": {"S": "lock#floating-tags"}}, ConsistentRead=True
    )
    assert "Item" not in item  # released by its owner, e-fast


def test_a_busy_lease_makes_the_other_holder_wait_then_raise(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime(2_000_000.0)
    monkeypatch.setattr(ledger_module, "time", clock)
    ledger = TagLedger(AwsClients(), "ledger", REGION, stack.sink, lease_seconds=30, lease_wait_seconds=0.1)
    with (
        ledger.hold(REPO, "floating-tags", owner="e-1"),
        pytest.raises(ledger_module.LeaseTimeoutError),
        ledger.hold(REPO, "floating-tags", owner="e-2"),
    ):
        pass


def test_two_deliveries_of_one_event_never_both_hold_the_lease(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Was latent while the lease was re-entrant by event id: the guard and retag run without Powertools
    # Idempotency (their writes are idempotent by construction), so concurrent duplicates must be kept apart here.
    clock = FakeTime(3_000_000.0)
    monkeypatch.setattr(ledger_module, "time", clock)
    ledger = TagLedger(AwsClients(), "ledger", REGION, stack.sink, lease_seconds=30, lease_wait_seconds=0.2)
    first = ledger.hold(REPO, "floating-tags", owner="e-dup")
    first.__enter__()
    with pytest.raises(LeaseTimeoutError), ledger.hold(REPO, "floating-tags", owner="e-dup"):
        pass  # the second copy of the event waits, then raises: Lambda retries it once the first is done
    first.__exit__(None, None, None)
    with ledger.hold(REPO, "floating-tags", owner="e-dup"):
        pass  # free again
