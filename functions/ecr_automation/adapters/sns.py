"""An SNS topic as a second, optional destination for messages (e-mail, or a chat bot that reads SNS)."""

from __future__ import annotations

import json

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.models.effects import Effect, EffectSink
from ecr_automation.models.findings import Message

SUBJECT_MAX_CHARS = 100  # SNS refuses longer subjects (and line breaks in them)


class SnsSink:
    """``MessageSink`` publishing ``{"text": ..., "blocks": [...]}``; the subject is the text's first line.

    The route names a Slack webhook secret and means nothing here: every message goes to the topic.
    """

    def __init__(self, clients: AwsClients, topic_arn: str, region: str, effects: EffectSink | None = None) -> None:
        self._clients = clients
        self._topic_arn = topic_arn
        self._region = region
        self._effects = effects

    def send(self, message: Message, *, route: str) -> None:
        del route
        response = self._clients.client("sns", self._region).publish(
            TopicArn=self._topic_arn,
            Subject=subject_of(message.text),
            Message=sns_body(message),
        )
        if self._effects is not None:
            self._effects.record(
                Effect(
                    "sns_message_published",
                    {
                        "topic": self._topic_arn,
                        "message_id": response.get("MessageId"),
                        "fingerprint": message.fingerprint,
                    },
                )
            )


def subject_of(text: str) -> str:
    """The first non-empty line, printable ASCII only (SNS's rule for subjects), at most 100 characters."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "") or "ecr-automation"
    printable = "".join(character if " " <= character <= "~" else "?" for character in first)
    return printable if len(printable) <= SUBJECT_MAX_CHARS else printable[: SUBJECT_MAX_CHARS - 3] + "..."


# SNS takes at most 256 KiB a message, counted in UTF-8 bytes; keep a margin for the envelope.
SNS_MAX_BYTES = 256 * 1024 - 4 * 1024


def sns_body(message: Message) -> str:
    """The message as JSON in UTF-8 (not \\u escapes, which cost up to 12 bytes a character); the text alone
    when the blocks would not fit, so the topic always gets it."""
    body = json.dumps({"text": message.text, "blocks": message.blocks}, ensure_ascii=False)
    if len(body.encode("utf-8")) <= SNS_MAX_BYTES:
        return body
    text = message.text.encode("utf-8")[: SNS_MAX_BYTES - 64].decode("utf-8", errors="ignore")
    return json.dumps({"text": text, "blocks": []}, ensure_ascii=False)
