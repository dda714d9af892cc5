"""A new certificate for a scope, issued once however many replicas are asked at the same time.

The scope's lease (a row in ``issuance_leases``, renewed while its holder lives and expiring
soon after a holder dies, so that a killed replica cannot block the scope) lets one request
issue while the others wait and, most of the time, reuse what it issued. Under the lease the
issuance budget is checked (:mod:`lanlock.cloud.throttle`), then the issuer is asked and the
certificate recorded.

With an instant issuer (the embedded CA) all of it happens in the request's first transaction:
the lease is taken, the certificate issued and recorded, the lease ended, and only then is
anything committed, so that every other request for the scope waits on the lease's row (or on
SQLite's write lock) and then finds the certificate to reuse. A scope registered in that very
transaction needs no lease at all: nobody else can see it before it commits with its
certificate. A slow issuer (ACME: minutes) is asked between two transactions, the lease
committed and renewed in between.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from cryptography import x509
from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from lanlock import errors, pki
from lanlock.cloud import throttle
from lanlock.cloud.ca_budget import BudgetSpent, CABudget, Order
from lanlock.cloud.eligibility import box_quota
from lanlock.cloud.issuers import CARateLimited, IssuanceError, Issuer, IssuerUnavailable
from lanlock.cloud.metrics import CloudMetrics
from lanlock.cloud.models import Certificate, IssuanceLease
from lanlock.cloud.refusals import Refused
from lanlock.cloud.registration import RegisteredBox
from lanlock.cloud.reuse import reusable_in
from lanlock.store import Store
from lanlock.store.prepared import Prepared

log = logging.getLogger(__name__)


class StoredCertificate(NamedTuple):
    """A certificate as the answer and the audit line need it (the columns of
    :data:`lanlock.cloud.reuse.NEWEST`)."""

    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    renew_after: dt.datetime | None
    x509_pem: str
    chain_pem: str


Handed = Row | StoredCertificate
# Writes what came of a request (its audit line, the box seen) in the deciding transaction.
Record = Callable[[Session | Connection, Handed, str], None]

leases, certificates = IssuanceLease.__table__, Certificate.__table__


def _take(insert_for: Any) -> Any:
    """The lease taken in one statement: inserted, or a lapsed holder's taken over; a row back
    when taken, none while another holds it. A concurrent insert by another replica is waited
    for (PostgreSQL) or cannot happen (SQLite's write lock), never an error that would cost the
    transaction the rest of its work."""
    statement = insert_for(leases).values(
        scope=bindparam("scope"), holder=bindparam("holder"), expires_at=bindparam("expires_at")
    )
    return statement.on_conflict_do_update(
        index_elements=[leases.c.scope],
        set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
        where=leases.c.expires_at <= bindparam("now"),
    ).returning(leases.c.scope)


TAKE = {"sqlite": _take(sqlite_insert), "postgresql": _take(postgresql_insert)}
RELEASE = delete(leases).where(
    leases.c.scope == bindparam("scope"), leases.c.holder == bindparam("holder")
)
RENEW = update(leases).where(leases.c.holder == bindparam("renewing"))
ADD_CERTIFICATE = Prepared(insert(certificates))
NEWEST_ANY_KEY = (
    select(certificates.c.not_before, certificates.c.not_after, certificates.c.renew_after)
    .where(certificates.c.scope == bindparam("scope"))
    .order_by(certificates.c.not_after.desc())
    .limit(1)
)


class ScopeLease:
    """Who may issue for a scope right now: one holder across every replica, for a while.

    Each process is one holder. While it holds any lease, one thread renews all of them every
    third of ``seconds`` with one statement; a holder that dies (SIGKILL, power) stops renewing
    and its leases lapse within ``seconds``, so a lease can be short however long an issuance
    takes.
    """

    def __init__(self, store: Store, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.holder = secrets.token_hex(8)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._take = TAKE[store.engine.dialect.name]

    def acquire_in(self, session: Session | Connection, scope: str) -> bool:
        """Take the lease in ``session``'s transaction (free, or its holder's lapsed);
        :meth:`hold` once it is committed. False while another holder has it."""
        now = dt.datetime.now(dt.UTC)
        values = {"scope": scope, "holder": self.holder, "expires_at": self._expiry(), "now": now}
        return session.execute(self._take, values).first() is not None

    def release(self, scope: str) -> None:
        self.let_go(scope)
        with self.store.engine.begin() as conn:
            self.release_in(conn, scope)

    def release_in(self, session: Session | Connection, scope: str) -> None:
        session.execute(RELEASE, {"scope": scope, "holder": self.holder})

    def hold(self, scope: str) -> None:
        """Renew the lease of ``scope`` until :meth:`let_go`."""
        with self._lock:
            self._held.add(scope)
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(
                    target=self._renew_while_held, name="lease-renewer", daemon=True
                )
                self._renewer.start()

    def let_go(self, scope: str) -> None:
        """Stop renewing (the row goes with :meth:`release_in`, or lapses by itself)."""
        with self._lock:
            self._held.discard(scope)

    def _expiry(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.seconds)

    def _renew_while_held(self) -> None:
        while True:
            time.sleep(max(self.seconds / 3, 0.05))
            with self._lock:
                if not self._held:
                    self._renewer = None
                    return
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(RENEW, {"renewing": self.holder, "expires_at": self._expiry()})
            except SQLAlchemyError as exc:  # the store is failing: the next beat tries again
                log.warning("cannot renew issuance leases: %s", exc)


class Issuance:
    """Reuse or issue, once per scope (the slow path of the x509 request)."""

    def __init__(
        self,
        store: Store,
        issuer: Issuer,
        metrics: CloudMetrics,
        budget: throttle.IssuanceBudget,
        lease_seconds: float,
        lease_wait_seconds: float,
        ca_budget: CABudget | None = None,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.metrics = metrics
        self.budget = budget
        self.ca_budget = ca_budget
        self.lease = ScopeLease(store, lease_seconds)
        self.lease_wait_seconds = lease_wait_seconds

    @property
    def takes_in_first_look(self) -> bool:
        """Whether the request's first transaction may take the lease too (:meth:`take_in`).
        Not with a CA budget: its buckets are rows that another replica may insert first, an
        error that would cost that transaction its nonce and registration; its own transaction
        retries instead (:meth:`_reuse_or_lease`)."""
        return self.ca_budget is None

    @property
    def issues_in_first_look(self) -> bool:
        """Whether the first transaction issues too (:meth:`issue_in`): with an instant issuer
        (the embedded CA signs in well under a millisecond, offline), under the lease that
        transaction took, so that the lease, the certificate and the audit line are one commit.
        A slow issuer (ACME: minutes) issues between two transactions instead, the lease held
        and renewed in between (:meth:`certificate_for`)."""
        return self.takes_in_first_look and getattr(self.issuer, "instant", False)

    def certificate_for(
        self,
        box: RegisteredBox,
        csr: x509.CertificateSigningRequest,
        record: Record,
        fingerprint: str | None = None,
        taken: Handed | Order | None = None,
    ) -> tuple[Handed, str]:
        """The certificate and how it came, ``"reused"`` or ``"issued"``; ``record`` (the audit
        line, the box seen) is written in the transaction that decides it. ``taken``: what
        :meth:`take_in` gave in the caller's transaction, committed (None: not asked, or the
        lease was busy)."""
        if fingerprint is None:
            fingerprint = pki.key_fingerprint(csr.public_key())  # type: ignore[arg-type]
        if taken is None:
            deadline = time.monotonic() + self.lease_wait_seconds
            delay = 0.01
            while (taken := self._reuse_or_lease(box, fingerprint, record)) is None:
                if time.monotonic() > deadline:
                    raise IssuerUnavailable("another issuance for this box is still running", 10)
                # Whoever holds the lease is probably issuing what we need: reused once done.
                time.sleep(delay + secrets.randbelow(10) / 1000)
                delay = min(delay * 2, 0.25)
        elif isinstance(taken, Order):
            self.lease.hold(box.scope)
        if not isinstance(taken, Order):  # the certificate to hand out again
            return taken, "reused"
        try:
            certificate, columns = self._issue(box, csr, fingerprint, taken)
            with self.store.engine.begin() as conn:
                self._record(conn, box, columns, certificate, record)
        except BaseException:
            with contextlib.suppress(SQLAlchemyError):  # else it lapses within the lease
                self.lease.release(box.scope)
            raise
        finally:
            self.lease.let_go(box.scope)
        return certificate, "issued"

    def take_in(
        self,
        session: Session | Connection,
        box: RegisteredBox,
        fingerprint: str,
        record: Record,
        slots: int | None = None,
        fresh: bool = False,
    ) -> Handed | Order | None:
        """In ``session``'s transaction: the scope's lease, then under it the certificate to hand
        out again (recorded, the lease given back) if there is one, else the issuance budget and
        the CA's (the order to place); None while another holds the lease.

        The lease comes first: a holder commits its certificate and the lease's end together, so
        a lease taken here sees what the holder before it issued (PostgreSQL reads each statement
        at its own start: a reuse check made before the lease could miss a certificate committed
        between the two, and issue again). A budget spent raises IssuanceLimited or BudgetSpent;
        the caller rolls the lease back with the rest, or gives it back. Under the lease one
        box's requests cannot both pass the count, a subscription's several boxes may overshoot
        by the requests in flight at once (the CA's buckets are locked rows: they never
        overshoot). ``slots``: the subscription's quota when the transaction has read it.
        ``fresh``: the box was registered new in this transaction, so its scope is new too (no
        certificate can exist for it or for the box: nothing to reuse, count or replace).
        """
        conn = session.connection() if isinstance(session, Session) else session
        # A scope registered new in this transaction is invisible to every other until it
        # commits: issued in it (:meth:`issue_in`), it needs no lease.
        unseen = fresh and self.issues_in_first_look
        if not unseen and not self.lease.acquire_in(conn, box.scope):
            return None
        if not fresh and (reusable := reusable_in(conn, box.scope, fingerprint)):
            self.lease.release_in(conn, box.scope)
            record(conn, reusable, "reused")
            return reusable
        now = dt.datetime.now(dt.UTC)
        if slots is None:
            slots = box_quota(conn, box.subscription_code)
        throttle.check_budget(conn, self.budget, box, slots, now, first=fresh)
        order = Order(box.scope) if fresh else self._order_in(conn, box.scope, now)
        if self.ca_budget is not None:
            assert isinstance(session, Session)  # ORM rows: see :meth:`_reuse_or_lease`
            self.ca_budget.spend_in(session, order, now)
        return order

    def issue_in(
        self,
        conn: Connection,
        box: RegisteredBox,
        csr: x509.CertificateSigningRequest,
        fingerprint: str,
        order: Order,
        record: Record,
        fresh: bool,
    ) -> StoredCertificate:
        """Issue in the transaction whose :meth:`take_in` gave ``order`` (an instant issuer:
        :attr:`issues_in_first_look`), and record the certificate and the lease's end there.
        ``fresh``: as for :meth:`take_in` (no lease was taken). On Refused (``issuance_failed``)
        the caller undoes the rest and commits."""
        if not fresh:  # its end commits with the certificate, or with the refusal
            self.lease.release_in(conn, box.scope)
        certificate, columns = self._issue(box, csr, fingerprint, order)
        self._add(conn, box, columns)
        record(conn, certificate, "issued")
        return certificate

    def _reuse_or_lease(
        self, box: RegisteredBox, fingerprint: str, record: Record
    ) -> Handed | Order | None:
        """:meth:`take_in` in a transaction of its own, the lease held once it is committed."""
        try:
            with self.store.transaction() as session:
                taken = self.take_in(session, box, fingerprint, record)
        except IntegrityError:
            return None  # another replica inserted a CA bucket first
        if isinstance(taken, Order):
            self.lease.hold(box.scope)
        return taken

    def _record(
        self,
        conn: Connection,
        box: RegisteredBox,
        columns: dict[str, Any],
        certificate: StoredCertificate,
        record: Record,
    ) -> None:
        """The certificate stored, the lease's end and ``record``: one transaction."""
        self._add(conn, box, columns)
        self.lease.release_in(conn, box.scope)
        record(conn, certificate, "issued")

    def _add(self, conn: Connection, box: RegisteredBox, columns: dict[str, Any]) -> None:
        """The certificate's row, counted in its subscription's (:func:`throttle.count_issued`)."""
        now = dt.datetime.now(dt.UTC)
        ADD_CERTIFICATE.run(conn, columns | {"created_at": now})
        throttle.count_issued(conn, self.budget, box.subscription_code, now)

    def _order_in(self, conn: Connection, scope: str, now: dt.datetime) -> Order:
        """The order for ``scope``, as the CA's budget sees it (from its newest certificate)."""
        newest = conn.execute(NEWEST_ANY_KEY, {"scope": scope}).first()
        if newest is None:
            return Order(scope)
        # RFC 9773: a renewal that names what it replaces, once the CA's window has come, is
        # exempt from the CA's limits; an expired certificate cannot be replaced.
        ari_exempt = (
            self.issuer.names_replaced
            and newest.renew_after is not None
            and newest.renew_after <= now < newest.not_after
        )
        return Order(scope, newest.not_before, newest.not_after, ari_exempt)

    def _obey(self, order: Order, limited: CARateLimited) -> None:
        """Remember the CA's ``rateLimited`` in the store, for every replica; without a budget
        configured the box is still told to wait as long as the CA asked."""
        if self.ca_budget is None:
            return
        try:
            with self.store.transaction() as session:
                self.ca_budget.obey(session, order, str(limited), limited.retry_after)
        except SQLAlchemyError as exc:
            log.warning("cannot record the CA's rate limit: %s", exc)

    def _newest(self, scope: str) -> x509.Certificate | None:
        """The scope's newest certificate, whatever its key: the one a new order replaces."""
        with self.store.transaction() as session:
            pem = session.scalar(
                select(Certificate.x509_pem)
                .where(Certificate.scope == scope)
                .order_by(Certificate.not_after.desc())
                .limit(1)
            )
        return x509.load_pem_x509_certificate(pem.encode()) if pem else None

    def _issue(
        self,
        box: RegisteredBox,
        csr: x509.CertificateSigningRequest,
        fingerprint: str,
        order: Order,
    ) -> tuple[StoredCertificate, dict[str, Any]]:
        """The issuer's certificate, and its row's columns, not yet stored."""
        started = time.perf_counter()
        try:
            replacing = self._newest(box.scope) if self.issuer.names_replaced else None
            issued = self.issuer.issue(csr, box.scope, replacing)
        except IssuanceError as exc:
            raise Refused(errors.ISSUANCE_FAILED, str(exc)) from None
        except CARateLimited as exc:
            self._obey(order, exc)
            raise BudgetSpent(str(exc), exc.retry_after) from None
        self.metrics.issuance_seconds.labels(self.issuer.name).observe(
            time.perf_counter() - started
        )
        self.metrics.issued.labels(self.issuer.name).inc()
        certificate = StoredCertificate(
            serial=format(issued.leaf.serial_number, "x"),
            not_before=issued.leaf.not_valid_before_utc,
            not_after=issued.leaf.not_valid_after_utc,
            renew_after=issued.advice.renew_after,
            x509_pem=pki.to_pem(issued.leaf),
            chain_pem=issued.chain_pem,
        )
        columns = certificate._asdict() | {
            "box_id": box.box_id,
            "subscription_code": box.subscription_code,
            "scope": box.scope,
            "key_fingerprint": fingerprint,
            "issuer": self.issuer.name,
            "ari_next_check": issued.advice.next_check,
            "csr_sha256": pki.csr_digest(csr),
        }
        return certificate, columns
