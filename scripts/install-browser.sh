#!/usr/bin/env bash
# Headless Chromium (Debian's package), used by the test that opens an HTML report in a real
# browser. Skipped when a chromium is already on PATH; needs root (CI runs as root).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-browser: run as root, or install Chromium yourself (apt-get install chromium)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium installed: $(chromium --version)"
