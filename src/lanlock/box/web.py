"""The box's homepage and its actions (one app, served on HTTP and HTTPS).

Every request, to any route of either listener, must name the box itself in its ``Host``: one
of its own IP addresses (v4 or v6, with or without port: the box's LAN addresses as the agent
last read them, so an address it lost stops counting and a new one counts at once; the address
the request came in on; loopback when it came in on loopback), ``localhost`` when it came in on
loopback, or a name under the box's own ``<scope>.<zone>`` once the cloud's first certificate
answer has told it those. Anything else gets a short 421 and nothing of the box: a page of
``attacker.example`` whose name is made to resolve to the box (DNS rebinding) reads nothing and
posts nothing.

The homepage is readable by anyone on the LAN (docs/design.md §3): the box's name, addresses
and ``box_id``, its console, its HTTPS URLs (one per address), the certificate, the error code
with its catalogue entry (:func:`lanlock.errors.describe`, the same text the CLI and the console
show). Opening it runs ``check_if_stale()`` (at most once per 10 s), so a refresh retries. The
log is not on it (it is the admin's, downloaded with the password, or the console's, through a
signed link), and the database UUID and the subscription code appear masked (``••••••1234``).

Once the box serves a valid certificate for its name, the admin's forms are served and accepted
only over HTTPS under that name, where the certificate proves the page is this box's and the
password travels encrypted: the homepage served any other way links there instead, and an
action posted any other way is refused, pointing there, before anything else is checked. Until
then there is no HTTPS name, and the forms work over HTTP. While the first check since the box
started runs, which of the two holds is not known yet: actions then get a 503 that changes
nothing.

Every action that changes something (credentials, log level, restart, connect, disconnect) and
the admin's log download is a POST that must carry three things, checked in this order, and
refused with a 403 page that changes nothing:

* an ``Origin`` (or ``Referer``) naming this very page's scheme, host and port, when the browser
  sends one — ``Origin: null`` counts as absent: browsers send exactly that on every form POST
  from a page served with ``Referrer-Policy: no-referrer``, which this page is;
* a form token: ``<issued>.<HMAC-SHA256(form_secret, "form\\n<issued>")>``, valid for 2 hours;
* the box's admin password (``lanlock box password``), compared against its scrypt hash in
  constant time, within the limits of :mod:`lanlock.guard` (a source that keeps failing gets a
  429 with ``Retry-After``, and at most two comparisons run at once).

The console's "Download logs" links (``GET /logs/download?expires=…&signature=…``, HMAC-SHA256
with the per-box token over path and expiry) need no password: the link is the proof.

No inline script or style: the page's one small script and its stylesheet are served by the app
(they live next to the templates, so that the package data that ships ``templates/*`` ships them
too), and the Content-Security-Policy allows only those. The subscription code, the token and
the password are never shown, and the log masks them (:mod:`lanlock.box.logs`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lanlock import errors, names
from lanlock.box import logs
from lanlock.box.console_client import PairingError
from lanlock.box.lifecycle import BoxState
from lanlock.box.ports import AgentPort
from lanlock.box.settings import BoxConfig
from lanlock.guard import PasswordGuard
from lanlock.links import MAX_LINK_SECONDS, link_is_valid, seconds_from
from lanlock.masking import masked_code
from lanlock.passwords import password_matches
from lanlock.web_common import (
    CSP,
    Refused,
    SecurityHeaders,
    form_token,
    form_token_valid,
    read_form,
    same_origin,
    static_endpoint,
    templates,
    when,
)

log = logging.getLogger("lanlock.box.web")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = {"box.js": "text/javascript; charset=utf-8", "box.css": "text/css; charset=utf-8"}
MAX_FIELD_CHARS = 200
LOG_DOWNLOAD_PATH = "/logs/download"

MISDIRECTED = (
    "421 Misdirected Request: this box answers only to its own addresses and names, and the "
    "Host of this request is neither.\n"
)

# HSTS for a day. A box that loses its certificate (disconnected, its subscription over, its
# files unreadable) serves a temporary one, which a browser holding this header refuses outright,
# with no warning to click through, until the header's time is up: by its name the box is then
# out of reach, though still open by IP over HTTP. A day is an outage a box can live with, and
# every visit renews it. No includeSubDomains: no name below the box's own is served, so it would
# promise nothing; no preload: these names are the customer's, not the public web's.
HSTS = "max-age=86400"

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::\d{1,5})?")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- helpers that need no agent --------------------------------------------------------------


def host_name(host: str | None) -> str | None:
    """A Host header's name or address: lower case, without port, brackets nor final dot.

    None for anything that is not a plain ``name[:port]``, ``address[:port]`` or
    ``[v6 address][:port]``.
    """
    found = _HOST.fullmatch(host or "")
    if not found:
        return None
    return (found["ipv6"] or found["name"]).lower().removesuffix(".") or None


def ip_address(text: str | None) -> Address | None:
    """The address ``text`` spells (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text or "")
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def host_is_ip(host: str | None) -> bool:
    """Whether a Host header names an IP literal (``10.0.0.7``, ``10.0.0.7:8900``, ``[::1]:80``)."""
    return ip_address(host_name(host)) is not None


