"""Replication's outside world: the job queue (SQS), destination ECR repositories (other accounts through STS),
registry credentials (Secrets Manager) and the copy itself (``adapters.oci``).

Nothing here logs or formats a credential: ECR tokens and registry passwords live in ``Credentials``
objects, which hide them from ``repr``; errors name the secret, never what it holds.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.credentials import create_assume_role_refresher
from botocore.exceptions import ClientError

from ecr_automation.adapters.clients import AwsClients, assumed_role_session, client_in, partition_of
from ecr_automation.adapters.oci import (
    Copier,
    CopyError,
    CopyInterrupted,
    CopyReport,
    Credentials,
    CredentialSource,
    EcrCredentials,
    EcrTokenProvider,
    InvalidReferenceError,
    Reference,
)
from ecr_automation.logic.replicate import (
    CopyFailedError,
    CopyOutcome,
    CopyPausedError,
    EcrDestination,
    ReplicationJob,
    TagProtection,
)
from ecr_automation.models.effects import Effect, EffectSink

# SendMessageBatch takes at most 10 entries.
SQS_BATCH_SIZE = 10
SEND_ATTEMPTS = 4
SEND_BACKOFF_SECONDS = 0.2
# Assumed-role credentials are renewed this long before they expire (a copy may take minutes).
ROLE_SESSION_SECONDS = 3600
ROLE_SESSION_NAME = "ecr-automation-replication"
# Registry credentials are read again after this long, so a rotated secret is picked up.
SECRET_CACHE_SECONDS = 300


class QueueSendError(RuntimeError):
    """Jobs SQS would not take; the planner's invocation fails and EventBridge's retry plans them again."""


class RegistryCredentialsError(RuntimeError):
    """A registry's credentials secret is missing or unreadable; names the secret, never its value."""


# -- the job queue -------------------------------------------------------------------------------------
class JobQueue:
    def __init__(
        self,
        clients: AwsClients,
        queue_url: str,
        region: str,
        sink: EffectSink,
        *,
        sleep: Callable[[float], None] = time.sleep,
        dry_run: bool = False,
    ) -> None:
        self._clients = clients
        self._queue_url = queue_url
        self._region = region
        self._sink = sink
        self._sleep = sleep
        self._dry_run = dry_run

    def send(self, jobs: Sequence[ReplicationJob]) -> int:
        """Send every job (10 per call); entries SQS fails are retried, then raise ``QueueSendError``."""
        unique = list({job.job_id: job for job in jobs}.values())  # batch entry ids must be unique
        if self._dry_run:
            # A dry run changes no registry: a queued job would copy for real, so it is reported, not queued.
            for job in unique:
                self._sink.record(Effect("replication_job_skipped", {**job.summary(), "dry_run": True}))
            return len(unique)
        for start in range(0, len(unique), SQS_BATCH_SIZE):
            self._send_batch(unique[start : start + SQS_BATCH_SIZE])
        return len(unique)

    def _send_batch(self, batch: list[ReplicationJob]) -> None:
        pending = {job.job_id: job for job in batch}
        for attempt in range(SEND_ATTEMPTS):
            response = self._clients.client("sqs", self._region).send_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {
                        "Id": job.job_id,
                        "MessageBody": job.model_dump_json(),
                        "MessageAttributes": {"job_id": {"DataType": "String", "StringValue": job.job_id}},
                    }
                    for job in pending.values()
                ],
            )
            for sent in response.get("Successful", []):
                job = pending.pop(sent["Id"])
                self._sink.record(Effect("replication_job_queued", job.summary()))
            failed = response.get("Failed", [])
            refused = [entry for entry in failed if entry.get("SenderFault")]
            if refused:  # the request itself is wrong: sending it again cannot help
                entry = refused[0]
                raise QueueSendError(f"SQS refused job {entry['Id']}: {entry.get('Code')} {entry.get('Message')}")
            if not pending:
                return
            if attempt + 1 < SEND_ATTEMPTS:
                self._sleep(random.uniform(0, SEND_BACKOFF_SECONDS * 2**attempt))  # noqa: S311 - jitter
        raise QueueSendError(f"SQS failed {len(pending)} job(s) after {SEND_ATTEMPTS} attempts")


