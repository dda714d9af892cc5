"""The reuse rule: a box asking again with the same key gets the certificate it already has.

The newest certificate for the scope and key is handed out again until the CA's renewal advice
(ACME ARI) says to renew, or, without advice, while more than two thirds of its lifetime remain:
a box asks again for a certificate it already holds only when it renews it (at two thirds of its
life, docs/design.md §6), and must then get a new one; a fresh one is what a box that lost the
answer asks for again. Reuse costs no issuance, so it never counts against the issuance budget
(:mod:`lanlock.cloud.throttle`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Row, bindparam, select
from sqlalchemy.orm import Session

from lanlock.cloud.models import Certificate

# Reuse a stored certificate while more than this fraction of its lifetime remains
# (docs/design.md §6).
REUSE_FRACTION = 2 / 3


certificates = Certificate.__table__
# Core, built once: asked on every request of a registered box (the express lane) and again
# under the lease; a statement object keeps its compiled form.
NEWEST = (
    select(
        certificates.c.serial,
        certificates.c.not_before,
        certificates.c.not_after,
        certificates.c.renew_after,
        certificates.c.x509_pem,
        certificates.c.chain_pem,
    )
    .where(certificates.c.scope == bindparam("scope"))
    .where(certificates.c.key_fingerprint == bindparam("fingerprint"))
    .order_by(certificates.c.not_after.desc())
    .limit(1)
)


def reusable_in(session: Session | Connection, scope: str, fingerprint: str) -> Row | None:
    """The certificate to hand out again for this scope and key, if there is one: the row's
    ``serial``, ``not_before``, ``not_after``, ``renew_after``, ``x509_pem`` and ``chain_pem``."""
    newest = session.execute(NEWEST, {"scope": scope, "fingerprint": fingerprint}).first()
    if newest is None or not still_good(newest, dt.datetime.now(dt.UTC)):
        return None
    return newest


def still_good(certificate: Certificate | Row, now: dt.datetime) -> bool:
    if certificate.renew_after is not None:  # the CA's own advice wins over our rule of thumb
        return now < certificate.renew_after
    lifetime = (certificate.not_after - certificate.not_before).total_seconds()
    left = (certificate.not_after - now).total_seconds()
    return lifetime > 0 and left > REUSE_FRACTION * lifetime
