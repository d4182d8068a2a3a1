"""The load balancers of the fleet, started on the test bed's LB host from the commented
configs in examples/fleet/ (the settings an operator would use, each saying why)."""

import os
import string
import subprocess
import time

import hosts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "fleet")


def render(template_name, path, fields):
    """Writes examples/fleet/TEMPLATE with its ${...} fields filled in to `path`."""
    with open(os.path.join(EXAMPLES, template_name)) as f:
        text = string.Template(f.read()).substitute(fields)
    with open(path, "w") as f:
        f.write(text)
    return path


def start_haproxy(lb_host, state_dir, app_hosts, template="haproxy.cfg", reuse="safe"):
    """HAProxy in the foreground on `lb_host` (port 80), balancing over `app_hosts`
    (name -> address) with the config `template` from examples/fleet/; returns the
    process and the state's `balancer` entry."""
    servers = "\n".join(f"    server {name} {address}:{hosts.PORT}"
                        for name, address in app_hosts.items())
    config = render(template, os.path.join(state_dir, "haproxy.cfg"),
                    {"state_dir": state_dir, "servers": servers,
                     "bind": f"{lb_host.address}:80", "reuse": reuse})
    log = open(os.path.join(state_dir, "haproxy.log"), "w")
    proc = subprocess.Popen(lb_host.command("haproxy", "-db", "-f", config), stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    socket_path = os.path.join(state_dir, "haproxy.sock")
    return proc, {"kind": "haproxy", "stats_socket": socket_path,
                  "url": f"http://{lb_host.address}:80"}


def wait_started(proc, balancer, log_path, timeout=10):
    """Waits until HAProxy's stats socket exists; a HAProxy that exited or never opened it
    raises with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(balancer["stats_socket"]):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(log_path) as f:
        tail = f.read()[-800:]
    raise RuntimeError(f"HAProxy did not start (status {proc.poll()}): {tail}")
