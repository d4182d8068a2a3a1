#!/usr/bin/env bash
# Runs the harness through every lifecycle event of server-cli --workers 2 under load and
# prints one line per event. Summaries go to bench/results/lifecycle.json, or with
# `uvicorn` to bench/results/lifecycle-uvicorn.json: the same events with uvicorn as
# external workers (`server-cli -- uvicorn seed_app:app --fd 3`), in the `load` scenario
# (uvicorn closes idle keep-alive connections at once when it stops, a race only the
# worker can avoid), and --limit-max-memory with an app that leaks 8 KiB per request.
#
# With `fastapi`, to bench/results/lifecycle-fastapi.json: the same events with a FastAPI
# app (scripts/peers/fastapi_app.py, the seed's route without its 10 s hook) in server-cli's
# own ASGI workers.
#
#   scripts/lifecycle-runs.sh [DURATION_SECS] [builtin|uvicorn|fastapi]   (default 20 builtin)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
duration="${1:-20}"
kind="${2:-builtin}"
build_release

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
server="$SERVER_CLI --workers 2 --port {port} --no-access-log"

run() {  # name, harness options..., -- server command
  local name="$1"; shift
  "$HARNESS" --duration "$duration" --json "$tmp/$name.json" "$@" > "$tmp/$name.txt" || true
  printf '%-34s %s\n' "$name" "$(tail -n 1 "$tmp/$name.txt")"
}

if [ "$kind" = fastapi ]; then
  ensure_peers
  app="env VIRTUAL_ENV=$VENV $SERVER_CLI fastapi_app:app --app-dir $PEERS_DIR --workers 2 --port {port} --no-access-log"
  # shellcheck disable=SC2086
  {
  run hup-every-2s-load          --scenario reload --signal HUP --signal-every 2 --signal-after 2 --expect-workers 2 -- $app
  run ttou-then-ttin-load        --scenario load --signal TTOU,TTIN --signal-after $((duration * 3 / 10)) --signal-every $(((duration - duration * 3 / 10) / 2 + 1)) --expect-workers 2 -- $app
  run ttou-then-ttin-keepalive   --scenario keepalive --signal TTOU,TTIN --signal-after $((duration * 3 / 10)) --signal-every $(((duration - duration * 3 / 10) / 2 + 1)) --expect-workers 2 -- $app
  # A worker takes about half a second to import FastAPI: 5,000 requests each is a
  # replacement every second or two under load.
  run max-requests-5000-load     --scenario load --signal none --expect-workers 2 -- $app --limit-max-requests 5000
  run max-requests-200-keepalive --scenario keepalive --signal none --expect-workers 2 -- $app --limit-max-requests 200
  run kill-worker-load           --scenario load --signal kill-worker --expect-workers 2 -- $app
  run kill-worker-keepalive      --scenario keepalive --signal kill-worker --expect-workers 2 -- $app
  run usr2-upgrade-load          --scenario load --signal USR2 -- $app
  # 4 KiB per request: each worker crosses the limit every few seconds.
  run max-memory-120-load        --scenario load --signal none --path '/?kib=4' --expect-workers 2 -- $app --limit-max-memory 120
  }
  mkdir -p "$ROOT/bench/results"
  out="$ROOT/bench/results/lifecycle-fastapi.json"
elif [ "$kind" = uvicorn ]; then
  ensure_peers
  workers="$SERVER_CLI --workers 2 --port {port} --no-access-log"
  uvicorn="$VENV/bin/uvicorn --app-dir $PEERS_DIR --fd 3 --no-access-log"
  # A plain ASGI app (the seed app's 10 s shutdown hook would keep every old worker
  # draining for 10 s, past the end of the run); /?kib=0 leaks nothing.
  app="$uvicorn leak_app:app"
  plain=(--path '/?kib=0')
  # shellcheck disable=SC2086
  {
  run hup-every-2s-load          --scenario reload "${plain[@]}" --signal HUP --signal-every 2 --signal-after 2 --expect-workers 2 -- $workers -- $app
  run ttou-then-ttin-load        --scenario load "${plain[@]}" --signal TTOU,TTIN --signal-after $((duration * 3 / 10)) --signal-every $(((duration - duration * 3 / 10) / 2 + 1)) --expect-workers 2 -- $workers -- $app
  run kill-worker-load           --scenario load "${plain[@]}" --signal kill-worker --expect-workers 2 -- $workers -- $app
  run usr2-upgrade-load          --scenario load "${plain[@]}" --signal USR2 -- $workers -- $app
  # 8 KiB per request: each worker crosses the limit once or twice in 20 s.
  run max-memory-120-load        --scenario load --signal none --path '/?kib=8' --expect-workers 2 -- $workers --limit-max-memory 120 -- $app
  }
  mkdir -p "$ROOT/bench/results"
  out="$ROOT/bench/results/lifecycle-uvicorn.json"
else
# shellcheck disable=SC2086
{
run hup-every-2s-load            --scenario reload --signal HUP --signal-every 2 --signal-after 2 --expect-workers 2 -- $server
run usr2-upgrade-load            --scenario load --signal USR2 -- $server
run usr2-upgrade-keepalive       --scenario keepalive --signal USR2 -- $server
# TTOU at 30 % of the run, TTIN halfway through the rest (6 s and 14 s of 20); the signals
# cycle, and the next TTOU falls past the end.
run ttou-then-ttin-keepalive     --scenario keepalive --signal TTOU,TTIN --signal-after $((duration * 3 / 10)) --signal-every $(((duration - duration * 3 / 10) / 2 + 1)) --expect-workers 2 -- $server
run max-requests-200-keepalive   --scenario keepalive --signal none --expect-workers 2 -- $server --limit-max-requests 200
run max-requests-200-load        --scenario load --signal none --expect-workers 2 -- $server --limit-max-requests 200
run kill-worker-load             --scenario load --signal kill-worker --expect-workers 2 -- $server
run kill-worker-keepalive        --scenario keepalive --signal kill-worker --expect-workers 2 -- $server
run hup-every-2s-reuse-port      --scenario reload --signal HUP --signal-every 2 --signal-after 2 --expect-workers 2 -- $server --reuse-port
}
# The same with per-worker sockets and queue migration, in a network namespace of its own
# (so that the sysctl does not touch the machine's).
unshare -n sh -c "ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1 && \
  '$HARNESS' --scenario reload --signal HUP --signal-every 2 --signal-after 2 --expect-workers 2 \
  --duration $duration --json '$tmp/hup-every-2s-reuse-port-migrate.json' -- $server --reuse-port \
  > '$tmp/hup-every-2s-reuse-port-migrate.txt'" || true
printf '%-34s %s\n' hup-every-2s-reuse-port-migrate "$(tail -n 1 "$tmp/hup-every-2s-reuse-port-migrate.txt")"
mkdir -p "$ROOT/bench/results"
out="$ROOT/bench/results/lifecycle.json"
fi

python3 - "$tmp" "$out" <<'PY'
import glob, json, os, sys
out = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    s = json.load(open(path))["summary"]
    out[os.path.basename(path)[:-5]] = {k: s[k] for k in (
        "signal", "disruptions", "dropped", "ok", "refused", "killed_in_flight",
        "workers_at_end", "server_exit", "failures")}
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
