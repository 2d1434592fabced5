# Helpers shared by bench/run and bench/profile (sourced, not run).
#
# Needs: ROOT, PROFILE (release|debug), CONNS, LOADGEN_THREADS, ISSUER.
# Provides: bench_build, bench_scratch, start_tessera, start_baseline,
# stop_pid, http_status, rss_mb, loadgen, pair; sets TESSERA, LOADGEN,
# BASELINE, BULK_BIN, WORK, RESULTS, PORT, SERVER_PID.

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "${0##*/}: $*" >&2; exit 1; }

# --- build -------------------------------------------------------------------
bench_build() {
    local bins=(--bin tessera --example loadgen --example bench_baseline --example bulk_sessions) out b
    if [ "$PROFILE" = release ]; then
        # A target directory of its own: a release build must not wait on
        # (or evict) the debug builds of whoever shares the machine.
        export CARGO_TARGET_DIR=${BENCH_TARGET_DIR:-$ROOT/target/bench}
        log "building (release) in $CARGO_TARGET_DIR"
        cargo build --release "${bins[@]}"
        out="$CARGO_TARGET_DIR/release"
    else
        log "building (debug)"
        cargo build "${bins[@]}"
        out="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
    fi
    TESSERA="$out/tessera"
    LOADGEN="$out/examples/loadgen"
    BASELINE="$out/examples/bench_baseline"
    BULK_BIN="$out/examples/bulk_sessions"
    for b in "$TESSERA" "$LOADGEN" "$BASELINE" "$BULK_BIN"; do
        [ -x "$b" ] || die "missing binary $b"
    done
}

# --- scratch space and clean-up ----------------------------------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    [ -z "${WORK:-}" ] || rm -rf "$WORK"
}

# bench_scratch NAME: a fresh temporary directory (removed on exit) and
# target/bench-results/NAME/ for the figures.
bench_scratch() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    RESULTS="$ROOT/target/bench-results/$1"
    rm -rf "$RESULTS"
    mkdir -p "$RESULTS"
    FACTS="$RESULTS/facts.txt"
    : >"$FACTS"
}

fact() { printf '%s=%s\n' "$1" "$2" >>"$FACTS"; }
rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# HTTP status of GET PATH on 127.0.0.1:PORT, with bash's /dev/tcp (no curl needed).
http_status() {
    local port=$1 path=$2 line
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || { echo 000; return; }
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
    IFS=' ' read -r -t 5 _ line _ <&3 || line=000
    exec 3<&- 3>&-
    echo "${line:-000}"
}

# start_tessera DATA_DIR LOG [SECONDS]: sets TESSERA_PID and PORT, waits for
# /readyz 200, and sets READY_SECS (process start → ready).
start_tessera() {
    local dir=$1 logf=$2 limit=${3:-60} t0 deadline
    t0=$(date +%s%N)
    deadline=$(( $(date +%s) + limit ))
    "$TESSERA" serve --listen 127.0.0.1:0 --data-dir "$dir" --issuer "$ISSUER" >"$logf" 2>&1 &
    TESSERA_PID=$!
    SERVER_PID=$TESSERA_PID
    PIDS+=("$TESSERA_PID")
    PORT=""
    while [ -z "$PORT" ]; do
        kill -0 "$TESSERA_PID" 2>/dev/null || { cat "$logf" >&2; die "tessera exited during start"; }
        [ "$(date +%s)" -le "$deadline" ] || { cat "$logf" >&2; die "tessera not listening after ${limit}s"; }
        PORT=$(grep -so 'addr=127\.0\.0\.1:[0-9]*' "$logf" | head -1 | cut -d: -f2 || true)
        [ -n "$PORT" ] || sleep 0.01
    done
    until [ "$(http_status "$PORT" /readyz)" = 200 ]; do
        kill -0 "$TESSERA_PID" 2>/dev/null || { cat "$logf" >&2; die "tessera exited during start"; }
        [ "$(date +%s)" -le "$deadline" ] || { cat "$logf" >&2; die "tessera not ready after ${limit}s"; }
        sleep 0.01
    done
    READY_SECS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
}

stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

start_baseline() {
    local logf="$WORK/baseline.log" deadline
    deadline=$(( $(date +%s) + 30 ))
    "$BASELINE" 127.0.0.1:0 >"$logf" 2>&1 &
    BASELINE_PID=$!
    SERVER_PID=$BASELINE_PID
    PIDS+=("$BASELINE_PID")
    PORT=""
    while [ -z "$PORT" ]; do
        kill -0 "$BASELINE_PID" 2>/dev/null || { cat "$logf" >&2; die "baseline exited during start"; }
        [ "$(date +%s)" -le "$deadline" ] || die "baseline not listening after 30s"
        PORT=$(grep -so 'listening on 127\.0\.0\.1:[0-9]*' "$logf" | head -1 | cut -d: -f2 || true)
        [ -n "$PORT" ] || sleep 0.01
    done
}

# loadgen NAME SECS [loadgen args]: one bounded run, figures in RESULTS/NAME.json.
loadgen() {
    local name=$1 secs=$2
    shift 2
    timeout --kill-after=10 $(( ${secs%.*} + 120 )) \
        "$LOADGEN" run --addr "127.0.0.1:$PORT" --connections "$CONNS" --threads "$LOADGEN_THREADS" \
        --duration "$secs" --label "$name" --out "$RESULTS/$name.json" --server-pid "$SERVER_PID" "$@" \
        | awk '/^RPS / { print $2 }'
}

# mixed_load NAME SECS RSS_EVERY WARMUP INTROSPECT CC REFRESH REVOKE [EXPECT]:
# the mixed workload (90% introspection, 5% client_credentials, 4% refresh,
# 1% revocation) from those body files, sampling the server's RSS.
mixed_load() {
    local name=$1 secs=$2 every=$3 warmup=$4 intro=$5 cc=$6 refresh=$7 revoke=$8
    local expect=${9:-'"active":true'}
    loadgen "$name" "$secs" --warmup "$warmup" --basic-file "$BASIC" --rss-every "$every" \
        --target "name=introspect;weight=90;path=/oauth2/introspect;file=$intro;expect=$expect" \
        --target "name=client_credentials;weight=5;path=/oauth2/token;file=$cc;expect=\"access_token\"" \
        --target "name=refresh;weight=4;once;path=/oauth2/token;file=$refresh;expect=\"refresh_token\"" \
        --target "name=revoke;weight=1;once;path=/oauth2/revoke;file=$revoke"
}

# pair NAME PEAK_TARGETS HALF_TARGETS [extra args]: the peak (closed loop),
# then half of that rate (open loop). Targets are ';'-joined specs, several
# separated by '|'.
pair() {
    local name=$1 peak_t=$2 half_t=$3
    shift 3
    local -a pa=() ha=()
    local IFS='|' t
    for t in $peak_t; do pa+=(--target "$t"); done
    for t in $half_t; do ha+=(--target "$t"); done
    unset IFS
    local rps half
    rps=$(loadgen "$name.peak" "$DURATION" --warmup "$WARMUP" "${pa[@]}" "$@")
    half=$(awk -v r="${rps:-0}" 'BEGIN { printf "%.0f", r / 2 }')
    if [ "${half:-0}" -ge 1 ]; then
        loadgen "$name.half" "$DURATION" --warmup "$WARMUP" --rate "$half" "${ha[@]}" "$@" >/dev/null
    else
        echo "bench/run: $name had no successful request at its peak; no half-peak run" >&2
    fi
}

