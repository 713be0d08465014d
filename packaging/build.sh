#!/usr/bin/env bash
# Builds the release binaries for one target and its two .deb packages.
#
#   packaging/build.sh x86_64-unknown-linux-gnu        # amd64
#   packaging/build.sh aarch64-unknown-linux-gnu       # arm64 (64-bit Raspberry Pi OS, most boards)
#   packaging/build.sh armv7-unknown-linux-gnueabihf   # armhf (32-bit Raspberry Pi OS)
#
# Cross builds use Debian's cross toolchains (gcc/g++-aarch64-linux-gnu,
# gcc/g++-arm-linux-gnueabihf: `.ci/setup.sh` installs them); no Docker.
# Packages land in dist/. Man pages and shell completions are generated
# with a host build of the same sources (they do not depend on the target).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:?usage: packaging/build.sh TARGET}"
host=$(rustc -vV | sed -n 's/^host: //p')
target_dir="${CARGO_TARGET_DIR:-target}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
debrev="${CAIRN_DEB_REVISION:-1}"

case "$target" in
  x86_64-unknown-linux-gnu) arch=amd64; prefix=x86_64-linux-gnu ;;
  aarch64-unknown-linux-gnu) arch=arm64; prefix=aarch64-linux-gnu ;;
  armv7-unknown-linux-gnueabihf) arch=armhf; prefix=arm-linux-gnueabihf ;;
  *) echo "unsupported target $target (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2; exit 2 ;;
esac

# Host binaries are built as `cargo test --workspace` builds them: selecting
# the examples turns on the dev-dependencies' features too, so after the
# tests (CI) nothing is recompiled; without them a handful of crates would
# be built a second time with slightly different features.
host_build() { cargo build --release --locked --workspace --bins --examples; }

if [ "$target" = "$host" ]; then
  # Native: the plain `target/release` build, shared with the tests. The
  # amd64 package must run on any x86-64 with SSSE3 (not only AVX2 CPUs).
  export RUST_REED_SOLOMON_ERASURE_ARCH="${RUST_REED_SOLOMON_ERASURE_ARCH:-x86-64-v2}"
  bindir="$target_dir/release"
  host_build
else
  . packaging/cross-env.sh
  cross_env "$target" "$prefix" "$target_dir"
  # CAIRN_CROSS_PROFILE: the cargo profile of the target binaries.
  profile="${CAIRN_CROSS_PROFILE:-release}"
  bindir="$target_dir/$target/$profile"
  # The x86-64 -march setting of the Reed-Solomon SIMD code is for x86 only.
  # CI lints in its host builds (clippy-driver as RUSTC_WORKSPACE_WRAPPER,
  # see .ci/run); the target build is plain rustc.
  # CAIRN_CARGO_TIMINGS=1: cargo's timing report, in $target_dir/cargo-timings.
  env -u RUST_REED_SOLOMON_ERASURE_ARCH -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
    cargo build --profile "$profile" --locked --target "$target" -p cairn-cli -p cairn-validator \
    ${CAIRN_CARGO_TIMINGS:+--timings}
  # CAIRN_CROSS_BINARIES_ONLY=1: stop here (CI builds the target's binaries
  # beside its host build and packages them once that is done).
  if [ "${CAIRN_CROSS_BINARIES_ONLY:-0}" = 1 ]; then
    echo "built $bindir/cairn and $bindir/cairn-validator (no packages: CAIRN_CROSS_BINARIES_ONLY)"
    exit 0
  fi
  # The host binaries generate man pages and completions: the same build as
  # the native packages (and CI's), so nothing is recompiled.
  RUST_REED_SOLOMON_ERASURE_ARCH="${RUST_REED_SOLOMON_ERASURE_ARCH:-x86-64-v2}" \
    host_build
fi
hostbin="$target_dir/release"

for b in cairn cairn-validator; do
  file "$bindir/$b" | grep -q ELF || { echo "$bindir/$b is not an ELF binary" >&2; exit 1; }
done

# Lowest glibc the binaries need, for Depends.
glibc=$(objdump -T "$bindir/cairn" "$bindir/cairn-validator" 2>/dev/null \
  | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
glibc="${glibc:-2.31}"

mkdir -p dist
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# stage_package NAME BINARY CONFIG UNIT DESCRIPTION EXTRA_DEPENDS
stage_package() {
  local name=$1 bin=$2 config=$3 unit=$4 desc=$5 extra=$6
  local root="$stage/$name"
  install -Dm0755 "$bindir/$bin" "$root/usr/bin/$bin"
  install -Dm0640 "$config" "$root/etc/cairn/$(basename "$config")"
  install -Dm0644 "systemd/$unit" "$root/lib/systemd/system/$unit"
  # Each package owns its user and directories; cairn-validator depends on
  # cairn-node (its user joins group cairn).
  local base=$name
  [ "$name" = cairn-node ] && base=cairn
  install -Dm0644 "systemd/$base.sysusers" "$root/usr/lib/sysusers.d/$name.conf"
  install -Dm0644 "systemd/$base.tmpfiles" "$root/usr/lib/tmpfiles.d/$name.conf"
  mkdir -p "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
           "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
  "$hostbin/$bin" generate man "$root/usr/share/man/man1"
  gzip -9n "$root"/usr/share/man/man1/*.1
  "$hostbin/$bin" generate completions bash > "$root/usr/share/bash-completion/completions/$bin"
  "$hostbin/$bin" generate completions zsh > "$root/usr/share/zsh/vendor-completions/_$bin"
  "$hostbin/$bin" generate completions fish > "$root/usr/share/fish/vendor_completions.d/$bin.fish"
  install -Dm0644 packaging/deb/copyright "$root/usr/share/doc/$name/copyright"
  mkdir -p "$root/DEBIAN"
  local size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  sed -e "s/@NAME@/$name/" -e "s/@VERSION@/$version-$debrev/" -e "s/@ARCH@/$arch/" \
      -e "s/@SIZE@/$size/" -e "s/@GLIBC@/$glibc/" -e "s/@EXTRA_DEPENDS@/$extra/" \
      -e "s/@DESCRIPTION@/$desc/" packaging/deb/control.in > "$root/DEBIAN/control"
  echo "/etc/cairn/$(basename "$config")" > "$root/DEBIAN/conffiles"
  for s in postinst prerm postrm; do
    sed -e "s/@NAME@/$name/g" -e "s/@UNIT@/$unit/g" -e "s|@CONFIG@|/etc/cairn/$(basename "$config")|g" \
        -e "s/@BIN@/$bin/g" "packaging/deb/$s" > "$root/DEBIAN/$s"
    chmod 0755 "$root/DEBIAN/$s"
  done
  dpkg-deb --root-owner-group -Zxz --build "$root" "dist/${name}_${version}-${debrev}_${arch}.deb" >/dev/null
  echo "built dist/${name}_${version}-${debrev}_${arch}.deb"
}

stage_package cairn-node cairn node/node.toml cairn-node.service \
  "storage miner and edge node for a Bittensor storage subnet" ""
stage_package cairn-validator cairn-validator validator/validator.toml cairn-validator.service \
  "validator for the cairn storage subnet: challenges, scoring, repair, weights" \
  ", cairn-node (= $version-$debrev)"

# Stripped sizes, for docs/PERFORMANCE.md.
for b in cairn cairn-validator; do
  printf '%s %s %s bytes\n' "$target" "$b" "$(stat -c %s "$bindir/$b")"
done
