"""A second Store on one SQLite file, in a process that already has one open, must not drop the
first one's locks.

Closing any descriptor of a file drops every POSIX lock the process holds on it. Making a Store
used to open and close the file (to create it 0600) even when it existed: the first Store's
connections lost their locks, the DNS's reader in another process took the WAL for unused and
reset it, and a row written next was lost — every reader after got "disk I/O error" (a short
read). Seen in a test that kept a store open while starting the DNS, which opens a second one.
"""

from __future__ import annotations

import sqlite3

from lanlock.cloud.models import cloud_store
from tests.boxes import Customer
from tests.dns.running import start_dns


def test_a_second_store_on_one_file_loses_no_row_another_process_reads(tmp_path):
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    first = cloud_store(url, pool_size=2)
    first.migrate()
    second = cloud_store(url, pool_size=1)  # as start_dns's migration step makes one
    dns = start_dns(url, tmp_path, workers=1)
    try:
        customer = Customer.create(first)
        with sqlite3.connect(path) as reader:
            rows = reader.execute("SELECT uuid FROM databases").fetchall()
    finally:
        dns.stop()
        second.dispose()
        first.dispose()
    assert rows == [(customer.db_uuid,)]
