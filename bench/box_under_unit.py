"""The box under its unit: start-to-valid time and idle memory of ``lanlock box run`` as
deploy/systemd/lanlock-box.service runs it.

systemd is not needed (nor used): the unit's conditions are applied the way
tests/privileged_ports_run.py applies them, whose helpers this script imports. In network,
mount and PID namespaces of its own (made with ``unshare``; ports below 1024 privileged there),
the box runs through ``setpriv`` as uid and gid 65534 (the unit's ``lanlock`` user stand-in, no
other group), with CAP_NET_BIND_SERVICE as its only capability (ambient, inheritable, bounding),
no new privileges, umask 0077, and the unit's Environment= lines (LANLOCK_BOX_HOST=::, HTTP 80,
HTTPS 443, LANLOCK_HOME: a folder of the user's own here, as the unit's state directory). The
rest of the unit's sandbox (ProtectSystem, the system-call filter, MemoryDenyWriteExecute, ...)
is not applied. Its LAN address is 10.77.0.7 on a veth link; a real cloud (``lanlock cloud
serve``, embedded CA, SQLite) runs as root on loopback in the same namespace, on the same cores.

Each of ``--runs`` runs gives the box a fresh data folder holding only its credentials
(``lanlock box credentials``, run as the user beforehand, as an admin would) and measures, from
just before the fork and exec of ``setpriv ... python -m lanlock box run`` (setpriv execs the box
in the same process):

* port 443 accepting TCP connections;
* ``state.json`` showing ``valid`` with a URL whose name is the box's address under its scope;
* the first verified HTTPS answer (200) on port 443 by name: a TLS connection to the address the
  name encodes, SNI and Host the name, verified against the cloud's root alone (the name is not
  resolved through DNS; the name is known as soon as config.toml holds the scope the cloud gave);
* the box's CPU time (user + system) when it is valid;
* then, 30 s (``--idle``) after it became valid, with nothing asking it anything: VmRSS, and
  Rss, Pss and USS (Private_Clean + Private_Dirty) from /proc/<pid>/smaps_rollup.

Then the same box is stopped (SIGTERM) and started again on its kept data folder: the time to the
first verified HTTPS answer with the certificate it kept (the same DER as before), and to
``state.json`` written afresh and valid.

Run it as root from the repository root (about 45 s a run):

    .venv/bin/python bench/box_under_unit.py [--runs 5] [--idle 30] [--json FILE] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  (the check of the namespaces reports through pytest.skip)
from tests.benchscripts import load  # noqa: E402
from tests.boxes import Customer  # noqa: E402
from tests.privileged_ports_run import (  # noqa: E402
    BOX_ADDRESS,
    NAMESPACES,
    NO_CONSOLE_NEEDED,
    USER,
    join_the_lan,
    open_the_ways,
    process_status,
    require_namespaces_and_setpriv,
    run_as_user,
    socket_owners,
    start_as_user,
    unit_settings,
)
from tests.servers import ZONE, start_cloud, stop_process  # noqa: E402

from lanlock import __version__, names  # noqa: E402
from lanlock.box.settings import STATE_FILE, load_config  # noqa: E402
from lanlock.cloud.models import cloud_store  # noqa: E402

rss_kib = load("box_memory").rss_kib  # bench/ is not a package

POLL = 0.005  # seconds between looks at the state, the config and port 443
HTTPS_POLL = 0.02  # seconds between HTTPS attempts once the name is known
START_TIMEOUT = 60.0  # seconds for a start to reach valid and a verified HTTPS answer


# --- inside the namespaces --------------------------------------------------------------------


def https_answer(name: str, context: ssl.SSLContext) -> tuple[int, str]:
    """``GET /`` over HTTPS at the address ``name`` encodes, port 443, SNI and Host ``name``,
    verified by ``context``: the status and the SHA-256 of the certificate served."""
    with (
        socket.create_connection((BOX_ADDRESS, 443), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True) or b""
        request = f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), hashlib.sha256(der).hexdigest()


def accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((BOX_ADDRESS, port), timeout=1):
        return True
    return False


def valid_name(state: dict[str, Any]) -> str | None:
    """The name of a valid state's URL, when it is the box's address under a scope of ZONE."""
    if state.get("state") != "valid" or not state.get("url") or not state.get("not_after"):
        return None
    host = urlsplit(state["url"]).hostname or ""
    try:
        name = names.parse_host_name(host, ZONE)
    except Exception:
        return None
    return host if str(name.address) == BOX_ADDRESS and name.scope else None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict[str, Any]:
    """VmRSS, VmHWM and threads from status; Rss, Pss and USS from smaps_rollup (KiB)."""
    status = {
        k: v.split()[0]
        for k, _, v in (
            line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        if k in ("VmRSS", "VmHWM", "Threads", "Umask")
    }
    rollup_text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    rollup = {
        k: int(v.split()[0])
        for k, _, v in (line.partition(":") for line in rollup_text.splitlines())
        if v.strip().endswith("kB")
    }
    children = [
        c
        for task in Path(f"/proc/{pid}/task").iterdir()
        for c in (task / "children").read_text().split()
    ]
    return {
        "vmrss_kib": int(status["VmRSS"]),
        "vmhwm_kib": int(status["VmHWM"]),
        "threads": int(status["Threads"]),
        "rss_kib": rollup["Rss"],
        "pss_kib": rollup["Pss"],
        "uss_kib": rollup["Private_Clean"] + rollup["Private_Dirty"],
        "swap_kib": rollup.get("Swap", 0),
        "child_processes": len(children),
    }


def timed_start(
    env: dict[str, str],
    caps: list[str],
    data: Path,
    log: Path,
    root: Path,
    kept: tuple[str, str] | None,
    idle: float,
) -> dict[str, Any]:
    """Start the box as its unit would and time it; with ``kept`` (name, certificate hash) the
    data folder is a kept one and the HTTPS answer must carry that certificate."""
    context = ssl.create_default_context(cafile=str(root))
    name = kept[0] if kept else None
    seen: dict[str, Any] = {"log": str(log)}
    started_wall = time.time()
    t0 = time.monotonic()
    process = start_as_user(env, caps, log, "box", "run")
    pid = process.pid
    try:
        deadline, next_https = t0 + START_TIMEOUT, 0.0
        state_mtime = 0
        while "valid_s" not in seen or "https_s" not in seen:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(
                    f"no valid state and HTTPS answer in {START_TIMEOUT:g} s: {seen}"
                )
            if process.poll() is not None:
                raise RuntimeError(f"the box exited ({process.returncode}):\n{log.read_text()}")
            if "listening_s" not in seen and accepting(443):
                seen["listening_s"] = time.monotonic() - t0
            if "valid_s" not in seen:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    st = (data / STATE_FILE).stat()
                    if st.st_mtime_ns != state_mtime and st.st_mtime >= started_wall:
                        state_mtime = st.st_mtime_ns
                        state = json.loads((data / STATE_FILE).read_text())
                        if host := valid_name(state):
                            seen["valid_s"] = time.monotonic() - t0
                            seen["cpu_at_valid_s"] = cpu_seconds(pid)
                            seen["state"] = state
                            name = name or host
            if name is None:  # the scope the cloud gave, in config.toml: the name is known
                with contextlib.suppress(Exception):
                    config = load_config(data)
                    if config.scope and config.zone:
                        name = names.host_name(BOX_ADDRESS, config.scope, config.zone)
            if name and "https_s" not in seen and now >= next_https:
                next_https = now + HTTPS_POLL
                with contextlib.suppress(OSError, ssl.SSLError, ValueError, IndexError):
                    status, certificate = https_answer(name, context)
                    if status == 200 and (kept is None or certificate == kept[1]):
                        seen["https_s"] = time.monotonic() - t0
                        seen["name"], seen["certificate_sha256"] = name, certificate
                    elif kept is not None and status == 200:
                        seen.setdefault("other_certificates", []).append(certificate)
            time.sleep(POLL)
        seen["process"] = process_status(pid)
        seen["sockets"] = {k: v for k, v in socket_owners().items() if k.endswith((":80", ":443"))}
        seen["data_owners"] = sorted({p.lstat().st_uid for p in [data, *data.rglob("*")]})
        if idle:
            rss, until = [], t0 + seen["valid_s"] + idle
            while (left := until - time.monotonic()) > 0:
                rss.append(rss_kib(pid))
                time.sleep(min(1.0, left))
            seen["idle_s"] = time.monotonic() - t0 - seen["valid_s"]
            seen["memory"] = memory(pid) | {"max_vmrss_during_idle_kib": max(rss, default=0)}
    finally:
        stop_process(process)
    return seen


def inside(work: Path, hidden: Path, runs: int, idle: float) -> None:
    os.umask(0o077)  # the unit's UMask, for what is made here too
    join_the_lan()
    results: dict[str, Any] = {
        "unprivileged_port_start": int(
            Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()
        ),
        "runs": [],
    }
    os.chmod(work, 0o711)  # noqa: S103  searchable, not listable, by the user
    homes = work / "homes"
    homes.mkdir()
    os.chmod(homes, 0o711)  # noqa: S103
    results["covered"] = open_the_ways(homes, hidden)
    store_url, root = f"sqlite:///{work / 'store.db'}", work / "root.pem"
    cloud = start_cloud(store_url, work / "cloud")
    try:
        root.write_text(cloud.root_pem())
        store = cloud_store(store_url, pool_size=1)
        try:
            customer = Customer.create(store, iot_boxes=runs + 1)
        finally:
            store.dispose()
        for i in range(runs):
            home = homes / f"run-{i}"
            home.mkdir()
            os.chown(home, USER, USER)
            env, caps = unit_settings("box", home)
            env |= {"LANLOCK_BOX_CLOUD": cloud.url}
            given = run_as_user(
                env, [], "box", "credentials", "--db-uuid", customer.db_uuid,
                "--code", customer.code, "--console", NO_CONSOLE_NEEDED,
            )  # fmt: skip
            if given["returncode"] != 0:
                raise RuntimeError(f"lanlock box credentials failed: {given['output']}")
            run: dict[str, Any] = {"environment": {k: v for k, v in env.items() if "LANLOCK" in k}}
            run["fresh"] = timed_start(
                env, caps, home / "box", work / f"box-{i}-fresh.log", root, None, idle
            )
            kept = (run["fresh"]["name"], run["fresh"]["certificate_sha256"])
            run["restart"] = timed_start(
                env, caps, home / "box", work / f"box-{i}-restart.log", root, kept, 0
            )
            results["runs"].append(run)
            fresh, again = run["fresh"], run["restart"]
            print(
                f"run {i + 1}/{runs}: fresh valid {fresh['valid_s']:.3f} s, "
                f"HTTPS {fresh['https_s']:.3f} s, USS {fresh['memory']['uss_kib'] / 1024:.1f} MiB; "
                f"restart HTTPS {again['https_s']:.3f} s",
                flush=True,
            )
    finally:
        cloud.stop()
    (work / "results.json").write_text(json.dumps(results, indent=2))


# --- outside: the namespaces, the table -------------------------------------------------------


def spread(values: list[float], unit: str, scale: float = 1.0, digits: int = 2) -> tuple[str, str]:
    if not values:
        return "—", "—"
    return (
        f"{statistics.median(values) * scale:.{digits}f} {unit}",
        f"{max(values) * scale:.{digits}f} {unit}",
    )


def table(results: dict[str, Any], idle: float) -> str:
    runs = results["runs"]
    fresh = [r["fresh"] for r in runs]
    again = [r["restart"] for r in runs]
    mib, after = 1 / 1024, f"idle {idle:g} s after valid:"

    def of(runs_: list[dict[str, Any]], key: str) -> list[float]:
        return [r[key] for r in runs_]

    def memory_of(key: str) -> list[float]:
        return [f["memory"][key] for f in fresh]

    rows = [
        ("fresh data folder: exec → port 443 accepting", of(fresh, "listening_s"), "s", 1, 3),
        ("fresh: exec → state.json valid, cert for its name", of(fresh, "valid_s"), "s", 1, 3),
        ("fresh: exec → first verified HTTPS 200 on 443 by name", of(fresh, "https_s"), "s", 1, 3),
        ("fresh: box CPU (user + system) at valid", of(fresh, "cpu_at_valid_s"), "s", 1, 2),
        ("restart, kept folder: exec → port 443 accepting", of(again, "listening_s"), "s", 1, 3),
        ("restart: exec → first verified HTTPS 200, kept cert", of(again, "https_s"), "s", 1, 3),
        ("restart: exec → state.json rewritten, valid", of(again, "valid_s"), "s", 1, 3),
        (f"{after} VmRSS", memory_of("vmrss_kib"), "MiB", mib, 1),
        (f"{after} Rss (smaps_rollup)", memory_of("rss_kib"), "MiB", mib, 1),
        (f"{after} Pss", memory_of("pss_kib"), "MiB", mib, 1),
        (f"{after} USS (private clean + dirty)", memory_of("uss_kib"), "MiB", mib, 1),
        ("largest VmRSS while idle", memory_of("max_vmrss_during_idle_kib"), "MiB", mib, 1),
        ("VmHWM (peak RSS since exec)", memory_of("vmhwm_kib"), "MiB", mib, 1),
    ]
    lines = [
        f"| measure ({len(runs)} runs) | median | max |",
        "| --- | ---: | ---: |",
    ]
    for label, values, unit, scale, digits in rows:
        median, most = spread(values, unit, scale, digits)
        lines.append(f"| {label} | {median} | {most} |")
    return "\n".join(lines)


def per_run(results: dict[str, Any]) -> str:
    lines = [
        "| run | 443 up | valid | HTTPS | CPU at valid | restart HTTPS | restart valid "
        "| VmRSS | Pss | USS | threads |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, run in enumerate(results["runs"], 1):
        f, a, m = run["fresh"], run["restart"], run["fresh"]["memory"]
        lines.append(
            f"| {i} | {f['listening_s']:.3f} | {f['valid_s']:.3f} | {f['https_s']:.3f} "
            f"| {f['cpu_at_valid_s']:.2f} | {a['https_s']:.3f} | {a['valid_s']:.3f} "
            f"| {m['vmrss_kib'] / 1024:.1f} | {m['pss_kib'] / 1024:.1f} "
            f"| {m['uss_kib'] / 1024:.1f} | {m['threads']} |"
        )
    return "\n".join(lines)


def conditions(results: dict[str, Any]) -> list[str]:
    """What was checked of the unit's conditions, in every run."""
    problems = []
    expected_caps = f"{1 << 10:016x}"  # CAP_NET_BIND_SERVICE alone
    for i, run in enumerate(results["runs"], 1):
        for kind in ("fresh", "restart"):
            seen = run[kind]
            process = seen["process"]
            if (
                process["Uid"].split() != [str(USER)] * 4
                or process["Gid"].split() != [str(USER)] * 4
            ):
                problems.append(f"run {i} {kind}: uid/gid {process['Uid']} / {process['Gid']}")
            caps = {k: process[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
            if set(caps.values()) != {expected_caps} or process["NoNewPrivs"] != "1":
                problems.append(
                    f"run {i} {kind}: capabilities {caps}, NoNewPrivs {process['NoNewPrivs']}"
                )
            if seen["sockets"] != {"tcp6:80": [USER], "tcp6:443": [USER]}:
                problems.append(f"run {i} {kind}: listeners {seen['sockets']}")
            if seen["data_owners"] != [USER]:
                problems.append(f"run {i} {kind}: data folder owners {seen['data_owners']}")
        if run["fresh"]["memory"]["child_processes"]:
            problems.append(f"run {i}: the box had child processes")
        if run["restart"].get("other_certificates"):
            problems.append(f"run {i}: restart served another certificate first")
    if results["unprivileged_port_start"] != 1024:
        problems.append(f"ip_unprivileged_port_start {results['unprivileged_port_start']}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh data folders (each restarted)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle before memory")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    parser.add_argument("--inside", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(*args.inside, args.runs, args.idle)
        return
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        require_namespaces_and_setpriv()
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        sys.exit(f"cannot run: {exc}")
    load_before, started = os.getloadavg(), time.time()
    work = Path(tempfile.mkdtemp(prefix="lanlock-box-unit-", dir="/tmp"))
    hidden = Path(tempfile.mkdtemp(prefix="lanlock-box-unit-hidden-", dir="/tmp"))
    bound = 120 + args.runs * (args.idle + 2 * START_TIMEOUT + 60)  # every start at its limit
    try:
        try:
            # --kill-child: whatever happens here, every process started inside dies with it.
            subprocess.run(
                [*NAMESPACES, sys.executable, str(Path(__file__).resolve()),
                 "--inside", str(work), str(hidden), "--runs", str(args.runs),
                 "--idle", str(args.idle)],
                cwd=ROOT, check=True, timeout=bound,
            )  # fmt: skip
        except subprocess.SubprocessError as exc:
            sys.exit(
                f"the run failed ({exc}); logs in {work}" if args.keep else f"the run failed: {exc}"
            )
        results = json.loads((work / "results.json").read_text())
    finally:
        with contextlib.suppress(OSError):
            hidden.rmdir()  # its mounts were the namespace's, gone with it
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    results |= {
        "machine": {
            "nproc": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "seconds": time.time() - started,
            "python": platform.python_version(),
            "kernel": platform.release(),
            "lanlock": __version__,
            "commit": "(fill in)",
        },
        "idle_seconds": args.idle,
    }
    problems = conditions(results)
    print()
    print(
        "lanlock box run under deploy/systemd/lanlock-box.service's conditions, WITHOUT systemd "
        "(not PID 1 here):\nuid/gid 65534 (stand-in for User=lanlock), CapabilityBoundingSet = "
        "AmbientCapabilities = CAP_NET_BIND_SERVICE, NoNewPrivileges, UMask 0077, the unit's "
        "Environment=\n(LANLOCK_BOX_HOST=:: ports 80/443, LANLOCK_HOME a folder of the user's), "
        "as tests/privileged_ports_run.py applies them;\nthe rest of the sandbox (ProtectSystem, "
        "SystemCallFilter, MemoryDenyWriteExecute, ...) is not applied. Own net/mount/pid "
        "namespaces,\nthe box at 10.77.0.7 (veth), a real cloud (embedded CA, SQLite) as root on "
        "loopback on the same cores."
    )
    print()
    print(table(results, args.idle))
    print()
    print(per_run(results))
    print()
    m = results["machine"]
    print(
        f"machine: nproc {m['nproc']} (affinity {m['affinity']}), load average before "
        f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' '.join(f'{x:.2f}' for x in load_after)}; Python {m['python']}, Linux {m['kernel']}, "
        f"lanlock {m['lanlock']}, commit {m['commit']}; {m['seconds']:.0f} s in all"
    )
    print(
        "unit conditions checked in every start: "
        + ("all held" if not problems else "; ".join(problems))
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
