"""boto3 clients: created on first use, cached per service and region, replaceable in tests."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from ecr_automation.models.domain import USER_AGENT_MARKER

# Adaptive mode adds client-side rate limiting on top of standard retries: ECR's PutImage and
# BatchGetImage quotas are low enough that a burst of pushes can throttle.
DEFAULT_CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 6},
    connect_timeout=5,
    read_timeout=20,
    user_agent_extra=USER_AGENT_MARKER,
)


class AwsClients:
    def __init__(self, session: boto3.Session | None = None, config: Config = DEFAULT_CLIENT_CONFIG) -> None:
        self._session = session
        self._config = config
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        with self._lock:
            if key not in self._clients:
                session = self._session or boto3.Session()
                self._session = session
                self._clients[key] = session.client(service, region_name=region, config=self._config)  # type: ignore[call-overload]
            return self._clients[key]
