#!/usr/bin/env bash
# The apt repository as an operator uses it, on this machine (as root):
# publishes the packages in dist/ (every architecture built) into a signed repository
# (packaging/apt-repo.sh, a throwaway key), serves it over HTTP on loopback,
# adds it as an apt source with signed-by, `apt-get install cairn-node`, runs
# the installed node as its service would and stores a shard on it; then
# publishes the same build as the next package revision, `apt-get upgrade`,
# and checks that the config edit, the node key (so the node id) and the
# shard survived and the upgraded node serves the shard it had. Finally a
# tampered Release must make `apt-get update` refuse. The source, keyring,
# packages, users and data are removed again (also on failure).
#
#   packaging/test-apt.sh          # after packaging/build.sh x86_64-unknown-linux-gnu
#
# apt sees only this repository (its own lists and cache directories), so
# the machine's other sources are neither fetched nor upgraded.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "test-apt: run as root (it installs packages)" >&2; exit 1; }
fail() { echo "test-apt: FAIL: $*" >&2; exit 1; }
arch=$(dpkg --print-architecture)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
rev1="${CAIRN_DEB_REVISION:-1}"
rev2=$((rev1 + 1))
cairn_bin="${CARGO_TARGET_DIR:-target}/release/cairn"
[ -f "dist/cairn-node_${version}-${rev1}_${arch}.deb" ] \
  || fail "dist/cairn-node_${version}-${rev1}_${arch}.deb missing: run packaging/build.sh first"
[ -x "$cairn_bin" ] || fail "$cairn_bin missing (the client side of the test)"
if dpkg-query -W -f='${Status}' cairn-node 2>/dev/null | grep -q "install ok"; then
  fail "cairn-node is already installed here; this test installs and purges it"
fi
getent passwd cairn >/dev/null && fail "a user 'cairn' already exists"

x=$(mktemp -d)
chmod 0755 "$x"
list=/etc/apt/sources.list.d/cairn-test.list
keyring=/usr/share/keyrings/cairn-test.gpg
server=""
daemon=""
cleanup() {
  [ -z "$daemon" ] || kill "$daemon" 2>/dev/null || true
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  dpkg --purge cairn-node >/dev/null 2>&1 || true
  rm -rf /var/lib/cairn "$list" "$keyring"
  userdel cairn >/dev/null 2>&1 || true
  groupdel cairn >/dev/null 2>&1 || true
  rm -f "dist/cairn-node_${version}-${rev2}_${arch}.deb" "dist/cairn-validator_${version}-${rev2}_${arch}.deb"
  rm -rf "$x"
}
trap cleanup EXIT

echo "test-apt: a throwaway signing key"
export GNUPGHOME="$x/gnupg"
install -d -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key "cairn test repository <test@cairn.invalid>" ed25519 sign 1d
fpr=$(gpg --batch --with-colons --list-secret-keys | awk -F: '$1 == "fpr" { print $10; exit }')

repo="$x/repo"
# Every architecture built so far (CI runs this after the cross builds).
bash packaging/apt-repo.sh --key "$fpr" --out "$repo" dist/cairn-*_"${version}-${rev1}"_*.deb
for deb in dist/cairn-node_"${version}-${rev1}"_*.deb; do
  a=$(dpkg-deb -f "$deb" Architecture)
  grep -qx "Package: cairn-node" "$repo/dists/stable/main/binary-$a/Packages" || fail "no cairn-node in the $a index"
  grep -q "^Architectures:.*\b$a\b" "$repo/dists/stable/Release" || fail "Release does not list $a"
  echo "test-apt: $a: $(grep -c '^Package:' "$repo/dists/stable/main/binary-$a/Packages") packages indexed"
done
install -m 0644 "$repo/cairn.gpg" "$keyring"

# A static web server on a free loopback port, as any operator's would be.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$repo" "$port" >"$x/http.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/dists/stable/InRelease')" 2>/dev/null && break
  sleep 0.1
done
echo "deb [signed-by=$keyring] http://127.0.0.1:$port stable main" > "$list"
apt_opts=(-o "Dir::Etc::sourcelist=$list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$x/lists"
          -o "Dir::Cache=$x/cache" -o APT::Sandbox::User=root -q)
mkdir -p "$x/lists/partial" "$x/cache/archives/partial"
export DEBIAN_FRONTEND=noninteractive

echo "test-apt: apt-get update, apt-get install cairn-node"
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install -y cairn-node
[ "$(dpkg-query -W -f='${Version}' cairn-node)" = "${version}-${rev1}" ] || fail "installed $(dpkg-query -W -f='${Version}' cairn-node)"

