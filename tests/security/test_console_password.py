"""Boundary: ``lanlock console serve`` never shows its first admin password.

Whatever a server prints ends up in a terminal's scroll-back, a service manager's journal or a
container's log, read by more people than the console's admin. At its first start the console
keeps the password in ``admin-password`` in its data folder, readable by its own user only, and
prints where it is and how to show it (``lanlock console password``), never the password.
"""

from __future__ import annotations

import stat
from pathlib import Path

from lanlock.passwords import PASSWORD_FILE
from tests.console.running import running_console


def test_the_first_start_says_where_the_password_is_and_never_prints_it(tmp_path: Path):
    data = tmp_path / "console"
    with running_console(data) as console:
        kept = data / PASSWORD_FILE
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        password = kept.read_text().strip()
        assert password
        shown = console.cli("password")
        assert shown.stdout.strip() == password  # how the admin sees it
        console.logged_in(password).close()  # it is the password of the pages
    printed = console.log_text()  # the server's stdout and stderr, until it stopped
    assert password not in printed
    assert str(kept) in printed and "lanlock console password" in printed
