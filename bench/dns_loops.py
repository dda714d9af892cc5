"""One DNS worker's UDP loop, blocking (as ``lanlock dns serve`` runs it) or asyncio.

The evidence for the blocking loop: both variants answer with lanlock's own answer paths (the
fast path, then dnspython; no store), so the loop is the only difference. ``bench/dns_qps.sh``
starts each on the same core and measures it with dnsperf.

    .venv/bin/python bench/dns_loops.py --loop blocking|asyncio --port P [--zone iot.test]
"""

from __future__ import annotations

import argparse
import asyncio
import socket

from lanlock.dns.worker import Answers, serve_udp
from lanlock.dns.zone import Zone, ZoneSettings


class NoChallenges:
    def values(self, name: str) -> list[str] | None:
        return []


class AnswerProtocol(asyncio.DatagramProtocol):
    def __init__(self, answers: Answers) -> None:
        self._answers = answers
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        answers = self._answers
        try:
            reply = answers.fast(data) or answers.slow(data, tcp=False)
        except Exception:
            reply = answers.failed(data)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


async def serve_asyncio(sock: socket.socket, answers: Answers) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: AnswerProtocol(answers), sock=sock)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["blocking", "asyncio"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--zone", default="iot.test")
    args = parser.parse_args()
    answers = Answers(Zone(ZoneSettings(zone=args.zone)), NoChallenges())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    if args.loop == "blocking":
        serve_udp(sock, answers, None)
    else:
        asyncio.run(serve_asyncio(sock, answers))


if __name__ == "__main__":
    main()
