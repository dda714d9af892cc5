"""``lanlock_certificates_expiring``: the fleet's current certificates by how soon they expire,
read from the store at each scrape (the newest certificate of each scope; expired ones not)."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select

from lanlock.cloud.models import Certificate, cloud_store
from tests.boxes import Customer, TestBox
from tests.servers import RunningCloud, running_cloud


def expiring(cloud: RunningCloud) -> dict[str, float]:
    pattern = r'^lanlock_certificates_expiring\{within="(\w+)"\} (\S+)$'
    return {w: float(v) for w, v in re.findall(pattern, cloud.metrics(), re.M)}


def test_the_metric_counts_each_scopes_newest_certificate_by_when_it_expires(tmp_path):
    with running_cloud(tmp_path, "--lifetime", "6d") as cloud:
        store = cloud_store(cloud.store_url, pool_size=1)
        try:
            customer = Customer.create(store)
            assert expiring(cloud) == {"1d": 0, "7d": 0, "30d": 0}
            for _ in range(2):
                assert TestBox(cloud.url).ask(customer).result is not None
            assert expiring(cloud) == {"1d": 0, "7d": 2, "30d": 2}
            now = dt.datetime.now(dt.UTC)
            with store.transaction() as session:
                newest = session.scalars(select(Certificate)).first()
                for not_after in (now + dt.timedelta(hours=12), now - dt.timedelta(hours=1)):
                    session.add(  # an older certificate of that scope, then an expired one
                        Certificate(
                            box_id=newest.box_id,
                            scope=newest.scope if not_after > now else "expiredscope0000",
                            key_fingerprint="f" * 64,
                            serial="1",
                            issuer="local",
                            not_before=not_after - dt.timedelta(days=6),
                            not_after=not_after,
                            x509_pem="",
                            chain_pem="",
                        )
                    )
            # The scope's newest still expires in six days; the expired scope is gone already.
            assert expiring(cloud) == {"1d": 0, "7d": 2, "30d": 2}
        finally:
            store.dispose()
