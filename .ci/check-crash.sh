#!/usr/bin/env bash
# The crash-safety tool at full length: 200 start / PUT / SIGKILL cycles of
# the real host, checking the config file after every kill, then 100 SIGKILLs
# of `demo-host secrets rotate-key` at random moments, checking every value
# still opens with the key files (a few minutes on a 2-core machine once
# built).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p e2e-tests --bin crash-test -- --iterations 200
