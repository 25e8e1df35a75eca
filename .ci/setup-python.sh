#!/usr/bin/env bash
# Installs schemathesis (pinned) from PyPI into a virtual environment kept
# outside the work tree, for .ci/check-schemathesis.sh. Idempotent: a venv
# that already has the pinned version is reused.
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"
VENV="${MILADY_CI_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/milady-ci/venv-schemathesis-$SCHEMATHESIS_VERSION}"

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-pip
fi

if [ -x "$VENV/bin/st" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    echo "schemathesis $SCHEMATHESIS_VERSION already installed"
    exit 0
fi

rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
"$VENV/bin/st" --version
