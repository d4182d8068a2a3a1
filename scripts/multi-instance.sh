#!/usr/bin/env bash
# Two instances of a server behind nginx, a rolling restart under POST load, measured by
# the shutdown harness as an operator would: it drives POST /echo through nginx (--url),
# and the rolling restart is its --disrupt command.
#
# nginx (proxy_next_upstream error timeout, keep-alive to the upstreams) spreads the load
# over instances A and B. 3 s in, A gets SIGTERM, is started again once it has exited, and
# once it answers, the same happens to B. nginx retries a refused connection on the other
# instance, but never re-sends a POST that reached an upstream which then closed or reset
# the connection (the client gets a 502): only a clean refusal plus a clean keep-alive
# drain leaves every request answered.
#
#   scripts/multi-instance.sh [SERVER...]   (default: server-cli uvicorn gunicorn;
#     also server-cli-asgi: the seed's FastAPI app with POST /echo in server-cli's ASGI
#     workers, server-cli-uvicorn, granian)
#   DURATION=30 scripts/multi-instance.sh server-cli
# Results: bench/results/multi-instance.json. Needs nginx (installed with apt-get when
# missing and run as root).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(server-cli uvicorn gunicorn)
duration="${DURATION:-20}"

if ! command -v nginx >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx
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
    server-cli-asgi) echo "env VIRTUAL_ENV=$VENV $SERVER_CLI echo_app:app --app-dir $PEERS_DIR --workers 2 --port $port --no-access-log" ;;
    granian) echo "$VENV/bin/granian --interface asgi --workers 2 --host 127.0.0.1 --port $port --working-dir $PEERS_DIR --no-access-log echo_app:app" ;;
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
  setsid $(instance_command "$1" "$2") >> "$tmp/$3.log" 2>&1 < /dev/null &
  echo $! > "$tmp/$3.pid"
  wait_ready "$2"
}

# The rolling restart as one script, for the harness's --disrupt.
write_rolling_restart() {  # server, port_a, port_b
  cat > "$tmp/rolling-restart.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
$(declare -f wait_ready start_instance instance_command)
tmp="$tmp"; SERVER_CLI="$SERVER_CLI"; VENV="$VENV"; PEERS_DIR="$PEERS_DIR"
for pair in a:$2 b:$3; do
  name=\${pair%%:*}; port=\${pair#*:}
  pid=\$(cat "\$tmp/\$name.pid")
  kill -TERM "\$pid"
  for _ in \$(seq 1 1200); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "\$pid" 2>/dev/null; then echo "instance \$name did not exit in 60 s" >&2; exit 1; fi
  start_instance "$1" "\$port" "\$name"
  echo "instance \$name restarted at \$(date +%T.%N | cut -c1-12)"
done
SH
  chmod +x "$tmp/rolling-restart.sh"
}

head -c 512 /dev/zero | tr '\0' x > "$tmp/body"
mkdir -p "$ROOT/bench/results"

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
  write_rolling_restart "$server" "$port_a" "$port_b"
  "$HARNESS" --url "http://127.0.0.1:$port_lb/echo" --method POST --body-file "$tmp/body" \
    --header 'Content-Type: application/octet-stream' \
    --scenario keepalive --clients 32 --interval 0 --request-timeout 30 \
    --duration "$duration" --signal-after 3 --settle 3 \
    --disrupt "$tmp/rolling-restart.sh" --json "$tmp/$server.json" > "$tmp/$server.txt" || true
  sed 's/^/    /' "$tmp/$server.txt" >&2
  results+=("$(printf '%-20s %s' "$server" "$(tail -n 1 "$tmp/$server.txt")")")
  kill "$(cat "$tmp/nginx.pid")"; sleep 0.2
  for name in a b; do kill -TERM "$(cat "$tmp/$name.pid")" 2>/dev/null || true; done
  for name in a b; do
    for _ in $(seq 1 1200); do kill -0 "$(cat "$tmp/$name.pid")" 2>/dev/null || break; sleep 0.05; done
  done
done

printf '\n%-20s %s\n' server "harness (POST /echo through nginx, rolling restart of both instances)"
printf '%s\n' "${results[@]}"
python3 - "$tmp" "$ROOT/bench/results/multi-instance.json" "${servers[@]}" <<'PY'
import json, os, sys
tmp, out, servers = sys.argv[1], sys.argv[2], sys.argv[3:]
# Runs of other servers in earlier invocations are kept; this run's replace their own.
summaries = json.load(open(out)) if os.path.exists(out) else {}
for server in servers:
    path = os.path.join(tmp, server + ".json")
    if os.path.exists(path):
        s = json.load(open(path))["summary"]
        summaries[server] = {k: s[k] for k in ("dropped", "ok", "refused", "total", "rows", "commands")}
json.dump(summaries, open(out, "w"), indent=1)
PY
