"""A front for Debian's pebble, for what pebble 2.4 does not do: renewal information and
``rateLimited``.

Every request goes on to pebble unchanged, with the front's own ``Host``: pebble builds every URL
it hands out (and checks every JWS ``url``) from that header, so the ACME client talks to the
front from start to end. On the way the front

* adds ``renewalInfo`` to the directory and answers it (RFC 9773) with a window it is told,
* keeps each newOrder's payload as the client signed it, for the test to read,
* answers the next newOrders with ``rateLimited`` and a ``Retry-After`` when told to, with a
  fresh nonce from pebble, as a CA does.

pebble ignores the ``replaces`` and ``profile`` fields it does not know, so orders carrying them
still go through.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.pebble import RunningPebble
from tests.servers import TLSFiles, free_port, make_tls_files

# Let's Encrypt's wording for its per-registered-domain limit.
PER_DOMAIN_DETAIL = 'too many certificates (50) already issued for "iot.test" in the last 168h0m0s'
HOP_HEADERS = {"connection", "transfer-encoding", "content-length", "keep-alive", "host"}


@dataclass
class AcmeFront:
    pebble: RunningPebble
    tls: TLSFiles
    port: int
    offer_renewal_info: bool = True
    # The suggested window it answers for a certificate ID; for any other ``any_window``, or
    # a month away.
    windows: dict[str, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)
    any_window: tuple[dt.datetime, dt.datetime] | None = None
    rate_limited: int = 0  # how many of the next newOrders get rateLimited
    retry_after: int = 10
    renewal_info_retry_after: int = 21600  # the Retry-After of its renewal information
    rate_limited_detail: str = PER_DOMAIN_DETAIL
    orders: list[dict] = field(default_factory=list)  # each newOrder payload, as signed
    renewal_info_asked: list[str] = field(default_factory=list)  # certificate IDs asked about
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def directory(self) -> str:
        return self.origin + "/dir"

    def suggested_window(self, certificate_id: str = "") -> tuple[dt.datetime, dt.datetime]:
        if certificate_id in self.windows:
            return self.windows[certificate_id]
        if self.any_window is not None:
            return self.any_window
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return now + dt.timedelta(days=30), now + dt.timedelta(days=32)


def _payload(body: bytes) -> dict:
    encoded = json.loads(body)["payload"]
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)) or b"{}")


def _handler(front: AcmeFront) -> type[BaseHTTPRequestHandler]:
    pebble_origin = front.pebble.directory.rsplit("/", 1)[0]
    verify = ssl.create_default_context(cafile=str(front.pebble.tls.ca))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.startswith("/renewal-info/"):
                return self._renewal_info(self.path.rsplit("/", 1)[1])
            response = self._forward(b"")
            if self.path == "/dir" and front.offer_renewal_info:
                directory = response.json() | {"renewalInfo": front.origin + "/renewal-info"}
                return self._send(200, json.dumps(directory).encode(), "application/json")
            self._relay(response)

        def do_HEAD(self) -> None:
            self._relay(self._forward(b""), body=False)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/order-plz":
                with front.lock:
                    front.orders.append(_payload(body))
                    limited = front.rate_limited > 0
                    front.rate_limited -= int(limited)
                if limited:
                    return self._rate_limited()
            self._relay(self._forward(body))

        def _forward(self, body: bytes) -> httpx.Response:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            headers["Host"] = f"localhost:{front.port}"
            with httpx.Client(verify=verify, timeout=30) as http:
                return http.request(
                    self.command, pebble_origin + self.path, content=body, headers=headers
                )

        def _relay(self, response: httpx.Response, body: bool = True) -> None:
            self.send_response(response.status_code)
            for key, value in response.headers.multi_items():
                if key.lower() not in HOP_HEADERS:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            if body:
                self.wfile.write(response.content)

        def _rate_limited(self) -> None:
            nonce = self._forward_head_nonce()
            problem = {
                "type": "urn:ietf:params:acme:error:rateLimited",
                "detail": front.rate_limited_detail,
                "status": 429,
            }
            self._send(
                429,
                json.dumps(problem).encode(),
                "application/problem+json",
                {"Retry-After": str(front.retry_after), "Replay-Nonce": nonce},
            )

        def _forward_head_nonce(self) -> str:
            with httpx.Client(verify=verify, timeout=30) as http:
                return http.head(pebble_origin + "/nonce-plz").headers["Replay-Nonce"]

        def _renewal_info(self, certificate_id: str) -> None:
            front.renewal_info_asked.append(certificate_id)
            start, end = front.suggested_window(certificate_id)
            window = {"start": start.isoformat(), "end": end.isoformat()}
            body = json.dumps({"suggestedWindow": window}).encode()
            self._send(
                200, body, "application/json", {"Retry-After": str(front.renewal_info_retry_after)}
            )

        def _send(
            self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


@contextmanager
def acme_front(pebble: RunningPebble, folder: Path) -> Iterator[AcmeFront]:
    """The front on a free loopback port, HTTPS with a certificate of its own CA (``front.tls``:
    the cloud's ``--acme-ca-bundle``)."""
    front = AcmeFront(pebble, make_tls_files(folder, "localhost"), free_port())
    server = ThreadingHTTPServer(("127.0.0.1", front.port), _handler(front))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(front.tls.cert, front.tls.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()
