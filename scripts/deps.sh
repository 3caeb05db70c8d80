#!/usr/bin/env bash
# Installs what callbridge needs to build and test on Debian 12, idempotently:
# a C toolchain and cmake (bundled libopus), SIPp (Debian's sip-tester) for the SIP
# tests, PostgreSQL for the PostgreSQL storage test (tests/webhooks_postgres.rs
# starts its own throwaway server; the packaged one is not used), and a Rust
# toolchain through rustup when cargo is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(build-essential cmake pkg-config curl ca-certificates sip-tester openssl postgresql redis-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
