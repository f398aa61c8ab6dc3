"""A Slack incoming-webhook stand-in on loopback: records every post and checks its Block Kit payload."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block


@dataclass
class ReceivedPost:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    errors: list[str] = field(default_factory=list)


def block_kit_errors(payload: dict[str, Any]) -> list[str]:
    """What Slack would refuse in ``payload``'s blocks, as slack_sdk's own models judge it."""
    errors = []
    for position, raw in enumerate(payload.get("blocks") or []):
        try:
            block = Block.parse(raw)
            if block is None:
                raise SlackObjectFormationError(f"unknown block type {raw.get('type')!r}")
            block.validate_json()
        except (SlackObjectFormationError, KeyError, TypeError) as error:
            errors.append(f"blocks[{position}]: {error}")
    if not payload.get("text") and not payload.get("blocks"):
        errors.append("neither text nor blocks")
    return errors


class SlackSink:
    def __init__(self) -> None:
        self.received: list[ReceivedPost] = []
        self._failures: list[int] = []  # status codes to answer with next, in order
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with sink._lock:
                    status = sink._failures.pop(0) if sink._failures else 200
                    if status == 200:
                        sink.received.append(
                            ReceivedPost(self.path, dict(self.headers.items()), body, block_kit_errors(body))
                        )
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"rate_limited" if status == 429 else b"error")

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/services/T000/B000/XXXXXXXX"

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedPost]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} Slack posts within {timeout}s, got {len(self.received)}")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
