"""Benchmarks of server-cli against plain axum, uvicorn and gunicorn, in one run.

Run through scripts/bench.sh (which builds the release binaries and the peers' venv).
Writes bench/results/bench.json (or bench-smoke.json) and prints a summary.

    python3 scripts/bench.py [--smoke] [--no-peers]
"""
import argparse
import json
import multiprocessing
import os
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import shutil
import ssl
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
SERVER_CLI = os.path.join(RELEASE, "server-cli")
HARNESS = os.path.join(RELEASE, "shutdown-harness")
BASELINE = os.path.join(RELEASE, "baseline_axum")
VENV = os.environ.get("PEERS_VENV", os.path.join(ROOT, ".peers"))
PEERS_DIR = os.path.join(ROOT, "scripts", "peers")
READY_TIMEOUT = 30.0


def allow_open_files(count):
    """Raises this process's open-files limit (inherited by the servers it starts) for
    `count` connections plus room; returns how many connections fit under the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 1024
    if hard < want:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            hard = want
        except (ValueError, OSError):
            count = max(100, hard - 1024)
            print(f"  open-files hard limit {hard}: {count} connections only", flush=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 1024)), hard))
    return count


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def contender_command(name, port, workers=2):
    if name == "server-cli":
        return [SERVER_CLI, "--workers", str(workers), "--port", str(port), "--no-access-log"]
    if name == "axum-baseline":
        return [BASELINE, f"127.0.0.1:{port}"]
    if name == "uvicorn":
        return [os.path.join(VENV, "bin", "uvicorn"), "seed_app:app", "--app-dir", PEERS_DIR,
                "--workers", str(workers), "--port", str(port), "--no-access-log"]
    if name == "gunicorn":
        return [os.path.join(VENV, "bin", "gunicorn"), "-k", "uvicorn_worker.UvicornWorker",
                "-w", str(workers), "-b", f"127.0.0.1:{port}", "--chdir", PEERS_DIR, "seed_app:app"]
    raise ValueError(name)


class Server:
    """A server process whose stderr lines are collected (JSON lines for server-cli)."""

    def __init__(self, argv, port, tls=None, ready_timeout=None):
        self.port = port
        self.tls = tls
        self.ready_timeout = ready_timeout or READY_TIMEOUT
        self.lines = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait_ready()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.lines[-5:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
                    s = self.tls.wrap_socket(raw) if self.tls else raw
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("server not ready")

    def wait_for(self, predicate, timeout=10.0, start=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(start, len(self.lines)):
                if predicate(self.lines[i][1]):
                    return self.lines[i]
            time.sleep(0.002)
        raise RuntimeError("log line not seen")

    def children(self):
        out = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat = open(f"/proc/{pid}/stat").read()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z" and fields[1] == str(self.proc.pid):
                out.append(int(pid))
        return sorted(out)

    def stop(self, sig=signal.SIGTERM, timeout=60.0):
        """Sends `sig`; returns seconds until the process exited. Waits on a pidfd: the
        exit is seen when it happens (`Popen.wait(timeout)` polls with doubling sleeps, so an
        exit 8 ms after the signal read as 15.5 ms)."""
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            t0 = time.perf_counter()
            self.proc.send_signal(sig)
            exited, _, _ = select.select([pidfd], [], [], timeout)
            took = time.perf_counter() - t0
        finally:
            os.close(pidfd)
        if not exited:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return took

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def parse_latency(text, label):
    m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(port, secs, connections, new_connection, during=None, scheme="http"):
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{secs}s", "--latency", "--timeout", "5s"]
    if new_connection:
        argv += ["-H", "Connection: close"]
    argv.append(f"{scheme}://127.0.0.1:{port}/")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    sampled = None
    if during:
        time.sleep(secs / 2)
        sampled = during()
    out, _ = proc.communicate()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_sec": rps,
        "p50_ms": parse_latency(out, "50"),
        "p99_ms": parse_latency(out, "99"),
        "socket_errors": errors.group(1) if errors else None,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }, sampled


def throughput(contenders, secs, connections, rounds):
    """wrk against each contender, keep-alive and a new connection per request. server-cli
    and plain axum run `rounds` times in alternating order (runs here vary by 10-20 %), and
    the run with the median rate of each is kept; the peers, 100x slower, run once."""
    runs = {}
    order = [name for name in contenders if name in ("server-cli", "axum-baseline")]
    for round_number in range(rounds):
        names = order[::-1] if round_number % 2 else order
        if round_number == 0:
            names = names + [name for name in contenders if name not in order]
        for name in names:
            for mode, new_conn in (("keepalive", False), ("new_connection", True)):
                port = free_port()
                server = Server(contender_command(name, port), port)
                try:
                    result, _ = wrk(port, secs, connections, new_conn)
                finally:
                    server.kill()
                runs.setdefault(name, {}).setdefault(mode, []).append(result)
                print(f"  {name:14} {mode:15} {result['requests_per_sec']:>10.0f} req/s  "
                      f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms", flush=True)
    results = {}
    for name, modes in runs.items():
        for mode, tries in modes.items():
            median = sorted(tries, key=lambda r: r["requests_per_sec"])[len(tries) // 2]
            results.setdefault(name, {})[mode] = dict(median, runs=[r["requests_per_sec"] for r in tries])
    base = results.get("axum-baseline")
    if base:
        for name, modes in results.items():
            for mode, r in modes.items():
                r["ratio_to_axum"] = round(r["requests_per_sec"] / base[mode]["requests_per_sec"], 3)
    for name in order:
        print(f"  median of {rounds}: {name:14} keep-alive {results[name]['keepalive']['requests_per_sec']:.0f}, "
              f"new connections {results[name]['new_connection']['requests_per_sec']:.0f} req/s", flush=True)
    return results


def h2load(port, secs, clients=16, streams=10, during=None):
    """h2load with h2c prior knowledge; returns its counts, and what `during` returned
    (called halfway)."""
    proc = subprocess.Popen(["h2load", "-D", str(secs), "-c", str(clients), "-m", str(streams),
                             f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
    sampled = None
    if during:
        time.sleep(secs / 3)
        sampled = during()
    out, _ = proc.communicate()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    return {"requests_per_sec": float(rps.group(1)) if rps else 0.0,
            "started": int(m.group(2)), "succeeded": int(m.group(4)),
            "errored": int(m.group(6))}, sampled


def http2(secs):
    """HTTP/2 (h2c, 16 connections x 10 streams): throughput next to plain axum; then a
    HUP and a SIGTERM under the same load, each stream h2load counts as errored checked
    against the server's own count of answered streams (its access log)."""
    if not shutil.which("h2load"):
        print("  h2load not installed (nghttp2-client): skipped", flush=True)
        return None
    results = {}
    for name in ("server-cli", "axum-baseline"):
        port = free_port()
        server = Server(contender_command(name, port), port)
        try:
            results[name], _ = h2load(port, secs)
        finally:
            server.kill()
        print(f"  {name:14} {results[name]['requests_per_sec']:>10.0f} req/s", flush=True)
    results["ratio_to_axum"] = round(results["server-cli"]["requests_per_sec"]
                                     / results["axum-baseline"]["requests_per_sec"], 3)
    for signame, sig in (("hup", signal.SIGHUP), ("sigterm", signal.SIGTERM)):
        port = free_port()
        argv = [SERVER_CLI, "--workers", "2", "--port", str(port)]  # access log on: it counts
        server = Server(argv, port)
        try:
            r, _ = h2load(port, 6, during=lambda: server.proc.send_signal(sig))
            if sig == signal.SIGHUP:
                server.stop()
            else:
                server.proc.wait(timeout=60)
            server.reader.join(timeout=60)  # every access line read
            answered = sum(1 for _, line in server.lines if 'HTTP/2.0" 200' in line)
        finally:
            server.kill()
        r["answered_by_server"] = answered
        r["errored_but_processed"] = max(0, answered - r["succeeded"])
        results[signame] = r
        print(f"  {signame:7} {r['started']} started, {r['succeeded']} succeeded, {r['errored']} errored; "
              f"the server answered {answered}: {r['errored_but_processed']} errored streams were processed",
              flush=True)
    return results


