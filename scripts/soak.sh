#!/usr/bin/env bash
# Soak: DURATION seconds (default 600) of load on server-cli --workers 3 with, every 5 s,
# one of: SIGKILL of a worker, HUP, TTIN, TTOU (random order, as many TTIN as TTOU, never
# below 2 workers), then a final TERM. Reports requests, drops (requests in flight on killed
# workers apart), RSS and descriptor counts of the server's processes at start and end.
# Result: bench/results/soak.json.
#
#   scripts/soak.sh [DURATION_SECS]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
duration="${1:-600}"
build_release

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
events=$(python3 - "$duration" <<'PY'
import random, sys
# One event per slot: at 5 s, 10 s, ... while before the end (the harness's schedule).
slots = len(range(5, int(float(sys.argv[1])), 5))
workers, seq = 3, []
for _ in range(max(slots - 1, 0)):
    choices = ["KILL-WORKER", "HUP"] + (["TTIN"] if workers < 4 else []) + (["TTOU"] if workers > 2 else [])
    e = random.choice(choices)
    workers += {"TTIN": 1, "TTOU": -1}.get(e, 0)
    seq.append(e)
# The last slot brings the count back to 3 (it is within one of 3 by construction).
seq.append({2: "TTIN", 4: "TTOU"}.get(workers, "HUP"))
print(",".join(seq))
PY
)
expected_workers=3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

sample() {  # prints "rss_kib fds processes" of the server's processes
  # The server's processes only (the harness's own command line names the port too).
  local pids; pids=$(pgrep -a -x server-cli | grep -- "--port $port " | cut -d' ' -f1 | tr '\n' ' ')
  local rss=0 fds=0 n=0
  for p in $pids; do
    r=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    f=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
    rss=$((rss + ${r:-0})); fds=$((fds + f)); n=$((n + 1))
  done
  echo "$rss $fds $n"
}

count=$(echo "$events" | tr ',' '\n' | wc -l)
echo "soak: ${duration}s, $count disruptions every 5 s, then TERM"
"$HARNESS" --scenario load --clients 16 --duration "$duration" --signal-after 5 --signal-every 5 \
  --signal "$events" --expect-workers "$expected_workers" --port "$port" --max-exit-after 60 \
  --json "$tmp/soak.json" -- "$SERVER_CLI" --workers 3 --port "$port" --no-access-log \
  > "$tmp/soak.txt" 2>&1 &
harness=$!
sleep 4
start_sample=$(sample)
sleep $((duration - 8))
end_sample=$(sample)
wait "$harness" || true
tail -n 12 "$tmp/soak.txt"
mkdir -p "$ROOT/bench/results"
python3 - "$tmp/soak.json" "$ROOT/bench/results/soak.json" "$start_sample" "$end_sample" "$events" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
start, end = [list(map(int, x.split())) for x in sys.argv[3:5]]
out = {
    "duration_s": round(s["signal_at"] and s["disruptions"][-1] + 5 or 0),
    "requests": s["total"], "ok": s["ok"], "dropped": s["dropped"], "refused": s["refused"],
    "killed_in_flight": s["killed_in_flight"], "disruptions": len(s["disruptions"]),
    "events": sys.argv[5].split(","), "workers_at_end": s["workers_at_end"],
    "failures": s["failures"],
    "start": {"rss_kib": start[0], "fds": start[1], "processes": start[2]},
    "end": {"rss_kib": end[0], "fds": end[1], "processes": end[2]},
}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(f"requests {out['requests']}, dropped {out['dropped']}, refused {out['refused']}, "
      f"in flight on killed workers {out['killed_in_flight']}, {out['disruptions']} disruptions; "
      f"RSS {start[0]} -> {end[0]} KiB, fds {start[1]} -> {end[1]} ({start[2]} -> {end[2]} processes)")
PY
