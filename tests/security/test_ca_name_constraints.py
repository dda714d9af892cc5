"""Boundary: the embedded CA's root vouches for names in the zone and nothing else.

The attacker holds the CA's issuing key (stolen from a cloud's store, with its secret) and signs
a leaf for an IP address: a user who imported the lanlock root must not trust it. The root and
the intermediate permit only the zone's DNS names and exclude every IPv4 and IPv6 address; both
``cryptography``'s verifier and ``openssl verify`` must refuse the forged leaf and accept an
honest one. The CA is the one a real cloud made at its first start, read from its store.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from lanlock import pki
from lanlock.cloud.authority import load_or_create_authority
from lanlock.cloud.models import cloud_store
from tests.servers import SECRET_KEY, ZONE, running_cloud

FORGED_ADDRESSES = ["10.0.0.7", "192.168.1.1", "8.8.8.8", "127.0.0.1", "::1", "2001:db8::1"]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> pki.CertificateAuthority:
    with running_cloud(tmp_path_factory.mktemp("ca")) as cloud:
        store = cloud_store(cloud.store_url, pool_size=1)
        try:
            return load_or_create_authority(store, ZONE, SECRET_KEY.encode())
        finally:
            store.dispose()


def leaf_with(ca: pki.CertificateAuthority, san: list[x509.GeneralName]) -> x509.Certificate:
    """A leaf signed by the issuing key, in the same profile as an honest one, naming ``san``."""
    key = pki.new_private_key()
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(ca.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.intermediate_key.public_key()),
            critical=False,
        )
        .sign(ca.intermediate_key, hashes.SHA256())  # type: ignore[arg-type]
    )


def openssl_verify(ca: pki.CertificateAuthority, leaf: x509.Certificate, tmp: Path) -> str:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is part of every Debian install"
    (tmp / "root.pem").write_text(ca.root_pem)
    (tmp / "chain.pem").write_text(ca.chain_pem)
    (tmp / "leaf.pem").write_text(pki.to_pem(leaf))
    done = subprocess.run(
        [openssl, "verify", "-CAfile", "root.pem", "-untrusted", "chain.pem", "leaf.pem"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return (done.stdout + done.stderr).strip() if done.returncode else "OK"


def test_the_ca_certificates_exclude_every_address(authority):
    for cert in (authority.root, authority.intermediate):
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        assert constraints.permitted_subtrees == [x509.DNSName(ZONE)]
        assert set(constraints.excluded_subtrees or []) == {
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        }


@pytest.mark.parametrize("address", FORGED_ADDRESSES)
def test_a_leaf_for_an_address_does_not_verify(authority, address, tmp_path):
    ip = ipaddress.ip_address(address)
    forged = leaf_with(authority, [x509.IPAddress(ip)])
    verifier = (
        x509.verification.PolicyBuilder()
        .store(x509.verification.Store([authority.root]))
        .build_server_verifier(x509.IPAddress(ip))
    )
    with pytest.raises(x509.verification.VerificationError):
        verifier.verify(forged, [authority.intermediate])
    assert "error" in openssl_verify(authority, forged, tmp_path).lower()


def test_a_leaf_in_the_zone_still_verifies_both_ways(authority, tmp_path):
    host = f"10-0-0-7.{'a' * 16}.{ZONE}"
    honest = leaf_with(authority, [x509.DNSName(host)])
    pki.verify_server_chain(honest, [authority.intermediate], [authority.root], host)
    assert openssl_verify(authority, honest, tmp_path) == "OK"
