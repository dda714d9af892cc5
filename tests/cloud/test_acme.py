"""Publicly trusted certificates: the ACME issuer against Debian's Pebble, DNS-01 via our DNS."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lanlock import names, pki
from lanlock.box.cloud_client import read_answer, signed_body
from lanlock.cloud.models import AuditEntry, ChallengeRecord, cloud_store
from tests.acme import AcmeSystem, ask_like_a_box, start_system
from tests.box.test_lifecycle import give_credentials, host_of, served_certificate
from tests.boxes import Customer, TestBox, post_together
from tests.dns.running import publish, start_dns
from tests.pebble import RunningPebble, start_pebble
from tests.servers import RunningBox, fresh_store_url, start_box, start_cloud
from tests.threads import assert_overlapping


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[AcmeSystem]:
    tmp = tmp_path_factory.mktemp("acme")
    with fresh_store_url("sqlite", tmp) as url:
        running = start_system(tmp, url)
        yield running
        running.stop()


def challenge_rows(store_url: str) -> int:
    store = cloud_store(store_url, pool_size=1)
    try:
        with store.transaction() as session:
            return session.scalar(select(func.count()).select_from(ChallengeRecord))
    finally:
        store.dispose()


def pebble_roots(pebble: RunningPebble, tmp: Path) -> Path:
    path = tmp / "pebble-root.pem"
    path.write_text(pebble.root_pem())
    return path


def test_box_gets_a_pebble_certificate_validated_through_lanlock_dns(system, tmp_path):
    store = cloud_store(system.store_url, pool_size=1)
    give_credentials(tmp_path / "box", Customer.create(store))
    store.dispose()
    box: RunningBox = start_box(tmp_path / "box", "--cloud", system.cloud.url)
    try:
        state = box.wait_for(lambda s: s["state"] == "valid", timeout=90)
        host = host_of(state["url"])
        assert host.startswith("10-0-0-7.") and host.endswith(".iot.test")
        root = pebble_roots(system.pebble, tmp_path)
        leaf = served_certificate(box.https_port, host, root)  # verified with Pebble's root only
        assert "Pebble" in leaf.issuer.rfc4514_string()
    finally:
        box.stop()
    assert challenge_rows(system.store_url) == 0  # nothing left behind in DNS


def test_same_key_reuses_and_the_chain_verifies(system, tmp_path):
    store = cloud_store(system.store_url, pool_size=1)
    customer = Customer.create(store)
    store.dispose()
    box = TestBox(system.cloud.url)
    first = ask_like_a_box(box, customer)
    assert first.result, first
    again = ask_like_a_box(box, customer)
    assert again.result.x509_pem == first.result.x509_pem
    leaf = pki.certificate_from_pem(first.result.x509_pem)
    chain = pki.certificates_from_pem(first.result.chain_pem)
    root = pki.certificate_from_pem(system.pebble.root_pem())
    scope = first.result.scope
    pki.verify_server_chain(leaf, chain, [root], f"10-0-0-7.{scope}.iot.test")


def test_wrong_txt_value_seen_by_the_ca_gives_issuance_failed_and_no_trace(tmp_path):
    """Pebble asks a second DNS server whose store holds a wrong value for every challenge."""
    (tmp_path / "main").mkdir()
    (tmp_path / "liar").mkdir()
    with (
        fresh_store_url("sqlite", tmp_path / "main") as url,
        fresh_store_url("sqlite", tmp_path / "liar") as liar_url,
    ):
        liar = start_dns(liar_url, tmp_path / "liar", workers=1)
        system = start_system(tmp_path, url, pebble_dns=liar.port)
        try:
            store = cloud_store(url, pool_size=1)
            customer = Customer.create(store)
            store.dispose()
            box = TestBox(system.cloud.url)
            first = box.ask(customer)
            scope = first.hint["scope"]
            publish(liar_url, f"_acme-challenge.{scope}.iot.test", "wrong-value")
            wanted = names.certificate_names(scope, "iot.test")
            answer = box.ask(customer, csr_pem=pki.csr_pem(pki.build_csr(box.tls_key, wanted)))
            assert answer.refusal_code == "issuance_failed", answer
            assert "validation" in answer.message
            assert challenge_rows(url) == 0
        finally:
            system.stop()
            liar.stop()


def test_dns_stopped_gives_issuance_failed_and_no_trace(tmp_path):
    with fresh_store_url("sqlite", tmp_path) as url:
        system = start_system(tmp_path, url)
        try:
            store = cloud_store(url, pool_size=1)
            customer = Customer.create(store)
            store.dispose()
            system.dns.stop()
            answer = ask_like_a_box(TestBox(system.cloud.url), customer)
            assert answer.refusal_code == "issuance_failed", answer
            assert "did not appear" in answer.message
            assert challenge_rows(url) == 0
        finally:
            system.stop()


def test_issuance_survives_pebble_rejecting_half_of_the_nonces(tmp_path):
    with fresh_store_url("sqlite", tmp_path) as url:
        system = start_system(tmp_path, url, nonce_reject=50)
        try:
            store = cloud_store(url, pool_size=1)
            customer = Customer.create(store)
            store.dispose()
            for _ in range(3):
                assert ask_like_a_box(TestBox(system.cloud.url), customer).result
            metrics = system.cloud.metrics()
            retries = re.search(r"^lanlock_acme_bad_nonce_retries_total (\S+)$", metrics, re.M)
            assert retries and float(retries.group(1)) > 0  # the CA really did reject nonces
        finally:
            system.stop()


def test_pebble_down_gives_503_and_the_box_recovers(tmp_path):
    with fresh_store_url("sqlite", tmp_path) as url:
        system = start_system(tmp_path, url)
        try:
            system.pebble.stop()
            store = cloud_store(url, pool_size=1)
            give_credentials(tmp_path / "box", Customer.create(store))
            store.dispose()
            box = start_box(
                tmp_path / "box",
                "--cloud",
                system.cloud.url,
                "--retry-first",
                "1",
                "--retry-cap",
                "2",
            )
            try:
                state = box.wait_for(
                    lambda s: s.get("code") == "ERR_IOT_HTTPS_LOAD_REQUEST_STATUS 503"
                )
                assert state["state"] == "error"
                port = int(re.search(r":(\d+)/dir", system.pebble.directory).group(1))
                management = int(system.pebble.management.rsplit(":", 1)[1])
                system.pebble = start_pebble(
                    tmp_path / "pebble2",
                    system.dns.port,
                    port=port,
                    management=management,
                    tls=system.pebble.tls,
                )
                box.wait_for(lambda s: s["state"] == "valid" and s["code"] is None, timeout=60)
            finally:
                box.stop()
        finally:
            system.stop()


RACERS = 30  # requests for one scope, half to each cloud


def test_two_clouds_on_postgres_place_one_order_for_one_scope(tmp_path):
    with fresh_store_url("postgres", tmp_path) as url:
        system = start_system(tmp_path, url)
        second = start_cloud(
            url,
            tmp_path / "cloud2",
            "--issuer",
            "acme",
            "--acme-directory",
            system.pebble.directory,
            "--acme-ca-bundle",
            str(system.pebble.tls.ca),
            "--zone-dns",
            f"127.0.0.1:{system.dns.port}",
        )
        try:
            store = cloud_store(url, pool_size=1)
            customer = Customer.create(store)
            box = TestBox(system.cloud.url)
            scope = box.ask(customer).hint["scope"]
            wanted = names.certificate_names(scope, "iot.test")
            csr = pki.csr_pem(pki.build_csr(box.tls_key, wanted))
            bodies = [
                signed_body(box.device_key, box.payload(customer, csr_pem=csr))
                for _ in range(RACERS)
            ]
            orders_before = system.pebble.log.read_text().count("/order-plz")
            clouds = [system.cloud, second] * (RACERS // 2)
            responses, spans = post_together(
                [(c.url, b) for c, b in zip(clouds, bodies, strict=True)], seconds=180
            )
            assert_overlapping(spans)
            answers = [read_answer(r) for r in responses]
            assert all(a.result for a in answers), answers
            assert len({a.result.x509_pem for a in answers}) == 1
            orders = system.pebble.log.read_text().count("/order-plz") - orders_before
            assert orders == 1
            with store.transaction() as session:
                issued = session.scalar(
                    select(func.count())
                    .select_from(AuditEntry)
                    .where(AuditEntry.box_id == box.box_id, AuditEntry.outcome == "issued")
                )
            assert issued == 1
            store.dispose()
        finally:
            second.stop()
            system.stop()
