#!/usr/bin/env bash
# Runs the harness's seed, load and keepalive scenarios against uvicorn --workers 2,
# gunicorn with uvicorn workers, server-cli --workers 2 (demo app) and server-cli running
# unmodified uvicorn workers on fd 3, and prints dropped requests per scenario per server. Summaries go to bench/results/compare-peers.json (the full
# per-request reports stay in a temporary directory).
#
#   scripts/compare-peers.sh [SERVER...]
#   (default: uvicorn gunicorn server-cli server-cli-uvicorn; see scripts/lib.sh)
#   SCENARIOS="seed load" scripts/compare-peers.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(uvicorn gunicorn server-cli server-cli-uvicorn)
read -r -a scenarios <<< "${SCENARIOS:-seed load keepalive}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir -p "$ROOT/bench/results"

build_release
ensure_peers

declare -A dropped
for scenario in "${scenarios[@]}"; do
  for server in "${servers[@]}"; do
    json="$out/$scenario-$server.json"
    # shellcheck disable=SC2046
    "$HARNESS" --scenario "$scenario" --json "$json" -- $(server_command "$server") \
      | tail -n 1 | sed "s/^/[$scenario $server] /" || true
    dropped[$scenario,$server]=$(json_field "$json" dropped)
  done
done

printf '\n%-12s' "scenario"
for server in "${servers[@]}"; do printf '%20s' "$server"; done
printf '\n'
for scenario in "${scenarios[@]}"; do
  printf '%-12s' "$scenario"
  for server in "${servers[@]}"; do printf '%20s' "${dropped[$scenario,$server]}"; done
  printf '\n'
done

python3 - "$out" "$ROOT/bench/results/compare-peers.json" <<'PY'
import glob, json, os, sys
summaries = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    summary = json.load(open(path))["summary"]
    summaries[os.path.basename(path)[:-5]] = {
        k: summary[k] for k in ("scenario", "server_command", "dropped", "ok", "refused",
                                "total", "server_exit", "orphans", "rows")
    }
json.dump(summaries, open(sys.argv[2], "w"), indent=1)
PY
