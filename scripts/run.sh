#!/usr/bin/env bash
# Installs the build dependencies, builds callbridge and runs it on its embedded
# defaults (ws://127.0.0.1:8080/ws, SIP on 127.0.0.1:5060). Extra arguments go to
# `callbridge serve`, e.g. scripts/run.sh --config configs/callbridge.example.toml
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --release --bin callbridge
exec target/release/callbridge serve "$@"
