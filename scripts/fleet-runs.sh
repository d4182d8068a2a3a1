#!/usr/bin/env bash
# Builds the release binaries, installs the load balancers when missing, then runs
# scripts/fleet-runs.py (rolling deploys of a 3-host fleet behind a load balancer, in
# network namespaces; needs root). Arguments go to it: --short (CI), --deploys, --servers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then
  echo "fleet: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces; run it as root" >&2
  exit 2
fi
# HAProxy and curl always; nginx and Caddy unless this is CI's --short run (HAProxy only).
needed="haproxy curl"
case " $* " in *" --short "*) ;; *) needed="$needed nginx caddy" ;; esac
missing=""
for tool in $needed; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
build_release
# The Python servers' virtualenv, unless only server-cli's demo app runs (CI's --short).
case " $* " in *" --short "*) ;; *) ensure_peers ;; esac
exec python3 "$ROOT/scripts/fleet-runs.py" "$@"