def worker_shares(workers, gate, load):
    """Each worker's share of the requests `load(port)` sent (from the server's metrics)."""
    port, mport = free_port(), free_port()
    argv = contender_command("server-cli", port, workers) + ["--metrics-bind", f"127.0.0.1:{mport}"]
    if not gate:
        argv.append("--no-accept-gate")
    server = Server(argv, port)
    try:
        load(port)
        text = subprocess.run(["curl", "-s", f"http://127.0.0.1:{mport}/metrics"],
                              capture_output=True, text=True).stdout
    finally:
        server.kill()
    counts = [int(m) for m in re.findall(r"^server_worker_http_requests_total\{[^}]*\} (\d+)", text, re.M)]
    total = sum(counts) or 1
    shares = [round(c / total, 3) for c in counts]
    return {"requests": counts, "shares": shares,
            "worst_relative_deviation": round(max(abs(sh * workers - 1) for sh in shares), 3) if counts else None}


def balance(secs):
    """How evenly the workers share the requests, with the accept gate (default) and
    without, for four arrival patterns; and a CPU-heavy route on 1 and 2 workers."""
    def harness(scenario, *extra):
        return lambda port: subprocess.run(
            [HARNESS, "--url", f"http://127.0.0.1:{port}/", "--scenario", scenario,
             "--duration", str(secs + 1), "--signal-after", "1", *extra], capture_output=True)
    patterns = {
        "keepalive_16_clients": harness("keepalive"),
        "wrk_64_keepalive": lambda port: wrk(port, secs, 64, False),
        "new_connections_heavy_wrk_64": lambda port: wrk(port, secs, 64, True),
        "new_connections_light_4_clients_50ms": harness("load", "--clients", "4", "--interval", "0.05"),
    }
    results = {}
    for gate in (True, False):
        key = "accept_gate" if gate else "no_accept_gate"
        for workers in (2, 4):
            for name, load in patterns.items():
                r = worker_shares(workers, gate, load)
                results.setdefault(key, {}).setdefault(str(workers), {})[name] = r
                print(f"  {key:15} {workers} workers {name:38} shares {r['shares']} "
                      f"(worst {r['worst_relative_deviation']:+.0%})", flush=True)
    burn = {}
    for workers in (1, 2):
        port = free_port()
        server = Server(contender_command("server-cli", port, workers), port)
        try:
            out = subprocess.run([HARNESS, "--url", f"http://127.0.0.1:{port}/burn?ms=1", "--scenario",
                                  "keepalive", "--interval", "0", "--duration", str(secs + 1),
                                  "--signal-after", "1"], capture_output=True, text=True).stdout
        finally:
            server.kill()
        burn[str(workers)] = float(re.search(r"ok_rps_before_signal=(\d+)", out).group(1))
    burn["speedup"] = round(burn["2"] / burn["1"], 2) if burn["1"] else None
    results["burn_1ms_keepalive_16_clients_rps"] = burn
    print(f"  /burn?ms=1, 16 keep-alive clients: 1 worker {burn['1']:.0f} req/s, 2 workers {burn['2']:.0f} "
          f"req/s ({burn['speedup']}x)", flush=True)
    return results


def metrics_cost(secs, rounds, count_instructions):
    """Throughput with --metrics-bind on and off, each next to plain axum in the same
    round (alternating, `rounds` times), and instructions per request with valgrind."""
    runs = {"off": [], "on": [], "axum": []}
    for _ in range(rounds):
        for name in ("axum", "off", "on"):
            port = free_port()
            if name == "axum":
                argv = contender_command("axum-baseline", port)
            else:
                argv = contender_command("server-cli", port)
                if name == "on":
                    argv += ["--metrics-bind", f"127.0.0.1:{free_port()}"]
            server = Server(argv, port)
            try:
                result, _ = wrk(port, secs, 64, False)
            finally:
                server.kill()
            runs[name].append(result["requests_per_sec"])
    median = {k: statistics.median(v) for k, v in runs.items()}
    result = {"keepalive_rps": {k: round(v) for k, v in median.items()},
              "ratio_to_axum_off": round(median["off"] / median["axum"], 3),
              "ratio_to_axum_on": round(median["on"] / median["axum"], 3),
              "rounds": rounds,
              "instructions_per_request": instructions_per_request() if count_instructions else None}
    result["on_vs_off"] = round(result["ratio_to_axum_on"] / result["ratio_to_axum_off"], 3)
    print(f"  keep-alive req/s (median of {rounds}): axum {result['keepalive_rps']['axum']}, metrics off "
          f"{result['keepalive_rps']['off']} ({result['ratio_to_axum_off']}x axum), on "
          f"{result['keepalive_rps']['on']} ({result['ratio_to_axum_on']}x axum): on/off {result['on_vs_off']}",
          flush=True)
    print(f"  instructions per request (one worker, valgrind): {result['instructions_per_request']}", flush=True)
    return result


