"""The HTTPS listener's certificate switch (docs/design.md §8).

The listener keeps one ``SSLContext`` for its whole life; its ``sni_callback`` hands every new
handshake to the context of the current pair. Installing a certificate builds a complete new
context first (a bad pair raises there and the old one keeps serving), then swaps one reference:
new connections get the new certificate, open ones keep theirs, nothing restarts. Calling
``load_cert_chain`` on a context that is serving, from another thread, was seen to crash the
process in the handshake; this design never does.

Every context, the listener's and each pair's, is built with the TLS profile
(:func:`lanlock.tls_profile.server_context`): OpenSSL picks the protocol version with the
listener's context, before the callback runs, but the suite and the ALPN protocol with the one
the callback switched to, so both must carry it.
"""

from __future__ import annotations

import logging
import ssl

from lanlock.box.tls_store import Pair

log = logging.getLogger("lanlock.box.tls")


class CertificateSwitch:
    def __init__(self, pair: Pair) -> None:
        self._current = pair.ssl_context()
        self.serial = pair.leaf.serial_number
        self.listener_context = pair.ssl_context()
        self.listener_context.sni_callback = self._select

    def _select(
        self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext
    ) -> None:
        # Called for every handshake, with or without SNI: a browser opening the box by IP
        # sends none, and must get the current certificate all the same.
        connection.context = self._current

    def switch(self, pair: Pair) -> None:
        context = pair.ssl_context()  # raises on a bad pair: the old context stays in place
        self._current = context  # one reference assignment: atomic for every handshake after it
        self.serial = pair.leaf.serial_number
        log.info("now serving certificate serial %x", pair.leaf.serial_number)
