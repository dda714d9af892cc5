"""The console's web app: the admin's pages (login, the IoT app, settings) and the boxes' API.

Pages are server-rendered and readable on a phone; every one but the login page needs a login
session (a visitor without one is sent to the login page), and every form is a POST checked, in
this order, before anything changes: the session, the ``Origin``/``Referer`` (when the browser
sends one), and a form token bound to the session (to the login page for the login form). A
refused form gets a 403 page and changes nothing. Password guessing at the login is limited
(:mod:`lanlock.guard`): a source that keeps failing gets a 429 with ``Retry-After``. No inline
script or style; the Content-Security-Policy allows only the app's own two files.

The boxes' API (docs/console-protocol.md) is JSON in and out: ``POST /iot/pair/<code>`` and
``POST /iot/status``, bodies up to 64 KiB, errors as ``{"detail": …}``, never a traceback.

The per-box token and the subscription code never appear on a page: the code is shown masked,
the token only as the signature of a "Download logs" link.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from lanlock.console import boxes, pairing, record, sessions
from lanlock.console.expiry import duration
from lanlock.console.protocol import ApiError
from lanlock.console.record import SettingsError
from lanlock.console_wire import BOX_HEADER, BOX_ID, SIGNATURE_HEADER, STATUS_PATH, TIME_HEADER
from lanlock.guard import PasswordGuard
from lanlock.masking import masked_code
from lanlock.store import Store
from lanlock.store.types import utcnow
from lanlock.web_common import (
    SECURITY_HEADERS,
    BodyTooLarge,
    Refused,
    SecurityHeaders,
    form_token,
    form_token_valid,
    read_form,
    read_limited_body,
    same_origin,
    static_endpoint,
    templates,
)

log = logging.getLogger("lanlock.console")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
MAX_API_BYTES = 64 * 1024
LOGIN_BINDING = "login"  # what the login form's token is bound to (there is no session yet)
API_PREFIXES = (pairing.PAIR_PATH, STATUS_PATH)

Handler = Callable[["Visit"], Awaitable[Response]]


@dataclass(frozen=True)
class Visit:
    """A request from a logged-in admin, with its checked form (empty for a GET)."""

    request: Request
    session: str  # the session's id, which its form tokens are bound to
    form: dict[str, str]

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])


def ago(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if moment is None:
        return ""
    seconds = max(0, int(((now or utcnow()) - moment).total_seconds()))
    return "just now" if seconds < 60 else f"{duration(seconds)} ago"


def local_path(target: str | None) -> str:
    """Where to go after login: a path of this site only, never another site (open redirect)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/iot"


