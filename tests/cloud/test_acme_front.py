"""ARI and the CA's ``rateLimited``, end to end: the cloud orders from Debian's pebble through
lanlock's DNS, with :mod:`tests.acme_front` in between for what pebble 2.4 does not do (renewal
information, a rate-limit answer). The newOrder bodies are read as the cloud signed them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import select, update

from lanlock import pki
from lanlock.cloud.issuers.acme import ari_cert_id
from lanlock.cloud.models import AuditEntry, Box, Certificate, cloud_store
from lanlock.cloud.server import CloudSettings, build_service
from lanlock.store import Store
from tests.acme import ask_like_a_box
from tests.acme_front import AcmeFront, acme_front
from tests.box.test_lifecycle import give_credentials
from tests.boxes import Customer, TestBox
from tests.dns.running import RunningDNS, start_dns
from tests.pebble import RunningPebble, start_pebble
from tests.servers import (
    SECRET_KEY,
    ZONE,
    RunningCloud,
    fresh_store_url,
    start_box,
    start_cloud,
)

CA_RETRY_AFTER = 8


@dataclass
class FrontedSystem:
    store: Store
    dns: RunningDNS
    pebble: RunningPebble
    front: AcmeFront
    cloud: RunningCloud


@pytest.fixture
def system(tmp_path: Path) -> Iterator[FrontedSystem]:
    with fresh_store_url("sqlite", tmp_path) as url:
        store = cloud_store(url, pool_size=2)
        store.migrate()
        dns = start_dns(url, tmp_path, workers=1)
        pebble = start_pebble(tmp_path / "pebble", dns.port)
        try:
            with acme_front(pebble, tmp_path / "front") as front:
                cloud = start_cloud(
                    url,
                    tmp_path / "cloud",
                    *("--issuer", "acme", "--acme-directory", front.directory),
                    *("--acme-ca-bundle", str(front.tls.ca)),
                    *("--zone-dns", f"127.0.0.1:{dns.port}"),
                )
                try:
                    yield FrontedSystem(store, dns, pebble, front, cloud)
                finally:
                    cloud.stop()
        finally:
            pebble.stop()
            dns.stop()
            store.dispose()


def new_key(box: TestBox) -> TestBox:
    box.tls_key = pki.new_private_key()
    return box


def expired_in_the_store(store: Store, box: TestBox) -> None:
    """The scope's certificate as if it had run out: its not_after in the past, in the row and
    in the PEM (the same authority key ID and serial, so the same ARI certificate ID)."""
    with store.transaction() as session:
        scope = session.scalar(select(Box.scope).where(Box.box_id == box.box_id))
        row = session.scalars(select(Certificate).where(Certificate.scope == scope)).first()
        assert row is not None
        real = x509.load_pem_x509_certificate(row.x509_pem.encode())
        key = pki.new_private_key()
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        expired = (
            x509.CertificateBuilder()
            .subject_name(real.subject)
            .issuer_name(real.issuer)
            .public_key(real.public_key())
            .serial_number(real.serial_number)
            .not_valid_before(past - dt.timedelta(days=90))
            .not_valid_after(past)
            .add_extension(
                real.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value,
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        session.execute(
            update(Certificate)
            .where(Certificate.scope == scope)
            .values(x509_pem=pki.to_pem(expired), not_after=past, renew_after=None)
        )


def test_a_live_certificate_is_replaced_and_an_expired_one_ordered_afresh(system):
    front = system.front
    customer = Customer.create(system.store)
    box = TestBox(system.cloud.url)
    first = ask_like_a_box(box, customer).result
    assert first is not None
    assert "replaces" not in front.orders[-1]  # nothing to replace yet
    # The cloud asked the CA's renewal information of what it issued, and the box was told
    # the CA's window.
    leaf = x509.load_pem_x509_certificate(first.x509_pem.encode())
    assert ari_cert_id(leaf) in front.renewal_info_asked
    start, end = front.suggested_window()
    assert first.renew_at is not None
    assert start <= dt.datetime.fromisoformat(first.renew_at) <= end

    renewed = ask_like_a_box(new_key(box), customer).result
    assert renewed is not None
    assert front.orders[-1]["replaces"] == ari_cert_id(leaf)

    expired_in_the_store(system.store, box)
    afresh = ask_like_a_box(new_key(box), customer).result
    assert afresh is not None
    assert "replaces" not in front.orders[-1]
    named = {tuple(sorted(i["value"] for i in order["identifiers"])) for order in front.orders}
    assert len(named) == 1 and len(front.orders) == 3  # the scope's two names, each time


def test_a_ca_that_says_rate_limited_makes_every_box_wait_until_it_said(system, tmp_path):
    front = system.front
    front.rate_limited, front.retry_after = 1, CA_RETRY_AFTER
    customer = Customer.create(system.store)
    data = tmp_path / "box"
    give_credentials(data, customer)
    box = start_box(data, "--cloud", system.cloud.url, "--retry-first", "0.5", "--retry-cap", "60")
    try:
        waiting = box.wait_for(lambda s: s.get("code") == "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 503")
        assert waiting["reason"] == "ca_rate_limited"
        orders_seen = len(front.orders)
        # Another box meanwhile: told to wait by the cloud, without an order reaching the CA.
        other = ask_like_a_box(TestBox(system.cloud.url), customer)
        assert (other.status, other.refusal_code) == (503, "ca_rate_limited")
        assert other.retry_after is not None and 0 < other.retry_after <= CA_RETRY_AFTER * 1.5
        assert len(front.orders) == orders_seen
        valid = box.wait_for(lambda s: s.get("state") == "valid", timeout=90)
        assert valid["code"] is None
    finally:
        box.stop()
    with system.store.transaction() as session:
        box_id = session.scalar(select(Box.box_id).where(Box.subscription_code == customer.code))
        rows = session.execute(
            select(AuditEntry.at, AuditEntry.outcome, AuditEntry.code)
            .where(AuditEntry.box_id == box_id)
            .order_by(AuditEntry.id)
        ).all()
    limited = [row.at for row in rows if row.code == "ca_rate_limited"]
    issued = [row.at for row in rows if row.outcome == "issued"]
    assert len(limited) == 1 and len(issued) == 1, rows
    # The box came back no sooner than the CA asked, and did not ask in between.
    assert (issued[0] - limited[0]).total_seconds() >= CA_RETRY_AFTER - 0.5
    assert [row.outcome for row in rows].index("issued") == len(rows) - 1


def maintenance_round(system: FrontedSystem, tmp_path: Path, monkeypatch) -> int:
    """What a cloud's maintenance round does, six hours on: every certificate's renewal
    information asked again. Returns how many times the CA was asked."""
    with system.store.transaction() as session:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        session.execute(update(Certificate).values(ari_next_check=past))
    monkeypatch.setenv("LANLOCK_SECRET_KEY", SECRET_KEY)
    service = build_service(
        CloudSettings(
            data_dir=tmp_path / "cloud",
            store_url=system.cloud.store_url,
            zone=ZONE,
            issuer="acme",
            acme_directory=system.front.directory,
            acme_ca_bundle=str(system.front.tls.ca),
            zone_dns=(("127.0.0.1", system.dns.port),),
        ),
        system.store,
    )
    asked_before = len(system.front.renewal_info_asked)
    service.sweep()
    return len(system.front.renewal_info_asked) - asked_before


def window_in_the_past(front: AcmeFront, leaf: x509.Certificate) -> None:
    """The CA moves ``leaf``'s renewal window into the past (a revocation coming)."""
    now = dt.datetime.now(dt.UTC)
    front.windows[ari_cert_id(leaf)] = (now - dt.timedelta(hours=1), now - dt.timedelta(minutes=1))


