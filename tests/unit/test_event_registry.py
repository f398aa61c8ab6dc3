"""The event models live in one module per source; each function loads those of the events it accepts.

``models/events/__init__.py`` names each event's model as a ``"module:Class"`` string that
``parsing.parse_event`` imports when such an event arrives: these tests keep that table true to the
models, and check that a handler loads no other event module at import yet still reads any event.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import ecr_automation
from ecr_automation.models import events
from ecr_automation.models.events import MODEL_BY_API_CALL, MODEL_BY_DETAIL_TYPE
from ecr_automation.models.events.base import Envelope

EVENTS = Path(__file__).parents[2] / "events"
ENTRIES = [(key, name) for key, name in MODEL_BY_DETAIL_TYPE.items()] + [
    ((source, "AWS API Call via CloudTrail"), name) for (source, _), name in MODEL_BY_API_CALL.items()
]


def _resolve(name: str) -> type[Envelope]:
    module, _, attribute = name.partition(":")
    model: type[Envelope] = getattr(importlib.import_module(f"{events.__name__}.{module}"), attribute)
    return model


def _literal(model: type[Envelope], field: str) -> object:
    (value,) = typing.get_args(model.model_fields[field].annotation)
    return value


@pytest.mark.parametrize(("key", "name"), ENTRIES, ids=[name for _, name in ENTRIES])
def test_each_entry_names_the_model_of_that_source_and_detail_type(key: tuple[str, str], name: str) -> None:
    # Given an entry of the table, When its model is imported,
    # Then the model pins exactly that source and detail-type
    model = _resolve(name)
    assert issubclass(model, Envelope)
    assert (_literal(model, "source"), _literal(model, "detail_type")) == key


def test_every_event_model_of_the_package_is_in_the_table() -> None:
    # Given every module of models/events, When their event models are listed,
    # Then each one is named by the table: none is unreachable from parse_event (base holds only envelopes)
    defined = set()
    for module_info in pkgutil.iter_modules(events.__path__):
        if module_info.name == "base":
            continue
        module = importlib.import_module(f"{events.__name__}.{module_info.name}")
        for attribute, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, Envelope)
                and value.__module__ == module.__name__
                and "detail_type" in value.model_fields
            ):
                defined.add(f"{module_info.name}:{attribute}")
    assert defined == {name for _, name in ENTRIES}


# What each handler may load of models/events at import: base and the modules of the events it accepts (or
# its logic reads). A sample of another event is then parsed as before, loading that event's module.
PROBE = """
import importlib, json, sys
importlib.import_module("ecr_automation.handlers." + sys.argv[1])
loaded = sorted(m for m in sys.modules if m.startswith("ecr_automation.models.events."))
from ecr_automation.models.parsing import parse_event
event = parse_event(json.loads(open(sys.argv[2]).read()), max_bytes=256 * 1024)
print(json.dumps({"loaded": loaded, "parsed": type(event).__name__}))
"""


@pytest.mark.parametrize(
    ("handler", "loads"),
    [
        ("tag_guard", {"base", "image_action", "cloudtrail"}),
        ("retag", {"base", "image_action", "scans"}),
        ("replicate_planner", {"base", "image_action", "scans"}),
    ],
)
def test_a_handler_loads_only_the_event_models_it_reads_and_still_parses_any_event(
    handler: str, loads: set[str]
) -> None:
    # Given a fresh interpreter, When it imports the handler,
    # Then only these event modules are loaded; and an Inspector2 Finding (no such handler reads it)
    # is still parsed into its model, as parse_event does for every function
    package_root = str(Path(ecr_automation.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, handler, str(EVENTS / "inspector-finding.json")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert {name.rsplit(".", 1)[1] for name in outcome["loaded"]} == loads
    assert outcome["parsed"] == "InspectorFindingEvent"
