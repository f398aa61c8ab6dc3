"""Runtime configuration, parsed once from the Lambda environment into a typed model.

This is the only module that reads ``os.environ``: everything else receives a ``Settings``.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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

# EventBridge refuses events over 256 KiB, so anything larger never came from it.
EVENTBRIDGE_MAX_EVENT_BYTES = 256 * 1024


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    region: str = Field(alias="AWS_REGION", min_length=1)
    rules_file: Path = Field(alias="RULES_FILE", default=BUNDLED_RULES_FILE)
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

    @field_validator(
        "ledger_table",
        "idempotency_table",
        "dead_letter_queue_url",
        "slack_webhook_secret_arn",
        "notify_topic_arn",
        "replication_queue_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # CloudFormation conditions render "unset" as an empty string.
        return value or None

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
        raise ConfigurationError(f"environment variable {name}: {first['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return settings_from_environment()
