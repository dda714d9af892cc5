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

from sqlalchemy import select
from sqlalchemy.orm import Session

from lanlock.cloud.models import Certificate

# Reuse a stored certificate while more than this fraction of its lifetime remains
# (docs/design.md §6).
REUSE_FRACTION = 2 / 3


def reusable_in(session: Session, scope: str, fingerprint: str) -> Certificate | None:
    """The certificate to hand out again for this scope and key, if there is one."""
    newest = session.execute(
        select(Certificate)
        .where(Certificate.scope == scope, Certificate.key_fingerprint == fingerprint)
        .order_by(Certificate.not_after.desc())
        .limit(1)
    ).scalar_one_or_none()
    if newest is None or not still_good(newest, dt.datetime.now(dt.UTC)):
        return None
    return newest


def still_good(certificate: Certificate, now: dt.datetime) -> bool:
    if certificate.renew_after is not None:  # the CA's own advice wins over our rule of thumb
        return now < certificate.renew_after
    lifetime = (certificate.not_after - certificate.not_before).total_seconds()
    left = (certificate.not_after - now).total_seconds()
    return lifetime > 0 and left > REUSE_FRACTION * lifetime
