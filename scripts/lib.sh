# Shared helpers for the scripts: paths, the peers' venv, the release build.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="$ROOT/scripts/peers"
VENV="${PEERS_VENV:-$ROOT/.peers}"
HARNESS="$ROOT/target/release/shutdown-harness"
SERVER_CLI="$ROOT/target/release/server-cli"

# Builds the release binaries (harness and server-cli).
build_release() {
  (cd "$ROOT" && cargo build --release --workspace --quiet)
}

# Creates the peers' venv (uvicorn, fastapi, gunicorn, websockets at the pinned versions),
# and installs again whenever the requirements change.
ensure_peers() {
  if ! cmp -s "$PEERS_DIR/requirements.txt" "$VENV/.installed-requirements.txt"; then
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r "$PEERS_DIR/requirements.txt"
    cp "$PEERS_DIR/requirements.txt" "$VENV/.installed-requirements.txt"
  fi
}

# The command line of a named server, with {port} for the harness to fill in.
server_command() {
  case "$1" in
    uvicorn) echo "$VENV/bin/uvicorn seed_app:app --app-dir $PEERS_DIR --workers 2 --port {port} --no-access-log" ;;
    gunicorn) echo "$VENV/bin/gunicorn -k uvicorn_worker.UvicornWorker -w 2 -b 127.0.0.1:{port} --chdir $PEERS_DIR seed_app:app" ;;
    server-cli) echo "$SERVER_CLI --workers 2 --demo-shutdown-delay 10 --port {port} --no-access-log" ;;
    server-cli-uvicorn) echo "$SERVER_CLI --workers 2 --port {port} --no-access-log -- $VENV/bin/uvicorn seed_app:app --app-dir $PEERS_DIR --fd 3 --no-access-log" ;;
    server-cli-asgi) echo "env VIRTUAL_ENV=$VENV $SERVER_CLI seed_app:app --app-dir $PEERS_DIR --workers 2 --port {port} --no-access-log" ;;
    granian) echo "$VENV/bin/granian --interface asgi --workers 2 --host 127.0.0.1 --port {port} --working-dir $PEERS_DIR --no-access-log seed_app:app" ;;
    hypercorn) echo "env PYTHONPATH=$PEERS_DIR $VENV/bin/hypercorn --workers 2 --bind 127.0.0.1:{port} seed_app:app" ;;
    axum) echo "$ROOT/target/release/baseline_axum 127.0.0.1:{port}" ;;
    server-cli-close) echo "$SERVER_CLI --workers 2 --demo-shutdown-delay 10 --port {port} --no-access-log --listener-drain close" ;;
    *) echo "unknown server: $1" >&2; return 2 ;;
  esac
}

# Reads one summary field from a harness JSON report.
json_field() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"][sys.argv[2]])' "$1" "$2"
}
