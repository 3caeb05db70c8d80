#!/usr/bin/env bash
# Runs a command (e.g. callbridge-load) in a fresh network namespace with loopback up and
# a veth pair (cbl0 10.254.0.1/24 <-> cbl1), so a gateway that skips loopback when it
# gathers ICE candidates (Janus) has a non-loopback interface, and no traffic can leave
# the namespace. Needs root (unshare --net, ip link).
#   scripts/load-netns.sh target/release/callbridge-load --janus --janus-ice-iface cbl0 sweep ...
set -euo pipefail
exec unshare --net -- bash -c '
  set -euo pipefail
  ip link set lo up
  ip link add cbl0 type veth peer name cbl1
  ip addr add 10.254.0.1/24 dev cbl0
  ip link set cbl1 up
  ip link set cbl0 up
  # The webrtc crate joins multicast (mDNS) when it builds a peer connection: ENODEV
  # without a route.
  ip route add default dev cbl0
  exec "$@"
' load-netns "$@"
