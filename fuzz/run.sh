#!/usr/bin/env bash
# Coverage-guided fuzzing of cairn's decoders (libFuzzer through cargo-fuzz,
# on the nightly toolchain; everything else builds on stable).
#
#   fuzz/run.sh TARGET SECONDS [LIBFUZZER-ARGS...]   fuzz one target
#   fuzz/run.sh all SECONDS                          every target, one after another
#   fuzz/run.sh cmin TARGET|all                      minimize the corpus kept in git
#   fuzz/run.sh seeds                                rewrite the seed corpora
#   fuzz/run.sh list                                 the targets
#
# A crash is written to fuzz/artifacts/TARGET/ and ends the run with its
# input; once fixed, copy the input to fuzz/regressions/TARGET/<what-it-found>
# so `cargo test -p cairn-fuzz` replays it on stable forever after.
# Each run prints one summary line (target, seconds, executions, coverage,
# corpus, crashes) and appends it to fuzz/runs.log (not in git).
set -euo pipefail
cd "$(dirname "$0")/.."

# The seeds example builds on stable in the caller's target directory; the
# fuzz targets (nightly, instrumented) in one of their own.
STABLE_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="${CAIRN_FUZZ_TARGET_DIR:-$HOME/.cache/cairn/fuzz-target}"
export RUST_REED_SOLOMON_ERASURE_ARCH="${RUST_REED_SOLOMON_ERASURE_ARCH:-x86-64-v2}"
# -a: debug assertions, so an integer overflow in a decoder is a crash.
FUZZ=(cargo +nightly fuzz)
BUILD_ARGS=(--features libfuzzer -a)

targets() { awk '/^\[\[bin\]\]/ { bin = 1; next } bin && /^name = / { gsub(/"/, "", $3); print $3; bin = 0 }' fuzz/Cargo.toml; }

need_tools() {
    rustup run nightly cargo --version >/dev/null 2>&1 ||
        { echo "run.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2; exit 2; }
    cargo fuzz --version >/dev/null 2>&1 ||
        { echo "run.sh: needs cargo-fuzz (cargo install cargo-fuzz --locked)" >&2; exit 2; }
}

fuzz_one() {
    local target=$1 secs=$2; shift 2
    local log; log=$(mktemp)
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    local before; before=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
    local status=0
    set +e
    "${FUZZ[@]}" run "${BUILD_ARGS[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 "$@" >"$log" 2>&1
    status=$?
    set -e
    grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|panicked|SUMMARY|Test unit written" "$log" | tail -n 5 || true
    local execs cov ft corpus after
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    after=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
    local line
    line=$(printf '%s target=%s seconds=%s execs=%s cov=%s ft=%s corpus=%s crashes=%s exit=%s' \
        "$(date -u +%FT%TZ)" "$target" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corpus" \
        "$((after - before))" "$status")
    echo "$line" | tee -a fuzz/runs.log
    rm -f "$log"
    return "$status"
}

case "${1:-}" in
list) targets ;;
seeds)
    CARGO_TARGET_DIR="$STABLE_TARGET_DIR" cargo run -q --release -p cairn-fuzz --example seeds
    py="${CAIRN_TEST_PYTHON:-$HOME/.cache/cairn/venv/bin/python}"
    # A hotkey file as the bittensor-wallet package itself writes it.
    "$py" - <<'PY'
import json, pathlib, tempfile
from bittensor_wallet import Wallet
d = tempfile.mkdtemp()
for name, password in [("btwallet", False), ("btwallet-encrypted", True)]:
    w = Wallet(name="fuzz", hotkey=name, path=d)
    w.create_new_hotkey(overwrite=True, use_password=password, suppress=True)
    src = pathlib.Path(d, "fuzz", "hotkeys", name).read_bytes()
    pathlib.Path(f"fuzz/corpus/key_file/seed-{name}").write_bytes(src)
PY
    ;;
cmin)
    need_tools
    shift
    for t in $([ "${1:-all}" = all ] && targets || echo "$1"); do
        "${FUZZ[@]}" cmin "${BUILD_ARGS[@]}" "$t" "fuzz/corpus/$t" 2>&1 | tail -n 1
    done
    ;;
all)
    need_tools
    secs=${2:?seconds per target}
    failed=0
    for t in $(targets); do fuzz_one "$t" "$secs" || failed=1; done
    exit "$failed"
    ;;
"" | -h | --help) sed -n '2,16p' "$0" ;;
*)
    need_tools
    target=$1
    secs=${2:?seconds}
    shift 2
    targets | grep -qx "$target" || { echo "run.sh: no target $target (fuzz/run.sh list)" >&2; exit 2; }
    fuzz_one "$target" "$secs" "$@"
    ;;
esac