class Console:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.form_secret = record.load(store).form_secret
        self.guard = PasswordGuard()
        self.env = templates(TEMPLATES)
        self.env.filters["ago"] = ago
        self.env.filters["duration"] = duration

    # --- rendering -------------------------------------------------------------------------

    def render(self, template: str, status: int = 200, **ctx: Any) -> Response:
        ctx.setdefault("csrf", None)  # None: no session, so no logout button either
        body = self.env.get_template(template).render(**ctx)
        return HTMLResponse(body, status_code=status)

    def page(self, template: str, visit: Visit, **ctx: Any) -> Response:
        return self.render(template, csrf=form_token(self.form_secret, visit.session), **ctx)

    def refused(self, refusal: Refused) -> Response:
        return self.render(
            "message.html", status=refusal.status, title=refusal.title, message=refusal.message
        )

    # --- access ------------------------------------------------------------------------------

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint for a page: a login session first, then (for a POST) a checked form."""

        async def endpoint(request: Request) -> Response:
            cookie = request.cookies.get(sessions.COOKIE)
            session = await run_in_threadpool(sessions.binding, self.store, cookie)
            if session is None:
                target = urlencode({"next": request.url.path}) if request.method == "GET" else ""
                return RedirectResponse(f"/login?{target}".rstrip("?"), status_code=303)
            try:
                form = {}
                if request.method == "POST":
                    form = await self.checked_form(request, session)
                return await handler(Visit(request, session, form))
            except Refused as refusal:
                return self.refused(refusal)

        return endpoint

    async def checked_form(self, request: Request, binding: str) -> dict[str, str]:
        client = _client(request)
        if not same_origin(request):
            log.warning(
                "form refused: sent from another site (%s, client %s)", request.url.path, client
            )
            raise Refused(
                403,
                "Refused: sent from another site",
                "This form was sent from a page that is not the console's own, so the console "
                "refused it and changed nothing. Open the console and use its forms.",
            )
        form = await read_form(request)
        if not form_token_valid(self.form_secret, form.get("csrf", ""), binding):
            log.warning("form refused: bad form token (%s, client %s)", request.url.path, client)
            raise Refused(
                403,
                "Refused: the form has expired",
                "The form is older than 2 hours, or did not come from the console's own pages, "
                "so the console refused it and changed nothing. Reload the page and try again.",
            )
        return form

    # --- login -------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        cookie = request.cookies.get(sessions.COOKIE)
        if await run_in_threadpool(sessions.binding, self.store, cookie):
            return RedirectResponse(local_path(request.query_params.get("next")), status_code=303)
        return self._login_form(request.query_params.get("next"))

    def _login_form(self, target: str | None, error: str | None = None) -> Response:
        return self.render(
            "login.html",
            status=403 if error else 200,
            login_token=form_token(self.form_secret, LOGIN_BINDING),
            next=local_path(target),
            error=error,
        )

    async def login(self, request: Request) -> Response:
        try:
            form = await self.checked_form(request, LOGIN_BINDING)
            password = form.get("password", "")
            right = await self.guard.check(
                _client(request), lambda: record.admin_password_matches(self.store, password)
            )
        except Refused as refusal:  # Throttled too: a 429 with its Retry-After
            response = self.refused(refusal)
            response.headers.update(refusal.headers)
            return response
        if not right:
            log.warning("login refused: wrong admin password (client %s)", _client(request))
            return self._login_form(
                form.get("next"),
                "Wrong password. The admin password is shown by `lanlock console password` "
                "on the console's server.",
            )
        cookie = await run_in_threadpool(sessions.start, self.store)
        response = RedirectResponse(local_path(form.get("next")), status_code=303)
        max_age = int(sessions.LIFETIME.total_seconds())
        response.set_cookie(sessions.COOKIE, cookie, max_age=max_age, **_cookie_flags(request))
        return response

    async def logout(self, visit: Visit) -> Response:
        await run_in_threadpool(
            sessions.end, self.store, visit.request.cookies.get(sessions.COOKIE)
        )
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(sessions.COOKIE, **_cookie_flags(visit.request))
        return response

    # --- the IoT app -------------------------------------------------------------------------

    async def cards(self, visit: Visit) -> Response:
        found = await run_in_threadpool(boxes.cards, self.store)
        return self.page("cards.html", visit, boxes=found, now=utcnow())

    async def box_page(self, visit: Visit) -> Response:
        box_id = visit.param("box_id")
        found = None
        if BOX_ID.fullmatch(box_id):
            found = await run_in_threadpool(boxes.card_with_logs_link, self.store, box_id)
        if found is None:
            raise _no_such_box()
        card, logs_link = found
        return self.page("box.html", visit, box=card, logs_link=logs_link, now=utcnow())

    async def remove(self, visit: Visit) -> Response:
        box_id = await self._change_box(visit, boxes.remove, "marked removed")
        return RedirectResponse(f"/iot/boxes/{box_id}", status_code=303)

    async def forget(self, visit: Visit) -> Response:
        await self._change_box(visit, boxes.forget, "forgotten")
        return RedirectResponse("/iot", status_code=303)

    async def _change_box(
        self, visit: Visit, change: Callable[[Store, str], bool], what: str
    ) -> str:
        box_id = visit.param("box_id")
        if not BOX_ID.fullmatch(box_id) or not await run_in_threadpool(change, self.store, box_id):
            raise _no_such_box()
        log.warning("box %s %s by the admin", box_id, what)
        return box_id

    async def pairing_page(self, visit: Visit) -> Response:
        console = await run_in_threadpool(record.load, self.store)
        return self.page("pairing.html", visit, has_code=bool(console.enterprise_code))

    async def make_link(self, visit: Visit) -> Response:
        try:
            link = await run_in_threadpool(pairing.new_link, self.store, visit.form.get("name"))
        except SettingsError as exc:
            raise Refused(400, "Name refused", f"{exc}; no link was made.") from None
        console = await run_in_threadpool(record.load, self.store)
        log.info("pairing link made, valid until %s", link.expires_at.isoformat())
        return self.page(
            "pair_link.html",
            visit,
            link=link,
            minutes=int(pairing.LIFETIME.total_seconds() // 60),
            has_code=bool(console.enterprise_code),
        )

    # --- settings ----------------------------------------------------------------------------

    async def settings_page(self, visit: Visit) -> Response:
        console = await run_in_threadpool(record.load, self.store)
        return self.page(
            "settings.html",
            visit,
            db_uuid=console.db_uuid,
            code_masked=masked_code(console.enterprise_code),
            cloud_url=console.cloud_url or "",
            public_url=pairing.console_url(console),
            saved=visit.request.query_params.get("saved") == "1",
        )

    async def save_settings(self, visit: Visit) -> Response:
        code = visit.form.get("code", "").strip() or None  # empty keeps the current code
        cloud = visit.form.get("cloud_url")
        try:
            await run_in_threadpool(record.update_settings, self.store, code, cloud)
        except SettingsError as exc:
            raise Refused(400, "Setting refused", f"{exc}; nothing was changed.") from None
        log.warning("settings changed by the admin%s", " (new subscription code)" if code else "")
        return RedirectResponse("/settings?saved=1", status_code=303)

    # --- open to all -------------------------------------------------------------------------

    async def home(self, _: Request) -> Response:
        return RedirectResponse("/iot", status_code=303)

    async def healthz(self, _: Request) -> Response:
        await run_in_threadpool(record.load, self.store)  # a store that is down answers 503
        return JSONResponse({"status": "ok"})

    async def pair_info(self, _: Request) -> Response:
        # A browser that opens a pairing link: say where it goes; the link stays unused.
        return self.render("pair_info.html")

    # --- the boxes' API ----------------------------------------------------------------------

    async def pair_api(self, request: Request) -> Response:
        code = str(request.path_params["code"])

        def work(body: bytes) -> tuple[int, dict[str, Any]]:
            answer = pairing.pair(self.store, code, body)
            log.warning("box paired: %s", answer["name"])
            return 200, answer

        return await self._api(request, "pairing", work)

    async def status_api(self, request: Request) -> Response:
        headers = request.headers

        def work(body: bytes) -> tuple[int, dict[str, Any]]:
            return boxes.record_status(
                self.store,
                headers.get(BOX_HEADER),
                headers.get(TIME_HEADER),
                headers.get(SIGNATURE_HEADER),
                body,
            )

        return await self._api(request, "status report", work)

    async def _api(
        self, request: Request, what: str, work: Callable[[bytes], tuple[int, dict[str, Any]]]
    ) -> Response:
        try:
            body = await read_limited_body(request, MAX_API_BYTES)
        except BodyTooLarge:
            return JSONResponse(
                {"detail": f"the body is over {MAX_API_BYTES // 1024} KiB"}, status_code=413
            )
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            status, answer = await run_in_threadpool(work, body)
        except ApiError as error:
            log.info("%s refused with %s (client %s)", what, error.status, _client(request))
            status, answer = error.status, error.body
        return JSONResponse(answer, status_code=status)

    # --- failures ------------------------------------------------------------------------------

    async def store_unavailable(self, request: Request, exc: Exception) -> Response:
        log.error("the store is unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return self._failure(request, 503, "The console's store is unavailable; try again shortly.")

    async def internal_error(self, request: Request, _: Exception) -> Response:
        # The server logs the traceback; the visitor gets a plain page or JSON, never the trace.
        return self._failure(request, 500, "Something went wrong in the console; see its log.")

    def _failure(self, request: Request, status: int, message: str) -> Response:
        # Answered from outside the middleware for a 500: the headers are set here.
        headers = SECURITY_HEADERS | ({"Retry-After": "5"} if status == 503 else {})
        if request.url.path.startswith(API_PREFIXES):
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        response = self.refused(Refused(status, "Not available", message))
        response.headers.update(headers)
        return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _cookie_flags(request: Request) -> dict[str, Any]:
    """The session cookie: out of scripts' reach, not sent on cross-site requests but links,
    and only over HTTPS when the console is served over HTTPS."""
    return {"httponly": True, "samesite": "lax", "secure": request.url.scheme == "https"}


def _no_such_box() -> Refused:
    return Refused(404, "No such box", "No box with this ID is paired with this console.")


def create_app(store: Store) -> Starlette:
    console = Console(store)
    guarded = console.guarded
    return Starlette(
        routes=[
            Route("/", console.home, methods=["GET"]),
            Route("/login", console.login_page, methods=["GET"]),
            Route("/login", console.login, methods=["POST"]),
            Route("/logout", guarded(console.logout), methods=["POST"]),
            Route("/iot", guarded(console.cards), methods=["GET"]),
            Route("/iot/boxes/{box_id}", guarded(console.box_page), methods=["GET"]),
            Route("/iot/boxes/{box_id}/remove", guarded(console.remove), methods=["POST"]),
            Route("/iot/boxes/{box_id}/forget", guarded(console.forget), methods=["POST"]),
            Route("/iot/pairing", guarded(console.pairing_page), methods=["GET"]),
            Route("/iot/pairing", guarded(console.make_link), methods=["POST"]),
            Route("/settings", guarded(console.settings_page), methods=["GET"]),
            Route("/settings", guarded(console.save_settings), methods=["POST"]),
            Route(pairing.PAIR_PATH + "{code}", console.pair_info, methods=["GET"]),
            Route(pairing.PAIR_PATH + "{code}", console.pair_api, methods=["POST"]),
            Route(STATUS_PATH, console.status_api, methods=["POST"]),
            Route("/static/{name}", static_endpoint(TEMPLATES, STATIC), methods=["GET"]),
            Route("/healthz", console.healthz, methods=["GET"]),
        ],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            SQLAlchemyError: console.store_unavailable,
            Exception: console.internal_error,
        },
    )
