"""A stand-in for AWS AppConfig's data plane (appconfigdata), which moto 5.2.5 does not implement.

It speaks the service's wire protocol (rest-json) on loopback, so boto3 runs its whole stack against it
(``AWS_ENDPOINT_URL_APPCONFIGDATA``), and behaves as the API reference describes: a session per
StartConfigurationSession, each configuration token valid for one GetLatestConfiguration, whose body is
empty when the session already has the deployed version. Poll intervals are not enforced.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Profile = tuple[str, str, str]  # application, environment, configuration profile


@dataclass
class _Session:
    profile: Profile
    version: int = 0  # the version this session last received


class AppConfigData:
    def __init__(self) -> None:
        self.deployed: dict[Profile, list[bytes]] = {}
        self.requests: list[str] = []
        self._tokens: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint_url = f"http://{host!s}:{port}"

    def deploy(self, application: str, environment: str, profile: str, document: bytes) -> None:
        """A new hosted version, deployed at once (AppConfig.AllAtOnce)."""
        with self._lock:
            self.deployed.setdefault((application, environment, profile), []).append(document)

    def expire_tokens(self) -> None:
        """What 24 hours do to every session's token: the next GetLatestConfiguration is a BadRequestException."""
        with self._lock:
            self._tokens.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the two operations ----------------------------------------------------------------------------
    def start_session(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        profile = (
            body.get("ApplicationIdentifier", ""),
            body.get("EnvironmentIdentifier", ""),
            body.get("ConfigurationProfileIdentifier", ""),
        )
        with self._lock:
            if profile not in self.deployed:
                return _error(404, "ResourceNotFoundException", f"no deployment of {'/'.join(profile)}")
            token = secrets.token_hex(16)
            self._tokens[token] = _Session(profile)
        return 201, {"Content-Type": "application/json"}, json.dumps({"InitialConfigurationToken": token}).encode()

    def latest(self, token: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            session = self._tokens.pop(token, None)  # a token is valid for one call
            if session is None:
                return _error(400, "BadRequestException", "the configuration token is invalid or was used")
            versions = self.deployed[session.profile]
            body = versions[-1] if session.version != len(versions) else b""
            session.version = len(versions)
            next_token = secrets.token_hex(16)
            self._tokens[next_token] = session
        headers = {
            "Next-Poll-Configuration-Token": next_token,
            "Next-Poll-Interval-In-Seconds": "60",
            "Content-Type": "application/toml",
            "Version-Label": str(session.version),
        }
        return 200, headers, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        data = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                data.requests.append("StartConfigurationSession")
                self._answer(*data.start_session(body))

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                data.requests.append("GetLatestConfiguration")
                self._answer(*data.latest(query.get("configuration_token", [""])[0]))

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": code}
    return status, headers, json.dumps({"Message": message}).encode()
