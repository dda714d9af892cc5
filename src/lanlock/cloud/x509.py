"""The x509 request (docs/design.md §4-§6): who gets a certificate, and getting it exactly once.

Once the request is verified (step 1), one transaction decides it (:meth:`X509Service._first_look`):
the express lane (:mod:`.express`) answers a registered box asking again for the certificate it
holds, when every later step would let it through; everything else goes on step by step in that
same transaction, each step a module of its own:

1. verify the JWS and its identity (:mod:`.jws`);
2. remember its nonce, refusing a replay (:mod:`.nonces`);
3. check eligibility in the documented order, after the failure limits (:mod:`.eligibility`);
4. check the CSR (:mod:`.csr_policy`);
5. register the box, taking a quota slot under a lock (:mod:`.registration`);
6. reuse (:mod:`.reuse`), or take the scope's lease within the issuance budget (:mod:`.issuance`,
   :mod:`.throttle`) and issue, recording the certificate, the lease's end and the audit line
   (:mod:`.audit`).

Steps 2 to 6 are SQLAlchemy Core statements built once, in one transaction: with the embedded CA
a new box costs one commit. A slow issuer (ACME) is asked between that transaction, which took
the lease, and one more that records what it gave; with a CA budget the lease is taken in a
transaction of its own (:class:`.issuance.Issuance`). :meth:`X509Service.handle` turns every
step's "no" into its answer: a refusal code, or an HTTP status with ``Retry-After`` where
waiting helps. No exception escapes. :meth:`X509Service.handle_many` answers several requests
the same way with their first looks in one transaction, a savepoint each, and one commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from sqlalchemy import Connection, text
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
from lanlock.cloud.ca_budget import BudgetSpent, CABudget, Order
from lanlock.cloud.issuance import Handed, Issuance
from lanlock.cloud.issuers import Issuer, IssuerUnavailable
from lanlock.cloud.jws import MalformedRequest, SignedRequest, Unauthorized, verify_request
from lanlock.cloud.metrics import CloudMetrics
from lanlock.cloud.refusals import Limited, Refused
from lanlock.cloud.registration import RegisteredBox
from lanlock.store import Store
from lanlock.store.prepared import Prepared
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
    """What the first transaction decided: the answer (reused, refused, limited), or what the
    rest of the way needs to go on."""

    answer: Answer | None = None
    counted: tuple[str, str | None] | None = None  # the metric, once the transaction commits
    box: RegisteredBox | None = None
    csr: x509.CertificateSigningRequest | None = None
    registered_here: bool = False
    taken: Handed | Order | None = None  # what the lease step gave in the transaction


@dataclass
class Recorder:
    """Writes what came of a request in the transaction that decides it: its audit line, and
    when the box asked last and from where (not for a box registered by this very request:
    registration wrote that)."""

    request: SignedRequest
    source: str
    network: str
    registered_here: bool = False

    def __call__(self, conn: Session | Connection, certificate: Handed, outcome: str) -> None:
        detail = f"serial {certificate.serial}"
        audit.ADD.run(conn, audit.values(outcome, None, self.request, self.source, detail))
        if not self.registered_here:
            seen = registration.seen_values(
                self.request.box_id, self.request, self.source, self.network
            )
            registration.SEEN.run(conn, seen)


@dataclass(frozen=True)
class Asking:
    """A verified request with what every step reads of it: its CSR as loaded (or why it did
    not load), its key's fingerprint and its CSR's digest (None for a CSR that did not load),
    and its recorder.

    The CSR's signature and key are checked once, when a step asks (:attr:`parsed`): a box
    asking again with the very CSR its certificate was issued for (:func:`lanlock.pki.build_csr`
    signs deterministically) is answered by the express lane without that check, since those
    bytes passed it when the certificate was issued (:attr:`Certificate.csr_sha256`)."""

    request: SignedRequest
    loaded: csr_policy.ParsedCSR
    fingerprint: str | None
    csr_sha256: str | None
    record: Recorder

    @property
    def source(self) -> str:
        return self.record.source

    @functools.cached_property
    def parsed(self) -> csr_policy.ParsedCSR:
        """The CSR once its signature holds and its key is strong, or why not."""
        return csr_policy.check(self.loaded)

    def checked_when(self, issued_for: str | None) -> bool:
        """Whether the CSR is good: the very bytes a certificate was issued for
        (``issued_for``, its ``csr_sha256``), or checked now."""
        if self.csr_sha256 is not None and hmac.compare_digest(self.csr_sha256, issued_for or ""):
            return True
        return not isinstance(self.parsed, pki.InvalidCSR)


# One request's savepoint in a batch (both stores speak this SQL). By hand rather than with
# Connection.begin_nested, which names each savepoint anew: a statement compiled at every request
# (about 20 µs), where these three are the same text every time, run straight on the cursor.
SAVEPOINT = Prepared(text("SAVEPOINT request"))
UNDO_SAVEPOINT = Prepared(text("ROLLBACK TO SAVEPOINT request"))
RELEASE_SAVEPOINT = Prepared(text("RELEASE SAVEPOINT request"))

# Hands a batch's answers, by index in the batch, to whoever waits for them.
Deliver = Callable[[dict[int, "Answer | Exception"]], None]

# The "no"s a step raises that have an answer (:meth:`X509Service._failure_answer`).
STORE_UNAVAILABLE = (OperationalError, SQLInterfaceError, TimeoutError)
ANSWERED = (
    MalformedRequest,
    Unauthorized,
    Limited,
    throttle.IssuanceLimited,
    BudgetSpent,
    Refused,
    IssuerUnavailable,
    *STORE_UNAVAILABLE,
)


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
            asking = self._asking(request, source)
            with self.store.engine.connect() as conn, conn.begin():
                first = self._first_look(conn, asking)
            return self._after_first_look(first, asking)
        except ANSWERED as exc:
            return self._failure_answer(exc, request, source)

    def handle_many(
        self, bodies: Sequence[tuple[bytes, str]], deliver: Deliver | None = None
    ) -> list[Answer | Exception]:
        """The answers to several request bodies (each with its source), as :meth:`handle`
        gives them one by one, for less: their first looks in one transaction, each in a
        savepoint of its own (a request that raises, a replay or a failure limit, is undone
        alone, as its own transaction was), and one commit for all.

        A first look that commits answers nothing before the commit: an answer that the store
        then loses is never sent. A commit that fails answers every request of the batch 503,
        as one request's would be. An exception that is no answer (a bug) is returned in its
        request's place, for its caller to raise: that request alone fails, as from
        :meth:`handle`. Rejections (400, 401) write their audit lines before the transaction
        and anything after the first look (a lease to wait for, the issuance's own writes)
        after its commit: one SQLite writer at a time, and this connection is it meanwhile.

        ``deliver`` is given the answers as they are ready, by index: every answer the first
        looks decided at once, then each one that had more to do (a lease to wait for, up to
        :attr:`X509Settings.lease_wait_seconds`) on its own, so that no answer waits for
        another request's.
        """
        answers: list[Answer | Exception | None] = [None] * len(bodies)
        now = self.clock()
        asked: dict[int, Asking] = {}
        for index, (body, source) in enumerate(bodies):
            request: SignedRequest | None = None
            try:
                request = verify_request(body, now)
                asked[index] = self._asking(request, source)
            except ANSWERED as exc:
                answers[index] = self._failure_answer(exc, request, source)
            except Exception as exc:  # a bug: raised by its own request's caller
                answers[index] = exc
        firsts = self._first_looks(asked)
        later = [
            i
            for i, first in firsts.items()
            if isinstance(first, FirstLook) and first.answer is None
        ]
        for index, asking in asked.items():
            if index not in later:
                answers[index] = self._answer_after(firsts[index], asking)
        ready = {i: answer for i, answer in enumerate(answers) if answer is not None}
        if deliver is not None:
            deliver(ready)
        for index in later:
            answers[index] = answer = self._answer_after(firsts[index], asked[index])
            if deliver is not None:
                deliver({index: answer})
        assert all(answer is not None for answer in answers)  # each request answered once
        return answers  # type: ignore[return-value]

    def _answer_after(self, first: FirstLook | Exception, asking: Asking) -> Answer | Exception:
        """A request's answer once its first look committed (or raised), as :meth:`handle`
        would give it; a bug's exception in its place."""
        try:
            if isinstance(first, Exception):
                raise first
            return self._after_first_look(first, asking)
        except ANSWERED as exc:
            return self._failure_answer(exc, asking.request, asking.source)
        except Exception as exc:  # a bug, as above
            return exc

    def _first_looks(self, asked: dict[int, Asking]) -> dict[int, FirstLook | Exception]:
        """Each request's first look, or what it raised, in one transaction (savepoints)."""
        firsts: dict[int, FirstLook | Exception] = {}
        try:
            with self.store.engine.connect() as conn, conn.begin():
                for index, asking in asked.items():
                    SAVEPOINT.run(conn, {})
                    try:
                        firsts[index] = self._first_look(conn, asking)
                    except Exception as exc:  # answered, or raised, after the commit
                        UNDO_SAVEPOINT.run(conn, {})
                        firsts[index] = exc
                    RELEASE_SAVEPOINT.run(conn, {})
        except STORE_UNAVAILABLE as exc:  # the commit, or a savepoint: nothing was kept
            return dict.fromkeys(asked, exc)
        return firsts

    def _asking(self, request: SignedRequest, source: str) -> Asking:
        loaded = csr_policy.load(request.csr_pem)  # once: the express lane and the full way
        fingerprint = digest = None
        if not isinstance(loaded, pki.InvalidCSR):
            fingerprint = pki.key_fingerprint(loaded.public_key())  # type: ignore[arg-type]
            digest = pki.csr_digest(loaded)
        record = Recorder(request, source, limits.network_of(source))
        return Asking(request, loaded, fingerprint, digest, record)

    def _after_first_look(self, first: FirstLook, asking: Asking) -> Answer:
        """The answer, once the first look has committed: its own, or the issuance's."""
        if first.answer is not None:
            if first.counted is not None:
                self.metrics.count(*first.counted)
            return first.answer
        box, csr = first.box, first.csr
        assert box is not None and csr is not None
        try:
            certificate, outcome = self.issuance.certificate_for(
                box, csr, asking.record, asking.fingerprint, first.taken
            )
        except (Refused, IssuerUnavailable, throttle.IssuanceLimited, BudgetSpent):
            if first.registered_here:
                registration.unregister(self.store, box.box_id)
            raise
        self.metrics.count(outcome)
        return Answer(200, {"result": self._result(certificate, box.scope)})

    def _failure_answer(self, exc: Exception, request: SignedRequest | None, source: str) -> Answer:
        """What a step's "no" is answered: a refusal code, or a status with ``Retry-After``
        where waiting helps."""
        if isinstance(exc, MalformedRequest):
            return self._reject(400, "malformed", str(exc), source, request)
        if isinstance(exc, Unauthorized):
            return self._reject(401, "unauthorized", str(exc), source, request)
        if isinstance(exc, Limited):
            self.metrics.count("limited")
            return Answer(
                429,
                {"detail": "too many failed credential attempts; try again later"},
                {"Retry-After": str(exc.retry_after)},
            )
        if isinstance(exc, throttle.IssuanceLimited):
            self.audit.write("limited", errors.ISSUANCE_LIMITED, request, source, exc.detail)
            self.metrics.count("limited", errors.ISSUANCE_LIMITED)
            return Answer(
                429,
                {"detail": exc.detail, "code": errors.ISSUANCE_LIMITED},
                {"Retry-After": str(exc.retry_after)},
            )
        if isinstance(exc, BudgetSpent):
            self.audit.write("limited", errors.CA_RATE_LIMITED, request, source, exc.detail)
            self.metrics.count("limited", errors.CA_RATE_LIMITED)
            return Answer(
                503,
                {"detail": exc.detail, "code": errors.CA_RATE_LIMITED},
                {"Retry-After": str(exc.retry_after)},
            )
        if isinstance(exc, Refused):
            self.audit.write("refused", exc.code, request, source, exc.detail)
            return self._refusal_answer(exc)
        if isinstance(exc, IssuerUnavailable):
            self.metrics.count("unavailable", "issuer")
            return Answer(
                503,
                {"detail": f"the certificate authority is unavailable: {exc}"},
                {"Retry-After": str(exc.retry_after)},
            )
        self.metrics.count("unavailable", "store")  # STORE_UNAVAILABLE
        return Answer(
            503,
            {"detail": "the cloud's store is unavailable; try again later"},
            {"Retry-After": str(STORE_RETRY_AFTER)},
        )

    # --- the first look: one transaction for most requests ----------------------------------

    def _first_look(self, conn: Connection, asking: Asking) -> FirstLook:
        """The express lane, else nonce, eligibility, CSR, registration and the scope's lease,
        in ``conn``'s one transaction.

        A refusal is answered and audited in this same transaction. The nonce is kept whatever
        the verdict: a refused request replayed is refused as a replay. (A Limited or a replay
        raises, and the transaction is rolled back: nothing is kept.)
        """
        request, fingerprint, record = asking.request, asking.fingerprint, asking.record
        row = express.look(conn, request.box_id, fingerprint)
        if row is not None and fingerprint is not None:
            assert not isinstance(asking.loaded, pki.InvalidCSR)
            reused = express.reused_certificate(
                conn, row, request, asking.loaded, asking.checked_when, self.settings.zone,
                record.source, record.network,
            )  # fmt: skip
            if reused is not None:
                answer = Answer(200, {"result": self._result(reused, row.scope)})
                return FirstLook(answer=answer, counted=("reused", None))
        now = dt.datetime.now(dt.UTC)
        nonces.remember(conn, request.nonce, now)
        try:
            return self._look(conn, request, asking.parsed, fingerprint, record, row, now)
        except Refused as refusal:
            values = audit.values("refused", refusal.code, request, record.source, refusal.detail)
            audit.ADD.run(conn, values)
            return FirstLook(answer=self._refusal_answer(refusal))

    def _look(
        self,
        conn: Connection,
        request: SignedRequest,
        parsed: csr_policy.ParsedCSR,
        fingerprint: str | None,
        record: Recorder,
        row: Any | None,
        now: dt.datetime,
    ) -> FirstLook:
        """Steps 3 to 6 in the first look's transaction: Refused for a refusal (the caller
        audits it there)."""
        box = express.registered(request.box_id, row)
        quota = eligibility.check(conn, request, row, box, record.network, self.failures, now)
        csr = csr_policy.checked_csr(parsed, box, self.settings.zone)
        registered_here = False
        if box is None or box.subscription_code != request.enterprise_code:
            slot = registration.register_in(
                conn, request, record.network, box, not self.store.is_sqlite
            )
            box, registered_here, quota = slot.box, slot.is_new, slot.quota
            record.registered_here = registered_here
        zone, exact_names = self.settings.zone, self.issuer.requires_csr_names
        csr_policy.check_names_for_ca(csr, box, zone, exact_names)  # type: ignore[arg-type]
        first = FirstLook(box=box, csr=csr, registered_here=registered_here)
        if not self.issuance.takes_in_first_look:
            return first
        assert fingerprint is not None  # the CSR parsed
        return self._take(conn, request, record, first, fingerprint, quota)

    def _take(
        self,
        conn: Connection,
        request: SignedRequest,
        record: Recorder,
        first: FirstLook,
        fingerprint: str,
        quota: int,
    ) -> FirstLook:
        """Step 6 in the first look's transaction: reuse, or the lease within the budget, and
        with an instant issuer the certificate itself."""
        box, csr, registered_here = first.box, first.csr, first.registered_here
        assert box is not None and csr is not None
        try:
            taken = self.issuance.take_in(conn, box, fingerprint, record, quota, registered_here)
        except throttle.IssuanceLimited as limited:
            # As if the lease step had been a transaction of its own: the lease goes back, a
            # box registered by this request gives its slot back, the nonce stays.
            self.issuance.lease.release_in(conn, box.scope)
            if registered_here:
                registration.unregister_in(conn, box.box_id)
            code, detail = errors.ISSUANCE_LIMITED, limited.detail
            audit.ADD.run(conn, audit.values("limited", code, request, record.source, detail))
            answer = Answer(
                429, {"detail": detail, "code": code}, {"Retry-After": str(limited.retry_after)}
            )
            return FirstLook(answer=answer, counted=("limited", code))
        if taken is None or (isinstance(taken, Order) and not self.issuance.issues_in_first_look):
            first.taken = taken  # the lease is busy (the rest waits for it), or held to issue
            return first
        if not isinstance(taken, Order):  # reused under the lease
            answer = Answer(200, {"result": self._result(taken, box.scope)})
            return FirstLook(answer=answer, counted=("reused", None))
        try:
            certificate = self.issuance.issue_in(
                conn, box, csr, fingerprint, taken, record, registered_here
            )
        except Refused:
            if registered_here:  # a refused request takes no slot
                registration.unregister_in(conn, box.box_id)
            raise
        answer = Answer(200, {"result": self._result(certificate, box.scope)})
        return FirstLook(answer=answer, counted=("issued", None))

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
                except Exception:  # a bug or a CA's odd answer must not end the rounds for good
                    log.exception("the maintenance round failed; the next one tries again")
                time.sleep(interval)

        threading.Thread(target=run, name="sweeper", daemon=True).start()

    # --- answers ------------------------------------------------------------------------------

    def _result(self, certificate: Handed, scope: str) -> dict[str, Any]:
        renew_at = certificate.renew_after or renewal.renewal_time(
            certificate.not_before, certificate.not_after
        )
        result = X509Result(
            x509_pem=certificate.x509_pem,
            chain_pem=certificate.chain_pem,
            subject_cn=names.wildcard_name(scope, self.settings.zone),
            scope=scope,
            zone=self.settings.zone,
            not_after=certificate.not_after.isoformat(),
            renew_at=renew_at.isoformat(),
        )
        # Its fields are text: a copy of them is its to_json() (dataclasses.asdict, which copies
        # deeply: 18 µs where this takes under one).
        return dict(vars(result))

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
