"""The console's record: its database UUID, the admin's settings and the admin password.

Made once, at the console's first start, in one row of the store: whichever process inserts it
first (two replicas may start at once on PostgreSQL) owns the new password and says where it is
kept (never the password itself: it would land in logs); the others find the row made. The
password's scrypt hash lives in the store, so every replica checks the same one; the password
itself is kept only in ``admin-password`` (mode 0600) in the data folder of the process that
made it, for ``lanlock console password`` to show.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lanlock.console.models import THE_CONSOLE, ConsoleRecord, LoginSession
from lanlock.console_wire import CONTROL, URL_CHARS, plain_url
from lanlock.passwords import (
    hash_password,
    new_password,
    password_matches,
    read_password_file,
    write_password_file,
)
from lanlock.store import Store
from lanlock.store.types import utcnow

MAX_CODE_CHARS = 128


class SettingsError(ValueError):
    """A setting the admin gave that cannot be used; the message says what is expected."""


def initialise(store: Store, data_dir: Path) -> bool:
    """Make the record at the first start, the admin password in ``data_dir``; False if it
    existed."""
    if _find(store) is not None:
        return False
    password = new_password()
    record = ConsoleRecord(
        id=THE_CONSOLE,
        db_uuid=str(uuid.uuid4()),
        password_hash=hash_password(password),
        form_secret=secrets.token_hex(32),
        created_at=utcnow(),
    )
    try:
        with store.transaction() as session:
            session.add(record)
    except IntegrityError:
        return False  # another process made it at the same instant; its password stands
    write_password_file(data_dir, password)
    return True


def load(store: Store) -> ConsoleRecord:
    with store.transaction() as session:
        return in_session(session)


def in_session(session: Session, lock: bool = False) -> ConsoleRecord:
    """The record, read (or locked for an update) inside the caller's transaction."""
    record = session.get(ConsoleRecord, THE_CONSOLE, with_for_update=lock)
    if record is None:  # every command initialises first: a bug, not an operator's mistake
        raise RuntimeError("the console's record is missing; initialise() was not run")
    return record


def _find(store: Store) -> ConsoleRecord | None:
    with store.transaction() as session:
        return session.get(ConsoleRecord, THE_CONSOLE)


def set_public_url(store: Store, url: str) -> None:
    with store.transaction() as session:
        in_session(session, lock=True).public_url = url


def update_settings(
    store: Store, code: str | None = None, cloud_url: str | None = None
) -> ConsoleRecord:
    """Change the subscription code and/or the cloud URL (None: unchanged; cloud "": cleared)."""
    new_code = checked_code(code) if code is not None else None
    new_cloud = checked_url(cloud_url) if cloud_url is not None else None
    with store.transaction() as session:
        record = in_session(session, lock=True)
        if new_code is not None:
            record.enterprise_code = new_code
        if cloud_url is not None:
            record.cloud_url = new_cloud or None
        return record


def checked_code(code: str) -> str:
    value = code.strip()
    if not value or len(value) > MAX_CODE_CHARS or CONTROL.search(value):
        raise SettingsError(
            f"the subscription code must be 1 to {MAX_CODE_CHARS} printable characters, as "
            "written on the subscription contract"
        )
    return value


def checked_url(url: str) -> str:
    """An http(s) URL without user, query or fragment, its trailing slash dropped; "" stays ""."""
    value = url.strip()
    if value and (len(value) > URL_CHARS or not plain_url(value, ("http", "https"))):
        raise SettingsError(f"{value!r} is not a URL like https://host[:port]")
    return value.rstrip("/")


def admin_password_matches(store: Store, password: str) -> bool:
    return password_matches(password, load(store).password_hash)


def show_password(store: Store, data_dir: Path, reset: bool) -> tuple[str, bool]:
    """The admin password, and whether it was made now.

    A new one is made on ``reset``, or when the data folder does not hold the current one
    (another replica made it, or the file was lost): the store keeps only a hash. A new
    password ends every login session.
    """
    current = read_password_file(data_dir)
    if not reset and current and admin_password_matches(store, current):
        return current, False
    password = new_password()
    with store.transaction() as session:
        in_session(session, lock=True).password_hash = hash_password(password)
        session.execute(delete(LoginSession))
    write_password_file(data_dir, password)
    return password, True
