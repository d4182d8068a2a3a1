#!/usr/bin/env bash
# Fuzzes the harness's HTTP response parser (the one thing the project parses from
# untrusted peers) with cargo fuzz / libFuzzer for SECS seconds (default 60).
# The toolchain here is stable only: RUSTC_BOOTSTRAP=1 lets it accept the sanitizer flags
# cargo fuzz passes. Crashes land in fuzz/artifacts/.
#
#   scripts/fuzz.sh [SECS] [--dev]
#
# --dev builds the target without optimisations (cargo fuzz --dev), as CI's short run does:
# the optimised build of the harness and its dependencies under the sanitizer took 4.3 of
# that run's 4.7 minutes, unoptimised 2.3 (and the 20 s still try some 36,000 inputs).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
secs="${1:-60}"
profile=()
case "${2:-}" in
  --dev) profile=(--dev) ;;
  "") ;;
  *) echo "error: unknown option ${2} (expected --dev)" >&2; exit 2 ;;
esac
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cd "$ROOT"
RUSTC_BOOTSTRAP=1 cargo fuzz run "${profile[@]}" response_parser "$corpus" fuzz/seeds/response_parser \
  -- -max_total_time="$secs" 2>&1 | tail -n 3
