"""Publicly trusted certificates from any RFC 8555 CA, with DNS-01 answered by lanlock's own DNS.

The box's key never leaves the box: the order is finalized with the box's own CSR, which must
therefore name exactly ``*.<scope>.<zone>`` and ``<scope>.<zone>`` (the CA checks that the CSR
and the order agree). The order itself is built from the box's scope alone, never from the CSR
(the acme library's ``new_order`` reads identifiers from the CSR, CN included, which would let a
box smuggle in another customer's name); an authorization the CA returns for any other name
stops the order before anything is published. The challenge values go into the shared store,
keyed by the order's scope, where every ``lanlock dns`` replica reads them; the cloud answers
the challenges only once it has seen the values on the zone's servers itself, over UDP and TCP,
and removes them afterwards whatever happened.

The ``acme`` library does the protocol; lanlock adds the store, the visibility check, polling at
short intervals (the library sleeps a whole second per poll), and patience with ``badNonce``
(the library retries it once; a busy CA may reject several nonces in a row).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver
import josepy
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from acme import challenges, client, messages
from acme import errors as acme_errors
from lanlock import names, pki
from lanlock.cloud.issuers.base import (
    NO_ADVICE,
    CARateLimited,
    IssuanceError,
    Issued,
    IssuerUnavailable,
    RenewalAdvice,
)
from lanlock.cloud.metrics import CloudMetrics
from lanlock.cloud.models import AcmeAccount, ChallengeRecord
from lanlock.store import Store
from lanlock.wire import retry_after_seconds

log = logging.getLogger("lanlock.cloud.acme")
T = TypeVar("T")

USER_AGENT = "lanlock-cloud"
CHALLENGE_LIFETIME = dt.timedelta(minutes=10)  # a crashed cloud's values expire on their own
UNAVAILABLE_RETRY_AFTER = 30
# A rateLimited answer without Retry-After: Let's Encrypt's slowest refill is hours; an hour
# keeps the fleet from hammering a CA that did not say.
RATE_LIMITED_RETRY_AFTER = 3600
# The longest wait a CA's Retry-After can impose: its longest window (Let's Encrypt's limits
# refill within a week). Longer is a broken or hostile answer, not a reason to stop for good.
LONGEST_CA_WAIT = 7 * 86400
CA_WORDS = 200  # characters of a CA's own text kept in a message
# Renewal information that could not be fetched is asked again after this (RFC 9773 §4.3.3).
ARI_RETRY_ON_FAILURE = dt.timedelta(hours=6)


@dataclass
class AcmeSettings:
    directory_url: str
    zone_dns: Sequence[tuple[str, int]] = ()  # empty: the zone's NS, looked up
    ca_bundle: str | None = None
    email: str | None = None
    profile: str | None = None  # one the directory offers (draft-ietf-acme-profiles)
    poll_interval: float = 0.25
    order_timeout: float = 120.0
    visibility_timeout: float = 15.0
    bad_nonce_retries: int = 10
    dns_timeout: float = 2.0


class ProfileUnknown(ValueError):
    """``--acme-profile`` names a profile the CA does not offer; the message lists those it does."""


def chosen_profile(directory: messages.Directory, wanted: str | None, url: str) -> str | None:
    """The profile to send in newOrder: ``wanted``, when the CA's directory offers it.

    A CA that offers none gets no profile field at all (RFC 8555 servers ignore unknown fields,
    but a CA without profiles would silently issue its default, not what the operator asked for):
    asking for one there is refused.
    """
    if wanted is None:
        return None
    offered = dict(getattr(directory.meta, "profiles", None) or {})
    if wanted in offered:
        return wanted
    if not offered:
        raise ProfileUnknown(
            f"the ACME CA at {url} offers no profiles (its directory has no meta.profiles); "
            "start without --acme-profile"
        )
    # The CA wrote these: quoted, cut short, at most twenty.
    listed = "; ".join(
        f"{ca_words(name, 40)} ({ca_words(offered[name], 120)})" for name in sorted(offered)[:20]
    )
    raise ProfileUnknown(f"the ACME CA at {url} offers no profile {wanted!r}; it offers: {listed}")


def fetch_directory(settings: AcmeSettings) -> messages.Directory:
    """The CA's directory, as it sends it (no account needed)."""
    response = requests.get(
        settings.directory_url,
        verify=settings.ca_bundle or True,
        timeout=10,
        headers={"User-Agent": USER_AGENT},
    )
    response.raise_for_status()
    return messages.Directory.from_json(response.json())