def instructions_per_request():
    """Instructions a worker executes per keep-alive request, metrics off and on: the
    worker's total under callgrind after N and 2N requests, differenced (start-up and
    shutdown cancel out)."""
    if not shutil.which("valgrind"):
        return None
    out = {}
    for mode in ("off", "on"):
        totals = []
        for n in (2000, 4000):
            with tempfile.TemporaryDirectory() as tmp:
                port = free_port()
                argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p",
                        SERVER_CLI, "--workers", "1", "--port", str(port), "--no-access-log"]
                if mode == "on":
                    argv += ["--metrics-bind", f"127.0.0.1:{free_port()}"]
                server = Server(argv, port)
                try:
                    with socket.create_connection(("127.0.0.1", port)) as s:
                        for _ in range(n):
                            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                            got = b""
                            while not got.endswith(b"World\"}"):
                                got += s.recv(4096)
                    workers = server.children()
                    server.stop(timeout=60)
                finally:
                    server.kill()
                worker_totals = []
                for pid in workers:
                    path = os.path.join(tmp, f"cg.{pid}")
                    if os.path.exists(path):
                        text = open(path).read()
                        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
                        if m:
                            worker_totals.append(int(m.group(1)))
                totals.append(max(worker_totals) if worker_totals else None)
        if None in totals:
            return None
        out[mode] = round((totals[1] - totals[0]) / 2000)
    return out


def shutdown_latency(worker_counts, runs):
    out = {}
    for workers in worker_counts:
        samples = []
        for _ in range(runs):
            port = free_port()
            server = Server(contender_command("server-cli", port, workers), port)
            server.wait_for(lambda l: "all workers are ready" in l)
            samples.append(server.stop() * 1000)
        out[str(workers)] = {"median_ms": round(statistics.median(samples), 2),
                             "max_ms": round(max(samples), 2), "runs": runs}
        print(f"  SIGTERM to exit, {workers} workers, nothing in flight: "
              f"median {out[str(workers)]['median_ms']} ms", flush=True)
    return out


def shutdown_with_hook(workers):
    port = free_port()
    argv = contender_command("server-cli", port, workers) + ["--demo-shutdown-delay", "10"]
    server = Server(argv, port)
    server.wait_for(lambda l: "all workers are ready" in l)
    took = server.stop()
    print(f"  SIGTERM to exit, {workers} workers, 10 s shutdown hook each: {took:.3f} s", flush=True)
    return round(took, 3)


READY_RE = re.compile(r"worker (\d+) ready ([\d.]+) ms after fork")


def worker_start_and_respawn(runs):
    starts, respawns = [], []
    for _ in range(runs):
        port = free_port()
        argv = contender_command("server-cli", port, 2) + ["--log-format", "json"]
        server = Server(argv, port)
        server.wait_for(lambda l: "all workers are ready" in l)
        for _, line in list(server.lines):
            m = READY_RE.search(line)
            if m:
                starts.append(float(m.group(2)))
        victim = server.children()[0]
        seen = len(server.lines)
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        _, line = server.wait_for(lambda l: READY_RE.search(l) is not None, start=seen)
        ready_at = json.loads(line)["time"]
        respawns.append((ready_at - t_kill) * 1000)
        server.kill()
    result = {
        "fork_to_ready_median_ms": round(statistics.median(starts), 2),
        "respawn_to_ready_median_ms": round(statistics.median(respawns), 2),
        "samples": {"fork_to_ready": len(starts), "respawn": len(respawns)},
    }
    print(f"  worker fork to ready: median {result['fork_to_ready_median_ms']} ms; "
          f"SIGKILL to replacement ready: median {result['respawn_to_ready_median_ms']} ms "
          "(log timestamps have 1 ms resolution)", flush=True)
    return result


def memory_kib(pid):
    """RSS, PSS (shared pages divided among the processes that map them) and USS (pages
    only this process maps) of `pid`, in KiB, from /proc/PID/smaps_rollup."""
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1])
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields["Private_Clean"] + fields["Private_Dirty"], "anon": fields["Anonymous"]}


def binary_layout(binary):
    """Whether the release link laid out the parent's code (server-cli/build.rs): packed
    relocations present, and how many of the order file's functions the binary has (the file
    covers two builds, `-p server-cli` and `--workspace`; a count far below its half means
    the file is stale: scripts/order-parent-code.sh writes it again)."""
    order = os.path.join(ROOT, "server-cli", "parent-code.order")
    ordered = {l.strip() for l in open(order) if l.strip() and not l.startswith("#")}
    symbols = subprocess.run(["nm", "--defined-only", binary], capture_output=True,
                             text=True, check=True).stdout.split()
    sections = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True,
                              check=True).stdout
    return {"packed_relocations": ".relr.dyn" in sections,
            "order_file_functions": len(ordered),
            "order_file_functions_in_binary": len(ordered.intersection(symbols))}


