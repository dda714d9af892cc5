"""The systemd units of deploy/systemd/: valid for systemd, hardened, and true to the commands.

``systemd-analyze verify`` checks each unit as systemd would load it, and any warning fails the
test. It also demands that ExecStart's program exists: the units name the documented install
path, ``/opt/lanlock/bin/lanlock``, which is not on this machine, so the test verifies a copy in
which that one path, and nothing else, is this environment's own ``lanlock``. The hardening keys
are checked one by one, so that a unit losing one fails here, and ``systemd-analyze security``
scores the whole.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.realparts import require

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
INSTALLED = "/opt/lanlock/bin/lanlock"  # where deploy/systemd/README.md installs lanlock
HERE = Path(sys.executable).with_name("lanlock")  # this environment's lanlock
USER = "lanlock"
COMMANDS = {
    "box": "box run",
    "cloud": "cloud serve",
    "console": "console serve",
    "dns": "dns serve",
}
# A supervisor of worker processes: only it gets SIGTERM, and it stops its workers in order.
SUPERVISORS = {"cloud", "dns"}
# Ports below 1024: the box's 80 and 443, the DNS's 53.
BINDS_LOW_PORTS = {"box", "dns"}
# What each may write: its state directory (the DNS keeps nothing).
STATE = {"box": "lanlock/box", "cloud": "lanlock/cloud", "console": "lanlock/console"}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "Restart": "on-failure",
}
SOCKETS = "AF_INET AF_INET6 AF_UNIX"
# The box lists its interfaces' addresses: getifaddrs and if_nameindex ask the kernel by netlink.
MORE_SOCKETS = {"box": "AF_NETLINK"}
MOST_EXPOSED = 20  # tenths: the highest "overall exposure level" allowed (2.0 of 10)

Unit = dict[str, list[str]]  # "Section.Key" -> its values, in order


def read_unit(role: str) -> Unit:
    unit: Unit = defaultdict(list)
    section = ""
    for line in (UNITS / f"lanlock-{role}.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        unit[f"{section}.{key}"].append(value)
    return unit


def service(unit: Unit, key: str) -> list[str]:
    return unit.get(f"Service.{key}", [])


@pytest.fixture(scope="module")
def runnable_units(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The units as shipped, but for ExecStart's program: this environment's lanlock."""
    assert HERE.is_file(), HERE
    folder = tmp_path_factory.mktemp("units")
    for role in COMMANDS:
        text = (UNITS / f"lanlock-{role}.service").read_text()
        assert text.count(INSTALLED) == 1, f"lanlock-{role}.service names {INSTALLED} once"
        (folder / f"lanlock-{role}.service").write_text(text.replace(INSTALLED, str(HERE)))
    return sorted(folder.iterdir())


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    require(tool is not None, "systemd-analyze is not installed (Debian's systemd)")
    return subprocess.run(
        [str(tool), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_every_unit_verifies_without_a_warning(runnable_units):
    # --recursive-errors=no: the units they order after (network-online.target, …) are this
    # machine's, not ours to judge.
    done = systemd_analyze("verify", "--man=no", "--recursive-errors=no", *map(str, runnable_units))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_no_unit_is_exposed_past_its_budget(runnable_units):
    done = systemd_analyze(
        "security", "--offline=true", f"--threshold={MOST_EXPOSED}", *map(str, runnable_units)
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("role", sorted(COMMANDS))
def test_each_unit_runs_its_role_as_the_lanlock_user_with_its_settings_file(role):
    unit = read_unit(role)
    assert service(unit, "ExecStart") == [f"{INSTALLED} {COMMANDS[role]}"]
    assert service(unit, "EnvironmentFile") == [f"-/etc/lanlock/{role}.env"]
    assert service(unit, "User") == service(unit, "Group") == [USER]
    assert service(unit, "KillMode") == (["mixed"] if role in SUPERVISORS else [])


@pytest.mark.parametrize("role", sorted(COMMANDS))
def test_each_unit_is_hardened(role):
    unit = read_unit(role)
    for key, value in HARDENING.items():
        assert service(unit, key) == [value], (role, key)
    assert "@system-service" in service(unit, "SystemCallFilter"), role
    families = " ".join(filter(None, [SOCKETS, MORE_SOCKETS.get(role)]))
    assert service(unit, "RestrictAddressFamilies") == [families], role


@pytest.mark.parametrize("role", sorted(COMMANDS))
def test_each_unit_may_bind_low_ports_only_where_it_needs_them(role):
    unit = read_unit(role)
    if role in BINDS_LOW_PORTS:
        assert service(unit, "AmbientCapabilities") == ["CAP_NET_BIND_SERVICE"]
        assert service(unit, "CapabilityBoundingSet") == ["CAP_NET_BIND_SERVICE"]
    else:
        assert service(unit, "AmbientCapabilities") == []
        assert service(unit, "CapabilityBoundingSet") == [""]  # no capability at all


@pytest.mark.parametrize("role", sorted(COMMANDS))
def test_each_unit_writes_only_its_state_directory(role):
    unit = read_unit(role)
    assert service(unit, "StateDirectory") == ([STATE[role]] if role in STATE else [])
    assert service(unit, "ReadWritePaths") == []
    # Its data folder, LANLOCK_HOME/<role>, is that state directory.
    assert "LANLOCK_HOME=/var/lib/lanlock" in service(unit, "Environment")


@pytest.mark.parametrize("role", sorted(COMMANDS))
def test_each_units_settings_are_settings_of_its_command(role):
    """lanlock refuses a variable of its role that no option reads: the unit's must all be."""
    assignments = [
        a for value in service(read_unit(role), "Environment") for a in shlex.split(value)
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANLOCK_")}
    env.update(assignment.split("=", 1) for assignment in assignments)
    done = subprocess.run(
        [str(HERE), *COMMANDS[role].split(), "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_sysusers_file_makes_the_units_user(tmp_path):
    tool = shutil.which("systemd-sysusers")
    require(tool is not None, "systemd-sysusers is not installed (Debian's systemd)")
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        [str(tool), "--dry-run", f"--root={tmp_path}", str(UNITS / "lanlock.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"Creating user '{USER}'" in done.stdout + done.stderr
