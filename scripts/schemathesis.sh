#!/usr/bin/env bash
# Fuzzes the /v1 API against its own OpenAPI document with schemathesis (PyPI), on
# a throwaway gateway (loopback, SQLite in a temporary directory). Optional: not
# part of .ci/run. Needs python3 with venv (Debian: python3-venv).
#   scripts/schemathesis.sh [SECONDS]      (default 60)
# POST /v1/drain is left out: it would drain and stop the gateway under test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
target=$(realpath "${CARGO_TARGET_DIR:-target}")
venv="$target/schemathesis-venv"
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis
fi
cargo build -q
bin="$target/debug/callbridge"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$dir/cb.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$admin"
[sip]
listen = "127.0.0.1:0"
[auth]
hs256_secret = "schemathesis-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
[storage]
path = "$dir/cb.db"
[ratelimit]
http_per_ip_per_sec = 100000
http_burst = 100000
EOF
"$bin" serve --config "$dir/cb.toml" > "$dir/stdout.log" 2> "$dir/stderr.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
# The operator API is on the admin listener and takes operator tokens.
token=$("$bin" token --operator --sub schemathesis --scope "admin recordings:read" --ttl 1h --config "$dir/cb.toml")
# Run from the temporary directory: schemathesis leaves a .schemathesis/ cache.
cd "$dir"
"$venv/bin/st" run "http://127.0.0.1:$admin/v1/openapi.json" \
  -H "Authorization: Bearer $token" \
  --checks all --exclude-path /v1/drain \
  --max-time "$seconds" --workers 1