def memory(secs, starts):
    """The parent's memory when idle, median over `starts` starts (file pages mapped at
    start vary from one start to the next), next to a process that runs nothing (`sleep`)
    in the same run; then the workers' and the parent's RSS under wrk load."""
    samples = []
    for _ in range(starts):
        port = free_port()
        server = Server(contender_command("server-cli", port, 2), port)
        try:
            server.wait_for(lambda l: "all workers are ready" in l)
            time.sleep(0.2)
            samples.append(memory_kib(server.proc.pid))
        finally:
            server.kill()
    idle_sleep = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.2)
        reference = memory_kib(idle_sleep.pid)
    finally:
        idle_sleep.kill()
        idle_sleep.wait()
    parent = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    port = free_port()
    server = Server(contender_command("server-cli", port, 2), port)
    try:
        server.wait_for(lambda l: "all workers are ready" in l)
        time.sleep(0.2)
        idle_workers = [rss_kib(p) for p in server.children()]
        _, loaded = wrk(port, secs, 64, False, during=lambda: {
            "parent_kib": rss_kib(server.proc.pid),
            "workers_kib": [rss_kib(p) for p in server.children()]})
    finally:
        server.kill()
    layout = binary_layout(SERVER_CLI)
    print(f"  layout: packed relocations {layout['packed_relocations']}, "
          f"{layout['order_file_functions_in_binary']} of the order file's "
          f"{layout['order_file_functions']} functions in the binary", flush=True)
    if layout["order_file_functions_in_binary"] < layout["order_file_functions"] // 4:
        print("  WARNING: server-cli/parent-code.order is stale (a new toolchain or new "
              "dependencies?): run scripts/order-parent-code.sh", flush=True)
    print(f"  parent idle, median of {starts} starts: RSS {parent['rss']} KiB (PSS {parent['pss']}, "
          f"USS {parent['uss']}, anonymous {parent['anon']}); `sleep` in the same run: RSS "
          f"{reference['rss']} KiB; workers idle {idle_workers} KiB; under load: parent "
          f"{loaded['parent_kib']} KiB, workers {loaded['workers_kib']} KiB", flush=True)
    return {"idle": {"parent_kib": parent["rss"], "parent": parent, "starts": starts,
                     "parent_samples": samples, "workers_kib": idle_workers},
            "sleep_process": reference, "under_load": loaded, "layout": layout}


def scale(worker_counts, secs):
    out = {}
    for workers in worker_counts:
        port = free_port()
        server = Server(contender_command("server-cli", port, workers), port)
        try:
            result, _ = wrk(port, secs, 64, False)
        finally:
            server.kill()
        out[str(workers)] = result["requests_per_sec"]
        print(f"  {workers} workers: {result['requests_per_sec']:.0f} req/s (keep-alive)", flush=True)
    return out


def how_they_ended(conns, timeout=5):
    """How each idle connection ended once the server stopped: (closed with a FIN, reset,
    anything else such as a timeout)."""
    clean = reset = other = 0
    for s in conns:
        s.settimeout(timeout)
        try:
            clean += 1 if s.recv(4096) == b"" else 0
        except ConnectionResetError:
            reset += 1
        except OSError:
            other += 1
    return clean, reset, other


def idle_connections_at_shutdown(count):
    count = allow_open_files(count)
    port = free_port()
    server = Server(contender_command("server-cli", port, 2), port)
    conns = []
    try:
        server.wait_for(lambda l: "all workers are ready" in l)
        before = [rss_kib(p) for p in server.children()]
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(s)
        for s in conns:
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                data += s.recv(4096)
        held = [rss_kib(p) for p in server.children()]
        took = server.stop()
        clean, reset, other = how_they_ended(conns)
    finally:
        for s in conns:
            s.close()
        server.kill()
    result = {"connections": count, "closed_cleanly": clean, "reset": reset, "other": other,
              "exit_after_s": round(took, 3), "worker_rss_kib_before": before,
              "worker_rss_kib_holding": held}
    print(f"  {count} idle keep-alive connections at SIGTERM: {clean} closed cleanly, {reset} reset, "
          f"{other} other; exit after {took:.3f} s; worker RSS {before} -> {held} KiB", flush=True)
    return result


OPEN_FILES_RESERVE = 256  # descriptors a process needs besides its connections
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # linux/in.h


def hold_connections(port, source, count, pipe):
    """Client process: opens `count` idle keep-alive connections from `source`, each making
    one request (batches of 100: plain axum's accept queue holds 128), reports "opened",
    then on "check" reads how each one ends (FIN, reset, other) and reports the counts.
    Forked after `many_connections` raised the soft open-files limit: it inherits it."""
    conns = []
    try:
        for start in range(0, count, 100):
            batch = []
            for _ in range(start, min(count, start + 100)):
                s = socket.socket()
                # The port is picked at connect, for the whole 4-tuple: fast with thousands
                # bound, and not taken by an earlier run's TIME_WAIT to another server port.
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((source, 0))
                s.settimeout(30)
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                batch.append(s)
            for s in batch:
                data = b""
                while not data.endswith(b"}"):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise RuntimeError("closed before the response")
                    data += chunk
            conns.extend(batch)
        pipe.send(("opened", len(conns)))
        if pipe.recv() == "check":
            pipe.send(how_they_ended(conns))
    except Exception as e:  # reported to the bench, which fails the section
        pipe.send(("error", f"{source}: {e}"))
    finally:
        for s in conns:
            s.close()


def idle_connections_run(name, workers, count, per_client):
    """One server holding `count` idle keep-alive connections from client processes of at
    most `per_client` each: time to open them all, RSS per connection, and (server-cli) how
    SIGTERM ends them."""
    ctx = multiprocessing.get_context("fork")
    port = free_port()
    server = Server(contender_command(name, port, workers), port)
    clients = []
    try:
        time.sleep(0.5)
        before = tree_rss_kib(server)
        t0 = time.perf_counter()
        for k, start in enumerate(range(0, count, per_client)):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=hold_connections,
                               args=(port, f"127.0.0.{2 + k}", min(per_client, count - start), theirs))
            proc.start()
            clients.append((proc, ours))
        opened = [pipe.recv() for _, pipe in clients]
        took = time.perf_counter() - t0
        errors = [o[1] for o in opened if o[0] == "error"]
        if errors:
            raise RuntimeError(f"{name}: {errors[0]}")
        time.sleep(1.0)
        held = tree_rss_kib(server)
        r = {"contender": name, "workers": workers if name == "server-cli" else 1,
             "connections": count, "client_processes": len(clients),
             "seconds_to_open_all": round(took, 2), "rss_kib_before": before, "rss_kib_held": held,
             "rss_kib_per_connection": round((held - before) / count, 2)}
        if name == "server-cli":
            r["exit_after_s"] = round(server.stop(), 3)
            for _, pipe in clients:
                pipe.send("check")
            ends = [pipe.recv() for _, pipe in clients]
            r.update(closed_cleanly=sum(e[0] for e in ends), reset=sum(e[1] for e in ends),
                     other=sum(e[2] for e in ends))
        else:
            for _, pipe in clients:
                pipe.send("close")
    finally:
        server.kill()
        for proc, _ in clients:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    print(f"  {name:14} {r['workers']} worker(s), {count} idle connections opened in "
          f"{r['seconds_to_open_all']} s, {r['rss_kib_per_connection']} KiB each"
          + (f"; SIGTERM: {r['closed_cleanly']} FIN, {r['reset']} reset, {r['other']} other, "
             f"exit after {r['exit_after_s']} s" if "exit_after_s" in r else ""), flush=True)
    return r


