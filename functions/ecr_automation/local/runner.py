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
from typing import Any, TextIO, cast

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import EVENTBRIDGE_MAX_EVENT_BYTES, settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.local.template import FunctionSpec, SamTemplate, resolve
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
    ) -> None:
        self.template = template
        self.functions = template.functions()
        self._clients = clients
        self._resolver = resolver
        self._out = out
        self._err = err
        self._overrides = overrides or {}
        self._verbose = verbose

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
            **self._overrides,
        }

    def invoke(self, function_id: str, event: object) -> Invocation:
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
                result = handler(event, LambdaContext(function.logical_id))
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
    ``ObservedClients``); ``bound`` caps the events dispatched over the router's life, so a feedback
    loop stops instead of running forever.
    """

    def __init__(
        self, runner: LocalRunner, *, feedback: deque[dict[str, Any]], bound: int = DEFAULT_EVENT_BOUND
    ) -> None:
        self.runner = runner
        self.report = SimulationReport()
        self.stopped = False
        self._feedback = feedback
        self._bound = bound
        self._dispatched = 0

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
        queue: deque[tuple[str, object]] = deque([(label, event)])
        while queue:
            current_label, current = queue.popleft()
            self._dispatched += 1
            if self._dispatched > self._bound:
                self.report.errors.append(f"{label}: event loop did not settle after {self._bound} events; stopped")
                self.stopped = True
                return
            self._dispatch(current_label, current)
            while self._feedback:
                caused = self._feedback.popleft()
                if not str(caused.get("source", "")).startswith("aws."):  # only AWS may use aws.* sources
                    self.report.published[str(caused.get("detail-type"))] += 1
                queue.append((f"{current_label} -> {caused.get('detail-type')}", caused))

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
