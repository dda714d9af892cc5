"""lanlock as a user installs it: the wheel built from this tree, not the editable install.

The wheel is built from a copy of what the build reads (pyproject.toml, README.md, src/), so
that a ``build/`` folder or an egg-info left in the tree by an older layout cannot slip files
into it. It must carry every module, template, static file and migration, and, installed with
the demo's extra into a fresh virtual environment, tell its version and run ``lanlock demo`` up
to a box serving a valid certificate that the printed curl line verifies.

The demo runs as the units of deploy/systemd/ run every role, with ``MemoryDenyWriteExecute``:
the kernel refuses the installed libraries any memory both writable and executable (Linux's
``PR_SET_MDWE``, inherited by every part the demo starts).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.realparts import require
from tests.servers import free_port, read_until

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lanlock"
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child only calls it
REFUSES_WRITE_EXECUTE = (
    "import ctypes, sys; "
    f"sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0)"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    leftovers = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", ignore=leftovers)
    dist = tmp_path_factory.mktemp("dist")
    pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", str(dist), str(tree))
    (built,) = dist.glob("lanlock-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh virtual environment holding the wheel and the demo's extra."""
    venv = tmp_path_factory.mktemp("wheel-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip(str(venv / "bin" / "python"), "install", f"{wheel}[all]")
    return venv / "bin"


def pip(python: str, *args: str) -> None:
    done = subprocess.run(
        [python, "-m", "pip", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def outside_the_tree() -> dict[str, str]:
    """An environment in which only the installed lanlock can be imported or configured."""
    return {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("LANLOCK_")
    }


def needed_at_run_time(path: Path) -> bool:
    return "__pycache__" not in path.parts and (
        path.suffix == ".py" or path.parent.name == "templates"
    )


def test_the_wheel_carries_every_module_template_and_migration(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = {
        f"lanlock/{path.relative_to(PACKAGE).as_posix()}"
        for path in PACKAGE.rglob("*")
        if path.is_file() and needed_at_run_time(path)
    }
    assert needed - names == set()
    assert "lanlock/templates/catalogue.html" in names
    for role in ("cloud", "console"):
        assert f"lanlock/{role}/migrations/env.py" in names
        assert any(n.startswith(f"lanlock/{role}/migrations/versions/0001_") for n in names)


def run_installed(program: Path, *args: str, cwd: Path) -> str:
    """What ``program`` of the installed environment prints, run outside the tree."""
    done = subprocess.run(
        [str(program), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=outside_the_tree(),
        timeout=60,
        check=True,
    )
    return done.stdout


def test_the_installed_command_tells_the_packages_version(installed, tmp_path):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert run_installed(installed / "lanlock", "--version", cwd=tmp_path) == (
        f"lanlock, version {version}\n"
    )
    where = run_installed(
        installed / "python", "-c", "import lanlock; print(lanlock.__file__)", cwd=tmp_path
    )
    assert Path(where.strip()).is_relative_to(installed.parent)


def _refuse_write_execute() -> None:
    if LIBC.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_MDWE")


def stop_demo(process: subprocess.Popen[bytes]) -> int | None:
    """Ctrl-C; the demo stops its parts. One that did not stop cleanly (killed for being slow,
    or stuck) may leave its parts running: whatever is left of its process group is killed."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(30)
    finally:
        if process.returncode != 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def test_the_installed_demo_brings_its_box_to_a_valid_certificate_without_wx_memory(
    installed, tmp_path
):
    curl = shutil.which("curl")
    require(curl is not None, "curl is not installed")
    mdwe = subprocess.run([sys.executable, "-c", REFUSES_WRITE_EXECUTE], timeout=60, check=False)
    require(mdwe.returncode == 0, "this kernel cannot refuse W+X memory (PR_SET_MDWE, Linux 6.3)")
    names = ["--cloud-port", "--dns-port", "--console-port", "--box-http-port", "--box-https-port"]
    ports = [x for name in names for x in (name, str(free_port()))]
    process = subprocess.Popen(
        [str(installed / "lanlock"), "demo", "--data", str(tmp_path / "demo"), *ports],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=outside_the_tree(),
        preexec_fn=_refuse_write_execute,
        start_new_session=True,  # its parts too: a demo that fails is stopped with all of them
    )
    try:
        output = read_until(process, "Ctrl-C stops every part", seconds=90)
        line = next(x.strip() for x in output.splitlines() if x.strip().startswith("curl "))
        verified = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=30)
    finally:
        stopped = stop_demo(process)
    assert verified.returncode == 0, verified.stderr
    assert '"state":"valid"' in verified.stdout
    assert stopped == 0, process.stdout.read() if process.stdout else ""
