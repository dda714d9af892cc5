"""The x509 request (docs/design.md §4-§6): who gets a certificate, and getting it exactly once.

Once the request is verified (step 1), the express lane (:mod:`.express`) answers a registered
box asking again for the certificate it holds, in one transaction, when every later step would
let it through; everything else goes step by step, each step a module of its own:

1. verify the JWS and its identity (:mod:`.jws`);
2. remember its nonce, refusing a replay (:mod:`.nonces`);
3. check eligibility in the documented order, after the failure limits (:mod:`.eligibility`);
4. check the CSR (:mod:`.csr_policy`);
5. register the box, taking a quota slot under a lock (:mod:`.registration`);
6. reuse (:mod:`.reuse`) or take the scope's lease within the issuance budget, in one
   transaction; then issue, and record the certificate, the lease's end and the audit line
   (:mod:`.audit`) in one more (:mod:`.issuance`).

Steps 2 to 4 share one transaction. :meth:`X509Service.handle` turns every step's "no" into its
answer: a refusal code, or an HTTP status with ``Retry-After`` where waiting helps. No exception
escapes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from sqlalchemy import Row
from sqlalchemy.exc import InterfaceError as SQLInterfaceError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from lanlock import defaults, errors, names, pki, renewal
from lanlock.cloud import (
    ari,
    audit,
    csr_policy,
    eligibility,
    express,
    limits,
    nonces,
    registration,
    throttle,
)
from lanlock.cloud.ca_budget import BudgetSpent, CABudget
from lanlock.cloud.issuance import Issuance
from lanlock.cloud.issuers import Issuer, IssuerUnavailable
from lanlock.cloud.jws import MalformedRequest, SignedRequest, Unauthorized, verify_request
from lanlock.cloud.metrics import CloudMetrics
from lanlock.cloud.models import Box, Certificate
from lanlock.cloud.refusals import Limited, Refused
from lanlock.store import Store
from lanlock.wire import X509Result

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0
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
    lease_seconds: float = defaults.LEASE_SECONDS
    lease_wait_seconds: float = defaults.LEASE_WAIT_SECONDS
    failure_limit: int = defaults.FAILURE_LIMIT
    failure_window: float = defaults.FAILURE_WINDOW
    issuance: throttle.IssuanceBudget = field(default_factory=throttle.IssuanceBudget)
    audit_days: float = 400.0  # a year and a month: this year's events beside last year's
    ca_budget: CABudget | None = None  # the ACME CA's rate limits, when it has any


@dataclass
class FirstLook:
    """Either the answer (reused, refused), or what the slow path needs to go on."""

    answer: Answer | None = None
    box: Box | None = None
    csr: x509.CertificateSigningRequest | None = None


class X509Service:
    """Answers ``POST /iot/x509`` bodies; thread-safe. Its only state in memory: when it last
    swept, and the audit trail's bucket for unauthenticated requests."""

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
        self.audit = audit.AuditTrail(store, self.metrics, settings.audit_days)
        self.issuance = Issuance(
            store,
            issuer,
            self.metrics,
            settings.issuance,
            settings.lease_seconds,
            settings.lease_wait_seconds,
            settings.ca_budget,
        )

    # --- the request ----------------------------------------------------------------------

    def handle(self, body: bytes, source: str) -> Answer:
        """The answer to one request body from ``source`` (the client's address)."""
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
            self.audit.write("limited", errors.ISSUANCE_LIMITED, request, source, exc.detail)
            self.metrics.count("limited", errors.ISSUANCE_LIMITED)
            return Answer(
                429,
                {"detail": exc.detail, "code": errors.ISSUANCE_LIMITED},
                {"Retry-After": str(exc.retry_after)},
            )
        except BudgetSpent as exc:
            self.audit.write("limited", errors.CA_RATE_LIMITED, request, source, exc.detail)
            self.metrics.count("limited", errors.CA_RATE_LIMITED)
            return Answer(
                503,
                {"detail": exc.detail, "code": errors.CA_RATE_LIMITED},
                {"Retry-After": str(exc.retry_after)},
            )
        except Refused as exc:
            self.audit.write("refused", exc.code, request, source, exc.detail)
            return self._refusal_answer(exc)
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
        parsed = csr_policy.parse(request.csr_pem)  # once: the express lane and the full way
        if (reused := self._express(request, parsed, source)) is not None:
            return reused
        first = self._first_look(request, parsed, source)
        if first.answer is not None:
            return first.answer
        box, csr = first.box, first.csr
        assert csr is not None
        registered_here = False
        if box is None or box.subscription_code != request.enterprise_code:
            box, registered_here = registration.register(self.store, request, source)
        csr_policy.check_names_for_ca(csr, box, self.settings.zone, self.issuer.requires_csr_names)
        box_id = box.box_id

        def record(session: Session, certificate: Certificate | Row, outcome: str) -> None:
            detail = f"serial {certificate.serial}"
            session.execute(audit.ADD, audit.values(outcome, None, request, source, detail))
            session.execute(registration.SEEN, registration.seen_values(box_id, request, source))

        try:
            certificate, outcome = self.issuance.certificate_for(box, csr, record)
        except (Refused, IssuerUnavailable, throttle.IssuanceLimited, BudgetSpent):
            if registered_here:
                registration.unregister(self.store, box.box_id)
            raise
        self.metrics.count(outcome)
        return Answer(200, {"result": self._result(certificate, box.scope)})

    # --- the express lane: a registered box asking again ---------------------------------------

    def _express(
        self, request: SignedRequest, csr: csr_policy.ParsedCSR, source: str
    ) -> Answer | None:
        """The reuse answer through :mod:`.express`, or None (nothing written) for the full way."""
        if isinstance(csr, pki.InvalidCSR):
            return None  # the full way refuses it, in its order
        with self.store.engine.connect() as conn, conn.begin() as transaction:
            reused = express.reused_certificate(conn, request, csr, self.settings.zone, source)
            if reused is None:
                transaction.rollback()
                return None
        certificate, scope = reused
        self.metrics.count("reused")
        return Answer(200, {"result": self._result(certificate, scope)})

    # --- the first look: one transaction for most requests ----------------------------------

    def _first_look(
        self, request: SignedRequest, csr: csr_policy.ParsedCSR, source: str
    ) -> FirstLook:
        """Nonce, eligibility and CSR in one transaction.

        A refusal is answered and audited in this same transaction. The nonce is kept whatever
        the verdict: a refused request replayed is refused as a replay. (A box asking again for
        the certificate it holds took the express lane; one that races it into here is handed
        that certificate under the scope's lease.)
        """
        now = dt.datetime.now(dt.UTC)
        with self.store.transaction() as session:
            nonces.remember(session, request.nonce, now)
            return self._look(session, request, csr, source)

    def _look(
        self, session: Session, request: SignedRequest, parsed: csr_policy.ParsedCSR, source: str
    ) -> FirstLook:
        try:
            box = eligibility.check_credentials(session, request, source, self.failures)
            csr = csr_policy.checked_csr(parsed, box, self.settings.zone)
        except Refused as refusal:
            detail = refusal.detail
            session.add(audit.entry("refused", refusal.code, request, source, detail))
            return FirstLook(answer=self._refusal_answer(refusal))
        return FirstLook(box=box, csr=csr)

    def sweep(self) -> None:
        """Drop expired nonces, failure counts, audit rows past their retention and full CA
        buckets; ask the CA's renewal information again where its time has come."""
        now = dt.datetime.now(dt.UTC)
        with self.store.transaction() as session:
            nonces.sweep(session, now)
            self.failures.sweep(session, now)
            self.audit.sweep(session, now)
            CABudget.sweep(session, now)
        ari.refresh_due(self.store, self.issuer, now)

    def sweep_in_background(self, interval: float = SWEEP_SECONDS) -> None:
        """:meth:`sweep` now and every ``interval`` seconds on a thread of its own, so that no
        request waits for it (it deletes in batches of up to 10,000 rows)."""

        def run() -> None:
            while True:
                try:
                    self.sweep()
                except (OperationalError, SQLInterfaceError) as exc:  # the next round tries again
                    log.warning("cannot sweep the store: %s", exc)
                time.sleep(interval)

        threading.Thread(target=run, name="sweeper", daemon=True).start()

    # --- answers ------------------------------------------------------------------------------

    def _result(self, certificate: Certificate | Row, scope: str) -> dict[str, Any]:
        renew_at = certificate.renew_after or renewal.renewal_time(
            certificate.not_before, certificate.not_after
        )
        return X509Result(
            x509_pem=certificate.x509_pem,
            chain_pem=certificate.chain_pem,
            subject_cn=names.wildcard_name(scope, self.settings.zone),
            scope=scope,
            zone=self.settings.zone,
            not_after=certificate.not_after.isoformat(),
            renew_at=renew_at.isoformat(),
        ).to_json()

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
        self.audit.write_unauthenticated(outcome, str(status), request, source, detail)
        self.metrics.count(outcome)
        return Answer(status, {"detail": detail})
