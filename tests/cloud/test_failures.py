"""The cloud under failure and behind TLS: it answers with a status, it never crashes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from lanlock.cloud.models import cloud_store
from tests.boxes import Customer, TestBox
from tests.realparts import POSTGRES_URL
from tests.servers import (
    free_port,
    fresh_store_url,
    lanlock_command,
    make_tls_files,
    start_cloud,
)


def test_store_gone_gives_503_with_retry_after_and_the_cloud_survives(tmp_path):
    with fresh_store_url("postgres", tmp_path) as url:
        cloud = start_cloud(url, tmp_path / "data")
        try:
            store = cloud_store(url, pool_size=1)
            customer = Customer.create(store)
            store.dispose()
            box = TestBox(cloud.url)
            assert box.ask(customer).result
            drop_database(url)
            for _ in range(3):
                response = box.post_body(box_body(box, customer))
                assert response.status_code == 503
                assert int(response.headers["Retry-After"]) > 0
                assert "store" in response.json()["detail"]
            health = httpx.get(cloud.url + "/healthz")
            assert health.status_code == 503
            assert cloud.process.poll() is None
            assert "Traceback" not in cloud.log.read_text()
        finally:
            cloud.stop()


def box_body(box: TestBox, customer: Customer) -> bytes:
    from lanlock.box.cloud_client import signed_body

    return signed_body(box.device_key, box.payload(customer))


def drop_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_cloud_over_tls_is_verified_by_the_box(tmp_path):
    tls = make_tls_files(tmp_path)
    with fresh_store_url("sqlite", tmp_path) as url:
        cloud = start_cloud(url, tmp_path / "data", tls=tls)
        try:
            store = cloud_store(url, pool_size=1)
            customer = Customer.create(store)
            store.dispose()
            ask = box_request(
                tmp_path / "box", cloud.url, customer.db_uuid, customer.code, "--json"
            )
            trusted = run([*ask, "--cloud-ca", str(tls.ca)])
            assert trusted.returncode == 0, trusted.stderr
            assert json.loads(trusted.stdout)["state"] == "valid"
            untrusted = run(ask)
            assert untrusted.returncode == 1
            shown = json.loads(untrusted.stdout)
            assert shown["code"] == "ERR_IOT_HTTPS_LOAD_REQUEST_EXCEPTION"
            assert "CERTIFICATE_VERIFY_FAILED" in shown["detail"]
        finally:
            cloud.stop()


def test_box_refuses_plain_http_to_a_cloud_off_loopback(tmp_path):
    result = run(box_request(tmp_path, "http://192.0.2.1:8700", "u", "c"))
    assert result.returncode == 2
    assert "https://" in result.stderr
    assert "Traceback" not in result.stderr


def test_closed_port_gives_request_exception(tmp_path):
    result = run(box_request(tmp_path, f"http://127.0.0.1:{free_port()}", "u", "c", "--json"))
    assert result.returncode == 1
    assert json.loads(result.stdout)["code"] == "ERR_IOT_HTTPS_LOAD_REQUEST_EXCEPTION"


def box_request(data: Path, cloud: str, db_uuid: str, code: str, *extra: str) -> list[str]:
    return lanlock_command(
        "box",
        "request",
        *("--data", str(data), "--cloud", cloud, "--db-uuid", db_uuid, "--code", code, *extra),
    )


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)
