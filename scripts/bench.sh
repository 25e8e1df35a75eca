#!/usr/bin/env bash
# Runs every benchmark in one process and prints one table (Markdown):
# bridge overhead, catalog growth, durable writes, start-up and memory,
# hostile connections (1,000 silent or trickling connections held open),
# start-up isolation (cold and warm, 1/5/20 libraries, one bad), live plugin
# adds (20 libraries dropped into a running host's folder, to their first 200).
#
#   scripts/bench.sh [bench flags...]     e.g. --rounds 7 --seconds 3
#                                         --only bridge,writes,connections
#                                         --markdown bench-table.md
#
# Builds the host, the plugin library and the bench in release first; the
# bench loads that release library and starts that release host. Config
# files go to the system temp folder (set TMPDIR, or pass --work-dir, to
# measure another disk). Takes a few minutes; loopback traffic only.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p secrets-plugin -p demo-host -p bench -p numbered-plugin
echo "command: scripts/bench.sh $*" >&2
exec target/release/bench "$@"
