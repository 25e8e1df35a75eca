#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver for the Swagger UI browser test
# (tests/e2e/browser.rs). Quick and silent when both are already installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium and chromedriver already installed"
else
    export DEBIAN_FRONTEND=noninteractive
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null
fi
chromium --version 2>/dev/null | head -n 1
chromedriver --version | head -n 1
