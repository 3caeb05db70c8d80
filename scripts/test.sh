#!/usr/bin/env bash
# Installs the test dependencies and runs the whole test suite. Fails when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo --version
start=$(date +%s)
cargo test --locked --all-targets
echo "tests passed in $(( $(date +%s) - start ))s"
