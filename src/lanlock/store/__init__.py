"""The SQL floor of the roles that keep a store: one SQLAlchemy engine, transactions that mean
the same on both backends, and the migration runner. Each role owns its tables and migrations
(:class:`Schema`): the cloud's in ``lanlock/cloud``, the console's in ``lanlock/console``.

SQLite (the default, one file) and PostgreSQL (production, many replicas) must give the same
guarantees to the cloud's concurrency rules. PostgreSQL gets them from row locks
(``SELECT … FOR UPDATE``); SQLite ignores ``FOR UPDATE``, so every SQLite transaction starts with
``BEGIN IMMEDIATE``, which takes the database's write lock up front and makes two writers queue
instead of both reading stale counts.

A store is only ever migrated forward. One at a revision this code does not have was migrated
by a newer lanlock: every role refuses it (:class:`SchemaTooNew`) rather than run on tables whose
meaning it does not know, and says to upgrade the software.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    column,
    create_engine,
    event,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

# Any constant works: it only has to be the same in every process that migrates this store.
MIGRATION_LOCK_ID = 0x1A771_0C4


class StoreConfigError(ValueError):
    """A store URL that cannot work as given; the message names the problem and the fix."""


class SchemaTooNew(StoreConfigError):
    """The store's schema is at a revision this code does not have: a newer lanlock migrated it.

    A StoreConfigError, so that every role's command line tells it in one line; the message
    names the store's revision and the fix (the newer software: a store never goes back).
    """


SUPPORTED_BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Schema:
    """A role's tables as its Alembic migrations make them; several can share one database."""

    migrations: Path
    version_table: str = "alembic_version"  # what the migrations' env.py gives Alembic

    def refuse_unknown(self, revision: str | None) -> None:
        """SchemaTooNew unless ``revision`` is one of this schema's own (or None: empty)."""
        known = known_revisions(self.migrations)
        if revision is not None and revision not in known:
            raise SchemaTooNew(_too_new(revision, f"{self.migrations.parent.name} {known[0]}"))


class Store:
    """An engine and a session factory for one store URL holding one role's schema."""

    def __init__(self, url: str, schema: Schema, *, pool_size: int = 10) -> None:
        self.engine = _make_engine(url, pool_size)
        self.schema = schema
        self.url = self.engine.url
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest migration (or to ``revision``, as an older release
        left it); safe when several processes start at once."""
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            try:
                # Before Alembic, which would fail on it with a traceback, and change nothing.
                self.schema.refuse_unknown(_stored_revision(conn, self.schema.version_table))
                config = alembic_config(self.schema)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                conn.commit()
            finally:
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                    conn.commit()

    def revision(self) -> str | None:
        """The revision the schema is at (None: never migrated)."""
        with self.engine.connect() as conn:
            return schema_revision(conn, self.schema.version_table)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(schema: Schema) -> Config:
    config = Config()
    config.set_main_option("script_location", str(schema.migrations))
    return config


def schema_revision(conn: Connection, version_table: str) -> str | None:
    """The revision a database's schema is at (None: never migrated), without the role's
    Schema, so that a role can check another role's schema without owning its migrations.

    A revision that no schema of this installation has is refused (SchemaTooNew): a newer
    lanlock migrated the store, and its tables may no longer mean what this code reads.
    """
    revision = _stored_revision(conn, version_table)
    schemas = installed_schemas()
    if revision is not None and not any(revision in known for known in schemas.values()):
        raise SchemaTooNew(_too_new(revision, ", ".join(f"{r} {k[0]}" for r, k in schemas.items())))
    return revision


def _stored_revision(conn: Connection, version_table: str) -> str | None:
    if not inspect(conn).has_table(version_table):
        return None
    versions = table(version_table, column("version_num"))
    return conn.execute(select(versions.c.version_num)).scalar()


@functools.cache
def known_revisions(migrations: Path) -> tuple[str, ...]:
    """The revisions of one migrations folder, newest first (a schema's history is a line)."""
    return tuple(script.revision for script in ScriptDirectory(str(migrations)).walk_revisions())


def installed_schemas() -> dict[str, tuple[str, ...]]:
    """Every role's revisions in this installation, by role: each keeps its migrations in
    ``lanlock/<role>/migrations`` (the store is the floor they stand on, so it cannot import
    them; the DNS checks the cloud's schema without the cloud's code)."""
    package = Path(__file__).resolve().parent.parent
    return {
        folder.parent.name: known_revisions(folder)
        for folder in sorted(package.glob("*/migrations"))
    }


def _too_new(revision: str, newest: str) -> str:
    return (
        f"the store's schema is at revision {revision}, newer than this lanlock knows (its "
        f"newest: {newest}): a newer lanlock has migrated it. Upgrade lanlock to that version "
        "or later; a store is never migrated back to an older version"
    )


def parse_url(url: str) -> URL:
    """A store URL, parsed; StoreConfigError naming the fix when it cannot be a store."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreConfigError(
            f"{url!r} is not a store URL; give --store (or the role's LANLOCK_<ROLE>_STORE) as "
            "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        ) from exc
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StoreConfigError(
            f"stores are SQLite or PostgreSQL, not {parsed.get_backend_name()}: give --store "
            "(or the role's LANLOCK_<ROLE>_STORE) as sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"
        )
    return parsed


def _make_engine(url: str, pool_size: int) -> Engine:
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=10
        )
    if parsed.database and parsed.database != ":memory:":
        _make_private_file(Path(parsed.database))
    engine = create_engine(
        url,
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=pool_size,
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _make_private_file(path: Path) -> None:
    """Create a SQLite store's folder (0700) and file (0600) before SQLite does (0644).

    The stores hold subscription codes, box tokens and the encrypted CA: readable by their owner
    only. SQLite gives the ``-wal`` and ``-shm`` files the database file's own mode.

    An existing file is not opened at all. Closing any descriptor of a file drops every POSIX
    lock the process holds on it, so opening and closing the store here, behind the back of a
    connection this process already has on it (a second Store on one file), dropped that
    connection's locks: another process then took the WAL for unused and reset it, and the
    rows in it were lost ("disk I/O error", a short read, for every reader after).
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            with contextlib.suppress(FileExistsError):  # another process made it just now
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise StoreConfigError(
            f"cannot make the store {path}: {exc.strerror}; choose another --store"
        ) from exc


def _sqlite_on_connect(dbapi_connection: object, _record: object) -> None:
    # Hand transaction control to the "begin" hook below instead of pysqlite's own guesswork.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA busy_timeout=30000")
    _use_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    # With WAL: no fsync per commit (a power cut may lose the last commits, never the file).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """WAL, so that readers never wait for the writer; the mode is stored in the file.

    Switching needs a moment alone with the file, and SQLite answers "locked" at once instead of
    waiting when another process holds it (two processes creating one store together): retry.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_begin_immediate(connection: object) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")  # type: ignore[attr-defined]


__all__ = [
    "Schema",
    "SchemaTooNew",
    "Store",
    "StoreConfigError",
    "alembic_config",
    "parse_url",
    "schema_revision",
]
