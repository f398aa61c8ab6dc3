"""Run the template's functions locally: one invocation, or a stream of events routed like EventBridge."""

from __future__ import annotations

import importlib
import json
import os
import sys
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO, cast

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import EVENTBRIDGE_MAX_EVENT_BYTES, settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.local.template import FUNCTION_TYPE, FunctionSpec, SamTemplate, resolve
from ecr_automation.models.effects import Effect, EffectSink
from ecr_automation.models.findings import Message
from ecr_automation.models.parsing import EventRejected, parse_event

# What the Lambda runtime would set, and what keeps local runs quiet and offline.
RUNTIME_ENVIRONMENT = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_DEV": "false",
}
QUIET_ENVIRONMENT = {"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_DISABLED": "true"}
DEFAULT_EVENT_BOUND = 200
DEFAULT_SQS_BATCH_SIZE = 10
DEFAULT_TIMEOUT_SECONDS = 3  # Lambda's, when neither the function nor Globals says


@dataclass(frozen=True)
class QueueSource:
    """A function's ``Type: SQS`` event source: the queue (logical id) it consumes, how many at once."""

    function: str
    queue: str
    batch_size: int
    reports_failures: bool  # FunctionResponseTypes: [ReportBatchItemFailures]
    timeout_seconds: int


def queue_sources(template: SamTemplate) -> list[QueueSource]:
    """Every SQS event source of the template's functions whose queue is a template resource."""
    queues = template.resources_of_type("AWS::SQS::Queue")
    global_timeout = template.body.get("Globals", {}).get("Function", {}).get("Timeout", DEFAULT_TIMEOUT_SECONDS)
    sources = []
    for logical_id, properties in template.resources_of_type(FUNCTION_TYPE).items():
        for event in properties.get("Events", {}).values():
            if event.get("Type") != "SQS":
                continue
            queue = event.get("Properties", {}).get("Queue")
            name = None
            if isinstance(queue, dict) and isinstance(queue.get("Fn::GetAtt"), list):
                name = str(queue["Fn::GetAtt"][0])
            elif isinstance(queue, dict) and isinstance(queue.get("Ref"), str):
                name = queue["Ref"]
            if name not in queues:
                continue
            event_properties = event.get("Properties", {})
            sources.append(
                QueueSource(
                    function=logical_id,
                    queue=str(name),
                    batch_size=int(event_properties.get("BatchSize", DEFAULT_SQS_BATCH_SIZE)),
                    reports_failures="ReportBatchItemFailures" in event_properties.get("FunctionResponseTypes", []),
                    timeout_seconds=int(properties.get("Timeout", global_timeout)),
                )
            )
    return sources


class QueueBackend(Protocol):
    """Where the router receives and settles the messages of the template's queues (the embedded stand-in)."""

    def receive(self, queue: str, count: int) -> list[dict[str, Any]]: ...
    def delete_message(self, queue: str, receipt_handle: str) -> None: ...
    def redeliver(self, queue: str, receipt_handle: str) -> None: ...
    def queue_arn(self, queue: str) -> str: ...
    def max_receives(self, queue: str) -> int | None: ...
    def before_batch(self, queue: str, bodies: list[str]) -> None: ...
    def after_batch(self, queue: str, bodies: list[str]) -> None: ...


@dataclass
class LambdaContext:
    """The parts of the Lambda context object that Powertools reads."""

    function_name: str
    memory_limit_in_mb: int = 256
    timeout_seconds: int = 60
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_seconds * 1000


@dataclass
class Invocation:
    function: str
    event_id: str | None
    status: str  # processed | ignored | rejected | failed
    reason: str | None = None
    result: dict[str, Any] | None = None


class JsonLinesSink:
    """Prints each side effect as one JSON object per line, naming the function and event."""

    def __init__(self, out: TextIO, function: str, event_id: str | None) -> None:
        self._out = out
        self._context = {"function": function, "event_id": event_id}

    def record(self, effect: Effect) -> None:
        self._out.write(json.dumps({**effect.as_dict(), **self._context}, sort_keys=False, default=str) + "\n")
        self._out.flush()


