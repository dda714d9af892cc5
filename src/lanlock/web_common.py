"""What the roles' web servers share: headers, request bodies, forms, form tokens, templates.

Ground floor: imports no role. The box's homepage and the console's pages follow one set of
rules (docs/design.md §3): no inline script or style (a Content-Security-Policy allows only the
app's own files), every form that changes something carries a form token and comes from the
page's own origin, and the subscription code shown only masked (the admin passwords they check
are in :mod:`lanlock.passwords`). The cloud's API reads its bodies with :func:`read_limited_body`
too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jinja2
from markupsafe import Markup, escape
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lanlock.links import same_secret, seconds_from
from lanlock.tls_profile import server_context

# --- headers ---------------------------------------------------------------------------------

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src {connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP.format(connect="'none'"),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware: the security headers on every response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- serving ---------------------------------------------------------------------------------


def static_endpoint(
    folder: Path, kinds: dict[str, str]
) -> Callable[[Request], Awaitable[Response]]:
    """``GET /static/{name}``: the app's own script and stylesheet (``kinds``: name to type).

    They live next to the templates, so that the package data that ships ``templates/*`` ships
    them too; they are read once, at start.
    """
    files = {name: ((folder / name).read_bytes(), kind) for name, kind in kinds.items()}

    async def static_file(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        content, media_type = found
        return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})

    return static_file


def run_server(
    app: ASGIApp,
    host: str,
    port: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` (over HTTPS with a certificate and key) until SIGINT or SIGTERM, on
    ``host:port`` or on ``sock``, a listening socket that several worker processes share.

    The cloud's and the console's way: no ``Server`` header, no access log (nothing in the
    cloud's URLs needs logging, and the console's pairing links are secrets in their URL), and
    10 s for the requests in flight at shutdown.
    """
    import uvicorn  # here: the modules that only mask a code or read a form need no server

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    if tls_cert and tls_key:
        # lanlock's TLS profile in place of uvicorn's context (which takes CBC suites and offers
        # no ALPN): set once load() has run, which would set it again.
        config.load()
        config.ssl = server_context(tls_cert, tls_key)
    uvicorn.Server(config).run(sockets=[sock] if sock else None)


# --- refusals and request bodies ---------------------------------------------------------------


class Refused(Exception):
    """A request refused before anything changed: the page (or JSON) says why.

    ``headers`` go on the refusal's response (a 429's ``Retry-After``).
    """

    def __init__(
        self, status: int, title: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message
        self.headers = headers or {}


class BodyTooLarge(Exception):
    pass


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, refused early (by Content-Length) or while streaming past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(
    request: Request, limit: int = 16 * 1024, max_fields: int = 20
) -> dict[str, str]:
    """An urlencoded form's fields (first value of each); anything else is refused.

    An empty body is an empty form (browsers and clients send no type with it), so that it is
    refused for its missing form token like any other form without one.
    """
    try:
        body = await read_limited_body(request, limit)
    except BodyTooLarge:
        raise Refused(413, "Form too large", "The form sent is too large.") from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and content_type != "application/x-www-form-urlencoded":
        raise Refused(415, "Not a form", "Only this site's own forms are accepted.")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "Unreadable form", "The form sent cannot be read.") from None
    return {key: values[0] for key, values in fields.items()}


# --- form tokens and origins -------------------------------------------------------------------

FORM_TOKEN_SECONDS = 2 * 3600
FORM_TOKEN_SKEW = 60  # a token "issued" up to a minute ahead still passes (clock steps)


def form_token(secret: str, binding: str = "", now: float | None = None) -> str:
    """``<issued>.<HMAC-SHA256(secret, "form\\n<issued>[\\n<binding>]")>``, valid 2 hours.

    ``binding`` ties the token to one login session, so that a token seen in one session is
    worth nothing in another; pages without sessions (the box's) leave it empty.
    """
    issued = int(time.time() if now is None else now)
    return f"{issued}.{_form_mac(secret, issued, binding)}"


def form_token_valid(secret: str, token: str, binding: str = "", now: float | None = None) -> bool:
    issued_text, _, mac = token.partition(".")
    issued = seconds_from(issued_text)
    if issued is None or not mac:
        return False
    age = (time.time() if now is None else now) - issued
    if not -FORM_TOKEN_SKEW <= age <= FORM_TOKEN_SECONDS:
        return False
    return same_secret(_form_mac(secret, issued, binding), mac)


def _form_mac(secret: str, issued: int, binding: str) -> str:
    message = f"form\n{issued}" + (f"\n{binding}" if binding else "")
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _origin_key(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit("//" + netloc)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def same_origin(request: Request) -> bool:
    """The Origin (or else the Referer) names this page's origin, or the browser sent neither.

    ``Origin: null`` counts as absent: browsers send exactly that on every form POST from a page
    served with ``Referrer-Policy: no-referrer``.
    """
    origin = request.headers.get("origin")
    source = origin if origin and origin != "null" else request.headers.get("referer")
    if not source:
        return True
    try:
        parts = urlsplit(source)
    except ValueError:
        return False
    scheme = request.url.scheme
    if parts.scheme != scheme:
        return False
    mine = _origin_key(request.headers.get("host", ""), scheme)
    return mine is not None and _origin_key(parts.netloc, scheme) == mine


# --- templates -----------------------------------------------------------------------------------

_CODE_SPAN = re.compile(r"`([^`]*)`")


def codify(text: str | None) -> Markup:
    """Escape a catalogue text and show its `backticked` commands and files as code."""
    escaped = str(escape(text or ""))
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", escaped))  # noqa: S704 - escaped above


def when(value: str | float | dt.datetime | None) -> str:
    """A moment as ``2026-11-25 14:03 UTC``, from ISO text, unix seconds or a datetime."""
    if value is None or value == "":
        return ""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, int | float):
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    else:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


SHARED_TEMPLATES = Path(__file__).parent / "templates"


def templates(folder: Path) -> jinja2.Environment:
    """Autoescaping templates from ``folder`` with the ``codify`` and ``when`` filters.

    The shared ones (``catalogue.html``: how an error's catalogue entry is shown) come after.
    """
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(folder), jinja2.FileSystemLoader(SHARED_TEMPLATES)]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["codify"] = codify
    env.filters["when"] = when
    return env
