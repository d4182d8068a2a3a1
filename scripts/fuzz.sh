#!/usr/bin/env bash
# Fuzzes the harness's HTTP response parser (the one thing the project parses from
# untrusted peers) with cargo fuzz / libFuzzer for SECS seconds (default 60).
# The toolchain here is stable only: RUSTC_BOOTSTRAP=1 lets it accept the sanitizer flags
# cargo fuzz passes. Crashes land in fuzz/artifacts/.
#
#   scripts/fuzz.sh [SECS]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cd "$ROOT"
RUSTC_BOOTSTRAP=1 cargo fuzz run response_parser "$corpus" fuzz/seeds/response_parser \
  -- -max_total_time="$secs" 2>&1 | tail -n 3
