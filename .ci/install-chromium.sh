#!/usr/bin/env bash
# Installs headless Chromium (Debian's package) for tests/test_viewer_chromium.py, which drives
# the live run viewer through the Chrome DevTools Protocol. Idempotent: does nothing when
# /usr/bin/chromium already exists. Needs root (CI runs as root); without it, it says so and
# exits 0, and the viewer test skips outside CI.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo ".ci/install-chromium.sh: not root, cannot apt-get install chromium; the viewer test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
