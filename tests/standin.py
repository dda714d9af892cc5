"""A minimal stand-in for the cloud, for the answers a real cloud does not give on demand.

It answers ``POST /iot/x509`` with a chosen HTTP status, or — once "fixed" — forwards the request
to a real cloud, and records when each request came, so that tests can count retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class StandIn:
    def __init__(self, status: int) -> None:
        self.status = status
        self.forward_to: str | None = None
        self.arrivals: list[float] = []
        self.url = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                standin.arrivals.append(time.monotonic())
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if standin.forward_to:
                    answer = httpx.post(
                        standin.forward_to + self.path,
                        content=body,
                        headers={"Content-Type": "application/jose+json"},
                    )
                    status, payload = answer.status_code, answer.content
                else:
                    status, payload = standin.status, b'{"detail": "stand-in"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


@contextmanager
def standin_cloud(status: int) -> Iterator[StandIn]:
    standin = StandIn(status)
    server = ThreadingHTTPServer(("127.0.0.1", 0), standin.handler())
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
