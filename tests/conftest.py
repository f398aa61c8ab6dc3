"""Shared test helpers: sample events are real JSON files in events/, loaded by one function."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"

# Handlers build Powertools objects at import: give them the environment the template gives them,
# without tracing (no X-Ray daemon here).
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "ecr-automation")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ECRAutomation")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def load_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


@pytest.fixture
def sample_event() -> Any:
    def load(name: str, **detail_overrides: Any) -> dict[str, Any]:
        event = copy.deepcopy(load_event(name))
        event["detail"].update(detail_overrides)
        return event

    return load


@pytest.fixture(autouse=True)
def _no_metrics_left_from_another_test() -> None:
    """Powertools keeps metrics in a module-wide store and never clears it while metrics are disabled:
    start every test with the handlers' stores empty, as a fresh Lambda invocation would."""
    import sys  # noqa: PLC0415

    for name in ("ecr_automation.handlers.tag_guard", "ecr_automation.handlers.retag"):
        module = sys.modules.get(name)
        if module is not None:
            module.metrics.clear_metrics()
