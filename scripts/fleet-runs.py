#!/usr/bin/env python3
"""Rolling deploys of a fleet behind a load balancer, measured by the harness.

For each load balancer x deploy x server: a test bed of 3 app hosts, a load balancer host
and a client host (network namespaces on one bridge, 198.18.0.0/24, scripts/fleet/), each
app host running the server with 2 workers; the harness on the client host drives POST
/echo at the load balancer and runs the deploy as its --disrupt command
(scripts/fleet/deploy.py). Every request is classified; the run ends with the test bed
removed and checked.

    scripts/fleet-runs.sh [--short] [--balancers haproxy,nginx,caddy,direct]
        [--deploys rolling,hup-all,blue-green,lagged-rolling,kill-host,cut-host,none]
        [--servers server-cli,server-cli-asgi,uvicorn,gunicorn,granian] [--shutdown-delay S]
        [--methods POST,GET] [--clients-kinds raw,reqwest]
Results: bench/results/fleet.json (fleet-short.json with --short). Needs root.
FLEET_KEEP=DIR keeps every run's logs in DIR.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "fleet"))
import balancers  # noqa: E402
import hosts  # noqa: E402
import rotation  # noqa: E402
import testbed  # noqa: E402

ROOT = os.path.dirname(HERE)
RELEASE = os.path.join(ROOT, "target", "release")
HARNESS = os.path.join(RELEASE, "shutdown-harness")
SERVER_CLI = os.path.join(RELEASE, "server-cli")
APP_HOSTS = {"app1": 11, "app2": 12, "app3": 13}
OTHER_HOSTS = {"lb": 2, "client": 100}


VENV = os.environ.get("PEERS_VENV", os.path.join(ROOT, ".peers"))
PEERS_DIR = os.path.join(ROOT, "scripts", "peers")
# The Python servers run the seed's FastAPI app with POST /echo and /healthz (its 10 s
# shutdown hook kept); `server-cli` is the built-in demo app (the same routes, no hook).
PYTHON_APP = "echo_app:app"


def server_command(server, shutdown_delay):
    """The command of one app host's server, `{address}` filled in per host."""
    port = "{port}"
    bin_dir = os.path.join(VENV, "bin")
    if server in ("server-cli", "server-cli-asgi"):
        argv = [SERVER_CLI, "--host", "{address}", "--port", port, "--workers", "2",
                "--no-access-log"]
        if server == "server-cli-asgi":
            argv = ["env", f"VIRTUAL_ENV={VENV}", *argv, PYTHON_APP, "--app-dir", PEERS_DIR]
        if shutdown_delay:
            argv += ["--shutdown-delay", str(shutdown_delay)]
        return argv
    if server == "uvicorn":
        return [os.path.join(bin_dir, "uvicorn"), PYTHON_APP, "--app-dir", PEERS_DIR, "--workers",
                "2", "--host", "{address}", "--port", port, "--no-access-log"]
    if server == "gunicorn":
        return [os.path.join(bin_dir, "gunicorn"), "-k", "uvicorn_worker.UvicornWorker", "-w", "2",
                "-b", "{address}:" + port, "--chdir", PEERS_DIR, PYTHON_APP]
    if server == "granian":
        return [os.path.join(bin_dir, "granian"), "--interface", "asgi", "--workers", "2",
                "--host", "{address}", "--port", port, "--working-dir", PEERS_DIR,
                "--no-access-log", PYTHON_APP]
    raise ValueError(f"unknown server {server}")


def host_entries(bed, deploy, state_dir):
    """The app hosts' server instances: one per host on port 8000, and for a blue/green
    deploy a second, `-green`, on the same host at 8001 (started by the deploy)."""
    entries = {}
    for name in APP_HOSTS:
        base = {"namespace": bed.hosts[name].namespace, "address": bed.hosts[name].address}
        entries[name] = {**base, "port": hosts.PORT, "log": os.path.join(state_dir, f"{name}.log")}
        if deploy == "blue-green":
            entries[f"{name}-green"] = {**base, "port": hosts.PORT + 1,
                                        "log": os.path.join(state_dir, f"{name}-green.log")}
    return entries


