"""The fleet test bed: hosts as network namespaces on one bridge, made and removed here.

Every host is a network namespace with one interface, `eth0`, holding an address from
198.18.0.0/15 (RFC 2544's test-bed range); its other end sits on a bridge `br0` inside a
namespace of its own, so nothing touches the machine's interfaces and nothing has a route
out (no default route anywhere, no address on the bridge). Faults are iproute2 commands on
that layout: a host cut off the bridge, `tc netem` delay or loss on its interface, every
process of a host killed.

Namespaces are named `zdf-<owner pid>-<host>`, so a run can find and remove what an earlier
run left when it was killed (its owner pid no longer alive), and `TestBed.remove` checks
that no namespace and no process of its own is left.
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

PREFIX = "zdf"
NETWORK = "198.18.0"


class TestBedError(RuntimeError):
    """A test-bed step failed (its command and output in the message)."""


def run(*argv, check=True):
    """Runs one command; returns its stdout. A failure raises TestBedError with the output."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise TestBedError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def refuse(message):
    """Stops the run with one line and exit status 2 (it cannot run here)."""
    print(f"fleet: {message}", file=sys.stderr)
    sys.exit(2)


def require_privileges():
    """One line and exit status 2 when this process cannot make network namespaces."""
    if os.geteuid() != 0:
        refuse("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces; "
               "run it as root")
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        run("ip", "netns", "add", probe)
    except (TestBedError, FileNotFoundError) as error:
        refuse(f"cannot create a network namespace ({error})")
    run("ip", "netns", "del", probe)


def namespaces():
    """Names of the network namespaces that exist now."""
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def pids_in(namespace):
    """Processes whose network namespace is `namespace`."""
    return [int(pid) for pid in run("ip", "netns", "pids", namespace, check=False).split()]


def kill_all_in(namespace):
    """SIGKILLs every process of a namespace and waits (at most 5 s) until none is left."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = pids_in(namespace)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    raise TestBedError(f"processes {pids_in(namespace)} of {namespace} survived SIGKILL")


def stop_all_in(namespace):
    """SIGSTOPs every process of a namespace: the host freezes, its kernel still answers
    (what is in flight on it stays in flight, and can be counted at the load balancer)."""
    for pid in pids_in(namespace):
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass


def remove_stale():
    """Removes the namespaces of earlier runs whose owner is gone (a run killed mid-way)."""
    for name in namespaces():
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        owner = int(parts[1])
        if owner != os.getpid() and not os.path.exists(f"/proc/{owner}"):
            kill_all_in(name)
            run("ip", "netns", "del", name, check=False)


def set_bridge_port(bridge_namespace, host, connected):
    """Puts a host's cable on the bridge or takes it off (the bridge's end of its veth):
    off, its packets go nowhere and nothing is refused (a partition)."""
    action = ["master", "br0", "up"] if connected else ["nomaster"]
    run("ip", "-n", bridge_namespace, "link", "set", host, *action)


@dataclass
class Host:
    """One host of the test bed."""

    name: str
    namespace: str
    address: str

    def command(self, *argv):
        """`argv` as run inside this host's network namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


class TestBed:
    """Hosts on one bridge; `with TestBed([...]) as bed:` removes everything at the end,
    after a failure too."""

    def __init__(self, host_numbers):
        """`host_numbers`: host name -> last byte of its address (198.18.0.N)."""
        self.owner = os.getpid()
        self.bridge_namespace = f"{PREFIX}-{self.owner}-net"
        self.hosts = {name: Host(name, f"{PREFIX}-{self.owner}-{name}", f"{NETWORK}.{number}")
                      for name, number in host_numbers.items()}

    def __enter__(self):
        require_privileges()
        remove_stale()
        try:
            self.create()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def create(self):
        """The bridge namespace with `br0`, then each host on it."""
        net = self.bridge_namespace
        run("ip", "netns", "add", net)
        run("ip", "-n", net, "link", "set", "lo", "up")
        run("ip", "-n", net, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", net, "link", "set", "br0", "up")
        for host in self.hosts.values():
            run("ip", "netns", "add", host.namespace)
            run("ip", "-n", net, "link", "add", host.name, "type", "veth",
                "peer", "name", "eth0", "netns", host.namespace)
            run("ip", "-n", net, "link", "set", host.name, "master", "br0", "up")
            run("ip", "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            run("ip", "-n", host.namespace, "link", "set", "eth0", "up")
            run("ip", "-n", host.namespace, "link", "set", "lo", "up")

    def remove(self):
        """Kills every process of every host, deletes the namespaces (their veths go with
        them), and checks that nothing of this test bed is left."""
        ours = [h.namespace for h in self.hosts.values()] + [self.bridge_namespace]
        for name in ours:
            if name in namespaces():
                kill_all_in(name)
                run("ip", "netns", "del", name, check=False)
        left = [name for name in namespaces() if name in ours]
        if left:
            raise TestBedError(f"namespaces left after the test bed was removed: {left}")

    # Faults.

    def cut(self, host):
        """Takes `host` off the bridge: its packets go nowhere, nothing is refused."""
        set_bridge_port(self.bridge_namespace, host, connected=False)

    def reconnect(self, host):
        """Puts `host` back on the bridge."""
        set_bridge_port(self.bridge_namespace, host, connected=True)

    def impair(self, host, delay_ms=0, loss_percent=0.0):
        """`tc netem` delay and loss on the host's interface (replacing any earlier one)."""
        spec = []
        if delay_ms:
            spec += ["delay", f"{delay_ms}ms"]
        if loss_percent:
            spec += ["loss", f"{loss_percent}%"]
        run(*self.hosts[host].command("tc", "qdisc", "replace", "dev", "eth0", "root",
                                      "netem", *spec))

    def kill_host(self, host):
        """SIGKILL to every process of the host (a machine that died)."""
        kill_all_in(self.hosts[host].namespace)
