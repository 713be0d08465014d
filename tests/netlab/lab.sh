#!/usr/bin/env bash
# A small internet on this machine, in network namespaces (root only):
#
#   cl-pub   the "public internet": bridge br0 203.0.113.1/24, routes between
#            the public networks. Public hosts are namespaces on br0:
#              cl-relay 203.0.113.3    cl-val 203.0.113.10
#              cl-m1..cl-mN 203.0.113.11..   (public miners)
#   cl-rg    the router of an office network: endpoint-independent NAT,
#            WAN 198.51.100.2/24 (behind cl-pub's 198.51.100.1), LAN 10.0.0.1/24
#   cl-gw    the pinning node / gateway in that office: 10.0.0.2
#   cl-r1    a home router, endpoint-independent NAT (masquerade: the mapping
#            keeps the source port; replies only from where it sent);
#            WAN 203.0.113.21, LAN 192.168.1.1/24
#   cl-h1    a home behind it: 192.168.1.2
#   cl-r2    a home router with a symmetric NAT (masquerade fully-random: a
#            new random port for every destination); WAN 203.0.113.22,
#            LAN 192.168.2.1/24
#   cl-h2    a home behind it: 192.168.2.2
#
# The relay is iroh's own relay server (`iroh-relay`, $IROH_RELAY), started
# by `up` in cl-relay: plain HTTP on 203.0.113.3:3340 (the URL nodes use,
# http://203.0.113.3:3340) and address discovery (QUIC, UDP 7842) with a
# certificate from a CA made for the lab ($state/ca.pem: network.relay_ca).
#
# The home links (cl-hN <-> cl-rN) are TUN pairs: chaos.py forwards between
# them and can drop, delay, reorder and rate-limit; `lab.sh link N [args]`
# (re)starts it. The routers forget idle UDP flows after CONNTRACK_UDP_S
# seconds (default 30, as home routers do).
#
#   lab.sh up [PUBLIC_MINERS]   tear down whatever is left, then build
#   lab.sh link N [chaos args]  (re)start home N's link with these settings
#   lab.sh down                 kill everything in the lab's namespaces, remove them
#
# Every address is a documentation or private range inside the lab's own
# namespaces; nothing leaves the machine. `up` cleans up after itself if it
# fails half-way (trap), and starts by removing a lab a killed run left.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
state="${CAIRN_NETLAB_STATE:-/run/cairn-netlab}"
udp_timeout="${CONNTRACK_UDP_S:-30}"
python="${PYTHON:-python3}"
relay_bin="${IROH_RELAY:-$HOME/.cache/cairn/relay/bin/iroh-relay}"

namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep '^cl-' || true; }

down() {
  for ns in $(namespaces); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  # The link programs live in the root namespace (they attach to both ends).
  if [ -d "$state" ]; then
    for f in "$state"/link*.pid; do
      [ -e "$f" ] || continue
      kill -9 "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done
  fi
  # (Any clone's link programs: the lab's names are fixed, one lab at a time.)
  pkill -9 -f "tests/netlab/chaos.py" 2>/dev/null || true
  for ns in $(namespaces); do ip netns del "$ns" 2>/dev/null || true; done
  # A veth or TUN whose namespace is gone is gone with it.
  rm -rf "$state"
}

need() {
  command -v "$1" >/dev/null || { echo "lab.sh: $1 is missing; install $2 (bash .ci/setup.sh does)" >&2; exit 1; }
}

ns() { ip netns add "$1"; ip -n "$1" link set lo up; }

# public_host NS ADDR: a host on the public bridge.
public_host() {
  local n="$1" addr="$2" port="p-${1#cl-}"
  ns "$n"
  ip link add eth0 netns "$n" type veth peer name "$port" netns cl-pub
  ip -n cl-pub link set "$port" master br0 up
  ip -n "$n" addr add "$addr/24" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$n" route add default via 203.0.113.1
}

# home N WAN_ADDR NAT_RULE: router cl-rN and home cl-hN on 192.168.N.0/24.
home() {
  local n="$1" wan="$2" rule="$3"
  local r="cl-r$n" h="cl-h$n"
  public_host "$r" "$wan"
  ns "$h"
  ip -n "$r" tuntap add dev lan mode tun
  ip -n "$h" tuntap add dev eth0 mode tun
  ip -n "$r" addr add "192.168.$n.1/24" dev lan
  ip -n "$h" addr add "192.168.$n.2/24" dev eth0
  ip -n "$r" link set lan up
  ip -n "$h" link set eth0 up
  ip -n "$h" route add default via "192.168.$n.1" dev eth0
  nat "$r" "$rule"
  link "$n"
}

# nat ROUTER RULE: forwarding, masquerade out of eth0, no unsolicited
# inbound (dropped before conntrack confirms it, as home routers do), and
# short UDP conntrack timeouts.
nat() {
  ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$1" nft -f - <<EOF
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "eth0" $2
  }
}
table ip filter {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "eth0" ct state new drop
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    iifname { "lan", "eth1" } accept
    ct state established,related accept
  }
}
EOF
  # Conntrack is per namespace once the NAT table exists.
  ip netns exec "$1" sysctl -qw net.netfilter.nf_conntrack_udp_timeout="$udp_timeout"
  ip netns exec "$1" sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream="$udp_timeout"
}