def under_scope(name: str, config: BoxConfig) -> bool:
    """``name`` is the box's ``<scope>.<zone>`` or a name under it (False before it has them)."""
    if not (config.scope and config.zone):
        return False
    own = f"{config.scope}.{config.zone}".lower()
    return name == own or name.endswith("." + own)


def valid_url(state: BoxState, host: str | None = None) -> str | None:
    """The box's HTTPS URL while it serves a valid certificate for its name, else None: the URL
    of the address ``host`` names when it is one of the box's (a box on two networks is reached
    by the one the browser is on), else the first."""
    if state.state != "valid" or not state.url:
        return None
    address = ip_address(host_name(host))
    if address is None:
        return state.url
    label = names.address_to_label(address) + "."
    return next((url for url in state.urls if url.startswith(f"https://{label}")), state.url)


def download_filename(name: str, now: float | None = None) -> str:
    safe = _SAFE_NAME.sub("_", name).strip("._") or "box"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"lanlock-{safe}-{stamp}.log"


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class OwnHostsOnly:
    """ASGI middleware: a 421 for every request whose Host is not the box's own (see above)."""

    def __init__(self, app: ASGIApp, agent: AgentPort) -> None:
        self.app = app
        self.agent = agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._own_host(scope):
            log.debug("request refused for another host: %r", Headers(scope=scope).get("host"))
            await PlainTextResponse(MISDIRECTED, status_code=421)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _own_host(self, scope: Scope) -> bool:
        name = host_name(Headers(scope=scope).get("host"))
        if name is None:
            return False
        arrived_on = ip_address(scope["server"][0]) if scope.get("server") else None
        local = arrived_on is not None and arrived_on.is_loopback
        address = ip_address(name)
        if address is None:
            return (local and name == "localhost") or under_scope(name, self.agent.config)
        own = {arrived_on, *map(ip_address, self.agent.addresses)}
        return address in own or (local and address.is_loopback)


class StrictTransport:
    """ASGI middleware: HSTS on answers sent over HTTPS under the box's name while it serves a
    valid certificate for that name; never over HTTP, by IP or with the temporary certificate,
    where the header would pin a browser to a certificate it does not trust (see HSTS)."""

    def __init__(self, app: ASGIApp, agent: AgentPort) -> None:
        self.app = app
        self.agent = agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._certified(scope):
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, send_with_hsts)

    def _certified(self, scope: Scope) -> bool:
        """Whether this request came over HTTPS under a name the served certificate proves."""
        name = host_name(Headers(scope=scope).get("host"))
        by_name = name is not None and under_scope(name, self.agent.config)
        return scope["scheme"] == "https" and by_name and valid_url(self.agent.state) is not None


# --- the app ---------------------------------------------------------------------------------


