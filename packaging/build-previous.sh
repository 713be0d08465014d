#!/usr/bin/env bash
# Builds the previous release's `cairn` and `cairn-validator` (the version and
# commit in packaging/previous-release) for the interop test, once per
# machine, and prints the directory that holds them:
#
#   dir=$(packaging/build-previous.sh)
#   CAIRN_PREVIOUS_CAIRN=$dir/cairn cargo test --release -p cairn-cli --test interop
#
# The commit's sources come from this clone's history (`git archive`). They
# build in the same target directory as this checkout, so the dependencies
# compiled for it are reused and only the workspace's own crates compile
# again (a few minutes), at opt-level 1, with this checkout's profile for
# the dependencies. Two things make that safe:
# - cargo names a workspace crate's build by its path inside the workspace,
#   not by where the workspace is, so the old crates would share (and
#   overwrite) this checkout's fingerprints; a profile setting on each
#   workspace package (codegen-units 15 instead of 16) gives them their own;
# - the build leaves the old binaries in `$target_dir/release`; this
#   checkout's are linked back there right after (nothing recompiles),
#   also when the old build fails.
# The result is kept under ~/.cache/cairn/previous/COMMIT (the build is
# skipped when it is there).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
read -r version commit < <(grep -v '^#' packaging/previous-release | head -1)
cache="${CAIRN_PREVIOUS_CACHE:-$HOME/.cache/cairn/previous}/$commit"
if [ -x "$cache/cairn" ] && [ -x "$cache/cairn-validator" ]; then
  echo "$cache"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  # A shallow clone: fetch just that commit.
  git fetch -q --depth=1 origin "$commit" 2>/dev/null || true
  git cat-file -e "$commit^{commit}" 2>/dev/null || {
    echo "build-previous: commit $commit (release $version) is not in this clone and could not be fetched: git fetch origin $commit" >&2
    exit 1
  }
fi
src=$(mktemp -d)
restore=0
# This checkout's binaries back in target/release (fresh units: cargo only
# links them again), whatever happened to the old build.
finish() {
  [ "$restore" = 1 ] && CARGO_TARGET_DIR="$target_dir" cargo build --release --locked --workspace --bins --examples >&2
  rm -rf "$src"
}
trap finish EXIT
git archive "$commit" | tar -x -C "$src"
names=$(cd "$src" && cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))')
[ -n "$names" ] || { echo "build-previous: no packages in $commit's workspace" >&2; exit 1; }
own=()
for p in $names; do
  # codegen-units: the crates' own fingerprints (above). opt-level 1: the
  # interop test checks what the old release says on the wire, not how fast
  # it says it; about half the build's CPU time on a fresh machine.
  own+=(--config "profile.release.package.$p.codegen-units=15"
        --config "profile.release.package.$p.opt-level=1")
done
# The dependencies as this checkout's profile builds them (its
# [profile.release] and per-package settings, RocksDB's opt-level among
# them), so that they are shared, not compiled again for the old release
# when the two profiles differ.
settings=$(python3 - "$names" <<'PY'
import json, re, sys, tomllib
old_workspace = set(sys.argv[1].split())
def key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)
def flat(prefix, table):
    for k, v in table.items():
        if isinstance(v, dict):
            yield from flat(f"{prefix}.{key(k)}", v)
        else:
            yield f"{prefix}.{key(k)}={json.dumps(v)}"
release = tomllib.load(open("Cargo.toml", "rb"))["profile"]["release"]
packages = release.pop("package", {})
for name in old_workspace:
    packages.pop(name, None)
print("\n".join(flat("profile.release", release | {"package": packages})))
PY
)
while IFS= read -r setting; do
  if [ -n "$setting" ]; then own+=(--config "$setting"); fi
done <<<"$settings"
echo "build-previous: building $version ($commit) in $target_dir" >&2
# As this checkout's packages are built (examples select the dev-dependencies'
# features, so the dependencies compiled for the tests are reused, with the
# caller's environment: RUST_REED_SOLOMON_ERASURE_ARCH as CI sets it); plain
# rustc, no lints: an old commit need not pass today's clippy.
restore=1
(cd "$src" && env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS CARGO_TARGET_DIR="$target_dir" \
  cargo build --release --locked --workspace --bins --examples "${own[@]}" >&2)
rm -rf "$cache.tmp"
mkdir -p "$cache.tmp"
cp "$target_dir/release/cairn" "$target_dir/release/cairn-validator" "$cache.tmp/"
"$cache.tmp/cairn" --version >&2
finish
restore=0
trap - EXIT
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "$cache"
