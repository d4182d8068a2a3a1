"""The load balancers of the fleet, started on the test bed's LB host from the commented
configs in examples/fleet/ (the settings an operator would use, each saying why):
HAProxy 2.6, nginx 1.22 and Caddy 2.6, all from Debian's packages."""

import os
import string
import subprocess
import time

import hosts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "fleet")
KINDS = ("haproxy", "nginx", "caddy")


def render(template_name, path, fields):
    """Writes examples/fleet/TEMPLATE with its ${...} fields filled in to `path`."""
    with open(os.path.join(EXAMPLES, template_name)) as f:
        text = string.Template(f.read()).substitute(fields)
    with open(path, "w") as f:
        f.write(text)
    return path


def listed(kind, deploy, entries, serving):
    """The balancer's members at the start: the serving hosts (HAProxy has the other
    entries in its config too, disabled, to be enabled on its stats socket). For a
    blue/green deploy nginx and Caddy get both colours: the switch is then by health (the
    green instances refuse until they start), with no reload, which loses requests by
    itself (the reload-lb control)."""
    if kind != "haproxy" and deploy == "blue-green":
        return list(entries)
    return list(serving)


def render_config(state):
    """Writes the balancer's config from its template, with the state's host entries:
    HAProxy gets every entry (those not in `members` disabled, to be enabled on its stats
    socket); nginx and Caddy get the members only (taking a host out is a reload)."""
    balancer = state["balancer"]
    entries = state["hosts"]
    members = balancer["members"]
    fields = {"state_dir": state["state_dir"], "address": balancer["address"],
              "bind": f"{balancer['address']}:80", "reuse": balancer.get("reuse", "safe")}
    if balancer["kind"] == "haproxy":
        fields["servers"] = "\n".join(
            f"    server {name} {hosts.endpoint(entry)}" + ("" if name in members else " disabled")
            for name, entry in entries.items())
    elif balancer["kind"] == "nginx":
        fields["upstreams"] = "\n".join(
            f"        server {hosts.endpoint(entries[name])} max_fails=1 fail_timeout=2s;"
            for name in members)
    else:
        fields["upstreams"] = " ".join(hosts.endpoint(entries[name]) for name in members)
    render(balancer["template"], balancer["config"], fields)


def start(kind, lb_host, state, members, template=None, reuse="safe"):
    """Starts a load balancer of `kind` in the foreground on `lb_host` (port 80) over the
    state's host entries named in `members`; sets the state's `balancer` entry and returns
    the process once it serves."""
    state_dir = state["state_dir"]
    config_name = {"haproxy": "haproxy.cfg", "nginx": "nginx.conf", "caddy": "Caddyfile"}[kind]
    balancer = {"kind": kind, "address": lb_host.address, "url": f"http://{lb_host.address}:80",
                "members": sorted(members), "template": template or config_name,
                "config": os.path.join(state_dir, config_name), "reuse": reuse,
                "log": os.path.join(state_dir, f"{kind}.log")}
    if kind == "haproxy":
        balancer["stats_socket"] = os.path.join(state_dir, "haproxy.sock")
        argv = ["haproxy", "-db", "-f", balancer["config"]]
    elif kind == "nginx":
        balancer["error_log"] = os.path.join(state_dir, "nginx-error.log")
        for temp in ("nginx-body", "nginx-proxy"):
            os.makedirs(os.path.join(state_dir, temp), exist_ok=True)
        argv = ["nginx", "-c", balancer["config"], "-p", state_dir, "-e",
                balancer["error_log"]]
    else:
        balancer["admin_socket"] = os.path.join(state_dir, "caddy-admin.sock")
        argv = ["caddy", "run", "--config", balancer["config"], "--adapter", "caddyfile"]
    state["balancer"] = balancer
    render_config(state)
    log = open(balancer["log"], "w")
    env = {**os.environ, "HOME": state_dir, "XDG_DATA_HOME": state_dir,
           "XDG_CONFIG_HOME": state_dir}
    proc = subprocess.Popen(lb_host.command(*argv), stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    balancer["pid"] = proc.pid
    wait_started(proc, balancer, lb_host)
    return proc


def serves(balancer, lb_host):
    """Whether the balancer answers on its port (any status: it is up, whatever its hosts)."""
    done = subprocess.run(lb_host.command("curl", "-s", "-o", "/dev/null", "-m", "1",
                                          f"{balancer['url']}/healthz"))
    return done.returncode == 0


def wait_started(proc, balancer, lb_host, timeout=15):
    """Waits until the balancer answers on its port; one that exited or never answered
    raises with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if serves(balancer, lb_host):
            return
        time.sleep(0.05)
    with open(balancer["log"]) as f:
        tail = f.read()[-800:]
    raise RuntimeError(f"{balancer['kind']} did not start (status {proc.poll()}): {tail}")
