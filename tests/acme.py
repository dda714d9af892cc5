"""A whole ACME set-up for tests and benchmarks: Pebble validating through lanlock dns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lanlock import names, pki
from lanlock.box.cloud_client import CloudAnswer
from tests.boxes import Customer, TestBox
from tests.dns.running import RunningDNS, start_dns
from tests.pebble import RunningPebble, start_pebble
from tests.servers import RunningCloud, start_cloud


@dataclass
class AcmeSystem:
    store_url: str
    dns: RunningDNS
    pebble: RunningPebble
    cloud: RunningCloud

    def stop(self) -> None:
        self.cloud.stop()
        self.pebble.stop()
        self.dns.stop()


def start_system(
    tmp: Path, store_url: str, nonce_reject: int = 0, pebble_dns: int | None = None
) -> AcmeSystem:
    dns = start_dns(store_url, tmp, workers=1)
    pebble = start_pebble(tmp / "pebble", pebble_dns or dns.port, nonce_reject)
    cloud = start_cloud(
        store_url,
        tmp / "cloud",
        "--issuer",
        "acme",
        "--acme-directory",
        pebble.directory,
        "--acme-ca-bundle",
        str(pebble.tls.ca),
        "--zone-dns",
        f"127.0.0.1:{dns.port}",
    )
    return AcmeSystem(store_url, dns, pebble, cloud)


def ask_like_a_box(box: TestBox, customer: Customer) -> CloudAnswer:
    """Ask as the box does: nameless CSR first; then, given the scope, a CSR that names it."""
    answer = box.ask(customer)
    if answer.refusal_code == "invalid_csr" and answer.hint:
        wanted = names.certificate_names(answer.hint["scope"], answer.hint["zone"])
        answer = box.ask(customer, csr_pem=pki.csr_pem(pki.build_csr(box.tls_key, wanted)))
    return answer
