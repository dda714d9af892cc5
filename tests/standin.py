"""A minimal stand-in for the cloud, for the answers a real cloud does not give on demand.

It answers ``POST /iot/x509`` with a chosen HTTP status, or — once "fixed" — forwards the request
to a real cloud, and records when each request came, so that tests can count retries.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.threads import Threads


class StandIn:
    def __init__(self, status: int) -> None:
        self.status = status
        self.forward_to: str | None = None
        self.retry_after: str | None = None  # the Retry-After header of its own answers
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
                        timeout=20,  # as long as the box waits
                    )
                    status, payload = answer.status_code, answer.content
                else:
                    status, payload = standin.status, b'{"detail": "stand-in"}'
                self.send_response(status)
                if standin.retry_after is not None and not standin.forward_to:
                    self.send_header("Retry-After", standin.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


class _Server(ThreadingHTTPServer):
    """Keeps what a request's thread raised (forwarding to the cloud, say) for the test."""

    def __init__(self, standin: StandIn) -> None:
        super().__init__(("127.0.0.1", 0), standin.handler())
        self.failures: list[BaseException] = []

    def handle_error(self, request: object, client_address: object) -> None:
        failure = sys.exc_info()[1]
        if failure is not None and not isinstance(failure, ConnectionError):  # a box gone away
            self.failures.append(failure)


@contextmanager
def standin_cloud(status: int) -> Iterator[StandIn]:
    """The stand-in on a free loopback port. What one of its threads raised is raised at the
    end of the block, or told in a note on the error that ends it (a box that got no answer)."""
    standin = StandIn(status)
    server = _Server(standin)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    serving = Threads()
    serving.start(server.serve_forever, name="stand-in")
    try:
        yield standin
    except BaseException as error:
        for failure in server.failures:
            error.add_note("the stand-in raised:\n" + "".join(traceback.format_exception(failure)))
        raise
    finally:
        server.shutdown()
        server.server_close()
        serving.join(10)
    if server.failures:
        raise server.failures[0]
