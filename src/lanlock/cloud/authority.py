"""The embedded CA as the store keeps it: made once, shared by every replica, keys encrypted."""

from __future__ import annotations

from typing import NamedTuple

from cryptography.exceptions import InvalidKey
from sqlalchemy.exc import IntegrityError

from lanlock import defaults, names, pki
from lanlock.cloud.models import AuthorityRecord
from lanlock.store import Store

LOCAL_CA = "local"


class AuthorityError(RuntimeError):
    """The stored CA cannot be used as configured; the message says why and what to do."""


class Root(NamedTuple):
    root_pem: str
    zone: str


def root_certificate(store: Store, secret: bytes, zone: str | None = None) -> Root:
    """The root that browsers and boxes trust, and the zone it vouches for: the store's CA knows
    its zone, so ``zone`` is only a check (and the zone of a CA made now, the default's if none).
    The CA is opened with ``secret`` on the way: a lost key shows here, not at the next issuance."""
    record = _read(store)
    wanted = names.normalize_zone(zone or (record.zone if record else defaults.ZONE))
    return Root(load_or_create_authority(store, wanted, secret).root_pem, wanted)


def load_or_create_authority(store: Store, zone: str, secret: bytes) -> pki.CertificateAuthority:
    """The store's CA for ``zone``, made (root and intermediate) at first start."""
    record = _read(store)
    if record is None:
        record = _create(store, zone, secret)
    if record.zone != zone:
        raise AuthorityError(
            f"the store's CA was made for zone {record.zone!r}, not {zone!r}: its root only "
            f"vouches for {record.zone!r}; use that zone, or a new store for the new zone"
        )
    try:
        key = pki.decrypt_private_key(record.intermediate_key_encrypted, secret)
    except (ValueError, TypeError, InvalidKey) as exc:
        raise AuthorityError(
            "the CA keys in the store do not open with this secret key: give every replica the "
            "same LANLOCK_SECRET_KEY (or the same secret.key file)"
        ) from exc
    return pki.CertificateAuthority(
        root=pki.certificate_from_pem(record.root_pem),
        intermediate=pki.certificate_from_pem(record.intermediate_pem),
        intermediate_key=key,
    )


def _read(store: Store) -> AuthorityRecord | None:
    with store.transaction() as session:
        return session.get(AuthorityRecord, LOCAL_CA)


def _create(store: Store, zone: str, secret: bytes) -> AuthorityRecord:
    ca = pki.CertificateAuthority.create(zone)
    assert ca.root_key is not None
    record = AuthorityRecord(
        name=LOCAL_CA,
        zone=zone,
        root_pem=ca.root_pem,
        intermediate_pem=pki.to_pem(ca.intermediate),
        root_key_encrypted=pki.encrypt_private_key(ca.root_key, secret),
        intermediate_key_encrypted=pki.encrypt_private_key(ca.intermediate_key, secret),
    )
    try:
        with store.transaction() as session:
            session.add(record)
        return record
    except IntegrityError:
        # Another replica made it at the same moment: everyone uses the one that landed.
        existing = _read(store)
        assert existing is not None
        return existing
