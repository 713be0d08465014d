#!/usr/bin/env bash
# Publishes .deb packages into a signed apt repository (the standard layout:
# pool/ plus dists/<suite>/), ready to be served by any static web server:
#
#   packaging/apt-repo.sh --key FINGERPRINT --out REPO [--suite stable] dist/*.deb
#
# --key may be given twice while a key is rotated: both sign, both are
# exported.
#
# Packages already in REPO stay (an older version remains installable); the
# indexes (Packages per architecture, Release) are rebuilt over the whole
# pool and signed with the given key: InRelease (clear-signed) and
# Release.gpg (detached), SHA-256 only. The key's public half is written to
# REPO/cairn.gpg, the keyring operators install as
# /usr/share/keyrings/cairn.gpg:
#
#   deb [signed-by=/usr/share/keyrings/cairn.gpg] URL stable main
#
# GNUPGHOME chooses the keyring the signing key is in (docs/RELEASING.md
# says how the maintainer's key is made and kept; tests use a throwaway
# one). Needs apt-ftparchive (apt-utils) and gpg.
set -euo pipefail

keys=() out="" suite=stable component=main
debs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --key) keys+=("${2:?--key needs a fingerprint}"); shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --suite) suite="${2:?--suite needs a name}"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "apt-repo: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) debs+=("$1"); shift ;;
  esac
done
[ ${#keys[@]} -gt 0 ] || { echo "apt-repo: --key FINGERPRINT is required (the signing key, in GNUPGHOME)" >&2; exit 2; }
[ -n "$out" ] || { echo "apt-repo: --out DIRECTORY is required" >&2; exit 2; }
command -v apt-ftparchive >/dev/null || { echo "apt-repo: apt-ftparchive missing: apt-get install apt-utils" >&2; exit 1; }
signers=()
for key in "${keys[@]}"; do
  gpg --batch --list-secret-keys "$key" >/dev/null 2>&1 \
    || { echo "apt-repo: no secret key $key in ${GNUPGHOME:-~/.gnupg}" >&2; exit 1; }
  signers+=(--local-user "$key")
done

mkdir -p "$out/pool/$component"
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
for deb in "${debs[@]}"; do
  name=$(dpkg-deb -f "$deb" Package) || { echo "apt-repo: $deb is not a .deb" >&2; exit 1; }
  # Read as apt-ftparchive will (it skips a damaged package with only a
  # message): a damaged file is refused before it reaches the pool.
  ln -sf "$(realpath "$deb")" "$check/p.deb"
  if apt-ftparchive packages "$check" 2>&1 >/dev/null | grep -q "^E:"; then
    echo "apt-repo: $deb is damaged (apt-ftparchive cannot read it); build it again" >&2
    exit 1
  fi
  dest="$out/pool/$component/${name:0:1}/$name/$(basename "$deb")"
  # A published file never changes: clients and mirrors cache it by name.
  if [ -e "$dest" ] && ! cmp -s "$deb" "$dest"; then
    echo "apt-repo: $dest is already published with other contents; bump the version (CAIRN_DEB_REVISION)" >&2
    exit 1
  fi
  install -Dm0644 "$deb" "$dest"
done

# The architectures this repository serves: those of the packages in it.
archs=$(find "$out/pool" -name '*.deb' -exec dpkg-deb -f {} Architecture \; | sort -u | tr '\n' ' ')
[ -n "$archs" ] || { echo "apt-repo: no packages in $out/pool" >&2; exit 1; }
dist="$out/dists/$suite"
rm -rf "$dist"
for arch in $archs; do
  dir="$dist/$component/binary-$arch"
  mkdir -p "$dir"
  # Paths in Packages are relative to the repository root.
  (cd "$out" && apt-ftparchive --arch "$arch" packages "pool/$component") > "$dir/Packages"
  gzip -9nk "$dir/Packages"
done
(cd "$dist" && apt-ftparchive \
  -o APT::FTPArchive::Release::Origin=cairn \
  -o APT::FTPArchive::Release::Label=cairn \
  -o APT::FTPArchive::Release::Suite="$suite" \
  -o APT::FTPArchive::Release::Codename="$suite" \
  -o APT::FTPArchive::Release::Architectures="${archs% }" \
  -o APT::FTPArchive::Release::Components="$component" \
  -o APT::FTPArchive::Release::Description="cairn storage node and validator" \
  -o APT::FTPArchive::MD5=false -o APT::FTPArchive::SHA1=false -o APT::FTPArchive::SHA512=false \
  release .) > "$dist/Release.tmp"
mv "$dist/Release.tmp" "$dist/Release"
gpg --batch --yes "${signers[@]}" --digest-algo SHA256 --clearsign -o "$dist/InRelease" "$dist/Release"
gpg --batch --yes "${signers[@]}" --digest-algo SHA256 -abs -o "$dist/Release.gpg" "$dist/Release"
gpg --batch --yes --export "${keys[@]%!}" > "$out/cairn.gpg"
echo "apt-repo: $out: suite $suite, architectures ${archs% }, $(find "$out/pool" -name '*.deb' | wc -l) packages, signed by ${keys[*]}"
