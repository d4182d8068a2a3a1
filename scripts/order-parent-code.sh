#!/usr/bin/env bash
# Writes server-cli/parent-code.order: the functions the supervisor (parent) runs, which the
# release link puts side by side (server-cli/build.rs says why). Run it after a toolchain or
# dependency update; `scripts/bench.sh --only memory` shows how many of the file's symbols
# the binary still has.
#
# For each of the three ways the release binary is built (`-p server-cli`, as the README
# runs it, `--workspace`, as the scripts do, and `--features python-package`, as the wheel
# is built: features unify differently, so symbol hashes differ), it runs the parent under callgrind through start, a rolling restart (HUP), one
# worker more and one fewer (TTIN, TTOU) and a stop, and keeps every function it ran (in
# the order callgrind lists them: together is what counts, not the order).
#
#   scripts/order-parent-code.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v valgrind >/dev/null || {
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind
}
tmp="$(mktemp -d)"
# A server still under valgrind (a wait that timed out) goes with the script.
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
binary="$ROOT/target/release/server-cli"

# Waits (at most 120 s: workers run under valgrind too) until the log has $2 lines matching $1.
wait_lines() {
  local pattern="$1" count="$2" log="$3"
  for _ in $(seq 1200); do
    [ "$(grep -c -- "$pattern" "$log" || true)" -ge "$count" ] && return 0
    sleep 0.1
  done
  echo "timed out waiting for $count lines matching '$pattern' in $log" >&2
  tail -n 20 "$log" >&2
  return 1
}

# Traces one build's parent; appends the functions it ran to $tmp/functions.
trace_parent() {
  local build="$1" log="$tmp/$1.log"
  valgrind --tool=callgrind --demangle=no --callgrind-out-file="$tmp/$build.%p" \
    "$binary" --workers 1 --port 0 >"$log" 2>&1 &
  local parent=$!
  local ready="ready .* ms after fork"
  wait_lines "$ready" 1 "$log"
  kill -HUP "$parent"
  wait_lines "$ready" 2 "$log"
  kill -TTIN "$parent"
  wait_lines "$ready" 3 "$log"
  kill -TTOU "$parent"
  # The worker replaced at the HUP and the one scaled away have both exited.
  wait_lines "Finished server process" 2 "$log"
  kill -TERM "$parent"
  wait "$parent" || true
  nm --defined-only "$binary" | awk '{print $3}' | sort -u >"$tmp/$build.symbols"
  # Each function is named once, where callgrind first gives its number: fn=(12) name.
  grep -oE '^c?fn=\([0-9]+\) .+' "$tmp/$build.$parent" | sed -E 's/^c?fn=\([0-9]+\) //' \
    | awk 'NR==FNR { known[$0] = 1; next } known[$0] && !seen[$0]++' "$tmp/$build.symbols" - \
    >>"$tmp/functions"
  echo "$build: $(grep -c . "$tmp/functions") functions so far"
}

cd "$ROOT"
cargo build --release --quiet -p server-cli
trace_parent package
cargo build --release --quiet --workspace
trace_parent workspace
cargo build --release --quiet -p server-cli --features python-package
trace_parent wheel
{
  echo "# The functions the supervisor runs: server-cli/build.rs links them"
  echo "# side by side. Written by scripts/order-parent-code.sh ($(rustc --version))."
  awk '!seen[$0]++' "$tmp/functions"
} >server-cli/parent-code.order
echo "wrote server-cli/parent-code.order: $(grep -vc '^#' server-cli/parent-code.order) functions"