def check_profile(settings: AcmeSettings) -> None:
    """At start: refuse a profile the CA does not offer (ProfileUnknown). A CA out of reach now
    is only logged: the first order checks again."""
    if settings.profile is None:
        return
    try:
        directory = fetch_directory(settings)
    except (requests.RequestException, ValueError) as exc:
        log.warning("cannot read the ACME directory to check --acme-profile yet: %s", exc)
        return
    chosen_profile(directory, settings.profile, settings.directory_url)


class PatientNetwork(client.ClientNetwork):
    """A ClientNetwork that retries a rejected nonce several times, not once.

    Built on the public ``post`` (which itself retries a ``badNonce`` once, with a fresh nonce),
    so that a change inside the acme library cannot silently skip our retries.
    """

    def __init__(
        self,
        *args: Any,
        bad_nonce_retries: int = 10,
        on_bad_nonce: Callable[[], None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.bad_nonce_retries = bad_nonce_retries
        self.on_bad_nonce = on_bad_nonce

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for _ in range(self.bad_nonce_retries):
            try:
                return super().post(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce":
                    raise
                log.debug("the CA rejected our nonces; retrying with fresh ones")
                self.on_bad_nonce()
        return super().post(*args, **kwargs)

    @classmethod
    def _check_response(
        cls, response: requests.Response, content_type: str | None = None
    ) -> requests.Response:
        """A ``rateLimited`` problem with the CA's ``Retry-After``: the library raises the
        problem without the response's headers, and that header is when to ask again
        (RFC 8555 §6.6). Overrides a private method the library calls for every answer."""
        try:
            return super()._check_response(response, content_type)
        except messages.Error as error:
            if error.code != "rateLimited":
                raise
            asked = retry_after_seconds(response.headers.get("Retry-After"))
            wait = RATE_LIMITED_RETRY_AFTER if asked is None else min(asked, LONGEST_CA_WAIT)
            raise CARateLimited(
                f"the ACME CA limits this account: {ca_words(error.detail or error.code)}",
                math.ceil(wait),
            ) from None


class ReplacingOrder(messages.NewOrder):
    """newOrder with RFC 9773's ``replaces``: the ARI certificate ID of the certificate the
    order renews (the acme library's NewOrder does not carry it)."""

    replaces: str | None = josepy.field("replaces", omitempty=True)


def ari_cert_id(certificate: x509.Certificate) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(the serial's DER content)."""
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = certificate.serial_number
    # DER's INTEGER content: big-endian, with a leading zero byte when the top bit is set.
    serial_der = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    encode = josepy.b64.b64encode
    return f"{encode(aki.key_identifier).decode()}.{encode(serial_der).decode()}"


class AcmeIssuer:
    name = "acme"
    requires_csr_names = True
    names_replaced = True

    def __init__(
        self,
        store: Store,
        settings: AcmeSettings,
        secret: bytes,
        zone: str,
        metrics: CloudMetrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or CloudMetrics()
        self.settings = settings
        self.secret = secret
        self.zone = zone
        self._client: client.ClientV2 | None = None
        self._client_lock = threading.Lock()
        self._profile: str | None = None

    # --- the order ---------------------------------------------------------------------------

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        scope: str,
        replacing: x509.Certificate | None = None,
    ) -> Issued:
        started = time.monotonic()
        deadline = started + self.settings.order_timeout
        acme = self._translate(self._account_client)
        replaces = self._replaces(acme, replacing)
        order = self._translate(lambda: self._new_order(acme, scope, csr, replaces))
        pending = [a for a in order.authorizations if a.body.status == messages.STATUS_PENDING]
        values = [self._dns01_value(acme, authz) for authz in pending]
        records = self._publish(scope, values)
        try:
            self._wait_until_visible(challenge_name(scope, self.zone), set(values))
            for authz in pending:
                challenge = self._dns_challenge(authz)
                self._translate(
                    lambda c=challenge: acme.answer_challenge(c, c.response(acme.net.key))
                )
            for authz in pending:
                self._translate(lambda a=authz: self._poll_authorization(acme, a, deadline))
            order = self._translate(lambda: self._finalize(acme, order, deadline))
        finally:
            self._unpublish(records)
        issued = self._issued_from(order.fullchain_pem, acme)
        log.info("ACME order for scope %s done in %.2f s", scope, time.monotonic() - started)
        return issued

    @staticmethod
    def _replaces(acme: client.ClientV2, replacing: x509.Certificate | None) -> str | None:
        """The ``replaces`` of a renewal order: only to a CA that offers renewal information
        (RFC 9773 §5), and never for a certificate that has expired (its renewal is a new
        order, not a replacement)."""
        if replacing is None or "renewalInfo" not in acme.directory.to_partial_json():
            return None
        if replacing.not_valid_after_utc <= dt.datetime.now(dt.UTC):
            return None
        try:
            return ari_cert_id(replacing)
        except x509.ExtensionNotFound:
            return None

    def _new_order(
        self,
        acme: client.ClientV2,
        scope: str,
        csr: x509.CertificateSigningRequest,
        replaces: str | None = None,
    ) -> messages.OrderResource:
        """An order for exactly the scope's two names, whatever the CSR says.

        Written here rather than ``ClientV2.new_order``, which takes its identifiers from the
        CSR. Every authorization the CA hands back must be for the scope's base name (a
        wildcard's authorization is for its base name too): anything else is refused before a
        single value is published.
        """
        base = names.base_name(scope, self.zone)
        identifiers = [
            messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
            for name in names.certificate_names(scope, self.zone)
        ]
        new_nonce = acme.directory["newNonce"]
        response = acme.net.post(
            acme.directory["newOrder"],
            ReplacingOrder(identifiers=identifiers, profile=self._profile, replaces=replaces),
            new_nonce_url=new_nonce,
        )
        body = messages.Order.from_json(response.json())
        authorizations = []
        for url in body.authorizations:
            authz = messages.Authorization.from_json(
                acme.net.post(url, None, new_nonce_url=new_nonce).json()
            )
            if authz.identifier.value.lower().rstrip(".") != base:
                raise IssuanceError(
                    f"the CA asked to validate {authz.identifier.value!r}, which this order "
                    f"(for {base}) did not ask for"
                )
            authorizations.append(messages.AuthorizationResource(body=authz, uri=url))
        return messages.OrderResource(
            body=body,
            uri=response.headers.get("Location"),
            authorizations=authorizations,
            csr_pem=csr.public_bytes(serialization.Encoding.PEM),
        )

    @staticmethod
    def _dns_challenge(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
        for challenge in authz.body.challenges:
            if isinstance(challenge.chall, challenges.DNS01):
                return challenge
        raise IssuanceError(f"the CA offers no dns-01 challenge for {authz.body.identifier.value}")

    def _dns01_value(self, acme: client.ClientV2, authz: messages.AuthorizationResource) -> str:
        # A wildcard's identifier is its base name: both share _acme-challenge.<scope>.<zone>,
        # the one name the DNS answers for a scope (checked in _new_order).
        return self._dns_challenge(authz).chall.validation(acme.net.key)

    def _poll_authorization(
        self, acme: client.ClientV2, authz: messages.AuthorizationResource, deadline: float
    ) -> None:
        while True:
            updated, response = acme.poll(authz)
            status = updated.body.status
            if status == messages.STATUS_VALID:
                return
            if status != messages.STATUS_PENDING:
                raise IssuanceError(_authorization_problem(updated))
            self._sleep_until_next_poll(acme, response, deadline)

    def _finalize(
        self, acme: client.ClientV2, order: messages.OrderResource, deadline: float
    ) -> messages.OrderResource:
        order = acme.begin_finalization(order)
        while True:
            body = order.body
            if body.status == messages.STATUS_VALID and body.certificate:
                response = acme.net.post(
                    body.certificate, None, new_nonce_url=acme.directory["newNonce"]
                )
                return order.update(fullchain_pem=response.text)
            if body.status == messages.STATUS_INVALID:
                detail = ca_words(body.error.detail) if body.error else "no reason given"
                raise IssuanceError(f"the CA refused the order: {detail}")
            response = acme.net.post(order.uri, None, new_nonce_url=acme.directory["newNonce"])
            order = order.update(body=messages.Order.from_json(response.json()))
            if order.body.status in (
                messages.STATUS_PROCESSING,
                messages.STATUS_READY,
                messages.STATUS_PENDING,
            ):
                self._sleep_until_next_poll(acme, response, deadline)

    def _sleep_until_next_poll(
        self, acme: client.ClientV2, response: requests.Response, deadline: float
    ) -> None:
        # Honour the CA's Retry-After, but never wait less than our own short interval.
        wanted = acme.retry_after(response, 0)
        seconds = max(self.settings.poll_interval, (wanted - dt.datetime.now()).total_seconds())
        if time.monotonic() + seconds > deadline:
            raise IssuanceError("the CA did not finish the order in time")
        time.sleep(seconds)

    def _issued_from(self, fullchain_pem: str, acme: client.ClientV2) -> Issued:
        certificates = pki.certificates_from_pem(fullchain_pem)
        if not certificates:
            raise IssuanceError("the CA returned no certificate")
        leaf = certificates[0]
        chain_pem = "".join(pki.to_pem(c) for c in certificates[1:])
        return Issued(leaf=leaf, chain_pem=chain_pem, advice=self._advice(acme, leaf))

    def renewal_advice(self, leaf: x509.Certificate) -> RenewalAdvice:
        """The CA's renewal information of ``leaf`` now, for the cloud's maintenance round."""
        try:
            acme = self._translate(self._account_client)
        except (IssuerUnavailable, IssuanceError) as exc:
            log.warning("renewal information unavailable: %s", exc)
            return RenewalAdvice(next_check=dt.datetime.now(dt.UTC) + ARI_RETRY_ON_FAILURE)
        return self._advice(acme, leaf)

    @staticmethod
    def _advice(acme: client.ClientV2, leaf: x509.Certificate) -> RenewalAdvice:
        """A time in the CA's suggested window (RFC 9773), and when to ask again; NO_ADVICE from
        a CA that offers no renewal information."""
        if "renewalInfo" not in acme.directory.to_partial_json():
            return NO_ADVICE
        now = dt.datetime.now(dt.UTC)
        try:
            suggested, next_check = acme.renewal_time(leaf.public_bytes(serialization.Encoding.PEM))
        # OverflowError: a Retry-After too far for a datetime (a broken CA).
        except (acme_errors.Error, requests.RequestException, ValueError, OverflowError) as exc:
            log.warning("renewal information unavailable: %s", ca_words(exc))
            return RenewalAdvice(next_check=now + ARI_RETRY_ON_FAILURE)
        latest = now + dt.timedelta(seconds=LONGEST_CA_WAIT)
        renew_after = _aware(suggested)
        if renew_after is not None and renew_after >= leaf.not_valid_after_utc:
            # Not advice a box can follow (a broken CA): the cloud's own rule renews it in time.
            log.warning("the CA suggests renewing after the certificate expires; not followed")
            renew_after = None
        return RenewalAdvice(renew_after, min(_aware(next_check) or latest, latest))

    # --- the challenge records ---------------------------------------------------------------

    def _publish(self, scope: str, values: list[str]) -> list[int]:
        """Write every value at once (a wildcard and its base share one name); return row ids."""
        expires = dt.datetime.now(dt.UTC) + CHALLENGE_LIFETIME
        with self.store.transaction() as session:
            rows = [
                ChallengeRecord(scope=scope, value=value, expires_at=expires) for value in values
            ]
            session.add_all(rows)
            session.flush()
            return [row.id for row in rows]

    def _unpublish(self, ids: list[int]) -> None:
        if not ids:
            return
        try:
            with self.store.transaction() as session:
                session.execute(delete(ChallengeRecord).where(ChallengeRecord.id.in_(ids)))
        except Exception:  # the expiry still removes them from DNS; the answer must go out
            log.exception("could not remove challenge records %s", ids)

    def _wait_until_visible(self, name: str, values: set[str]) -> None:
        if not values:
            return
        servers = list(self.settings.zone_dns) or zone_servers(self.zone)
        deadline = time.monotonic() + self.settings.visibility_timeout
        for server in servers:
            for transport in ("udp", "tcp"):
                while not values <= self._txt_values(name, server, transport):
                    if time.monotonic() > deadline:
                        raise IssuanceError(
                            f"the challenge for {name} did not appear on the zone's DNS "
                            f"server {server[0]}:{server[1]} ({transport}); is lanlock dns "
                            "running on the same store?"
                        )
                    time.sleep(0.1)

    def _txt_values(self, name: str, server: tuple[str, int], transport: str) -> set[str]:
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        send = dns.query.udp if transport == "udp" else dns.query.tcp
        try:
            answer = send(query, server[0], port=server[1], timeout=self.settings.dns_timeout)
        except (dns.exception.DNSException, OSError):
            return set()
        return {
            b"".join(rdata.strings).decode("ascii", "replace")
            for rrset in answer.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        }

    # --- the account -------------------------------------------------------------------------

    def _account_client(self) -> client.ClientV2:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> client.ClientV2:
        key, uri = self._account_key()
        net = PatientNetwork(
            josepy.JWKEC(key=key),
            alg=josepy.ES256,
            user_agent=USER_AGENT,
            verify_ssl=self.settings.ca_bundle or True,  # type: ignore[arg-type]
            bad_nonce_retries=self.settings.bad_nonce_retries,
            on_bad_nonce=self.metrics.bad_nonce_retries.inc,
        )
        directory = client.ClientV2.get_directory(self.settings.directory_url, net)
        try:
            self._profile = chosen_profile(
                directory, self.settings.profile, self.settings.directory_url
            )
        except ProfileUnknown as exc:  # the CA changed its profiles since the cloud started
            raise IssuanceError(str(exc)) from None
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.settings.email, terms_of_service_agreed=True
        )
        try:
            account = acme.new_account(registration)
        except acme_errors.ConflictError as existing:  # this key is already registered
            # The library queries with ``onlyReturnExisting`` set on the body it is given: without
            # one (None) every process after the first that registered the key failed here.
            known = messages.RegistrationResource(
                uri=existing.location, body=messages.Registration()
            )
            account = acme.query_registration(known)
        net.account = account
        if account.uri != uri:
            self._remember_account_uri(account.uri)
        return acme

    def _account_key(self) -> tuple[ec.EllipticCurvePrivateKey, str | None]:
        """The one account key, made once and shared by every replica through the store."""
        url = self.settings.directory_url
        with self.store.transaction() as session:
            record = session.get(AcmeAccount, url)
        if record is None:
            key = pki.new_private_key()
            try:
                with self.store.transaction() as session:
                    session.add(
                        AcmeAccount(
                            directory_url=url,
                            key_encrypted=pki.encrypt_private_key(key, self.secret),
                        )
                    )
                return key, None
            except IntegrityError:  # another replica made it first: use theirs
                with self.store.transaction() as session:
                    record = session.get(AcmeAccount, url)
        assert record is not None
        key = pki.decrypt_private_key(record.key_encrypted, self.secret)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IssuanceError("the stored ACME account key is not an EC key")
        return key, record.account_uri

    def _remember_account_uri(self, uri: str) -> None:
        with self.store.transaction() as session:
            record = session.get(AcmeAccount, self.settings.directory_url)
            if record is not None:
                record.account_uri = uri

    # --- errors -------------------------------------------------------------------------------

    def _translate(self, call: Callable[[], T]) -> T:
        """Run one step; map the CA's failures to "try later" (503) or "refused" (a refusal)."""
        try:
            return call()
        except (requests.ConnectionError, requests.Timeout) as exc:
            self._client = None  # reconnect (and re-read the directory) next time
            raise IssuerUnavailable(
                f"cannot reach the ACME CA: {type(exc).__name__}", UNAVAILABLE_RETRY_AFTER
            ) from None
        except messages.Error as exc:
            if exc.code == "serverInternal":
                raise IssuerUnavailable(
                    f"the ACME CA is failing: {ca_words(exc.detail or exc.code)}",
                    UNAVAILABLE_RETRY_AFTER,
                ) from None
            raise IssuanceError(
                f"the ACME CA refused: {ca_words(exc.code, 40)}: {ca_words(exc.detail)}"
            ) from None
        except acme_errors.ValidationError as exc:
            raise IssuanceError(
                "; ".join(_authorization_problem(a) for a in exc.failed_authzrs)
            ) from None
        except acme_errors.ClientError as exc:
            response = exc.args[0] if exc.args else None
            if isinstance(response, requests.Response) and response.status_code >= 500:
                raise IssuerUnavailable(
                    f"the ACME CA answered HTTP {response.status_code}", UNAVAILABLE_RETRY_AFTER
                ) from None
            raise IssuanceError(f"the ACME exchange failed: {ca_words(exc)}") from None


def ca_words(text: object, limit: int = CA_WORDS) -> str:
    """What a CA wrote, for a message a box, a log or an operator reads: cut to ``limit``
    characters and quoted (``repr``: control characters escaped), so that no CA can write
    escape sequences, line breaks or megabytes into them."""
    return repr(str(text)[:limit])


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    """The acme library's times are naive local time (``datetime.now()``); ours are UTC."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC)


def _authorization_problem(authz: messages.AuthorizationResource) -> str:
    identifier = authz.body.identifier.value
    for challenge in authz.body.challenges:
        if challenge.error is not None:
            return f"validation of {identifier} failed: {ca_words(challenge.error.detail)}"
    return f"validation of {identifier} ended {authz.body.status}"


def challenge_name(scope: str, zone: str) -> str:
    """Where the DNS answers a scope's DNS-01 values (the only name it answers them at)."""
    return f"_acme-challenge.{names.base_name(scope, zone)}"


def zone_servers(zone: str) -> list[tuple[str, int]]:
    """The zone's authoritative servers from its NS records, as the public DNS has them."""
    try:
        hosts = [str(r.target) for r in dns.resolver.resolve(zone, "NS")]
        return [(str(dns.resolver.resolve(h, "A")[0]), 53) for h in hosts]
    except dns.exception.DNSException as exc:
        raise IssuerUnavailable(
            f"cannot look up the NS of {zone} ({exc}); give the servers with --zone-dns HOST:PORT",
            60,
        ) from None
