#!/usr/bin/env bash
# wxgate side by side with nginx, in one run on this machine. See bench/README.md.
#
# Environment knobs (defaults in brackets):
#   DURATION [5]    seconds per measured wrk run      WARMUP [1]  seconds of warm-up before each
#   ROUNDS [3]      times every row is measured, interleaved; the table shows medians
#   CONNS ["64 256"] wrk connection counts            IDLE_CONNS [10000] idle keep-alive clients
#   WRK_CPUS [1]    CPUs wrk is pinned to (taskset)    WRK_THREADS [1]
#   SERVER_CPUS []  CPUs the servers are pinned to (empty: not pinned)
#   LOGIN_CONCURRENCY [16]   WXGATE_LOG [info]   NO_BUILD [unset]: skip cargo build
#   OUT [target/bench] where the table and raw outputs are kept
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-"64 256"}
IDLE_CONNS=${IDLE_CONNS:-10000}
WRK_CPUS=${WRK_CPUS:-1}
WRK_THREADS=${WRK_THREADS:-1}
SERVER_CPUS=${SERVER_CPUS:-}
LOGIN_CONCURRENCY=${LOGIN_CONCURRENCY:-16}
export WXGATE_LOG=${WXGATE_LOG:-info}
OUT=${OUT:-$ROOT/target/bench}

PORT_GW=18080 PORT_UP=18081 PORT_NGX=18082 PORT_SIM=18090
UA='Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.59(0x18003b26) NetType/WIFI Language/zh_CN'
T0=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

