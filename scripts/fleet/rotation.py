"""Which hosts the load balancer sends to, as the deploy drivers see and change it.

HAProxy has a health view and admin states on its stats socket. nginx (open source) and
Caddy have no health view to ask: nginx's checks are passive only, and Caddy's admin API
keeps active health out of /reverse_proxy/upstreams (caddy #6135). For them a host is in
rotation when it is in the config, answers /healthz, and has a connection from the load
balancer (traffic reaches it again). A host taken out or put back by an endpoint change
(the lagged rolling restart) is the config rewritten without it, then a graceful reload,
as a control plane that reloads does it; a blue/green switch lists both colours from
the start and reloads nothing (`switch`).
"""

import json
import os
import signal
import socket
import subprocess

import balancers
import hosts


def in_rotation(state, host):
    """Whether the load balancer sends traffic to `host` (its server instance) again."""
    balancer = state["balancer"]
    if balancer["kind"] == "haproxy":
        # "no check": a server without health checks (the lagged config), in rotation
        # until its admin state says otherwise ("MAINT").
        return haproxy_statuses(balancer["stats_socket"]).get(host) in ("UP", "no check")
    entry = state["hosts"][host]
    return (host in balancer["members"] and hosts.answers(state, host)
            and hosts.connections_from(entry, balancer["address"]) > 0)


def marked_down(state, host, failures_before=0):
    """Whether the load balancer has taken `host` out after a fault: HAProxy's health
    checks say `DOWN`; Caddy has logged a failed active check of it since the fault
    (`failures_before`: `failed_checks` then), which takes it out at once; None for nginx,
    which shows nothing of it."""
    balancer = state["balancer"]
    if balancer["kind"] == "haproxy":
        return haproxy_statuses(balancer["stats_socket"]).get(host, "").startswith("DOWN")
    if balancer["kind"] == "caddy":
        return failed_checks(state, host) > failures_before
    return None


def failed_checks(state, host):
    """How many of Caddy's active health checks of `host` have failed (its log; the admin
    API keeps active health to itself, caddy #6135); 0 for the other balancers."""
    balancer = state["balancer"]
    if balancer["kind"] != "caddy":
        return 0
    wanted = hosts.endpoint(state["hosts"][host])
    count = 0
    with open(balancer["log"]) as log:
        for line in log:
            # The checker also logs "host is up" when a host recovers: not a failure.
            if ("health_checker.active" in line and f'"host":"{wanted}"' in line
                    and '"msg":"host is up"' not in line):
                count += 1
    return count


def set_endpoint(state, host, serving):
    """Puts `host` in or out of the rotation, as a control plane would: HAProxy's admin
    state (`ready`, `maint`); nginx and Caddy a config with or without it, reloaded."""
    balancer = state["balancer"]
    if balancer["kind"] == "haproxy":
        answer = haproxy_command(balancer["stats_socket"],
                                 f"set server app/{host} state {'ready' if serving else 'maint'}")
        if answer.strip():
            raise ValueError(f"HAProxy refused to change {host}: {answer.strip()}")
        return
    members = [m for m in balancer["members"] if m != host]
    if serving:
        members.append(host)
    balancer["members"] = sorted(members)
    balancers.render_config(state)
    hosts.save(state["state_dir"], state)
    reload(balancer)


def reload(balancer, force=False):
    """The graceful reload of nginx or Caddy with the config as written (HAProxy is
    changed on its stats socket instead, never reloaded here). Caddy skips a reload of an
    unchanged config unless `force`."""
    if balancer["kind"] == "nginx":
        reload_nginx(balancer)
    elif balancer["kind"] == "caddy":
        reload_caddy(balancer, force)
    else:
        raise ValueError(f"no reload for {balancer['kind']} here (its stats socket changes it)")


def in_flight(state, host):
    """Requests the load balancer has in progress on `host` now: HAProxy's streams bound
    to that server (`show sess`), Caddy's request count for that upstream; None for nginx
    (no such view)."""
    balancer = state["balancer"]
    if balancer["kind"] == "haproxy":
        sessions = haproxy_command(balancer["stats_socket"], "show sess").splitlines()
        return sum(1 for line in sessions if f" srv={host} " in f"{line} ")
    if balancer["kind"] == "caddy":
        wanted = hosts.endpoint(state["hosts"][host])
        return sum(u.get("num_requests", 0) for u in caddy_upstreams(balancer)
                   if u.get("address") == wanted)
    return None


