"""The x509 request (DESIGN §4): who gets a certificate, and getting it exactly once.

One request goes: verify the JWS → remember its nonce → check eligibility in the stated order →
register the box (taking a quota slot under a lock) → reuse a stored certificate, or issue one
while holding the scope's lease → audit. Every step that can say no says it with a refusal code
or an HTTP status, never an exception that escapes.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import InterfaceError as SQLInterfaceError
from sqlalchemy.orm import Session

from lanlock import errors, names, pki
from lanlock.cloud import csr_policy, limits, throttle
from lanlock.cloud.issuers import IssuanceError, Issuer, IssuerUnavailable
from lanlock.cloud.jws import MalformedRequest, SignedRequest, Unauthorized, verify_request
from lanlock.cloud.metrics import CloudMetrics
from lanlock.store import Store
from lanlock.store.models import (
    AuditEntry,
    Box,
    Certificate,
    Database,
    IssuanceLease,
    SeenNonce,
    Subscription,
    SubscriptionLine,
)

# Reuse a stored certificate while more than this fraction of its lifetime remains (DESIGN §4).
REUSE_FRACTION = 2 / 3
NONCE_TTL = dt.timedelta(seconds=2 * 300 + 60)
NONCE_SWEEP_SECONDS = 60.0
# Rows for requests that authenticate nothing (400, 401), per process: enough to see an attack
# and its sources in the trail, too few for a flood to fill the store's disk. The rest are
# counted (lanlock_audit_dropped_total).
GARBAGE_AUDIT_BURST = 60
GARBAGE_AUDIT_PER_SECOND = 1.0
AUDIT_SWEEP_BATCH = 10_000
STORE_RETRY_AFTER = 5


@dataclass(frozen=True)
class Answer:
    """What the HTTP layer sends: a status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class X509Settings:
    zone: str
    lease_seconds: float = 120.0
    lease_wait_seconds: float = 60.0
    failure_limit: int = 10
    failure_window: float = 60.0
    issuance: throttle.IssuanceBudget = field(default_factory=throttle.IssuanceBudget)
    audit_days: float = 400.0  # a year and a month: this year's events beside last year's


@dataclass
class FirstLook:
    """Either the answer (reused, refused), or what the slow path needs to go on."""

    answer: Answer | None = None
    box: Box | None = None
    csr: x509.CertificateSigningRequest | None = None


class Refused(Exception):
    """Eligibility said no: answered as HTTP 200 with ``{"error": {code, message}}``."""

    def __init__(self, code: str, detail: str | None = None, **extra: str) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.extra = extra