def many_connections(count, rounds, workers=2):
    """`count` idle keep-alive connections on `workers` server-cli workers next to plain axum
    (one process), `rounds` alternating runs each in ABBA order (the time to open them is mostly the
    client's, and varies by 20 % from run to run: medians are compared). Each process's
    open-files hard limit caps what it can hold: when `count` does not fit, the comparison
    runs at what one process holds, then server-cli alone holds as many as its workers fit,
    then `count` on as many workers as it takes."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_process = hard - OPEN_FILES_RESERVE
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    common = min(count, per_process)
    if common < count:
        print(f"  open-files hard limit {hard} per process: {count} connections do not fit in "
              f"plain axum's one process, nor in {workers} workers", flush=True)
    runs = []
    for round_number in range(rounds):
        order = [("server-cli", workers), ("axum-baseline", 1)]
        if round_number % 2:  # ABBA: the machine's drift over the rounds falls on both
            order.reverse()
        runs.extend(idle_connections_run(name, w, common, per_process) for name, w in order)
    comparison = {}
    for name in ("server-cli", "axum-baseline"):
        mine = [r for r in runs if r["contender"] == name]
        comparison[name] = {
            "connections": common,
            "seconds_to_open_all_median": round(statistics.median(r["seconds_to_open_all"] for r in mine), 2),
            "rss_kib_per_connection_median": round(statistics.median(r["rss_kib_per_connection"] for r in mine), 2)}
    # A worker may hold a few more than its share while the other is out of descriptors.
    most_on_workers = min(count, workers * per_process * 49 // 50)
    if most_on_workers > common:
        runs.append(idle_connections_run("server-cli", workers, most_on_workers, per_process))
    if most_on_workers < count:
        needed = -(-count * 50 // (per_process * 49))
        runs.append(idle_connections_run("server-cli", needed, count, per_process))
    ours, theirs = comparison["server-cli"], comparison["axum-baseline"]
    print(f"  medians of {rounds}: server-cli opened {common} in {ours['seconds_to_open_all_median']} s "
          f"({ours['rss_kib_per_connection_median']} KiB each), plain axum in "
          f"{theirs['seconds_to_open_all_median']} s ({theirs['rss_kib_per_connection_median']} KiB each)",
          flush=True)
    return {"open_files_hard_limit": hard, "rounds": rounds, "comparison": comparison, "runs": runs}


def tls_certificate(tmp):
    """A P-256 certificate for 127.0.0.1 and localhost, valid two days (openssl CLI)."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-days", "2", "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def tls_contender_command(name, port, cert, key, tmp):
    if name == "server-cli":
        return contender_command("server-cli", port) + ["--ssl-certfile", cert, "--ssl-keyfile", key]
    if name == "uvicorn":
        return contender_command("uvicorn", port) + ["--ssl-certfile", cert, "--ssl-keyfile", key]
    if name == "nginx":
        conf = os.path.join(tmp, f"nginx-{port}.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes 2;
pid {tmp}/nginx-{port}.pid;
error_log stderr warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  ssl_session_cache shared:SSL:10m;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    # nginx 1.22 leaves TLS 1.3 out by default: compare like with like.
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ default_type application/json; return 200 '{{"Hello":"World"}}'; }}
  }}
}}
""")
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-p", tmp, "-c", conf, "-g", "daemon off;"]
    raise ValueError(name)


def s_time(port, secs, mode):
    """TLS handshakes per second from one `openssl s_time` client: `-new` (full, TLS 1.3) or
    `-reuse` (resumed; TLS 1.2, because a TLS 1.3 session ticket comes after the handshake
    and s_time never reads it, so it cannot resume a TLS 1.3 session with any server)."""
    extra = ["-tls1_2"] if mode == "-reuse" else []
    out = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode, "-time", str(secs)] + extra,
                         capture_output=True, text=True, timeout=secs * 4 + 30).stdout
    m = re.search(r"^(\d+) connections in [\d.]+s", out, re.M)
    return round(int(m.group(1)) / secs) if m else None


def idle_tls_rss(server, port, count, context):
    """Worker RSS per open idle TLS connection (each made one request), in KiB."""
    count = allow_open_files(count)
    before = sum(rss_kib(p) or 0 for p in server.children())
    conns = []
    try:
        for _ in range(count):
            s = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(s)
        for s in conns:
            s.recv(4096)
        held = sum(rss_kib(p) or 0 for p in server.children())
    finally:
        for s in conns:
            s.close()
    return round((held - before) / count, 2)


def tls(contenders, secs, idle_count):
    """HTTPS next to nginx terminating TLS in front of nothing, and uvicorn with --ssl-*."""
    results = {}
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = tls_certificate(tmp)
        for name in contenders:
            port = free_port()
            server = Server(tls_contender_command(name, port, cert, key, tmp), port, tls=context)
            try:
                keepalive = wrk(port, secs, 64, False, scheme="https")[0]
                new_conn = wrk(port, secs, 64, True, scheme="https")[0]
                r = {"keepalive_rps": round(keepalive["requests_per_sec"]),
                     "new_connection_rps": round(new_conn["requests_per_sec"]),
                     "new_connection_errors": new_conn["socket_errors"],
                     "full_handshakes_per_sec_one_client": s_time(port, max(secs // 2, 1), "-new"),
                     "resumed_tls12_handshakes_per_sec_one_client": s_time(port, max(secs // 2, 1), "-reuse"),
                     "rss_kib_per_idle_tls_connection": idle_tls_rss(server, port, idle_count, context)}
            finally:
                server.kill()
            results[name] = r
            print(f"  {name:12} keep-alive {r['keepalive_rps']:>7} req/s, new connections "
                  f"{r['new_connection_rps']:>6} req/s, handshakes/s full {r['full_handshakes_per_sec_one_client']} "
                  f"resumed (TLS 1.2) {r['resumed_tls12_handshakes_per_sec_one_client']} (one client), "
                  f"{r['rss_kib_per_idle_tls_connection']} KiB per idle connection", flush=True)
    return results


WS_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def tree_rss_kib(server):
    """RSS of the server process and its children (workers), in KiB."""
    return sum(rss_kib(p) or 0 for p in [server.proc.pid] + server.children())


def open_websockets(port, count, batch=100):
    """Opens `count` idle WebSockets (upgrade written by hand; 101 read), in batches so the
    accept queue never overflows (plain axum's holds 128); returns the sockets."""
    conns = []
    while len(conns) < count:
        fresh = [socket.create_connection(("127.0.0.1", port), timeout=30)
                 for _ in range(min(batch, count - len(conns)))]
        for s in fresh:
            s.sendall(WS_UPGRADE)
        for s in fresh:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("closed during the upgrade")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"upgrade refused: {head[:40]!r}")
        conns.extend(fresh)
    return conns


