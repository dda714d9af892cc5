"""``lanlock dns serve``: sockets, worker processes, signals.

The parent binds every socket and starts one worker process per socket pair under
:class:`lanlock.supervisor.Supervisor` (restarted when one dies, all stopped on SIGTERM or
SIGINT; a restarted worker takes over the very socket of the one that died, with the datagrams
queued in it).

Several workers share one port through ``SO_REUSEPORT``, which on Linux spreads datagrams and
connections over the sockets by the client's address and port. Other systems get one worker:
Windows has no ``SO_REUSEPORT``, and on macOS and the BSDs it does not spread the load (the last
socket bound gets the datagrams). One Python process answers from one core, so the workers are
how the server uses every core.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from lanlock import defaults
from lanlock.dns.challenges import check_schema
from lanlock.dns.worker import WorkerSettings, configure_logging, run_worker
from lanlock.dns.zone import Zone
from lanlock.supervisor import (
    SPREADS_OVER_SOCKETS,
    Supervisor,
    bind_per_worker,
    usable_cores,
)

log = logging.getLogger(__name__)

_TCP_BACKLOG = 128


@dataclass(frozen=True)
class ServerSettings:
    worker: WorkerSettings
    host: str = defaults.LOOPBACK
    port: int = defaults.DNS_PORT
    workers: int = 0  # 0: one per core


def worker_count(requested: int) -> int:
    """``requested``, or one per usable core; always 1 where the kernel cannot spread the load."""
    if not SPREADS_OVER_SOCKETS:
        return 1
    return requested if requested > 0 else usable_cores()


def serve(settings: ServerSettings) -> int:
    """Run until SIGTERM or SIGINT; the exit status (0, or 1 when workers keep dying)."""
    configure_logging()
    zone = Zone(settings.worker.zone)  # bad settings fail here, before anything is bound
    check_schema(settings.worker.store_url)
    count = worker_count(settings.workers)
    warn_if_one_host_can_hold_all_tcp(settings.worker)
    sockets = bind_sockets(settings.host, settings.port, count)
    port = sockets[0][0].getsockname()[1]
    log.info(
        "authoritative for %s on %s port %d (UDP and TCP), %d worker%s, SOA serial %d",
        zone.name,
        settings.host,
        port,
        count,
        "" if count == 1 else "s",
        zone.serial,
    )
    try:
        worker_args = [
            (index, settings.worker, udp, tcp) for index, (udp, tcp) in enumerate(sockets)
        ]
        return Supervisor(run_worker, worker_args, "lanlock-dns-worker").run()
    finally:
        for udp, tcp in sockets:
            udp.close()
            tcp.close()


def warn_if_one_host_can_hold_all_tcp(settings: WorkerSettings) -> None:
    tcp = settings.tcp
    if tcp.max_per_source >= tcp.max_connections:
        log.warning(
            "--tcp-max-per-source %d is not below --tcp-max-connections %d: "
            "one host can hold every TCP connection",
            tcp.max_per_source,
            tcp.max_connections,
        )


def bind_sockets(host: str, port: int, count: int) -> list[tuple[socket.socket, socket.socket]]:
    """``count`` pairs of (UDP, listening TCP) sockets on one address and port."""
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM)
    return bind_per_worker(host, port, count, kinds, _TCP_BACKLOG)  # type: ignore[return-value]
