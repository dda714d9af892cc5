"""The box on ports 443 and 80 and the DNS on port 53, run as their systemd units run them: by a
user that is not root, with one capability, CAP_NET_BIND_SERVICE (tests/test_privileged_ports.py).

Run as root under ``unshare --net --mount --pid --mount-proc --fork --kill-child``. In the new
network namespace ports below 1024 are privileged, as on any host (its
``net.ipv4.ip_unprivileged_port_start`` starts at 1024 whatever the host's, and is checked), and
the box's LAN address sits on a veth link. In the new mount namespace ``/etc/resolv.conf`` names
only the DNS on 127.0.0.1:53, and every folder the user may not search on the way to what it
needs (``/root``, where pyenv or a checkout may live, pytest's 0700 temporary folders) is covered
by a tmpfs through which only that way is bound back: the user reads nothing else there, and the
host sees none of it.

A cloud runs as root on loopback. The box and the DNS run as :data:`USER` through ``setpriv``
with what their units give them (deploy/systemd/lanlock-{box,dns}.service): the environment,
``LANLOCK_HOME`` excepted (a folder of the user's own here), the capabilities, no new
privileges, umask 0077. First without the capability, when each must refuse to start and say
why; then with it. What each showed goes to ``<work>/seen.json`` for the test to judge; every
process started here dies with the namespace at the latest.

Usage: python -m tests.privileged_ports_run WORK_DIR HIDDEN_DIR
(HIDDEN_DIR: an empty folder outside WORK_DIR, where the covered folders stay reachable by root.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import httpx

from lanlock import names
from lanlock.cloud.models import cloud_store
from tests.boxes import Customer
from tests.dns.running import RunningDNS
from tests.realparts import require
from tests.servers import (
    ZONE,
    RunningBox,
    lanlock_command,
    start_cloud,
    wait_until_answering,
)
from tests.test_deploy_units import read_unit, service

USER = 65534  # nobody, and its group nogroup: any uid and gid but 0 would do
BOX_ADDRESS = "10.77.0.7"
BOX_ADDRESS6 = "fd77::7"
NO_CONSOLE_NEEDED = "http://127.0.0.1:1"  # a console URL is what makes a box "connected"
LOW_PORTS = (53, 80, 443)
WAIT = 30.0  # seconds for a part to start, or the box to get its certificate


NAMESPACES = ["unshare", "--net", "--mount", "--pid", "--mount-proc", "--fork", "--kill-child"]


def require_namespaces_and_setpriv() -> None:
    require(os.geteuid() == 0, "making network and mount namespaces needs root")
    require(
        all(shutil.which(tool) for tool in ("unshare", "setpriv", "ip", "mount")),
        "unshare, setpriv, ip or mount (util-linux, iproute2) is not installed",
    )
    probe = subprocess.run(
        [*NAMESPACES, "ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    require(probe.returncode == 0, f"namespaces cannot be made here: {probe.stderr.strip()}")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def join_the_lan() -> None:
    """Loopback, and the box's LAN address on a veth pair whose links are up."""
    ip("link", "set", "lo", "up")
    ip("link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
    ip("addr", "add", f"{BOX_ADDRESS}/24", "dev", "lan0")
    ip("link", "set", "lan1", "up")
    ip("link", "set", "lan0", "up")


def resolve_with_our_dns(work: Path) -> None:
    """The system resolver asks only 127.0.0.1:53 from now on, once, for a second."""
    resolv_conf = work / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    os.chmod(resolv_conf, 0o644)
    subprocess.run(["mount", "--bind", str(resolv_conf), "/etc/resolv.conf"], check=True)


# --- what the user may reach ------------------------------------------------------------------


def searchable(folder: Path) -> bool:
    """Whether :data:`USER` (group :data:`USER`, no other group) may search ``folder``."""
    st = folder.stat()
    bit = 0o100 if st.st_uid == USER else 0o010 if st.st_gid == USER else 0o001
    return bool(st.st_mode & bit)


def open_the_way(path: Path, hidden: Path, covered: dict[Path, Path]) -> None:
    """Make every folder above ``path`` searchable by :data:`USER`, in this mount namespace.

    A folder it may not search is covered by a tmpfs of mode 0755 (its own contents stay
    reachable by root under ``hidden``), and in it the next folder of the way, and nothing else,
    is bound back.
    """
    for depth in range(1, len(path.parts)):
        folder, child = Path(*path.parts[:depth]), path.parts[depth]
        if folder not in covered:
            if searchable(folder):
                continue
            covered[folder] = hidden / str(len(covered))
            covered[folder].mkdir()
            subprocess.run(["mount", "--rbind", str(folder), str(covered[folder])], check=True)
            tmpfs = ["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(folder)]
            subprocess.run(tmpfs, check=True)
        way, source = folder / child, covered[folder] / child
        if not way.exists():
            if source.is_dir():
                way.mkdir()
            else:
                way.touch()
            subprocess.run(["mount", "--rbind", str(source), str(way)], check=True)


def open_the_ways(home: Path, hidden: Path) -> list[str]:
    """The way to the interpreter, its libraries, lanlock and ``home``; the folders covered."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", str(hidden)], check=True)
    needed = [
        Path(sys.executable).absolute(),
        Path(sys.executable).resolve(),
        Path(sys.prefix),
        Path(sys.base_prefix),
        *(Path(entry) for entry in sys.path if entry and Path(entry).is_dir()),
        home,
    ]
    covered: dict[Path, Path] = {}
    for path in needed:
        open_the_way(path.absolute(), hidden, covered)
        open_the_way(path.resolve(), hidden, covered)
    return sorted(map(str, covered))


# --- running as the user, as the units do -----------------------------------------------------


def unit_settings(role: str, home: Path) -> tuple[dict[str, str], list[str]]:
    """The environment (with ``home`` as LANLOCK_HOME) and the capabilities the role's unit
    gives it, as setpriv names them."""
    unit = read_unit(role)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANLOCK_")}
    env.update(
        a.split("=", 1) for value in service(unit, "Environment") for a in shlex.split(value)
    )
    env |= {"LANLOCK_HOME": str(home), "HOME": str(home)}
    caps = [
        c.lower().removeprefix("cap_")
        for v in service(unit, "AmbientCapabilities")
        for c in v.split()
    ]
    bounding = [
        c.lower().removeprefix("cap_")
        for v in service(unit, "CapabilityBoundingSet")
        for c in v.split()
    ]
    assert caps == bounding == ["net_bind_service"], (role, caps, bounding)
    assert service(unit, "NoNewPrivileges") == ["yes"] and service(unit, "UMask") == ["0077"]
    return env, caps


def as_user(caps: list[str]) -> list[str]:
    """setpriv as :data:`USER`, with ``caps`` and no other capability, and no new privileges."""
    allowed = "".join(f",+{cap}" for cap in caps)
    return [
        "setpriv",
        f"--reuid={USER}",
        f"--regid={USER}",
        "--clear-groups",
        f"--inh-caps=-all{allowed}",
        f"--ambient-caps=-all{allowed}",
        f"--bounding-set=-all{allowed}",
        "--no-new-privs",
        "--",
    ]


def run_as_user(env: dict[str, str], caps: list[str], *args: str) -> dict[str, Any]:
    """A command of lanlock run to its end by the user: its status and what it wrote."""
    done = subprocess.run(
        [*as_user(caps), *lanlock_command(*args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    return {"returncode": done.returncode, "output": done.stdout + done.stderr}


def start_as_user(
    env: dict[str, str], caps: list[str], log: Path, *args: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*as_user(caps), *lanlock_command(*args)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def process_status(pid: int) -> dict[str, str]:
    """The ids and capability sets of a running process, from /proc."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    wanted = (
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
    )
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines) if k in wanted}


