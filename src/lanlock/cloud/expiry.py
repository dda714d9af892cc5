"""How the fleet's certificates stand: a metric an operator alerts on before boxes go dark.

``lanlock_certificates_expiring{within="1d"|"7d"|"30d"}`` counts the current certificates — the
newest of each scope, not yet expired — that expire within one, seven and thirty days. A box
renews at two thirds of its certificate's life, so a count that grows in the 7-day window (for
90-day certificates) means boxes are not renewing: a CA refusing, a cloud they cannot reach.
Read from the store at each scrape, so every replica and worker reports the same fleet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from lanlock.cloud.models import Certificate
from lanlock.store import Store

WINDOWS = {"1d": dt.timedelta(days=1), "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30)}


def expiring_counts(store: Store, now: dt.datetime) -> dict[str, int]:
    """Per window, how many scopes' newest certificates expire within it (and are not expired)."""
    newest = (
        select(func.max(Certificate.not_after).label("not_after"))
        .group_by(Certificate.scope)
        .subquery()
    )
    columns = [
        func.coalesce(func.sum(case((newest.c.not_after <= now + window, 1), else_=0)), 0).label(
            label
        )
        for label, window in WINDOWS.items()
    ]
    with store.transaction() as session:
        row = session.execute(select(*columns).where(newest.c.not_after > now)).one()
    return {label: int(value) for label, value in zip(WINDOWS, row, strict=True)}


class ExpiryCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "lanlock_certificates_expiring",
            "Current certificates (the newest of each scope) that expire within 1, 7 and 30 days",
            labels=["within"],
        )
        for label, count in expiring_counts(self.store, dt.datetime.now(dt.UTC)).items():
            family.add_metric([label], count)
        yield family
