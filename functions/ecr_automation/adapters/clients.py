"""boto3 clients: created on first use, cached per service and region, replaceable in tests."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from ecr_automation.models.domain import USER_AGENT_MARKER

# Standard retries (exponential backoff with jitter), 6 attempts in all. Chosen by measurement
# (bench/load.py --throttle 0.1 --compare-retry-modes, 500 releases, 3x delivery): adaptive mode's client-side
# rate limiter slowed the same workload 2.3 times (p50 latency 5 to 9 times) for the same end state,
# because throttling that does not depend on request rate cannot be slowed away.
DEFAULT_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 6},
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
