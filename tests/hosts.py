"""Several hosts on one machine, for tests: Linux network namespaces on a bridge of their own, and real faults.

In the spirit of Jepsen: real processes on distinct addresses, real network faults (a link down, a slow link,
a flapping one) and real signals (SIGKILL, SIGSTOP), then a check that nothing was lost. `Hosts(n)` makes:

    switch namespace (bridge br0) --veth h0/h1/...-- host namespaces, each eth0 at 10.77.0.(i + 1)/24

Nothing is added to the machine's own network namespace: each test's bridge, links and addresses live inside
namespaces named after this process and the test (`nnt<pid>-<tag>-h<i>`), so parallel runs never collide and
traffic can only reach the namespaces' own addresses. `close()` kills every process left in the namespaces and
deletes them (which deletes their links and the bridge); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREFIX = f"nnt{os.getpid()}-"  # every namespace this test process makes starts with it
SUBNET = "10.77.0"
COMMAND_TIMEOUT = 20  # seconds for one `ip`/`tc` command


def unavailable() -> str | None:
    """Why namespaces cannot be made here (for pytest's skip), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    probe = f"{PREFIX}probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if made.returncode:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


def remove_orphans() -> list[str]:
    """Deletes the namespaces of test processes that are gone (killed before their `close()` could run, e.g. a
    pytest stopped by a signal) with whatever still runs in them; returns their names."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    orphans = []
    for name in (line.split()[0] for line in listing.stdout.splitlines()):
        owner = re.fullmatch(r"nnt(\d+)-.+", name)
        if owner and not _alive(int(owner.group(1))):
            _kill_all_in(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=COMMAND_TIMEOUT)
            orphans.append(name)
    return orphans


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_all_in(namespace: str) -> None:
    """SIGKILL to every process in `namespace`."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def namespaces_left() -> list[str]:
    """The namespaces of this test process still present (none after every `close()`)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    return [line.split()[0] for line in listing.stdout.splitlines() if line.startswith(PREFIX)]


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """Polls `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return condition()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=COMMAND_TIMEOUT)


class Hosts:
    """`count` hosts on one bridge; host i is reached at `address(i)`; processes started in them with `start`."""

    def __init__(self, count: int, tag: str):
        self.count, self.switch = count, f"{PREFIX}{tag}-sw"
        self.names = [f"{PREFIX}{tag}-h{i}" for i in range(count)]
        self.processes: list[subprocess.Popen] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, name in enumerate(self.names):
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("-n", self.switch, "link", "set", f"h{i}", "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")

    def address(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def start(self, i: int, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`nntrain ARGS` in host i, stdout and stderr into `log`; its pid is nntrain's (`ip netns exec` execs)."""
        with open(log, "w") as out:
            process = subprocess.Popen(["ip", "netns", "exec", self.names[i], sys.executable, "-m", "nntrain.cli",
                                        *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.processes.append(process)
        return process

    # Faults.
    def partition(self, i: int) -> None:
        """Host i's port on the bridge goes down: its packets vanish, its sockets stay open (no reset is sent)."""
        _ip("-n", self.switch, "link", "set", f"h{i}", "down")

    def heal(self, i: int) -> None:
        _ip("-n", self.switch, "link", "set", f"h{i}", "up")

    def slow(self, i: int, rate_mbit: int, latency_ms: int) -> None:
        """Host i's link limited to `rate_mbit` both ways, packets queued up to `latency_ms` (tbf on both ends of its
        veth). This kernel has no netem (`tc qdisc ... netem`: "Specified qdisc kind is unknown"), so no fixed delay."""
        tbf = ["tbf", "rate", f"{rate_mbit}mbit", "burst", "32kbit", "latency", f"{latency_ms}ms"]
        for namespace, device in ((self.switch, f"h{i}"), (self.names[i], "eth0")):
            subprocess.run(["tc", "-n", namespace, "qdisc", "add", "dev", device, "root", *tbf], check=True,
                           capture_output=True, timeout=COMMAND_TIMEOUT)

    @contextlib.contextmanager
    def flapping(self, i: int, down_ms: int, every_ms: int) -> Iterator[None]:
        """While the block runs, host i's link goes down for `down_ms` of every `every_ms`: the packets of those
        moments are lost (loss without netem; TCP retransmits them)."""
        stop = threading.Event()

        def flap() -> None:
            while not stop.wait(every_ms / 1000):
                self.partition(i)
                time.sleep(down_ms / 1000)
                self.heal(i)

        thread = threading.Thread(target=flap, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=COMMAND_TIMEOUT * 2)
            self.heal(i)

    def close(self) -> None:
        """Kills what runs in the hosts (also processes they started) and deletes every namespace made."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a stopped process dies on SIGKILL too, but say it plainly
                process.kill()
        for name in [*self.names, self.switch]:
            _kill_all_in(name)
        for process in self.processes:
            process.wait(timeout=30)
        for name in [*self.names, self.switch]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=COMMAND_TIMEOUT)
