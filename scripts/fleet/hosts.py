"""The app hosts' servers and what the load balancer thinks of them, shared by the runner
(scripts/fleet-runs.py) and the deploy drivers (deploy.py) through one state file.

The state file (`fleet.json` in the run's directory) names each app host's namespace,
address and server pid, the command that starts a server on an address, and how to ask
the load balancer whether a host is in rotation.
"""

import json
import os
import socket
import subprocess
import time

STATE_FILE = "fleet.json"
PORT = 8000


def load(state_dir):
    """The state of the run in `state_dir`."""
    with open(os.path.join(state_dir, STATE_FILE)) as f:
        return json.load(f)


def save(state_dir, state):
    """Writes the state atomically (a driver and the runner may read it meanwhile)."""
    path = os.path.join(state_dir, STATE_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(state, f, indent=1)
    os.replace(path + ".tmp", path)


def start_server(state, host):
    """Starts the server of `host` in its namespace, in a session of its own (so that it
    outlives a driver that started it); returns its pid. Output goes to the host's log."""
    entry = state["hosts"][host]
    argv = [part.replace("{address}", entry["address"]) for part in state["server"]]
    with open(entry["log"], "a") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", entry["namespace"], *argv],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=state.get("cwd"))
    entry["pid"] = proc.pid
    return proc.pid


def exited(pid):
    """Whether `pid` has exited (gone, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_exit(pid, timeout):
    """Waits until `pid` has exited; False when it is still running after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited(pid):
            return True
        time.sleep(0.02)
    return False


def answers(state, host, path="/healthz"):
    """Whether the host's server answers 200 on `path`, asked from the host itself."""
    entry = state["hosts"][host]
    done = subprocess.run(["ip", "netns", "exec", entry["namespace"], "curl", "-fs", "-o",
                           "/dev/null", "-m", "1", f"http://{entry['address']}:{PORT}{path}"])
    return done.returncode == 0


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


def set_endpoint(state, host, serving):
    """Puts `host` in or out of the load balancer's rotation, as a control plane would
    (HAProxy: the server's admin state, `ready` or `maint`)."""
    balancer = state["balancer"]
    if balancer["kind"] != "haproxy":
        raise ValueError(f"no endpoint control for load balancer {balancer['kind']}")
    answer = haproxy_command(balancer["stats_socket"],
                             f"set server app/{host} state {'ready' if serving else 'maint'}")
    if answer.strip():
        raise ValueError(f"HAProxy refused to change {host}: {answer.strip()}")


def haproxy_sessions(socket_path, backend="app"):
    """Server name -> current sessions (requests in progress on it) from HAProxy."""
    lines = haproxy_command(socket_path, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    name, server, current = header.index("pxname"), header.index("svname"), header.index("scur")
    return {f[server]: int(f[current] or 0) for f in (line.split(",") for line in lines[1:])
            if len(f) > current and f[name] == backend and f[server] != "BACKEND"}


def marked_down(state, host):
    """Whether HAProxy's health checks have marked `host` DOWN (not just one check failed)."""
    return haproxy_statuses(state["balancer"]["stats_socket"]).get(host, "").startswith("DOWN")


def in_rotation(state, host):
    """Whether the load balancer sends traffic to `host` again (its health check passed)."""
    balancer = state["balancer"]
    if balancer["kind"] == "haproxy":
        # "no check": a server without health checks (the lagged config), in rotation
        # until its admin state says otherwise ("MAINT").
        return haproxy_statuses(balancer["stats_socket"]).get(host) in ("UP", "no check")
    raise ValueError(f"no health view for load balancer {balancer['kind']}")


def wait_until(predicate, timeout, what):
    """Polls `predicate` every 50 ms; raises TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
