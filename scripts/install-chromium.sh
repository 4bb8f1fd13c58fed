#!/bin/sh
# Install Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium).
# Safe to run repeatedly: does nothing when Chromium is already there.
set -eu

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

install() {
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: refresh and retry once.
    $SUDO apt-get install -y --no-install-recommends chromium \
        || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends chromium; }
}

if ! install; then
    case "${CI:-}" in
        true|1|yes) echo "Chromium could not be installed; CI=true requires it for the browser tests." >&2; exit 1 ;;
    esac
    echo "Chromium could not be installed (needs root or sudo); the browser tests will be skipped." >&2
    exit 0
fi

"$CHROMIUM" --version
