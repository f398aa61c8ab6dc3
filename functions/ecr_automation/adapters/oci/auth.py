"""Registry credentials: given ones, and ECR authorization tokens fetched and cached per account and region.

Nothing here logs or formats a password: ``Credentials`` hides it from ``repr``.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

# Refresh this long before ECR says a token expires, so a copy never starts with a token about to lapse.
ECR_TOKEN_REFRESH_MARGIN_SECONDS = 5 * 60
# ECR tokens last 12 hours; never trust one longer than this, whatever expiresAt says.
ECR_TOKEN_MAX_CACHE_SECONDS = 11 * 3600
# A token whose expiresAt is already past (moto's are) is still used, but re-fetched after this long.
ECR_TOKEN_MIN_CACHE_SECONDS = 60
_ECR_HOST = re.compile(r"(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """``USER:PASS`` as skopeo's ``--src-creds`` takes it."""
        username, separator, password = text.partition(":")
        if not separator or not username:
            raise ValueError("credentials must be USER:PASSWORD")
        return cls(username, password)

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class CredentialSource(Protocol):
    def credentials(self) -> Credentials: ...

    def invalidate(self) -> None:
        """The registry refused what ``credentials`` returned: fetch fresh ones next time, if that can help."""


@dataclass(frozen=True)
class StaticCredentials:
    given: Credentials

    def credentials(self) -> Credentials:
        return self.given

    def invalidate(self) -> None:
        """Given credentials cannot be refreshed."""


def ecr_registry(host: str) -> tuple[str, str] | None:
    """(account, region) when ``host`` is an ECR registry endpoint."""
    match = _ECR_HOST.fullmatch(host.split(":", 1)[0])
    return (match["account"], match["region"]) if match else None


@dataclass
class _CachedToken:
    credentials: Credentials
    refresh_at: float  # time.monotonic()


class EcrTokenProvider:
    """``GetAuthorizationToken`` per account and region, cached until shortly before it expires.

    One provider per process (e.g. a module-level one in a Lambda function) lets warm invocations reuse tokens.
    """

    def __init__(self, ecr_client_for: Callable[[str, str], Any]) -> None:
        self._ecr_client_for = ecr_client_for  # (account, region) -> boto3 ECR client able to read that registry
        self._tokens: dict[tuple[str, str], _CachedToken] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_clients(cls, clients: Any) -> EcrTokenProvider:
        """Tokens through ``AwsClients`` (the caller's own account, or any registry its policy lets it read)."""
        return cls(lambda _account, region: clients.client("ecr", region))

    def credentials(self, account: str, region: str) -> Credentials:
        key = (account, region)
        with self._lock:  # one GetAuthorizationToken per key even when several blobs start at once
            cached = self._tokens.get(key)
            if cached is None or time.monotonic() >= cached.refresh_at:
                cached = self._fetch(account, region)
                self._tokens[key] = cached
            return cached.credentials

    def invalidate(self, account: str, region: str) -> None:
        with self._lock:
            self._tokens.pop((account, region), None)

    def _fetch(self, account: str, region: str) -> _CachedToken:
        response = self._ecr_client_for(account, region).get_authorization_token(registryIds=[account])
        data = response["authorizationData"][0]
        username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        expires_at: datetime | None = data.get("expiresAt")
        lifetime = float(ECR_TOKEN_MAX_CACHE_SECONDS)
        if expires_at is not None:
            remaining = expires_at.timestamp() - time.time() - ECR_TOKEN_REFRESH_MARGIN_SECONDS
            lifetime = min(remaining, ECR_TOKEN_MAX_CACHE_SECONDS)
        return _CachedToken(
            Credentials(username, password), time.monotonic() + max(lifetime, ECR_TOKEN_MIN_CACHE_SECONDS)
        )


@dataclass(frozen=True)
class EcrCredentials:
    """The ECR token of one account and region, as a ``CredentialSource``."""

    provider: EcrTokenProvider
    account: str
    region: str

    def credentials(self) -> Credentials:
        return self.provider.credentials(self.account, self.region)

    def invalidate(self) -> None:
        self.provider.invalidate(self.account, self.region)
