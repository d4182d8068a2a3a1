#!/usr/bin/env python3
"""Deploy drivers for the fleet, run as the harness's `--disrupt` command.

    deploy.py rolling --state DIR   SIGTERM each app host in turn, start it again once it
                                    has exited, and go on to the next only once the load
                                    balancer has it in rotation again (readiness-gated)
    deploy.py hup-all --state DIR   SIGHUP to every host's server at once
    deploy.py lagged-rolling --lag S --state DIR
                                    the rolling restart with the load balancer told of a
                                    stopping host S seconds after its SIGTERM (Kubernetes)
    deploy.py blue-green --state DIR
                                    new instances beside the old ones (the -green entries),
                                    the load balancer switched to them, the old ones
                                    stopped once it sends them nothing more
    deploy.py reload-lb --state DIR the load balancer reloaded with its config unchanged,
                                    no host touched (nginx, Caddy): what a reload alone loses
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
import rotation  # noqa: E402
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
    for host in [h for h in state["hosts"] if h in state["serving"]]:
        pid = state["hosts"][host]["pid"]
        step(f"{host}: SIGTERM to {pid}")
        os.kill(pid, signal.SIGTERM)
        if lag is not None:
            time.sleep(lag)
            rotation.set_endpoint(state, host, serving=False)
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
            rotation.set_endpoint(state, host, serving=True)
        else:
            hosts.wait_until(lambda: rotation.in_rotation(state, host), ready_timeout,
                             f"the load balancer to put {host} back in rotation")
        step(f"{host}: in rotation again")


def fault(state_dir, kind, host, hold):
    """A host that fails under traffic: `kill-host` SIGKILLs every process of it (a machine
    that died), `cut-host` takes it off the bridge (a network partition: nothing answers,
    nothing is refused). Before a kill the host is frozen (SIGSTOP) and the requests the
    load balancer has in progress on it counted (HAProxy, Caddy): the most the kill can
    lose. Then how long the load balancer took to mark it DOWN (HAProxy's checks, Caddy's
    failed active check; nginx shows neither); the host comes back after `hold` s and the
    driver waits until it is in rotation again."""
    state = hosts.load(state_dir)
    entry = state["hosts"][host]
    failures_before = rotation.failed_checks(state, host)
    if kind == "kill-host":
        step(f"{host}: SIGSTOP to every process (frozen: what is in flight stays in flight)")
        testbed.stop_all_in(entry["namespace"])
        # A frozen host's kernel still takes connections and requests: let the load
        # balancer's view settle on it, then count.
        time.sleep(0.1)
        counts = {h: rotation.in_flight(state, h) for h in state["serving"]}
        killed = len(testbed.pids_in(entry["namespace"]))
        step(f"{host}: {counts[host]} requests in flight on it (the load balancer's count; "
             f"all hosts: {counts}); SIGKILL to every process ({killed})")
        faulted = time.monotonic()
        testbed.kill_all_in(entry["namespace"])
    else:
        in_flight = rotation.in_flight(state, host)
        step(f"{host}: cut off the bridge with {in_flight} requests in flight on it")
        faulted = time.monotonic()
        testbed.set_bridge_port(state["bridge_namespace"], host, connected=False)
    if rotation.marked_down(state, host) is None:
        step(f"{host}: {state['balancer']['kind']} shows no health view to time")
    else:
        hosts.wait_until(lambda: rotation.marked_down(state, host, failures_before), 30,
                         f"the load balancer to mark {host} DOWN")
        step(f"{host}: marked DOWN {time.monotonic() - faulted:.3f} s after the fault")
    time.sleep(hold)
    if kind == "kill-host":
        step(f"{host}: started again as {hosts.start_server(state, host)}")
        hosts.save(state_dir, state)
    else:
        testbed.set_bridge_port(state["bridge_namespace"], host, connected=True)
        step(f"{host}: back on the bridge")
    hosts.wait_until(lambda: rotation.in_rotation(state, host), 60,
                     f"the load balancer to put {host} back")
    step(f"{host}: in rotation again")


def blue_green(state_dir, exit_timeout, ready_timeout, drain_limit=10):
    """Blue/green: every `-green` instance started and answering, the load balancer
    switched to them in one step, then each old instance stopped: behind HAProxy once it
    sends it nothing more (or after `drain_limit` s: the server drains what is left),
    behind nginx and Caddy at once (the old instance leaves the rotation as it stops)."""
    state = hosts.load(state_dir)
    old = list(state["serving"])
    new = [f"{host}-green" for host in old]
    for host in new:
        step(f"{host}: started as {hosts.start_server(state, host)}")
    hosts.save(state_dir, state)
    for host in new:
        hosts.wait_until(lambda h=host: hosts.answers(state, h), ready_timeout, f"{host} to answer")
    step("new instances answer")
    rotation.switch(state, old, new)
    step(f"load balancer switched to {', '.join(new)}")
    for host in old:
        if not rotation.leaves_as_it_stops(state):
            try:
                hosts.wait_until(lambda h=host: not rotation.still_sending(state, h),
                                 drain_limit, f"the load balancer to stop sending to {host}")
                step(f"{host}: nothing more from the load balancer")
            except TimeoutError:
                step(f"{host}: still used by the load balancer after {drain_limit} s")
        pid = state["hosts"][host]["pid"]
        os.kill(pid, signal.SIGTERM)
        step(f"{host}: SIGTERM to {pid}")
    for host in old:
        if not hosts.wait_exit(state["hosts"][host]["pid"], exit_timeout):
            raise TimeoutError(f"{host} did not exit within {exit_timeout} s of SIGTERM")
        step(f"{host}: exited")
    state["serving"] = new
    hosts.save(state_dir, state)


def reload_lb(state_dir):
    """The load balancer reloaded with the same config, no app host touched: the loss a
    reload-based switch (blue/green, an endpoint change) costs by itself."""
    state = hosts.load(state_dir)
    rotation.reload(state["balancer"], force=True)
    step(f"{state['balancer']['kind']} reloaded (config unchanged)")


def hup_all(state_dir):
    """A rolling restart of every host's workers at once (each server's own HUP)."""
    state = hosts.load(state_dir)
    for host in state["serving"]:
        entry = state["hosts"][host]
        os.kill(entry["pid"], signal.SIGHUP)
        step(f"{host}: SIGHUP to {entry['pid']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["rolling", "hup-all", "lagged-rolling", "blue-green",
                                         "reload-lb", "kill-host", "cut-host"])
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
        elif args.kind == "reload-lb":
            reload_lb(args.state)
        elif args.kind == "blue-green":
            blue_green(args.state, args.exit_timeout, args.ready_timeout)
        else:
            hup_all(args.state)
    except (TimeoutError, OSError, KeyError, ValueError, testbed.TestBedError) as error:
        step(f"failed: {error}")
        sys.exit(f"deploy {args.kind}: {error}")
    step("done")


if __name__ == "__main__":
    main()
