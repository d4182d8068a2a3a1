#!/usr/bin/env python3
"""Deploy drivers for the fleet, run as the harness's `--disrupt` command.

    deploy.py rolling --state DIR   SIGTERM each app host in turn, start it again once it
                                    has exited, and go on to the next only once the load
                                    balancer has it in rotation again (readiness-gated)
    deploy.py hup-all --state DIR   SIGHUP to every host's server at once
    deploy.py lagged-rolling --lag S --state DIR
                                    the rolling restart with the load balancer told of a
                                    stopping host S seconds after its SIGTERM (Kubernetes)
    deploy.py kill-host|cut-host [--host H] --state DIR
                                    a host killed or cut off mid-traffic, then brought back

Each step is printed with the time since the driver started, so that the harness's report
ties a drop to the host event that caused it. Exit status 1 (with one line) when a host
does not exit, come back or return to rotation in time.
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hosts  # noqa: E402
import testbed  # noqa: E402

START = time.monotonic()


def step(message):
    """One line of the driver's progress, timestamped for the report."""
    print(f"[{time.monotonic() - START:7.3f}s] {message}", flush=True)


def rolling(state_dir, exit_timeout, ready_timeout, lag=None):
    """The rolling restart, host by host. Without `lag`, each host is gated on the load
    balancer's health view (the next goes once it is back in rotation). With `lag`, the
    load balancer learns of a stopping host `lag` s after its SIGTERM (a Kubernetes endpoint
    removed late) and of a restarted one as soon as it answers; without --shutdown-delay
    above the lag, the host refuses or closes while it is still in rotation."""
    state = hosts.load(state_dir)
    for host in state["hosts"]:
        pid = state["hosts"][host]["pid"]
        step(f"{host}: SIGTERM to {pid}")
        os.kill(pid, signal.SIGTERM)
        if lag is not None:
            time.sleep(lag)
            hosts.set_endpoint(state, host, serving=False)
            step(f"{host}: out of rotation ({lag} s after SIGTERM)")
        if not hosts.wait_exit(pid, exit_timeout):
            raise TimeoutError(f"{host} did not exit within {exit_timeout} s of SIGTERM")
        step(f"{host}: exited")
        new_pid = hosts.start_server(state, host)
        hosts.save(state_dir, state)
        step(f"{host}: started again as {new_pid}")
        hosts.wait_until(lambda: hosts.answers(state, host), ready_timeout, f"{host} to answer")
        step(f"{host}: answers")
        if lag is not None:
            hosts.set_endpoint(state, host, serving=True)
        else:
            hosts.wait_until(lambda: hosts.in_rotation(state, host), ready_timeout,
                             f"the load balancer to put {host} back in rotation")
        step(f"{host}: in rotation again")


def fault(state_dir, kind, host, hold):
    """A host that fails under traffic: `kill-host` SIGKILLs every process of it (a machine
    that died), `cut-host` takes it off the bridge (a network partition: nothing answers,
    nothing is refused). Prints the requests in flight on it at that instant (HAProxy's
    current sessions for that server), how long the load balancer took to mark it DOWN,
    then brings the host back after `hold` s and waits until it is in rotation again."""
    state = hosts.load(state_dir)
    entry = state["hosts"][host]
    in_flight = hosts.haproxy_sessions(state["balancer"]["stats_socket"]).get(host)
    step(f"{host}: {in_flight} requests in flight on it (HAProxy scur)")
    faulted = time.monotonic()
    if kind == "kill-host":
        killed = len(testbed.pids_in(entry["namespace"]))
        testbed.kill_all_in(entry["namespace"])
        step(f"{host}: SIGKILL to every process ({killed})")
    else:
        testbed.set_bridge_port(state["bridge_namespace"], host, connected=False)
        step(f"{host}: cut off the bridge")
    hosts.wait_until(lambda: hosts.marked_down(state, host), 30,
                     f"the load balancer to mark {host} DOWN")
    step(f"{host}: marked DOWN {time.monotonic() - faulted:.3f} s after the fault")
    time.sleep(hold)
    if kind == "kill-host":
        step(f"{host}: started again as {hosts.start_server(state, host)}")
        hosts.save(state_dir, state)
    else:
        testbed.set_bridge_port(state["bridge_namespace"], host, connected=True)
        step(f"{host}: back on the bridge")
    hosts.wait_until(lambda: hosts.in_rotation(state, host), 60,
                     f"the load balancer to put {host} back")
    step(f"{host}: in rotation again")


def hup_all(state_dir):
    """A rolling restart of every host's workers at once (each server's own HUP)."""
    state = hosts.load(state_dir)
    for host, entry in state["hosts"].items():
        os.kill(entry["pid"], signal.SIGHUP)
        step(f"{host}: SIGHUP to {entry['pid']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["rolling", "hup-all", "lagged-rolling", "kill-host",
                                         "cut-host"])
    parser.add_argument("--host", default="app2", help="kill-host, cut-host: which host")
    parser.add_argument("--hold", type=float, default=5.0,
                        help="kill-host, cut-host: seconds before the host comes back")
    parser.add_argument("--lag", type=float, default=2.0,
                        help="lagged-rolling: seconds from SIGTERM to leaving the rotation")
    parser.add_argument("--state", required=True, help="the run's directory (fleet.json)")
    parser.add_argument("--exit-timeout", type=float, default=60)
    parser.add_argument("--ready-timeout", type=float, default=60)
    args = parser.parse_args()
    try:
        if args.kind == "rolling":
            rolling(args.state, args.exit_timeout, args.ready_timeout)
        elif args.kind in ("kill-host", "cut-host"):
            fault(args.state, args.kind, args.host, args.hold)
        elif args.kind == "lagged-rolling":
            rolling(args.state, args.exit_timeout, args.ready_timeout, lag=args.lag)
        else:
            hup_all(args.state)
    except (TimeoutError, OSError, KeyError, ValueError, testbed.TestBedError) as error:
        sys.exit(f"deploy {args.kind}: {error}")
    step("done")


if __name__ == "__main__":
    main()
