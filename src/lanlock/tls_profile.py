"""The TLS every lanlock server offers: Mozilla's "intermediate" profile, AEAD suites only.

TLS 1.2 and 1.3, nothing older. At TLS 1.2 only ECDHE key exchange (forward secrecy: no RSA key
exchange) with AES-GCM or ChaCha20-Poly1305: no CBC suite (padding oracles, Lucky 13), no SHA-1
MAC, and no finite-field DHE either: it needs parameters of its own, and every client that the
profile serves has ECDHE. TLS 1.3's suites are all AEAD: OpenSSL's default three stay (Python
cannot narrow them, and need not). ALPN names ``http/1.1``, the one protocol the servers speak.
The box's HTTPS listener (for each certificate it switches to), the cloud and the console (with
``--tls-cert``) all build their context here, so that a scanner finds the same on the three.

Ground floor: imports no role.
"""

from __future__ import annotations

import ssl
from pathlib import Path

# ECDSA first: the box's keys and the embedded CA's are EC; the RSA ones serve an operator who
# gives the cloud or the console an RSA certificate.
AEAD_SUITES = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
ALPN = ["http/1.1"]


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context with the profile, serving the chain in ``cert`` with its ``key``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(AEAD_SUITES)
    context.set_alpn_protocols(ALPN)
    # No compression (CRIME), and no renegotiation, which a client could start over and over
    # to spend the server's CPU on handshakes.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # Every suite offered is strong, so the client chooses (as Mozilla's profile has it): one
    # without AES instructions, a phone or a payment terminal, then takes ChaCha20.
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(cert, key)
    return context
