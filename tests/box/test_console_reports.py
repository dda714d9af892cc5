"""A console that fails is not hammered: a failed status report is retried after a pause.

The box reports its state to its console every minute and at once when it changes. A report the
console refused (503, 401 after it forgot the box, a network error) used to count as "changed"
at the next tick, so the box sent one every half second for as long as the console failed.
"""

from __future__ import annotations

import time

from lanlock.box.settings import change_config
from tests.servers import start_box
from tests.standin import standin_cloud

WATCHED = 4.0  # seconds of reports counted after the first one


def test_a_failing_console_gets_a_report_now_and_then_not_every_tick(tmp_path):
    with standin_cloud(503) as console:  # answers every POST, reports included, with 503

        def paired(config) -> None:
            config.console_url, config.token = console.url, "ab" * 32

        change_config(tmp_path / "box", paired)
        box = start_box(tmp_path / "box", "--cloud", "http://127.0.0.1:1")
        try:
            deadline = time.monotonic() + 30
            while not console.arrivals:
                assert time.monotonic() < deadline, "the box never reported"
                time.sleep(0.1)
            time.sleep(WATCHED)
            first = console.arrivals[0]
            reports = [at for at in console.arrivals if at <= first + WATCHED]
        finally:
            box.stop()
    # The first report, and one more if the box's state changed meanwhile; not one a tick.
    assert len(reports) <= 3, f"{len(reports)} reports in {WATCHED:g} s to a failing console"