def served_leaf(data: Path) -> x509.Certificate:
    current = (data / "tls" / "current").read_text().strip()
    return x509.load_pem_x509_certificate(
        (data / "tls" / "pairs" / current / "fullchain.pem").read_bytes()
    )


def test_a_window_the_ca_moves_into_the_past_is_fetched_on_its_schedule_and_renews_now(
    system, tmp_path, monkeypatch
):
    front = system.front
    customer = Customer.create(system.store)
    box = TestBox(system.cloud.url)
    first = ask_like_a_box(box, customer).result
    assert first is not None
    with system.store.transaction() as session:
        row = session.scalars(select(Certificate).where(Certificate.serial != "")).one()
        asked_at, next_check = row.created_at, row.ari_next_check
    # The CA's Retry-After (6 hours) is when the cloud asks again.
    assert next_check is not None
    assert abs((next_check - asked_at).total_seconds() - 21600) < 60
    # The CA pulls the renewal forward (a revocation coming); six hours pass.
    leaf = x509.load_pem_x509_certificate(first.x509_pem.encode())
    window_in_the_past(front, leaf)
    assert maintenance_round(system, tmp_path, monkeypatch) == 1
    # The box asking again with the same key is not handed the old certificate: renewed now,
    # replacing it.
    again = ask_like_a_box(box, customer).result
    assert again is not None and again.x509_pem != first.x509_pem
    assert front.orders[-1]["replaces"] == ari_cert_id(leaf)


