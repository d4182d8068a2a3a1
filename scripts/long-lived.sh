#!/usr/bin/env bash
# Long-lived connections at scale on server-cli --workers 2: 1,000 WebSocket clients (an
# echo every 100 ms each) and 200 SSE clients (an event every 100 ms) at once, through a
# SIGTERM, a HUP, five HUPs 1 s apart, a TTOU, a USR2 and request-quota recycling (with
# plain requests beside them). The
# WebSocket harness launches and disrupts the server; the SSE harness drives the same
# server by URL. Prints one line per run and harness; summaries go to
# bench/results/long-lived.json.
#
#   scripts/long-lived.sh                    WS_CLIENTS=1000 SSE_CLIENTS=200 by default
#   ONLY="hup ttou" scripts/long-lived.sh    some runs only (the JSON keeps the others)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ws_clients="${WS_CLIENTS:-1000}"
sse_clients="${SSE_CLIENTS:-200}"
build_release

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

run_one() {  # name, duration, websocket harness options..., -- server options
  local name="$1" duration="$2"; shift 2
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  "$HARNESS" --scenario sse --url "http://127.0.0.1:$port/sse?every=100" --clients "$sse_clients" \
    --duration "$duration" --json "$tmp/$name-sse.json" > "$tmp/$name-sse.txt" 2>&1 &
  local sse=$! requests=
  if [ -n "${request_clients:-}" ]; then
    # Plain requests beside the long-lived connections (keep-alive, 10 ms apart).
    "$HARNESS" --scenario keepalive --url "http://127.0.0.1:$port/" --clients "$request_clients" \
      --duration "$duration" --json "$tmp/$name-requests.json" > "$tmp/$name-requests.txt" 2>&1 &
    requests=$!
  fi
  local args=() server=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  server=("$@")
  [[ " ${server[*]} " == *" --workers "* ]] || server+=(--workers 2)
  "$HARNESS" --scenario websocket --clients "$ws_clients" --duration "$duration" --port "$port" \
    --json "$tmp/$name-websocket.json" "${args[@]}" -- \
    "$SERVER_CLI" --port "$port" --no-access-log "${server[@]}" \
    > "$tmp/$name-websocket.txt" 2>&1 || true
  wait "$sse" || true
  local kinds=(websocket sse)
  if [ -n "$requests" ]; then wait "$requests" || true; kinds+=(requests); fi
  for kind in "${kinds[@]}"; do
    printf '%-22s %-9s %s\n' "$name" "$kind" "$(tail -n 1 "$tmp/$name-$kind.txt")"
    grep -E '^(close|stream ended|connections opened|most worker)' "$tmp/$name-$kind.txt" \
      | sed 's/^/    /' || true
  done
}

only="${ONLY:-}"
run() { [ -z "$only" ] || [[ " $only " == *" $1 "* ]] || return 0; run_one "$@"; }

run sigterm 12 --signal TERM --signal-after 6
run hup 12 --signal HUP --signal-after 6 --expect-workers 2
run hup-x5-1s-apart 9 --signal HUP --signal-after 4 --signal-every 1 --expect-workers 2
run ttou 12 --signal TTOU --signal-after 6 --expect-workers 2 -- --workers 3
run usr2 12 --signal USR2 --signal-after 6
# Each worker gets 600 connections at first; 4 keep-alive clients add ~400 requests/s, so
# every worker is recycled every few seconds.
request_clients=4 run max-requests 12 --signal none --expect-workers 2 -- --limit-max-requests 1500

python3 - "$tmp" "$ROOT/bench/results/long-lived.json" <<'PY'
import glob, json, os, sys
out = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    s = json.load(open(path))["summary"]
    out[os.path.basename(path)[:-5]] = {k: s.get(k) for k in (
        "signal", "disruptions", "dropped", "ok", "refused", "total", "server_exit",
        "max_workers", "reconnects", "rows", "failures")}
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
