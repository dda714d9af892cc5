"""Boundary: the audit trail cannot be grown without bound by anyone on the internet.

The attacker sends garbage to ``POST /iot/x509`` (no valid JWS: nothing authenticated): each
such request used to add an audit row, so a flood filled the store's disk. Rows for requests
that authenticate nothing are capped (the rest are only counted, in the metrics); every request
that got past the signature is still audited. And the trail does not grow for ever: rows older
than the retention (``--audit-days``) are removed by the cloud itself.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import httpx
from sqlalchemy import func, select

from lanlock.cloud.models import AuditEntry, cloud_store
from lanlock.store import Store
from tests.boxes import Customer, TestBox
from tests.servers import fresh_store_url, start_cloud

GARBAGE = 300


def audit_rows(store: Store, outcome: str | None = None) -> int:
    with store.transaction() as session:
        query = select(func.count()).select_from(AuditEntry)
        if outcome:
            query = query.where(AuditEntry.outcome == outcome)
        return session.scalar(query) or 0


def test_garbage_cannot_grow_the_audit_trail_without_bound(tmp_path):
    with fresh_store_url("sqlite", tmp_path) as url:
        cloud = start_cloud(url, tmp_path / "data")
        store = cloud_store(url, pool_size=1)
        try:
            with httpx.Client(timeout=30) as client:
                for n in range(GARBAGE):
                    client.post(
                        cloud.url + "/iot/x509",
                        content=b'{"protected": "x", "payload": "y", "signature": "%d"}' % n,
                        headers={"Content-Type": "application/jose+json"},
                    )
            assert audit_rows(store, "malformed") <= 100
            dropped = re.search(r"^lanlock_audit_dropped_total (\S+)$", cloud.metrics(), re.M)
            assert dropped and float(dropped.group(1)) >= GARBAGE - 100
            # An authenticated request is audited whatever the flood did.
            assert TestBox(cloud.url).ask(Customer.create(store)).result
            assert audit_rows(store, "issued") == 1
        finally:
            store.dispose()
            cloud.stop()


def audit_details(store) -> set[str | None]:  # type: ignore[no-untyped-def]
    with store.transaction() as session:
        return set(session.scalars(select(AuditEntry.detail)))


def test_rows_past_the_retention_are_removed(tmp_path):
    with fresh_store_url("sqlite", tmp_path) as url:
        store = cloud_store(url, pool_size=1)
        store.migrate()
        now = dt.datetime.now(dt.UTC)
        with store.transaction() as session:
            for days, detail in ((31, "old"), (29, "young")):
                session.add(
                    AuditEntry(at=now - dt.timedelta(days=days), outcome="refused", detail=detail)
                )
        cloud = start_cloud(url, tmp_path / "data", "--audit-days", "30")
        try:
            assert TestBox(cloud.url).ask(Customer.create(store)).result
            deadline = time.monotonic() + 15  # the cloud sweeps at start, on a thread of its own
            while "old" in (details := audit_details(store)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "young" in details
            assert "old" not in details
        finally:
            store.dispose()
            cloud.stop()
