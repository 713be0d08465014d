#!/usr/bin/env bash
# Checks a cross build: the packaged binary is an ELF for the target, runs
# under qemu-user, and (as a real miner) stores and serves shards to a native
# cairn over loopback QUIC and answers a challenge that verifies.
#
#   packaging/test-cross.sh aarch64-unknown-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: packaging/test-cross.sh TARGET}"
target_dir="${CARGO_TARGET_DIR:-target}"
# The host side is CI's test build (see .ci/run); the same setting reuses it.
export RUST_REED_SOLOMON_ERASURE_ARCH="${RUST_REED_SOLOMON_ERASURE_ARCH:-x86-64-v2}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
case "$target" in
  aarch64-unknown-linux-gnu) arch=arm64; machine=AArch64; runner="qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
  armv7-unknown-linux-gnueabihf) arch=armhf; machine=ARM; runner="qemu-arm -L /usr/arm-linux-gnueabihf" ;;
  *) echo "not a cross target: $target" >&2; exit 2 ;;
esac
deb="dist/cairn-node_${version}-${CAIRN_DEB_REVISION:-1}_${arch}.deb"
[ -f "$deb" ] || { echo "test-cross: $deb missing; run packaging/build.sh $target" >&2; exit 1; }

x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
dpkg-deb -x "$deb" "$x"
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || { echo "test-cross: $deb is not $arch" >&2; exit 1; }
readelf -h "$x/usr/bin/cairn" | grep -q "Machine:.*$machine" \
  || { echo "test-cross: packaged cairn is not an $machine ELF" >&2; readelf -h "$x/usr/bin/cairn" >&2; exit 1; }
echo "test-cross: $deb holds an $machine ELF ($(stat -c %s "$x/usr/bin/cairn") bytes, stripped)"
$runner "$x/usr/bin/cairn" --version

# The packaged binary runs the real job under qemu.
CAIRN_CROSS_CAIRN="$runner $x/usr/bin/cairn" \
  cargo test --workspace --release --locked --test cross -- --ignored --nocapture
echo "test-cross: ok"
