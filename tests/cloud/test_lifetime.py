"""``lanlock cloud serve --lifetime``: the embedded CA's leaf lifetime, any length from a minute
to 397 days, given with its unit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from lanlock.cli import main
from lanlock.cloud.models import cloud_store
from tests.boxes import Customer, TestBox
from tests.servers import running_cloud


def serve_with(lifetime: str, tmp_path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["cloud", "serve", "--data", str(tmp_path), "--lifetime", lifetime]
    )
    return result.exit_code, result.output


def test_a_lifetime_without_its_unit_is_refused_with_an_example(tmp_path):
    code, output = serve_with("90", tmp_path)
    assert code == 2
    assert "'90' is not a duration: give a number and a unit, like 90d, 36h, 10m" in output
    assert not (tmp_path / "cloud.db").exists()


def test_a_lifetime_beyond_what_browsers_accept_is_refused(tmp_path):
    code, output = serve_with("400d", tmp_path)
    assert code == 2
    assert "400d is outside 1m to 397d" in output


def test_ten_minute_certificates_are_issued_for_ten_minutes(tmp_path):
    with running_cloud(tmp_path, "--lifetime", "10m") as cloud:
        store = cloud_store(cloud.store_url, pool_size=1)
        try:
            customer = Customer.create(store)
        finally:
            store.dispose()
        asked = dt.datetime.now(dt.UTC)
        answer = TestBox(cloud.url).ask(customer)
        leaf = x509.load_pem_x509_certificate(answer.result.x509_pem.encode())
        left = leaf.not_valid_after_utc - asked
        assert dt.timedelta(minutes=9, seconds=50) < left < dt.timedelta(minutes=10, seconds=10)


def test_the_answer_says_when_to_renew(tmp_path):
    """Without the CA's advice, two thirds into the certificate's life (lanlock.renewal): the
    box follows this time, it does not guess."""
    with running_cloud(tmp_path, "--lifetime", "6d") as cloud:
        store = cloud_store(cloud.store_url, pool_size=1)
        try:
            customer = Customer.create(store)
        finally:
            store.dispose()
        result = TestBox(cloud.url).ask(customer).result
        leaf = x509.load_pem_x509_certificate(result.x509_pem.encode())
        start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        assert dt.datetime.fromisoformat(result.renew_at) == start + (end - start) * 2 / 3
