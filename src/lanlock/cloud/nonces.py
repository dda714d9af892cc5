"""Replay protection: each verified request's nonce is kept past its ``iat`` window.

A nonce is kept whatever the verdict (a refused request replayed is refused as a replay), in the
store, so that no replica answers a request another one has seen. After the window the ``iat``
check refuses a replay by itself, so older nonces are swept.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lanlock.cloud.jws import IAT_WINDOW_SECONDS, Unauthorized
from lanlock.cloud.models import SeenNonce
from lanlock.store.prepared import Prepared

NONCE_TTL = dt.timedelta(seconds=2 * IAT_WINDOW_SECONDS + 60)


ADD = Prepared(insert(SeenNonce.__table__))  # every request writes one: straight to the cursor


def remember(conn: Connection, nonce: str, now: dt.datetime) -> None:
    """Keep the nonce in this transaction; Unauthorized if it was seen before (the transaction
    is then lost, as it must be: nothing a replay asked for is done)."""
    try:
        ADD.run(conn, {"nonce": nonce, "expires_at": now + NONCE_TTL})
    except IntegrityError:
        raise Unauthorized("this nonce was seen before: each request needs a new one") from None


def sweep(session: Session, now: dt.datetime) -> None:
    session.execute(delete(SeenNonce).where(SeenNonce.expires_at < now))
