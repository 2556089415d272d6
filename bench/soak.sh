#!/usr/bin/env bash
# Soak test: a release wxgate under bounded mixed traffic for a long time, its RSS and open
# file descriptors sampled, and a verdict. What it does and a run: bench/RESULTS.md ("Soak").
#
#   bench/soak.sh            # 10 minutes
#   bench/soak.sh 90         # 90 seconds (or SOAK_SECONDS=90 bench/soak.sh)
#
# Environment knobs (defaults in brackets):
#   SOAK_SECONDS [600]  how long the traffic runs (the first argument wins)
#   SOAK_RATE [180]     operations started per second (~195 HTTP requests/s with the mix)
#   SOAK_CONCURRENCY [64]  most operations in flight    SAMPLE_SECS [10]  /proc sampling period
#   WARMUP_SECS [a fifth of the run, >= 10]  excluded from the RSS verdict
#   WXGATE_LOG [info]   NO_BUILD [unset]: reuse target/release binaries
#   OUT [target/soak]   where the report and wxgate's log are kept
#
# Exit status: 0 when the verdict passes (no errors, RSS and fds flat after warm-up, no
# panic in wxgate's log, wxgate still running), 1 when it fails.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SOAK_SECONDS=${1:-${SOAK_SECONDS:-600}}
SOAK_RATE=${SOAK_RATE:-180}
SOAK_CONCURRENCY=${SOAK_CONCURRENCY:-64}
SAMPLE_SECS=${SAMPLE_SECS:-10}
WARMUP_SECS=${WARMUP_SECS:-}
export WXGATE_LOG=${WXGATE_LOG:-info}
OUT=${OUT:-$ROOT/target/soak}

PORT_GW=18380 PORT_UP=18381 PORT_SIM=18390
T0=$(date +%s)
log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release (wxgate, bench_driver, soak_driver)"
    nice cargo build --release --quiet --bin wxgate --example bench_driver --example soak_driver
fi
REL=${CARGO_TARGET_DIR:-$ROOT/target}/release
WXGATE=$REL/wxgate BENCH=$REL/examples/bench_driver DRIVER=$REL/examples/soak_driver
[ -x "$WXGATE" ] && [ -x "$BENCH" ] && [ -x "$DRIVER" ] || die "release binaries missing (run without NO_BUILD)"

# --- everything started here stops on exit ---------------------------------------------
WORK=$(mktemp -d /tmp/wxgate-soak.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on port $1"
}
for port in $PORT_GW $PORT_UP $PORT_SIM; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use (a previous run still going?)"
    fi
done

# The simulator and the gateway's config as bench/run.sh makes them (route /off open, / with
# auth = "required", ES256 JWTs, unionid = "follower"); the upstream is soak_driver's own
# (WebSocket echo, upload sink), since nginx cannot echo WebSockets.
log "starting the WeChat simulator, the upstream and wxgate (WXGATE_LOG=$WXGATE_LOG)"
"$BENCH" sim --listen 127.0.0.1:$PORT_SIM >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
"$DRIVER" upstream --listen 127.0.0.1:$PORT_UP >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
"$BENCH" config --dir "$WORK" --listen 127.0.0.1:$PORT_GW \
    --sim http://127.0.0.1:$PORT_SIM --upstream http://127.0.0.1:$PORT_UP
"$WXGATE" run -c "$WORK/gateway.toml" >"$WORK/wxgate.out" 2>"$WORK/wxgate.log" &
GW_PID=$!
PIDS+=($GW_PID)
wait_port $PORT_SIM
wait_port $PORT_UP
wait_port $PORT_GW

mkdir -p "$OUT"
REPORT=$OUT/soak.txt
log "traffic for ${SOAK_SECONDS}s at $SOAK_RATE operations/s; report in ${REPORT#"$ROOT"/}"
ARGS=(--gateway http://127.0.0.1:$PORT_GW --pid "$GW_PID" --seconds "$SOAK_SECONDS"
    --rate "$SOAK_RATE" --concurrency "$SOAK_CONCURRENCY" --sample-secs "$SAMPLE_SECS")
[ -n "$WARMUP_SECS" ] && ARGS+=(--warmup-secs "$WARMUP_SECS")
set +e
"$DRIVER" run "${ARGS[@]}" 2>&1 | tee "$REPORT"
STATUS=${PIPESTATUS[0]}
set -e

ALIVE=yes
kill -0 "$GW_PID" 2>/dev/null || ALIVE=no
PANICS=$(grep -ci 'panicked' "$WORK/wxgate.log" || true)
{
    echo "wxgate still running: $ALIVE; panics in its log: $PANICS; log lines: $(wc -l <"$WORK/wxgate.log")"
    echo "Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); $(uname -sr); load at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee -a "$REPORT"
cp "$WORK/wxgate.log" "$OUT/wxgate.log"

if [ "$STATUS" -ne 0 ] || [ "$ALIVE" != yes ] || [ "$PANICS" -ne 0 ]; then
    log "soak FAILED (driver status $STATUS, wxgate running: $ALIVE, panics: $PANICS)"
    exit 1
fi
log "soak passed in $(($(date +%s) - T0)) s"
