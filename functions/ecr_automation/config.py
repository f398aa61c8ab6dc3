"""Runtime configuration, parsed once from the Lambda environment into a typed model.

This is the only module that reads ``os.environ``: everything else receives a ``Settings``.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ecr_automation.errors import BUNDLED_RULES_FILE, ConfigurationError

# The errors live in a module that loads nothing (the CLI starts fast); they are re-exported here.
__all__ = [
    "BUNDLED_RULES_FILE",
    "EVENTBRIDGE_MAX_EVENT_BYTES",
    "ConfigurationError",
    "Settings",
    "get_settings",
    "settings_from_environment",
]

# AppConfig refuses a configuration session polled more often than every 15 seconds.
APPCONFIG_MIN_POLL_SECONDS = 15

# EventBridge refuses events over 256 KiB, so anything larger never came from it.
EVENTBRIDGE_MAX_EVENT_BYTES = 256 * 1024


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    region: str = Field(alias="AWS_REGION", min_length=1)
    rules_file: Path = Field(alias="RULES_FILE", default=BUNDLED_RULES_FILE)
    # Rules without a deploy (adapters/rules_source.py): "file" reads RULES_FILE; "appconfig" or "ssm" read the
    # TOML document from that store through Powertools Parameters, cached for RULES_CACHE_SECONDS.
    rules_source: Literal["file", "appconfig", "ssm"] = Field(alias="RULES_SOURCE", default="file")
    rules_cache_seconds: int = Field(alias="RULES_CACHE_SECONDS", default=60, ge=0, le=86400)
    rules_ssm_parameter: str | None = Field(alias="RULES_SSM_PARAMETER", default=None)
    rules_appconfig_application: str | None = Field(alias="RULES_APPCONFIG_APPLICATION", default=None)
    rules_appconfig_environment: str | None = Field(alias="RULES_APPCONFIG_ENVIRONMENT", default=None)
    rules_appconfig_profile: str | None = Field(alias="RULES_APPCONFIG_PROFILE", default=None)
    ledger_table: str | None = Field(alias="TAG_LEDGER_TABLE", default=None)
    idempotency_table: str | None = Field(alias="IDEMPOTENCY_TABLE", default=None)
    event_bus_name: str = Field(alias="EVENT_BUS_NAME", default="default")
    dead_letter_queue_url: str | None = Field(alias="DEAD_LETTER_QUEUE_URL", default=None)
    dry_run: bool = Field(alias="DRY_RUN", default=False)
    max_event_bytes: int = Field(alias="MAX_EVENT_BYTES", default=EVENTBRIDGE_MAX_EVENT_BYTES, gt=0)
    # The notifier's default Slack route: the ARN of the Secrets Manager secret holding the webhook
    # URL, never the URL itself (that is a credential, read at run time).
    slack_webhook_secret_arn: str | None = Field(alias="SLACK_WEBHOOK_SECRET_ARN", default=None)
    # An SNS topic every message is also published to (optional).
    notify_topic_arn: str | None = Field(alias="NOTIFY_TOPIC_ARN", default=None)
    # The queue the replication planner sends jobs to (and the worker consumes).
    replication_queue_url: str | None = Field(alias="REPLICATION_QUEUE_URL", default=None)
    # JSON {"<account>.dkr.ecr.<region>.amazonaws.com": "http://127.0.0.1:5000"}: where to reach an ECR
    # registry instead of its own endpoint (the local runner and tests map ECR hosts to local registries).
    registry_endpoint_overrides: dict[str, str] = Field(alias="REGISTRY_ENDPOINT_OVERRIDES", default_factory=dict)
    # Allow plain-HTTP registries (a local one); never in a deployment.
    registry_insecure: bool = Field(alias="REGISTRY_INSECURE", default=False)
    # How often SQS delivers a replication job before its dead-letter queue takes it (the template's
    # maxReceiveCount): the worker reports a failure on the last delivery only.
    replication_max_receives: int = Field(alias="REPLICATION_MAX_RECEIVES", default=5, gt=0)
    # Task root of the deployed function: relative RULES_FILE paths resolve against it.
    task_root: Path | None = Field(alias="LAMBDA_TASK_ROOT", default=None)
    # One deployment for an organisation: the account the functions run in (the template sets it, so no
    # call finds it out), and the role of MEMBER_ACCOUNT_ROLE_NAME they assume, with the external id, in any
    # other account an event comes from (org/member-account.yaml). Without an external id every account is
    # acted on with the functions' own credentials, as before (the account id is then not even read).
    application_account_id: str | None = Field(alias="APPLICATION_ACCOUNT_ID", default=None)
    member_account_role_name: str | None = Field(
        alias="MEMBER_ACCOUNT_ROLE_NAME", default=None, pattern=r"^[A-Za-z0-9_+=,.@-]{1,64}$"
    )
    # Not a secret in AWS's model, but kept out of repr and logs all the same.
    member_account_external_id: str | None = Field(
        alias="MEMBER_ACCOUNT_EXTERNAL_ID",
        default=None,
        repr=False,
        min_length=2,
        max_length=1224,
        pattern=r"^[A-Za-z0-9_+=,.@:/-]+$",
    )

    @field_validator("member_account_external_id")
    @classmethod
    def _member_accounts_complete(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Declared last of the three, so the other two are known here. An external id switches the member role on.
        account = info.data.get("application_account_id") or ""
        if value and not (info.data.get("member_account_role_name") and re.fullmatch(r"\d{12}", account)):
            raise ValueError("needs MEMBER_ACCOUNT_ROLE_NAME and APPLICATION_ACCOUNT_ID (12 digits) as well")
        return value

    @field_validator(
        "ledger_table",
        "idempotency_table",
        "dead_letter_queue_url",
        "slack_webhook_secret_arn",
        "notify_topic_arn",
        "replication_queue_url",
        "rules_ssm_parameter",
        "rules_appconfig_application",
        "rules_appconfig_environment",
        "rules_appconfig_profile",
        "application_account_id",
        "member_account_role_name",
        "member_account_external_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # The template renders "unset" as an empty string: a condition false, a rules store not chosen, no organisation.
        return value or None

    @model_validator(mode="after")
    def _rules_store_named(self) -> Self:
        if self.rules_source == "ssm" and not self.rules_ssm_parameter:
            raise ValueError("RULES_SOURCE=ssm needs RULES_SSM_PARAMETER")
        if self.rules_source == "appconfig":
            names = ("APPLICATION", "ENVIRONMENT", "PROFILE")
            missing = [
                f"RULES_APPCONFIG_{name}" for name in names if not getattr(self, f"rules_appconfig_{name.lower()}")
            ]
            if missing:
                raise ValueError(f"RULES_SOURCE=appconfig needs {' and '.join(missing)}")
            if self.rules_cache_seconds < APPCONFIG_MIN_POLL_SECONDS:
                raise ValueError(f"RULES_CACHE_SECONDS must be at least {APPCONFIG_MIN_POLL_SECONDS} with AppConfig")
        return self

    @field_validator("slack_webhook_secret_arn")
    @classmethod
    def _a_secret_not_a_url(cls, value: str | None) -> str | None:
        # The error names the mistake, never the value: it may be the very credential.
        if value is not None and "://" in value:
            raise ValueError("must name the Secrets Manager secret holding the webhook URL, not the URL itself")
        return value

    @field_validator("registry_endpoint_overrides", mode="before")
    @classmethod
    def _overrides_from_json(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON ({error.msg} at character {error.pos})") from None

    @field_validator("registry_endpoint_overrides")
    @classmethod
    def _overrides_are_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for host, url in value.items():
            if not re.fullmatch(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?", host):
                raise ValueError(f"{host!r} is not a registry host")
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?/?", url):
                raise ValueError(f"{host!r} maps to {url!r}, not to a registry URL such as http://127.0.0.1:5000")
        return value

    @property
    def resolved_rules_file(self) -> Path:
        if self.rules_file.is_absolute() or self.task_root is None:
            return self.rules_file
        return self.task_root / self.rules_file


def settings_from_environment(environ: dict[str, str] | None = None) -> Settings:
    source = dict(os.environ if environ is None else environ)
    source.setdefault("AWS_REGION", source.get("AWS_DEFAULT_REGION", ""))
    known = {field.alias for field in Settings.model_fields.values() if field.alias}
    try:
        return Settings.model_validate({key: value for key, value in source.items() if key in known})
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        # A check across variables (model_validator) has no location: its message names them.
        where = f"environment variable {name}" if name else "environment"
        raise ConfigurationError(f"{where}: {first['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return settings_from_environment()
