"""HSTS: the box asks browsers to come back over HTTPS only where its certificate proves it.

``Strict-Transport-Security`` goes on the answers the box sends over HTTPS under its name while
it serves a valid certificate for that name, and nowhere else: not over plain HTTP (where it
means nothing and could be forged), not by IP (the certificate does not name it), and never
with the temporary certificate, which no browser trusts; a browser that took the header there
would refuse the box outright, without the warning it can click through, for as long as the
header said.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509

from lanlock import errors
from lanlock.cloud.models import cloud_store
from tests.box.clients import by_ip, by_name, cloud_root, start_valid_box
from tests.servers import RunningBox, RunningCloud, lanlock_command, running_cloud

HSTS = "strict-transport-security"
ROUTES = ("/", "/status.json", "/static/box.css", "/no-such-page")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("hsts-cloud")) as running:
        yield running


@pytest.fixture(scope="module")
def root(cloud: RunningCloud) -> Path:
    return cloud_root(cloud)


def valid_box(cloud: RunningCloud, data: Path) -> RunningBox:
    store = cloud_store(cloud.store_url, pool_size=1)
    try:
        return start_valid_box(data, cloud, store)
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def box(cloud: RunningCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    running = valid_box(cloud, tmp_path_factory.mktemp("hsts-box"))
    yield running
    running.stop()


def name_of(box: RunningBox) -> str:
    """The box's HTTPS name and port, as a browser sends them in ``Host``."""
    return urlsplit(box.state_file()["url"]).netloc


def https_unverified(box: RunningBox, host: str) -> httpx.Client:
    # As a browser whose user clicked through the warning: the certificate is not checked.
    return httpx.Client(
        base_url=f"https://127.0.0.1:{box.https_port}",
        headers={"Host": host},
        timeout=30,
        verify=False,  # noqa: S501
    )


def test_https_by_name_with_the_valid_certificate_carries_hsts(box: RunningBox, root: Path) -> None:
    with by_name(box, root) as https:
        for route in ROUTES:
            answer = https.get(route)
            # A day, no includeSubDomains, no preload (src/lanlock/box/web.py says why).
            assert answer.headers.get(HSTS) == "max-age=86400", route


def test_plain_http_never_carries_hsts(box: RunningBox) -> None:
    with by_ip(box) as http:
        for host in (f"127.0.0.1:{box.http_port}", name_of(box)):
            for route in ROUTES:
                answer = http.get(route, headers={"Host": host})
                assert answer.status_code != 421, (host, route)
                assert HSTS not in answer.headers, (host, route)


def test_https_by_ip_carries_no_hsts(box: RunningBox) -> None:
    with https_unverified(box, f"127.0.0.1:{box.https_port}") as https:
        for route in ROUTES:
            assert HSTS not in https.get(route).headers, route


def test_the_temporary_certificate_never_carries_hsts(
    cloud: RunningCloud, root: Path, tmp_path: Path
) -> None:
    box = valid_box(cloud, tmp_path / "box")
    try:
        host = name_of(box)
        with by_name(box, root) as https:
            assert HSTS in https.get("/").headers
        # Disconnected, the box serves a new temporary certificate, and still knows its name.
        subprocess.run(
            lanlock_command("box", "disconnect", "--data", str(box.data_dir)),
            check=True,
            capture_output=True,
        )
        box.wait_for(lambda s: s.get("code") == errors.CHECK_NO_SERVER)
        with https_unverified(box, host) as https:
            for route in ROUTES:
                answer = https.get(route)
                assert answer.status_code != 421, route  # the name still counts as the box's
                assert HSTS not in answer.headers, route
        served = x509.load_pem_x509_certificate(
            ssl.get_server_certificate(("127.0.0.1", box.https_port)).encode()
        )
        assert served.subject.rfc4514_string().endswith(".lanlock.invalid")  # the temporary one
    finally:
        box.stop()
