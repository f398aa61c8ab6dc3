"""Slack incoming webhooks: the URL read from Secrets Manager, the message posted with slack_sdk's retries.

A webhook URL is a credential: whoever holds it can post to the channel. It is read from Secrets
Manager (through Powertools Parameters, cached for five minutes) and kept in memory only: it never
appears in a log line, an effect record or an exception, and slack_sdk's own logger (which logs
request URLs) is silenced.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.models.effects import Effect, EffectSink
from ecr_automation.models.findings import Message

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

SECRET_MAX_AGE_SECONDS = 300
RETRIES = 2  # per kind of failure: 429 (honouring Retry-After), 5xx, connection errors
REQUEST_TIMEOUT_SECONDS = 10
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# slack_sdk logs request URLs (at INFO when a retry handler fires): its logger here says nothing.
_SILENT = logging.getLogger("ecr_automation.slack_sdk")
_SILENT.setLevel(logging.CRITICAL)
_SILENT.propagate = False
_SILENT.addHandler(logging.NullHandler())


class _NoSecretValues(logging.Filter):
    """Blanks botocore's DEBUG record of a response body that holds a secret value (GetSecretValue's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Response body"):
            body = repr(record.args)
            if "SecretString" in body or "SecretBinary" in body:
                record.args = ("<a secret value: not logged>",)
        return True


# botocore logs every response body at DEBUG: with DEBUG switched on, GetSecretValue's would be the URL.
logging.getLogger("botocore.parsers").addFilter(_NoSecretValues())


class WebhookSecretError(RuntimeError):
    """The webhook secret is missing, unreadable or does not hold a webhook URL (named, never its value)."""


class SlackDeliveryError(RuntimeError):
    """Slack did not accept a message after the retries: the invocation fails and nothing is marked sent."""


def secret_region(secret_id: str, default: str) -> str:
    """The region a secret lives in: the one its ARN names, else ``default``."""
    parts = secret_id.split(":")
    return parts[3] if secret_id.startswith("arn:") and len(parts) > 3 and parts[3] else default


def webhook_url_of(secret_id: str, value: str | bytes) -> str:
    """The URL a secret holds: the URL itself, or JSON ``{"url": ...}``; refuses anything else without echoing it."""
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    text = text.strip()
    url: object = text
    if text.startswith("{"):
        try:
            url = json.loads(text).get("url")
        except (json.JSONDecodeError, AttributeError):
            url = None
    if not isinstance(url, str) or not _is_webhook_url(url):
        raise WebhookSecretError(
            f'Slack webhook secret {secret_id}: expected a https:// webhook URL or JSON {{"url": ...}}'
        )
    return url


def _is_webhook_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if not parts.hostname or any(character.isspace() for character in url):
        return False
    # Plain HTTP would send the credential in the clear: only to a stand-in on this machine.
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


class WebhookSecrets:
    """Resolves a Secrets Manager secret (ARN or name) to the webhook URL it holds, cached per secret."""

    def __init__(self, clients: AwsClients, region: str, *, max_age: int = SECRET_MAX_AGE_SECONDS) -> None:
        self._clients = clients
        self._region = region
        self._max_age = max_age
        self._providers: dict[str, SecretsProvider] = {}

    def _provider(self, region: str) -> SecretsProvider:
        if region not in self._providers:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415 - cold start

            self._providers[region] = SecretsProvider(boto3_client=self._clients.client("secretsmanager", region))
        return self._providers[region]

    def url(self, secret_id: str) -> str:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError  # noqa: PLC0415

        try:
            value = self._provider(secret_region(secret_id, self._region)).get(secret_id, max_age=self._max_age)
        except GetParameterError as error:
            cause = error.__cause__ or error.__context__  # Powertools raises it inside its except clause
            code = cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None
            raise WebhookSecretError(
                f"Slack webhook secret {secret_id}: cannot be read ({code or type(cause).__name__})"
            ) from None
        if not isinstance(value, str | bytes):
            raise WebhookSecretError(f"Slack webhook secret {secret_id}: holds no value")
        return webhook_url_of(secret_id, value)


class SlackWebhookSink:
    """``MessageSink`` posting Block Kit to the webhook of ``route`` (a secret), or of ``default_route``."""

    def __init__(self, secrets: WebhookSecrets, default_route: str, effects: EffectSink | None = None) -> None:
        self._secrets = secrets
        self._default_route = default_route
        self._effects = effects

    def send(self, message: Message, *, route: str) -> None:
        secret_id = route or self._default_route
        if not secret_id:
            raise WebhookSecretError(
                "no Slack webhook secret for this message: set the SlackWebhookSecretArn parameter or a route"
            )
        url = self._secrets.url(secret_id)
        status, body = _post(url, message)
        if status != 200:
            raise SlackDeliveryError(
                f"Slack webhook of secret {secret_id} answered {status} after retries: {_scrub(body, url)}"
            )
        if self._effects is not None:
            self._effects.record(
                Effect(
                    "slack_message_sent",
                    {"route": secret_id, "fingerprint": message.fingerprint, "blocks": len(message.blocks)},
                )
            )


def _post(url: str, message: Message) -> tuple[int, str]:
    from slack_sdk.http_retry.builtin_handlers import (  # noqa: PLC0415 - cold start
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )
    from slack_sdk.webhook import WebhookClient  # noqa: PLC0415

    client = WebhookClient(
        url,
        timeout=REQUEST_TIMEOUT_SECONDS,
        logger=_SILENT,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=RETRIES),
            ServerErrorRetryHandler(max_retry_count=RETRIES),
            ConnectionErrorRetryHandler(max_retry_count=RETRIES),
        ],
    )
    blocks: list[dict[str, Any]] | None = message.blocks or None
    try:
        response = client.send(text=message.text, blocks=blocks)
    except Exception as error:
        # urllib's errors may quote the URL: keep only the kind of failure, and no chained traceback.
        raise SlackDeliveryError(
            f"Slack webhook unreachable after retries: {type(error).__name__}: {_scrub(str(error), url)}"
        ) from None
    return int(response.status_code), str(response.body or "")


def _scrub(text: str, url: str) -> str:
    """``text`` cut short, with the URL (and its secret path) removed should it be quoted."""
    path = urlsplit(url).path
    for secret in (url, path):
        if secret and len(secret) > 1:
            text = text.replace(secret, "<webhook>")
    return text[:300]
