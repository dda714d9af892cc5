"""The TLS every lanlock server offers: TLS 1.2 and 1.3, AEAD suites only, ALPN ``http/1.1``.

Scanned from outside, as an auditor would, with Debian's ``sslscan`` (its XML read back), and
probed with Python's ``ssl``: a client that speaks only TLS 1.1, and one that offers only CBC
suites at TLS 1.2, must be refused by the server itself (its alert, or the connection closed in
the middle of the handshake: uvicorn's event loop closes without sending the alert), never by
the client's own library for want of anything to offer. A control server that allows everything
shows that each probe does connect where a server lets it, so that a refusal is the server's.
The box is scanned once it has switched from its temporary certificate to the one for its name
(the switch must carry the profile); the cloud and the console as they serve their own
``--tls-cert``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import socket
import ssl
import subprocess
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from lanlock.cloud.models import cloud_store
from lanlock.tls_profile import server_context
from tests.box.clients import start_valid_box
from tests.console.running import running_console
from tests.realparts import require
from tests.servers import (
    RunningCloud,
    TLSFiles,
    fresh_store_url,
    make_tls_files,
    running_cloud,
    start_cloud,
)

AEAD_TLS12 = re.compile(r"ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)")
AEAD_TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# Every CBC suite a TLS 1.2 client may offer, with ECDHE or RSA key exchange, SHA-1 or SHA-2 MACs.
CBC_SUITES = (
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:"
    "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:"
    "ECDHE-RSA-AES256-SHA:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA:@SECLEVEL=0"
)
ANY_SUITE = "ALL:@SECLEVEL=0"  # TLS 1.1 needs security level 0 in OpenSSL 3


@dataclass(frozen=True)
class Endpoint:
    """A TLS listener on loopback and the name a client sends it (SNI)."""

    port: int
    name: str


# --- the servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with running_cloud(tmp_path_factory.mktemp("profile-cloud")) as running:
        yield running


@pytest.fixture(scope="module")
def box(cloud: RunningCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    """A box serving the certificate for its name, switched to after its temporary one."""
    store = cloud_store(cloud.store_url, pool_size=1)
    try:
        running = start_valid_box(tmp_path_factory.mktemp("profile-box"), cloud, store)
    finally:
        store.dispose()
    yield Endpoint(running.https_port, urlsplit(running.state_file()["url"]).hostname or "")
    running.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("profile-tls"))


@pytest.fixture(scope="module")
def tls_cloud(tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles) -> Iterator[Endpoint]:
    folder = tmp_path_factory.mktemp("profile-tls-cloud")
    with fresh_store_url("sqlite", folder) as url:
        running = start_cloud(url, folder / "data", tls=tls_files)
        yield Endpoint(int(urlsplit(running.url).port or 0), "localhost")
        running.stop()


@pytest.fixture(scope="module")
def tls_console(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles
) -> Iterator[Endpoint]:
    with running_console(
        tmp_path_factory.mktemp("profile-console"),
        *("--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key)),
        verify=ssl.create_default_context(cafile=str(tls_files.ca)),
        host_name="localhost",
    ) as running:
        yield Endpoint(int(urlsplit(running.url).port or 0), "localhost")


@pytest.fixture(params=["box", "cloud", "console"])
def server(request: pytest.FixtureRequest) -> Endpoint:
    fixture = {"box": "box", "cloud": "tls_cloud", "console": "tls_console"}[request.param]
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="module")
def permissive(tls_files: TLSFiles) -> Iterator[Endpoint]:
    """The control: a server that takes TLS 1.0 to 1.3 and any suite."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: the control takes them
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers(ANY_SUITE)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    with _serving(context) as port:
        yield Endpoint(port, "localhost")


@pytest.fixture(scope="module")
def rsa_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A self-signed RSA certificate for ``localhost``: what an operator may give the cloud."""
    folder = tmp_path_factory.mktemp("profile-rsa")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    files = TLSFiles(folder / "rsa.pem", folder / "rsa.key", folder / "rsa.pem")
    files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@contextlib.contextmanager
def _serving(context: ssl.SSLContext) -> Iterator[int]:
    """Handshake with every client on a loopback port, in a thread, until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # a timeout, or a client the handshake failed
                raw, _ = listener.accept()
                with raw, context.wrap_socket(raw, server_side=True):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# --- the clients ---------------------------------------------------------------------------------


