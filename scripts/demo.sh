#!/usr/bin/env bash
# Builds the secrets plugin and the demo host, installs the plugin into the
# plugin folder (copy to a temporary file, then rename, so a running host
# never sees a half-written library) and starts the host.
#
#   scripts/demo.sh [demo-host flags...]
#
# Defaults: config ~/.milady/milady.toml (created with comments on first run),
# plugins ~/.milady/plugins, address 127.0.0.1:2138. Override the plugin folder
# with MILADY_PLUGINS_DIR; other flags pass through (see `demo-host --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PROFILE:-release}"
cargo build --profile "$profile" -p secrets-plugin -p demo-host
out="${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")"

plugins="${MILADY_PLUGINS_DIR:-$HOME/.milady/plugins}"
mkdir -p "$plugins"
lib=""
for candidate in "$out"/libsecrets_plugin.so "$out"/libsecrets_plugin.dylib "$out"/secrets_plugin.dll; do
    if [ -f "$candidate" ]; then lib="$candidate"; break; fi
done
[ -n "$lib" ] || { echo "the secrets plugin library was not built" >&2; exit 1; }
tmp="$(mktemp "$plugins/.install.XXXXXX")"
cp "$lib" "$tmp"
mv -f "$tmp" "$plugins/$(basename "$lib")"
echo "installed $(basename "$lib") into $plugins"

exec "$out/demo-host" --plugins-dir "$plugins" "$@"
