"""Run the template's functions locally: one invocation, or a stream of events routed like EventBridge."""

from __future__ import annotations

import importlib
import json
import os
import sys
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO, cast

from ecr_automation.adapters.clients import AwsClients
from ecr_automation.config import EVENTBRIDGE_MAX_EVENT_BYTES, settings_from_environment
from ecr_automation.dependencies import Dependencies, use_dependencies
from ecr_automation.local.template import FunctionSpec, SamTemplate, resolve
from ecr_automation.models.effects import Effect
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
            use_dependencies(Dependencies(settings_from_environment(), clients=self._clients, sink=sink))
            try:
                module_name, handler_name = function.handler.rsplit(".", 1)
                handler = getattr(importlib.import_module(module_name), handler_name)
                result = handler(event, LambdaContext(function.logical_id))
            except Exception as error:
                return Invocation(function.logical_id, None, "failed", f"{type(error).__name__}: {error}")
            finally:
                use_dependencies(None)
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


def simulate(
    runner: LocalRunner,
    inputs: list[tuple[str, object]],
    *,
    apply: Callable[[object], None],
    feedback: deque[dict[str, Any]],
    bound: int = DEFAULT_EVENT_BOUND,
    on_input: Callable[[str], None] | None = None,
) -> SimulationReport:
    """Feed each input event, then every event the functions' own actions cause, until none is left."""
    report = SimulationReport()
    dispatched = 0
    for label, event in inputs:
        if on_input is not None:
            on_input(label)
        try:
            # Input events are checked like EventBridge would deliver them: bad ones never reach a function.
            parse_event(event, max_bytes=EVENTBRIDGE_MAX_EVENT_BYTES)
        except EventRejected as rejection:
            runner.report_effect(Effect("event_rejected", {"event_id": rejection.event_id, "reason": rejection.reason}))
            report.errors.append(f"{label}: rejected: {rejection.reason}")
            continue
        apply(event)
        queue: deque[tuple[str, object]] = deque([(label, event)])
        while queue:
            current_label, current = queue.popleft()
            dispatched += 1
            if dispatched > bound:
                report.errors.append(f"{label}: event loop did not settle after {bound} events; stopped")
                return report
            targets = runner.matching_functions(current)
            if not targets:
                event_id = current.get("id") if isinstance(current, dict) else None
                detail_type = current.get("detail-type") if isinstance(current, dict) else None
                runner.report_effect(
                    Effect(
                        "event_unrouted",
                        {
                            "event_id": event_id,
                            "detail_type": detail_type,
                            "reason": "no rule in the template matches it",
                        },
                    )
                )
            for function_id in targets:
                invocation = runner.invoke(function_id, current)
                report.invocations.append(invocation)
                notes = (invocation.result or {}).get("notes")
                if notes:  # decisions worth reading even when they wrote nothing ("why no promotion")
                    runner.report_effect(
                        Effect("note", {"function": function_id, "event_id": invocation.event_id, "notes": notes})
                    )
                if invocation.status == "rejected":
                    report.errors.append(f"{current_label}: rejected by {function_id}: {invocation.reason}")
                elif invocation.status == "failed":
                    report.errors.append(f"{current_label}: {function_id} failed: {invocation.reason}")
            while feedback:
                caused = feedback.popleft()
                queue.append((f"{current_label} -> {caused.get('detail-type')}", caused))
    return report