def client(
    version: ssl.TLSVersion, suites: str = ANY_SUITE, alpn: tuple[str, ...] = ()
) -> ssl.SSLContext:
    """A client of exactly one TLS version that checks no certificate: this is about protocols."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    context.set_ciphers(suites)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@dataclass(frozen=True)
class Handshake:
    version: str | None
    suite: str
    alpn: str | None


def handshake(endpoint: Endpoint, context: ssl.SSLContext) -> Handshake:
    with (
        socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=endpoint.name) as tls,
    ):
        suite = tls.cipher()
        assert suite is not None
        return Handshake(tls.version(), suite[0], tls.selected_alpn_protocol())


def assert_refused(endpoint: Endpoint, context: ssl.SSLContext, alert: str) -> None:
    """The server ended the handshake: with ``alert``, or by closing the connection."""
    with pytest.raises(ssl.SSLError) as refused:
        handshake(endpoint, context)
    assert refused.value.reason in {alert, "UNEXPECTED_EOF_WHILE_READING"}, refused.value


with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point of the probe
    warnings.simplefilter("ignore", DeprecationWarning)
    TLS11_ONLY = client(ssl.TLSVersion.TLSv1_1)
CBC_ONLY = client(ssl.TLSVersion.TLSv1_2, CBC_SUITES)


def test_the_probes_connect_where_a_server_allows_them(permissive: Endpoint) -> None:
    assert handshake(permissive, TLS11_ONLY).version == "TLSv1.1"
    done = handshake(permissive, CBC_ONLY)
    assert done.version == "TLSv1.2"
    assert not AEAD_TLS12.fullmatch(done.suite), done.suite
    offered = [s for s in CBC_ONLY.get_ciphers() if s["protocol"] != "TLSv1.3"]
    assert offered and not [s["name"] for s in offered if s["aead"]]


# --- the probes, on every server -----------------------------------------------------------------


def test_tls_1_1_is_refused(server: Endpoint) -> None:
    assert_refused(server, TLS11_ONLY, "TLSV1_ALERT_PROTOCOL_VERSION")


def test_cbc_suites_are_refused_at_tls_1_2(server: Endpoint) -> None:
    assert_refused(server, CBC_ONLY, "SSLV3_ALERT_HANDSHAKE_FAILURE")


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_tls_1_2_and_1_3_negotiate_an_aead_suite_and_http_1_1(
    server: Endpoint, version: ssl.TLSVersion
) -> None:
    done = handshake(server, client(version, alpn=("h2", "http/1.1")))
    assert done.version == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]
    assert AEAD_TLS12.fullmatch(done.suite) or done.suite in AEAD_TLS13, done.suite
    assert done.alpn == "http/1.1"


def test_an_rsa_certificate_is_served_with_ecdhe_and_aead_suites_too(rsa_files: TLSFiles) -> None:
    with _serving(server_context(rsa_files.cert, rsa_files.key)) as port:
        endpoint = Endpoint(port, "localhost")
        done = handshake(endpoint, client(ssl.TLSVersion.TLSv1_2, alpn=("http/1.1",)))
        assert_refused(endpoint, CBC_ONLY, "SSLV3_ALERT_HANDSHAKE_FAILURE")
    assert done.suite.startswith("ECDHE-RSA-") and AEAD_TLS12.fullmatch(done.suite), done.suite
    assert done.alpn == "http/1.1"


# --- the scanner ---------------------------------------------------------------------------------


def sslscan(endpoint: Endpoint, report: Path) -> ET.Element:
    """Debian's ``sslscan`` against ``endpoint``: its XML report."""
    require(shutil.which("sslscan") is not None, "Debian's sslscan is not installed")
    subprocess.run(
        [
            "sslscan",
            "--no-colour",
            f"--sni-name={endpoint.name}",
            f"--xml={report}",
            f"127.0.0.1:{endpoint.port}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return ET.parse(report).getroot()  # noqa: S314 - our own scan of our own server


def offered_versions(scan: ET.Element) -> set[str]:
    found = scan.iter("protocol")
    return {f"{p.get('type')}{p.get('version')}" for p in found if p.get("enabled") == "1"}


def accepted_suites(scan: ET.Element) -> list[tuple[str, str]]:
    return [(c.get("sslversion") or "", c.get("cipher") or "") for c in scan.iter("cipher")]


def not_aead(suite: tuple[str, str]) -> bool:
    version, name = suite
    if version == "TLSv1.2":
        return not AEAD_TLS12.fullmatch(name)
    return version != "TLSv1.3" or name not in AEAD_TLS13


def test_the_scanner_finds_tls_1_2_and_1_3_with_aead_suites_only(
    server: Endpoint, tmp_path: Path
) -> None:
    scan = sslscan(server, tmp_path / "sslscan.xml")
    assert offered_versions(scan) == {"tls1.2", "tls1.3"}  # no SSLv2, SSLv3, TLS 1.0 or 1.1
    suites = accepted_suites(scan)
    assert [s for s in suites if not_aead(s)] == []
    assert {version for version, _ in suites} == {"TLSv1.2", "TLSv1.3"}
    renegotiation = scan.find(".//renegotiation")
    assert renegotiation is not None and renegotiation.get("supported") == "0"
    assert all(h.get("vulnerable") == "0" for h in scan.iter("heartbleed"))


def test_the_scanner_finds_old_versions_and_cbc_where_a_server_offers_them(
    permissive: Endpoint, tmp_path: Path
) -> None:
    scan = sslscan(permissive, tmp_path / "sslscan.xml")
    assert {"tls1.0", "tls1.1", "tls1.2", "tls1.3"} <= offered_versions(scan)
    assert ("TLSv1.2", "ECDHE-ECDSA-AES128-SHA256") in accepted_suites(scan)


def test_the_scanned_box_serves_the_certificate_for_its_name(box: Endpoint, tmp_path: Path) -> None:
    # So the scan above saw the context the box switched to, not its temporary one.
    scan = sslscan(box, tmp_path / "sslscan.xml")
    names = scan.findtext(".//certificate/altnames") or ""
    assert "*." + box.name.split(".", 1)[1] in names, names
