"""The audit trail: a line per x509 request that got past parsing, kept for a bounded time.

Every request that authenticates is audited in the transaction that answers it, or just after.
Requests that authenticate nothing (400, 401) are audited up to a burst per process, then at a
trickle: enough to see an attack and its sources, too few for a flood to fill the store's disk
(the rest are counted in ``lanlock_audit_dropped_total``). Rows older than the retention go in
batches with the minute's sweep.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import InterfaceError as SQLInterfaceError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from lanlock.cloud.jws import SignedRequest
from lanlock.cloud.metrics import CloudMetrics
from lanlock.cloud.models import AuditEntry
from lanlock.store import Store
from lanlock.store.prepared import Prepared

GARBAGE_BURST = 60
GARBAGE_PER_SECOND = 1.0
SWEEP_BATCH = 10_000


def values(
    outcome: str,
    code: str | None,
    request: SignedRequest | None,
    source: str,
    detail: str | None,
) -> dict[str, Any]:
    """One audit row's columns, bounded (a hostile request's strings end up here)."""
    return {
        "at": dt.datetime.now(dt.UTC),
        "outcome": outcome,
        "code": code,
        "box_id": request.box_id if request else None,
        "database_uuid": request.db_uuid[:64] if request else None,
        "source": source[:64],
        "detail": detail[:1000] if detail else None,
    }


# Built once: Core keeps a statement's compiled form, the ORM's unit of work costs more than
# the insert itself on the busy paths (the express lane, the issuing path's last transaction).
ADD = Prepared(insert(AuditEntry.__table__))


def entry(
    outcome: str,
    code: str | None,
    request: SignedRequest | None,
    source: str,
    detail: str | None,
) -> AuditEntry:
    return AuditEntry(**values(outcome, code, request, source, detail))


class AuditTrail:
    def __init__(self, store: Store, metrics: CloudMetrics, days: float) -> None:
        self.store = store
        self.metrics = metrics
        self.days = days
        self._garbage = TokenBucket(GARBAGE_BURST, GARBAGE_PER_SECOND)

    def write(
        self,
        outcome: str,
        code: str | None,
        request: SignedRequest | None,
        source: str,
        detail: str | None,
    ) -> None:
        """One line in its own transaction."""
        try:
            with self.store.engine.begin() as conn:
                ADD.run(conn, values(outcome, code, request, source, detail))
        except (OperationalError, SQLInterfaceError):
            pass  # the answer matters more than its audit line when the store is failing

    def write_unauthenticated(
        self, outcome: str, code: str, request: SignedRequest | None, source: str, detail: str
    ) -> None:
        if self._garbage.take():
            self.write(outcome, code, request, source, detail)
        else:
            self.metrics.audit_dropped.inc()

    def sweep(self, session: Session, now: dt.datetime) -> None:
        """Drop rows past the retention, a batch at a time: never one long lock."""
        cutoff = now - dt.timedelta(days=self.days)
        oldest = (
            select(AuditEntry.id)
            .where(AuditEntry.at < cutoff)
            .order_by(AuditEntry.at)
            .limit(SWEEP_BATCH)
        )
        session.execute(delete(AuditEntry).where(AuditEntry.id.in_(oldest.scalar_subquery())))


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` a second; thread-safe."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True