log() { printf '[%3ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- what it needs -------------------------------------------------------------------
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    log "installing wrk and nginx (Debian packages)"
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk nginx >/dev/null
fi
NGINX=$(command -v nginx)
# 10,000 idle clients need as many descriptors in the gateway and in the driver.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ -z "${NO_BUILD:-}" ]; then
    log "cargo build --release (wxgate, bench_driver)"
    cargo build --release --quiet --bin wxgate --example bench_driver
fi
WXGATE=$ROOT/target/release/wxgate
DRIVER=$ROOT/target/release/examples/bench_driver
[ -x "$WXGATE" ] && [ -x "$DRIVER" ] || die "release binaries missing (run without NO_BUILD)"

# --- everything started here stops on exit ---------------------------------------------
WORK=$(mktemp -d /tmp/wxgate-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers run as nobody
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A command prefix, not a function: `$!` must be the server itself so that it can be killed.
PIN=()
[ -n "$SERVER_CPUS" ] && PIN=(taskset -c "$SERVER_CPUS")

wait_port() {
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    die "nothing listens on port $1"
}

for port in $PORT_GW $PORT_UP $PORT_NGX $PORT_SIM; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use (a previous run still going?)"
    fi
done

# --- the fixed upstream and nginx proxy_pass -----------------------------------------------
common_conf() {
    cat <<EOF
worker_processes auto;
daemon off;
pid $WORK/$1.pid;
error_log $WORK/$1.error.log warn;
events { worker_connections 32768; }
EOF
}
temp_paths() {
    local d
    for d in client_body proxy fastcgi uwsgi scgi; do echo "    ${d}_temp_path $WORK/$1-$d;"; done
}

{
    common_conf upstream
    cat <<EOF
http {
    access_log off;
$(temp_paths upstream)
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$PORT_UP backlog=4096;
        location / {
            default_type text/plain;
            return 200 "hello from the upstream\n";
        }
    }
}
EOF
} >"$WORK/upstream.conf"

# As a user would write it: keep-alive to the upstream, the usual forwarding headers, the
# default access log (combined format, one write per request) to a file.
{
    common_conf nginx
    cat <<EOF
http {
    access_log $WORK/nginx-access.log;
$(temp_paths nginx)
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:$PORT_UP;
        keepalive 512;
    }
    server {
        listen 127.0.0.1:$PORT_NGX backlog=4096;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
        location /nolog/ {
            access_log off;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
} >"$WORK/nginx.conf"

log "starting the upstream (nginx return 200) and nginx proxy_pass"
"${PIN[@]}" "$NGINX" -e "$WORK/upstream.error.log" -c "$WORK/upstream.conf" >"$WORK/upstream.stderr" 2>&1 &
PIDS+=($!)
"${PIN[@]}" "$NGINX" -e "$WORK/nginx.error.log" -c "$WORK/nginx.conf" >"$WORK/nginx.stderr" 2>&1 &
PIDS+=($!)
wait_port $PORT_UP
wait_port $PORT_NGX

# --- the simulator and wxgate ----------------------------------------------------------------
log "starting the WeChat simulator and wxgate (WXGATE_LOG=$WXGATE_LOG, stderr to a file)"
"${PIN[@]}" "$DRIVER" sim --listen 127.0.0.1:$PORT_SIM >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
"$DRIVER" config --dir "$WORK" --listen 127.0.0.1:$PORT_GW \
    --sim http://127.0.0.1:$PORT_SIM --upstream http://127.0.0.1:$PORT_UP
"${PIN[@]}" "$WXGATE" run -c "$WORK/gateway.toml" >"$WORK/wxgate.out" 2>"$WORK/wxgate.log" &
GW_PID=$!
PIDS+=($GW_PID)
wait_port $PORT_SIM
wait_port $PORT_GW

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
RSS_START=$(rss_kb $GW_PID VmRSS)

COOKIE=$("$DRIVER" login-cookie --gateway http://127.0.0.1:$PORT_GW --path /) ||
    die "login through the gateway failed (see $WORK/wxgate.log)"
log "logged in: ${COOKIE:0:40}…"

# Sanity: each target answers what its row claims.
check() { # url expected-status [curl args]
    local url=$1 want=$2 got
    shift 2
    got=$(curl -s -o /dev/null -w '%{http_code}' -A "$UA" "$@" "$url")
    [ "$got" = "$want" ] || die "$url answered $got, expected $want"
}
check http://127.0.0.1:$PORT_UP/ 200
check http://127.0.0.1:$PORT_NGX/ 200
check http://127.0.0.1:$PORT_GW/off/ 200
check http://127.0.0.1:$PORT_GW/ 200 -H "Cookie: $COOKIE"
check http://127.0.0.1:$PORT_GW/ 302
curl -s -D - -o /dev/null -A "$UA" -H "Cookie: $COOKIE" http://127.0.0.1:$PORT_GW/ >"$WORK/auth-response.txt"

# --- wrk rows ----------------------------------------------------------------------------------
mkdir -p "$OUT"
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# Converts wrk's "437.00us" / "2.91ms" / "1.02s" to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.3f", n }'; }

run_wrk() { # round key label url [wrk args]
    local round=$1 key=$2 label=$3 url=$4 c raw rps p50 p99 errs
    shift 4
    for c in $CONNS; do
        taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$c" -d"${WARMUP}s" -H "User-Agent: $UA" "$@" "$url" >/dev/null
        raw=$OUT/wrk-$key-$c-r$round.txt
        taskset -c "$WRK_CPUS" wrk -t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --latency -H "User-Agent: $UA" "$@" "$url" >"$raw"
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$raw")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$raw")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$raw")")
        errs=$(awk '/Non-2xx or 3xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$raw")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$key" "$label" "$c" "$rps" "$p50" "$p99" "$errs" >>"$RESULTS"
        log "$(printf 'round %s  %-40s c=%-4s %10s req/s  p50 %8s ms  p99 %8s ms  errors %s' "$round" "$label" "$c" "$rps" "$p50" "$p99" "$errs")"
    done
}

# Every row once per round, rounds one after another: the machine's speed drifts over minutes
# (shared vCPUs), so each wxgate row is compared with the nginx row of its own round and the
# table shows the median over the rounds.
for round in $(seq "$ROUNDS"); do
    run_wrk "$round" upstream "upstream directly (nginx return 200)" http://127.0.0.1:$PORT_UP/
    run_wrk "$round" nginx "nginx proxy_pass" http://127.0.0.1:$PORT_NGX/
    run_wrk "$round" nginx_nolog "nginx proxy_pass, access_log off" http://127.0.0.1:$PORT_NGX/nolog/
    run_wrk "$round" off 'wxgate auth = "off"' http://127.0.0.1:$PORT_GW/off/
    run_wrk "$round" required 'wxgate auth = "required", session' http://127.0.0.1:$PORT_GW/ -H "Cookie: $COOKIE"
    run_wrk "$round" redirect "wxgate no session: 302 to authorize" http://127.0.0.1:$PORT_GW/
done
RSS_AFTER_WRK=$(rss_kb $GW_PID VmRSS)

log "full logins for ${DURATION}s at concurrency $LOGIN_CONCURRENCY"
LOGINS=$(taskset -c "$WRK_CPUS" "$DRIVER" logins --gateway http://127.0.0.1:$PORT_GW --path / \
    --seconds "$DURATION" --concurrency "$LOGIN_CONCURRENCY" 2>"$OUT/logins.err")
echo "$LOGINS" >"$OUT/logins.txt"
log "$LOGINS"

log "$IDLE_CONNS idle keep-alive connections to wxgate"
FIFO=$WORK/idle.out
"$DRIVER" idle --addr 127.0.0.1:$PORT_GW --path /off/ --connections "$IDLE_CONNS" --hold 60 >"$FIFO" 2>"$OUT/idle.err" &
IDLE_PID=$!
PIDS+=($IDLE_PID)
for _ in $(seq 600); do grep -q '^ready' "$FIFO" && break; sleep 0.1; done
grep -q '^ready' "$FIFO" || die "the idle driver did not get ready"
sleep 2
RSS_IDLE=$(rss_kb $GW_PID VmRSS)
IDLE_LINE=$(cat "$FIFO")
log "$IDLE_LINE; wxgate VmRSS $(mb "$RSS_IDLE") MB"
kill $IDLE_PID 2>/dev/null || true
wait $IDLE_PID 2>/dev/null || true
sleep 1
RSS_AFTER_IDLE=$(rss_kb $GW_PID VmRSS)

# The same idle connections to nginx proxy_pass, for comparison (its workers' RSS summed).
NGX_PID=$(cat "$WORK/nginx.pid")
ngx_rss() { local p t=0; for p in $(pgrep -P "$NGX_PID"); do t=$((t + $(rss_kb "$p" VmRSS))); done; echo $t; }
NGX_RSS_BEFORE=$(ngx_rss)
"$DRIVER" idle --addr 127.0.0.1:$PORT_NGX --path /nolog/ --connections "$IDLE_CONNS" --hold 60 >"$WORK/idle-nginx.out" 2>>"$OUT/idle.err" &
IDLE_PID=$!
PIDS+=($IDLE_PID)
for _ in $(seq 600); do grep -q '^ready' "$WORK/idle-nginx.out" && break; sleep 0.1; done
sleep 2
NGX_RSS_IDLE=$(ngx_rss)
log "nginx: $(cat "$WORK/idle-nginx.out"); workers' RSS $(mb "$NGX_RSS_BEFORE") → $(mb "$NGX_RSS_IDLE") MB"
kill $IDLE_PID 2>/dev/null || true
wait $IDLE_PID 2>/dev/null || true
RSS_PEAK=$(rss_kb $GW_PID VmHWM)
LOG_LINES=$(wc -l <"$WORK/wxgate.log")

# --- the table -----------------------------------------------------------------------------------
TABLE=$OUT/table.md
{
    echo "| what | conns | requests/s | p50 ms | p99 ms | req/s ÷ nginx | p99 ÷ nginx | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    # Medians over the rounds; the ratios are taken within each round (against that round's
    # nginx proxy_pass row), then the median, with the lowest and highest in brackets.
    awk -F'\t' '
        function median(s,   n, a, i, j, t) {
            n = split(s, a, " ")
            for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function lo(s,   n, a, i, m) { n = split(s, a, " "); m = a[1] + 0; for (i = 2; i <= n; i++) if (a[i] + 0 < m) m = a[i] + 0; return m }
        function hi(s,   n, a, i, m) { n = split(s, a, " "); m = a[1] + 0; for (i = 2; i <= n; i++) if (a[i] + 0 > m) m = a[i] + 0; return m }
        { r = $1; k = $2 SUBSEP $4
          if (!(k in label)) { order[++rows] = k; label[k] = $3; conns[k] = $4 }
          rps[k] = rps[k] " " $5; p50[k] = p50[k] " " $6; p99[k] = p99[k] " " $7; err[k] += $8
          raw_rps[r, k] = $5; raw_p99[r, k] = $7; rounds[r] = 1 }
        END {
            for (i = 1; i <= rows; i++) {
                k = order[i]; n = "nginx" SUBSEP conns[k]; rr = ""; qq = ""
                for (r in rounds) if ((r, n) in raw_rps && raw_rps[r, n] > 0) {
                    rr = rr " " raw_rps[r, k] / raw_rps[r, n]; qq = qq " " raw_p99[r, k] / raw_p99[r, n] }
                ratio = rr == "" ? "-" : sprintf("%.2f× (%.2f–%.2f)", median(rr), lo(rr), hi(rr))
                q = qq == "" ? "-" : sprintf("%.2f× (%.2f–%.2f)", median(qq), lo(qq), hi(qq))
                printf "| %s | %s | %.0f | %.2f | %.2f | %s | %s | %s |\n", label[k], conns[k], median(rps[k]), median(p50[k]), median(p99[k]), ratio, q, err[k]
            }
        }' "$RESULTS"
    echo "$LOGINS" | awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "| wxgate full login (page → authorize → callback → code exchange) | %s | %.1f logins/s | %.2f | %.2f | - | - | %s |\n",
            c, v["per_sec"], v["p50_ms"], v["p99_ms"], v["errors"] }' c="$LOGIN_CONCURRENCY"
    echo
    echo "wxgate RSS: $(mb "$RSS_START") MB at start, $(mb "$RSS_AFTER_WRK") MB after the wrk runs," \
        "$(mb "$RSS_IDLE") MB with $IDLE_CONNS idle keep-alive connections ($IDLE_LINE)," \
        "$(mb "$RSS_AFTER_IDLE") MB after they closed; peak (VmHWM) $(mb "$RSS_PEAK") MB." \
        "For comparison, nginx proxy_pass's workers: $(mb "$NGX_RSS_BEFORE") MB → $(mb "$NGX_RSS_IDLE") MB with the same $IDLE_CONNS idle connections."
    echo
    echo "wrk: $WRK_THREADS thread(s) pinned to CPU $WRK_CPUS, ${WARMUP}s warm-up + ${DURATION}s per row and round, $ROUNDS rounds (medians); servers pinned to: ${SERVER_CPUS:-none (free on all CPUs)}." \
        "WXGATE_LOG=$WXGATE_LOG, stderr to a file ($LOG_LINES lines); nginx access log to a file (combined format)."
    echo "Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); $(uname -sr); $("$NGINX" -v 2>&1 | sed 's/.*: //'); $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }'); load before the run: $LOAD_BEFORE."
} >"$TABLE"
cp "$WORK/auth-response.txt" "$OUT/auth-response.txt"
echo
cat "$TABLE"
log "done in $(($(date +%s) - T0)) s; table and raw wrk outputs in ${OUT#"$ROOT"/}/"
