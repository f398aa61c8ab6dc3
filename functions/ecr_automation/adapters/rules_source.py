"""Where the rules come from: the file shipped with the code, or AWS AppConfig or an SSM parameter.

The file is the default (``RULES_SOURCE=file``). With ``appconfig`` or ``ssm`` the rules are a TOML
document in that store, read through Powertools Parameters, which caches it for
``RULES_CACHE_SECONDS``; each new version is checked by ``rules_from_document``, the same function
``ecr-automation check-config`` runs on a file, so what the check accepts is exactly what the functions
accept.

A new version that fails the check is refused: the functions keep the last valid rules and report the
refusal once per version (``RulesRefresh.rejected``; handlers/rules_refresh.py logs it and counts
``RulesRejected``). A store that cannot be read is asked again only once the cache time has passed
(Powertools caches values, not failures), and reported once per outage (``RulesUnavailable``).

A cold start has no last valid rules: when the store's version is invalid or the store cannot be read,
the invocation fails (the event is retried, then dead-lettered, and replayed once the rules are fixed).
It does not fall back to the bundled file: that file is a generic default, not this deployment's
policy, and acting on it could revert, delete or write tags the deployment's own rules allow.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ecr_automation.config import APPCONFIG_MIN_POLL_SECONDS, ConfigurationError
from ecr_automation.rules import Rules, parse_rules

if TYPE_CHECKING:
    from ecr_automation.adapters.clients import AwsClients
    from ecr_automation.config import Settings


def rules_from_document(document: bytes | str, *, origin: str) -> Rules:
    """The one check of a rules document (UTF-8 TOML), wherever it comes from; ConfigurationError in one line."""
    if isinstance(document, bytes):
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigurationError(f"{origin}: not UTF-8 text (byte {error.start})") from None
    return parse_rules(document, origin=origin)


def rules_from_file(path: Path) -> Rules:
    try:
        document = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read rules file {path}: {error.strerror}") from None
    return rules_from_document(document, origin=str(path))


def document_version(document: bytes | str) -> str:
    """A short name for one version of a rules document: the start of its SHA-256, as logs and check-config show it."""
    data = document.encode("utf-8") if isinstance(document, str) else document
    return hashlib.sha256(data).hexdigest()[:12]


@dataclass(frozen=True)
class RulesRefresh:
    """What one refresh found; ``rejected`` and ``unavailable`` are set the first time only (reported once)."""

    rules: Rules | None  # the rules in use; None only before any valid version was loaded (a cold start)
    origin: str
    version: str = ""  # of the rules in use
    changed: bool = False  # a new version replaced the rules in use
    rejected: str | None = None  # why a version seen for the first time was refused
    unavailable: str | None = None  # why the store could not be read, at the start of an outage
    problem: str | None = None  # why there are no rules (with ``rules`` None), on every refresh

    def require(self) -> Rules:
        if self.rules is None:
            raise ConfigurationError(f"no valid rules to act on: {self.problem}")
        return self.rules


class RulesSource(Protocol):
    def refresh(self) -> RulesRefresh: ...


@lru_cache(maxsize=8)
def _bundled(path: Path) -> Rules:
    return rules_from_file(path)


class FileRules:
    """The rules file in the function package: read once (the package is read-only), never changes."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def refresh(self) -> RulesRefresh:
        return RulesRefresh(_bundled(self._path), origin=str(self._path))


class RulesUnavailableError(Exception):
    """The store could not be read (one line, naming the store)."""


class RulesStore(Protocol):
    """A remote store holding the rules document; ``fetch`` returns it as cached by Powertools Parameters."""

    origin: str

    def fetch(self) -> bytes | str: ...