def websocket_memory(contenders, count):
    """RSS per open idle WebSocket connection (the process tree's growth over `count`)."""
    count = allow_open_files(count)
    results = {}
    for name in contenders:
        port = free_port()
        server = Server(contender_command(name, port), port)
        conns = []
        try:
            time.sleep(0.5)  # let the workers finish their start-up allocations
            before = tree_rss_kib(server)
            t0 = time.perf_counter()
            conns = open_websockets(port, count)
            took = time.perf_counter() - t0
            time.sleep(1.0)
            held = tree_rss_kib(server)
            results[name] = {"connections": count, "rss_kib_before": before, "rss_kib_held": held,
                             "rss_kib_per_websocket": round((held - before) / count, 2),
                             "seconds_to_open_all": round(took, 2)}
        finally:
            for s in conns:
                s.close()
            server.kill()
        r = results[name]
        print(f"  {name:12} {count} idle WebSockets: {r['rss_kib_per_websocket']} KiB each "
              f"({r['rss_kib_before']} -> {r['rss_kib_held']} KiB), opened in {r['seconds_to_open_all']} s",
              flush=True)
    return results


def asgi_command(server, app, port):
    """The command line of a Python server running `app` (a module of scripts/peers) on 2
    workers; server-cli's ASGI workers use the peers' virtualenv when it exists."""
    venv_bin = os.path.join(VENV, "bin")
    if server == "server-cli":
        env = ["env", f"VIRTUAL_ENV={VENV}"] if os.path.isdir(VENV) else []
        return env + [SERVER_CLI, f"{app}:app", "--app-dir", PEERS_DIR, "--workers", "2",
                      "--port", str(port), "--no-access-log"]
    if server == "granian":
        return [os.path.join(venv_bin, "granian"), "--interface", "asgi", "--workers", "2",
                "--host", "127.0.0.1", "--port", str(port), "--working-dir", PEERS_DIR,
                "--no-access-log", f"{app}:app"]
    if server == "uvicorn":
        return [os.path.join(venv_bin, "uvicorn"), f"{app}:app", "--app-dir", PEERS_DIR,
                "--workers", "2", "--port", str(port), "--no-access-log"]
    if server == "hypercorn":
        return ["env", f"PYTHONPATH={PEERS_DIR}", os.path.join(venv_bin, "hypercorn"),
                "--workers", "2", "--bind", f"127.0.0.1:{port}", f"{app}:app"]
    raise ValueError(server)


def wrk_path(port, secs, path, lua=None, connections=64):
    """wrk on one path (with a Lua script for a POST body); requests per second and errors."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{secs}s", "--timeout", "5s"]
    if lua:
        argv += ["-s", lua]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests_per_sec": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),
            "socket_errors": errors.group(1) if errors else None,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def asgi(servers, apps, secs, rounds):
    """Python ASGI apps, 2 workers each: a plain ASGI app (`hello_app`) and the seed's
    FastAPI app, keep-alive and a new connection per request, a 10 KB response and a 1 MB
    POST echo (plain app); worker RSS after the load. The servers take turns, `rounds`
    times (this VM's throughput drifts 10-20 % within minutes: a server measured once, or
    all its rounds in a row, would carry that drift into its ratio); each figure is the
    median of its rounds. Goals: plain >= 1.3x granian and FastAPI >= 1.1x granian with
    keep-alive, never below granian."""
    runs, rss = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        post = os.path.join(tmp, "post-1mb.lua")
        with open(post, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = string.rep("x", 1048576)\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        close = os.path.join(tmp, "close.lua")
        with open(close, "w") as f:
            f.write('wrk.headers["Connection"] = "close"\n')
        # (app, mode, path, wrk script, connections)
        loads = [("hello_app", "keepalive", "/", None, 64),
                 ("hello_app", "new_connection", "/", close, 64),
                 ("hello_app", "response_10kb", "/10k", None, 64),
                 ("hello_app", "post_echo_1mb", "/echo", post, 16),
                 ("seed_app", "keepalive", "/", None, 64),
                 ("seed_app", "new_connection", "/", close, 64)]
        for round_index in range(rounds):
            for app in apps:
                for server in servers:
                    port = free_port()
                    proc = Server(asgi_command(server, app, port), port)
                    try:
                        wrk_path(port, 2, "/")  # warm-up: imports, caches, lazy paths
                        for load_app, mode, path, script, connections in loads:
                            if load_app != app:
                                continue
                            result = wrk_path(port, secs, path, script, connections)
                            runs.setdefault((app, mode, server), []).append(result)
                            print(f"  round {round_index + 1}/{rounds} {app:10} {mode:15} {server:11} "
                                  f"{result['requests_per_sec']:>8} req/s", flush=True)
                        # The whole server: parent (or manager) and its 2 workers.
                        rss.setdefault((app, server), []).append(tree_rss_kib(proc))
                    finally:
                        proc.kill()
    results = {"rounds": rounds, "seconds_per_load": secs}
    for (app, mode, server), measured in runs.items():
        results.setdefault(app, {}).setdefault(mode, {})[server] = {
            "requests_per_sec": round(statistics.median(r["requests_per_sec"] for r in measured)),
            "rounds_requests_per_sec": [r["requests_per_sec"] for r in measured],
            "socket_errors": [r["socket_errors"] for r in measured if r["socket_errors"]] or None,
            "non_2xx": sum(r["non_2xx"] for r in measured)}
    for (app, server), samples in rss.items():
        results[app].setdefault("server_rss_kib", {})[server] = round(statistics.median(samples))
    for app, goal in (("hello_app", 1.3), ("seed_app", 1.1)):
        modes = {mode: by_server for mode, by_server in results.get(app, {}).items()
                 if mode != "server_rss_kib" and "granian" in by_server and "server-cli" in by_server}
        ratios = {mode: round(by_server["server-cli"]["requests_per_sec"]
                              / by_server["granian"]["requests_per_sec"], 3)
                  for mode, by_server in modes.items()}
        if not ratios:
            continue
        results[app]["ratio_to_granian"] = ratios
        results[app]["keepalive_ratio_to_granian"] = ratios.get("keepalive")
        results[app]["goal_ratio_to_granian"] = goal
        below = sorted(mode for mode, ratio in ratios.items() if ratio < 1.0)
        results[app]["below_granian"] = below
        print(f"  {app}: server-cli / granian, medians of {rounds}: "
              + ", ".join(f"{mode} {ratio:.2f}" for mode, ratio in ratios.items())
              + f" (keep-alive goal {goal}; below granian: {', '.join(below) or 'none'})", flush=True)
    return results


def callgrind_self_cost_by_object(path):
    """Instructions executed in each object file (executable or shared library), from a
    callgrind output file: each function's own cost, calls excluded."""
    names, by_object = {}, {}
    current, skip_next = None, False

    def name_of(value):
        # "(12) /usr/lib/libpython3.11.so" defines id 12; "(12)" refers to it.
        if value.startswith("("):
            ident, _, rest = value.partition(")")
            if rest.strip():
                names[ident] = rest.strip()
            return names.get(ident, rest.strip())
        return value

    with open(path) as f:
        for line in f:
            if line.startswith("ob="):
                current = name_of(line[3:].strip())
            elif line.startswith("cob="):
                name_of(line[4:].strip())  # a callee's object, named here the first time
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    by_object[current] = by_object.get(current, 0) + int(parts[1])
    return by_object


