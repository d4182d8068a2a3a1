#!/usr/bin/env bash
# Builds the Python package's wheel (maturin), checks its platform tag (auditwheel), installs
# it into a fresh virtualenv from the file alone and runs the seed's experiment through the
# installed commands, with cargo off PATH: `shutdown-harness -- server-cli seed_app:app`,
# the seed's FastAPI app in the ASGI workers. Exits non-zero on any drop.
#
#   scripts/wheel.sh          the above, plus the harness's default run (the demo app) and
#                             the installed parent's RSS next to the cargo-built one
#   scripts/wheel.sh --ci     the seed's app only (CI)
#
# Output: target/wheels/zerodrop-*.whl and target/wheel-check.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
MODE="${1:-full}"
WORK="$ROOT/target/wheel-check"
TOOLS="$ROOT/target/wheel-tools"
rm -rf "$WORK" && mkdir -p "$WORK"

# maturin builds, `wheel tags` and auditwheel check: from PyPI, in a venv of their own.
[ -x "$TOOLS/bin/maturin" ] || { python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install --quiet "maturin>=1.16,<2" wheel auditwheel; }
rm -rf "$ROOT/target/wheels"
(cd "$ROOT" && "$TOOLS/bin/maturin" build --release --locked --out "$ROOT/target/wheels" 2>&1 | grep -v '^ *Compiling' )
built="$(ls "$ROOT"/target/wheels/zerodrop-*.whl)"
# maturin tags a binary wheel that has a pyo3 dependency for the interpreter that built it;
# the binaries link no Python and the extension module is abi3, so any CPython >= 3.9 fits.
"$TOOLS/bin/wheel" tags --remove --python-tag cp39 --abi-tag abi3 "$built" >/dev/null
wheel="$(ls "$ROOT"/target/wheels/zerodrop-*.whl)"
echo "wheel: $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"
# The platform tag must be the glibc the binaries and the module really need.
"$TOOLS/bin/auditwheel" show "$wheel" | tr '\n' ' ' | sed 's/  */ /g'; echo

# A fresh virtualenv, the wheel from its file, FastAPI from the index; then nothing of the
# build on PATH: no cargo, no target/.
python3 -m venv "$WORK/v"
start=$(date +%s.%N)
"$WORK/v/bin/pip" install --quiet "$wheel"
install_s=$(python3 -c "import time; print(round(time.time() - $start, 1))")
"$WORK/v/bin/pip" install --quiet fastapi
clean_path="$WORK/v/bin:/usr/local/bin:/usr/bin:/bin"
if PATH="$clean_path" command -v cargo >/dev/null; then echo "error: cargo is still on the clean PATH" >&2; exit 1; fi
run() { env -i HOME="$HOME" PATH="$clean_path" "$@"; }
run server-cli --version
run python -m zerodrop --version >/dev/null

# Bad input: the source distribution on a machine without Rust. maturin's PEP 517 backend
# would download a temporary toolchain (static.rust-lang.org); MATURIN_NO_INSTALL_RUST=1
# (what an offline or locked-down machine amounts to) must give maturin's one message.
(cd "$ROOT" && "$TOOLS/bin/maturin" sdist --out "$WORK/sdist" >/dev/null 2>&1)
sdist="$(ls "$WORK"/sdist/zerodrop-*.tar.gz)"
index_env=()
while IFS= read -r name; do index_env+=("$name=${!name}"); done < <(compgen -e | grep -E '^(PIP_|SSL_CERT_)' || true)
if run env "${index_env[@]}" MATURIN_NO_INSTALL_RUST=1 "$WORK/v/bin/pip" install --no-cache-dir "$sdist" >"$WORK/sdist.log" 2>&1; then
  echo "error: the sdist installed without a Rust toolchain" >&2; exit 1
fi
if ! grep -q "Cargo, the Rust package manager, is not installed or is not on PATH" "$WORK/sdist.log"; then
  echo "error: the sdist without Rust did not fail with maturin's message:" >&2; cat "$WORK/sdist.log" >&2; exit 1
fi
echo "sdist without Rust: maturin's message ($(grep -m1 -o 'Cargo, the Rust package manager[^.]*' "$WORK/sdist.log"))"

cp "$PEERS_DIR/seed_app.py" "$WORK/"
results=()
seed_json="$WORK/seed-app.json"
(cd "$WORK" && run shutdown-harness --json "$seed_json" -- server-cli seed_app:app --workers 2 --port '{port}' | tail -1)
results+=("\"seed_app\": $(json_field "$seed_json" dropped)")
if [ "$MODE" != "--ci" ]; then
  demo_json="$WORK/demo.json"
  (cd "$WORK" && run shutdown-harness --json "$demo_json" | tail -1)
  results+=("\"demo_app\": $(json_field "$demo_json" dropped)")
  # The parent's RSS: installed binary next to the cargo-built one (same options, idle).
  build_release
  rss() {
    local log="$WORK/rss.log" pid
    "$@" --workers 1 --port 0 >"$log" 2>&1 & pid=$!
    for _ in $(seq 100); do grep -q "ready" "$log" 2>/dev/null && break; sleep 0.1; done
    awk '/VmRSS/ {print $2}' "/proc/$pid/status"
    kill -TERM "$pid"; wait "$pid" || true
  }
  results+=("\"parent_rss_kib_installed\": $(rss "$WORK/v/bin/server-cli")")
  results+=("\"parent_rss_kib_cargo\": $(rss "$SERVER_CLI")")
fi
dropped=$(json_field "$seed_json" dropped)
printf '{"wheel": "%s", "install_seconds": %s, %s}\n' "$(basename "$wheel")" "$install_s" \
  "$(IFS=,; echo "${results[*]}")" | tee "$ROOT/target/wheel-check.json"
[ "$dropped" = 0 ]
