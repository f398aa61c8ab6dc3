"""Run events and scenarios through the template's functions on the embedded stand-in (``simulate``, the demo)."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator
from typing import Any, TextIO

from ecr_automation.local.runner import DEFAULT_EVENT_BOUND, EventRouter, LocalRunner, scoped_environment
from ecr_automation.local.scenario import Scenario, play
from ecr_automation.local.standin import FAKE_CREDENTIALS, LocalWorld, ObservedClients, embedded_aws
from ecr_automation.local.template import SamTemplate


@contextlib.contextmanager
def embedded_world(template: SamTemplate) -> Iterator[LocalWorld]:
    """An in-process AWS stand-in holding the template's tables and queues."""
    # Point the SDK at nothing real: fake credentials, and no endpoint override that would bypass moto.
    endpoints = tuple(name for name in os.environ if name.startswith("AWS_ENDPOINT_URL"))
    with scoped_environment(FAKE_CREDENTIALS, unset=endpoints), embedded_aws():
        world = LocalWorld(template)
        world.create_template_resources()
        yield world


def run_simulation(
    template: SamTemplate,
    inputs: list[tuple[str, object]],
    out: TextIO,
    *,
    overrides: dict[str, str],
    findings: list[dict[str, Any]] | None = None,
    bound: int | None = None,
    verbose: bool = False,
    on_input: Any = None,
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Run ``inputs`` (events or loaded scenarios) in order on the embedded stand-in; returns errors and final tags."""
    with embedded_world(template) as world:
        if findings:
            world.inject_findings(findings)
        feedback: deque[dict[str, Any]] = deque()
        runner = LocalRunner(
            template,
            clients=ObservedClients(feedback.append),
            resolver=(world.reference, world.attribute),
            out=out,
            overrides=overrides,
            verbose=verbose,
        )
        router = EventRouter(runner, feedback=feedback, bound=bound or DEFAULT_EVENT_BOUND)
        for label, item in inputs:
            if router.stopped:
                break
            if on_input is not None:
                on_input(label)
            if isinstance(item, Scenario):
                play(item, world, router, out)
            else:
                router.deliver(label, item, apply=world.apply)
        return router.report.errors, world.state()
