"""The `sam local invoke` tier: Docker, an offline Lambda base image, a built copy of the template, and a
moto server on the Docker bridge, where the functions' containers reach it.

Nothing here is skipped: no Docker, no image or no sam fails every test of the tier with the reason.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.samlocal.base_image import ImageBuildError, ensure_base_image, lambda_architecture
from tests.samlocal.docker_host import DockerHost, DockerUnavailableError, cache_root
from tests.samlocal.sam import SamError, sam_build
from tests.samlocal.stand_in import BridgeMotoServer, SamLocal, StandIn, prepare_stand_in, stand_in_credentials
from tests.support.moto_server import MotoServer


@pytest.fixture(scope="session")
def docker() -> Iterator[DockerHost]:
    try:
        host = DockerHost()
    except DockerUnavailableError as error:
        pytest.fail(f"sam local invoke needs Docker: {error}", pytrace=False)
    yield host
    host.stop()


@pytest.fixture(scope="session")
def lambda_image(docker: DockerHost) -> str:
    try:
        return ensure_base_image(docker)
    except (ImageBuildError, DockerUnavailableError) as error:
        pytest.fail(f"the Lambda base image could not be built: {error}", pytrace=False)


@pytest.fixture(scope="session")
def moto_on_bridge(docker: DockerHost) -> Iterator[MotoServer]:
    try:
        address = docker.bridge_address()
    except DockerUnavailableError as error:
        pytest.fail(f"no Docker bridge address to serve moto on: {error}", pytrace=False)
    server = BridgeMotoServer(address)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sam_env(docker: DockerHost, moto_on_bridge: MotoServer) -> dict[str, str]:
    return {**docker.env, **stand_in_credentials(moto_on_bridge)}


@pytest.fixture(scope="session")
def built_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        architecture = lambda_architecture()
        cache = cache_root() / "sam-cache"
        cache.mkdir(parents=True, exist_ok=True)
        return sam_build(architecture, tmp_path_factory.mktemp("sam-local"), cache, dict(os.environ))
    except (ImageBuildError, SamError) as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def stand_in(moto_on_bridge: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StandIn:
    # LocalWorld's clients find the stand-in through the SDK's environment.
    for name, value in stand_in_credentials(moto_on_bridge).items():
        monkeypatch.setenv(name, value)
    return prepare_stand_in(moto_on_bridge, tmp_path)


@pytest.fixture(scope="session")
def sam_local(built_template: Path, lambda_image: str, sam_env: dict[str, str]) -> SamLocal:
    if sys.platform != "linux":
        pytest.fail("the sam local invoke tier runs on Linux (dockerd, debootstrap)", pytrace=False)
    return SamLocal(built_template, lambda_image, sam_env)