class PrintedSlackSink:
    """Stands in for the Slack webhook: each message becomes one ``slack_message`` line, without a URL.

    The line carries the whole Block Kit payload (``{"text", "blocks"}``), exactly what would be posted,
    and the route (the secret naming the webhook: "" is the deployment's default).
    """

    def __init__(self, sink: EffectSink) -> None:
        self._sink = sink

    def send(self, message: Message, *, route: str) -> None:
        self._sink.record(
            Effect(
                "slack_message",
                {"route": route or "default", "payload": {"text": message.text, "blocks": message.blocks}},
            )
        )


Resolver = tuple[Callable[[str], str], Callable[[str, str], str]]


def names_only_resolver(template: SamTemplate) -> Resolver:
    """Outside the embedded stand-in, a resource is known by its logical id unless the caller's env says more."""
    defaults = template.parameter_defaults()

    def reference(name: str) -> str:
        return defaults.get(name, name)

    def attribute(resource: str, attribute: str) -> str:
        return f"{resource}.{attribute}"

    return reference, attribute


@contextmanager
def scoped_environment(values: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """The process environment a function sees while it runs: what Lambda would set, restored afterwards."""
    saved = dict(os.environ)
    os.environ.update(values)
    for name in unset:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _forget_unpublished_metrics() -> None:
    """Drop the metrics a quiet invocation recorded, as a fresh Lambda sandbox would.

    With metrics disabled Powertools never clears its metric set, which is shared by every ``Metrics``
    in the process; once a metric holds 100 values it prints them anyway, and after that its flush
    warns that there is nothing to publish. One process runs many invocations here.
    """
    from aws_lambda_powertools import Metrics  # noqa: PLC0415

    Metrics().clear_metrics()


class LocalRunner:
    def __init__(
        self,
        template: SamTemplate,
        *,
        clients: AwsClients,
        resolver: Resolver,
        out: TextIO,
        err: TextIO = sys.stderr,
        overrides: dict[str, str] | None = None,
        verbose: bool = False,
        dynamic_overrides: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.template = template
        self.functions = template.functions()
        self._clients = clients
        self._resolver = resolver
        self._out = out
        self._err = err
        self._overrides = dict(overrides or {})
        self._verbose = verbose
        # Computed at each invocation (e.g. the local registries started so far).
        self._dynamic_overrides = dynamic_overrides

    def override(self, values: dict[str, str]) -> None:
        """Change what every later invocation sees (the demo's rules file for its last step)."""
        self._overrides.update(values)

    def environment_of(self, function: FunctionSpec) -> dict[str, str]:
        reference, attribute = self._resolver
        rendered = {name: resolve(value, reference, attribute) for name, value in function.environment.items()}
        # The caller's own environment wins over the template: it names real tables and queues.
        from_caller = {name: os.environ[name] for name in rendered if name in os.environ}
        quiet = {} if self._verbose else QUIET_ENVIRONMENT
        return {
            **rendered,
            **from_caller,
            **RUNTIME_ENVIRONMENT,
            **quiet,
            "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
            "LAMBDA_TASK_ROOT": str(self.template.code_root),
            **(self._dynamic_overrides() if self._dynamic_overrides is not None else {}),
            **self._overrides,
        }

    def invoke(self, function_id: str, event: object, *, timeout_seconds: int | None = None) -> Invocation:
        function = self.template.function(function_id)
        event_id = event.get("id") if isinstance(event, dict) else None
        with scoped_environment(self.environment_of(function)):
            sink = JsonLinesSink(self._out, function.logical_id, event_id if isinstance(event_id, str) else None)
            dependencies = Dependencies(settings_from_environment(), clients=self._clients, sink=sink)
            # Messages are printed, never posted: no webhook secret is read on this machine.
            dependencies.message_sinks = [PrintedSlackSink(sink)]
            use_dependencies(dependencies)
            try:
                module_name, handler_name = function.handler.rsplit(".", 1)
                handler = getattr(importlib.import_module(module_name), handler_name)
                context = LambdaContext(function.logical_id)
                if timeout_seconds is not None:
                    context.timeout_seconds = timeout_seconds
                result = handler(event, context)
            except Exception as error:
                return Invocation(function.logical_id, None, "failed", f"{type(error).__name__}: {error}")
            finally:
                use_dependencies(None)
                if not self._verbose:
                    _forget_unpublished_metrics()
        status = str(result.get("status", "processed")) if isinstance(result, dict) else "processed"
        reason = result.get("reason") if isinstance(result, dict) else None
        return Invocation(
            function.logical_id,
            result.get("event_id") if isinstance(result, dict) else None,
            status,
            reason,
            result if isinstance(result, dict) else None,
        )

    def report_effect(self, effect: Effect) -> None:
        JsonLinesSink(self._out, effect.fields.get("function", "runner"), effect.fields.get("event_id")).record(effect)

    def matching_functions(self, event: object) -> list[str]:
        from moto.events.models import EventPattern  # noqa: PLC0415 - the faithful matcher of the local extra

        if not isinstance(event, dict):
            return []
        return [
            function.logical_id
            for function in self.functions.values()
            if any(
                EventPattern.load(json.dumps(rule.pattern)).matches_event(cast(Any, event)) for rule in function.rules
            )
        ]


@dataclass
class SimulationReport:
    invocations: list[Invocation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Events the functions published (PutEvents), by detail-type.
    published: Counter[str] = field(default_factory=Counter)


class EventRouter:
    """Delivers events like EventBridge: to every function whose rule matches, then the events their writes cause.

    ``feedback`` is where the functions' clients put the events their own writes cause (see
    ``ObservedClients``); ``bound`` caps the events and queue batches dispatched over the router's life,
    so a feedback loop stops instead of running forever. With ``queues``, once the events settle the
    template's SQS event sources are drained as Lambda polls them: a batch at a time, the messages a
    function did not report in ``batchItemFailures`` deleted, the others received again (and moved to
    the dead-letter queue by the queue's redrive policy), the events each batch causes routed in turn.
    """

    def __init__(
        self,
        runner: LocalRunner,
        *,
        feedback: deque[dict[str, Any]],
        bound: int = DEFAULT_EVENT_BOUND,
        queues: QueueBackend | None = None,
    ) -> None:
        self.runner = runner
        self.report = SimulationReport()
        self.stopped = False
        self._feedback = feedback
        self._bound = bound
        self._dispatched = 0
        self._queues = queues
        self._sources = queue_sources(runner.template) if queues is not None else []

    def deliver(self, label: str, event: object, *, apply: Callable[[object], None] | None = None) -> None:
        """Route one delivered event and what it causes; ``apply`` first brings the world to the state it reports."""
        if self.stopped:
            return
        try:
            # Input events are checked like EventBridge would deliver them: bad ones never reach a function.
            parse_event(event, max_bytes=EVENTBRIDGE_MAX_EVENT_BYTES)
        except EventRejected as rejection:
            self.runner.report_effect(
                Effect("event_rejected", {"event_id": rejection.event_id, "reason": rejection.reason})
            )
            self.report.errors.append(f"{label}: rejected: {rejection.reason}")
            return
        if apply is not None:
            apply(event)
        pending: deque[tuple[str, object]] = deque([(label, event)])
        while True:
            if pending:
                current_label, current = pending.popleft()
                if not self._count(label):
                    return
                self._dispatch(current_label, current)
                self._collect_feedback(current_label, pending)
            elif not self._deliver_one_batch(label, pending):
                return  # settled: no event left, every queue drained

    def _count(self, label: str) -> bool:
        self._dispatched += 1
        if self._dispatched > self._bound:
            self.report.errors.append(f"{label}: event loop did not settle after {self._bound} events; stopped")
            self.stopped = True
            return False
        return True

    def _collect_feedback(self, label: str, pending: deque[tuple[str, object]]) -> None:
        while self._feedback:
            caused = self._feedback.popleft()
            if not str(caused.get("source", "")).startswith("aws."):  # only AWS may use aws.* sources
                self.report.published[str(caused.get("detail-type"))] += 1
            pending.append((f"{label} -> {caused.get('detail-type')}", caused))

    def _deliver_one_batch(self, label: str, pending: deque[tuple[str, object]]) -> bool:
        """One batch from the first queue holding messages to its function; False when every queue is empty."""
        queues = self._queues
        if queues is None:
            return False
        for source in self._sources:
            messages = queues.receive(source.queue, source.batch_size)
            if not messages:
                continue
            if not self._count(label):
                return False
            self._deliver_batch(source, queues, messages, f"{label} -> {source.queue}")
            self._collect_feedback(f"{label} -> {source.queue}", pending)
            return True
        return False

    def _deliver_batch(
        self, source: QueueSource, queues: QueueBackend, messages: list[dict[str, Any]], label: str
    ) -> None:
        arn = queues.queue_arn(source.queue)
        bodies = [str(message.get("Body", "")) for message in messages]
        queues.before_batch(source.queue, bodies)
        event = {"Records": [sqs_record(message, arn) for message in messages]}
        invocation = self.runner.invoke(source.function, event, timeout_seconds=source.timeout_seconds)
        self.report.invocations.append(invocation)
        ids = [str(message["MessageId"]) for message in messages]
        if invocation.status == "failed":  # the whole batch returns to the queue (Powertools raises when all fail)
            failed = set(ids)
        elif source.reports_failures and invocation.result is not None:
            failed = {
                str(failure.get("itemIdentifier"))
                for failure in invocation.result.get("batchItemFailures") or []
                if isinstance(failure, dict)
            }
        else:
            failed = set()
        max_receives = queues.max_receives(source.queue)
        dead_lettered = 0
        for message in messages:
            message_id = str(message["MessageId"])
            if message_id not in failed:
                queues.delete_message(source.queue, str(message["ReceiptHandle"]))
                continue
            receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            if max_receives is None:
                # SQS would deliver it again after the visibility timeout, forever: a run cannot wait for that.
                self.report.errors.append(f"{label}: message {message_id} failed and has no dead-letter queue")
                continue
            if receives >= max_receives:
                dead_lettered += 1
                self.report.errors.append(
                    f"{label}: {source.function} failed message {message_id} {receives} times: "
                    "moved to the dead-letter queue"
                )
            queues.redeliver(source.queue, str(message["ReceiptHandle"]))  # the queue's redrive policy decides
        queues.after_batch(source.queue, [body for body, id_ in zip(bodies, ids, strict=True) if id_ not in failed])
        self.runner.report_effect(
            Effect(
                "queue_delivered",
                {
                    "function": source.function,
                    "queue": source.queue,
                    "messages": len(messages),
                    "failed": len(failed),
                    **({"dead_lettered": dead_lettered} if dead_lettered else {}),
                    # The first line: Powertools' BatchProcessingError goes on with every record's traceback.
                    **({"reason": str(invocation.reason).splitlines()[0]} if invocation.status == "failed" else {}),
                },
            )
        )

    def _dispatch(self, label: str, event: object) -> None:
        targets = self.runner.matching_functions(event)
        if not targets:
            self.runner.report_effect(
                Effect(
                    "event_unrouted",
                    {
                        "event_id": event.get("id") if isinstance(event, dict) else None,
                        "detail_type": event.get("detail-type") if isinstance(event, dict) else None,
                        "reason": "no rule in the template matches it",
                    },
                )
            )
        for function_id in targets:
            invocation = self.runner.invoke(function_id, event)
            self.report.invocations.append(invocation)
            notes = (invocation.result or {}).get("notes")
            if notes:  # decisions worth reading even when they wrote nothing ("why no promotion")
                self.runner.report_effect(
                    Effect("note", {"function": function_id, "event_id": invocation.event_id, "notes": notes})
                )
            if invocation.status == "rejected":
                self.report.errors.append(f"{label}: rejected by {function_id}: {invocation.reason}")
            elif invocation.status == "failed":
                self.report.errors.append(f"{label}: {function_id} failed: {invocation.reason}")


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """An SQS message (ReceiveMessage's shape) as Lambda's SQS event source hands it to a function."""
    region = queue_arn.split(":")[3] if queue_arn.count(":") >= 5 else ""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value.get("DataType", "String"),
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
