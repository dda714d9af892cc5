"""The reuse rule: a box asking again with the same key gets the certificate it already has.

The newest certificate for the scope and key is handed out again until its renewal time: the
CA's renewal advice (ACME ARI) when it gave one, else the shared rule (:mod:`lanlock.renewal`,
two thirds of the lifetime) — the time the box is told in every answer. Before it, a box asking
with the key it holds is a box that lost an answer, or one checking in
(:data:`lanlock.renewal.CHECK_IN`) to learn whether the CA moved its renewal time; from it on,
the box needs a new certificate, and a box checking in then gets one for its key. Reuse costs no
issuance, so it never counts against the issuance budget (:mod:`lanlock.cloud.throttle`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Row, bindparam, select
from sqlalchemy.orm import Session

from lanlock import renewal
from lanlock.cloud.models import Certificate

certificates = Certificate.__table__
# What an answer with a certificate needs of its row (and :func:`still_good`).
HANDED_COLUMNS = (
    certificates.c.serial,
    certificates.c.not_before,
    certificates.c.not_after,
    certificates.c.renew_after,
    certificates.c.x509_pem,
    certificates.c.chain_pem,
)
# Core, built once: asked again under the lease (the express lane reads the same columns with
# the box's row); a statement object keeps its compiled form.
NEWEST = (
    select(*HANDED_COLUMNS)
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
    due = certificate.renew_after or renewal.renewal_time(
        certificate.not_before, certificate.not_after
    )
    return now < min(due, certificate.not_after)
