#!/usr/bin/env bash
# DNS: answered queries per second of `lanlock dns serve` and, in the same run on the same cores,
# of Knot, BIND and PowerDNS with a Python pipe backend (with and without its packet cache), all
# measured with dnsperf by the peers' own harness (../shared/bench/dns-peers, see its README).
#
#   bench/dns_qps.sh              as root, after ../shared/bench/dns-peers/install.sh
#
# Runs (RUNS, default "mix unique allcores loops"):
#   mix       the query mix of bench/dns_mix.py (80 % A, 10 % AAAA, 5 % NODATA, 5 % NXDOMAIN);
#             every server on one core (CPU 1), dnsperf on the other; lanlock with one worker
#   unique    names that never repeat (every answer cache misses), against PowerDNS + pipe with
#             and without its packet cache; one core each
#   allcores  nothing pinned, lanlock with one worker per core, Knot with as many UDP workers
#             (dnsperf shares the cores: a lower, noisier figure)
#   loops     lanlock's answer code in its blocking UDP loop and in an asyncio datagram protocol
#             (bench/dns_loops.py), each next to Knot, one core each: why the blocking loop
# Environment: DNS_PEERS (../shared/bench/dns-peers next to this repository), RUN_DIR (a new
# /tmp/lanlock-dns-bench.*), PORT (5320), DNSPERF_SECONDS (15), WARMUP_SECONDS (3), and the
# other variables of compare.sh (IDLE_WAIT, IDLE_PCT, SERVER_CPU, DNSPERF_CPU ...).
# Everything stays on 127.0.0.1; every process started here is stopped by its PID at exit.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=${DNS_PEERS:-$REPO/../shared/bench/dns-peers}
PORT=${PORT:-5320}
RUNS=${RUNS:-mix unique allcores loops}
RUN=${RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/lanlock-dns-bench.XXXXXX")}
PYTHON=$REPO/.venv/bin/python
export DNSPERF_SECONDS=${DNSPERF_SECONDS:-15} WARMUP_SECONDS=${WARMUP_SECONDS:-3}

for tool in dnsperf knotd named pdns_server dig ss taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run $PEERS/install.sh (as root)" >&2; exit 2; }
done
[ -x "$PEERS/compare.sh" ] || { echo "no $PEERS/compare.sh; set DNS_PEERS" >&2; exit 2; }
[ -x "$PYTHON" ] || { echo "no $PYTHON: run ./dev test once to make the virtual environment" >&2; exit 2; }

log() { printf '%s  %s\n' "$(date +%T)" "$*"; }
SERVER_PID=
stop_server() {   # SIGTERM (lanlock stops its workers itself), then wait for it
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

answers() {   # answers PORT: dig until 10-1-2-3 answers 10.1.2.3, at most 60 s
    local end=$((SECONDS + 60))
    while (( SECONDS < end )); do
        [ "$(dig @127.0.0.1 -p "$1" "10-1-2-3.$SCOPE.$ZONE" A +short +time=1 +tries=1 2>/dev/null)" = 10.1.2.3 ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        sleep 0.3
    done
    return 1
}

start_lanlock() {   # start_lanlock WORKERS
    "$REPO/.venv/bin/lanlock" dns serve --zone "$ZONE" --port "$PORT" --workers "$1" \
        --store "sqlite:///$RUN/store.db" > "$RUN/lanlock-dns-$1.log" 2>&1 &
    SERVER_PID=$!
    answers "$PORT" || { echo "lanlock dns serve did not answer; see $RUN/lanlock-dns-$1.log" >&2; exit 3; }
    log "lanlock dns serve: port $PORT, $1 worker(s), PID $SERVER_PID"
}

compare() {   # compare NAME [compare.sh arguments after the port]: run the peers' harness, keep its output
    local name=$1
    shift
    log "run '$name': $PEERS/compare.sh (QUERIES=${QUERIES:-queries.txt}, PIN=${PIN:-1})"
    YOURS_PIDS=$SERVER_PID RUN_DIR="$RUN/$name" "$PEERS/compare.sh" "$DATA" "$PORT" "$@" \
        | tee "$RUN/$name.txt" || log "compare.sh exited with $? (see the notes above)"
}

start_loop() {   # start_loop blocking|asyncio: bench/dns_loops.py, lanlock's answers in that loop
    "$PYTHON" "$REPO/bench/dns_loops.py" --loop "$1" --port "$PORT" --zone "$ZONE" \
        > "$RUN/loop-$1.log" 2>&1 &
    SERVER_PID=$!
    answers "$PORT" || { echo "dns_loops.py --loop $1 did not answer; see $RUN/loop-$1.log" >&2; exit 3; }
}

DATA=$RUN/data
log "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $("$PYTHON" -V)"
log "run dir $RUN; lanlock $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
"$PEERS/gen_data.py" --out "$DATA" > /dev/null
"$PYTHON" "$REPO/bench/dns_mix.py" "$DATA"
ZONE=$(sed -n 's/^ZONE=//p' "$DATA/data.env") SCOPE=$(sed -n 's/^SCOPE=//p' "$DATA/data.env")

for run in $RUNS; do
    case $run in
    mix)
        start_lanlock 1
        QUERIES=$DATA/queries-mix.txt compare mix knot bind pdns-pipe pdns-pipe-nocache
        stop_server ;;
    unique)
        start_lanlock 1
        QUERIES=$DATA/queries-unique.txt compare unique pdns-pipe pdns-pipe-nocache
        stop_server ;;
    allcores)
        start_lanlock "$(nproc)"
        PIN=0 QUERIES=$DATA/queries-mix.txt compare allcores knot
        stop_server ;;
    loops)
        for loop in blocking asyncio; do
            start_loop "$loop"
            QUERIES=$DATA/queries.txt compare "loop-$loop" knot
            stop_server
        done ;;
    *) echo "unknown run '$run' (mix unique allcores loops)" >&2; exit 2 ;;
    esac
done
log "done; tables in $RUN/*.txt"