def socket_owners() -> dict[str, list[int]]:
    """The uids of the sockets listening (TCP) or bound (UDP) on each of :data:`LOW_PORTS`, by
    ``<table>:<port>``, from /proc/net."""
    owners: dict[str, list[int]] = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            port, listening = int(fields[1].rsplit(":", 1)[1], 16), fields[3] in ("0A", "07")
            if port in LOW_PORTS and listening:
                owners.setdefault(f"{table}:{port}", []).append(int(fields[7]))
    return owners


def owners_of(folder: Path) -> list[int]:
    """Every owner of ``folder`` and of what is in it."""
    return sorted({p.lstat().st_uid for p in [folder, *folder.rglob("*")]})


# --- the DNS ----------------------------------------------------------------------------------


def start_dns(env: dict[str, str], caps: list[str], work: Path) -> RunningDNS:
    process = start_as_user(env, caps, work / "dns.log", "dns", "serve")
    return RunningDNS(53, "", process, work / "dns.log").answering(WAIT)


def dns_answers(name: str) -> dict[str, Any]:
    """The A answer for ``name`` over UDP and over TCP, asked at the box's LAN address, port 53."""
    seen: dict[str, Any] = {}
    for transport, ask in (("udp", dns.query.udp), ("tcp", dns.query.tcp)):
        try:
            reply = ask(dns.message.make_query(name, "A"), BOX_ADDRESS, port=53, timeout=5)
        except Exception as exc:
            seen[transport] = {"error": repr(exc)}
            continue
        seen[transport] = {
            "rcode": dns.rcode.to_text(reply.rcode()),
            "authoritative": bool(reply.flags & dns.flags.AA),
            "addresses": sorted(str(rdata) for rrset in reply.answer for rdata in rrset),
        }
    return seen


# --- the box ----------------------------------------------------------------------------------


def start_box(
    env: dict[str, str], caps: list[str], home: Path, work: Path, addresses: list[str]
) -> tuple[RunningBox, dict[str, Any]]:
    """The box as the user, until it has a valid certificate for ``addresses``; its state."""
    log = work / f"box-{len(list(work.glob('box-*.log')))}.log"
    process = start_as_user(env, caps, log, "box", "run")
    box = RunningBox(home / "box", 80, 443, process, log)
    try:
        wait_until_answering(
            "the box", process, log, box.http_url + "/status.json", any_status=True, seconds=WAIT
        )
        state = box.wait_for(
            lambda s: s.get("state") == "valid" and s.get("addresses") == addresses, timeout=WAIT
        )
    except BaseException:
        box.stop()
        raise
    return box, state


