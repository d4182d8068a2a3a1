#!/usr/bin/env bash
# --limit-max-memory at work: a worker leaking 10 MiB per request, 10 requests/s (one
# keep-alive client of the harness on /grow?mib=10), server-cli --workers 2
# --limit-max-memory 200, 20 s; the same with external workers (a Python server on fd 3
# that leaks as much per request), then the standard library's http.server on fd 3 (a poll()
# loop) with 2 and 4 workers, and the same with replacements that take 5 s to serve. A sampler scrapes /metrics every 100 ms: the most RSS a
# worker reached, the fewest ready workers, the restarts for memory. Results:
# bench/results/memory-limit.json.
#
#   scripts/memory-limit.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
build_release
python3 - "$SERVER_CLI" "$HARNESS" "$ROOT" <<'PY'
import json, os, re, socket, subprocess, sys, threading, time, urllib.request
server_cli, harness, root = sys.argv[1:4]

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def run(name, extra, env, path, workers=2):
    port, mport = free_port(), free_port()
    argv = [server_cli, "--workers", str(workers), "--port", str(port), "--no-access-log",
            "--limit-max-memory", "200", "--metrics-bind", f"127.0.0.1:{mport}"] + extra
    log = open(f"/tmp/memory-limit-{name}.log", "w")
    server = subprocess.Popen(argv, stderr=log, env={**os.environ, **env}, start_new_session=True)
    samples = {"most_rss_mib": 0.0, "fewest_ready": None, "memory_restarts": 0}
    done = threading.Event()
    def sample():
        while not done.is_set():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=1).read().decode()
            except OSError:
                time.sleep(0.1)
                continue
            for m in re.finditer(r"^server_worker_resident_memory_bytes\{[^}]*\} (\d+)", text, re.M):
                samples["most_rss_mib"] = max(samples["most_rss_mib"], int(m.group(1)) / 2**20)
            ready = int(re.search(r'^server_workers\{state="ready"\} (\d+)', text, re.M).group(1))
            if samples["fewest_ready"] is None or ready < samples["fewest_ready"]:
                if samples["most_rss_mib"] > 0:  # after the start
                    samples["fewest_ready"] = ready
            samples["memory_restarts"] = int(re.search(r'reason="memory"\} (\d+)', text).group(1))
            time.sleep(0.1)
    sampler = threading.Thread(target=sample)
    sampler.start()
    out = subprocess.run([harness, "--url", f"http://127.0.0.1:{port}{path}", "--scenario", "keepalive",
                          "--clients", "1", "--interval", "0.1", "--duration", "20",
                          "--json", f"/tmp/memory-limit-{name}.json"], capture_output=True, text=True)
    done.set()
    sampler.join()
    server.terminate()
    server.wait(timeout=60)
    log.close()
    summary = json.load(open(f"/tmp/memory-limit-{name}.json"))["summary"]
    logged = sum("reason: memory" in line for line in open(f"/tmp/memory-limit-{name}.log"))
    result = {**samples, "memory_lines_in_log": logged, "dropped": summary["dropped"],
              "ok": summary["ok"], "verdict": out.stdout.strip().splitlines()[-1]}
    print(f"{name:9} {json.dumps(result)}", flush=True)
    return result

fixtures = os.path.join(root, "server-cli", "tests", "fixtures")
fixture = os.path.join(fixtures, "fd3_server.py")
# http.server on fd 3: waits in poll(), closes each connection (5-8 requests/s).
stdlib = ["--", "python3", os.path.join(fixtures, "fd3_stdlib_server.py")]
results = {
    "limit_mib": 200, "leak": "10 MiB per request, 10 requests/s, one keep-alive client, 20 s",
    "built-in": run("built-in", [], {}, "/grow?mib=10"),
    "external": run("external", ["--", "python3", fixture], {"LEAK_MIB": "10"}, "/"),
    "stdlib-2": run("stdlib-2", stdlib, {"LEAK_MIB": "10"}, "/"),
    "stdlib-4": run("stdlib-4", stdlib, {"LEAK_MIB": "10"}, "/", workers=4),
    # Replacements that take 5 s to serve (an app slow to import).
    "slow-2": run("slow-2", stdlib, {"LEAK_MIB": "10", "START_SECS": "5"}, "/"),
    "slow-4": run("slow-4", stdlib, {"LEAK_MIB": "10", "START_SECS": "5"}, "/", workers=4),
}
json.dump(results, open(os.path.join(root, "bench", "results", "memory-limit.json"), "w"), indent=1)
PY
