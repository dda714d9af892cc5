"""A box installs only what a box needs: ``pip install 'lanlock[box]'`` and nothing of the cloud.

The package is built from this tree (a wheel, not an editable install) into a fresh virtual
environment with the ``box`` extra only. That environment must hold none of the cloud's, the
console's or the DNS's libraries, and its ``lanlock box run`` must get a valid certificate from a
real cloud (run from the full environment) and serve it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lanlock.cloud.models import cloud_store
from tests.box.test_lifecycle import give_credentials
from tests.boxes import Customer
from tests.servers import running_cloud, start_box

ROOT = Path(__file__).resolve().parents[1]
NOT_FOR_A_BOX = ["sqlalchemy", "alembic", "psycopg", "acme", "dns", "prometheus_client", "requests"]
NOR_UNUSED = ["websockets", "watchfiles", "dotenv", "yaml"]  # uvicorn[standard]'s, unused


@pytest.fixture(scope="module")
def box_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("box-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir", f"{ROOT}[box]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def test_a_box_install_holds_none_of_the_other_roles_libraries(box_venv):
    found = subprocess.run(
        [
            str(box_venv),
            "-c",
            "import importlib.util, sys; "
            "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))",
            *NOT_FOR_A_BOX,
            *NOR_UNUSED,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert found.stdout.split() == []


def test_a_box_install_tells_which_extra_another_role_needs(box_venv):
    done = subprocess.run(
        [str(box_venv), "-m", "lanlock", "cloud", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'lanlock[cloud]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_box_install_runs_the_box_to_a_valid_certificate(box_venv, tmp_path):
    with running_cloud(tmp_path / "cloud") as cloud:
        store = cloud_store(cloud.store_url, pool_size=1)
        give_credentials(tmp_path / "box", Customer.create(store))
        store.dispose()
        box = start_box(tmp_path / "box", "--cloud", cloud.url, python=str(box_venv))
        try:
            state = box.wait_for(lambda s: s["state"] == "valid", timeout=60)
            assert state["url"].startswith("https://10-0-0-7.")
        finally:
            box.stop()
