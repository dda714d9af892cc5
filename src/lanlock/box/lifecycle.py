"""The certificate lifecycle (docs/design.md §8): ``check()``, its states, and when to check next.

``check()`` answers one question — is the box serving a valid certificate of its own, and if not,
why not — with a ``BoxState`` that the homepage, the CLI and the console all show. Each of the six
error codes comes from exactly one condition, in the order of docs/design.md §8.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from lanlock import defaults, errors, names, pki, renewal
from lanlock.box.cloud_client import CloudAnswer, post_x509, x509_payload
from lanlock.box.settings import BoxConfig
from lanlock.box.tls_store import CertificateUnreadable, Pair, PairDamaged, TLSStore
from lanlock.wire import X509Result

log = logging.getLogger("lanlock.box.lifecycle")

REQUEST_TIMEOUT = 20.0
JITTER = 0.05  # a box renews up to this fraction of the time left before the time it was given


def parsed_time(text: str | None) -> dt.datetime | None:
    """An ISO-8601 time as the cloud (or the settings file) wrote it, UTC when it names no
    offset; None when it is not one: the box then keeps to its own rule."""
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def renewal_moment(announced: str | None, leaf: x509.Certificate) -> dt.datetime:
    """When to renew a certificate just installed: the cloud's time, bounded (lanlock.renewal),
    drawn up to :data:`JITTER` of the time left earlier."""
    due = renewal.due_time(
        parsed_time(announced), leaf.not_valid_before_utc, leaf.not_valid_after_utc
    )
    left = due - pki.utcnow()
    return due - left * random.uniform(0, JITTER) if left > dt.timedelta(0) else due


@dataclass
class BoxState:
    """What the box shows: ``state`` is valid | error | checking."""

    state: str
    code: str | None = None
    reason: str | None = None
    message: str | None = None
    url: str | None = None  # the first of ``urls``
    urls: tuple[str, ...] = ()  # one per LAN address of the box, in the order of its addresses
    not_after: str | None = None
    not_before: str | None = None
    issuer: str | None = None
    checked_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Backoff:
    """Exponential back-off with jitter, capped: a failing cloud is retried, not hammered."""

    first: float = defaults.RETRY_FIRST
    cap: float = defaults.RETRY_CAP
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        delay = min(self.cap, self.first * 2 ** (self.failures - 1))
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.failures = 0


class LoadFailed(Exception):
    def __init__(
        self,
        code: str,
        reason: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(code)
        self.code, self.reason, self.message = code, reason, message
        self.retry_after = retry_after  # what the cloud asked, if it asked


@dataclass
class Environment:
    """What ``check()`` needs from the agent: where things are, and how to reach the cloud."""

    https_port: int
    # The cloud's URL at the moment of asking: the box's --cloud, else the one pairing stored
    # (a console may name it after the agent started), else the default.
    cloud_url: Callable[[], str]
    # The box's LAN addresses at the moment of asking, the first its main URL's: the agent
    # follows them as they change (lanlock.box.addresses).
    addresses: Callable[[], tuple[str, ...]]
    cloud_verify: Any = True  # an ssl.SSLContext with the configured CA, or True (system store)
    device_key: Any = None


class CertificateManager:
    def __init__(
        self,
        env: Environment,
        tls: TLSStore,
        load_config: Callable[[], BoxConfig],
        update_config: Callable[[Callable[[BoxConfig], None]], BoxConfig],
        on_install: Callable[[Pair], None],
        backoff: Backoff | None = None,
        check_in: float = renewal.CHECK_IN.total_seconds(),
    ) -> None:
        self.env = env
        self.tls = tls  # the agent's: one owner of the certificate files
        self.load_config = load_config
        self.update_config = update_config
        self.on_install = on_install
        self.backoff = backoff or Backoff()
        self.state = BoxState("checking")
        self.next_check_at = time.monotonic()
        self._lock = threading.Lock()
        self._last_check = float("-inf")
        self.check_in = check_in
        # The first check-in at a random point of the first interval: a fleet restarted together
        # (a power cut, an update) does not check in together.
        self._checked_in_at = time.monotonic() - random.uniform(0, check_in)

    # --- when ------------------------------------------------------------------------------

    def check_if_stale(self, interval: float = defaults.HOMEPAGE_CHECK_INTERVAL) -> BoxState:
        """check(), unless one ran less than ``interval`` seconds ago (the homepage's rule)."""
        if time.monotonic() - self._last_check < interval:
            return self.state
        return self.check()

    def check(self, force_new: bool = False) -> BoxState:
        """Run the lifecycle once; ``force_new`` asks for a new certificate even if valid."""
        with self._lock:
            self._last_check = time.monotonic()
            state, delay = self._check(force_new)
            self.state = state
            self.next_check_at = time.monotonic() + delay
            log.info(
                "certificate check: %s%s",
                state.state,
                f" {state.code}" + (f" ({state.reason})" if state.reason else "")
                if state.code
                else f" until {state.not_after}",
            )
            return state

    def readdress(self) -> BoxState:
        """The last state, with the URLs of the box's addresses as they are now: an address
        change needs no check and no new certificate (the wildcard covers every label)."""
        with self._lock:
            if self.state.url is not None:
                self.state = self._located(self.state, self.load_config())
            return self.state

    # --- what --------------------------------------------------------------------------------

    def _check(self, force_new: bool) -> tuple[BoxState, float]:
        config = self.load_config()
        if not config.console_url:
            return self._error(errors.CHECK_NO_SERVER, None), 3600.0
        try:
            pair = self.tls.current()
        except CertificateUnreadable as exc:
            log.error("certificate file unreadable: %s", exc)
            return self._error(errors.CHECK_CERT_READ_EXCEPTION, None, str(exc)), self._retry()
        except PairDamaged as exc:
            log.warning("certificate damaged, fetching a new one: %s", exc)
            pair = None
        if pair is not None and not force_new and self._is_fresh(pair, config):
            self.backoff.reset()
            if time.monotonic() - self._checked_in_at >= self.check_in:
                pair, config = self._checked_in(pair, config)
            if self._is_fresh(pair, config):
                return self._valid(pair, config), self._renewal_delay(pair)
        try:
            pair = self._load(config)
        except LoadFailed as failure:
            return self._failed_load(failure, pair, config), self._retry(failure.retry_after)
        self.backoff.reset()
        return self._valid(pair, self.load_config()), self._renewal_delay(pair)

    def _is_fresh(self, pair: Pair, config: BoxConfig) -> bool:
        if pair.temporary or not config.scope or not config.zone:
            return False
        if not self._names_match(pair.leaf, config.scope, config.zone):
            return False
        return pki.utcnow() < self._due(pair.leaf, config)

    @staticmethod
    def _names_match(leaf: x509.Certificate, scope: str, zone: str) -> bool:
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        wanted = set(names.certificate_names(scope, zone))
        return wanted <= {n.lower() for n in san.get_values_for_type(x509.DNSName)}

    @staticmethod
    def _renewal_time(leaf: x509.Certificate) -> dt.datetime:
        """The box's own rule (lanlock.renewal), for a certificate the cloud gave no time for."""
        return renewal.renewal_time(leaf.not_valid_before_utc, leaf.not_valid_after_utc)

    @staticmethod
    def _due(leaf: x509.Certificate, config: BoxConfig) -> dt.datetime:
        """When to renew ``leaf``: the moment drawn when it was installed from the time the cloud
        announced with it (the CA's renewal information, when it gives one), else the box's own
        rule."""
        serial = format(leaf.serial_number, "x")
        drawn = parsed_time(config.renew_at) if config.renew_at_serial == serial else None
        return renewal.due_time(drawn, leaf.not_valid_before_utc, leaf.not_valid_after_utc)

    def _renewal_delay(self, pair: Pair) -> float:
        """Until the renewal time, or the next check-in when that comes first."""
        due = self._due(pair.leaf, self.load_config())
        check_in = self._checked_in_at + self.check_in - time.monotonic()
        return min(max(60.0, (due - pki.utcnow()).total_seconds()), max(1.0, check_in))

    def _retry(self, asked: float | None = None) -> float:
        """The back-off's next delay, or longer when the cloud asked for longer (its Retry-After,
        within the back-off's cap: a cloud cannot park a box for more than that)."""
        delay = self.backoff.next_delay()
        if asked is not None:
            delay = max(delay, min(asked, self.backoff.cap))
        return delay

    # --- loading a new certificate ---------------------------------------------------------

    def _load(self, config: BoxConfig) -> Pair:
        if not config.has_credentials:
            raise LoadFailed(errors.LOAD_NO_CREDENTIAL)
        key = self.tls.pending_key()
        answer = self._ask_cloud(self._payload(config, key))
        if self._learned_scope(answer, config):
            answer = self._ask_cloud(self._payload(self.load_config(), key))
        result = self._accepted_result(answer)
        leaf = self._checked_certificate(result, key)
        pair = self._install(result, leaf, key)
        self.tls.drop_pending_key()
        self._checked_in_at = time.monotonic()  # a new certificate's answer is as good
        return pair

    def _checked_in(self, pair: Pair, config: BoxConfig) -> tuple[Pair, BoxConfig]:
        """Ask the cloud with the key in use (:data:`lanlock.renewal.CHECK_IN`): the same
        certificate with the renewal time as it stands now, or — when the CA has opened its
        renewal window already — a new certificate for that key, installed at once. A cloud that
        cannot answer now changes nothing: the certificate is valid, the next check-in is a
        check-in interval away."""
        self._checked_in_at = time.monotonic()
        key = pair.key
        try:
            result = self._accepted_result(self._ask_cloud(self._payload(config, key)))
            leaf = self._checked_certificate(result, key)
        except LoadFailed as failure:
            log.warning("checking in with the cloud failed (%s); nothing changes", failure.code)
            return pair, config
        if leaf.serial_number == pair.leaf.serial_number:
            self._remember_answer(result, leaf)
        else:
            log.info("the cloud renewed the certificate at check-in (the CA's renewal window)")
            pair = self._install(result, leaf, key)
        return pair, self.load_config()

    def _install(self, result: X509Result, leaf: x509.Certificate, key: Any) -> Pair:
        pair = self.tls.install(result.x509_pem.strip() + "\n" + result.chain_pem, key)
        self._remember_answer(result, leaf)
        log.info(
            "installed certificate serial %x for %s until %s",
            leaf.serial_number,
            result.subject_cn,
            leaf.not_valid_after_utc.isoformat(),
        )
        self.on_install(pair)
        return pair

    def _payload(self, config: BoxConfig, key: Any) -> dict[str, Any]:
        # Once the box knows its scope its CSR names it: an ACME CA insists on that.
        csr_names = (
            names.certificate_names(config.scope, config.zone)
            if (config.scope and config.zone)
            else []
        )
        return x509_payload(
            self.env.device_key,
            config.db_uuid or "",
            config.enterprise_code or "",
            pki.csr_pem(pki.build_csr(key, csr_names)),
            self.env.addresses()[0],  # informative (docs/design.md §4): the first is enough
        )

    def _learned_scope(self, answer: CloudAnswer, config: BoxConfig) -> bool:
        """A CSR refused for its names comes back with the box's scope: keep it, ask again."""
        hint = answer.hint or {}
        scope, zone = hint.get("scope"), hint.get("zone")
        if answer.refusal_code != errors.INVALID_CSR or not scope or not zone:
            return False
        if (scope, zone) == (config.scope, config.zone) or not names.is_scope_label(scope):
            return False
        self._remember_scope(scope, zone)
        log.info("the cloud assigned scope %s; asking again with a CSR that names it", scope)
        return True

    def _remember_scope(self, scope: str, zone: str) -> None:
        def remember(config: BoxConfig) -> None:
            config.scope, config.zone = scope, zone

        self.update_config(remember)

    def _remember_answer(self, result: X509Result, leaf: x509.Certificate) -> None:
        """The box's name, and when to renew this certificate: the cloud's time, drawn up to
        :data:`JITTER` of the time left earlier, once, so that boxes whose certificates came
        together do not all come back in the same minute (a jitter drawn at every check was
        undone by the next check, which still compared with the exact time)."""

        serial = format(leaf.serial_number, "x")
        due = renewal_moment(result.renew_at, leaf)

        def remember(config: BoxConfig) -> None:
            config.scope, config.zone = result.scope, result.zone
            if (config.renew_at_serial, config.renew_announced) == (serial, result.renew_at):
                return  # told again at a check-in: the moment drawn stays
            config.renew_at = due.isoformat()
            config.renew_at_serial = serial
            config.renew_announced = result.renew_at

        self.update_config(remember)

    def _ask_cloud(self, payload: dict[str, Any]) -> CloudAnswer:
        cloud_url = self.env.cloud_url()
        try:
            with httpx.Client(verify=self.env.cloud_verify, timeout=REQUEST_TIMEOUT) as client:
                return post_x509(client, cloud_url, self.env.device_key, payload)
        except httpx.HTTPError as exc:
            log.error("cannot reach the cloud at %s: %s: %s", cloud_url, type(exc).__name__, exc)
            raise LoadFailed(
                errors.LOAD_REQUEST_EXCEPTION, None, f"{type(exc).__name__}: {exc}"
            ) from None

    @staticmethod
    def _accepted_result(answer: CloudAnswer) -> X509Result:
        if answer.status != 200:
            log.error("the cloud answered HTTP %s: %s", answer.status, answer.message)
            raise LoadFailed(
                errors.status_code(answer.status),
                answer.refusal_code,  # the status's own code, when the cloud gave one
                answer.message,
                answer.retry_after,
            )
        if answer.result is None:  # a refusal, or a result that lacks a field (lanlock.wire)
            log.error("the cloud gave no certificate: %s %s", answer.refusal_code, answer.message)
            raise LoadFailed(errors.LOAD_REQUEST_NO_RESULT, answer.refusal_code, answer.message)
        return answer.result

    def _checked_certificate(self, result: X509Result, key: Any) -> x509.Certificate:
        """The box's own checks on what the cloud sent (docs/design.md §8); LoadFailed when one
        fails."""
        try:
            leaf = pki.certificate_from_pem(result.x509_pem)
            chain = pki.certificates_from_pem(result.chain_pem)
            names.normalize_zone(result.zone)
        except ValueError as exc:
            raise self._bad_result(f"the certificate does not parse: {exc}") from None
        if not names.is_scope_label(result.scope):
            raise self._bad_result("the cloud's scope is not a scope label")
        if leaf.public_key() != key.public_key():
            raise self._bad_result("the certificate is not for the key of our request")
        if not self._names_match(leaf, result.scope, result.zone):
            raise self._bad_result("the certificate does not name *.<scope>.<zone> and <scope>")
        if leaf.not_valid_after_utc <= pki.utcnow():
            raise self._bad_result("the certificate has already expired")
        if not chain:
            raise self._bad_result("the cloud sent no intermediate certificate")
        try:
            leaf.verify_directly_issued_by(chain[0])
            for child, parent in itertools.pairwise(chain):
                child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise self._bad_result(f"the chain is broken: {exc}") from None
        return leaf

    @staticmethod
    def _bad_result(why: str) -> LoadFailed:
        log.error("refusing the cloud's certificate: %s", why)
        return LoadFailed(errors.LOAD_REQUEST_NO_RESULT, None, why)

    # --- states ------------------------------------------------------------------------------

    def _valid(self, pair: Pair, config: BoxConfig) -> BoxState:
        state = BoxState(
            "valid",
            not_after=pair.leaf.not_valid_after_utc.isoformat(),
            not_before=pair.leaf.not_valid_before_utc.isoformat(),
            issuer=pair.leaf.issuer.rfc4514_string(),
        )
        return self._located(state, config)

    def _failed_load(self, failure: LoadFailed, pair: Pair | None, config: BoxConfig) -> BoxState:
        """The error, and — while it still is — the older certificate that keeps being served."""
        state = self._error(failure.code, failure.reason, failure.message)
        if pair is not None and not pair.temporary and pki.utcnow() < pair.leaf.not_valid_after_utc:
            kept = self._valid(pair, config)
            kept.code, kept.reason, kept.message = state.code, state.reason, state.message
            return kept
        return state

    def _error(self, code: str, reason: str | None, message: str | None = None) -> BoxState:
        return BoxState("error", code=code, reason=reason, message=message)

    def _located(self, state: BoxState, config: BoxConfig) -> BoxState:
        """``state`` with a URL per address the box has now, once it knows its scope."""
        if not (config.scope and config.zone):
            return replace(state, url=None, urls=())
        port = self.env.https_port
        urls = tuple(
            names.https_url(address, config.scope, config.zone, port)
            for address in self.env.addresses()
        )
        return replace(state, url=urls[0], urls=urls)
