"""Real stand-ins for the integration tier: started once per session, reset per test, never skipped."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

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