# -- other accounts ------------------------------------------------------------------------------------
class AssumedRoles:
    """``AwsClients`` acting as a role (in another account) that a [[replicate]] target names.

    The role is assumed on first use and renewed by botocore before it expires (the same refreshable
    credentials the member accounts use, ``clients.assumed_role_session``).
    """

    def __init__(self, clients: AwsClients, region: str) -> None:
        self._clients = clients
        self._region = region
        self._roles: dict[str, AwsClients] = {}
        self._lock = threading.Lock()

    def clients_for(self, role_arn: str | None) -> AwsClients:
        """The function's own clients for None; the role's otherwise."""
        if role_arn is None:
            return self._clients
        with self._lock:
            if role_arn not in self._roles:
                refresh = create_assume_role_refresher(
                    self._clients.client("sts", self._region),
                    {
                        "RoleArn": role_arn,
                        "RoleSessionName": ROLE_SESSION_NAME,
                        "DurationSeconds": ROLE_SESSION_SECONDS,
                    },
                )
                self._roles[role_arn] = AwsClients(assumed_role_session(refresh))
            return self._roles[role_arn]


# -- destination repositories ----------------------------------------------------------------------------
def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class EcrDestinations:
    """Creates missing destination ECR repositories with the rule's settings (once per process and repository)."""

    def __init__(self, clients: AwsClients, roles: AssumedRoles, sink: EffectSink) -> None:
        self._clients = clients
        self._roles = roles
        self._sink = sink
        self._known: set[tuple[str, str, str]] = set()

    def ensure_repository(self, job: ReplicationJob) -> bool:
        destination, settings = job.destination, job.create_repository
        if not isinstance(destination, EcrDestination) or settings is None:
            return False
        key = (destination.account, destination.region, destination.repository)
        if key in self._known:
            return False
        ecr = self._roles.clients_for(destination.role_arn).client("ecr", destination.region)
        try:
            ecr.describe_repositories(repositoryNames=[destination.repository])
            self._known.add(key)
            return False
        except ClientError as error:
            if _error_code(error) != "RepositoryNotFoundException":
                raise
        encryption: dict[str, str] = {"encryptionType": settings.encryption}
        if settings.kms_key:
            encryption["kmsKey"] = settings.kms_key
        arguments: dict[str, Any] = {
            "repositoryName": destination.repository,
            "imageTagMutability": settings.tag_mutability,
            "imageScanningConfiguration": {"scanOnPush": settings.scan_on_push},
            "encryptionConfiguration": encryption,
        }
        if settings.copy_resource_tags:
            arguments["tags"] = self._source_tags(job)
        try:
            ecr.create_repository(**arguments)
        except ClientError as error:
            if _error_code(error) != "RepositoryAlreadyExistsException":  # another worker was first
                raise
            self._known.add(key)
            return False
        self._known.add(key)
        self._sink.record(
            Effect(
                "repository_created",
                {
                    "account": destination.account,
                    "region": destination.region,
                    "repository": destination.repository,
                    "scan_on_push": settings.scan_on_push,
                    "tag_mutability": settings.tag_mutability,
                },
            )
        )
        return True

    def _source_tags(self, job: ReplicationJob) -> list[dict[str, str]]:
        source = job.source
        arn = f"arn:{partition_of(source.region)}:ecr:{source.region}:{source.account}:repository/{source.repository}"
        ecr = client_in(self._clients, source.account, "ecr", source.region)  # the source's account acts
        response = ecr.list_tags_for_resource(resourceArn=arn)
        return [{"Key": tag["Key"], "Value": tag["Value"]} for tag in response.get("tags", [])]


# -- registry credentials ----------------------------------------------------------------------------------
@dataclass
class _CachedSecret:
    credentials: Credentials
    read_at: float


