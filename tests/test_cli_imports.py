"""``lanlock <role>`` imports only that role: a box's command line loads no cloud library.

``lanlock box status`` reads one JSON file; it used to load SQLAlchemy, Alembic, acme,
dnspython, Starlette and uvicorn first (about 0.6 s), and on a box installed with
``lanlock[box]`` those are not even there. Each command runs in a fresh interpreter that
reports which modules it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from lanlock.cli import ROLES, main

HEAVY = {"sqlalchemy", "alembic", "acme", "dns", "uvicorn", "starlette", "jinja2", "psycopg"}

REPORT_LOADED = """
import json, sys
from lanlock.cli import main
try:
    main(sys.argv[1:], prog_name="lanlock")
except SystemExit:
    pass
print(json.dumps(sorted({m.partition(".")[0] for m in sys.modules})), file=sys.stderr)
"""


def loaded_by(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", REPORT_LOADED, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args", [("box", "status", "--json"), ("box", "--help"), ("--help",), ("box", "status")]
)
def test_the_box_commands_load_no_other_roles_libraries(args, tmp_path):
    if args[:2] == ("box", "status"):
        args = (*args, "--data", str(tmp_path))
    assert loaded_by(*args) & HEAVY == set()


def test_the_top_help_tells_each_role_as_the_role_does():
    for name, role in ROLES.items():
        command = main.get_command(click.Context(main), name)
        assert command is not None
        assert role.summary == command.get_short_help_str(limit=200), name
