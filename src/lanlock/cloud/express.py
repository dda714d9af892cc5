"""The express lane: a registered box asking again for the certificate it holds.

Most requests a cloud sees are boxes asking again (every start, every check, every renewal
window that the reuse rule answers with the certificate already issued). Their answer needs one
read — the box with its database, subscription and quota, and its newest certificate for the
CSR's key, in one statement (:data:`BOX_ROW`) — and three writes: the nonce, the audit line, the
box seen. This module does exactly that with statements built in SQLAlchemy Core and run on the
driver's cursor (:mod:`lanlock.store.prepared`), at the start of the request's one transaction,
and only when *every* check of the full way would pass: the box is registered to this database
under this code (compared in constant time), the database is production, the subscription in
progress with an IoT box line, the box active, the CSR names nothing beyond the box's names and
is good (the very bytes its certificate was issued for, or its signature and key checked now),
and the reuse rule holds. Anything else (a new box, a refusal, a renewal) has had nothing written
and goes on the full way (:mod:`lanlock.cloud.x509`) in the same transaction, with the row read
here, which owns every refusal and its order. So the lane changes what a reuse costs, never what
any request is answered.

Core rather than the ORM because the ORM's unit of work, identity map and attribute
instrumentation cost several times the SQL itself on this path (the profile in BENCHMARKS.md).
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable
from typing import Any

from cryptography import x509
from sqlalchemy import Connection, and_, bindparam, select

from lanlock import names
from lanlock.cloud import audit, csr_policy, nonces, registration
from lanlock.cloud.eligibility import quota_of
from lanlock.cloud.jws import SignedRequest
from lanlock.cloud.models import Box, Certificate, Database, Subscription
from lanlock.cloud.registration import RegisteredBox
from lanlock.cloud.reuse import HANDED_COLUMNS, still_good
from lanlock.store.prepared import Prepared

boxes, certificates = Box.__table__, Certificate.__table__
databases, subscriptions = Database.__table__, Subscription.__table__

# Built once, like every statement here: a statement object keeps its compiled form's cache key,
# so each execution skips building and keying it again (about half of Core's cost here).
QUOTA = quota_of(boxes.c.subscription_code).scalar_subquery()
# The box and everything eligibility looks at, with its newest certificate for the CSR's key (the
# reuse rule's, :data:`lanlock.cloud.reuse.NEWEST`), in one row: one statement where two cost
# about 40 µs more. No row for a box the cloud does not know. The subscription's columns are
# NULL when the box's subscription is not one of its database's (eligibility then reads the
# database: :mod:`lanlock.cloud.eligibility`), the certificate's when it has none for the key.
BOX_ROW = Prepared(
    select(
        boxes.c.scope,
        boxes.c.state,
        boxes.c.database_uuid,
        boxes.c.subscription_code,
        boxes.c.source_network,
        databases.c.kind,
        subscriptions.c.state.label("subscription_state"),
        QUOTA.label("quota"),
        *HANDED_COLUMNS,
        certificates.c.csr_sha256,
    )
    .select_from(
        boxes.outerjoin(
            subscriptions,
            and_(
                subscriptions.c.code == boxes.c.subscription_code,
                subscriptions.c.database_uuid == boxes.c.database_uuid,
            ),
        )
        .outerjoin(databases, databases.c.uuid == boxes.c.database_uuid)
        .outerjoin(
            certificates,
            and_(
                certificates.c.scope == boxes.c.scope,
                certificates.c.key_fingerprint == bindparam("fingerprint"),
            ),
        )
    )
    .where(boxes.c.box_id == bindparam("box_id"))
    .order_by(certificates.c.not_after.desc())
    .limit(1)
)


def look(conn: Connection, box_id: str, fingerprint: str | None) -> Any | None:
    """The box's row (:data:`BOX_ROW`, its columns as attributes) with its newest certificate
    for the key of this ``fingerprint`` (none for None), None for a box the cloud does not
    know."""
    return BOX_ROW.first(conn, {"box_id": box_id, "fingerprint": fingerprint})


def registered(box_id: str, row: Any | None) -> RegisteredBox | None:
    return None if row is None else RegisteredBox.of(box_id, row)


def reused_certificate(
    conn: Connection,
    row: Any,
    request: SignedRequest,
    csr: x509.CertificateSigningRequest,
    checked_when: Callable[[str | None], bool],
    zone: str,
    source: str,
    network: str,
) -> Any | None:
    """The certificate to hand out again (``row`` itself: its certificate columns are the reuse
    rule's), with the nonce, the audit line and the box's last sighting written in ``conn``'s
    transaction; None when the full way must answer (nothing is written then). ``row`` is the
    box's, read with the CSR's key (:func:`look`), ``csr`` loaded (:func:`lanlock.pki.load_csr`)
    and ``checked_when`` whether it is good, given the digest of the CSR the certificate was
    issued for: the same bytes, or a signature and key checked now."""
    if not _eligible(row, request):
        return None
    if csr_policy.foreign_identities(csr, names.certificate_names(row.scope, zone)):
        return None
    now = dt.datetime.now(dt.UTC)
    if row.serial is None or not still_good(row, now) or not checked_when(row.csr_sha256):
        return None
    nonces.remember(conn, request.nonce, now)
    detail = f"serial {row.serial}"
    audit.ADD.run(conn, audit.values("reused", None, request, source, detail))
    seen = registration.seen_values(request.box_id, request, source, network)
    registration.SEEN.run(conn, seen)
    return row


def _eligible(box: Any, request: SignedRequest) -> bool:
    return (
        box.database_uuid == request.db_uuid
        and box.subscription_state == "in_progress"
        and hmac.compare_digest(box.subscription_code.encode(), request.enterprise_code.encode())
        and box.kind == "production"
        and box.quota > 0
        and box.state == "active"
    )
