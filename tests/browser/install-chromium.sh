#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser tests when it is missing and we are root.
# Always exits 0: without Chromium the browser tests skip and say why.
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: /usr/bin/chromium is missing and this is not root with apt-get; browser tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq chromium >/dev/null; then
    echo "install-chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
else
    echo "install-chromium: apt-get could not install chromium; browser tests will skip" >&2
fi
exit 0
