#!/usr/bin/env bash
# Installs the test dependencies and runs the whole test suite. Fails when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export CALLBRIDGE_BROWSER_DEPS=1
export CALLBRIDGE_TEST_DEPS=1
source scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo --version
start=$(date +%s)
# The JavaScript client: its JSDoc types, then its unit tests (node's test runner,
# fake socket and timers). The Chromium tests run within cargo test (browser_demo).
(cd tests/browser && node_modules/.bin/tsc -p tsconfig.json && node --test callbridge.test.mjs docs.test.mjs)
# Prometheus rules of deploy/: syntax, then their unit tests (each alert fires on
# the series that should raise it).
promtool check rules deploy/prometheus/callbridge.rules.yml
promtool test rules deploy/prometheus/tests/callbridge.test.yml
cargo test --locked --all-targets --no-fail-fast
# The Helm chart of deploy/helm: lint, render, schemas, what it promises, and its
# configuration loaded by the gateway just built.
python3 scripts/check-helm.py target/debug/callbridge
echo "tests passed in $(( $(date +%s) - start ))s"
