"""Real stand-ins for the integration tier: started once per session, reset per test, never skipped."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.aws_calls import RECORDER
from tests.support.moto_server import MotoServer
from tests.support.registry import OciRegistry, RegistryNotInstalledError
from tests.support.slack_sink import SlackSink

ACCOUNT = "123456789012"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> MotoServer:
    moto_server.reset()
    return moto_server


def _registry(user: str | None = None, password: str | None = None) -> OciRegistry:
    try:
        return OciRegistry(user, password)
    except RegistryNotInstalledError as error:
        pytest.fail(str(error))  # a missing real part fails loudly, never skips


@pytest.fixture(scope="session")
def oci_registry() -> Iterator[OciRegistry]:
    registry = _registry()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def ecr_token(moto_server: MotoServer) -> tuple[str, str]:
    """The user and password an ECR authorization token decodes to (moto's: AWS:<account>-auth-token)."""
    token = moto_server.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, password = base64.b64decode(token).decode().split(":", 1)
    return user, password


@pytest.fixture(scope="session")
def oci_registry_auth(ecr_token: tuple[str, str]) -> Iterator[OciRegistry]:
    """A registry that accepts exactly the ECR token flow's credentials, like ECR's registry endpoint."""
    registry = _registry(*ecr_token)
    yield registry
    registry.stop()


@pytest.fixture
def slack_sink() -> Iterator[SlackSink]:
    sink = SlackSink()
    yield sink
    sink.stop()


# -- permissions proven (test_permissions.py): record every AWS call, compare once everything else ran ------
RECORDER.install()
PERMISSIONS_TEST = "test_permissions.py"
INTEGRATION = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect: a deselected feeding test must count as not run
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    feeding = [item for item in items if item.path.parent == INTEGRATION and item.path.name != PERMISSIONS_TEST]
    RECORDER.expected_tests.update(item.nodeid for item in feeding)
    RECORDER.collected_files.update(item.path.name for item in feeding)
    RECORDER.expected_files.update(path.name for path in INTEGRATION.glob("test_*.py") if path.name != PERMISSIONS_TEST)
    last = [item for item in items if item.path.name == PERMISSIONS_TEST and item.path.parent == INTEGRATION]
    items[:] = [item for item in items if item not in last] + last


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        RECORDER.outcomes[report.nodeid] = "passed" if report.passed and report.when == "call" else report.outcome