def test_a_box_checking_in_gets_the_renewal_the_ca_pulled_forward(system, tmp_path, monkeypatch):
    front = system.front
    customer = Customer.create(system.store)
    data = tmp_path / "box"
    give_credentials(data, customer)
    box = start_box(data, "--cloud", system.cloud.url, "--check-in-interval", "2")
    try:
        box.wait_for(lambda s: s.get("state") == "valid" and s.get("code") is None)
        first = served_leaf(data)
        time.sleep(5)  # two check-ins or more: the same certificate, no order
        assert served_leaf(data).serial_number == first.serial_number
        assert len(front.orders) == 1
        window_in_the_past(front, first)
        assert maintenance_round(system, tmp_path, monkeypatch) == 1
        box.wait_for(lambda s: s.get("not_before") != first.not_valid_before_utc.isoformat())
    finally:
        box.stop()
    renewed = served_leaf(data)
    assert renewed.serial_number != first.serial_number
    assert renewed.public_key() == first.public_key()  # renewed at check-in, with its key
    assert front.orders[-1]["replaces"] == ari_cert_id(first)
    assert len(front.orders) == 2  # one renewal: the new certificate's window is its own


def test_what_a_ca_writes_in_a_rate_limit_reaches_a_box_quoted_cut_and_bounded(system):
    """A CA's problem text and Retry-After are the CA's words: a hostile or broken CA must not
    put control sequences or megabytes in a box's answer, nor park the fleet for centuries."""
    front = system.front
    front.rate_limited, front.retry_after = 1, 10**15
    front.rate_limited_detail = "\x1b[31mred\x1b[0m\r\nLocation: evil" + "x" * 10_000
    answer = ask_like_a_box(TestBox(system.cloud.url), Customer.create(system.store))
    assert (answer.status, answer.refusal_code) == (503, "ca_rate_limited")
    assert answer.retry_after is not None and answer.retry_after <= 7 * 86400
    message = answer.message or ""
    assert len(message) < 400, len(message)
    assert "\x1b" not in message and "\r" not in message and "\n" not in message
    assert "red" in message  # what the CA said is still there to read, quoted


def test_renewal_information_asked_again_within_a_week_whatever_the_ca_says(system):
    """A Retry-After of 10^15 on renewal information (a broken CA) must neither fail the
    issuance nor put the next question centuries away."""
    system.front.renewal_info_retry_after = 10**15
    result = ask_like_a_box(TestBox(system.cloud.url), Customer.create(system.store)).result
    assert result is not None
    with system.store.transaction() as session:
        next_check = session.scalars(select(Certificate.ari_next_check)).one()
    assert next_check is not None
    assert next_check <= dt.datetime.now(dt.UTC) + dt.timedelta(days=7, minutes=1)


def test_a_window_the_ca_suggests_after_expiry_is_not_followed(system):
    """A broken (or hostile) CA suggests renewing years after the certificate runs out: the box
    must still be told to renew while it is valid (the cloud's own rule), not after."""
    far = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=36500)
    system.front.any_window = (far, far + dt.timedelta(days=1))
    try:
        result = ask_like_a_box(TestBox(system.cloud.url), Customer.create(system.store)).result
    finally:
        system.front.any_window = None
    assert result is not None
    leaf = x509.load_pem_x509_certificate(result.x509_pem.encode())
    renew_at = dt.datetime.fromisoformat(result.renew_at)
    assert leaf.not_valid_before_utc < renew_at < leaf.not_valid_after_utc
