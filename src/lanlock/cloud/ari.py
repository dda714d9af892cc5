"""The CA's renewal information, asked again on the CA's schedule (RFC 9773 §4.3).

A CA offering ARI may move a certificate's suggested renewal window at any time — earlier, when
it must revoke a batch of certificates — and tells the client when to ask again (the
``Retry-After`` of its answer). The cloud keeps, per certificate, when that is
(``certificates.ari_next_check``), and its maintenance round asks again for the current
certificates whose time has come. The new time reaches a box in the answer to its next request,
and a window already open means the cloud hands out no old certificate again
(:func:`lanlock.cloud.reuse.still_good`): the box's next request renews.

Replicas share the work through the store: each claims a certificate (moves its next check a few
minutes on, if no one else did) before asking the CA, so one certificate is asked once.
"""

from __future__ import annotations

import datetime as dt
import logging

from cryptography import x509
from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import aliased

from lanlock.cloud.issuers import Issuer
from lanlock.cloud.models import Certificate
from lanlock.store import Store

log = logging.getLogger(__name__)
BATCH = 50  # certificates asked about per round: a round stays short however large the fleet
CLAIM = dt.timedelta(minutes=10)  # a claim left by a replica that died is taken up after this

_newer = aliased(Certificate)


def refresh_due(store: Store, issuer: Issuer, now: dt.datetime) -> int:
    """Ask the CA again about the current certificates whose time has come; how many were."""
    asked = 0
    for certificate_id, pem, seen in _due(store, now):
        if not _claimed(store, certificate_id, seen, now):
            continue  # another replica took it
        advice = issuer.renewal_advice(x509.load_pem_x509_certificate(pem.encode()))
        with store.transaction() as session:
            session.execute(
                update(Certificate)
                .where(Certificate.id == certificate_id)
                .values(renew_after=advice.renew_after, ari_next_check=advice.next_check)
            )
        asked += 1
    return asked


def _due(store: Store, now: dt.datetime) -> list[tuple[int, str, dt.datetime]]:
    """Up to BATCH certificates still current (not expired, the newest of their scope) whose
    next check has come."""
    newer = exists().where(
        and_(_newer.scope == Certificate.scope, _newer.not_after > Certificate.not_after)
    )
    query = (
        select(Certificate.id, Certificate.x509_pem, Certificate.ari_next_check)
        .where(Certificate.ari_next_check <= now, Certificate.not_after > now, ~newer)
        .order_by(Certificate.ari_next_check)
        .limit(BATCH)
    )
    with store.transaction() as session:
        return [tuple(row) for row in session.execute(query).all()]  # type: ignore[misc]


def _claimed(store: Store, certificate_id: int, seen: dt.datetime, now: dt.datetime) -> bool:
    with store.transaction() as session:
        result = session.execute(
            update(Certificate)
            .where(Certificate.id == certificate_id, Certificate.ari_next_check == seen)
            .values(ari_next_check=now + CLAIM)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]
