"""The express lane: a registered box asking again for the certificate it holds.

Most requests a cloud sees are boxes asking again (every start, every check, every renewal
window that the reuse rule answers with the certificate already issued). Their answer needs one
read — the box with its database, subscription and quota, and its newest certificate for the
CSR's key (:func:`lanlock.cloud.reuse.reusable_in`, as the full way asks it) — and three writes:
the nonce, the audit line, the box seen. This module does exactly that in SQLAlchemy Core, in
one transaction, and only when *every* check of the full way would pass: the box is registered
to this database under this code (compared in constant time), the database is production, the
subscription in progress with an IoT box line, the box active, the CSR names nothing beyond the
box's names, and the reuse rule holds. Anything else (a new box, a refusal, a renewal) finds the
transaction rolled back with nothing written and takes the full way (:mod:`lanlock.cloud.x509`),
which owns every refusal and its order. So the lane changes what a reuse costs, never what any
request is answered.

Core rather than the ORM because the ORM's unit of work, identity map and attribute
instrumentation cost several times the SQL itself on this path (the profile in BENCHMARKS.md).
"""

from __future__ import annotations

import datetime as dt
import hmac

from cryptography import x509
from sqlalchemy import Connection, Row, bindparam, func, select

from lanlock import names, pki
from lanlock.cloud import audit, csr_policy, nonces, registration
from lanlock.cloud.jws import SignedRequest
from lanlock.cloud.models import (
    IOT_BOX_PRODUCT,
    Box,
    Certificate,
    Database,
    Subscription,
    SubscriptionLine,
)
from lanlock.cloud.reuse import reusable_in

boxes, certificates = Box.__table__, Certificate.__table__
lines = SubscriptionLine.__table__

# Built once, like every statement here: a statement object keeps its compiled form's cache key,
# so each execution skips building and keying it again (about half of Core's cost here).
QUOTA = (
    select(func.coalesce(func.sum(lines.c.quantity), 0))
    .where(lines.c.subscription_code == boxes.c.subscription_code)
    .where(lines.c.product == IOT_BOX_PRODUCT)
    .scalar_subquery()
)
# The box and everything eligibility looks at, in one row.
BOX_ROW = (
    select(
        boxes.c.scope,
        boxes.c.state,
        boxes.c.database_uuid,
        boxes.c.subscription_code,
        Database.__table__.c.kind,
        Subscription.__table__.c.state.label("subscription_state"),
        QUOTA.label("quota"),
    )
    .join(Subscription.__table__, Subscription.__table__.c.code == boxes.c.subscription_code)
    .join(Database.__table__, Database.__table__.c.uuid == boxes.c.database_uuid)
    .where(Subscription.__table__.c.database_uuid == boxes.c.database_uuid)
    .where(boxes.c.box_id == bindparam("box_id"))
)


def reused_certificate(
    conn: Connection,
    request: SignedRequest,
    csr: x509.CertificateSigningRequest,
    zone: str,
    source: str,
) -> tuple[Row, str] | None:
    """The certificate (and scope) to hand out again, with the nonce, the audit line and the
    box's last sighting written in ``conn``'s transaction; None when the full way must answer
    (the caller then rolls back: nothing is written). ``csr`` is parsed and its signature
    checked (:func:`lanlock.pki.parse_csr`)."""
    box = conn.execute(BOX_ROW, {"box_id": request.box_id}).first()
    if box is None or not _eligible(box, request):
        return None
    if csr_policy.foreign_identities(csr, names.certificate_names(box.scope, zone)):
        return None
    fingerprint = pki.key_fingerprint(csr.public_key())  # type: ignore[arg-type]
    certificate = reusable_in(conn, box.scope, fingerprint)
    if certificate is None:
        return None
    nonces.remember(conn, request.nonce, dt.datetime.now(dt.UTC))
    detail = f"serial {certificate.serial}"
    conn.execute(audit.ADD, audit.values("reused", None, request, source, detail))
    conn.execute(registration.SEEN, registration.seen_values(request.box_id, request, source))
    return certificate, box.scope


def _eligible(box: Row, request: SignedRequest) -> bool:
    return (
        box.database_uuid == request.db_uuid
        and hmac.compare_digest(box.subscription_code.encode(), request.enterprise_code.encode())
        and box.kind == "production"
        and box.subscription_state == "in_progress"
        and box.quota > 0
        and box.state == "active"
    )
