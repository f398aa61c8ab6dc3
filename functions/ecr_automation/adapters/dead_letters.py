"""Rejected events go to the dead-letter queue whole, with the reason, so they can be replayed."""

from __future__ import annotations

import json
from typing import Any

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.models.effects import Effect, EffectSink


class DeadLetterQueue:
    def __init__(self, clients: AwsClients, queue_url: str, region: str, sink: EffectSink) -> None:
        self._clients = clients
        self._queue_url = queue_url
        self._region = region
        self._sink = sink

    def send(self, raw_event: object, *, reason: str, function: str) -> None:
        self._clients.client("sqs", self._region).send_message(
            QueueUrl=self._queue_url,
            MessageBody=json.dumps(raw_event, default=str),
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": reason[:1024]},
                "function": {"DataType": "String", "StringValue": function},
            },
        )
        self._sink.record(Effect("event_dead_lettered", {"reason": reason, "function": function}))


class NoDeadLetterQueue:
    """Used when no queue is configured (local invoke without one): the rejection is still logged."""

    def send(self, raw_event: Any, *, reason: str, function: str) -> None:
        del raw_event, reason, function
