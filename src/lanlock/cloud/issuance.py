"""A new certificate for a scope, issued once however many replicas are asked at the same time.

The scope's lease (a row in ``issuance_leases``, renewed while its holder lives and expiring
soon after a holder dies, so that a killed replica cannot block the scope) lets one request
issue while the others wait and, most of the time, reuse what it issued. Under the lease the
issuance budget is checked (:mod:`lanlock.cloud.throttle`),
then the issuer is asked and the certificate recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
import threading
import time
from collections.abc import Callable

from cryptography import x509
from sqlalchemy import Row, delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from lanlock import errors, pki
from lanlock.cloud import throttle
from lanlock.cloud.ca_budget import BudgetSpent, CABudget, Order
from lanlock.cloud.eligibility import box_quota
from lanlock.cloud.issuers import CARateLimited, IssuanceError, Issuer, IssuerUnavailable
from lanlock.cloud.metrics import CloudMetrics
from lanlock.cloud.models import Box, Certificate, IssuanceLease
from lanlock.cloud.refusals import Refused
from lanlock.cloud.reuse import reusable_in
from lanlock.store import Store

log = logging.getLogger(__name__)
# Writes what came of a request (its audit line, the box seen) in the deciding transaction.
Record = Callable[[Session, Certificate | Row, str], None]


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

    def acquire_in(self, session: Session, scope: str) -> bool:
        """Take the lease in ``session``'s transaction; :meth:`hold` once it is committed. A
        concurrent insert by another replica makes the commit raise IntegrityError: not taken."""
        now = dt.datetime.now(dt.UTC)
        lease = session.get(IssuanceLease, scope, with_for_update=True)
        if lease is None:
            session.add(IssuanceLease(scope=scope, holder=self.holder, expires_at=self._expiry()))
        elif lease.expires_at > now:
            return False
        else:  # a dead holder's lease
            lease.holder, lease.expires_at = self.holder, self._expiry()
        return True

    def release(self, scope: str) -> None:
        self.let_go(scope)
        with self.store.transaction() as session:
            self.release_in(session, scope)

    def release_in(self, session: Session, scope: str) -> None:
        session.execute(
            delete(IssuanceLease).where(
                IssuanceLease.scope == scope, IssuanceLease.holder == self.holder
            )
        )

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
                with self.store.transaction() as session:
                    session.execute(
                        update(IssuanceLease)
                        .where(IssuanceLease.holder == self.holder)
                        .values(expires_at=self._expiry())
                    )
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

    def certificate_for(
        self, box: Box, csr: x509.CertificateSigningRequest, record: Record
    ) -> tuple[Certificate | Row, str]:
        """The certificate and how it came, ``"reused"`` or ``"issued"``; ``record`` (the audit
        line, the box seen) is written in the transaction that decides it."""
        fingerprint = pki.key_fingerprint(csr.public_key())  # type: ignore[arg-type]
        deadline = time.monotonic() + self.lease_wait_seconds
        delay = 0.01
        while (taken := self._reuse_or_lease(box, fingerprint, record)) is None:
            if time.monotonic() > deadline:
                raise IssuerUnavailable("another issuance for this box is still running", 10)
            # Whoever holds the lease is probably issuing what we need: reused once it is done.
            time.sleep(delay + secrets.randbelow(10) / 1000)
            delay = min(delay * 2, 0.25)
        if not isinstance(taken, Order):  # the certificate to hand out again
            return taken, "reused"
        try:
            certificate = self._issue(box, csr, fingerprint, taken)
            with self.store.transaction() as session:
                session.add(certificate)
                self.lease.release_in(session, box.scope)
                record(session, certificate, "issued")
        except BaseException:
            with contextlib.suppress(SQLAlchemyError):  # else it lapses within the lease
                self.lease.release(box.scope)
            raise
        finally:
            self.lease.let_go(box.scope)
        return certificate, "issued"

    def _reuse_or_lease(self, box: Box, fingerprint: str, record: Record) -> Row | Order | None:
        """One transaction: the scope's lease, then under it the certificate to hand out again
        (recorded, the lease given back) if there is one, else the issuance budget and the CA's
        (the order to place); None while another holds the lease.

        The lease comes first: a holder commits its certificate and the lease's end together, so
        a lease taken here sees what the holder before it issued (PostgreSQL reads each statement
        at its own start: a reuse check made before the lease could miss a certificate committed
        between the two, and issue again). A budget spent raises IssuanceLimited or BudgetSpent,
        which rolls the lease back with the rest; under the lease one box's requests cannot both
        pass the count, a subscription's several boxes may overshoot by the requests in flight
        at once (the CA's buckets are locked rows: they never overshoot).
        """
        try:
            with self.store.transaction() as session:
                if not self.lease.acquire_in(session, box.scope):
                    return None
                if reusable := reusable_in(session, box.scope, fingerprint):
                    self.lease.release_in(session, box.scope)
                    record(session, reusable, "reused")
                    return reusable
                now = dt.datetime.now(dt.UTC)
                slots = box_quota(session, box.subscription_code)
                throttle.check_budget(session, self.budget, box, slots, now)
                order = self._order_in(session, box.scope, now)
                if self.ca_budget is not None:
                    self.ca_budget.spend_in(session, order, now)
        except IntegrityError:
            return None  # another replica inserted the lease (or a bucket) first
        self.lease.hold(box.scope)
        return order

    def _order_in(self, session: Session, scope: str, now: dt.datetime) -> Order:
        """The order for ``scope``, as the CA's budget sees it (from its newest certificate)."""
        newest = session.execute(
            select(Certificate.not_before, Certificate.not_after, Certificate.renew_after)
            .where(Certificate.scope == scope)
            .order_by(Certificate.not_after.desc())
            .limit(1)
        ).first()
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
        self, box: Box, csr: x509.CertificateSigningRequest, fingerprint: str, order: Order
    ) -> Certificate:
        """The issuer's certificate, not yet stored."""
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
        return Certificate(
            box_id=box.box_id,
            subscription_code=box.subscription_code,
            scope=box.scope,
            key_fingerprint=fingerprint,
            serial=format(issued.leaf.serial_number, "x"),
            issuer=self.issuer.name,
            not_before=issued.leaf.not_valid_before_utc,
            not_after=issued.leaf.not_valid_after_utc,
            x509_pem=pki.to_pem(issued.leaf),
            chain_pem=issued.chain_pem,
            renew_after=issued.advice.renew_after,
            ari_next_check=issued.advice.next_check,
        )