# link N [chaos args]: (re)start home N's link program.
link() {
  local n="$1"; shift
  mkdir -p "$state"
  if [ -e "$state/link$n.pid" ]; then
    kill "$(cat "$state/link$n.pid")" 2>/dev/null || true
    # Wait for it to let go of the devices before attaching again.
    while kill -0 "$(cat "$state/link$n.pid")" 2>/dev/null; do sleep 0.05; done
  fi
  local log="$state/link$n.log"
  # The stopped run's counters stay readable beside the new run's log.
  [ -e "$log" ] && mv "$log" "$log.prev"
  : >"$log"
  # a = the home's end, b = the router's end: --rate-a-to-b is the uplink.
  setsid "$python" "$here/chaos.py" --a "cl-h$n:eth0" --b "cl-r$n:lan" "$@" >>"$log" 2>&1 &
  echo $! >"$state/link$n.pid"
  # Ready once it has attached to both devices (or failed).
  until grep -q "chaos: ready" "$log"; do
    if ! kill -0 "$(cat "$state/link$n.pid")" 2>/dev/null; then
      echo "lab.sh: the link program of home $n failed:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.05
  done
}

# relay: a CA and a certificate for 203.0.113.3, then the relay server.
relay() {
  local d="$state/relay"
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=cairn-netlab-ca -keyout "$d/ca.key" -out "$state/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=203.0.113.3 -keyout "$d/relay.key" -out "$d/relay.csr" 2>/dev/null
  printf 'subjectAltName=IP:203.0.113.3\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n' >"$d/ext"
  openssl x509 -req -in "$d/relay.csr" -CA "$state/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/ext" -out "$d/relay.pem" 2>/dev/null
  cat >"$d/relay.toml" <<EOF
enable_relay = true
http_bind_addr = "203.0.113.3:3340"
enable_quic_addr_discovery = true
enable_metrics = false
[tls]
cert_mode = "Manual"
manual_cert_path = "$d/relay.pem"
manual_key_path = "$d/relay.key"
quic_bind_addr = "203.0.113.3:7842"
EOF
  ip netns exec cl-relay setsid "$relay_bin" --dev --config-path "$d/relay.toml" >"$state/relay.log" 2>&1 &
  local pid=$!
  # Ready once it listens (or failed).
  until ip netns exec cl-relay ss -Hltn 'sport = :3340' | grep -q 3340; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "lab.sh: the relay failed:" >&2; cat "$state/relay.log" >&2; exit 1
    fi
    sleep 0.05
  done
}

up() {
  local miners="${1:-4}"
  need nft nftables
  need ip iproute2
  need "$python" python3
  need openssl openssl
  [ -x "$relay_bin" ] || { echo "lab.sh: no relay server at $relay_bin; cargo install iroh-relay --version 1.4.1 --features server --locked --root ~/.cache/cairn/relay (bash .ci/setup.sh does), or set IROH_RELAY" >&2; exit 1; }
  down
  trap 'echo "lab.sh: up failed; removing the half-built lab" >&2; down' ERR
  mkdir -p "$state"
  ns cl-pub
  ip -n cl-pub link add br0 type bridge
  ip -n cl-pub addr add 203.0.113.1/24 dev br0
  ip -n cl-pub link set br0 up
  ip netns exec cl-pub sysctl -qw net.ipv4.ip_forward=1
  public_host cl-relay 203.0.113.3
  public_host cl-val 203.0.113.10
  for i in $(seq 1 "$miners"); do public_host "cl-m$i" "203.0.113.$((10 + i))"; done
  # The office: its router's WAN is routed through cl-pub, not on the bridge.
  ns cl-rg
  ns cl-gw
  ip link add eth0 netns cl-rg type veth peer name office netns cl-pub
  ip -n cl-pub addr add 198.51.100.1/24 dev office
  ip -n cl-pub link set office up
  ip -n cl-rg addr add 198.51.100.2/24 dev eth0
  ip -n cl-rg link set eth0 up
  ip -n cl-rg route add default via 198.51.100.1
  ip link add eth1 netns cl-rg type veth peer name eth0 netns cl-gw
  ip -n cl-rg addr add 10.0.0.1/24 dev eth1
  ip -n cl-rg link set eth1 up
  ip -n cl-gw addr add 10.0.0.2/24 dev eth0
  ip -n cl-gw link set eth0 up
  ip -n cl-gw route add default via 10.0.0.1
  nat cl-rg "masquerade"
  home 1 203.0.113.21 "masquerade"
  home 2 203.0.113.22 "masquerade fully-random"
  relay
  trap - ERR
  echo "lab.sh: up ($miners public miners)"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down; echo "lab.sh: down" ;;
  link) shift; n="$1"; shift; link "$n" "$@" ;;
  *) echo "usage: lab.sh up [PUBLIC_MINERS] | link N [chaos.py args] | down" >&2; exit 2 ;;
esac
