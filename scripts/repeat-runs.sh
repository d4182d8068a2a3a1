#!/usr/bin/env bash
# Runs one harness scenario against one server N times and prints the drops of each run,
# the total, and how many runs were clean. Summaries go to bench/results/repeat-*.json.
#
#   scripts/repeat-runs.sh SERVER SCENARIO [RUNS] [harness options...]
#   scripts/repeat-runs.sh server-cli load 20 --duration 8 --signal-after 4
# SERVER is one of: uvicorn gunicorn server-cli server-cli-close
set -euo pipefail
source "$(dirname "$0")/lib.sh"

server="${1:?server}"; scenario="${2:?scenario}"; runs="${3:-20}"
shift $(( $# < 3 ? $# : 3 ))
build_release
case "$server" in uvicorn|gunicorn|server-cli-uvicorn) ensure_peers ;; esac

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
drops=()
for i in $(seq 1 "$runs"); do
  # shellcheck disable=SC2046
  "$HARNESS" --scenario "$scenario" --json "$tmp/run-$i.json" "$@" -- $(server_command "$server") \
    > "$tmp/run-$i.txt" || true
  drops+=("$(json_field "$tmp/run-$i.json" dropped)")
  echo "run $i: $(tail -n 1 "$tmp/run-$i.txt")"
done
python3 - "$tmp" "$runs" "$ROOT/bench/results/repeat-$server-$scenario.json" <<'PY'
import json, os, sys
tmp, runs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
per_run = [json.load(open(os.path.join(tmp, f"run-{i}.json")))["summary"] for i in range(1, runs + 1)]
dropped = [s["dropped"] for s in per_run]
result = {
    "runs": runs,
    "dropped_per_run": dropped,
    "dropped_total": sum(dropped),
    "clean_runs": sum(1 for d in dropped if d == 0),
    "requests_total": sum(s["total"] for s in per_run),
    "server_command": per_run[0]["server_command"],
    "scenario": per_run[0]["scenario"],
}
json.dump(result, open(out, "w"), indent=1)
print(f"dropped per run: {dropped}; total {result['dropped_total']} of "
      f"{result['requests_total']} requests; clean runs {result['clean_runs']}/{runs}")
PY