def caddy_upstreams(balancer):
    """Caddy's admin view of its upstreams: address, num_requests (in progress), fails."""
    # An empty Host: Caddy's admin endpoint refuses any other on a Unix socket.
    done = subprocess.run(["curl", "-fsS", "--unix-socket", balancer["admin_socket"],
                           "-H", "Host;", "http://caddy/reverse_proxy/upstreams"],
                          capture_output=True, text=True)
    return json.loads(done.stdout or "[]")


def switch(state, old, new):
    """Blue/green: the `new` host entries take the traffic of the `old` ones. HAProxy
    enables the new servers, waits until its checks have them UP, then puts the old ones
    in maintenance. nginx and Caddy are not reloaded (a reload alone loses requests: the
    reload-lb control): both colours are in their config from the start
    (balancers.listed), and this waits until the load balancer reaches every new
    instance (nginx tries a refusing host again after its fail_timeout, Caddy's active
    check passes); the old ones leave as they stop (`leaves_as_it_stops`)."""
    balancer = state["balancer"]
    if balancer["kind"] == "haproxy":
        for host in new:
            set_endpoint(state, host, serving=True)
        hosts.wait_until(lambda: all(in_rotation(state, h) for h in new), 30,
                         "HAProxy to have the new instances UP")
        for host in old:
            set_endpoint(state, host, serving=False)
        return
    missing = [h for h in new if h not in balancer["members"]]
    if missing:
        raise ValueError(f"{', '.join(missing)} not in {balancer['kind']}'s config "
                         "(blue/green lists both colours from the start)")
    hosts.wait_until(lambda: all(in_rotation(state, h) for h in new), 30,
                     f"{balancer['kind']} to send to the new instances")


def leaves_as_it_stops(state):
    """Whether an old instance leaves the rotation only by stopping (nginx, Caddy: a
    server with --shutdown-delay fails /healthz, which Caddy's active check sees, then
    refuses, which nginx and Caddy retry on another host) rather than by an admin state
    the driver waits on (HAProxy's maintenance, after which it sends nothing more)."""
    return state["balancer"]["kind"] != "haproxy"


def still_sending(state, host):
    """Whether the load balancer still has requests (HAProxy, Caddy) or connections
    (nginx) on `host`: an old instance is stopped once this is False, or after a limit."""
    count = in_flight(state, host)
    if count is None:
        count = hosts.connections_from(state["hosts"][host], state["balancer"]["address"])
    return count > 0


def reload_nginx(balancer):
    """SIGHUP to nginx's master, then waits until it has started a worker on the new
    config (its log says so); a config it rejects times out here."""
    before = started_workers(balancer["error_log"])
    os.kill(balancer["pid"], signal.SIGHUP)
    hosts.wait_until(lambda: started_workers(balancer["error_log"]) > before, 10,
                     "nginx to start a worker with the new config")


def started_workers(error_log):
    """How many times nginx has logged starting a worker process."""
    with open(error_log) as f:
        return f.read().count("start worker process")


def reload_caddy(balancer, force=False):
    """`caddy reload` through the admin socket: it returns once the new config runs."""
    done = subprocess.run(["caddy", "reload", "--config", balancer["config"], "--adapter",
                           "caddyfile", "--address", f"unix/{balancer['admin_socket']}"]
                          + (["--force"] if force else []),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"caddy reload failed: {done.stderr.strip()[-300:]}")


def haproxy_statuses(socket_path, backend="app"):
    """Server name -> status ("UP", "DOWN", "UP 1/2", ...) from HAProxy's stats socket."""
    lines = haproxy_command(socket_path, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    name, server, status = header.index("pxname"), header.index("svname"), header.index("status")
    result = {}
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > status and fields[name] == backend and fields[server] not in ("BACKEND",):
            result[fields[server]] = fields[status]
    return result


def haproxy_command(socket_path, command):
    """Sends one command to HAProxy's stats socket (admin level); returns its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(2)
        conn.connect(socket_path)
        conn.sendall(command.encode() + b"\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data.decode()
