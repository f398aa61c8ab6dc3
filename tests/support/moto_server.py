"""A moto server on loopback: AWS's control plane over real HTTP, so boto3 runs its full stack."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import boto3
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from ecr_automation.local.moto_patches import make_moto_ecr_faithful

REGION = "us-east-1"
# Tests that expect errors must see them at once: moto answers its own crashes with HTTP 500.
TEST_CLIENT_CONFIG = Config(retries={"max_attempts": 1, "mode": "standard"})


class MotoServer:
    def __init__(self) -> None:
        make_moto_ecr_faithful()  # where moto differs from real ECR (docs/local-stand-ins.md)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
        self._clients.clear()

    def env(self) -> dict[str, str]:
        """What points the standard SDK environment (and so the functions) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    @cached_property
    def _clients(self) -> dict[tuple[str, str], Any]:
        return {}

    def client(self, service: str, region: str = REGION) -> Any:
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = boto3.session.Session().client(
                service,  # type: ignore[call-overload]
                region_name=region,
                endpoint_url=self.endpoint_url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=TEST_CLIENT_CONFIG,
            )
        return self._clients[key]

    def inject_scan_findings(self, results: list[dict[str, Any]], region: str = REGION) -> None:
        response = requests.post(
            f"{self.endpoint_url}/moto-api/static/ecr/scan-finding-results",
            json={"region": region, "results": results},
            timeout=10,
        )
        response.raise_for_status()
