"""Putting the console together: settings → store (migrated) → its record → app → uvicorn."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lanlock import defaults
from lanlock.console import record
from lanlock.console.app import create_app
from lanlock.console.models import console_store
from lanlock.store import Store
from lanlock.web_common import run_server

DATABASE_FILE = "console.db"


@dataclass
class ConsoleSettings:
    data_dir: Path
    store_url: str | None = None
    host: str = defaults.LOOPBACK
    port: int = defaults.CONSOLE_PORT
    public_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def store(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / DATABASE_FILE}"

    @property
    def url(self) -> str:
        """The URL boxes and browsers reach the console at (pairing answers and links)."""
        if self.public_url:
            return record.checked_url(self.public_url)
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def listens_everywhere(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_unspecified
        except ValueError:
            return False


def open_console(settings: ConsoleSettings) -> tuple[Store, bool]:
    """The migrated store, and whether this very call made the console (and its password)."""
    # The folder and a SQLite store hold the boxes' tokens and the subscription code: private
    # from the start (SQLite gives its -wal and -shm files the database file's mode).
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = console_store(settings.store)
    if store.is_sqlite and store.url.database not in (None, "", ":memory:"):
        Path(store.url.database).touch(mode=0o600, exist_ok=True)  # type: ignore[arg-type]
    store.migrate()
    return store, record.initialise(store, settings.data_dir)


def serve(settings: ConsoleSettings, store: Store) -> None:
    record.set_public_url(store, settings.url)
    run_server(create_app(store), settings.host, settings.port, settings.tls_cert, settings.tls_key)
