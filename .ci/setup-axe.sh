#!/usr/bin/env bash
# Installs the pinned axe-core (.ci/axe/package.json and its lock file) into
# .ci/axe/node_modules for the secrets page's accessibility audit
# (tests/e2e/secrets_page.rs injects axe.min.js through WebDriver). Quick and
# silent when that version is already there.
set -euo pipefail
cd "$(dirname "$0")/axe"

want=$(sed -n 's/.*"axe-core": "\([0-9.]*\)".*/\1/p' package.json)
have=""
if [ -f node_modules/axe-core/package.json ]; then
    have=$(sed -n 's/^  "version": "\([0-9.]*\)".*/\1/p' node_modules/axe-core/package.json)
fi
if [ -n "$want" ] && [ "$have" = "$want" ] && [ -f node_modules/axe-core/axe.min.js ]; then
    echo "axe-core $have already installed"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
# Exactly the lock file's version, no install scripts.
npm ci --silent --no-audit --no-fund --ignore-scripts
echo "axe-core $(sed -n 's/^  "version": "\([0-9.]*\)".*/\1/p' node_modules/axe-core/package.json) installed"
