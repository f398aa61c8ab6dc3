"""Run events and scenarios through the template's functions on the embedded stand-in (``simulate``, the demo)."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from ecr_automation.adapters.clients import MemberAccounts
from ecr_automation.errors import ConfigurationError
from ecr_automation.local.runner import DEFAULT_EVENT_BOUND, EventRouter, LocalRunner, scoped_environment
from ecr_automation.local.scenario import Scenario, play
from ecr_automation.local.standin import FAKE_CREDENTIALS, LocalWorld, ObservedClients, embedded_aws
from ecr_automation.local.template import SamTemplate


@contextlib.contextmanager
def embedded_world(template: SamTemplate) -> Iterator[LocalWorld]:
    """An in-process AWS stand-in holding the template's tables and queues (and any local registries it starts)."""
    # Point the SDK at nothing real: fake credentials, and no endpoint override that would bypass moto.
    endpoints = tuple(name for name in os.environ if name.startswith("AWS_ENDPOINT_URL"))
    with scoped_environment(FAKE_CREDENTIALS, unset=endpoints), embedded_aws():
        world = LocalWorld(template)
        try:
            world.create_template_resources()
            yield world
        finally:
            world.close()


def replicates(runner: LocalRunner, rules_files: Sequence[str | None] = (None,)) -> bool:
    """Whether a rules file the functions will read has ``[[replicate]]`` entries (None: the template's own)."""
    from ecr_automation.config import settings_from_environment  # noqa: PLC0415
    from ecr_automation.rules import load_rules  # noqa: PLC0415

    functions = list(runner.functions.values())
    if not functions:
        return False
    environment = {**os.environ, **runner.environment_of(functions[0])}  # as the function would see it
    for rules_file in rules_files:
        values = environment if rules_file is None else {**environment, "RULES_FILE": rules_file}
        try:
            path: Path = settings_from_environment(values).resolved_rules_file
            if load_rules(path).replicate:
                return True
        except (ConfigurationError, ValueError):
            continue  # the functions say what is wrong with it, event by event
    return False


def member_accounts_of(runner: LocalRunner) -> MemberAccounts | None:
    """The member role the functions assume in other accounts, as their environment configures it (one for all)."""
    from ecr_automation.config import settings_from_environment  # noqa: PLC0415
    from ecr_automation.dependencies import member_accounts  # noqa: PLC0415

    functions = list(runner.functions.values())
    if not functions:
        return None
    try:
        return member_accounts(settings_from_environment({**os.environ, **runner.environment_of(functions[0])}))
    except ConfigurationError:
        return None  # the functions say what is wrong with it, event by event


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
    images: Sequence[str] = (),
    overrides_from: dict[str, dict[str, str]] | None = None,
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Run ``inputs`` (events or loaded scenarios) in order on the embedded stand-in; returns errors and final tags.

    ``images`` are manifests (``synthetic_manifest``) the world knows by digest; ``overrides_from`` changes
    the functions' environment from the input with that label on. When a rules file in play replicates,
    local registries stand in for ECR's and the images' real bytes are pushed (``LocalRegistry``).
    """
    with embedded_world(template) as world:
        if findings:
            world.inject_findings(findings)
        for manifest in images:
            world.register_manifest(manifest)
        feedback: deque[dict[str, Any]] = deque()
        # A scenario's environment holds for the whole run; the command line's --env wins over it.
        scenario_environment = {
            name: value for _, item in inputs if isinstance(item, Scenario) for name, value in item.environment.items()
        }

        def runner_with(clients: ObservedClients) -> LocalRunner:
            return LocalRunner(
                template,
                clients=clients,
                resolver=(world.reference, world.attribute),
                out=out,
                overrides={**scenario_environment, **overrides},
                verbose=verbose,
                dynamic_overrides=world.registry_environment,
            )

        runner = runner_with(ObservedClients(feedback.append))
        members = member_accounts_of(runner)
        if members is not None:  # an organisation deployment: other accounts are acted on as their member role
            runner = runner_with(ObservedClients(feedback.append, members=members))
        later_rules = [changes["RULES_FILE"] for changes in (overrides_from or {}).values() if "RULES_FILE" in changes]
        if replicates(runner, [None, *later_rules]):
            world.start_replication()
        router = EventRouter(runner, feedback=feedback, bound=bound or DEFAULT_EVENT_BOUND, queues=world)
        for label, item in inputs:
            if router.stopped:
                break
            if overrides_from and label in overrides_from:
                runner.override(overrides_from[label])
            if on_input is not None:
                on_input(label)
            if isinstance(item, Scenario):
                play(item, world, router, out)
            else:
                router.deliver(label, item, apply=world.apply)
        errors = router.report.errors + [f"stand-in: {problem}" for problem in world.problems]
        return errors, world.state()
