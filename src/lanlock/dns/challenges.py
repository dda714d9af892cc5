"""What the DNS reads from the store it shares with the cloud, as seen by one DNS worker: the
DNS-01 TXT values the cloud publishes, and the URIs of its ACME accounts, which the apex's CAA
records name (:mod:`lanlock.dns.caa`).

Each worker keeps a snapshot of every unexpired row of ``acme_challenges`` and of the registered
accounts of ``acme_accounts``, and a thread renews it every ``refresh`` seconds (0.25 by
default), so a value or an account the cloud writes is answered within about a quarter of a
second, by every worker of every replica. A snapshot rather than a query per question because:

* the store stays off the answering thread: a slow or unreachable store (a PostgreSQL fail-over,
  a locked SQLite file) delays the next snapshot, never an answer, and never the address answers
  that share the worker;
* the load on the store is fixed (two small queries every ``refresh`` seconds per worker)
  whatever the rate of TXT and CAA questions, including a flood of them for made-up scopes;
* a snapshot lookup costs 0.2 µs; a query per question costs about 90 µs on SQLite and 230 µs
  on a local PostgreSQL (``bench/dns_paths.py``), more than the rest of the answer.

The accounts are read after the challenge values, in the same snapshot. The cloud writes its
account's URI when it registers, before it publishes the values of its first order, and answers
the CA's challenges only once every server shows those values: a snapshot that holds them holds
the account too, so the CA that then checks CAA finds the account named.

When no snapshot could be taken for ``stale_after`` seconds, :meth:`ChallengeBoard.values` and
:meth:`ChallengeBoard.account_uris` return None and the server answers SERVFAIL: "I don't know" is
true, and a resolver then asks another name server instead of caching a wrong "no such record"
(or, for CAA, records wider than the accounts they named).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from lanlock import account_table, challenge_table
from lanlock.dns.caa import account_uri_problem
from lanlock.store import parse_url, schema_revision

log = logging.getLogger(__name__)

Challenges = dict[str, list[tuple[str, dt.datetime]]]
_METADATA = MetaData()
CHALLENGES = challenge_table.define(_METADATA)
ACCOUNTS = account_table.define(_METADATA)
# The first of the cloud's revisions that holds both tables as the DNS reads them.
REQUIRED_REVISION = max(challenge_table.FIRST_REVISION, account_table.FIRST_REVISION, key=int)
_SHOWN_URI = 100  # characters of a refused account URI shown in the log


@dataclass(frozen=True)
class Snapshot:
    """The store as one worker last read it."""

    challenges: Challenges = field(default_factory=dict)  # by scope, in the order written
    account_uris: tuple[str, ...] = ()  # each once, sorted: the same answer on every replica
    refused_uris: dict[str, str] = field(default_factory=dict)  # URI: why it is not served


class SchemaMissing(Exception):
    """The store does not hold the cloud's tables as this DNS reads them; the message says what
    to run."""


def check_schema(store_url: str) -> None:
    """Refuse a store whose cloud schema is missing or older than the shared tables' contracts.

    The DNS never migrates the cloud's schema (it does not own it, and two roles upgrading one
    schema at once is how upgrades go wrong). A store out of reach now is only logged: addresses
    are answered without it, and TXT questions get SERVFAIL until it can be read.
    """
    parsed = parse_url(store_url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise _schema_missing(store_url, f"there is no store at {parsed.database}")
    engine = read_engine(store_url)
    try:
        with engine.connect() as conn:
            revision = schema_revision(conn, challenge_table.VERSION_TABLE)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("the store cannot be read yet (%s); TXT answers are SERVFAIL until it can", exc)
        return
    finally:
        engine.dispose()  # no connection may cross the fork into the workers
    if revision is None:
        raise _schema_missing(store_url, "the store holds no lanlock cloud schema")
    if not revision.isdigit() or int(revision) < int(REQUIRED_REVISION):
        raise _schema_missing(
            store_url,
            f"the store's cloud schema is at revision {revision}, and this DNS reads "
            f"revision {REQUIRED_REVISION} or later",
        )


def _schema_missing(store_url: str, what: str) -> SchemaMissing:
    shown = make_url(store_url).render_as_string(hide_password=True)
    return SchemaMissing(
        f"{what}: run `lanlock cloud migrate --store {shown}` (or start the cloud on it) first; "
        "the DNS reads the cloud's schema and never changes it"
    )


class ChallengeBoard:
    """Published challenge values by scope and the accounts' URIs, renewed in the background."""

    def __init__(self, store_url: str, refresh: float = 0.25, stale_after: float = 5.0) -> None:
        self._engine = read_engine(store_url)
        self._refresh = refresh
        self._stale_after = stale_after
        self._snapshot = Snapshot()
        self._taken_at = float("-inf")  # monotonic time of the last good snapshot
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="challenges", daemon=True)

    def start(self) -> None:
        """Take a first snapshot (so that the first TXT or CAA answer is not SERVFAIL), then go
        on in the background; a store out of reach now is logged and tried again there."""
        self._try_refresh(failing=False)
        self._thread.start()

    def close(self) -> None:
        """Stop renewing and let go of the store (for in-process use; a worker just exits)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._engine.dispose()

    def values(self, scope: str) -> list[str] | None:
        """The values published for ``scope`` (lower case); None if unknown now."""
        if self._stale():
            return None
        now = dt.datetime.now(dt.UTC)
        published = self._snapshot.challenges.get(scope, ())
        return [value for value, expires_at in published if expires_at > now]

    def account_uris(self) -> tuple[str, ...] | None:
        """The URIs of the cloud's registered ACME accounts that a CAA record can hold; None if
        unknown now."""
        return None if self._stale() else self._snapshot.account_uris

    def refresh_now(self) -> None:
        """Take a snapshot on the calling thread (the worker's thread does this in a loop)."""
        snapshot = take_snapshot(self._engine)
        self._report_refused(snapshot.refused_uris)
        self._snapshot = snapshot
        self._taken_at = time.monotonic()

    def _stale(self) -> bool:
        return time.monotonic() - self._taken_at > self._stale_after

    def _report_refused(self, refused: dict[str, str]) -> None:
        """Log each account URI left out of CAA once, when it appears, not at every snapshot."""
        for uri, problem in refused.items():
            if uri not in self._snapshot.refused_uris:
                log.warning(
                    "acme_accounts holds an account URI that cannot go in a CAA record (%s), "
                    "left out: %r",
                    problem,
                    uri[:_SHOWN_URI],
                )

    def _run(self) -> None:
        failing = self._taken_at == float("-inf")
        while not self._stop.wait(self._refresh):
            failing = self._try_refresh(failing)

    def _try_refresh(self, failing: bool) -> bool:
        """Refresh, logging only the changes between working and failing; whether it failed."""
        try:
            self.refresh_now()
        except (SQLAlchemyError, OSError) as exc:
            if not failing:
                log.warning(
                    "cannot read challenge values and ACME accounts from the store: %s", exc
                )
            return True
        if failing:
            log.info("the store answers again; challenge values and accounts are current")
        return False


def take_snapshot(engine: Engine) -> Snapshot:
    """Every unexpired value, grouped by scope, in the order the cloud wrote them; then the
    registered accounts' URIs, split into those a CAA record can hold and the others."""
    table = CHALLENGES
    query = (
        select(table.c.scope, table.c.value, table.c.expires_at)
        .where(table.c.expires_at > dt.datetime.now(dt.UTC))
        .order_by(table.c.id)
    )
    challenges: Challenges = defaultdict(list)
    with engine.connect() as conn:
        for scope, value, expires_at in conn.execute(query):
            challenges[scope].append((value, expires_at))
        # Second, so that the account of an order is seen with its values (module docstring).
        registered = ACCOUNTS.c.account_uri.is_not(None)
        served, refused = _checked(conn.scalars(select(ACCOUNTS.c.account_uri).where(registered)))
    return Snapshot(dict(challenges), served, refused)


def _checked(uris: Iterable[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The URIs a CAA record can hold, each once and sorted; the others, with why not."""
    served: set[str] = set()
    refused: dict[str, str] = {}
    for uri in uris:
        problem = account_uri_problem(uri)
        if problem is None:
            served.add(uri)
        else:
            refused[uri] = problem
    return tuple(sorted(served)), refused


def read_engine(url: str) -> Engine:
    """An engine that only reads, in autocommit, and gives up quickly.

    Not :class:`lanlock.store.Store`'s engine: on SQLite that one opens every transaction with
    ``BEGIN IMMEDIATE`` (the write lock, right for the cloud's read-modify-write), which a reader
    polling several times a second must not take; and its timeouts (30 s busy wait, 10 s pool
    wait) suit requests that must succeed, not a poll that simply tries again.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            max_overflow=0,
            connect_args={"timeout": 1, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_read_only)
        return engine
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=1,
        max_overflow=0,
        pool_timeout=2,
        connect_args={"connect_timeout": 3, "options": "-c statement_timeout=2000"},
    )


def _sqlite_read_only(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()
