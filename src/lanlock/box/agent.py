"""The box agent: identity, certificate lifecycle, the HTTP and HTTPS listeners, maintenance.

One process, one asyncio loop: two uvicorn servers (HTTP and HTTPS) share one app, and a
maintenance task runs ``check()`` when it is due, notices new settings, follows the box's LAN
addresses, and puts a raised log level back after its time. Blocking work (the cloud request,
file writes) runs in threads. Nothing here needs a POSIX-only call: the same agent runs on
Linux and Windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock import __version__, defaults, passwords, pki, renewal
from lanlock.box import addresses, console_client, logs
from lanlock.box.identity import load_or_create_device_key
from lanlock.box.lifecycle import (
    Backoff,
    BoxState,
    CertificateManager,
    Environment,
)
from lanlock.box.settings import (
    CONFIG_FILE,
    STATE_FILE,
    BoxConfig,
    change_config,
    load_config,
)
from lanlock.box.tls_server import CertificateSwitch
from lanlock.box.tls_store import CertificateUnreadable, Pair, PairDamaged, TLSStore
from lanlock.console_wire import MAX_URLS, StatusReport
from lanlock.fileio import write_atomic

log = logging.getLogger("lanlock.box.agent")
# A report the console did not take (it failed, or forgot the box) is sent again after this long.
REPORT_RETRY_SECONDS = 10.0

MAINTENANCE_TICK = 0.5
ANY_ADDRESS = "::"  # --host that listens on every address, IPv4 and IPv6


@dataclass
class BoxSettings:
    data_dir: Path
    host: str = defaults.LOOPBACK
    http_port: int = defaults.BOX_HTTP_PORT
    https_port: int = defaults.BOX_HTTPS_PORT
    address: str | None = None
    cloud_url: str | None = None
    cloud_ca: str | None = None
    retry_first: float = defaults.RETRY_FIRST
    retry_cap: float = defaults.RETRY_CAP
    homepage_check_interval: float = defaults.HOMEPAGE_CHECK_INTERVAL
    report_interval: float = defaults.REPORT_INTERVAL
    address_check_interval: float = addresses.READ_INTERVAL
    check_in_interval: float = renewal.CHECK_IN.total_seconds()


class Agent:
    """The agent; built without touching anything, :meth:`start` reads and makes its files.

    Everything that reads or writes the data folder, the device key or the network waits for
    ``start()``: an agent can be built (and handed around) without any of it happening, and each
    restart from the homepage reads everything afresh.
    """

    # Set by start(), from the data folder.
    log_file: Path
    device_key: ec.EllipticCurvePrivateKey
    box_id: str
    config: BoxConfig
    # Every LAN address, the first one the box's main URL (lanlock.box.addresses); replaced
    # whole when they change, so that a reader in another thread sees the old or the new ones.
    addresses: tuple[str, ...]
    switch: CertificateSwitch
    manager: CertificateManager

    def __init__(self, settings: BoxSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        # The agent owns the certificate files; the lifecycle installs through this same store.
        self.tls = TLSStore(self.data_dir / "tls")
        self._config_lock = threading.RLock()
        self._publish_lock = threading.Lock()
        # The admin password as last read, with the hash it was read for: the file is read again
        # only when the hash changes (a new password), not at every settings read.
        self._password: tuple[str | None, str | None] = (None, None)
        self._config_mtime = 0.0
        self.restart_requested = False
        self._servers: list[uvicorn.Server] = []
        # When the last report was sent, the state it told, and whether the console took it.
        self._last_report: tuple[float, dict[str, object] | None, bool] = (
            float("-inf"),
            None,
            True,
        )
        self._addresses_read_at = float("-inf")  # the maintenance loop's first tick reads them

    def start(self) -> Agent:
        """Read or make the device key, the settings and their secrets, and the pair to serve."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = logs.setup(self.data_dir)
        self.device_key = load_or_create_device_key(self.data_dir)
        self.box_id = pki.box_id_for(self.device_key.public_key())
        self._load_settings()
        self.addresses = self._read_addresses()
        self.switch = CertificateSwitch(self._startup_pair())
        self.manager = self._certificate_manager()
        self._config_mtime = self._settings_mtime()
        return self

    def _load_settings(self) -> None:
        self.config = load_config(self.data_dir)
        self._ensure_secrets()
        logs.apply_level(self.config)
        self._remember_secrets()

    def _certificate_manager(self) -> CertificateManager:
        return CertificateManager(
            Environment(
                addresses=lambda: self.addresses,
                https_port=self.settings.https_port,
                cloud_url=lambda: self.cloud_url,
                cloud_verify=self._cloud_verify(),
                device_key=self.device_key,
            ),
            tls=self.tls,
            load_config=self.read_config,
            update_config=self.update_config,
            on_install=self.switch.switch,
            backoff=Backoff(self.settings.retry_first, self.settings.retry_cap),
            check_in=self.settings.check_in_interval,
        )

    @property
    def https_port(self) -> int:
        return self.settings.https_port

    @property
    def address(self) -> str:
        """The first LAN address: the one pairing and a status report name."""
        return self.addresses[0]

    @property
    def state(self) -> BoxState:
        """The last check's state, without checking."""
        return self.manager.state

    # --- settings ----------------------------------------------------------------------------

    @property
    def cloud_url(self) -> str:
        return self.settings.cloud_url or self.config.cloud_url or defaults.CLOUD_URL

    def _cloud_verify(self) -> ssl.SSLContext | bool:
        ca = self.settings.cloud_ca or self.config.cloud_ca
        return ssl.create_default_context(cafile=ca) if ca else True

    def read_config(self) -> BoxConfig:
        with self._config_lock:
            self.config = load_config(self.data_dir)
            self._remember_secrets()
            return self.config

    def update_config(self, change: Callable[[BoxConfig], None]) -> BoxConfig:
        """Read, change and write the settings as one step: concurrent changes never undo each
        other (a certificate install and a homepage form may land at the same moment)."""
        with self._config_lock:
            config = change_config(self.data_dir, change)
            self.config = config
            self._config_mtime = self._settings_mtime()
            self._remember_secrets()
            return config

    def _remember_secrets(self) -> None:
        """The log masks these wherever they would appear (:mod:`lanlock.box.logs`)."""
        hashed = self.config.password_hash
        if hashed != self._password[0]:
            self._password = (hashed, passwords.read_password_file(self.data_dir))
        logs.remember_secrets(self.config, self._password[1])

    def _settings_mtime(self) -> float:
        try:
            return (self.data_dir / CONFIG_FILE).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _ensure_secrets(self) -> None:
        """The admin password and the form secret exist, and are on disk (a file written by hand
        or by an older version may lack them; a secret made anew at every read would be useless)."""
        if self.config.password_hash and "form_secret" in self._settings_text():
            return
        made_password = not self.config.password_hash
        if made_password:
            secret = passwords.read_password_file(self.data_dir) or passwords.new_password()
            passwords.write_password_file(self.data_dir, secret)
            hashed = passwords.hash_password(secret)
        form_secret = self.config.form_secret

        def fill(config: BoxConfig) -> None:
            if made_password:
                config.password_hash = hashed
            config.form_secret = form_secret

        self.update_config(fill)
        if made_password:
            log.info("admin password made; `lanlock box password` shows it")

    def _settings_text(self) -> str:
        try:
            return (self.data_dir / CONFIG_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    # --- certificates ------------------------------------------------------------------------

    def _startup_pair(self) -> Pair:
        """The pair to serve at once: the current one, or a fresh temporary self-signed one."""
        try:
            pair = self.tls.current()
        except CertificateUnreadable as exc:
            log.error("the current certificate cannot be read (%s); serving a temporary one", exc)
            return self.tls.fallback(self._temporary_certificate)
        except PairDamaged as exc:
            log.warning("the current certificate is damaged (%s); back to the previous one", exc)
            pair = self._previous_pair()
        if pair is None:
            key = pki.new_private_key()
            pair = self.tls.install(self._temporary_certificate(key), key, temporary=True)
        return pair

    def _previous_pair(self) -> Pair | None:
        """The pair kept for rollback, made current again when it is whole (else None)."""
        try:
            return self.tls.rollback()
        except (CertificateUnreadable, PairDamaged) as exc:
            log.warning("the previous certificate is not usable either (%s)", exc)
            return None

    def _temporary_certificate(self, key: pki.PrivateKey) -> str:
        # The box's own key and a name that cannot collide with anything real (.invalid).
        cert = pki.self_signed_certificate(key, [f"{self.box_id}.lanlock.invalid"])
        return pki.to_pem(cert)

    # --- the console ---------------------------------------------------------------------------

    def connect(self, link: str) -> BoxState:
        """Pair with a console through its one-time link, then check at once
        (docs/design.md §10)."""
        pairing = console_client.pair(
            link, self.device_key, self.box_name, self.address, __version__
        )

        self.update_config(pairing.store_in)
        log.warning("paired with the console %s as %r", pairing.console_url, pairing.name)
        return self.check()

    def disconnect(self) -> BoxState:
        """Forget the console, the credentials, the token, the certificate and its key."""
        self.update_config(BoxConfig.forget_console)
        self._forget_certificate()
        log.warning("disconnected from the console; certificate and keys wiped")
        return self.check()

    @property
    def box_name(self) -> str:
        return self.config.name or socket.gethostname()

    def _forget_certificate(self) -> None:
        self.tls.wipe()
        key = pki.new_private_key()
        self.switch.switch(self.tls.install(self._temporary_certificate(key), key, temporary=True))

    def _forget_certificate_if_disconnected(self) -> None:
        """Settings without a console (``lanlock box disconnect``) mean: no certificate kept."""
        if self.config.console_url:
            return
        try:
            pair = self.tls.current()
        except (CertificateUnreadable, PairDamaged):
            return
        if pair is not None and not pair.temporary:
            self._forget_certificate()

    def _report(self, state: BoxState) -> None:
        """Tell the console our state; a console that removed us makes us forget it."""
        config = self.config
        if not (config.console_url and config.token):
            return
        report = StatusReport(
            box_id=self.box_id,
            name=self.box_name,
            address=self.address,
            url=state.url,
            state=state.state,
            code=state.code,
            reason=state.reason,
            not_after=state.not_after,
            version=__version__,
            not_before=state.not_before,
            urls=state.urls[:MAX_URLS],  # more would be refused whole; the first are the main
        )
        result = console_client.report(config.console_url, config.token, report)
        self._last_report = (time.monotonic(), _told(state), result == "ok")
        if result == "removed":
            log.warning("the console removed this box")
            self.disconnect()

    def _report_if_due(self) -> None:
        """Report a changed state at once, else every interval; a report the console did not
        take is sent again after a pause, not at every tick (a failing console is not
        hammered)."""
        at, told, accepted = self._last_report
        changed = told != _told(self.manager.state)
        interval = self.settings.report_interval
        wait = interval if accepted else min(interval, REPORT_RETRY_SECONDS)
        if changed or time.monotonic() - at >= wait:
            self._report(self.manager.state)

    def check(self, force_new: bool = False) -> BoxState:
        state = self.manager.check(force_new)
        self._publish()
        return state

    def check_if_stale(self) -> BoxState:
        before = self.manager.state
        state = self.manager.check_if_stale(self.settings.homepage_check_interval)
        if state is not before:
            self._publish()
        return state

    def _publish(self) -> None:
        """Write the newest state to ``state.json``, one writer at a time: a check that ends as
        the addresses change must not write its older URLs last."""
        with self._publish_lock:
            status = self.manager.state.as_dict() | {
                "box_id": self.box_id,
                "address": self.address,
                "addresses": list(self.addresses),
                "name": self.config.name,
            }
            write_atomic(self.data_dir / STATE_FILE, json.dumps(status, indent=2).encode())

    # --- running -----------------------------------------------------------------------------

    def build_servers(self) -> list[uvicorn.Server]:
        # Imported here: building an agent, and `lanlock box` commands that load this module,
        # need not load Starlette and Jinja2.
        from lanlock.box.web import create_app

        app = create_app(self)
        common = {
            "log_level": "warning",
            "access_log": False,
            "server_header": False,
            "timeout_graceful_shutdown": 5,
            "lifespan": "off",
        }
        http = uvicorn.Config(app, host=self.settings.host, port=self.settings.http_port, **common)
        https = uvicorn.Config(
            app, host=self.settings.host, port=self.settings.https_port, **common
        )
        https.load()
        https.ssl = self.switch.listener_context  # ours, with the SNI switch, not uvicorn's own
        return [_Listener(http), _Listener(https)]

    async def serve(self) -> None:
        self._servers = self.build_servers()
        maintenance = asyncio.create_task(self._maintain())
        try:
            await asyncio.gather(*(server.serve() for server in self._servers))
        finally:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance

    def stop(self, restart: bool = False) -> None:
        self.restart_requested = restart
        for server in self._servers:
            server.should_exit = True

    async def _maintain(self) -> None:
        """Check when due, after new settings, follow the LAN addresses, and restore the log
        level when its time is up."""
        await asyncio.to_thread(self._forget_certificate_if_disconnected)
        await asyncio.to_thread(self.check)
        while True:
            await asyncio.sleep(MAINTENANCE_TICK)
            if time.monotonic() - self._addresses_read_at >= self.settings.address_check_interval:
                await asyncio.to_thread(self._follow_addresses)
            settings_changed = self._settings_mtime() != self._config_mtime
            if settings_changed:
                self._config_mtime = self._settings_mtime()
                config = await asyncio.to_thread(self.read_config)
                logs.apply_level(config)
            if settings_changed:
                await asyncio.to_thread(self._forget_certificate_if_disconnected)
            if settings_changed or time.monotonic() >= self.manager.next_check_at:
                await asyncio.to_thread(self.check)
            await asyncio.to_thread(self._report_if_due)
            if logs.level_expired(self.config):
                await asyncio.to_thread(self.reset_log_level)

    def reset_log_level(self) -> None:
        config = self.update_config(_default_log_level)
        logs.apply_level(config)
        log.warning("log level back to the default after its time")

    # --- addresses ---------------------------------------------------------------------------

    def _read_addresses(self) -> tuple[str, ...]:
        """The configured address (``--address`` pins it), else every LAN address found now
        (an empty ``--address``, as ``LANLOCK_BOX_ADDRESS=""`` gives, is none)."""
        return (self.settings.address,) if self.settings.address else addresses.lan_addresses()

    def _follow_addresses(self) -> None:
        """Read the addresses again; when they changed, the URLs follow at once everywhere they
        are shown (``state.json``, the homepage, the host check, the next report, which the
        changed state makes due now). No certificate is asked for: its wildcard covers every
        address label."""
        self._addresses_read_at = time.monotonic()
        found = self._read_addresses()
        if found == self.addresses:
            return
        before, self.addresses = self.addresses, found
        old_urls = self.state.urls
        state = self.manager.readdress()
        log.warning(
            "LAN addresses changed: %s → %s; HTTPS URLs: %s → %s",
            ", ".join(before),
            ", ".join(found),
            ", ".join(old_urls) or "none yet",
            ", ".join(state.urls) or "none yet",
        )
        self._publish()


def _told(state: BoxState) -> dict[str, object]:
    """What of a state makes a new report due: all of it but the time of its check."""
    told = state.as_dict()
    told.pop("checked_at", None)
    return told


def _default_log_level(config: BoxConfig) -> None:
    config.log_level = config.log_level_until = None


class _Listener(uvicorn.Server):
    """A uvicorn server that leaves signals to the agent (two servers share one process), and
    that listens on IPv4 and IPv6 at once for ``--host ::``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None and self.config.host == ANY_ADDRESS:
            # asyncio would listen on IPv6 only: a box with IPv4 and IPv6 addresses shows a URL
            # for each, and must answer at each.
            address = (ANY_ADDRESS, self.config.port)
            sockets = [socket.create_server(address, family=socket.AF_INET6, dualstack_ipv6=True)]
        await super().serve(sockets)


def run_agent(settings: BoxSettings) -> None:
    """Run until SIGINT/SIGTERM; a restart asked from the homepage starts the agent afresh."""
    while True:
        agent = Agent(settings).start()
        handlers = _install_stop_handlers(agent)
        try:
            asyncio.run(agent.serve())
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if not agent.restart_requested:
            return
        log.warning("restarting the agent")


def _install_stop_handlers(agent: Agent) -> dict[int, object]:
    def stop(_sig: int, _frame: object) -> None:
        agent.stop()

    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
