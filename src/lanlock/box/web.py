"""The box's homepage and its actions (one app, served on HTTP and HTTPS).

The homepage is readable by anyone on the LAN (DESIGN §3): the box's name, address and
``box_id``, its console, its HTTPS URL, the certificate, the error code with its catalogue entry
(:func:`lanlock.errors.describe`, the same text the CLI and the console show), and the tail of
the log. Opening it runs ``check_if_stale()`` (at most once per 10 s), so a refresh retries.

Every action that changes something (credentials, log level, restart) and the admin's log
download is a POST that must carry three things, checked in this order, and refused with a 403
page that changes nothing:

* an ``Origin`` (or ``Referer``) naming this very page's scheme, host and port, when the browser
  sends one — ``Origin: null`` counts as absent: browsers send exactly that on every form POST
  from a page served with ``Referrer-Policy: no-referrer``, which this page is;
* a form token: ``<issued>.<HMAC-SHA256(form_secret, "form\\n<issued>")>``, valid for 2 hours;
* the box's admin password (``lanlock box password``), compared against its scrypt hash in
  constant time.

The console's "Download logs" links (``GET /logs/download?expires=…&signature=…``, HMAC-SHA256
with the per-box token over path and expiry) need no password: the link is the proof.

No inline script or style: the page's one small script and its stylesheet are served by the app
(they live next to the templates, so that the package data that ships ``templates/*`` ships them
too), and the Content-Security-Policy allows only those. The subscription code, the token and
the password are never logged nor shown; the code appears masked (``••••••1234``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from lanlock import errors
from lanlock.box import logs
from lanlock.box.console_client import PairingError
from lanlock.links import MAX_LINK_SECONDS, link_is_valid
from lanlock.passwords import password_matches
from lanlock.web_common import (
    CSP,
    Refused,
    SecurityHeaders,
    form_token,
    form_token_valid,
    masked_code,
    read_form,
    same_origin,
    static_endpoint,
    templates,
    when,
)

if TYPE_CHECKING:
    from lanlock.box.agent import Agent
    from lanlock.box.lifecycle import BoxState
    from lanlock.box.settings import BoxConfig

log = logging.getLogger("lanlock.box.web")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = {"box.js": "text/javascript; charset=utf-8", "box.css": "text/css; charset=utf-8"}
MAX_FIELD_CHARS = 200
LOG_DOWNLOAD_PATH = "/logs/download"

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- helpers that need no agent --------------------------------------------------------------


def host_is_ip(host: str | None) -> bool:
    """Whether a Host header names an IP literal (``10.0.0.7``, ``10.0.0.7:8900``, ``[::1]:80``)."""
    if not host:
        return False
    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return False
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def download_filename(name: str, now: float | None = None) -> str:
    safe = _SAFE_NAME.sub("_", name).strip("._") or "box"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"lanlock-{safe}-{stamp}.log"


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- the app ---------------------------------------------------------------------------------


class _Pages:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.env = templates(TEMPLATES)

    # --- rendering -------------------------------------------------------------------------

    def render(
        self, template: str, status: int = 200, csp: str | None = None, **ctx: Any
    ) -> Response:
        body = self.env.get_template(template).render(**ctx)
        headers = {"Content-Security-Policy": csp} if csp else None
        return HTMLResponse(body, status_code=status, headers=headers)

    def refused(self, refusal: Refused) -> Response:
        return self.render(
            "message.html",
            status=refusal.status,
            title=refusal.title,
            message=refusal.message,
            refresh=False,
        )

    def box_name(self, config: BoxConfig) -> str:
        return config.name or self.agent.box_id

    # --- read-only pages -------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        agent = self.agent
        state: BoxState = await run_in_threadpool(agent.check_if_stale)
        config = agent.config
        host = request.headers.get("host", "")
        log.debug("homepage opened as %r over %s", host, request.url.scheme)
        cert_valid = state.state == "valid" and bool(state.url)
        rebinding = cert_valid and host_is_ip(host)
        csp = None
        if rebinding:
            csp = CSP.format(connect=_origin_of(state.url or ""))
        tail = await run_in_threadpool(logs.tail, agent.log_file)
        return self.render(
            "home.html",
            csp=csp,
            name=self.box_name(config),
            named=bool(config.name),
            box_id=agent.box_id,
            address=agent.address,
            https_port=agent.settings.https_port,
            console_url=config.console_url,
            db_uuid=config.db_uuid or "",
            code_masked=masked_code(config.enterprise_code),
            has_code=bool(config.enterprise_code),
            has_token=bool(config.token),
            state=state,
            cert_valid=cert_valid,
            help=errors.describe(state.code, state.reason) if state.code else None,
            rebinding=rebinding,
            https_name=urlsplit(state.url).hostname if state.url else "",
            ping_url=(state.url or "") + "ping",
            zone=config.zone or "",
            levels=logs.LEVELS,
            level=config.log_level or logs.DEFAULT_LEVEL,
            level_until=config.log_level_until if config.log_level else None,
            default_level=logs.DEFAULT_LEVEL,
            raised_hours=logs.RAISED_LEVEL_SECONDS // 3600,
            csrf=form_token(config.form_secret),
            log_tail="\n".join(tail),
        )

    async def status(self, _: Request) -> Response:
        state = await run_in_threadpool(self.agent.check_if_stale)
        return JSONResponse(
            state.as_dict() | {"box_id": self.agent.box_id, "address": self.agent.address}
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
        if not await run_in_threadpool(password_matches, password, config.password_hash):
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
        try:
            return await handler(request)
        except Refused as refusal:
            return self.refused(refusal)

    async def _credentials(self, request: Request) -> Response:
        form, config = await self._authorized(request, "credential change")
        if form.get("action") == "clear":
            config.db_uuid = config.enterprise_code = None
            log.warning("credentials cleared from the homepage")
        else:
            db_uuid = _field(form, "db_uuid", "database UUID")
            code = _field(form, "code", "subscription code")
            if not db_uuid:
                raise Refused(
                    400,
                    "Database UUID missing",
                    "Enter the database UUID (or use Clear to forget the credentials); nothing "
                    "was changed.",
                )
            if not code and not config.enterprise_code:
                raise Refused(
                    400,
                    "Subscription code missing",
                    "Enter the subscription code; nothing was changed.",
                )
            config.db_uuid = db_uuid
            if code:
                config.enterprise_code = code
            log.warning("credentials changed from the homepage (database %s)", db_uuid)
        await self._save(config, "db_uuid", "enterprise_code")
        await run_in_threadpool(self.agent.check)  # DESIGN §5: check after new credentials
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
        elif expires.isdigit() and int(expires) < time.time():
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


def create_app(agent: Agent) -> Starlette:
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
        middleware=[Middleware(SecurityHeaders)],
    )
