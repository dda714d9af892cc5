"""Admin login sessions, kept in the console's store.

The cookie holds 32 random bytes; the store keeps only their SHA-256, so that reading the store
never yields a usable cookie. Sessions in the store (rather than signed cookies) let logout and a
new admin password end a session for good, on every replica at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete

from lanlock.console.models import LoginSession
from lanlock.store import Store
from lanlock.store.types import utcnow

COOKIE = "lanlock_console"
LIFETIME = dt.timedelta(hours=12)


def start(store: Store) -> str:
    """A new session; the cookie's value. Expired sessions are swept out on the way."""
    cookie = secrets.token_urlsafe(32)
    now = utcnow()
    with store.transaction() as session:
        session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
        session.add(
            LoginSession(token_hash=_hash(cookie), created_at=now, expires_at=now + LIFETIME)
        )
    return cookie


def binding(store: Store, cookie: str | None) -> str | None:
    """The session's id (the hash its form tokens are bound to), or None if not logged in."""
    if not cookie or len(cookie) > 100:
        return None
    key = _hash(cookie)
    with store.transaction() as session:
        found = session.get(LoginSession, key)
        if found is None or found.expires_at <= utcnow():
            return None
    return key


def end(store: Store, cookie: str | None) -> None:
    if cookie:
        with store.transaction() as session:
            session.execute(delete(LoginSession).where(LoginSession.token_hash == _hash(cookie)))


def _hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()
