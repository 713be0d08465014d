#!/usr/bin/env bash
# Guest instructions per unit of the boards' hot paths, per cargo profile:
# the speed cost of a size-first profile, measured without the noise of
# timing an emulator on a shared machine.
#
#   packaging/insn-count/count.sh aarch64-unknown-linux-gnu [--metadata] [PROFILE ...]
#
# PROFILEs default to `release dist`. --metadata adds RocksDB's write, read
# and reopen paths per record; it links RocksDB, so it is built beside the
# packaged binaries (the same selection as packaging/build.sh, which gives
# every dependency the same features and so reuses that build's RocksDB; a
# profile whose RocksDB is not built yet compiles its C++ first, most of an
# hour). Builds cairn-insn-count for TARGET in
# each profile (the same cross environment as packaging/build.sh), runs each
# workload under qemu-user with plugin.c, twice (N and 4N units), and prints
# (count(4N) - count(N)) / 3N per workload and profile, then each profile's
# counts as a ratio of the first's. Needs gcc, qemu-user and the cross
# toolchain (`.ci/setup.sh` installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${1:?usage: packaging/insn-count/count.sh TARGET [--metadata] [PROFILE ...]}"
shift
metadata=
if [ "${1:-}" = --metadata ]; then metadata=1; shift; fi
if [ $# -gt 0 ]; then profiles=("$@"); else profiles=(release dist); fi
for p in "${profiles[@]}"; do
  case "$p" in
    dev|test) echo "count.sh: profile $p builds into debug/; give release, dist or a profile of your own" >&2; exit 2 ;;
  esac
done
case "$target" in
  aarch64-unknown-linux-gnu) prefix=aarch64-linux-gnu; qemu=qemu-aarch64 ;;
  armv7-unknown-linux-gnueabihf) prefix=arm-linux-gnueabihf; qemu=qemu-arm ;;
  *) echo "count.sh: not a cross target: $target" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-target}"
. packaging/cross-env.sh
cross_env "$target" "$prefix" "$target_dir"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -shared -fPIC -O2 -o "$work/insn.so" packaging/insn-count/plugin.c

# Without --metadata the crate does not link RocksDB: a profile builds in a
# minute or two and no C++ is compiled.
if [ -n "$metadata" ]; then
  select=(-p cairn-cli -p cairn-validator -p cairn-insn-count --features cairn-insn-count/metadata)
  workloads=(encode decode hash outboard verify_shard prove verify metadata)
else
  select=(-p cairn-insn-count)
  workloads=(encode decode hash outboard verify_shard prove verify)
fi
for p in "${profiles[@]}"; do
  env -u RUST_REED_SOLOMON_ERASURE_ARCH -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
    cargo build --profile "$p" --locked --target "$target" "${select[@]}"
done

# count PROFILE WORKLOAD N: guest instructions of one run; a run that fails
# or prints no count stops the script with what qemu and the program said.
count() {
  local log="$work/run.log" n
  if ! "$qemu" -L "/usr/$prefix" -plugin "$work/insn.so" \
    "$target_dir/$target/$1/cairn-insn-count" "$2" "$3" >/dev/null 2>"$log"; then
    echo "count.sh: cairn-insn-count $2 $3 ($1) failed:" >&2
    cat "$log" >&2
    exit 1
  fi
  n=$(sed -n 's/^guest instructions: \([0-9][0-9]*\)$/\1/p' "$log")
  if [ -z "$n" ]; then
    echo "count.sh: the plugin printed no count for $2 $3 ($1):" >&2
    cat "$log" >&2
    exit 1
  fi
  echo "$n"
}

printf '%-14s %-8s' workload unit
for p in "${profiles[@]}"; do printf ' %16s' "$p"; done
printf '\n'
for w in "${workloads[@]}"; do
  case "$w" in
    encode|decode) n=1; unit="8 MiB" ;;
    metadata) n=250; unit=record ;;
    *) n=1; unit="2 MiB" ;;
  esac
  printf '%-14s %-8s' "$w" "$unit"
  first=
  for p in "${profiles[@]}"; do
    a=$(count "$p" "$w" "$n")
    b=$(count "$p" "$w" $((4 * n)))
    per=$(( (b - a) / (3 * n) ))
    if [ -z "$first" ]; then
      first=$per
      printf ' %16s' "$per"
    else
      printf ' %9s (%3s%%)' "$per" "$(( (per * 100 + first / 2) / first ))"
    fi
  done
  printf '\n'
done