class _Pages:
    def __init__(self, agent: AgentPort) -> None:
        self.agent = agent
        self.env = templates(TEMPLATES)
        self.guard = PasswordGuard()

    # --- rendering -------------------------------------------------------------------------

    def render(
        self, template: str, status: int = 200, csp: str | None = None, **ctx: Any
    ) -> Response:
        body = self.env.get_template(template).render(**ctx)
        headers = {"Content-Security-Policy": csp} if csp else None
        return HTMLResponse(body, status_code=status, headers=headers)

    def refused(self, refusal: Refused) -> Response:
        response = self.render(
            "message.html",
            status=refusal.status,
            title=refusal.title,
            message=refusal.message,
            refresh=False,
        )
        response.headers.update(refusal.headers)
        return response

    def forms_here(self, request: Request, https_url: str | None) -> bool:
        """Whether the admin's forms are served and accepted for this request (see above)."""
        if https_url is None:
            return True
        name = host_name(request.headers.get("host"))
        by_name = name is not None and under_scope(name, self.agent.config)
        return request.url.scheme == "https" and by_name

    def box_name(self, config: BoxConfig) -> str:
        return config.name or self.agent.box_id

    # --- read-only pages -------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        agent = self.agent
        state: BoxState = await run_in_threadpool(agent.check_if_stale)
        config = agent.config
        host = request.headers.get("host", "")
        log.debug("homepage opened as %r over %s", host, request.url.scheme)
        https_url = valid_url(state, host)
        https_name = (urlsplit(https_url).hostname or "") if https_url else ""
        forms = self.forms_here(request, https_url)
        rebinding = https_url is not None and host_is_ip(host)
        csp = None
        if rebinding:
            csp = CSP.format(connect=_origin_of(https_url or ""))
        return self.render(
            "home.html",
            csp=csp,
            name=self.box_name(config),
            named=bool(config.name),
            box_id=agent.box_id,
            addresses=agent.addresses,
            https_url=https_url,
            # The note on a name that does not answer names the address it stands for.
            https_address=names.label_to_address(https_name.split(".")[0]) if https_name else "",
            https_port=agent.https_port,
            console_url=config.console_url,
            db_uuid_masked=masked_code(config.db_uuid),
            has_db_uuid=bool(config.db_uuid),
            code_masked=masked_code(config.enterprise_code),
            has_code=bool(config.enterprise_code),
            has_token=bool(config.token),
            state=state,
            cert_valid=https_url is not None,
            forms=forms,
            help=errors.describe(state.code, state.reason) if state.code else None,
            rebinding=rebinding,
            https_name=https_name,
            ping_url=(https_url or "") + "ping",
            zone=config.zone or "",
            levels=logs.LEVELS,
            level=config.log_level or logs.DEFAULT_LEVEL,
            level_until=config.log_level_until if config.log_level else None,
            default_level=logs.DEFAULT_LEVEL,
            raised_hours=logs.RAISED_LEVEL_SECONDS // 3600,
            csrf=form_token(config.form_secret) if forms else "",
        )

    async def status(self, _: Request) -> Response:
        state = await run_in_threadpool(self.agent.check_if_stale)
        addresses = self.agent.addresses
        return JSONResponse(
            state.as_dict()
            | {"box_id": self.agent.box_id, "address": addresses[0], "addresses": addresses}
        )

    async def ping(self, _: Request) -> Response:
        # Fetched by the homepage's script from the HTTPS name, to learn whether that name
        # resolves and connects from the user's network (the DNS-rebinding check).
        return Response(status_code=204, headers={"Access-Control-Allow-Origin": "*"})

    # --- actions ---------------------------------------------------------------------------

    async def _authorized(self, request: Request, action: str) -> tuple[dict[str, str], BoxConfig]:
        """The form and fresh settings once origin, form token and password all hold."""
        client = request.client.host if request.client else "?"
        if not same_origin(request):
            log.warning("%s refused: the form came from another site (client %s)", action, client)
            raise Refused(
                403,
                "Refused: sent from another site",
                "This form was sent from a page that is not this box's homepage, so the box "
                "refused it and changed nothing. Open the box's homepage and use its forms.",
            )
        form = await read_form(request)
        config = await run_in_threadpool(self.agent.read_config)
        if not form_token_valid(config.form_secret, form.get("csrf", "")):
            log.warning("%s refused: missing or invalid form token (client %s)", action, client)
            raise Refused(
                403,
                "Refused: the form has expired",
                "The form is older than 2 hours, or did not come from this box's homepage, so "
                "the box refused it and changed nothing. Reload the homepage and try again.",
            )
        password = form.get("password", "")
        right = await self.guard.check(
            client, lambda: password_matches(password, config.password_hash)
        )  # or Throttled (a 429 refusal) for a source that keeps failing
        if not right:
            log.warning("%s refused: wrong admin password (client %s)", action, client)
            raise Refused(
                403,
                "Refused: wrong admin password",
                "The admin password is missing or wrong, so the box changed nothing. The "
                "password is shown on the box by the command `lanlock box password`.",
            )
        return form, config

    async def _save(self, edited: BoxConfig, *fields: str) -> None:
        """Write only the fields a form changed, in one locked step with the agent's writers."""
        values = {name: getattr(edited, name) for name in fields}

        def apply(config: BoxConfig) -> None:
            for name, value in values.items():
                setattr(config, name, value)

        await run_in_threadpool(self.agent.update_config, apply)

    async def action(self, request: Request) -> Response:
        handler = {
            "/credentials": self._credentials,
            "/log-level": self._log_level,
            "/restart": self._restart,
            "/connect": self._connect,
            "/disconnect": self._disconnect,
            LOG_DOWNLOAD_PATH: self._download_admin,
        }[request.url.path]
        state = self.agent.state
        https_url = valid_url(state, request.headers.get("host"))
        try:
            if state.state == "checking":
                raise Refused(
                    503,
                    "The box is starting",
                    "The box is still checking its certificate, so it cannot tell yet whether "
                    "its forms belong on its HTTPS page; nothing was changed. Try again in a few "
                    "seconds.",
                    headers={"Retry-After": "5"},
                )
            if https_url and not self.forms_here(request, https_url):
                return self._use_https(request, https_url)
            return await handler(request)
        except Refused as refusal:
            return self.refused(refusal)

    def _use_https(self, request: Request, https_url: str) -> Response:
        client = request.client.host if request.client else "?"
        log.warning(
            "%s refused: not sent to the box's HTTPS page (client %s)", request.url.path, client
        )
        return self.render(
            "message.html",
            status=403,
            title="Refused: use the box's HTTPS page",
            message="This box has a certificate for its name, so its settings are changed only "
            "on its HTTPS page, where the admin password travels encrypted to this very box. "
            f"The box changed nothing. Open `{https_url}` and use its forms.",
            refresh=False,
            home=https_url,
        )

    async def _credentials(self, request: Request) -> Response:
        form, config = await self._authorized(request, "credential change")
        if form.get("action") == "clear":
            config.db_uuid = config.enterprise_code = None
            log.warning("credentials cleared from the homepage")
        else:
            # Either field left empty keeps the current value (the page shows both masked).
            db_uuid = _field(form, "db_uuid", "database UUID") or config.db_uuid
            code = _field(form, "code", "subscription code") or config.enterprise_code
            if not db_uuid:
                raise Refused(
                    400,
                    "Database UUID missing",
                    "Enter the database UUID (or use Clear to forget the credentials); nothing "
                    "was changed.",
                )
            if not code:
                raise Refused(
                    400,
                    "Subscription code missing",
                    "Enter the subscription code; nothing was changed.",
                )
            config.db_uuid, config.enterprise_code = db_uuid, code
            log.warning("credentials changed from the homepage (database %s)", db_uuid)
        await self._save(config, "db_uuid", "enterprise_code")
        await run_in_threadpool(self.agent.check)  # docs/design.md §8: check after new credentials
        return RedirectResponse("/", status_code=303)

    async def _log_level(self, request: Request) -> Response:
        form, config = await self._authorized(request, "log level change")
        level = form.get("level", "").strip().upper()
        if level not in logs.LEVELS:
            raise Refused(
                400,
                "Unknown log level",
                f"Choose one of {', '.join(logs.LEVELS)}; nothing was changed.",
            )
        if level == logs.DEFAULT_LEVEL:
            config.log_level = config.log_level_until = None
        else:
            config.log_level = level
            config.log_level_until = time.time() + logs.RAISED_LEVEL_SECONDS
        await self._save(config, "log_level", "log_level_until")
        logs.apply_level(config)
        log.warning(
            "log level set to %s from the homepage%s",
            level,
            f" until {when(config.log_level_until)}" if config.log_level_until else "",
        )
        return RedirectResponse("/", status_code=303)

    async def _restart(self, request: Request) -> Response:
        await self._authorized(request, "restart")
        log.warning("restart asked from the homepage")
        response = self.render(
            "message.html",
            status=200,
            title="Restarting",
            message="The box is restarting; this page goes back to the homepage in a few seconds.",
            refresh=True,
        )
        response.background = BackgroundTask(self.agent.stop, restart=True)
        return response

    async def _connect(self, request: Request) -> Response:
        form, _ = await self._authorized(request, "connect")
        link = form.get("link", "").strip()
        try:
            await run_in_threadpool(self.agent.connect, link)
        except PairingError as exc:
            raise Refused(
                400,
                "Pairing failed",
                f"{exc}. Make a new pairing link in the console's IoT app and paste it within "
                "15 minutes; nothing was changed.",
            ) from None
        return RedirectResponse("/", status_code=303)

    async def _disconnect(self, request: Request) -> Response:
        await self._authorized(request, "disconnect")
        await run_in_threadpool(self.agent.disconnect)
        return RedirectResponse("/", status_code=303)

    async def _download_admin(self, request: Request) -> Response:
        _, config = await self._authorized(request, "log download")
        return await self._log_file(config, "by the admin")

    async def download_link(self, request: Request) -> Response:
        """``GET /logs/download?expires=…&signature=…``: a link signed by the console."""
        config = self.agent.config
        expires = request.query_params.get("expires")
        signature = request.query_params.get("signature")
        try:
            token = bytes.fromhex(config.token or "")
        except ValueError:
            token = b""
        refusal: tuple[str, str] | None = None
        if not expires or not signature:
            refusal = (
                "no signed link",
                "This address needs a download link made by the box's console, or the admin "
                "password: use Download logs on the box's homepage or on its console card.",
            )
        elif not token:
            refusal = (
                "the box has no console token",
                "This box is not paired with a console, so it accepts no signed download "
                "link. Use Download logs on the box's homepage, with the admin password.",
            )
        elif (expiry := seconds_from(expires)) is not None and expiry < time.time():
            refusal = (
                "the link has expired",
                "This download link has expired. Open Download logs on the console again to "
                "get a fresh link.",
            )
        elif not link_is_valid(token, LOG_DOWNLOAD_PATH, expires, signature):
            refusal = (
                "the link's signature does not hold",
                "This download link is not valid for this box: it was altered, made for "
                f"another box, or lasts more than {MAX_LINK_SECONDS // 60} minutes. Open "
                "Download logs on the console again.",
            )
        if refusal:
            log.warning("log download refused: %s", refusal[0])
            return self.refused(Refused(403, "Download refused", refusal[1]))
        return await self._log_file(config, "through a link signed by the console")

    async def _log_file(self, config: BoxConfig, how: str) -> Response:
        log.info("log file downloaded %s", how)
        path = self.agent.log_file
        # A snapshot (at most the 1 MiB of the current file): the log keeps growing while it is
        # sent, and a file read to its end then would not match its announced length.
        content = await run_in_threadpool(_read_or_empty, path)
        filename = download_filename(self.box_name(config))
        return Response(
            content,
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def _field(form: dict[str, str], key: str, label: str) -> str:
    value = form.get(key, "").strip()
    if len(value) > MAX_FIELD_CHARS or _CONTROL.search(value):
        raise Refused(400, f"Invalid {label}", f"The {label} is not valid; nothing was changed.")
    return value


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def create_app(agent: AgentPort) -> Starlette:
    pages = _Pages(agent)
    return Starlette(
        routes=[
            Route("/", pages.home, methods=["GET"]),
            Route("/status.json", pages.status, methods=["GET"]),
            Route("/ping", pages.ping, methods=["GET"]),
            Route("/static/{name:str}", static_endpoint(TEMPLATES, STATIC), methods=["GET"]),
            Route(LOG_DOWNLOAD_PATH, pages.download_link, methods=["GET"]),
            Route(LOG_DOWNLOAD_PATH, pages.action, methods=["POST"]),
            Route("/credentials", pages.action, methods=["POST"]),
            Route("/log-level", pages.action, methods=["POST"]),
            Route("/restart", pages.action, methods=["POST"]),
            Route("/connect", pages.action, methods=["POST"]),
            Route("/disconnect", pages.action, methods=["POST"]),
        ],
        # The security headers go on the 421s too: the host check runs inside them.
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(OwnHostsOnly, agent=agent),
            Middleware(StrictTransport, agent=agent),
        ],
    )
