"""Boundary: the cloud's files on disk are its own.

The attacker is another user of the cloud's host. The data folder holds the secret key that opens
the CA's keys, and a SQLite store holds the CA (encrypted), the subscription codes and the audit
trail: the folder must be 0700 and every file in it 0600 from the first start, the store's
``-wal`` and ``-shm`` files included, whatever the umask. (The tests' clouds take their secret
from LANLOCK_SECRET_KEY; the secret.key file is written 0600 by its own code.)
"""

from __future__ import annotations

import os
import stat

from lanlock.cloud.models import cloud_store
from tests.boxes import Customer, TestBox
from tests.servers import fresh_store_url, start_cloud


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_cloud_keeps_its_folder_and_files_private(tmp_path):
    old_umask = os.umask(0o022)  # the usual default: new files world-readable unless asked
    try:
        data = tmp_path / "cloud-data"
        with fresh_store_url("sqlite", data) as url:  # the default store, in the data folder
            # The harness keeps its log elsewhere: the cloud makes its data folder itself.
            cloud = start_cloud(url, tmp_path / "harness", "--data", str(data))
            try:
                store = cloud_store(url, pool_size=1)
                assert TestBox(cloud.url).ask(Customer.create(store)).result  # WAL in use
                store.dispose()
                files = sorted(p for p in data.iterdir() if p.is_file())
                assert {p.name for p in files} >= {"store.db", "store.db-wal"}
                assert mode(data) == 0o700
                assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o600) for p in files}
            finally:
                cloud.stop()
    finally:
        os.umask(old_umask)