class Limited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class X509Service:
    """Answers ``POST /iot/x509`` bodies; thread-safe, stateless but for the failure counts."""

    def __init__(
        self,
        store: Store,
        issuer: Issuer,
        settings: X509Settings,
        metrics: CloudMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.settings = settings
        self.metrics = metrics or CloudMetrics()
        self.clock = clock
        self.failures = limits.FailureCounts(settings.failure_limit, settings.failure_window)
        self._holder = secrets.token_hex(8)
        self._next_sweep = 0.0
        self._garbage_audit = TokenBucket(GARBAGE_AUDIT_BURST, GARBAGE_AUDIT_PER_SECOND)
        self._sweep_lock = threading.Lock()

    # --- the request ----------------------------------------------------------------------

    def handle(self, body: bytes, source: str) -> Answer:
        request: SignedRequest | None = None
        try:
            request = verify_request(body, self.clock())
            return self._handle_verified(request, source)
        except MalformedRequest as exc:
            return self._reject(400, "malformed", str(exc), source, request)
        except Unauthorized as exc:
            return self._reject(401, "unauthorized", str(exc), source, request)
        except Limited as exc:
            self.metrics.count("limited")
            return Answer(
                429,
                {"detail": "too many failed credential attempts; try again later"},
                {"Retry-After": str(exc.retry_after)},
            )
        except throttle.IssuanceLimited as exc:
            self._audit("limited", throttle.ISSUANCE_LIMITED, request, source, exc.detail)
            self.metrics.count("limited", throttle.ISSUANCE_LIMITED)
            return Answer(
                429,
                {"detail": exc.detail, "code": throttle.ISSUANCE_LIMITED},
                {"Retry-After": str(exc.retry_after)},
            )
        except Refused as exc:
            return self._refuse(exc, source, request)
        except IssuerUnavailable as exc:
            self.metrics.count("unavailable", "issuer")
            return Answer(
                503,
                {"detail": f"the certificate authority is unavailable: {exc}"},
                {"Retry-After": str(exc.retry_after)},
            )
        except (OperationalError, SQLInterfaceError, TimeoutError):
            self.metrics.count("unavailable", "store")
            return Answer(
                503,
                {"detail": "the cloud's store is unavailable; try again later"},
                {"Retry-After": str(STORE_RETRY_AFTER)},
            )

    def _handle_verified(self, request: SignedRequest, source: str) -> Answer:
        first = self._first_look(request, source)
        if first.answer is not None:
            return first.answer
        box, csr = first.box, first.csr
        registered_here = False
        if box is None or box.subscription_code != request.enterprise_code:
            box, registered_here = self._register(request, source)
        self._check_csr_names_for_issuer(csr, box)
        try:
            certificate, outcome = self._certificate_for(box, csr)
        except (Refused, IssuerUnavailable, throttle.IssuanceLimited):
            if registered_here:
                self._unregister(box.box_id)
            raise
        self._audit(
            outcome, None, request, source, f"serial {certificate.serial}", seen_box=box.box_id
        )
        self.metrics.count(outcome)
        return Answer(200, {"result": self._result(certificate, box.scope)})

    def _result(self, certificate: Certificate, scope: str) -> dict[str, Any]:
        return {
            "x509_pem": certificate.x509_pem,
            "chain_pem": certificate.chain_pem,
            "subject_cn": names.wildcard_name(scope, self.settings.zone),
            "scope": scope,
            "zone": self.settings.zone,
            "not_after": certificate.not_after.isoformat(),
        }

    # --- the first look: one transaction for most requests ----------------------------------

    def _first_look(self, request: SignedRequest, source: str) -> FirstLook:
        """Nonce, eligibility, CSR and the reuse rule in one transaction.

        Most requests end here: a box asking again (the reuse path) or a refusal. Both are
        answered and audited in this same transaction, so the common path costs one round of
        locking, not four. The nonce is kept whatever the verdict: a refused request replayed is
        refused as a replay.
        """
        now = dt.datetime.now(dt.UTC)
        try:
            with self.store.transaction() as session:
                session.add(SeenNonce(nonce=request.nonce, expires_at=now + NONCE_TTL))
                session.flush()
                look = self._look(session, request, source)
        except IntegrityError:
            raise Unauthorized("this nonce was seen before: each request needs a new one") from None
        self._sweep(now)
        return look

    def _look(self, session: Session, request: SignedRequest, source: str) -> FirstLook:
        try:
            box = self._check_credentials(session, request, source)
            csr = self._check_csr(request, box)
        except Refused as refusal:
            session.add(self._audit_entry("refused", refusal.code, request, source, refusal.detail))
            return FirstLook(answer=self._refusal_answer(refusal))
        if box is not None and box.subscription_code == request.enterprise_code:
            fingerprint = pki.key_fingerprint(csr.public_key())  # type: ignore[arg-type]
            if reusable := self._reusable_in(session, box.scope, fingerprint):
                session.add(
                    self._audit_entry("reused", None, request, source, f"serial {reusable.serial}")
                )
                _seen(box, request, source)
                self.metrics.count("reused")
                return FirstLook(answer=Answer(200, {"result": self._result(reusable, box.scope)}))
        return FirstLook(box=box, csr=csr)

    def _sweep_audit(self, session: Session, now: dt.datetime) -> None:
        """Drop audit rows past the retention, a batch a minute: never one long lock."""
        cutoff = now - dt.timedelta(days=self.settings.audit_days)
        oldest = (
            select(AuditEntry.id)
            .where(AuditEntry.at < cutoff)
            .order_by(AuditEntry.at)
            .limit(AUDIT_SWEEP_BATCH)
        )
        session.execute(delete(AuditEntry).where(AuditEntry.id.in_(oldest.scalar_subquery())))

    def _sweep(self, now: dt.datetime) -> None:
        """Drop expired nonces and failure counts, once a minute per process."""
        if time.monotonic() < self._next_sweep or not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = time.monotonic() + NONCE_SWEEP_SECONDS
            with self.store.transaction() as session:
                session.execute(delete(SeenNonce).where(SeenNonce.expires_at < now))
                self.failures.sweep(session, now)
                self._sweep_audit(session, now)
        finally:
            self._sweep_lock.release()

    # --- eligibility, in the order of DESIGN §4 ---------------------------------------------

    def _check_credentials(
        self, session: Session, request: SignedRequest, source: str
    ) -> Box | None:
        box = session.get(Box, request.box_id)
        network = limits.network_of(source)
        now = dt.datetime.now(dt.UTC)
        # A registered box proves itself with its device key: nobody's failures limit it.
        if box is None or box.database_uuid != request.db_uuid:
            self._check_limits(session, request.db_uuid, network, now)
        database = session.get(Database, request.db_uuid)
        subscription = _matching_subscription(session, request)
        if database is None or subscription is None:
            keys = [limits.network_key(network), limits.database_key(request.db_uuid)]
            self.failures.record(session, keys, now)
            raise Refused(errors.INVALID_CREDENTIALS)
        if database.kind != "production":
            raise Refused(errors.DATABASE_NOT_PRODUCTION, f"database kind {database.kind}")
        if subscription.state != "in_progress":
            raise Refused(
                errors.SUBSCRIPTION_NOT_IN_PROGRESS, f"subscription state {subscription.state}"
            )
        if _box_quota(session, subscription.code) <= 0:
            raise Refused(errors.NO_IOT_BOX_LINE)
        if box is not None and box.state == "revoked":
            raise Refused(errors.BOX_REVOKED)
        return box

    def _check_limits(self, session: Session, db_uuid: str, network: str, now: dt.datetime) -> None:
        """429 for a network over its failures, and for a new box of a guarded database unless
        it comes from a network where that database's boxes work (see :mod:`limits`)."""
        over = self.failures.retry_after(
            session, [limits.network_key(network), limits.database_key(db_uuid)], now
        )
        if retry := over.get(limits.network_key(network)):
            raise Limited(retry)
        retry = over.get(limits.database_key(db_uuid))
        if retry and not limits.database_works_from(session, db_uuid, network):
            raise Limited(retry)

    def _check_csr(self, request: SignedRequest, box: Box | None) -> x509.CertificateSigningRequest:
        try:
            csr = pki.parse_csr(request.csr_pem)
        except pki.InvalidCSR as exc:
            raise Refused(errors.INVALID_CSR, str(exc)) from None
        own = set(names.certificate_names(box.scope, self.settings.zone)) if box else set()
        if foreign := csr_policy.foreign_identities(csr, own):
            raise Refused(
                errors.INVALID_CSR,
                f"the CSR also names {', '.join(foreign)}; a CSR names nothing, or only this "
                "box's *.<scope>.<zone> and <scope>.<zone> (lower case, no final dot)",
            )
        return csr

    def _check_csr_names_for_issuer(self, csr: x509.CertificateSigningRequest, box: Box) -> None:
        """An ACME CA finalizes only a CSR naming exactly the order's names.

        A box learns its scope from its first answer, so its first CSR names nothing: it is
        refused here with its scope and zone, and asks again at once with the right names. The
        box stays registered (it is eligible, and its next request is served): the slot it took
        is the one it keeps.
        """
        wanted = names.certificate_names(box.scope, self.settings.zone)
        if self.issuer.requires_csr_names and set(pki.csr_names(csr)) != set(wanted):
            raise Refused(
                errors.INVALID_CSR,
                f"this CA needs the CSR to name exactly {' and '.join(wanted)}",
                scope=box.scope,
                zone=self.settings.zone,
            )

    # --- registration and quota -------------------------------------------------------------

    def _register(self, request: SignedRequest, source: str) -> tuple[Box, bool]:
        """Bind the box to the subscription, taking a slot; return (box, whether it is new)."""
        with self.store.transaction() as session:
            # The lock serialises registrations per subscription across replicas (PostgreSQL row
            # lock; on SQLite the transaction already holds the write lock): the count below
            # cannot be overtaken by a concurrent registration.
            subscription = session.execute(
                select(Subscription)
                .where(Subscription.code == request.enterprise_code)
                .with_for_update()
            ).scalar_one()
            box = session.get(Box, request.box_id, populate_existing=True)
            if box is not None and box.subscription_code == subscription.code:
                return box, False  # a concurrent request of the same box registered it
            used = session.scalar(
                select(func.count())
                .select_from(Box)
                .where(Box.subscription_code == subscription.code, Box.state == "active")
            )
            if (used or 0) >= _box_quota(session, subscription.code):
                raise Refused(errors.BOX_QUOTA_EXCEEDED)
            is_new = box is None
            if box is None:
                box = Box(
                    box_id=request.box_id,
                    device_key_der=pki.public_key_der(request.device_key),
                    scope=names.new_scope(),
                )
                session.add(box)
            box.database_uuid = request.db_uuid
            box.subscription_code = subscription.code
            box.last_address = request.address
            box.source_network = limits.network_of(source)
            session.flush()
            return box, is_new

    def _unregister(self, box_id: str) -> None:
        """Give back the slot of a box whose first issuance failed: a refusal takes none."""
        with self.store.transaction() as session:
            session.execute(delete(Certificate).where(Certificate.box_id == box_id))
            session.execute(delete(Box).where(Box.box_id == box_id))

    # --- reuse or issue, once per scope ---------------------------------------------------

    def _certificate_for(
        self, box: Box, csr: x509.CertificateSigningRequest
    ) -> tuple[Certificate, str]:
        fingerprint = pki.key_fingerprint(csr.public_key())  # type: ignore[arg-type]
        # The first look did not see the box registered; a concurrent request of the same box
        # may have registered it and issued since: no lease needed to hand that out.
        if reusable := self._reusable(box.scope, fingerprint):
            return reusable, "reused"
        deadline = time.monotonic() + self.settings.lease_wait_seconds
        delay = 0.01
        while not self._acquire_lease(box.scope):
            if time.monotonic() > deadline:
                raise IssuerUnavailable("another issuance for this box is still running", 10)
            time.sleep(delay + secrets.randbelow(10) / 1000)
            delay = min(delay * 2, 0.25)
            # Whoever holds the lease is probably issuing exactly what we need.
            if reusable := self._reusable(box.scope, fingerprint):
                return reusable, "reused"
        try:
            if reusable := self._reusable(box.scope, fingerprint):
                return reusable, "reused"
            self._check_issuance_budget(box)
            return self._issue(box, csr, fingerprint), "issued"
        finally:
            self._release_lease(box.scope)

    def _check_issuance_budget(self, box: Box) -> None:
        # Under the scope's lease: one box's requests cannot both pass the count; a
        # subscription's several boxes may overshoot by the requests in flight at once.
        with self.store.transaction() as session:
            slots = _box_quota(session, box.subscription_code)
            throttle.check_budget(
                session, self.settings.issuance, box, slots, dt.datetime.now(dt.UTC)
            )

    def _reusable(self, scope: str, fingerprint: str) -> Certificate | None:
        with self.store.transaction() as session:
            return self._reusable_in(session, scope, fingerprint)

    def _reusable_in(self, session: Session, scope: str, fingerprint: str) -> Certificate | None:
        newest = session.execute(
            select(Certificate)
            .where(Certificate.scope == scope, Certificate.key_fingerprint == fingerprint)
            .order_by(Certificate.not_after.desc())
            .limit(1)
        ).scalar_one_or_none()
        if newest is None:
            return None
        now = dt.datetime.now(dt.UTC)
        if newest.renew_after is not None:  # the CA's own advice wins over our rule of thumb
            return newest if now < newest.renew_after else None
        lifetime = (newest.not_after - newest.not_before).total_seconds()
        left = (newest.not_after - now).total_seconds()
        return newest if lifetime > 0 and left > REUSE_FRACTION * lifetime else None

    def _issue(
        self, box: Box, csr: x509.CertificateSigningRequest, fingerprint: str
    ) -> Certificate:
        started = time.perf_counter()
        try:
            issued = self.issuer.issue(csr, box.scope)
        except IssuanceError as exc:
            raise Refused(errors.ISSUANCE_FAILED, str(exc)) from None
        self.metrics.issuance_seconds.labels(self.issuer.name).observe(
            time.perf_counter() - started
        )
        self.metrics.issued.labels(self.issuer.name).inc()
        record = Certificate(
            box_id=box.box_id,
            scope=box.scope,
            key_fingerprint=fingerprint,
            serial=format(issued.leaf.serial_number, "x"),
            issuer=self.issuer.name,
            not_before=issued.leaf.not_valid_before_utc,
            not_after=issued.leaf.not_valid_after_utc,
            x509_pem=pki.to_pem(issued.leaf),
            chain_pem=issued.chain_pem,
            renew_after=issued.renew_after,
        )
        with self.store.transaction() as session:
            session.add(record)
        return record

    def _acquire_lease(self, scope: str) -> bool:
        now = dt.datetime.now(dt.UTC)
        expires = now + dt.timedelta(seconds=self.settings.lease_seconds)
        try:
            with self.store.transaction() as session:
                lease = session.get(IssuanceLease, scope, with_for_update=True)
                if lease is None:
                    session.add(IssuanceLease(scope=scope, holder=self._holder, expires_at=expires))
                    return True
                if lease.expires_at > now:
                    return False
                lease.holder, lease.expires_at = self._holder, expires  # a crashed holder's lease
                return True
        except IntegrityError:
            return False  # another replica inserted the lease first

    def _release_lease(self, scope: str) -> None:
        with self.store.transaction() as session:
            session.execute(
                delete(IssuanceLease).where(
                    IssuanceLease.scope == scope, IssuanceLease.holder == self._holder
                )
            )

    # --- answers and the audit trail --------------------------------------------------------

    def _refuse(self, refusal: Refused, source: str, request: SignedRequest | None) -> Answer:
        self._audit("refused", refusal.code, request, source, refusal.detail)
        return self._refusal_answer(refusal)

    def _refusal_answer(self, refusal: Refused) -> Answer:
        self.metrics.count("refused", refusal.code)
        entry = errors.refusal(refusal.code)
        message = (
            entry.meaning
            if refusal.detail is None
            else (f"{entry.meaning.rstrip('.')}: {refusal.detail}")
        )
        return Answer(200, {"error": {"code": refusal.code, "message": message} | refusal.extra})

    def _reject(
        self, status: int, outcome: str, detail: str, source: str, request: SignedRequest | None
    ) -> Answer:
        if self._garbage_audit.take():
            self._audit(outcome, str(status), request, source, detail)
        else:
            self.metrics.audit_dropped.inc()
        self.metrics.count(outcome)
        return Answer(status, {"detail": detail})

    def _audit(
        self,
        outcome: str,
        code: str | None,
        request: SignedRequest | None,
        source: str,
        detail: str | None,
        seen_box: str | None = None,
    ) -> None:
        entry = self._audit_entry(outcome, code, request, source, detail)
        try:
            with self.store.transaction() as session:
                session.add(entry)
                if seen_box is not None and (box := session.get(Box, seen_box)) is not None:
                    _seen(box, request, source)
        except (OperationalError, SQLInterfaceError):
            pass  # the answer matters more than its audit line when the store is failing

    @staticmethod
    def _audit_entry(
        outcome: str,
        code: str | None,
        request: SignedRequest | None,
        source: str,
        detail: str | None,
    ) -> AuditEntry:
        return AuditEntry(
            outcome=outcome,
            code=code,
            box_id=request.box_id if request else None,
            database_uuid=request.db_uuid[:64] if request else None,
            source=source[:64],
            detail=detail[:1000] if detail else None,
        )


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` a second; thread-safe."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


def _seen(box: Box, request: SignedRequest | None, source: str) -> None:
    box.last_seen_at = dt.datetime.now(dt.UTC)
    box.source_network = limits.network_of(source)
    if request and request.address:
        box.last_address = request.address


def _matching_subscription(session: Session, request: SignedRequest) -> Subscription | None:
    """The database's subscription with this code, compared in constant time."""
    candidates = session.scalars(
        select(Subscription).where(Subscription.database_uuid == request.db_uuid)
    ).all()
    supplied = request.enterprise_code.encode()
    found = None
    for candidate in candidates:
        if hmac.compare_digest(candidate.code.encode(), supplied):
            found = candidate
    return found


def _box_quota(session: Session, subscription_code: str) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(SubscriptionLine.quantity), 0)).where(
            SubscriptionLine.subscription_code == subscription_code,
            SubscriptionLine.product == "iot_box",
        )
    )
    return int(total or 0)