# run_node: starts the installed node as its unit would (ExecStartPre, then
# ExecStart as user cairn), waits for its READY=1, sets $daemon.
run_node() {
  setpriv --reuid cairn --regid cairn --init-groups /usr/bin/cairn --config /etc/cairn/node.toml init --quiet
  python3 - "$x" <<'EOF' > "$x/pid"
import os, socket, subprocess, sys
x = sys.argv[1]
path = os.path.join(x, "notify")
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o777)
s.settimeout(60)
env = dict(os.environ, NOTIFY_SOCKET=path, CAIRN_NETWORK_LISTEN="127.0.0.1:0", CAIRN_API_LISTEN="127.0.0.1:0")
log = open(os.path.join(x, "node.log"), "ab")
p = subprocess.Popen(["setpriv", "--reuid", "cairn", "--regid", "cairn", "--init-groups",
                      "/usr/bin/cairn", "--config", "/etc/cairn/node.toml", "run"],
                     env=env, stdout=log, stderr=log, start_new_session=True)
while True:
    try:
        msg = s.recv(4096).decode()
    except socket.timeout:
        p.kill()
        sys.exit("the node did not report READY=1 within 60 s; see " + log.name)
    if "READY=1" in msg.split("\n"):
        break
print(p.pid)
EOF
  daemon=$(cat "$x/pid")
}
stop_node() {
  kill -TERM "$daemon"
  for _ in $(seq 300); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$daemon" 2>/dev/null && fail "the node did not stop on SIGTERM"
  daemon=""
}

echo "test-apt: the installed node runs and takes a shard"
# The operator's edit, which the upgrade must keep.
sed -i 's/^#capacity = .*/capacity = "3GiB"/' /etc/cairn/node.toml
grep -q '^capacity = "3GiB"$' /etc/cairn/node.toml || fail "could not edit the config"
run_node
node_id=$(/usr/bin/cairn --config /etc/cairn/node.toml id --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["node_id"])')
key_sum=$(sha256sum /var/lib/cairn/node.key | cut -d' ' -f1)
client="$x/client"
"$cairn_bin" init --quiet --data-dir "$client" --role client --registry /var/lib/cairn/registry \
  --listen 127.0.0.1:0 --api 127.0.0.1:0
head -c 300000 /dev/urandom > "$x/shard.bin"
shard=$("$cairn_bin" shard put "$x/shard.bin" --peer "$node_id" --data-dir "$client") \
  || fail "shard put to the installed node failed; its log: $(tail -20 "$x/node.log")"
stop_node

echo "test-apt: the next revision published; apt-get upgrade"
CAIRN_DEB_REVISION=$rev2 bash packaging/build.sh "$(rustc -vV | sed -n 's/^host: //p')" >/dev/null
bash packaging/apt-repo.sh --key "$fpr" --out "$repo" \
  "dist/cairn-node_${version}-${rev2}_${arch}.deb" "dist/cairn-validator_${version}-${rev2}_${arch}.deb"
apt-get "${apt_opts[@]}" update
# Unattended, as unattended-upgrades does it: a config file the operator
# edited is kept (--force-confold) even when the package ships a new sample.
apt-get "${apt_opts[@]}" -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade -y
[ "$(dpkg-query -W -f='${Version}' cairn-node)" = "${version}-${rev2}" ] \
  || fail "after upgrade: $(dpkg-query -W -f='${Version}' cairn-node), want ${version}-${rev2}"
grep -q '^capacity = "3GiB"$' /etc/cairn/node.toml || fail "the upgrade lost the operator's config edit"
[ "$(sha256sum /var/lib/cairn/node.key | cut -d' ' -f1)" = "$key_sum" ] || fail "the upgrade changed the node key"
run_node
[ "$(/usr/bin/cairn --config /etc/cairn/node.toml id --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["node_id"])')" = "$node_id" ] \
  || fail "the node id changed across the upgrade"
"$cairn_bin" shard get "$shard" --peer "$node_id" --data-dir "$client" -o "$x/back.bin" \
  || fail "the upgraded node does not serve its shard; its log: $(tail -20 "$x/node.log")"
cmp -s "$x/shard.bin" "$x/back.bin" || fail "the upgraded node served other bytes"
stop_node

echo "test-apt: a tampered Release is refused"
rel="$repo/dists/stable"
sed -i 's/^Label: cairn$/Label: cairn-tampered/' "$rel/InRelease" "$rel/Release"
grep -q "cairn-tampered" "$rel/InRelease" || fail "could not tamper with InRelease"
rm -rf "$x/lists"; mkdir -p "$x/lists/partial"
if apt-get "${apt_opts[@]}" update >"$x/tampered.log" 2>&1; then
  cat "$x/tampered.log" >&2
  fail "apt-get update accepted a tampered Release"
fi
grep -q "BADSIG" "$x/tampered.log" || { cat "$x/tampered.log" >&2; fail "apt-get update failed, but not on the signature"; }
echo "test-apt: refused: $(grep -m1 "BADSIG" "$x/tampered.log")"
echo "test-apt: ok"
