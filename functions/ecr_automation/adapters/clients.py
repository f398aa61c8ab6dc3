"""boto3 clients: created on first use, cached per service, region and account, replaceable in tests.

The functions act in the account an event came from. In their own account they use their own credentials;
in another account of the organisation they assume the member role deployed there by
``org/member-account.yaml`` (same name in every account, with the external id), through botocore's
deferred refreshable credentials: nothing is called until the first request there, and botocore renews
the session before it expires.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    Credentials,
    DeferredRefreshableCredentials,
    create_assume_role_refresher,
)
from botocore.exceptions import ClientError

from ecr_automation.errors import MemberAccountAccessError
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
# A member-account session lasts an hour (the role's default maximum); botocore renews it 15 minutes early.
MEMBER_SESSION_SECONDS = 3600
MEMBER_SESSION_NAME = "ecr-automation"
# STS answers a role that does not trust the caller, or another external id, with AccessDenied.
REFUSALS = frozenset({"AccessDenied", "AccessDeniedException", "RegionDisabledException"})


class _RefusalReportedOnce(logging.Filter):
    """botocore logs a failed credential refresh with its traceback; the refusal is logged once, by the caller."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], MemberAccountAccessError))


logging.getLogger("botocore.credentials").addFilter(_RefusalReportedOnce())


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@dataclass(frozen=True)
class MemberAccounts:
    """How the functions reach the organisation's other accounts: one role name in each, and the external id.

    ``region`` is the functions' own region, where STS is called.
    """

    home_account: str
    role_name: str
    external_id: str = field(repr=False)  # not a secret in AWS's model, but never logged
    region: str

    def role_arn(self, account: str) -> str:
        return f"arn:{partition_of(self.region)}:iam::{account}:role/{self.role_name}"


class _GivenCredentials(CredentialProvider):
    """A credential chain of one link: the member account's deferred assumed-role credentials."""

    METHOD = "assume-role"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


class AwsClients:
    def __init__(
        self,
        session: boto3.Session | None = None,
        config: Config = DEFAULT_CLIENT_CONFIG,
        *,
        members: MemberAccounts | None = None,
    ) -> None:
        self._session = session
        self._config = config
        self._members = members
        self._clients: dict[tuple[str, ...], Any] = {}  # (service, region[, member account])
        self._member_sessions: dict[str, boto3.Session] = {}
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def acting_account(self, account: str | None) -> str | None:
        """The member account ``account`` names, or None when the functions' own credentials serve it."""
        if account is None or self._members is None or account == self._members.home_account:
            return None
        return account

    def client(self, service: str, region: str) -> Any:
        """A client with the functions' own credentials."""
        return self._cached(service, region, None)

    def client_in(self, account: str, service: str, region: str) -> Any:
        """A client acting in ``account``: the member role there, or (our own account) ``client``."""
        member = self.acting_account(account)
        if member is None or self._members is None:
            return self.client(service, region)
        sts = self.client("sts", self._members.region)  # our own credentials ask STS for the member role's
        return self._cached(service, region, member, sts)

    def _cached(self, service: str, region: str, member: str | None, sts: Any = None) -> Any:
        key = (service, region) if member is None else (service, region, member)
        with self._lock:
            if key not in self._clients:
                session = self._own_session() if member is None else self._member_session(member, sts)
                self._clients[key] = session.client(service, region_name=region, config=self._config)  # type: ignore[call-overload]
            return self._clients[key]

    def _own_session(self) -> boto3.Session:
        if self._session is None:
            self._session = boto3.Session()
        return self._session

    def _member_session(self, account: str, sts: Any) -> boto3.Session:
        """One session per member account, whatever the region: its credentials assume the role on first use."""
        if account not in self._member_sessions:
            members = self._members
            assert members is not None  # noqa: S101 - client_in asks for a member only with members set
            refresh = _refusals_named(
                create_assume_role_refresher(
                    sts,
                    {
                        "RoleArn": members.role_arn(account),
                        "RoleSessionName": MEMBER_SESSION_NAME,
                        "ExternalId": members.external_id,
                        "DurationSeconds": MEMBER_SESSION_SECONDS,
                    },
                ),
                account,
                members.role_arn(account),
            )
            self._member_sessions[account] = assumed_role_session(refresh)
        return self._member_sessions[account]


def assumed_role_session(refresh: Any) -> boto3.Session:
    """A session whose credentials come from ``refresh`` (an assume-role refresher): fetched on first use and
    renewed by botocore before they expire, so no caller keeps a timer of its own."""
    credentials = DeferredRefreshableCredentials(refresh_using=refresh, method="assume-role")
    core = botocore.session.Session()
    core.register_component("credential_provider", CredentialResolver([_GivenCredentials(credentials)]))
    return boto3.Session(botocore_session=core)


def client_in(clients: AwsClients, account: str, service: str, region: str) -> Any:
    """``clients.client_in``; a stand-in that serves only ``client(service, region)`` (tests') is asked that."""
    if isinstance(clients, AwsClients):
        return clients.client_in(account, service, region)
    return clients.client(service, region)


def _refusals_named(refresh: Any, account: str, role_arn: str) -> Any:
    """``refresh``, turning STS's refusal into one clear error (the external id never appears in it)."""

    def refresh_or_explain() -> Any:
        try:
            return refresh()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code not in REFUSALS:
                raise
            raise MemberAccountAccessError(
                account,
                f"cannot act in account {account}: STS refused to assume {role_arn} ({code}); deploy "
                "org/member-account.yaml there with this stack's external id and function role names",
            ) from None

    return refresh_or_explain
