"""The wiring: which adapter serves which port, built lazily on first use and cached.

Handlers ask ``get_dependencies()``; tests and the local runner install their own with
``use_dependencies()``. Nothing here touches the network until an adapter is first used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING

from ecr_automation.adapters.clients import AwsClients, MemberAccounts
from ecr_automation.adapters.dead_letters import DeadLetterQueue, NoDeadLetterQueue
from ecr_automation.adapters.ecr import EcrRegistry
from ecr_automation.adapters.effects_log import LoggingSink
from ecr_automation.adapters.ledger import TagLedger
from ecr_automation.adapters.publisher import EventPublisher
from ecr_automation.adapters.rules_source import RulesRefresh, RulesSource, rules_source_for
from ecr_automation.config import ConfigurationError, Settings, get_settings
from ecr_automation.models.effects import EffectSink
from ecr_automation.rules import Rules

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from ecr_automation.adapters.findings import EcrFindings
    from ecr_automation.adapters.lifecycle import EcrLifecycle
    from ecr_automation.adapters.replication import AssumedRoles, JobQueue, OciCopy
    from ecr_automation.logic.guard import TagGuard
    from ecr_automation.logic.lifecycle import LifecycleGuard
    from ecr_automation.logic.notify import Notifier
    from ecr_automation.logic.ownership import ClaimAcceptance
    from ecr_automation.logic.ports import MessageSink
    from ecr_automation.logic.replicate import PlatformScans, Replicator
    from ecr_automation.logic.retag import Retagger

# The cached properties built on the rules: forgotten when the rules change, so they follow them.
# tests/unit/test_rules_source.py checks that every property reading ``self.rules`` is listed.
RULE_DEPENDENT = (
    "tag_guard",
    "retagger",
    "notifier",
    "message_sinks",
    "claim_acceptance",
    "replicator",
    "lifecycle_guard",
)


class Dependencies:
    def __init__(self, settings: Settings, clients: AwsClients | None = None, sink: EffectSink | None = None) -> None:
        self.settings = settings
        self.clients = clients or AwsClients(members=member_accounts(settings))
        self.sink: EffectSink = sink or LoggingSink()

    # -- the rules: the bundled file, or AppConfig / SSM (adapters/rules_source.py) ------------------
    @cached_property
    def rules_source(self) -> RulesSource:
        return rules_source_for(self.settings, self.clients)

    @cached_property
    def rules(self) -> Rules:
        """The rules in use: the source's on first use; ``refresh_rules`` replaces them when they change."""
        return self.rules_source.refresh().require()

    def refresh_rules(self) -> RulesRefresh:
        """Follow the source's current rules (handlers/rules_refresh.py, before each event or job).

        When the rules changed, the objects built on them (``RULE_DEPENDENT``) are built again on next
        use, with the same clients and adapters; nothing else is rebuilt.
        """
        refresh = self.rules_source.refresh()
        in_use = self.__dict__.get("rules")  # what the cached_property holds, if it ran
        if refresh.rules is not None and refresh.rules is not in_use:
            self.__dict__["rules"] = refresh.rules
            if in_use is not None:
                for name in RULE_DEPENDENT:
                    self.__dict__.pop(name, None)
        return refresh

    @cached_property
    def registry(self) -> EcrRegistry:
        return EcrRegistry(self.clients, self.sink, dry_run=self.settings.dry_run)

    @cached_property
    def ledger(self) -> TagLedger:
        if not self.settings.ledger_table:
            raise ConfigurationError("environment variable TAG_LEDGER_TABLE: required by this function")
        return TagLedger(self.clients, self.settings.ledger_table, self.settings.region, self.sink)

    # -- each function's logic, imported where it is built: a function loads its own alone (its handler
    # imports it at init), never another's (the tag guard never loads retag's logic, and so on) ---------
    @cached_property
    def tag_guard(self) -> TagGuard:
        from ecr_automation.logic.guard import TagGuard  # noqa: PLC0415 - cold start

        return TagGuard(self.rules, self.registry, self.ledger, self.publisher)

    @cached_property
    def retagger(self) -> Retagger:
        from ecr_automation.logic.ownership import ClaimAcceptance, Ownership  # noqa: PLC0415
        from ecr_automation.logic.retag import Retagger  # noqa: PLC0415 - cold start

        # Retag asks the same ownership question the guard enforces, through a port of its own.
        acceptance = ClaimAcceptance(self.rules, Ownership(self.ledger, self.registry))
        return Retagger(self.rules, self.registry, self.ledger, acceptance)

    # -- the notifier (imported on first use: the other functions never load Slack or its adapters) --
    @cached_property
    def notifier(self) -> Notifier:
        from ecr_automation.logic.notify import Notifier  # noqa: PLC0415 - cold start

        return Notifier(
            self.rules, self.findings, self.ledger, self.message_sinks, self.registry, clock=lambda: datetime.now(UTC)
        )

    @cached_property
    def findings(self) -> EcrFindings:
        from ecr_automation.adapters.findings import EcrFindings  # noqa: PLC0415

        return EcrFindings(self.clients)

    @cached_property
    def message_sinks(self) -> list[MessageSink]:
        """Where messages go; the local runner replaces this list with one that prints them."""
        sinks: list[MessageSink] = []
        routed = any(rule.route for rule in self.rules.notify)
        if self.settings.slack_webhook_secret_arn or routed:
            from ecr_automation.adapters.slack import SlackWebhookSink, WebhookSecrets  # noqa: PLC0415

            secrets = WebhookSecrets(self.clients, self.settings.region)
            sinks.append(SlackWebhookSink(secrets, self.settings.slack_webhook_secret_arn or "", self.sink))
        if self.settings.notify_topic_arn:
            from ecr_automation.adapters.sns import SnsSink  # noqa: PLC0415

            sinks.append(SnsSink(self.clients, self.settings.notify_topic_arn, self.settings.region, self.sink))
        return sinks

    # -- replication (imported on first use: only the planner and the worker load them) ----------------
    @cached_property
    def claim_acceptance(self) -> ClaimAcceptance:
        """The tag guard's answer to "may I act on this push?", as retag asks it."""
        from ecr_automation.logic.ownership import ClaimAcceptance, Ownership  # noqa: PLC0415 - cold start

        return ClaimAcceptance(self.rules, Ownership(self.ledger, self.registry))

    @cached_property
    def platform_scans(self) -> PlatformScans:
        """For the scan gate of a multi-arch image: the indexes retag recorded, and ECR's scans."""
        from ecr_automation.logic.replicate import PlatformScans  # noqa: PLC0415 - cold start: planner only

        return PlatformScans(self.registry, self.ledger)

    @cached_property
    def replication_queue(self) -> JobQueue:
        from ecr_automation.adapters.replication import JobQueue  # noqa: PLC0415 - cold start

        if not self.settings.replication_queue_url:
            raise ConfigurationError("environment variable REPLICATION_QUEUE_URL: required by this function")
        return JobQueue(
            self.clients,
            self.settings.replication_queue_url,
            self.settings.region,
            self.sink,
            dry_run=self.settings.dry_run,
        )

    @cached_property
    def assumed_roles(self) -> AssumedRoles:
        from ecr_automation.adapters.replication import AssumedRoles  # noqa: PLC0415

        return AssumedRoles(self.clients, self.settings.region)

    @cached_property
    def image_copier(self) -> OciCopy:
        from ecr_automation.adapters.replication import OciCopy, RegistrySecrets  # noqa: PLC0415

        return OciCopy(
            self.clients,
            self.assumed_roles,
            RegistrySecrets(self.clients, self.settings.region),
            self.sink,
            endpoint_overrides=self.settings.registry_endpoint_overrides,
            insecure=self.settings.registry_insecure,
        )

    @cached_property
    def replicator(self) -> Replicator:
        from ecr_automation.adapters.replication import EcrDestinations  # noqa: PLC0415
        from ecr_automation.logic.replicate import Replicator  # noqa: PLC0415

        destinations = EcrDestinations(self.clients, self.assumed_roles, self.sink)
        return Replicator(self.rules, self.image_copier, destinations, self.publisher)

    # -- lifecycle guardrails (imported on first use: only the lifecycle guard loads them) ---------------
    @cached_property
    def lifecycle_source(self) -> EcrLifecycle:
        from ecr_automation.adapters.lifecycle import PREVIEW_CLIENT_CONFIG, EcrLifecycle  # noqa: PLC0415

        preview_clients = AwsClients(config=PREVIEW_CLIENT_CONFIG, members=member_accounts(self.settings))
        return EcrLifecycle(self.clients, preview_clients=preview_clients)

    @cached_property
    def lifecycle_guard(self) -> LifecycleGuard:
        from ecr_automation.logic.lifecycle import LifecycleChecker, LifecycleGuard  # noqa: PLC0415

        checker = LifecycleChecker(self.rules, self.lifecycle_source, clock=lambda: datetime.now(UTC))
        return LifecycleGuard(checker, self.publisher, self.ledger)

    @cached_property
    def publisher(self) -> EventPublisher:
        return EventPublisher(self.clients, self.settings.event_bus_name, self.settings.region, self.sink)

    @cached_property
    def dead_letters(self) -> DeadLetterQueue | NoDeadLetterQueue:
        if not self.settings.dead_letter_queue_url:
            return NoDeadLetterQueue()
        return DeadLetterQueue(self.clients, self.settings.dead_letter_queue_url, self.settings.region, self.sink)

    @cached_property
    def idempotency_store(self) -> DynamoDBPersistenceLayer | None:
        if not self.settings.idempotency_table:
            return None
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer  # noqa: PLC0415 - cold start

        return DynamoDBPersistenceLayer(
            table_name=self.settings.idempotency_table,
            boto3_client=self.clients.client("dynamodb", self.settings.region),
        )


def member_accounts(settings: Settings) -> MemberAccounts | None:
    """The member role the functions assume in the organisation's other accounts: configured by an external id."""
    role_name, external_id = settings.member_account_role_name, settings.member_account_external_id
    if not (role_name and external_id and settings.application_account_id):
        return None
    return MemberAccounts(settings.application_account_id, role_name, external_id, settings.region)


_current: Dependencies | None = None


def get_dependencies() -> Dependencies:
    global _current  # noqa: PLW0603 - one container per Lambda execution environment
    if _current is None:
        _current = Dependencies(get_settings())
    return _current


def use_dependencies(dependencies: Dependencies | None) -> None:
    """Install a container (tests, local runner); None forgets it so the next call rebuilds."""
    global _current  # noqa: PLW0603
    _current = dependencies
