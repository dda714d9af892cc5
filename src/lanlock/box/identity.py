"""The box's device key: made at first start, kept in a 0600 file, never sent anywhere
(docs/design.md §3)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lanlock import pki
from lanlock.fileio import write_atomic

DEVICE_KEY_FILE = "device-key.pem"


class IdentityError(RuntimeError):
    """The device key exists but cannot be used; the message says what to do."""


def load_or_create_device_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    path = data_dir / DEVICE_KEY_FILE
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        key = pki.new_private_key()
        write_atomic(path, pki.private_key_pem(key), mode=0o600)
        return key
    except OSError as exc:
        raise IdentityError(f"cannot read the device key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise IdentityError(
            f"the device key {path} is damaged; restore it from backup, or delete it to make "
            "this box a new box (it will need a new slot in the subscription)"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"the device key {path} is not an EC key")
    return key