def object_group(name):
    """Which part of a Python server an object file is: the interpreter, the server's own
    native code, uvloop, other extension modules, or the C library and the rest."""
    base = os.path.basename(name or "")
    if base.startswith("libpython"):
        return "python_interpreter"
    if base == "server-cli" or base.startswith(("_granian", "zerodrop_worker", "libzerodrop_worker")):
        return "server_native"
    if "uvloop" in (name or ""):
        return "uvloop"
    if base.endswith(".so") and "site-packages" in (name or ""):
        return "other_extensions"
    if "/lib-dynload/" in (name or ""):
        return "python_stdlib_native"
    return "libc_and_rest"


def asgi_instructions_per_request(servers, apps, counts=(400, 800)):
    """Instructions per keep-alive request of one Python worker under callgrind, by part
    (interpreter, the server's native code, uvloop, ...): the worker's counts after N and
    2N requests, differenced (start-up and shutdown cancel out), after a first run that is
    thrown away (it writes the apps' .pyc caches, whose compilation would otherwise count
    in one run only and make a part negative). Counts, not seconds: the same on a busy
    machine. A part that still comes out negative marks the server's entry `unreliable`:
    the two runs did not differ by the requests alone."""
    if not shutil.which("valgrind"):
        return None
    venv_bin = os.path.join(VENV, "bin")
    results = {}
    for app in apps:
        for server in servers:
            per_run = []
            for n in (counts[0], *counts):
                with tempfile.TemporaryDirectory() as tmp:
                    port = free_port()
                    if server == "server-cli":
                        env = ["env", f"VIRTUAL_ENV={VENV}"] if os.path.isdir(VENV) else []
                        argv = env + ["valgrind", "--tool=callgrind", "--trace-children=yes",
                                      f"--callgrind-out-file={tmp}/cg.%p",
                                      SERVER_CLI, f"{app}:app", "--app-dir", PEERS_DIR,
                                      "--workers", "1", "--port", str(port), "--no-access-log",
                                      "--timeout-worker-healthcheck", "600"]
                    else:
                        argv = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                                f"--callgrind-out-file={tmp}/cg.%p",
                                os.path.join(venv_bin, "granian"), "--interface", "asgi",
                                "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
                                "--working-dir", PEERS_DIR, "--no-access-log", f"{app}:app"]
                    proc = Server(argv, port, ready_timeout=300)
                    try:
                        with socket.create_connection(("127.0.0.1", port)) as s:
                            for _ in range(n):
                                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                                got = b""
                                while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
                                    chunk = s.recv(4096)
                                    if not chunk:
                                        raise RuntimeError("connection closed")
                                    got += chunk
                        proc.stop(timeout=120)
                    finally:
                        proc.kill()
                    # The worker: the output file with the most instructions.
                    files = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.startswith("cg.")]
                    costs = [callgrind_self_cost_by_object(f) for f in files]
                    per_run.append(max(costs, key=lambda c: sum(c.values())) if costs else {})
            groups = {}
            for run_index, costs in enumerate(per_run[1:]):
                for obj, cost in costs.items():
                    group = groups.setdefault(object_group(obj), [0, 0])
                    group[run_index] += cost
            spread = counts[1] - counts[0]
            by_part = {g: round((v[1] - v[0]) / spread) for g, v in groups.items()}
            total = sum(by_part.values())
            entry = {"total": total, "by_part": by_part}
            # A few instructions below zero are rounding; a part 1 % of the total below is not.
            if any(v < -0.01 * abs(total) for v in by_part.values()):
                # Work that follows wall-clock time rather than requests (a thread polling
                # for the GIL, timers) differs between the runs: the split is not a cost.
                entry["unreliable"] = "a part is negative: the runs differ by more than their requests"
            results.setdefault(app, {})[server] = entry
            print(f"  {app:10} {server:11} {total:>9} instructions per request: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(by_part.items(), key=lambda kv: -kv[1])),
                  flush=True)
    return results