def harness_argv(bed, url, method, client, body, duration, clients, driver, report):
    """The harness on the client host: `method` requests at `url`, the deploy as its
    --disrupt command, the report as JSON."""
    argv = [HARNESS, "--url", url, "--method", method, "--client", client,
            "--scenario", "keepalive", "--clients", str(clients), "--interval", "0",
            "--request-timeout", "30", "--duration", str(duration), "--signal-after", "2",
            "--settle", "2", "--disrupt", driver, "--disrupt-timeout", "240", "--json", report]
    if method == "POST":
        argv += ["--body-file", body, "--header", "Content-Type: application/octet-stream"]
    return bed.hosts["client"].command(*argv)


def run_one(spec, duration, clients):
    """One deploy on a fresh test bed; returns the harness's summary plus the timings.
    `spec`: balancer (or "direct": the harness at app1 itself), deploy (or "none"),
    server, shutdown_delay, lag, reuse, method, client."""
    balancer, deploy, server = spec["balancer"], spec["deploy"], spec["server"]
    with tempfile.TemporaryDirectory(prefix="fleet-") as state_dir, \
            testbed.TestBed({**APP_HOSTS, **OTHER_HOSTS}) as bed:
        os.chmod(state_dir, 0o755)
        state = {"server": server_command(server, spec["shutdown_delay"]), "cwd": ROOT,
                 "state_dir": state_dir, "bridge_namespace": bed.bridge_namespace,
                 "hosts": host_entries(bed, deploy, state_dir), "serving": list(APP_HOSTS)}
        for name in APP_HOSTS:
            hosts.start_server(state, name)
        for name in APP_HOSTS:
            hosts.wait_until(lambda n=name: hosts.answers(state, n), 30, f"{name} to answer")
        if balancer == "direct":
            url = f"http://{hosts.endpoint(state['hosts']['app1'])}"
        else:
            # The lagged deploy behind HAProxy stands in for a Kubernetes Service: no health
            # checks, no retries.
            template = ("haproxy-lagged.cfg" if (balancer, deploy) == ("haproxy", "lagged-rolling")
                        else None)
            members = balancers.listed(balancer, deploy, state["hosts"], APP_HOSTS)
            balancers.start(balancer, bed.hosts["lb"], state, members, template, spec["reuse"])
            if balancer == "haproxy":
                # nginx and Caddy have no health view to wait on before traffic (rotation.py).
                hosts.wait_until(lambda: all(rotation.in_rotation(state, n) for n in APP_HOSTS),
                                 20, "HAProxy to see every host UP")
            url = state["balancer"]["url"]
        hosts.save(state_dir, state)
        body = os.path.join(state_dir, "body")
        with open(body, "wb") as f:
            f.write(b"x" * 512)
        report = os.path.join(state_dir, "report.json")
        driver = "true" if deploy == "none" else (
            f"python3 {os.path.join(HERE, 'fleet', 'deploy.py')} {deploy} --state {state_dir}"
            f" --lag {spec['lag']}")
        path = "/echo" if spec["method"] == "POST" else "/"
        argv = harness_argv(bed, url + path, spec["method"], spec["client"], body, duration,
                            clients, driver, report)
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True)
        took = time.monotonic() - started
        if not os.path.exists(report):
            raise RuntimeError(f"the harness wrote no report: {done.stderr.strip()[-500:]}")
        summary = json.load(open(report))["summary"]
        if os.environ.get("FLEET_KEEP"):
            # Every log of the run (servers, load balancer, the harness's report) for a
            # closer look: the run's directory is removed with the test bed.
            shutil.copytree(state_dir, os.path.join(os.environ["FLEET_KEEP"],
                                                    f"{balancer}-{deploy}-{server}"),
                            dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock"))
        return {**spec,
                # Only server-cli has the option; the peers stop as they do.
                "shutdown_delay": spec["shutdown_delay"] if server.startswith("server-cli") else None,
                "lag": spec["lag"] if deploy == "lagged-rolling" else None,
                "seconds": round(took, 1),
                "dropped": summary["dropped"], "ok": summary["ok"], "refused": summary["refused"],
                "total": summary["total"],
                "ok_per_sec_before_deploy": round(summary["ok_per_sec_before_signal"]),
                "failures": [r for r in summary["rows"] if r["outcome"]["kind"] not in ("ok",)],
                "drops_by_step": summary.get("drops_by_step", []),
                "deploy_steps": [st for c in summary.get("commands", []) for st in c.get("steps", [])],
                "verdict_exit_status": done.returncode}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true",
                        help="CI: one load balancer, one rolling restart, server-cli hosts")
    parser.add_argument("--balancers", default="haproxy",
                        help=f"comma-separated, of {', '.join(balancers.KINDS)} and direct "
                             "(the harness at one host, no load balancer)")
    parser.add_argument("--deploys", default="rolling,hup-all",
                        help="rolling, hup-all, blue-green, lagged-rolling, kill-host, cut-host, "
                             "none (traffic only: the throughput)")
    parser.add_argument("--servers", default="server-cli")
    parser.add_argument("--shutdown-delay", type=float, default=2.0,
                        help="server-cli --shutdown-delay on every host (0: none)")
    parser.add_argument("--lag", type=float, default=2.0,
                        help="lagged-rolling: seconds from a host's SIGTERM to leaving the rotation")
    parser.add_argument("--haproxy-reuse", choices=["safe", "never"], default="safe",
                        help="HAProxy's http-reuse towards the hosts")
    parser.add_argument("--methods", default="POST", help="POST (/echo, 512 bytes), GET (/)")
    parser.add_argument("--clients-kinds", default="raw", help="the harness's --client: raw, reqwest")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    testbed.require_privileges()
    combos = [(b, d, s, m, c) for b in args.balancers.split(",") for d in args.deploys.split(",")
              for s in args.servers.split(",") for m in args.methods.split(",")
              for c in args.clients_kinds.split(",")]
    duration = args.duration
    if args.short:
        combos, duration = [("haproxy", "rolling", "server-cli", "POST", "raw")], 8
    results = []
    for balancer, deploy, server, method, client in combos:
        spec = {"balancer": balancer, "deploy": deploy, "server": server, "method": method,
                "client": client, "shutdown_delay": args.shutdown_delay, "lag": args.lag,
                "reuse": args.haproxy_reuse}
        result = run_one(spec, duration, args.clients)
        results.append(result)
        print(f"{balancer:8} {deploy:14} {server:15} {method:4} {client:7} "
              f"requests={result['total']} dropped={result['dropped']} "
              f"refused={result['refused']} ok/s={result['ok_per_sec_before_deploy']} "
              f"took={result['seconds']}s", flush=True)
    left = [n for n in testbed.namespaces() if n.startswith(f"{testbed.PREFIX}-{os.getpid()}-")]
    if left:
        sys.exit(f"fleet: namespaces left behind: {left}")
    out = os.path.join(ROOT, "bench", "results", "fleet-short.json" if args.short else "fleet.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    # Runs of other combinations in earlier invocations are kept; this one's replace theirs.
    key = lambda r: (r["balancer"], r["deploy"], r["server"], r["shutdown_delay"], r.get("lag"),
                     r.get("reuse", r.get("haproxy_reuse", "safe")), r.get("method", "POST"),
                     r.get("client", "raw"))  # noqa: E731
    fresh = {key(r) for r in results}
    kept = json.load(open(out))["runs"] if os.path.exists(out) and not args.short else []
    with open(out, "w") as f:
        json.dump({"runs": [r for r in kept if key(r) not in fresh] + results}, f, indent=1)
    print(f"wrote {out}; test bed removed, no namespace left")
    # A lagged deploy without a shutdown delay above the lag is meant to show the loss.
    # Behind nginx and Caddy its endpoint changes are reloads, whose loss is the load
    # balancer's own (the reload-lb control), so only HAProxy's (a Kubernetes Service's
    # stand-in) is a planned deploy. Faults (kill-host, cut-host) are not deploys, and
    # reload-lb touches no host: their loss is reported, not a failure.
    def planned(r):
        if r["deploy"] in ("kill-host", "cut-host", "reload-lb", "none"):
            return False
        if r["deploy"] == "lagged-rolling":
            return r["balancer"] == "haproxy" and (r["shutdown_delay"] or 0) > r["lag"]
        return True
    if any(r["dropped"] for r in results if r["server"].startswith("server-cli") and planned(r)):
        sys.exit("fleet: server-cli dropped requests in a planned deploy")


if __name__ == "__main__":
    main()
