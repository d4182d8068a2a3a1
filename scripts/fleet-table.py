#!/usr/bin/env python3
"""The tables of docs/fleet.md from bench/results/fleet.json (scripts/fleet-matrix.sh):
one row per load balancer x deploy x server x method x client, with requests, dropped (by
class), refused and 5xx, and the throughput table.

    scripts/fleet-table.py [--json bench/results/fleet.json]
"""

import argparse
import json
import os

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
    def index(values, value):
        return values.index(value) if value in values else len(values)
    return (index(BALANCERS, run["balancer"]), index(DEPLOYS, run["deploy"]),
            index(SERVERS, run["server"]), run.get("shutdown_delay") or 0,
            run.get("method", "POST"), run.get("client", "raw"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "fleet.json"))
    args = parser.parse_args()
    runs = json.load(open(args.json))["runs"]
    deploys = [r for r in runs if r["deploy"] in DEPLOYS and r["balancer"] in BALANCERS
               and "method" in r]
    print("| load balancer | deploy | server | request, client | requests | dropped | of which | refused | 5xx |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(deploys, key=order):
        server = r["server"]
        if r.get("shutdown_delay"):
            server += f", delay {r['shutdown_delay']:g}"
        if r.get("lag"):
            server += f", lag {r['lag']:g}"
        dropped = f"**{r['dropped']}**" if r["dropped"] == 0 else str(r["dropped"])
        print(f"| {r['balancer']} | {r['deploy']} | {server} | {r.get('method', 'POST')}, "
              f"{r.get('client', 'raw')} | {r['total']:,} | {dropped} | {drop_classes(r)} | "
              f"{r['refused']} | {five_xx(r)} |")
    print()
    print("| path | server | ok/s |")
    print("|---|---|---|")
    for r in sorted((r for r in runs if r["deploy"] == "none"),
                    key=lambda r: (r["server"], ["direct", *BALANCERS].index(r["balancer"]))):
        path = "one host, no load balancer" if r["balancer"] == "direct" else f"3 hosts behind {r['balancer']}"
        print(f"| {path} | {r['server']} | {r['ok_per_sec_before_deploy']:,} |")


if __name__ == "__main__":
    main()
