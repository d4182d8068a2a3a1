#!/usr/bin/env bash
# Two instances of a server behind nginx, a rolling restart under POST load.
#
# nginx (proxy_next_upstream error timeout, keep-alive to the upstreams) spreads wrk's
# POST /echo load over instances A and B. After a few seconds, A gets SIGTERM, is started
# again once it has exited, and once it answers, the same happens to B. nginx retries a
# refused connection on the other instance, but never re-sends a POST that reached an
# upstream which then closed or reset the connection: only a clean refusal plus a clean
# keep-alive drain leaves clients with 0 errors and 0 non-2xx.
#
#   scripts/multi-instance.sh [SERVER...]   (default: server-cli uvicorn gunicorn)
#   DURATION=60 scripts/multi-instance.sh server-cli
# Needs nginx and wrk (installed with apt-get when missing and run as root).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(server-cli uvicorn gunicorn)
duration="${DURATION:-60}"

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx wrk
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
build_release
ensure_peers

tmp="$(mktemp -d)"
cleanup() {
  [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The command line of one instance of SERVER on PORT.
instance_command() {
  local server="$1" port="$2"
  case "$server" in
    server-cli) echo "$SERVER_CLI --workers 2 --port $port --no-access-log --demo-shutdown-delay 10" ;;
    server-cli-uvicorn) echo "$SERVER_CLI --workers 2 --port $port --no-access-log -- $VENV/bin/uvicorn echo_app:app --app-dir $PEERS_DIR --fd 3 --no-access-log" ;;
    uvicorn) echo "$VENV/bin/uvicorn echo_app:app --app-dir $PEERS_DIR --workers 2 --port $port --no-access-log" ;;
    gunicorn) echo "$VENV/bin/gunicorn -k uvicorn_worker.UvicornWorker -w 2 -b 127.0.0.1:$port --chdir $PEERS_DIR echo_app:app" ;;
  esac
}

wait_ready() {  # port
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$1/healthz" && return 0
    sleep 0.1
  done
  echo "instance on port $1 did not become ready" >&2; return 1
}

start_instance() {  # server, port, name -> pid in $tmp/name.pid
  # shellcheck disable=SC2046
  setsid $(instance_command "$1" "$2") >> "$tmp/$3.log" 2>&1 &
  echo $! > "$tmp/$3.pid"
  wait_ready "$2"
}

restart_instance() {  # server, port, name
  local pid; pid="$(cat "$tmp/$3.pid")"
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  start_instance "$1" "$2" "$3"
}

cat > "$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body   = string.rep("x", 512)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

results=()
for server in "${servers[@]}"; do
  port_a=$(free_port); port_b=$(free_port); port_lb=$(free_port)
  cat > "$tmp/nginx.conf" <<NGINX
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend {
    server 127.0.0.1:$port_a max_fails=0;
    server 127.0.0.1:$port_b max_fails=0;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$port_lb;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout;
      proxy_connect_timeout 1s;
      proxy_read_timeout 30s;
    }
  }
}
NGINX
  start_instance "$server" "$port_a" a
  start_instance "$server" "$port_b" b
  "$NGINX" -p "$tmp" -c "$tmp/nginx.conf" -g 'daemon on;'
  wait_ready "$port_lb"
  wrk -t2 -c32 -d"${duration}s" -s "$tmp/post.lua" "http://127.0.0.1:$port_lb/echo" > "$tmp/wrk.txt" &
  wrk_pid=$!
  wrk_started=$SECONDS
  sleep 3
  restart_instance "$server" "$port_a" a
  restart_instance "$server" "$port_b" b
  restart_done=$((SECONDS - wrk_started))
  wait "$wrk_pid" || true
  non2xx=$(grep -oP 'Non-2xx or 3xx responses: \K[0-9]+' "$tmp/wrk.txt" || echo 0)
  errors=$(grep -oP 'Socket errors: \K.*' "$tmp/wrk.txt" || echo "none")
  requests=$(grep -oP '^\s*\K[0-9]+(?= requests in)' "$tmp/wrk.txt" || echo "?")
  results+=("$(printf '%-20s %10s %12s   %s' "$server" "$requests" "$non2xx" "$errors")")
  kill "$(cat "$tmp/nginx.pid")"; sleep 0.2
  for name in a b; do kill -TERM "$(cat "$tmp/$name.pid")" 2>/dev/null || true; done
  for name in a b; do while kill -0 "$(cat "$tmp/$name.pid")" 2>/dev/null; do sleep 0.1; done; done
  echo "[$server] rolling restart done $restart_done s into the load; wrk:" >&2
  sed 's/^/    /' "$tmp/wrk.txt" >&2
done

printf '\n%-20s %10s %12s   %s\n' server requests non-2xx "socket errors"
printf '%s\n' "${results[@]}"