def fetched(url: str, root: Path) -> dict[str, Any]:
    """``GET url`` as a client on the LAN makes it: the name resolved by the system (our DNS),
    HTTPS verified against the cloud's root alone (SNI and Host: the name)."""
    verify = ssl.create_default_context(cafile=str(root))
    try:
        answer = httpx.get(url, verify=verify, timeout=10)
    except httpx.HTTPError as exc:
        return {"error": repr(exc)}
    return {"status": answer.status_code, "text": answer.text}


def served_certificate(url: str, root: Path) -> dict[str, Any]:
    """The certificate served at ``url``'s address and port, verified for its name."""
    parts = urlsplit(url)
    address = str(names.parse_host_name(parts.hostname or "", ZONE).address)
    context = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection((address, parts.port or 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        certificate = tls.getpeercert()
        return {
            "address": address,
            "port": tls.getpeername()[1],
            "names": [name for _, name in certificate.get("subjectAltName", ())],
        }


def observe_box(box: RunningBox, state: dict[str, Any], root: Path) -> dict[str, Any]:
    return {
        "state": state,
        "process": process_status(box.process.pid),
        "sockets": socket_owners(),
        "data_owners": owners_of(box.data_dir),
        "https": {url: fetched(url, root) for url in state["urls"]},
        "certificates": {url: served_certificate(url, root) for url in state["urls"]},
        "http": {
            address: fetched(
                f"http://[{address}]/" if ":" in address else f"http://{address}/", root
            )
            for address in state["addresses"]
        },
    }


def main(work: Path, hidden: Path) -> None:
    os.umask(0o077)  # the units' UMask
    join_the_lan()
    seen: dict[str, Any] = {
        "unprivileged_port_start": int(
            Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()
        ),
    }
    # Others may search ``work`` (not list it), so that it is not covered: what is written in it
    # stays there. ``home`` is the user's own, as a unit's state directory.
    os.chmod(work, 0o711)  # noqa: S103
    home = work / "home"
    home.mkdir()
    os.chown(home, USER, USER)
    seen["covered"] = open_the_ways(home, hidden)
    resolve_with_our_dns(work)
    box_env, box_caps = unit_settings("box", home)
    dns_env, dns_caps = unit_settings("dns", home)
    store_url, root = f"sqlite:///{work / 'store.db'}", work / "root.pem"
    with contextlib.ExitStack() as started:
        cloud = start_cloud(store_url, work / "cloud")
        started.callback(cloud.stop)
        root.write_text(cloud.root_pem())
        store = cloud_store(store_url, pool_size=1)
        try:
            customer = Customer.create(store)
        finally:
            store.dispose()
        box_env |= {"LANLOCK_BOX_CLOUD": cloud.url}
        dns_env |= {"LANLOCK_ZONE": ZONE, "LANLOCK_DNS_WORKERS": "1"}
        # What an admin does, as the units' user: the box's credentials, and the store the DNS
        # reads by default (the cloud's default store, LANLOCK_HOME/cloud/cloud.db), made.
        seen["credentials"] = run_as_user(
            box_env,
            [],
            "box",
            "credentials",
            "--db-uuid",
            customer.db_uuid,
            "--code",
            customer.code,
            "--console",
            NO_CONSOLE_NEEDED,
        )
        seen["migrate"] = run_as_user(dns_env, [], "cloud", "migrate")

        # Without the capability: each refuses to start, and says why.
        seen["refused"] = {
            "box": run_as_user(box_env, [], "box", "run"),
            "box_https": run_as_user(
                box_env | {"LANLOCK_BOX_HOST": "::", "LANLOCK_BOX_HTTP_PORT": "8080"},
                [],
                "box",
                "run",
            ),
            "dns": run_as_user(dns_env, [], "dns", "serve"),
        }

        # With it, as the units run them.
        server = start_dns(dns_env, dns_caps, work)
        started.callback(server.stop)
        seen["dns_process"] = process_status(server.process.pid)
        box, state = start_box(box_env, box_caps, home, work, [BOX_ADDRESS])
        host = urlsplit(state["url"]).hostname or ""
        seen["box"] = observe_box(box, state, root)
        seen["dns"] = dns_answers(host)
        seen["system_resolver"] = sorted(
            {i[4][0] for i in socket.getaddrinfo(host, 443, socket.AF_INET)}
        )
        box.stop()

        # An IPv6 address too: the unit listens on every address, one URL per address.
        ip("addr", "add", f"{BOX_ADDRESS6}/64", "dev", "lan0", "nodad")
        box, state = start_box(box_env, box_caps, home, work, [BOX_ADDRESS, BOX_ADDRESS6])
        started.callback(box.stop)
        seen["box_every_address"] = observe_box(box, state, root)
        seen["box_log"] = "\n".join(
            p.read_text(errors="replace") for p in sorted(work.glob("box-*.log"))
        )
        seen["dns_log"] = server.log_text()
    (work / "seen.json").write_text(json.dumps(seen, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
