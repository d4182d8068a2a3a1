#!/usr/bin/env bash
# Runs the harness's seed, load and keepalive scenarios (SIGTERM 5 s into 20 s of traffic)
# against uvicorn --workers 2, gunicorn with uvicorn workers, server-cli --workers 2 (demo
# app) and server-cli running unmodified uvicorn workers on fd 3 (or the servers named:
# granian, hypercorn, server-cli-asgi = the seed's app in server-cli's ASGI workers), and
# prints dropped requests per scenario per server. The `rolling` scenario is the load
# scenario with a rolling restart (HUP) every 3 s from 3 s on, 15 s in all (4 restarts).
# Summaries are updated in bench/results/compare-peers.json (the full per-request reports
# stay in a temporary directory); the seed and websocket scenarios' timelines go to
# docs/SCENARIO-SERVER.svg.
#
#   scripts/compare-peers.sh [SERVER...]
#   (default: uvicorn gunicorn server-cli server-cli-uvicorn; see scripts/lib.sh)
#   SCENARIOS="seed load" scripts/compare-peers.sh
#   CLIENT=reqwest SCENARIOS=keepalive TABLES=1 scripts/compare-peers.sh server-cli uvicorn
#     (another client library; TABLES=1 prints every run's outcome table)
#   SCENARIOS=websocket TABLES=1 scripts/compare-peers.sh uvicorn gunicorn axum server-cli server-cli-uvicorn
#     (WebSocket echo clients at SIGTERM; `axum` is plain axum with with_graceful_shutdown)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(uvicorn gunicorn server-cli server-cli-uvicorn)
read -r -a scenarios <<< "${SCENARIOS:-seed load keepalive}"
client="${CLIENT:-raw}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
mkdir -p "$ROOT/bench/results" "$ROOT/docs"

build_release  # also the axum baseline (package baseline-axum)
ensure_peers

declare -A dropped
for scenario in "${scenarios[@]}"; do
  for server in "${servers[@]}"; do
    json="$out/$scenario-$server.json"
    svg=()
    case "$scenario" in seed|websocket)
      [ "$client" = raw ] && svg=(--svg "$ROOT/docs/$scenario-$server.svg") ;;
    esac
    shape=(--scenario "$scenario")
    [ "$scenario" = rolling ] && shape=(--scenario reload --signal HUP --signal-after 3 --signal-every 3 --duration 15)
    # shellcheck disable=SC2046
    "$HARNESS" "${shape[@]}" --client "$client" --json "$json" "${svg[@]}" \
      -- $(server_command "$server") > "$out/$scenario-$server.txt" || true
    tail -n 1 "$out/$scenario-$server.txt" | sed "s/^/[$scenario $server] /"
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

if [ -n "${TABLES:-}" ]; then
  for scenario in "${scenarios[@]}"; do
    for server in "${servers[@]}"; do
      printf '\n[%s %s, --client %s]\n' "$scenario" "$server" "$client"
      sed -n '/^outcome /,/^server:/p' "$out/$scenario-$server.txt"
    done
  done
fi

results="$ROOT/bench/results/compare-peers.json"
[ "$client" = raw ] || results="$ROOT/bench/results/compare-peers-$client.json"
python3 - "$out" "$results" <<'PY'
import glob, json, os, sys
# Runs of other scenarios and servers keep their figures: only this run's entries change.
summaries = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    summary = json.load(open(path))["summary"]
    summaries[os.path.basename(path)[:-5]] = {
        k: summary[k] for k in ("scenario", "server_command", "dropped", "ok", "refused",
                                "total", "server_exit", "orphans", "rows")
    }
json.dump(summaries, open(sys.argv[2], "w"), indent=1)
PY
