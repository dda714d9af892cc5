"""Debian's ``pebble`` (Let's Encrypt's test CA) on loopback, validating through our DNS
(docs/design.md §14)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.realparts import require
from tests.servers import (
    TLSFiles,
    free_port,
    make_tls_files,
    stop_process,
    wait_until_answering,
)


@dataclass
class RunningPebble:
    directory: str
    management: str
    tls: TLSFiles
    process: subprocess.Popen[bytes]
    log: Path

    def root_pem(self) -> str:
        """The root that signs what Pebble issues (new at every start), from /roots/0."""
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        return httpx.get(self.management + "/roots/0", verify=context, timeout=10).text

    def stop(self) -> None:
        stop_process(self.process, grace=10)


def start_pebble(
    folder: Path,
    dns_port: int,
    nonce_reject: int = 0,
    port: int | None = None,
    management: int | None = None,
    tls: TLSFiles | None = None,
) -> RunningPebble:
    """Pebble on free ports (or the given ones, to bring a stopped Pebble back at its address)."""
    binary = shutil.which("pebble")
    require(binary is not None, "Debian's pebble is not installed (apt-get install pebble)")
    folder.mkdir(parents=True, exist_ok=True)
    tls = tls or make_tls_files(folder / "tls", "localhost")
    port, management = port or free_port(), management or free_port()
    config = folder / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(tls.cert),
                    "privateKey": str(tls.key),
                    "httpPort": free_port(),
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    log = folder / "pebble.log"
    process = subprocess.Popen(
        # Always -dnsserver: without it Pebble would ask the machine's resolver, off this machine.
        [
            str(binary),
            "-config",
            str(config),
            "-dnsserver",
            f"127.0.0.1:{dns_port}",
            "-strict=false",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": str(nonce_reject),
            "PEBBLE_AUTHZREUSE": "0",
            "PATH": "/usr/bin:/bin",
        },
    )
    pebble = RunningPebble(
        f"https://localhost:{port}/dir", f"https://localhost:{management}", tls, process, log
    )
    context = ssl.create_default_context(cafile=str(tls.ca))
    wait_until_answering("pebble", process, log, pebble.directory, context, seconds=30)
    return pebble
