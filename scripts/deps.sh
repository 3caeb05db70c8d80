#!/usr/bin/env bash
# Installs what callbridge needs to build and test on Debian 12, idempotently:
# a C toolchain and cmake (bundled libopus), SIPp (Debian's sip-tester) for the SIP
# tests, dnsmasq (a DNS server for the SRV tests, started by tests/sip_dns.rs on
# loopback), PostgreSQL for the PostgreSQL storage test (tests/webhooks_postgres.rs
# starts its own throwaway server; the packaged one is not used), Kamailio (the
# carrier registrar/proxy of tests/carrier_kamailio.rs, started per test from
# tests/kamailio/kamailio.cfg; the packaged service is not used), a Rust toolchain
# through rustup when cargo is missing, and (when asked) what the browser tests need.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(build-essential cmake pkg-config curl ca-certificates sip-tester openssl postgresql redis-server dnsmasq-base kamailio)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
  # The tests start their own Kamailio; the packaged service (enabled on install
  # where systemd runs) would hold port 5060 on every address: stop it.
  if [[ " ${missing[*]} " == *" kamailio "* ]] && command -v systemctl >/dev/null 2>&1 &&
    systemctl is-enabled --quiet kamailio 2>/dev/null; then
    $SUDO systemctl disable --now kamailio || true
  fi
fi

# Fleet tests, only for the test suite (scripts/test.sh sets CALLBRIDGE_TEST_DEPS=1):
# HAProxy (tests/fleet_haproxy.rs runs deploy/haproxy/haproxy.cfg) and Prometheus'
# promtool (scripts/test.sh checks and unit-tests deploy/prometheus/). The packaged
# services are not used: stopped where systemd started them. From PyPI, pinned:
# helm-python-sdk (Helm's Go SDK as a library: lint and render, no helm binary) and
# kubernetes-validate (offline Kubernetes schemas) for scripts/check-helm.py.
if [ "${CALLBRIDGE_TEST_DEPS:-0}" = "1" ]; then
  test_missing=()
  for p in haproxy prometheus; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || test_missing+=("$p")
  done
  if [ ${#test_missing[@]} -gt 0 ]; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${test_missing[@]}"
    if command -v systemctl >/dev/null 2>&1; then
      for unit in haproxy prometheus; do
        if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
          $SUDO systemctl disable --now "$unit" || true
        fi
      done
    fi
  fi
  if ! python3 -c "import helm_python, kubernetes_validate, yaml" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check \
      helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML
  fi
fi

# Browser tests (tests/browser_demo.rs, tests/browser/*.mjs), only when asked for
# (scripts/test.sh sets CALLBRIDGE_BROWSER_DEPS=1) so that scripts/run.sh stays light:
# Debian's Chromium, Node.js if missing, and from tests/browser/package-lock.json
# playwright-core (it drives /usr/bin/chromium and never downloads a browser) and
# typescript (type-checks the client's JSDoc). A failure here is only a
# warning: the browser tests then fail under CI with a message that says what is missing.
if [ "${CALLBRIDGE_BROWSER_DEPS:-0}" = "1" ]; then
  browser_missing=()
  for p in chromium; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || browser_missing+=("$p")
  done
  command -v node >/dev/null 2>&1 || browser_missing+=(nodejs npm)
  if [ ${#browser_missing[@]} -gt 0 ]; then
    { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${browser_missing[@]}"; } ||
      echo "WARNING: could not install ${browser_missing[*]}; the browser tests will fail under CI" >&2
  fi
  browser_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/browser"
  if command -v npm >/dev/null 2>&1; then
    # npm ci only when node_modules does not hold exactly the locked versions.
    if ! (cd "$browser_dir" && node -e '
      const locked = require("./package-lock.json").packages;
      for (const [path, { version }] of Object.entries(locked)) {
        if (!path) continue;
        let have = null;
        try { have = require(`./${path}/package.json`).version; } catch {}
        if (have !== version) process.exit(1);
      }' 2>/dev/null); then
      (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error) ||
        echo "WARNING: npm ci failed in tests/browser; the browser tests will fail under CI" >&2
    fi
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
