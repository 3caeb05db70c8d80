#!/usr/bin/env bash
# The built-in TURN server side by side with coturn under the same turnutils_uclient load
# (a benchmark for docs/benchmarks.md, not a test). Two network namespaces joined by a
# veth pair: the server and the clients in one (10.254.0.1), turnutils_peer echoing in the
# other (10.254.0.2, an address that is not the gateway's own, so the peer policy admits
# it through turn.allow_peers). Nothing leaves the namespaces. Needs root (ip netns).
#
#   scripts/turn-bench.sh callbridge CLIENTS MESSAGES [BINARY]   # default target/release/callbridge
#   scripts/turn-bench.sh coturn CLIENTS MESSAGES
#
# Prints one line: server, clients, packets relayed (client->peer and back), the server's
# CPU (utime+stime) per relayed packet, UDP receive-buffer drops in the server's namespace
# (/proc/net/snmp RcvbufErrors) and the packets uclient lost.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:?callbridge or coturn}
clients=${2:?clients}
messages=${3:?messages per client}
binary=${4:-target/release/callbridge}
secret=turn-bench-secret-0123456789
ns=cbturn$$
peer=cbpeer$$
work=$(mktemp -d)

cleanup() {
  [[ -n ${server_pid:-} ]] && kill "$server_pid" 2>/dev/null || true
  [[ -n ${peer_pid:-} ]] && kill "$peer_pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "$peer" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip netns add "$peer"
ip link add cbt0 netns "$ns" type veth peer name cbt1 netns "$peer"
ip -n "$ns" addr add 10.254.0.1/24 dev cbt0
ip -n "$peer" addr add 10.254.0.2/24 dev cbt1
for n in "$ns" "$peer"; do ip -n "$n" link set lo up; done
ip -n "$ns" link set cbt0 up
ip -n "$peer" link set cbt1 up

ip netns exec "$peer" turnutils_peer -L 10.254.0.2 -p 3480 > "$work/peer.log" 2>&1 &
peer_pid=$!

case $server in
  callbridge)
    cat > "$work/callbridge.toml" <<EOF
[server]
listen = "127.0.0.1:0"
media_ip = "10.254.0.1"
public_ip = "10.254.0.1"
[admin]
listen = "127.0.0.1:0"
[auth]
hs256_secret = "turn-bench-hs256-secret-0123456789"
[sip]
listen = "127.0.0.1:0"
[storage]
path = ":memory:"
[log]
level = "warn"
[turn]
listen = "10.254.0.1:3478"
secret = "$secret"
allow_peers = ["10.254.0.2/32"]
max_allocations = 100000
max_allocations_per_user = 100000
EOF
    ip netns exec "$ns" "$binary" serve --config "$work/callbridge.toml" > "$work/server.log" 2>&1 &
    server_pid=$!
    ;;
  coturn)
    ip netns exec "$ns" turnserver -n --listening-ip=10.254.0.1 --relay-ip=10.254.0.1 \
      --listening-port=3478 --use-auth-secret --static-auth-secret="$secret" --realm=callbridge \
      --allowed-peer-ip=10.254.0.2 --no-tls --no-dtls --no-cli --log-file=stdout \
      --simple-log > "$work/server.log" 2>&1 &
    server_pid=$!
    ;;
  *) echo "unknown server $server" >&2; exit 2 ;;
esac

# Bounded wait for the listener.
for _ in $(seq 100); do
  ip netns exec "$ns" ss -uln | grep -q '10.254.0.1:3478' && break
  sleep 0.1
done
ip netns exec "$ns" ss -uln | grep -q '10.254.0.1:3478' || { cat "$work/server.log"; exit 1; }

cpu() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
drops() { ip netns exec "$ns" awk '/^Udp:/ { if (h) print $6; h = 1 }' /proc/net/snmp; }
ticks=$(getconf CLK_TCK)
cpu0=$(cpu)
drops0=$(drops)
ip netns exec "$ns" turnutils_uclient -c -X -m "$clients" -n "$messages" -l 172 -z 20 \
  -e 10.254.0.2 -r 3480 -W "$secret" -u bench 10.254.0.1 > "$work/uclient.log" 2>&1 || {
  echo "turnutils_uclient failed; its last lines:" >&2
  tail -20 "$work/uclient.log" >&2
  exit 1
}
cpu1=$(cpu)
drops1=$(drops)
lost=$(grep -o 'Total lost packets [0-9]*' "$work/uclient.log" | tail -1 | awk '{print $4}')
sent=$(grep -o 'tot_send_msgs=[0-9]*' "$work/uclient.log" | tail -1 | cut -d= -f2)
recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$work/uclient.log" | tail -1 | cut -d= -f2)
packets=$(( ${sent:-0} + ${recv:-0} ))
awk -v s="$server" -v c="$clients" -v p="$packets" -v t=$((cpu1 - cpu0)) -v hz="$ticks" \
  -v d=$((drops1 - drops0)) -v l="${lost:-?}" -v sent="${sent:-0}" -v recv="${recv:-0}" 'BEGIN {
    us = p ? t / hz * 1e6 / p : 0
    printf "%s clients=%d sent=%d received=%d cpu_s=%.2f cpu_us_per_packet=%.2f rcvbuf_drops=%d uclient_lost=%s\n",
      s, c, sent, recv, t / hz, us, d, l
  }'
