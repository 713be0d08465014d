#!/usr/bin/env bash
# Installs what building and testing cairn needs on a fresh Debian/Ubuntu
# machine; does nothing for the parts already present. Safe to run again.
#
# `setup.sh` does it all. CI (.ci/run) runs it in two halves so that the
# arm64 cross build can start between them: `setup.sh toolchains` (Debian's
# packages, the Rust components and targets: what building needs), then
# `setup.sh test-tools` (the Python venv and iroh's relay server: what only
# the tests need).
set -euo pipefail
part="${1:-all}"
case "$part" in
  all|toolchains|test-tools) ;;
  *) echo "setup.sh: unknown part '$part': give toolchains, test-tools or nothing (both)" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ "$part" != test-tools ]; then
  # The subtensor tests run chopsticks (../shared/chain), which needs node >= 20 and npm.
  # Debian packages: clang + libclang for the RocksDB bindings (bindgen), a C++
  # compiler for RocksDB itself, the cross toolchains and qemu-user for the ARM
  # builds, dpkg-dev for packaging, systemd for `systemd-analyze verify`,
  # apt-utils (apt-ftparchive) for the apt repository.
  # chromium: the dashboard is checked in a real (headless) browser.
  # nftables, iproute2, openssl: the network lab (tests/netlab: namespaces,
  # NAT routers, the relay's certificate).
  packages=(build-essential pkg-config clang libclang-dev chromium nftables iproute2 openssl)
  if [ "${CAIRN_SKIP_CROSS:-0}" != 1 ]; then
    packages+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu gcc-arm-linux-gnueabihf
               g++-arm-linux-gnueabihf qemu-user dpkg-dev fakeroot systemd apt-utils)
  fi
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  # Rust: the toolchain comes from rustup; add the lints, the formatter and the
  # ARM targets.
  if ! command -v cargo >/dev/null; then
    echo "setup: rustup is needed: https://rustup.rs (curl https://sh.rustup.rs -sSf | sh)" >&2
    exit 1
  fi
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
  if [ "${CAIRN_SKIP_CROSS:-0}" != 1 ]; then
    installed=$(rustup target list --installed)
    for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
      grep -qx "$t" <<<"$installed" || rustup target add "$t" >/dev/null
    done
  fi
fi
if [ "$part" = toolchains ]; then echo "setup: toolchains ok"; exit 0; fi

# Python with bittensor-wallet: the hotkey tests check cairn against the real
# key files and addresses of the package btcli uses; prometheus-client's
# OpenMetrics parser reads /metrics in the metrics test.
venv="${CAIRN_VENV:-$HOME/.cache/cairn/venv}"
if ! "$venv/bin/python" -c "import bittensor_wallet, substrateinterface, prometheus_client" 2>/dev/null; then
  echo "setup: creating $venv with bittensor-wallet and substrate-interface"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  # substrate-interface: the reference client the subtensor test cross-checks against.
  "$venv/bin/pip" install -q --disable-pip-version-check "bittensor-wallet==4.1.1" "substrate-interface==1.8.1" \
    "prometheus-client==0.26.0"
fi
# iroh's relay server for the network lab, built once into its own root
# (about 3.5 min on 2 cores); the version matches the iroh cairn links.
relay_root="${CAIRN_RELAY_ROOT:-$HOME/.cache/cairn/relay}"
if [ ! -x "$relay_root/bin/iroh-relay" ]; then
  echo "setup: building iroh's relay server into $relay_root"
  CARGO_TARGET_DIR="$relay_root/target" cargo install -q --locked iroh-relay --version 1.4.1 \
    --features server --root "$relay_root"
  rm -rf "$relay_root/target"
fi
echo "setup: ok"
