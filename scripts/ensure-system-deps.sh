#!/usr/bin/env bash
# Installs what the tests need beyond Python packages, on a fresh Debian machine:
# Chromium + ChromeDriver for the portal's browser tests; openssh-server for the bench's
# `ssh -R` peer (a throwaway sshd on loopback, bench/others.py). Idempotent and quiet when done.
set -euo pipefail
# Node.js + npm: the Node client tests and the agent CLIs of the clients suite
# (tests-e2e/agent_clis, installed by npm into ~/.cache/remotellm/npm).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing nodejs + npm (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "node/npm missing and cannot apt-get here: Node and clients tests will fail" >&2
  fi
fi
if command -v chromium >/dev/null && command -v chromedriver >/dev/null && [ -x /usr/sbin/sshd ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium/chromedriver/sshd missing and cannot apt-get here: browser tests or the" \
    "bench's ssh peer will fail" >&2
  exit 0
fi
echo "== installing chromium + chromium-driver + openssh-server (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium chromium-driver openssh-server >/dev/null
