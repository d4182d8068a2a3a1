"""The app hosts' servers and what the load balancer thinks of them, shared by the runner
(scripts/fleet-runs.py) and the deploy drivers (deploy.py) through one state file.

The state file (`fleet.json` in the run's directory) names each app host's namespace,
address, port and server pid, the command that starts a server on an address and port,
and the load balancer (rotation.py asks it and changes it). A host entry is one server
instance: a blue/green deploy adds `app1-green` on app1's address at another port.
"""

import json
import os
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
    port = str(entry.get("port", PORT))
    argv = [part.replace("{address}", entry["address"]).replace("{port}", port)
            for part in state["server"]]
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
                           "/dev/null", "-m", "1", f"http://{endpoint(entry)}{path}"])
    return done.returncode == 0


def endpoint(entry):
    """`address:port` of a host entry's server."""
    return f"{entry['address']}:{entry.get('port', PORT)}"


def connections_from(entry, peer_address):
    """Established TCP connections from `peer_address` to the entry's server, counted in
    the host's namespace (traffic from the load balancer reaches it)."""
    done = subprocess.run(["ip", "netns", "exec", entry["namespace"], "ss", "-Htn", "state",
                           "established", "src", endpoint(entry), "dst", peer_address],
                          capture_output=True, text=True)
    return len([line for line in done.stdout.splitlines() if line.strip()])


def wait_until(predicate, timeout, what):
    """Polls `predicate` every 50 ms; raises TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
