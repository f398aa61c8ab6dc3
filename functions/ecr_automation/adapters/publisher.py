"""Custom events this application emits on EventBridge (e.g. tag guard violations)."""

from __future__ import annotations

import json
from typing import Any

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.models.effects import Effect, EffectSink
from ecr_automation.models.events import APPLICATION_SOURCE


class PublishError(RuntimeError):
    pass


class EventPublisher:
    def __init__(self, clients: AwsClients, bus_name: str, region: str, sink: EffectSink) -> None:
        self._clients = clients
        self._bus_name = bus_name
        self._region = region
        self._sink = sink

    def publish(self, detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> None:
        response = self._clients.client("events", self._region).put_events(
            Entries=[
                {
                    "Source": APPLICATION_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, sort_keys=True, default=str),
                    "EventBusName": self._bus_name,
                    "Resources": resources or [],
                }
            ]
        )
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise PublishError(f"PutEvents refused {detail_type}: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}")
        self._sink.record(Effect("event_published", {"detail_type": detail_type, "detail": detail}))
