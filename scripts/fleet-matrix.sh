#!/usr/bin/env bash
# The fleet's whole table, one run of each (docs/fleet.md): every load balancer x every
# planned deploy x every server under POST load; server-cli also with GET and with the
# reqwest client; the Kubernetes-like lag with and without --shutdown-delay; a reload of
# the load balancer alone; the faults; the throughput of each load balancer next to one
# host without one. About an hour on a 2-core machine; results in bench/results/fleet.json.
set -uo pipefail
# Every line runs even when an earlier one failed (fleet-runs.sh exits 1 when server-cli
# dropped in a planned deploy); the script's status is 1 if any did.
status=0
run() { "$(dirname "$0")/fleet-runs.sh" "$@" || status=1; }
D=${FLEET_DURATION:-10}
run --balancers direct,haproxy,nginx,caddy --deploys none --servers server-cli,server-cli-asgi --duration "$D"
run --balancers nginx,caddy --deploys reload-lb --servers server-cli --duration "$D"
run --balancers haproxy --deploys kill-host,cut-host --servers server-cli --shutdown-delay 0 --duration 20
run --balancers haproxy,nginx --deploys lagged-rolling --servers server-cli --shutdown-delay 0 --lag 2 --duration "$D"
run --balancers haproxy,nginx --deploys lagged-rolling --servers server-cli --shutdown-delay 3 --lag 2 --duration "$D"
run --balancers haproxy,nginx,caddy --deploys rolling,hup-all,blue-green --servers server-cli \
  --methods GET,POST --clients-kinds raw,reqwest --duration "$D"
run --balancers haproxy,nginx,caddy --deploys rolling,hup-all,blue-green \
  --servers server-cli-asgi,uvicorn,gunicorn,granian --duration "$D"
exit $status