class RemoteRules:
    """The last valid rules of a store: each new version is checked, an invalid one refused and reported once."""

    def __init__(self, store: RulesStore, *, retry_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: Rules | None = None
        self._document: bytes | str | None = None
        self._version = ""
        self._rejected: tuple[str, str] | None = None  # (version, reason) of the newest refused version
        self._failure: str | None = None  # why the last fetch failed, while the store stays unreachable
        self._retry_at = 0.0

    def refresh(self) -> RulesRefresh:
        with self._lock:
            if self._failure is not None and self._clock() < self._retry_at:
                return self._outcome()  # the store failed recently: not asked again before the cache time
            try:
                document = self._store.fetch()
            except RulesUnavailableError as error:
                first = self._failure is None
                self._failure, self._retry_at = str(error), self._clock() + self._retry_seconds
                return self._outcome(unavailable=self._failure if first else None)
            self._failure = None
            # Powertools returns the very object it cached until the cache time passes: nothing to parse.
            if document is self._document or document == self._document:
                return self._outcome()
            return self._adopt(document)

    def _adopt(self, document: bytes | str) -> RulesRefresh:
        version = document_version(document)
        if self._rejected is not None and self._rejected[0] == version:
            return self._outcome()  # refused already, and reported then
        try:
            rules = rules_from_document(document, origin=f"{self._store.origin} (version {version})")
        except ConfigurationError as error:
            self._rejected = (version, str(error))
            return self._outcome(rejected=str(error))
        changed = self._rules is not None
        self._rules, self._document, self._version, self._rejected = rules, document, version, None
        return self._outcome(changed=changed)

    def _outcome(self, **found: Any) -> RulesRefresh:
        problem = None
        if self._rules is None:
            problem = self._rejected[1] if self._rejected is not None else self._failure
        return RulesRefresh(self._rules, self._store.origin, self._version, problem=problem, **found)


class SsmRulesStore:
    """A String parameter holding the TOML rules (ssm:GetParameter on that parameter only)."""

    def __init__(self, clients: AwsClients, region: str, name: str, *, max_age: int) -> None:
        from aws_lambda_powertools.utilities.parameters import SSMProvider  # noqa: PLC0415 - only when chosen

        self.origin = f"SSM parameter {name}"
        self._name = name
        self._max_age = max_age
        self._provider = SSMProvider(boto3_client=clients.client("ssm", region))

    def fetch(self) -> bytes | str:
        from aws_lambda_powertools.utilities.parameters import GetParameterError  # noqa: PLC0415

        try:
            value = self._provider.get(self._name, max_age=self._max_age)
        except GetParameterError as error:
            raise RulesUnavailableError(f"{self.origin}: {error}") from None
        return _document(value, self.origin)


class AppConfigRulesStore:
    """A freeform AppConfig configuration profile holding the TOML rules, as deployed to one environment."""

    def __init__(
        self, clients: AwsClients, region: str, application: str, environment: str, profile: str, *, max_age: int
    ) -> None:
        self.origin = f"AppConfig {application}/{environment}/{profile}"
        self._client = clients.client("appconfigdata", region)
        self._application, self._environment, self._profile = application, environment, profile
        self._max_age = max_age
        self._provider = self._session()

    def _session(self) -> Any:
        from aws_lambda_powertools.utilities.parameters import AppConfigProvider  # noqa: PLC0415 - only when chosen

        return AppConfigProvider(self._environment, self._application, boto3_client=self._client)

    def fetch(self) -> bytes | str:
        from aws_lambda_powertools.utilities.parameters import GetParameterError  # noqa: PLC0415

        try:
            value = self._provider.get(
                self._profile,
                max_age=self._max_age,
                # The session's own poll limit, so a poll after the cache time is never "too early".
                RequiredMinimumPollIntervalInSeconds=max(APPCONFIG_MIN_POLL_SECONDS, self._max_age),
            )
        except GetParameterError as error:
            # Powertools keeps polling with the session's token, which expires after 24 hours: start a new
            # session next time instead, so one failure cannot turn into failures for good.
            self._provider = self._session()
            raise RulesUnavailableError(f"{self.origin}: {error}") from None
        return _document(value, self.origin)


def _document(value: object, origin: str) -> bytes | str:
    if not isinstance(value, bytes | str):
        raise RulesUnavailableError(f"{origin}: no document ({type(value).__name__})")
    return value


def rules_source_for(settings: Settings, clients: AwsClients) -> RulesSource:
    """The source the settings name; the stores' clients are created here, once per execution environment."""
    if settings.rules_source == "ssm":
        store: RulesStore = SsmRulesStore(
            clients, settings.region, settings.rules_ssm_parameter or "", max_age=settings.rules_cache_seconds
        )
    elif settings.rules_source == "appconfig":
        store = AppConfigRulesStore(
            clients,
            settings.region,
            settings.rules_appconfig_application or "",
            settings.rules_appconfig_environment or "",
            settings.rules_appconfig_profile or "",
            max_age=settings.rules_cache_seconds,
        )
    else:
        return FileRules(settings.resolved_rules_file)
    return RemoteRules(store, retry_seconds=settings.rules_cache_seconds)
