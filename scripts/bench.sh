#!/usr/bin/env bash
# Benchmarks: server-cli against a plain axum server, uvicorn and gunicorn, in one run on
# this machine (throughput and latency, shutdown latency, worker start and respawn, memory,
# scale, 1,000 idle keep-alive connections at shutdown, the harness's speed next to wrk's).
# Results: bench/results/bench.json (bench-smoke.json with --smoke).
#
#   scripts/bench.sh                full run (several minutes)
#   scripts/bench.sh --smoke        seconds; keeps the script working (CI)
#   scripts/bench.sh --no-peers     without uvicorn and gunicorn
#   scripts/bench.sh --only harness_vs_wrk   one section again, updated in bench.json
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# wrk drives the load; openssl makes the HTTPS section's certificate and times handshakes.
if ! command -v wrk >/dev/null || ! command -v openssl >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk openssl
fi
build_release  # also the axum baseline (package baseline-axum)
case " $* " in
  *" --no-peers "*|*" --smoke "*) ;;
  *) ensure_peers ;;
esac
smoke_args=()
case " $* " in *" --smoke "*) smoke_args=(--no-peers) ;; esac
exec python3 "$ROOT/scripts/bench.py" "$@" "${smoke_args[@]}"
