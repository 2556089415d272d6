#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed time, one after another, and prints the
# executions and findings per target. See fuzz/README.md and bench/FUZZING.md.
#
#   bench/fuzz.sh            # 60 s per target
#   bench/fuzz.sh 600        # 10 minutes per target
#   TARGETS="return_to user_agent" bench/fuzz.sh 30
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz (installed
# from crates.io when missing). The committed seeds (fuzz/corpus/<target>/) are only read:
# new inputs go to a working corpus under OUT, so the committed one stays small. A finding
# is written by libFuzzer to fuzz/artifacts/<target>/ (commit it once fixed: cargo test
# replays it, see tests/fuzz_corpus.rs). Exit status 1 when any target found something.
#
# Environment knobs: TARGETS [all], OUT [target/fuzz-run], FUZZ_ARGS [extra libFuzzer
# options], SANITIZER [address].
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-60}
OUT=${OUT:-$ROOT/target/fuzz-run}
SANITIZER=${SANITIZER:-address}
FUZZ_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/fuzz

rustup toolchain list | grep -q '^nightly' ||
    { echo "fuzz.sh: needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 2; }
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (crates.io)" >&2
    cargo install cargo-fuzz --locked
fi

TARGETS=${TARGETS:-$(cargo +nightly fuzz list)}
echo "building the fuzz targets (cargo +nightly fuzz build, sanitizer $SANITIZER)" >&2
nice cargo +nightly fuzz build --sanitizer "$SANITIZER" --target-dir "$FUZZ_TARGET_DIR" >&2

mkdir -p "$OUT"
TABLE=$OUT/table.md
{
    echo "| target | seconds | executions | exec/s | corpus (seeds → end) | new units | peak RSS MB | findings |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
} >"$TABLE"
FOUND=0
for t in $TARGETS; do
    work=$OUT/corpus/$t
    mkdir -p "$work" "fuzz/artifacts/$t"
    seeds=$(find "fuzz/corpus/$t" -type f | wc -l)
    before=$(find "fuzz/artifacts/$t" -type f | sort)
    echo "fuzzing $t for ${SECONDS_PER_TARGET}s ($seeds seeds)" >&2
    status=0
    # The working corpus first: libFuzzer writes new inputs to the first directory only.
    # -timeout: an input taking over 10 s is a finding (a hang), not a slow run.
    nice cargo +nightly fuzz run --sanitizer "$SANITIZER" --target-dir "$FUZZ_TARGET_DIR" \
        "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$OUT/$t.log" 2>&1 || status=$?
    stat() { awk -v k="stat::$1:" '$1 == k { print $2 }' "$OUT/$t.log" | tail -1; }
    execs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    new=$(stat new_units_added)
    rss=$(stat peak_rss_mb)
    corp=$(grep -o 'corp: [0-9]*' "$OUT/$t.log" | tail -1 | awk '{ print $2 }')
    after=$(find "fuzz/artifacts/$t" -type f | sort)
    fresh=$(comm -13 <(echo "$before") <(echo "$after") | grep -v '^$' || true)
    if [ "$status" -ne 0 ] || [ -n "$fresh" ]; then
        FOUND=1
        what=$(grep -m1 -E '^(thread .* panicked|==[0-9]+==ERROR|SUMMARY)' "$OUT/$t.log" | cut -c1-160 || true)
        finding="**exit $status** ${fresh:-(no artifact)}: ${what:-see $OUT/$t.log}"
    else
        finding="none"
    fi
    printf '| %s | %s | %s | %s | %s → %s | %s | %s | %s |\n' "$t" "$SECONDS_PER_TARGET" \
        "${execs:-?}" "${rate:-?}" "$seeds" "${corp:-?}" "${new:-?}" "${rss:-?}" "$finding" >>"$TABLE"
    tail -1 "$TABLE" >&2
done
echo
echo "Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); $(uname -sr); $(rustc +nightly --version); $(cargo fuzz --version); $(date -u +%Y-%m-%d)." >>"$TABLE"
cat "$TABLE"
exit "$FOUND"