def harness_vs_wrk(secs, connections=64):
    """The harness's own speed on keep-alive connections next to wrk's, against the same
    server-cli --workers 2 in the same run: the harness must never be the bottleneck that
    hides a drop (goal: at least half of wrk's rate)."""
    port = free_port()
    server = Server(contender_command("server-cli", port), port)
    try:
        by_wrk, _ = wrk(port, secs, connections, False)
        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "harness.json")
            subprocess.run([HARNESS, "--url", f"http://127.0.0.1:{port}/", "--scenario", "keepalive",
                            "--clients", str(connections), "--interval", "0",
                            "--duration", str(secs), "--signal-after", str(secs / 2),
                            "--json", report], capture_output=True, text=True)
            summary = json.load(open(report))["summary"]
    finally:
        server.kill()
    harness_rps = summary["ok"] / secs
    result = {"connections": connections, "seconds": secs,
              "wrk_rps": round(by_wrk["requests_per_sec"]), "harness_rps": round(harness_rps),
              "harness_dropped": summary["dropped"],
              "ratio": round(harness_rps / by_wrk["requests_per_sec"], 3)}
    print(f"  keep-alive, {connections} connections, server-cli --workers 2: wrk "
          f"{result['wrk_rps']} req/s, harness {result['harness_rps']} req/s "
          f"(ratio {result['ratio']})", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes: keeps the script working")
    parser.add_argument("--no-peers", action="store_true", help="skip uvicorn and gunicorn")
    parser.add_argument("--only", nargs="+", metavar="SECTION",
                        help="measure only these sections (e.g. harness_vs_wrk) and update them in the JSON")
    args = parser.parse_args()
    smoke = args.smoke
    secs = 1 if smoke else 10
    runs = 2 if smoke else 10
    contenders = ["server-cli", "axum-baseline"] + ([] if args.no_peers else ["uvicorn", "gunicorn"])
    out_dir = os.path.join(ROOT, "bench", "results")
    path = os.path.join(out_dir, "bench-smoke.json" if smoke else "bench.json")
    results = {}
    if args.only and os.path.exists(path):
        # One section measured again: the others keep the figures of their own run.
        results = json.load(open(path))
    results.update({"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                                "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                             if l.startswith("model name")), "?")},
                    "smoke": smoke})
    sections = [
        ("throughput", "throughput, GET / (wrk -t2 -c64)", lambda: throughput(contenders, secs, 64, 1 if smoke else 3)),
        ("shutdown_latency", "shutdown latency",
         lambda: shutdown_latency([1, 2] if smoke else [1, 2, 8], runs)),
        ("shutdown_with_10s_hook", "shutdown with the seed's 10 s hook",
         None if smoke else lambda: {"2": shutdown_with_hook(2), "8": shutdown_with_hook(8)}),
        ("worker_start", "worker start", lambda: worker_start_and_respawn(runs)),
        ("memory", "memory", lambda: memory(max(secs, 2), 3 if smoke else 9)),
        ("scale_keepalive_rps", "scale",
         lambda: scale([1, 2] if smoke else [1, 2, 4, 8], max(secs // 2, 1))),
        ("idle_keepalive_shutdown", "idle keep-alive connections during a shutdown",
         lambda: idle_connections_at_shutdown(100 if smoke else 1000)),
        ("many_connections", "idle keep-alive connections on 2 workers, next to plain axum",
         lambda: many_connections(500 if smoke else 50000, 1 if smoke else 6)),
        ("harness_vs_wrk", "the harness's speed next to wrk's", lambda: harness_vs_wrk(2 if smoke else 10)),
        ("metrics_cost", "the cost of --metrics-bind (wrk -t2 -c64, alternating runs)",
         lambda: metrics_cost(1 if smoke else 10, 1 if smoke else 3, not smoke)),
        ("http2", "HTTP/2, h2load -c16 -m10 (h2c)", lambda: http2(2 if smoke else 10)),
        ("balance", "each worker's share of the requests", None if smoke else lambda: balance(5)),
        ("websocket_memory", "idle WebSockets on 2 workers",
         lambda: websocket_memory(["server-cli", "axum-baseline"] + ([] if args.no_peers or smoke else ["uvicorn"]),
                                  200 if smoke else 10000)),
        ("asgi", "Python ASGI apps, 2 workers (wrk -t2)",
         lambda: asgi(["server-cli"] + ([] if args.no_peers else ["granian", "uvicorn", "hypercorn"]),
                      # The seed's app needs FastAPI: the peers' virtualenv (not in a smoke run).
                      ["hello_app"] + ([] if args.no_peers else ["seed_app"]),
                      1 if smoke else 6, 1 if smoke else 3)),
        ("asgi_instructions", "Python ASGI apps: instructions per request of one worker (callgrind)",
         None if smoke else lambda: asgi_instructions_per_request(
             ["server-cli"] + ([] if args.no_peers else ["granian"]),
             ["hello_app"] + ([] if args.no_peers else ["seed_app"]))),
        ("tls", "HTTPS (wrk -t2 -c64; openssl s_time; idle connections)",
         lambda: tls(["server-cli"] + ([] if smoke or not shutil.which("nginx") else ["nginx"])
                     + ([] if args.no_peers else ["uvicorn"]), 1 if smoke else 10, 50 if smoke else 1000)),
    ]
    for key, label, measure in sections:
        if measure is None or (args.only and key not in args.only):
            continue
        print(f"{label}:", flush=True)
        results[key] = measure()
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {path}")
    failures = []
    ka = results.get("throughput", {}).get("server-cli", {}).get("keepalive", {})
    if ka.get("socket_errors") or ka.get("non_2xx"):
        failures.append("server-cli had errors under load")
    idle = results.get("idle_keepalive_shutdown", {})
    if idle.get("closed_cleanly") != idle.get("connections"):
        failures.append("idle keep-alive connections were not all closed cleanly")
    if not smoke and results.get("harness_vs_wrk", {}).get("ratio", 1) < 0.5:
        failures.append("the harness reached less than half of wrk's rate")
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
