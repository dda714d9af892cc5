#!/usr/bin/env python3
"""A fleet rehearsal (issue #13, item 3): a herd of real boxes against a replicated cloud, with
a replica killed and PostgreSQL restarted while the herd runs.

Starts, all on loopback and all thrown away at the end (also on Ctrl-C or an error):

* a private PostgreSQL cluster (``initdb`` into a temporary folder, ``pg_ctl`` on a free port,
  its socket in that folder; as the ``postgres`` user when run as root) — never the system's;
* ``--replicas`` cloud replicas (``python -m lanlock cloud serve``) on that store, sharing one
  ``LANLOCK_SECRET_KEY``, behind Debian's HAProxy (``option httpchk GET /healthz``, short
  ``inter``/``fall``/``rise``, ``retries`` and ``option redispatch``);
* two DNS replicas (``python -m lanlock dns serve``) on the same store;
* ``--boxes`` simulated boxes, each with its own data folder, device key and settings file,
  paired the way pairing writes ``config.toml``, each driven by the box's own
  ``lanlock.box.lifecycle.CertificateManager``: its ``check()``, its CSRs, its signed requests,
  its back-off and its reading of ``Retry-After``. The boxes' first checks are spread evenly over
  ``--seconds``; a box that fails waits what its manager says (``next_check_at``) and tries
  again, until the deadline (``--seconds`` + ``--grace``). A pool of ``--workers`` threads runs
  the checks; each request is timed by wrapping ``post_x509``, the one function the manager
  sends with.

During the herd one replica is killed with SIGKILL (at ``--kill-at`` of the window) and started
again ``--down`` seconds later, and PostgreSQL is restarted once (``pg_ctl restart -m fast``, at
``--pg-restart-at``). Afterwards it checks, against the store (raw SQL on table names) and the
boxes' own folders:

* every box holds a certificate that verifies against the embedded CA's root for
  ``<address-label>.<scope>.<zone>`` now, and it is the one the store holds for its scope;
* no subscription has more boxes than its quota; the over-booked subscription (``--overbooked``
  boxes for half as many slots) ends with exactly its quota served, the rest refused;
* no scope was issued two certificates, and no box was audited as issued twice;
* no nonce was accepted twice: every accepted nonce is in ``seen_nonces`` once, and accepted
  requests sent again (re-signed, same nonce) to every replica and through HAProxy are refused;
* each DNS replica answers the boxes' names with their LAN addresses;
* the chaos happened: the replica died of SIGKILL and came back, PostgreSQL restarted.

It prints answers per second, latency p50/p99 from each request's scheduled send time, errors
by kind as the boxes saw them, retries, the longest wait of any box, and the checks;
``--json FILE`` writes every figure. Run from the repository root::

    .venv/bin/python bench/fleet.py --boxes 2000 --seconds 60 --replicas 2
    .venv/bin/python bench/fleet.py --short            # the suite's size: 80 boxes in 10 s

The exit status is 0 when every check passed, 1 when one failed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import heapq
import ipaddress
import json
import logging
import math
import os
import pwd
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "src", ROOT, Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import cloud_x509  # noqa: E402  (bench/cloud_x509.py: the machine, CPU and percentile helpers)
import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rdatatype  # noqa: E402
import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from lanlock import errors, jws, names, pki  # noqa: E402
from lanlock.box import lifecycle  # noqa: E402
from lanlock.box.identity import load_or_create_device_key  # noqa: E402
from lanlock.box.lifecycle import Backoff, CertificateManager, Environment  # noqa: E402
from lanlock.box.settings import change_config, load_config  # noqa: E402
from lanlock.box.tls_store import TLSStore  # noqa: E402

ZONE = "iot.test"
SECRET_KEY = "fleet-secret-key-0123456789abcdef"  # noqa: S105 (shared by the throw-away replicas)
say = cloud_x509.say
percentile = cloud_x509.percentile
ms = cloud_x509.ms
free_port = cloud_x509.free_port


# --- options ------------------------------------------------------------------------------------


@dataclass
class Options:
    boxes: int = 2000
    seconds: float = 60.0
    replicas: int = 2
    cloud_workers: int = 1  # workers per replica: SIGKILL of a replica then kills all it serves
    dns_replicas: int = 2
    customers: int = 4  # the boxes are spread over this many subscriptions, each exactly full
    overbooked: int = 10  # boxes of one more subscription that has room for half of them
    workers: int = 64  # box checks running at once
    retry_first: float = 5.0  # the box's --retry-first (its default is 30 s)
    retry_cap: float = 60.0  # the box's --retry-cap (its default is 1 h)
    grace: float = 300.0  # seconds after the window until the boxes give up
    kill_at: float = 0.3  # fraction of the window: SIGKILL one replica
    down: float = 2.0  # seconds the killed replica stays down
    pg_restart_at: float = 0.6  # fraction of the window: pg_ctl restart -m fast
    replays: int = 200  # accepted requests sent again (re-signed with the same nonce)
    dns_names: int = 20  # box names resolved through each DNS replica afterwards
    keep: bool = False  # keep the work folder (logs, box folders) for a look afterwards


# The suite's size (tests/cloud/test_fleet_rehearsal.py): the same blows, early in a short window.
SHORT: dict[str, Any] = {
    "boxes": 80, "seconds": 12.0, "kill_at": 0.2, "down": 1.0, "pg_restart_at": 0.5,
    "overbooked": 6, "customers": 2, "retry_first": 2.0, "retry_cap": 10.0, "grace": 90.0,
    "workers": 32, "replays": 40, "dns_names": 5,
}  # fmt: skip


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Service:
    """One process we started (its own session: a terminal's Ctrl-C reaches only us)."""

    name: str
    command: list[str]
    log: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> int | None:
        """SIGKILL; the exit status (-9)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(10)

    def stop(self, grace: float = 15.0) -> None:
        if not self.running():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


def wait_healthy(service: Service, url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not service.running():
            raise RuntimeError(f"{service.name} exited at start:\n{service.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"{service.name} did not answer {url} within {seconds:g} s:\n{service.tail()}"
    )


# --- PostgreSQL: a private throw-away cluster --------------------------------------------------


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (the newest), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()],
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def missing_parts() -> list[str]:
    """What the rehearsal needs and this machine lacks, each with how to get it."""
    missing = []
    if postgres_bin() is None:
        missing.append("PostgreSQL's server binaries (initdb, pg_ctl: apt-get install postgresql)")
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("the postgres user (PostgreSQL refuses to run as root)")
        if not shutil.which("runuser"):
            missing.append("runuser (util-linux), to run PostgreSQL as postgres")
    if not shutil.which("haproxy"):
        missing.append("haproxy (apt-get install haproxy)")
    return missing


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` on a free loopback port; the data and the socket in a temporary
    folder of its own, removed by :meth:`stop`. Run as ``postgres`` when we are root."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server binaries are not installed")
        self.bin = bindir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="lanlock-fleet-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://lanlock@127.0.0.1:{self.port}/lanlock"

    def _run(self, *args: str, timeout: float = 120) -> tuple[int, str]:
        """One PostgreSQL command; its exit status and output. The output goes through a file,
        not a pipe: a postmaster that pg_ctl starts keeps its parent's descriptors open."""
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        with tempfile.TemporaryFile() as out:
            done = subprocess.run(
                command,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,  # the postmaster outlives pg_ctl: keep Ctrl-C off it
                check=False,
            )
            out.seek(0)
            return done.returncode, out.read().decode(errors="replace")

    def _checked(self, *args: str) -> float:
        started = time.monotonic()
        status, output = self._run(*args)
        if status != 0:
            raise RuntimeError(f"{args[0]} failed ({status}):\n{output}\n{self.log_tail()}")
        return time.monotonic() - started

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def start(self) -> None:
        self._checked(
            "initdb", "-D", str(self.data), "-U", "lanlock", "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.folder} -c max_connections=300 "
            "-c shared_buffers=64MB"
        )
        self._checked(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
            "start",
        )  # fmt: skip
        self.started = True
        engine = create_engine(
            f"postgresql+psycopg://lanlock@127.0.0.1:{self.port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        try:
            with engine.connect() as conn:
                conn.execute(text("CREATE DATABASE lanlock"))
        finally:
            engine.dispose()

    def restart_fast(self) -> float:
        """``pg_ctl restart -m fast``; the seconds it took."""
        return self._checked(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", "60",
            "restart",
        )  # fmt: skip

    def stop(self) -> None:
        if self.started:
            try:
                status, _ = self._run(
                    "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60
                )
            except subprocess.TimeoutExpired:
                status = -1
            if status != 0:
                self._kill_postmaster()
            self.started = False
        shutil.rmtree(self.folder, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """pg_ctl could not stop it: SIGKILL the postmaster we started (its pid file's first
        line), whose children then exit."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            time.sleep(1)


# --- HAProxy ------------------------------------------------------------------------------------


# HAProxy's own 503 (every replica failing its health check) tells a box when to come back, as
# the cloud's own 503s do, spread over 1-10 s so that the boxes do not return as one wave.
HTTP_ERROR_503 = (
    "    http-error status 503 content-type application/json"
    ' string \'{"detail": "no cloud replica is up; try again later"}\''
    ' hdr Retry-After "%[rand(10),add(1)]"'
)
HAPROXY_CFG = """\
global
    log stdout format raw local0 notice
    maxconn 4096

defaults
    mode http
    log global
    option dontlog-normal
    option log-health-checks
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout queue 30s
    retries 3
    option redispatch
{http_error}

frontend fleet
    bind 127.0.0.1:{port}
    default_backend clouds

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend clouds
    balance roundrobin
    option forwardfor
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
{servers}
"""


def haproxy_config(port: int, stats_port: int, replica_ports: list[int]) -> str:
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(replica_ports))
    return HAPROXY_CFG.format(
        port=port, stats_port=stats_port, servers=servers, http_error=HTTP_ERROR_503
    )


def haproxy_stats(stats_port: int) -> dict[str, dict[str, Any]]:
    """Per replica: sessions, 5xx answers, health-check downs and seconds down (HAProxy's CSV)."""
    try:
        csv = httpx.get(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=5).text
    except httpx.HTTPError:
        return {}
    lines = csv.lstrip("# ").splitlines()
    heads = lines[0].split(",")
    found: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        row = dict(zip(heads, line.split(","), strict=False))
        if row.get("pxname") == "clouds" and row.get("svname") not in ("FRONTEND",):
            found[row["svname"]] = {
                k: row.get(k) for k in ("status", "stot", "hrsp_2xx", "hrsp_5xx", "chkdown",
                                        "downtime", "wredis", "wretr", "econ", "eresp")
            }  # fmt: skip
    return found


# --- the fleet's servers -----------------------------------------------------------------------


class Fleet:
    """PostgreSQL, the cloud replicas, HAProxy and the DNS replicas; :meth:`close` stops them."""

    def __init__(self, work: Path, opts: Options) -> None:
        self.work = work
        self.opts = opts
        self.pg = PrivatePostgres()
        self.replicas: list[Service] = []
        self.replica_ports: list[int] = []
        self.dns: list[Service] = []
        self.dns_ports: list[int] = []
        self.haproxy: Service | None = None
        self.port = 0
        self.stats_port = 0
        self.env = cloud_x509.lanlock_env(
            LANLOCK_SECRET_KEY=SECRET_KEY, LANLOCK_CLOUD_METRICS_TOKEN=SECRET_KEY
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def replica_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.replica_ports[i]}"

    def start(self) -> None:
        self.pg.start()
        say(
            f"  PostgreSQL {self.pg.bin.parent.name} on 127.0.0.1:{self.pg.port} ({self.pg.folder})"
        )
        for i in range(self.opts.replicas):
            port = free_port()
            data = self.work / "clouds" / f"r{i}"
            data.mkdir(parents=True)
            command = [
                sys.executable, "-m", "lanlock", "cloud", "serve", "--store", self.pg.url,
                "--data", str(data), "--port", str(port), "--zone", ZONE,
                "--trusted-proxy", "127.0.0.1/32", "--workers", str(self.opts.cloud_workers),
            ]  # fmt: skip
            replica = Service(f"cloud r{i}", command, data / "cloud.log", self.env)
            self.replicas.append(replica)
            self.replica_ports.append(port)
            replica.start()
            if i == 0:  # the first one migrates the store and makes the CA; then the others
                wait_healthy(replica, self.replica_url(0) + "/healthz")
        for i, replica in enumerate(self.replicas):
            wait_healthy(replica, self.replica_url(i) + "/healthz")
        say(f"  {len(self.replicas)} cloud replicas on ports {self.replica_ports}")
        self.port, self.stats_port = free_port(), free_port()
        config = self.work / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, self.stats_port, self.replica_ports))
        check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects its configuration:\n{check.stdout}{check.stderr}")
        self.haproxy = Service("haproxy", ["haproxy", "-f", str(config), "-db"],
                               self.work / "haproxy.log")  # fmt: skip
        self.haproxy.start()
        wait_healthy(self.haproxy, self.url + "/healthz")
        say(f"  HAProxy on {self.url} (stats on {self.stats_port})")
        for i in range(self.opts.dns_replicas):
            port = free_port()
            command = [
                sys.executable, "-m", "lanlock", "dns", "serve", "--store", self.pg.url,
                "--zone", ZONE, "--port", str(port), "--workers", "1",
            ]  # fmt: skip
            server = Service(f"dns d{i}", command, self.work / f"dns-{i}.log", self.env)
            server.start()
            self.dns.append(server)
            self.dns_ports.append(port)
        for server, port in zip(self.dns, self.dns_ports, strict=True):
            wait_dns(server, port)
        say(f"  {len(self.dns)} DNS replicas on ports {self.dns_ports}")

    def restart_replica(self, i: int) -> None:
        self.replicas[i].start()
        wait_healthy(self.replicas[i], self.replica_url(i) + "/healthz", seconds=90)

    def close(self) -> None:
        for service in [*self.dns, *([self.haproxy] if self.haproxy else []), *self.replicas]:
            with contextlib.suppress(Exception):
                service.stop()
        self.pg.stop()


def dns_ask(port: int, name: str, rdtype: str = "A", timeout: float = 1.0) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)


def wait_dns(server: Service, port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not server.running():
            raise RuntimeError(f"{server.name} exited at start:\n{server.tail()}")
        with contextlib.suppress(dns.exception.Timeout, OSError):
            dns_ask(port, ZONE, "SOA", timeout=0.3)
            return
    raise RuntimeError(f"{server.name} did not answer within {seconds:g} s:\n{server.tail()}")


# --- customers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    db_uuid: str
    code: str
    quota: int
    overbooked: bool = False


def seed(fleet: Fleet, sizes: list[int], overbooked: int) -> list[Customer]:
    """Production databases with one in-progress subscription each, exactly as big as its boxes
    (a slot taken twice would leave a box without one); plus one over-booked subscription. Made
    with the vendor's admin commands (``lanlock cloud database add``, ``subscription add``)."""
    plans = [(size, False) for size in sizes]
    if overbooked:
        plans.append((max(1, overbooked // 2), True))
    made = [Customer(str(uuid.uuid4()), "SUB-" + uuid.uuid4().hex, q, o) for q, o in plans]
    common = ["--store", fleet.pg.url, "--data", str(fleet.work / "admin")]
    run_together(
        [["cloud", "database", "add", c.db_uuid, "--name", "fleet", "--kind", "production",
          *common] for c in made]
    )  # fmt: skip
    run_together(
        [["cloud", "subscription", "add", c.code, "--database", c.db_uuid, "--state",
          "in_progress", "--iot-boxes", str(c.quota), *common] for c in made]
    )  # fmt: skip
    return made


def run_together(commands: list[list[str]]) -> None:
    """``lanlock <command>`` for each, all at once; RuntimeError when one fails."""
    env = {**os.environ, "LANLOCK_SECRET_KEY": SECRET_KEY}
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "lanlock", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        for command in commands
    ]
    failed = []
    for command, process in zip(commands, running, strict=True):
        out, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            failed.append(f"lanlock {' '.join(command[:3])}: {out.decode(errors='replace')}")
    if failed:
        raise RuntimeError("\n".join(failed))


# --- the boxes ----------------------------------------------------------------------------------


@dataclass
class Sent:
    """One request a box sent, as it saw it."""

    box: int
    due: float  # when the box meant to send it (its schedule or its back-off), monotonic
    sent: float
    answered: float
    kind: str  # ok | refused:<code> | http_<status> | <exception class>
    nonce: str
    payload: dict[str, Any]


@dataclass
class SimBox:
    index: int
    folder: Path
    address: str
    customer: Customer
    manager: CertificateManager
    device_key: Any
    tls: TLSStore
    start_at: float = 0.0  # seconds into the window of its first check
    checks: int = 0
    valid_at: float | None = None  # monotonic
    refused: str | None = None  # a refusal the box will not get past (the over-booked ones)
    last_code: str | None = None

    @property
    def box_id(self) -> str:
        return pki.box_id_for(self.device_key.public_key())


_local = threading.local()
_sent: list[Sent] = []
_original_post = lifecycle.post_x509


def _timed_post_x509(client: Any, cloud_url: str, device_key: Any, payload: dict[str, Any]) -> Any:
    """``post_x509`` as the manager calls it, timed and recorded (the herd's only wrapper)."""
    box: SimBox | None = getattr(_local, "box", None)
    due = getattr(_local, "due", None)
    _local.due = None  # a second request in the same check is due when it leaves
    sent = time.monotonic()
    kind = "?"
    try:
        answer = _original_post(client, cloud_url, device_key, payload)
    except httpx.HTTPError as exc:
        kind = type(exc).__name__
        raise
    else:
        if answer.status != 200:
            kind = f"http_{answer.status}"
        elif answer.result is None:
            kind = f"refused:{answer.refusal_code}"
        else:
            kind = "ok"
        return answer
    finally:
        if box is not None:
            now = time.monotonic()
            nonce = str(payload.get("nonce"))
            _sent.append(Sent(box.index, due or sent, sent, now, kind, nonce, payload))


def make_box(index: int, folder: Path, customer: Customer, cloud_url: str, opts: Options,
             verify: ssl.SSLContext) -> SimBox:  # fmt: skip
    """A box at first start, already paired: its device key, and ``config.toml`` as pairing
    writes it (console, cloud, database UUID and subscription code)."""
    folder.mkdir(parents=True)
    address = str(ipaddress.IPv4Address("10.0.0.0") + index + 1)
    device_key = load_or_create_device_key(folder)

    def paired(config: Any) -> None:
        config.console_url = "http://127.0.0.1:9"  # never asked: the herd does not report
        config.cloud_url = cloud_url
        config.db_uuid = customer.db_uuid
        config.enterprise_code = customer.code

    change_config(folder, paired)
    env: dict[str, Any] = {
        "addresses": lambda: (address,),
        "https_port": 443,
        "cloud_url": lambda: cloud_url,
        "cloud_verify": verify,  # one context for all, as a box builds one for --cloud-ca
        "device_key": device_key,
    }
    tls = TLSStore(folder / "tls")
    manager = CertificateManager(  # as the agent builds it
        Environment(**env),
        load_config=functools.partial(load_config, folder),
        update_config=functools.partial(change_config, folder),
        on_install=lambda _pair: None,
        backoff=Backoff(opts.retry_first, opts.retry_cap),
        tls=tls,
    )
    return SimBox(index, folder, address, customer, manager, device_key, tls)


def make_boxes(
    work: Path, customers: list[Customer], opts: Options, cloud_url: str
) -> list[SimBox]:
    verify = ssl.create_default_context()
    plan = [c for c in customers if not c.overbooked for _ in range(c.quota)]
    plan += [c for c in customers if c.overbooked for _ in range(opts.overbooked)]
    random.Random(13).shuffle(plan)
    boxes = [
        make_box(i, work / "boxes" / f"b{i:05d}", customer, cloud_url, opts, verify)
        for i, customer in enumerate(plan)
    ]
    for box in boxes:
        box.start_at = opts.seconds * box.index / max(1, len(boxes))
    return boxes


@dataclass
class Herd:
    boxes: list[SimBox]
    opts: Options
    started: float = 0.0
    deadline: float = 0.0
    gave_up: list[int] = field(default_factory=list)
    crashed: Counter[str] = field(default_factory=Counter)
    _heap: list[tuple[float, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: int = 0
    _done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Every box checks at its time, then as its manager says, until valid or the deadline."""
        self.started = self.started or time.monotonic()
        self.deadline = self.started + self.opts.seconds + self.opts.grace
        self._open = len(self.boxes)
        self._heap = [(self.started + b.start_at, b.index) for b in self.boxes]
        heapq.heapify(self._heap)
        if not self.boxes:
            return
        pool = ThreadPoolExecutor(self.opts.workers, thread_name_prefix="box")
        try:
            while not self._done.is_set() and not self.stop.is_set():
                now = time.monotonic()
                with self._lock:
                    while self._heap and self._heap[0][0] <= now:
                        due, index = heapq.heappop(self._heap)
                        pool.submit(self._check, self.boxes[index], due)
                    wait = self._heap[0][0] - now if self._heap else 0.05
                self._done.wait(min(max(wait, 0.001), 0.05))
        finally:
            pool.shutdown(wait=not self.stop.is_set(), cancel_futures=True)

    def _check(self, box: SimBox, due: float) -> None:
        _local.box, _local.due = box, due
        box.checks += 1
        try:
            state = box.manager.check()
        except Exception as exc:  # the box's own code failing is a finding, not a stop
            self.crashed[f"{type(exc).__name__}: {exc}"[:200]] += 1
            state = None
        finally:
            _local.box = _local.due = None
        now = time.monotonic()
        if state is not None and state.state == "valid" and not state.code:
            box.valid_at = now
            return self._finish()
        box.last_code = (state.reason or state.code) if state else "crashed"
        if (
            state is not None
            and box.customer.overbooked
            and state.reason == errors.BOX_QUOTA_EXCEEDED
        ):
            box.refused = state.reason
            return self._finish()
        again = box.manager.next_check_at if state is not None else now + self.opts.retry_first
        if again > self.deadline:
            self.gave_up.append(box.index)
            return self._finish()
        with self._lock:
            heapq.heappush(self._heap, (again, box.index))
        return None

    def _finish(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self._done.set()


# --- chaos and the DNS prober ---------------------------------------------------------------


@dataclass
class Chaos:
    fleet: Fleet
    opts: Options
    started: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None

    def _at(self, seconds: float) -> None:
        delay = self.started + seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _event(self, what: str, **extra: Any) -> None:
        self.events.append({"t": round(time.monotonic() - self.started, 2), "event": what, **extra})
        say(f"  [{self.events[-1]['t']:7.2f} s] {what} {extra or ''}")

    def run(self) -> None:
        try:
            self._at(self.opts.kill_at * self.opts.seconds)
            victim = self.fleet.replicas[0]
            pid = victim.pid
            status = victim.kill()
            self._event("cloud r0 killed (SIGKILL)", pid=pid, exit_status=status)
            time.sleep(self.opts.down)
            self._event("cloud r0 starting again")
            self.fleet.restart_replica(0)
            self._event("cloud r0 healthy again", pid=self.fleet.replicas[0].pid)
            self._at(self.opts.pg_restart_at * self.opts.seconds)
            self._event("PostgreSQL fast restart")
            took = self.fleet.pg.restart_fast()
            self._event("PostgreSQL back", restart_s=round(took, 2))
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            self._event("chaos failed", error=self.failure)


def dns_probe(ports: list[int], stop: threading.Event, tally: Counter[str]) -> None:
    """Ask each DNS replica a box name twice a second while the herd runs."""
    name = names.host_name("10.0.0.1", "a" * 16, ZONE)
    while not stop.wait(0.5):
        for port in ports:
            try:
                answer = dns_ask(port, name, timeout=1.0)
                ok = any(r.rdtype == dns.rdatatype.A for r in answer.answer)
                tally["answered" if ok else "wrong"] += 1
            except (dns.exception.DNSException, OSError):
                tally["no answer"] += 1


# --- checks -------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def check_all(fleet: Fleet, boxes: list[SimBox], herd: Herd, chaos: Chaos,
              opts: Options) -> list[Check]:  # fmt: skip
    engine = create_engine(fleet.pg.url)
    try:
        with engine.connect() as conn:
            return [
                check_certificates(conn, boxes),
                check_overbooked(boxes),
                check_quota(conn),
                check_scopes(conn, boxes),
                check_nonces(conn, fleet, boxes, opts),
                check_dns(fleet, boxes, opts),
                check_chaos(fleet, chaos),
                check_herd(herd),
            ]
    finally:
        engine.dispose()


def check_certificates(conn: Any, boxes: list[SimBox]) -> Check:
    """Every box that should have one holds a certificate that verifies for its name now, and
    the store's certificate for its scope is that one."""
    root_pem = conn.execute(text("SELECT root_pem FROM certificate_authorities")).scalar_one()
    root = pki.certificate_from_pem(root_pem)
    stored = {
        scope: serial
        for scope, serial in conn.execute(text("SELECT scope, serial FROM certificates"))
    }
    now = pki.utcnow()
    bad: list[str] = []
    served = 0
    for box in boxes:
        if box.customer.overbooked:
            continue
        config = load_config(box.folder)
        try:
            pair = box.tls.current()
            if pair is None or pair.temporary:
                raise ValueError(f"no certificate (last: {box.last_code})")
            if not (config.scope and config.zone == ZONE):
                raise ValueError("no scope in its settings")
            host = names.host_name(box.address, config.scope, config.zone)
            pki.verify_server_chain(pair.leaf, pair.chain, [root], host, at=now)
            if stored.get(config.scope) != format(pair.leaf.serial_number, "x"):
                raise ValueError("the store's certificate for its scope is another one")
            served += 1
        except Exception as exc:
            bad.append(f"box {box.index}: {type(exc).__name__}: {exc}")
    wanted = sum(1 for b in boxes if not b.customer.overbooked)
    return Check(
        "every box holds a certificate that verifies",
        not bad,
        f"{served}/{wanted} verify against the root for <address>.<scope>.{ZONE}"
        + (f"; {len(bad)} do not: {bad[:5]}" if bad else ""),
    )


def check_overbooked(boxes: list[SimBox]) -> Check:
    over = [b for b in boxes if b.customer.overbooked]
    if not over:
        return Check("the over-booked subscription serves its quota", True, "none in this run")
    quota = over[0].customer.quota
    valid = sum(1 for b in over if b.valid_at is not None)
    refused = sum(1 for b in over if b.refused == errors.BOX_QUOTA_EXCEEDED)
    ok = valid == quota and refused == len(over) - quota
    return Check(
        "the over-booked subscription serves its quota",
        ok,
        f"{len(over)} boxes for {quota} slots: {valid} served, {refused} refused "
        f"{errors.BOX_QUOTA_EXCEEDED}",
    )


def check_quota(conn: Any) -> Check:
    rows = conn.execute(
        text(
            "SELECT s.code, COALESCE((SELECT SUM(l.quantity) FROM subscription_lines l "
            "WHERE l.subscription_code = s.code), 0) AS quota, "
            "(SELECT COUNT(*) FROM boxes b WHERE b.subscription_code = s.code) AS boxes "
            "FROM subscriptions s"
        )
    ).all()
    over = [(code[:12], quota, count) for code, quota, count in rows if count > quota]
    return Check(
        "no subscription above its quota",
        not over,
        f"{len(rows)} subscriptions, {sum(r[2] for r in rows)} boxes registered"
        + (f"; over: {over}" if over else ""),
    )


def check_scopes(conn: Any, boxes: list[SimBox]) -> Check:
    twice = conn.execute(
        text("SELECT scope, COUNT(*) FROM certificates GROUP BY scope HAVING COUNT(*) > 1")
    ).all()
    audited = conn.execute(
        text(
            "SELECT box_id, COUNT(*) FROM audit WHERE outcome = 'issued' "
            "GROUP BY box_id HAVING COUNT(*) > 1"
        )
    ).all()
    issued = conn.execute(text("SELECT COUNT(*) FROM certificates")).scalar_one()
    leases = conn.execute(text("SELECT COUNT(*) FROM issuance_leases")).scalar_one()
    scopes = [load_config(b.folder).scope for b in boxes if b.valid_at is not None]
    shared = len(scopes) - len(set(scopes))
    ok = not twice and not audited and shared == 0
    # A certificate the store holds and no box does is not a second one: its box's answer was
    # lost (a timeout) and the box would get it back by reuse at its next check.
    return Check(
        "no scope issued twice",
        ok,
        f"{issued} certificates in the store for {len(scopes)} boxes served; scopes with two: "
        f"{len(twice)}; boxes audited as issued twice: {len(audited)}; scopes shared by boxes: "
        f"{shared}; issuance leases still held: {leases}",
    )


def check_nonces(conn: Any, fleet: Fleet, boxes: list[SimBox], opts: Options) -> Check:
    """Accepted nonces are unique, kept once in the store, and refused when sent again."""
    accepted = [s for s in _sent if s.kind == "ok"]
    distinct = len({s.nonce for s in accepted})
    fresh = [s for s in accepted if time.time() - s.payload["iat"] < 280]
    in_store = 0
    if fresh:
        found = conn.execute(
            text("SELECT nonce FROM seen_nonces WHERE nonce = ANY(:nonces)"),
            {"nonces": [s.nonce for s in fresh]},
        ).scalars()
        in_store = len(set(found))
    duplicated = conn.execute(
        text("SELECT COUNT(*) FROM (SELECT nonce FROM seen_nonces GROUP BY nonce "
             "HAVING COUNT(*) > 1) AS d")
    ).scalar_one()  # fmt: skip
    sample = random.Random(7).sample(fresh, min(opts.replays, len(fresh)))
    targets = [fleet.url] + [fleet.replica_url(i) for i in range(len(fleet.replicas))]
    answers: Counter[str] = Counter()
    keys = {b.index: b.device_key for b in boxes}
    with httpx.Client(timeout=20) as client:
        for i, sent in enumerate(sample):
            body = jws.signed_body(keys[sent.box], sent.payload)  # a new signature, same nonce
            url = targets[i % len(targets)] + "/iot/x509"
            try:
                response = client.post(
                    url, content=body, headers={"Content-Type": "application/jose+json"}
                )
                detail = response.json().get("detail", "") if response.status_code != 200 else ""
                nonce = "nonce" in str(detail)
                answers[f"{response.status_code}{' nonce' if nonce else ''}"] += 1
            except (httpx.HTTPError, ValueError) as exc:
                answers[type(exc).__name__] += 1
    refused = answers["401 nonce"]
    ok = (
        distinct == len(accepted)
        and in_store == len(fresh)
        and duplicated == 0
        and refused == len(sample)
    )
    return Check(
        "no nonce accepted twice",
        ok,
        f"{len(accepted)} accepted requests, {distinct} distinct nonces; {in_store}/{len(fresh)} "
        f"recent ones in seen_nonces, {duplicated} kept twice; {len(sample)} sent again "
        f"(HAProxy and each replica): {dict(answers)}",
    )


def check_dns(fleet: Fleet, boxes: list[SimBox], opts: Options) -> Check:
    served = [b for b in boxes if b.valid_at is not None]
    sample = random.Random(3).sample(served, min(opts.dns_names, len(served)))
    wrong: list[str] = []
    asked = 0
    for port in fleet.dns_ports:
        for box in sample:
            config = load_config(box.folder)
            name = names.host_name(box.address, config.scope or "", ZONE)
            asked += 1
            try:
                answer = dns_ask(port, name, timeout=2.0)
                got = {r.address for rrset in answer.answer for r in rrset if rrset.rdtype == 1}
                if got != {box.address}:
                    wrong.append(f"{name} on {port}: {sorted(got)}")
            except (dns.exception.DNSException, OSError) as exc:
                wrong.append(f"{name} on {port}: {type(exc).__name__}")
    return Check(
        "each DNS replica answers the boxes' names",
        bool(asked) and not wrong,
        f"{asked - len(wrong)}/{asked} answers with the box's LAN address"
        + (f"; wrong: {wrong[:5]}" if wrong else ""),
    )


def check_chaos(fleet: Fleet, chaos: Chaos) -> Check:
    seen = {e["event"]: e for e in chaos.events}
    # Each blow must land while boxes still send: before the herd's last request left.
    last_sent = max((s.sent for s in _sent), default=chaos.started) - chaos.started
    during = all(
        seen.get(what, {}).get("t", math.inf) <= last_sent
        for what in ("cloud r0 killed (SIGKILL)", "PostgreSQL fast restart")
    )
    killed = seen.get("cloud r0 killed (SIGKILL)", {}).get("exit_status") == -signal.SIGKILL
    back = "cloud r0 healthy again" in seen
    pg = "PostgreSQL back" in seen
    healthy = []
    for i in range(len(fleet.replicas)):
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(fleet.replica_url(i) + "/healthz", timeout=5).status_code == 200:
                healthy.append(i)
    ok = (
        killed
        and back
        and pg
        and during
        and chaos.failure is None
        and len(healthy) == len(fleet.replicas)
    )
    return Check(
        "the replica was killed and came back, PostgreSQL restarted",
        ok,
        f"SIGKILL seen: {killed}, restarted: {back}, PostgreSQL restarted: {pg}, both before "
        f"the last request ({last_sent:.1f} s): {during}, replicas healthy at the end: "
        f"{len(healthy)}/{len(fleet.replicas)}"
        + (f"; chaos failed: {chaos.failure}" if chaos.failure else ""),
    )


def check_herd(herd: Herd) -> Check:
    ok = not herd.crashed and not herd.gave_up
    return Check(
        "no box gave up or crashed",
        ok,
        f"{len(herd.gave_up)} boxes still without a certificate at the deadline, "
        f"{sum(herd.crashed.values())} checks raised"
        + (f": {dict(herd.crashed.most_common(3))}" if herd.crashed else ""),
    )


# --- figures --------------------------------------------------------------------------------


def figures(boxes: list[SimBox], herd: Herd) -> dict[str, Any]:
    start = herd.started
    sent = sorted(_sent, key=lambda s: s.answered)
    kinds = Counter(s.kind for s in sent)
    per_second: dict[int, Counter[str]] = {}
    for s in sent:
        second = int(s.answered - start)
        per_second.setdefault(second, Counter())["ok" if s.kind == "ok" else "err"] += 1
    last = max(per_second, default=-1)
    timeline = [
        {
            "s": i,
            "ok": per_second.get(i, Counter())["ok"],
            "err": per_second.get(i, Counter())["err"],
        }
        for i in range(last + 1)
    ]
    ok_latency = [s.answered - s.due for s in sent if s.kind == "ok"]
    all_latency = [s.answered - s.due for s in sent]
    service = [s.answered - s.sent for s in sent]
    waits = [b.valid_at - (start + b.start_at) for b in boxes if b.valid_at is not None]
    checks = [b.checks for b in boxes]
    longest = max(
        (b for b in boxes if b.valid_at is not None),
        key=lambda b: b.valid_at - (start + b.start_at),  # type: ignore[operator]
        default=None,
    )
    return {
        "boxes": len(boxes),
        "requests": len(sent),
        "answers_ok": kinds["ok"],
        "errors_seen_by_boxes": {k: v for k, v in kinds.most_common() if k != "ok"},
        "retries": sum(checks) - len(boxes),
        "boxes_that_retried": sum(1 for c in checks if c > 1),
        "most_checks_of_a_box": max(checks, default=0),
        "p50_ms": ms(percentile(ok_latency, 0.50)),
        "p99_ms": ms(percentile(ok_latency, 0.99)),
        "max_ms": ms(max(ok_latency, default=None)),
        "p50_all_answers_ms": ms(percentile(all_latency, 0.50)),
        "p99_all_answers_ms": ms(percentile(all_latency, 0.99)),
        "p50_on_the_wire_ms": ms(percentile(service, 0.50)),
        "p99_on_the_wire_ms": ms(percentile(service, 0.99)),
        "time_to_certificate_p50_s": round(percentile(waits, 0.5) or 0, 2),
        "time_to_certificate_p99_s": round(percentile(waits, 0.99) or 0, 2),
        "longest_wait_s": round(max(waits, default=0), 2),
        "longest_wait_box": longest.index if longest else None,
        "longest_wait_box_checks": longest.checks if longest else None,
        "last_answer_s": round(sent[-1].answered - start, 2) if sent else None,
        "per_second": timeline,
    }


# --- the run ------------------------------------------------------------------------------------


def rehearse(opts: Options, work: Path | None = None) -> dict[str, Any]:
    """Start everything, run the herd with the chaos, check, stop everything; the report."""
    if opts.replicas < 2:
        raise ValueError("a rehearsal needs at least two cloud replicas")
    missing = missing_parts()
    if missing:
        raise RuntimeError("missing: " + "; ".join(missing))
    report: dict[str, Any] = {"options": {k: v for k, v in vars(opts).items()}}
    _sent.clear()
    logging.getLogger("lanlock.box").addHandler(logging.NullHandler())
    logging.getLogger("lanlock.box").propagate = False  # thousands of boxes' error lines
    lifecycle.post_x509 = _timed_post_x509
    own_work = work is None
    work = work or Path(tempfile.mkdtemp(prefix="lanlock-fleet-"))
    fleet = Fleet(work, opts)
    stop_probe = threading.Event()
    try:
        report["load_before"] = os.getloadavg()
        report["background_cpu_pct_before"] = cloud_x509.background_load(1.0)
        say(f"starting the fleet in {work}")
        fleet.start()
        per_customer = split(opts.boxes, opts.customers)
        customers = seed(fleet, per_customer, opts.overbooked)
        made = time.monotonic()
        boxes = make_boxes(work, customers, opts, fleet.url)
        report["box_setup_s"] = round(time.monotonic() - made, 2)
        say(f"  {len(boxes)} boxes paired in {report['box_setup_s']} s; the herd starts")
        herd = Herd(boxes, opts)
        chaos = Chaos(fleet, opts)
        tally: Counter[str] = Counter()
        probe = threading.Thread(target=dns_probe, args=(fleet.dns_ports, stop_probe, tally))
        busy, client = cloud_x509._system_busy(), time.process_time()
        chaos.started = time.monotonic()
        chaos_thread = threading.Thread(target=chaos.run, name="chaos", daemon=True)
        chaos_thread.start()
        probe.start()
        herd.started = chaos.started
        try:
            herd.run()
        except BaseException:
            herd.stop.set()
            raise
        wall = time.monotonic() - herd.started
        busy, client = cloud_x509._system_busy() - busy, time.process_time() - client
        chaos_thread.join(120)
        stop_probe.set()
        probe.join(5)
        report["herd"] = figures(boxes, herd)
        report["herd"]["wall_s"] = round(wall, 2)
        report["herd"]["machine_cpu_pct"] = round(100 * busy / wall, 1)
        report["herd"]["load_generator_cpu_pct"] = round(100 * client / wall, 1)
        report["herd"]["box_state_codes_at_retry"] = dict(
            Counter(b.last_code for b in boxes if b.checks > 1).most_common()
        )
        report["chaos"] = chaos.events
        report["dns_during_herd"] = dict(tally)
        report["haproxy"] = haproxy_stats(fleet.stats_port)
        say("  the herd is done; checking")
        checks = check_all(fleet, boxes, herd, chaos, opts)
        report["checks"] = [c.as_dict() for c in checks]
        report["ok"] = all(c.ok for c in checks)
        report["load_after"] = os.getloadavg()
        report["logs"] = {
            s.name: s.tail(1500) for s in [*fleet.replicas, *fleet.dns] if not report["ok"]
        }
        if fleet.haproxy:
            report["haproxy_log_tail"] = fleet.haproxy.tail(2000)
        return report
    finally:
        stop_probe.set()
        lifecycle.post_x509 = _original_post
        fleet.close()
        if own_work and not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif opts.keep:
            say(f"kept {work}")


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total)) if total else 1
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --- output -------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    h = report["herd"]
    o = report["options"]
    lines = [
        f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Linux "
        f"{m['kernel']}; calibration {m['calibration_ms']} ms; load {report['load_before']} "
        f"before, {report['load_after']} after; others used {report['background_cpu_pct_before']}% "
        "of a core before",
        f"software: Python {m['python']}, PostgreSQL {m['postgresql']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"lanlock {m['lanlock_commit']}",
        f"fleet: {o['replicas']} cloud replicas behind HAProxy, {o['dns_replicas']} DNS replicas, "
        f"a private PostgreSQL; {h['boxes']} boxes ({o['overbooked']} over-booked) starting over "
        f"{o['seconds']:g} s, {o['workers']} checks at once, back-off {o['retry_first']:g} s "
        f"doubling to {o['retry_cap']:g} s",
        "",
        f"requests {h['requests']}, certificates answered {h['answers_ok']}, retries "
        f"{h['retries']} (by {h['boxes_that_retried']} boxes, at most {h['most_checks_of_a_box']} "
        "checks for one box)",
        f"latency from the scheduled send time: p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms, max "
        f"{h['max_ms']} ms (certificates); every answer p50 {h['p50_all_answers_ms']} ms, p99 "
        f"{h['p99_all_answers_ms']} ms; on the wire p50 {h['p50_on_the_wire_ms']} ms, p99 "
        f"{h['p99_on_the_wire_ms']} ms",
        f"time to a certificate: p50 {h['time_to_certificate_p50_s']} s, p99 "
        f"{h['time_to_certificate_p99_s']} s; longest wait {h['longest_wait_s']} s (box "
        f"{h['longest_wait_box']}, {h['longest_wait_box_checks']} checks); last answer at "
        f"{h['last_answer_s']} s",
        f"errors seen by boxes: {h['errors_seen_by_boxes'] or 'none'}",
        f"box state at a retry: {h['box_state_codes_at_retry'] or 'none'}",
        f"CPU: machine {h['machine_cpu_pct']}% of a core, load generator "
        f"{h['load_generator_cpu_pct']}%; box setup {report['box_setup_s']} s",
        f"DNS answers during the herd: {report['dns_during_herd']}",
        "HAProxy per replica: "
        + "; ".join(
            f"{name} sessions {s['stot']} 2xx {s['hrsp_2xx']} 5xx {s['hrsp_5xx']} downs "
            f"{s['chkdown']} down {s['downtime']} s redispatched {s['wredis']} retried {s['wretr']}"
            for name, s in report["haproxy"].items()
        ),
        "",
        "chaos: " + "; ".join(f"{e['t']} s {e['event']}" for e in report["chaos"]),
        "",
        "answers per second (second:certificates/other answers): " + per_second(h["per_second"]),
        "",
    ]
    for check in report["checks"]:
        lines.append(f"[{'ok' if check['ok'] else 'FAILED'}] {check['name']}: {check['detail']}")
    return "\n".join(lines)


def per_second(timeline: list[dict[str, int]]) -> str:
    """``s:ok/other`` for each second, a quiet stretch written once as ``a-b:0/0``."""
    parts: list[str] = []
    quiet: list[int] = []
    for point in [*timeline, {"s": -1, "ok": 1, "err": 0}]:
        if point["ok"] == point["err"] == 0:
            quiet.append(point["s"])
            continue
        if quiet:
            span = f"{quiet[0]}-{quiet[-1]}" if len(quiet) > 1 else str(quiet[0])
            parts.append(f"{span}:0/0")
            quiet = []
        if point["s"] >= 0:
            parts.append(f"{point['s']}:{point['ok']}/{point['err']}")
    return " ".join(parts)


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    defaults = Options()
    parser = argparse.ArgumentParser(
        description="A fleet rehearsal: boxes against replicated clouds, with a replica killed "
        "and PostgreSQL restarted during the herd."
    )
    parser.add_argument("--short", action="store_true", help=f"the suite's size: {SHORT}")
    parser.add_argument("--boxes", type=int, help=f"boxes [default {defaults.boxes}]")
    parser.add_argument("--seconds", type=float, help="window of the boxes' first checks")
    parser.add_argument("--replicas", type=int, help="cloud replicas (at least 2)")
    for name in ("customers", "overbooked", "workers", "replays", "dns_names", "cloud_workers"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    for name in ("retry_first", "retry_cap", "grace", "kill_at", "down", "pg_restart_at"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, dest=name)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    values = {**vars(defaults), **(SHORT if args.short else {})}
    values.update({k: v for k, v in vars(args).items() if k in values and v not in (None, False)})
    opts = Options(**values)
    if opts.replicas < 2 or opts.boxes < 1 or opts.seconds <= 0 or opts.workers < 1:
        parser.error("--replicas ≥ 2, --boxes ≥ 1, --workers ≥ 1, --seconds > 0")
    return opts, args


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts, args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        report = rehearse(opts)
    except KeyboardInterrupt:
        say("interrupted: every process stopped, every folder removed")
        return 130
    report["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    report["machine"] = cloud_x509.machine(None)
    report["machine"]["postgresql"] = postgres_version()
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        say(f"figures written to {args.json}")
    return 0 if report["ok"] else 1


def postgres_version() -> str | None:
    bindir = postgres_bin()
    if bindir is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True
        )
        found = re.search(r"\) (\d+(\.\d+)*)", out.stdout)
        return found.group(1) if found else None
    return None


if __name__ == "__main__":
    sys.exit(main())