def parse_registry_credentials(text: str) -> Credentials:
    """``user:password``, or JSON ``{"username": ..., "password": ...}``; the error never quotes the text."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError:
            raise ValueError("the secret looks like JSON but is not valid JSON") from None
        username = document.get("username") or document.get("user") if isinstance(document, dict) else None
        password = document.get("password") if isinstance(document, dict) else None
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            raise ValueError('the secret\'s JSON needs "username" and "password" strings')
        return Credentials(username, password)
    try:
        return Credentials.parse(stripped)
    except ValueError:
        raise ValueError("the secret must hold user:password or JSON with username and password") from None


class RegistrySecrets:
    """Registry credentials read from Secrets Manager, cached for a few minutes."""

    def __init__(self, clients: AwsClients, region: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clients = clients
        self._region = region
        self._clock = clock
        self._cache: dict[str, _CachedSecret] = {}
        self._lock = threading.Lock()

    def credentials(self, secret: str) -> Credentials:
        with self._lock:
            cached = self._cache.get(secret)
            if cached is None or self._clock() - cached.read_at >= SECRET_CACHE_SECONDS:
                cached = _CachedSecret(self._read(secret), self._clock())
                self._cache[secret] = cached
            return cached.credentials

    def forget(self, secret: str) -> None:
        with self._lock:
            self._cache.pop(secret, None)

    def _read(self, secret: str) -> Credentials:
        region = secret.split(":")[3] if secret.startswith("arn:") else self._region
        try:
            value = self._clients.client("secretsmanager", region).get_secret_value(SecretId=secret)
        except ClientError as error:
            raise RegistryCredentialsError(f"cannot read registry credentials {secret}: {_error_code(error)}") from None
        try:
            return parse_registry_credentials(str(value.get("SecretString") or ""))
        except ValueError as error:
            raise RegistryCredentialsError(f"registry credentials {secret}: {error}") from None


@dataclass(frozen=True)
class _SecretCredentials:
    """A ``CredentialSource`` reading a secret on use, so a rotated password is picked up."""

    secrets: RegistrySecrets
    secret: str

    def credentials(self) -> Credentials:
        return self.secrets.credentials(self.secret)

    def invalidate(self) -> None:
        self.secrets.forget(self.secret)


# -- the copy ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Endpoint:
    host: str  # host[:port], as in image references
    secure: bool


def ecr_host(account: str, region: str) -> str:
    suffix = ".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com"
    return f"{account}.dkr.ecr.{region}{suffix}"


def _endpoint_of(url: str) -> _Endpoint:
    parts = urlsplit(url)
    return _Endpoint(parts.netloc, parts.scheme != "http")


class OciCopy:
    """Copies a job's image with ``adapters.oci.Copier``: ECR tokens for ECR, Secrets Manager credentials otherwise.

    ``endpoint_overrides`` maps ECR hosts to other URLs (a local registry standing in for ECR).
    """

    def __init__(
        self,
        clients: AwsClients,
        roles: AssumedRoles,
        secrets: RegistrySecrets,
        sink: EffectSink,
        *,
        endpoint_overrides: dict[str, str] | None = None,
        insecure: bool = False,
    ) -> None:
        self._clients = clients
        self._roles = roles
        self._secrets = secrets
        self._sink = sink
        self._overrides = {host.lower(): url for host, url in (endpoint_overrides or {}).items()}
        self._insecure = insecure
        self._token_providers: dict[str | None, EcrTokenProvider] = {}
        # The source registry's token, from the account the image is in (a member account's role, or ours).
        self._source_tokens = EcrTokenProvider(lambda account, region: client_in(clients, account, "ecr", region))
        self._copiers: dict[tuple[str, str, bool, str], Copier] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        for copier in self._copiers.values():
            copier.close()

    def copy(self, job: ReplicationJob, *, deadline: float | None, protected: TagProtection) -> CopyOutcome:
        source = job.source
        source_endpoint = self._ecr_endpoint(source.account, source.region)
        source_credentials = EcrCredentials(self._source_tokens, source.account, source.region)
        destination = job.destination
        destination_credentials: CredentialSource | None
        if isinstance(destination, EcrDestination):
            destination_endpoint = self._ecr_endpoint(destination.account, destination.region)
            destination_credentials = EcrCredentials(
                self._tokens(destination.role_arn), destination.account, destination.region
            )
            identity = destination.role_arn or ""
        else:
            destination_endpoint = _endpoint_of(destination.url)
            secret = destination.credentials_secret
            destination_credentials = _SecretCredentials(self._secrets, secret) if secret else None
            identity = secret or ""
        insecure = self._plain_http(source_endpoint, destination_endpoint)
        copier = self._copier(
            (source_endpoint.host, destination_endpoint.host, insecure, identity),
            source_credentials,
            destination_credentials,
        )
        try:
            report = copier.copy(
                Reference(source_endpoint.host, source.repository, digest=source.digest),
                Reference(destination_endpoint.host, destination.repository, tag=source.tag),
                referrers=job.referrers,
                deadline=deadline,
                protected=protected,
            )
        except CopyError as error:
            raise CopyFailedError(str(error)) from None
        except CopyInterrupted as error:
            raise CopyPausedError(str(error)) from None
        except (InvalidReferenceError, RegistryCredentialsError) as error:
            raise CopyFailedError(str(error)) from None
        self._sink.record(Effect("image_copied", {"job_id": job.job_id, **_report_summary(report)}))
        return CopyOutcome(
            digest=report.digest,
            blobs_copied=report.blobs_copied + report.blobs_mounted,
            blobs_skipped=report.blobs_skipped,
            bytes_copied=report.bytes_copied,
            manifests_copied=report.manifests_copied,
            tags_written=list(report.tags_written),
            tag_conflicts=list(report.tag_conflicts),
            seconds=report.seconds,
        )

    def _ecr_endpoint(self, account: str, region: str) -> _Endpoint:
        host = ecr_host(account, region)
        override = self._overrides.get(host)
        return _endpoint_of(override) if override else _Endpoint(host, secure=True)

    def _plain_http(self, source: _Endpoint, destination: _Endpoint) -> bool:
        if source.secure and destination.secure:
            return False
        if not self._insecure:
            plain = source.host if not source.secure else destination.host
            raise CopyFailedError(f"{plain} is a plain-HTTP registry: refused unless REGISTRY_INSECURE is true")
        if source.secure != destination.secure:
            raise CopyFailedError(
                f"cannot copy between HTTPS {source.host if source.secure else destination.host} and plain-HTTP "
                f"{destination.host if source.secure else source.host} in one copy"
            )
        return True

    def _tokens(self, role_arn: str | None) -> EcrTokenProvider:
        with self._lock:
            if role_arn not in self._token_providers:
                roles = self._roles
                self._token_providers[role_arn] = EcrTokenProvider(
                    lambda _account, region: roles.clients_for(role_arn).client("ecr", region)
                )
            return self._token_providers[role_arn]

    def _copier(
        self,
        key: tuple[str, str, bool, str],
        source_credentials: CredentialSource,
        destination_credentials: CredentialSource | None,
    ) -> Copier:
        """One copier per (source host, destination host, plain HTTP, destination identity): warm invocations reuse
        its connections and tokens."""
        insecure = key[2]
        with self._lock:
            if key not in self._copiers:
                self._copiers[key] = Copier(
                    source_credentials=source_credentials,
                    destination_credentials=destination_credentials,
                    insecure=insecure,
                )
            return self._copiers[key]


def _report_summary(report: CopyReport) -> dict[str, Any]:
    return {
        "destination": report.destination,
        "digest": report.digest,
        "blobs_copied": report.blobs_copied,
        "blobs_mounted": report.blobs_mounted,
        "blobs_skipped": report.blobs_skipped,
        "bytes_copied": report.bytes_copied,
        "tags_written": report.tags_written,
        "tag_conflicts": report.tag_conflicts,
    }
