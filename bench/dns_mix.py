"""The DNS benchmark's query mix, written next to the dns-peers data (bench/dns_qps.sh runs it).

    .venv/bin/python bench/dns_mix.py DATA_DIR

DATA_DIR comes from ``../shared/bench/dns-peers/gen_data.py``. Writes DATA_DIR/queries-mix.txt,
10,000 questions shuffled with a fixed seed:

* 80 % A of ``10-1-X-Y.<scope>.<zone>``: NOERROR with the address;
* 10 % AAAA of ``fd00--1-N.<scope>.<zone>`` (fd00::1:N): NOERROR with the address;
* 5 % AAAA of ``10-1-X-Y`` names: NOERROR without an answer (NODATA);
* 5 % A of names that cannot exist: NXDOMAIN.

and adds the fd00 names' AAAA records to DATA_DIR/zone.db, so that the static peers (Knot,
BIND) hold every name the mix asks for. The PowerDNS pipe backend synthesises A records only:
it answers the AAAA questions NXDOMAIN (its NOERROR share shows it).
"""

from __future__ import annotations

import ipaddress
import random
import sys
from pathlib import Path

from lanlock.names import address_to_label

SEED = 20261125
MARK = "; AAAA records added by lanlock bench/dns_mix.py"


def main(data: Path) -> None:
    env = dict(line.split("=", 1) for line in (data / "data.env").read_text().split())
    suffix = f"{env['SCOPE']}.{env['ZONE']}"
    a_names = [line.split()[0] for line in (data / "queries.txt").read_text().splitlines()]
    v6 = {
        address_to_label(address): address
        for address in (ipaddress.IPv6Address(f"fd00::1:{n:x}") for n in range(1000))
    }
    mix = [f"{name} A" for name in a_names[:8000]]
    mix += [f"{label}.{suffix} AAAA" for label in v6]
    mix += [f"{name} AAAA" for name in a_names[8000:8500]]
    mix += [f"no-such-{n}.{suffix} A" for n in range(500)]
    first, rest = mix[0], mix[1:]  # 10-1-2-3 stays first, as in queries.txt
    random.Random(SEED).shuffle(rest)
    (data / "queries-mix.txt").write_text("\n".join([first, *rest]) + "\n")

    zone = data / "zone.db"
    if MARK not in zone.read_text():
        records = [f"{label}.{env['SCOPE']} IN AAAA {address}" for label, address in v6.items()]
        with zone.open("a") as out:
            out.write("\n".join([MARK, *records]) + "\n")
    print(f"{data}/queries-mix.txt: {len(mix)} questions; {len(v6)} AAAA records in zone.db")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
