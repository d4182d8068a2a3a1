#!/usr/bin/env python3
"""The tables of docs/fleet.md from bench/results/fleet.json (scripts/fleet-matrix.sh):
the summary (deploy x server against each load balancer, dropped per run), every run (load
balancer x deploy x server x method x client: requests, dropped by class, refused, 5xx),
the faults, and the throughput.

    scripts/fleet-table.py [--json bench/results/fleet.json]
"""

import argparse
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BALANCERS = ["haproxy", "nginx", "caddy"]
DEPLOYS = ["rolling", "hup-all", "blue-green", "lagged-rolling", "reload-lb"]
SERVERS = ["server-cli", "server-cli-asgi", "uvicorn", "gunicorn", "granian"]


def drop_classes(run):
    """The failed outcomes in words, e.g. "12 EOF before a response, 3 × 502"."""
    parts = []
    for row in run["failures"]:
        count = row["before_signal"] + row["after_signal"]
        if not count or row["outcome"]["kind"] == "refused":
            continue
        parts.append(f"{count} {row['label']}")
    return ", ".join(parts)


def five_xx(run):
    """Responses with a 5xx status (a load balancer's 502/503/504 among them)."""
    return sum(r["before_signal"] + r["after_signal"] for r in run["failures"]
               if r["outcome"].get("status", 0) >= 500)


def order(run):
    """Load balancer, deploy, server as listed above, then delay, method, client."""
    def index(values, value):
        return values.index(value) if value in values else len(values)
    return (index(BALANCERS, run["balancer"]), index(DEPLOYS, run["deploy"]),
            index(SERVERS, run["server"]), run.get("shutdown_delay") or 0,
            run.get("method", "POST"), run.get("client", "raw"))


def server_label(run):
    """The server with its --shutdown-delay and the deploy's lag, e.g. "server-cli, delay 2"."""
    label = run["server"]
    if run.get("shutdown_delay"):
        label += f", delay {run['shutdown_delay']:g}"
    if run.get("lag"):
        label += f", lag {run['lag']:g}"
    return label


def summary(deploys):
    """Deploy x server rows, one column per load balancer: the dropped count of each run
    (GET and POST, raw and reqwest clients where measured)."""
    cells = {}
    for r in sorted(deploys, key=order):
        cells.setdefault((r["deploy"], server_label(r)), {}).setdefault(r["balancer"], []).append(
            r["dropped"])
    print("| deploy | server | " + " | ".join(BALANCERS) + " |")
    print("|---|---|" + "---|" * len(BALANCERS))
    for (deploy, server), by_balancer in cells.items():
        row = []
        for balancer in BALANCERS:
            drops = by_balancer.get(balancer)
            if not drops:
                row.append("")
            elif not any(drops):
                row.append(f"**0** ({len(drops)} run{'s' if len(drops) > 1 else ''})")
            else:
                row.append(" / ".join(str(d) for d in drops))
        print(f"| {deploy} | {server} | " + " | ".join(row) + " |")


def step_figure(run, pattern):
    """A number from the deploy driver's step lines (`pattern` has one group), or "-"."""
    for step in run.get("deploy_steps", []):
        found = re.search(pattern, step["line"])
        if found:
            return found.group(1)
    return "-"


def faults(runs):
    """kill-host and cut-host: the loss next to what the load balancer had in flight on
    the host at the fault, and how soon it took the host out."""
    print("| load balancer | fault | request | requests | dropped | of which | in flight on the "
          "host at the fault | taken out after |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(runs, key=order):
        in_flight = step_figure(r, r"(\d+|None) requests in flight")
        down = step_figure(r, r"marked DOWN ([0-9.]+) s")
        print(f"| {r['balancer']} | {r['deploy']} | {r.get('method', 'POST')} | {r['total']:,} | "
              f"{r['dropped']} | "
              f"{drop_classes(r)} | {'-' if in_flight == 'None' else in_flight} | "
              f"{down if down == '-' else down + ' s'} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "fleet.json"))
    args = parser.parse_args()
    runs = json.load(open(args.json))["runs"]
    deploys = [r for r in runs if r["deploy"] in DEPLOYS and r["balancer"] in BALANCERS
               and "method" in r]
    summary(deploys)
    print()
    print("| load balancer | deploy | server | request, client | requests | dropped | of which | refused | 5xx |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(deploys, key=order):
        dropped = f"**{r['dropped']}**" if r["dropped"] == 0 else str(r["dropped"])
        print(f"| {r['balancer']} | {r['deploy']} | {server_label(r)} | {r.get('method', 'POST')}, "
              f"{r.get('client', 'raw')} | {r['total']:,} | {dropped} | {drop_classes(r)} | "
              f"{r['refused']} | {five_xx(r)} |")
    print()
    faults([r for r in runs if r["deploy"] in ("kill-host", "cut-host") and "method" in r])
    print()
    print("| path | server | ok/s |")
    print("|---|---|---|")
    for r in sorted((r for r in runs if r["deploy"] == "none"),
                    key=lambda r: (r["server"], ["direct", *BALANCERS].index(r["balancer"]))):
        path = "one host, no load balancer" if r["balancer"] == "direct" else f"3 hosts behind {r['balancer']}"
        print(f"| {path} | {r['server']} | {r['ok_per_sec_before_deploy']:,} |")


if __name__ == "__main__":
    main()
