"""The local stand-in `sam local invoke` runs against: a moto server on the Docker bridge address, holding
the template's tables and queues (LocalWorld), and what reads back the state the functions left."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

from ecr_automation.local.moto_patches import make_moto_ecr_faithful
from ecr_automation.local.standin import LocalWorld
from ecr_automation.local.template import SamTemplate, TemplateError, resolve
from tests.samlocal.sam import TEMPLATE, Invocation, sam_local_invoke
from tests.support.moto_server import REGION, MotoServer

# Where the functions' own events (violations, failed replications) and notifications are captured.
CAPTURED_EVENTS_QUEUE = "CapturedEvents"
NOTIFICATIONS_QUEUE = "CapturedNotifications"
NOTIFY_TOPIC = "ecr-automation-notifications"


class BridgeMotoServer(MotoServer):
    """A moto server on the Docker bridge address (never 0.0.0.0): the only host address a container reaches."""

    def __init__(self, address: str) -> None:  # a different listening address; the rest is MotoServer's
        make_moto_ecr_faithful()
        self._server = ThreadedMotoServer(ip_address=address, port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"


def stand_in_credentials(moto: MotoServer) -> dict[str, str]:
    """Fake credentials and the stand-in's endpoint: for the tests' clients and for sam itself (its
    account lookup would otherwise wait on the real STS)."""
    return {**moto.env(), "AWS_SESSION_TOKEN": "testing"}


@dataclass
class StandIn:
    """The moto server, reset for one test, holding the template's tables and queues (LocalWorld)."""

    moto: MotoServer
    world: LocalWorld
    template: SamTemplate
    work: Path
    topic_arn: str = ""
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)

    # -- what the functions left ---------------------------------------------------------------------
    def messages(self, queue_logical_id: str) -> list[dict[str, Any]]:
        """Every message in a queue (template or captured one), read without deleting."""
        sqs = self.moto.client("sqs")
        url = self.world.reference(queue_logical_id)
        if not url.startswith("http"):
            url = sqs.get_queue_url(QueueName=queue_logical_id)["QueueUrl"]
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(5):
            response = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=0
            )
            for message in response.get("Messages", []):
                seen[message["MessageId"]] = message
            if not response.get("Messages"):
                break
        return list(seen.values())

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.messages("DeadLetterQueue")

    def captured_events(self) -> list[dict[str, Any]]:
        return [json.loads(message["Body"]) for message in self.messages(CAPTURED_EVENTS_QUEUE)]

    def notifications(self) -> list[str]:
        """What the notifier published to its SNS topic (delivered to a subscribed queue)."""
        bodies = [json.loads(message["Body"]) for message in self.messages(NOTIFICATIONS_QUEUE)]
        return [body.get("Message", "") for body in bodies]

    def ledger(self, prefix: str) -> dict[str, dict[str, Any]]:
        """The tag ledger's items whose sort key starts with ``prefix``, by the rest of the key."""
        dynamodb = self.moto.client("dynamodb")
        table = self.world.reference("TagLedgerTable")
        items = dynamodb.scan(TableName=table)["Items"]
        return {
            item["sk"]["S"][len(prefix) :]: {name: next(iter(value.values())) for name, value in item.items()}
            for item in items
            if item["sk"]["S"].startswith(prefix)
        }

    def tags(self, repository: str = "team/web", region: str = REGION) -> dict[str, str]:
        return self.world.tags(self.world.repository(repository, region=region))

    # -- invoking ------------------------------------------------------------------------------------
    def render(self, value: Any) -> str:
        """A template value as CloudFormation would set it with the parameters' defaults (Fn::If included)."""
        if isinstance(value, dict) and list(value) == ["Fn::If"]:
            condition, when_true, when_false = value["Fn::If"]
            return self.render(when_true if self.condition(condition) else when_false)
        if value == {"Ref": "AWS::NoValue"}:
            raise TemplateError("no value")
        return resolve(value, self.world.reference, self.world.attribute)

    def condition(self, name: str) -> bool:
        return bool(self._evaluate(self.template.body.get("Conditions", {})[name]))

    def _evaluate(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Fn::Equals":
                return self._evaluate(argument[0]) == self._evaluate(argument[1])
            if function == "Fn::Not":
                return not self._evaluate(argument[0])
            if function == "Fn::And":
                return all(self._evaluate(item) for item in argument)
            if function == "Fn::Or":
                return any(self._evaluate(item) for item in argument)
            if function == "Condition":
                return self.condition(argument)
            if function == "Fn::Join":
                items = self._evaluate(argument[1])
                return argument[0].join(items if isinstance(items, list) else str(items).split(","))
        if isinstance(node, list):
            return [self._evaluate(item) for item in node]
        return self.render(node)

    def env_vars_file(self) -> Path:
        """The `--env-vars` file: each function's template variables, resolved to this stand-in."""
        sections: dict[str, dict[str, str]] = {}
        for logical_id, function in self.template.functions().items():
            values = {}
            for name, value in function.environment.items():
                try:
                    values[name] = self.render(value)
                except TemplateError:
                    continue  # left to SAM's own resolution
            values.update(
                {
                    "AWS_ENDPOINT_URL": self.moto.endpoint_url,
                    "POWERTOOLS_TRACE_DISABLED": "true",
                    "NOTIFY_TOPIC_ARN": self.topic_arn,
                }
            )
            values.update(self.extra_env.get(logical_id, {}))
            sections[logical_id] = values
        path = self.work / "env.json"
        path.write_text(json.dumps(sections, indent=1))
        return path


def capture(moto: MotoServer) -> str:
    """A queue receiving every event the functions publish, and one subscribed to the notify topic."""
    sqs, events, sns = moto.client("sqs"), moto.client("events"), moto.client("sns")
    captured = sqs.create_queue(QueueName=CAPTURED_EVENTS_QUEUE)["QueueUrl"]
    captured_arn = sqs.get_queue_attributes(QueueUrl=captured, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="capture-ecr-automation", EventPattern=json.dumps({"source": ["ecr-automation"]}))
    events.put_targets(Rule="capture-ecr-automation", Targets=[{"Id": "captured", "Arn": captured_arn}])
    notifications = sqs.create_queue(QueueName=NOTIFICATIONS_QUEUE)["QueueUrl"]
    notifications_arn = sqs.get_queue_attributes(QueueUrl=notifications, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic_arn: str = sns.create_topic(Name=NOTIFY_TOPIC)["TopicArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=notifications_arn)
    return topic_arn


def prepare_stand_in(moto: MotoServer, work: Path) -> StandIn:
    """A fresh stand-in: moto reset, the template's tables and queues, the capturing queues and topic.
    The caller's process environment must point the SDK at ``moto`` (``stand_in_credentials``)."""
    moto.reset()
    template = SamTemplate.load(TEMPLATE)
    world = LocalWorld(template)
    world.create_template_resources()
    stand = StandIn(moto, world, template, work)
    stand.topic_arn = capture(moto)
    return stand


@dataclass(frozen=True)
class SamLocal:
    built_template: Path
    image: str
    env: dict[str, str]

    def invoke(self, stand: StandIn, function: str, sample: Path, label: str) -> Invocation:
        return sam_local_invoke(
            self.built_template,
            function,
            sample,
            image=self.image,
            env_vars=stand.env_vars_file(),
            env=self.env,
            region=REGION,
            sample=label,
        )
