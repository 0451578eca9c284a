"""Several hosts, real faults: multi-worker training, tuning and the data service across network namespaces.

Each host is a network namespace with its own address on a bridge the test makes (tests/hosts.py). Faults are
real: SIGKILL (sockets closed by the kernel), a link down (a partition: nothing closes, packets vanish), netem
delay and loss, SIGSTOP. The checks: every process that gives up says so in one `nntrain: error:` line and exits
1 within a bound; nothing hangs; a restart resumes and ends bit-identical to one uninterrupted 3-worker run,
shared by the scenarios. Run them alone with `pytest -m hosts` (root; skipped elsewhere); `-s` shows the bounds.

Two scenarios run at a time: the tests marked @in_lane (and the reference run) run one after another in a thread
beside the others, since on 2 cores one cluster's processes can start while another waits for a fault to show.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hosts
import keras
import numpy as np
import pytest

from nntrain.distribute import resolvers

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
PORT = 2222  # every host has its own address, so all use one port
STEPS, EPOCHS, EVERY = 6, 3, 3  # a checkpoint every 3 steps: faults at step 9 and 15 are mid-epoch
TIMEOUT = 20  # --worker_timeout: long enough for three workers to join together on a busy 2-core machine
TRAIN = ["train", "--experiment=mnist_mlp", f"--config.data.source=idx:{MNIST_DIR}",
         "--config.data.train_split=test[:576]", "--config.data.eval_split=test[8000:8096]",
         "--config.train.batch_size=48", f"--config.train.steps_per_epoch={STEPS}", f"--config.train.epochs={EPOCHS}",
         f"--config.train.checkpoint_every_steps={EVERY}", "--config.train.tensorboard=false",
         f"--worker_timeout={TIMEOUT}"]
START_TIMEOUT = 240  # seconds for a 3-worker run to reach a point, or to end, on a loaded machine


@pytest.fixture(scope="module", autouse=True)
def _nothing_left_behind():
    """After the module (also when a test failed): no namespace of this process remains."""
    reason = hosts.unavailable()
    if reason:
        pytest.skip(reason)
    hosts.remove_orphans()  # of a test process killed before it could clean up
    yield
    assert hosts.namespaces_left() == []


@contextlib.contextmanager
def networks() -> Iterator[Callable[[int, str], hosts.Hosts]]:
    """`make(n, tag)` makes n hosts; all are removed with their processes at the end, pass or fail."""
    made: list[hosts.Hosts] = []

    def make(count: int, tag: str) -> hosts.Hosts:
        made.append(hosts.Hosts(count, tag))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            each.close()
    assert all(process.poll() is not None for each in made for process in each.processes)
    assert not [name for each in made for name in [*each.names, each.switch] if name in hosts.namespaces_left()]


@pytest.fixture
def network() -> Iterator[Callable[[int, str], hosts.Hosts]]:
    """`network(n, tag)` makes n hosts, removed with all their processes when the test ends, pass or fail."""
    with networks() as make:
        yield make


Scenario = Callable[[Callable[[int, str], hosts.Hosts], Path], object]
LANE: list[Scenario] = []  # the scenarios of tests marked @in_lane, in file order
LANE_TIMEOUT = 900  # seconds a test waits for its scenario in the lane (each wait in it is bounded)


class Lane:
    """Scenarios run one after another in a thread, beside the other tests: on 2 cores, one scenario's processes
    start while another's wait for a timeout or a fault. `outcome(scenario)` waits for it and returns its result,
    or raises its failure (in its own test)."""

    def __init__(self, scenarios: list[Scenario], roots: list[Path]):
        self.results: dict[str, object] = {}
        self.errors: dict[str, BaseException] = {}
        self.ended = {scenario.__name__: threading.Event() for scenario in scenarios}
        self.thread = threading.Thread(target=self._run, args=(scenarios, roots), name="hosts-lane", daemon=True)
        self.thread.start()

    def _run(self, scenarios: list[Scenario], roots: list[Path]) -> None:
        for scenario, root in zip(scenarios, roots, strict=True):
            try:
                with networks() as make:
                    self.results[scenario.__name__] = scenario(make, root)
            except BaseException as e:  # noqa: BLE001 (raised again in the scenario's test)
                self.errors[scenario.__name__] = e
            self.ended[scenario.__name__].set()

    def outcome(self, scenario: Scenario) -> object:
        name = scenario.__name__
        assert self.ended[name].wait(LANE_TIMEOUT), f"{name} has not ended after {LANE_TIMEOUT} s"
        if name in self.errors:
            raise self.errors[name]
        return self.results[name]


def in_lane(scenario: Scenario) -> Callable[[Lane], None]:
    """Runs the test `scenario(network, tmp_path)` in the lane; pytest runs a test of the same name and docstring
    that takes its outcome."""
    LANE.append(scenario)

    def test(lane: Lane) -> None:
        lane.outcome(scenario)

    test.__name__ = test.__qualname__ = scenario.__name__
    test.__doc__ = scenario.__doc__
    return test


class Training:
    """One multi-worker `nntrain train` over `net`'s hosts, worker i on host i (0 is the chief)."""

    def __init__(self, net: hosts.Hosts, model_dir: Path, logs: Path, args: list[str] = TRAIN):
        self.net, self.model_dir, self.logs, self.args = net, model_dir, logs, args
        self.processes: list[subprocess.Popen] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, round_: int = 0, slurm: bool = False) -> list[subprocess.Popen]:
        """Every worker, told the cluster by --worker_hosts/--task_index, or (`slurm`) by the variables srun sets
        for a step of one task per host (the hosts' addresses as node names)."""
        cluster = ",".join(f"{self.net.address(i)}:{PORT}" for i in range(self.net.count))
        nodes = f"{hosts.SUBNET}.[1-{self.net.count}]"
        self.processes = []
        for i in range(self.net.count):
            if slurm:
                flags = ["--strategy=multi_worker"]
                env = {"SLURM_PROCID": str(i), "SLURM_STEP_NUM_TASKS": str(self.net.count),
                       "SLURM_STEP_NODELIST": nodes, "SLURM_STEP_TASKS_PER_NODE": f"1(x{self.net.count})"}
            else:
                flags, env = [f"--worker_hosts={cluster}", f"--task_index={i}"], {}
            self.processes.append(self.net.start(i, [*self.args, f"--model_dir={self.model_dir}", *flags],
                                                 self.log(i, round_), env))
        return self.processes

    def log(self, i: int, round_: int = 0) -> Path:
        return self.logs / f"worker{i}.{round_}.log"

    def wait(self, timeout: float = START_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return [process.poll() for process in self.processes]

    def steps_done(self) -> int:
        """The chief's checkpointed step (0 before its first checkpoint)."""
        try:
            return json.loads((self.model_dir / "checkpoints" / "state.json").read_text())["step"]
        except (OSError, ValueError, KeyError):
            return 0

    def wait_for_step(self, step: int) -> None:
        """Until the chief has checkpointed `step`."""
        reached = hosts.wait_until(lambda: self.steps_done() >= step or self.processes[0].poll() is not None,
                                   START_TIMEOUT)
        assert reached and self.processes[0].poll() is None, self.tail(0)
        assert self.steps_done() < STEPS * EPOCHS, "the run ended before the fault"

    def tail(self, i: int, round_: int = 0) -> str:
        return self.log(i, round_).read_text()[-3000:]


def bound(scenario: str, seconds: float, limit: float) -> None:
    """Asserts `seconds` < `limit` and prints the figure (docs/scaling.md's table: `pytest -m hosts -s`)."""
    print(f"\nhosts: {scenario}: {seconds:.1f} s (bound {limit:g} s)")
    assert seconds < limit, (scenario, seconds)


def given_up_in_one_line(log: Path) -> str:
    """The single `nntrain: error:` line of a worker that gave up; fails on a traceback, a TensorFlow C++ record
    or any other line about an error."""
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert not re.search(r"^[EWF]\d{4} ", text, re.MULTILINE), text[-3000:]  # TF's C++ records: in its log file
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("nntrain: error: "), text[-3000:]
    return errors[0]


def named(line: str) -> set[int]:
    """The peers a `lost contact with worker(s) ...` line names (those TensorFlow's error named: the first lost, and
    any that had exited by then)."""
    found = re.search(r"lost contact with workers? ([\d, ]+) \(", line)
    return {int(peer) for peer in found.group(1).split(", ")} if found else set()


def weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path).get_weights()


def assert_same_weights(run: Path, reference: Path) -> None:
    for mine, expected in zip(weights(run / "model.keras"), weights(reference / "model.keras"), strict=True):
        np.testing.assert_array_equal(mine, expected)


def clean_reference(network: Callable[[int, str], hosts.Hosts], tmp_path: Path) -> Path:
    """One uninterrupted 3-worker run; its model_dir."""
    run = Training(network(3, "ref"), tmp_path / "run", tmp_path / "logs")
    run.start()
    codes = run.wait()
    assert codes == [0, 0, 0], [run.tail(i) for i in range(3)]
    return run.model_dir


@pytest.fixture(scope="module", autouse=True)
def lane(_nothing_left_behind, request, tmp_path_factory) -> Iterator[Lane]:
    """The lane, started with the module's first test: the clean reference run first (if a selected test compares
    with it), then the selected tests marked @in_lane."""
    here = [item for item in request.session.items if item.getparent(pytest.Module) is request.node]
    selected = {item.name for item in here}
    scenarios = [clean_reference] * any("reference" in item.fixturenames for item in here) + \
        [scenario for scenario in LANE if scenario.__name__ in selected]
    running = Lane(scenarios, [tmp_path_factory.mktemp(scenario.__name__[:30]) for scenario in scenarios])
    yield running
    running.thread.join(LANE_TIMEOUT)


@pytest.fixture(scope="module")
def reference(lane: Lane) -> Callable[[], Path]:
    """`reference()`: the uninterrupted run's model_dir (the lane's first scenario), once it has ended."""
    return lambda: lane.outcome(clean_reference)


def restart(run: Training, round_: int) -> int:
    """Starts every worker again; returns the step they resume from."""
    step = run.steps_done()
    assert 0 < step < STEPS * EPOCHS
    run.start(round_)
    return step


def assert_resumed(run: Training, round_: int, step: int) -> None:
    """Each worker of `round_` said where it resumed."""
    for i in range(run.net.count):
        assert f"resuming from the checkpoint in {run.model_dir}/checkpoints: step {step} of " in \
            run.log(i, round_).read_text(), run.tail(i, round_)


def restart_and_finish(run: Training, round_: int, reference: Path) -> None:
    """Starts every worker again: each says where it resumes, all finish, and the weights are the reference's."""
    step = restart(run, round_)
    codes = run.wait()
    assert codes == [0] * run.net.count, [run.tail(i, round_) for i in range(run.net.count)]
    assert_resumed(run, round_, step)
    epochs = [json.loads(line)["epoch"] for line in (run.model_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 1))
    assert_same_weights(run.model_dir, reference)


def test_kill_9_one_worker_then_partition_one_each_resumed_mid_epoch(network, reference, tmp_path):
    """Two faults on one run, all three workers restarted after each (one run for both: starting a cluster is what
    costs these tests most). SIGKILL to worker 2 at step 9 (its kernel closes its sockets): the others exit 1 in
    one line within --worker_timeout. Restarted, each says where it resumes; worker 1's link down at step 15
    (nothing is closed; its packets vanish): every worker exits 1 within --worker_timeout + 15 s in one line naming
    a lost peer (worker 1 for the others). The link back, all restarted, the run ends bit-identical to the
    uninterrupted one."""
    net = network(3, "fault")
    run = Training(net, tmp_path / "run", tmp_path / "logs")
    run.start()
    run.wait_for_step(STEPS + EVERY)
    run.processes[2].kill()
    killed = time.monotonic()
    codes = run.wait(TIMEOUT + 15)
    assert codes[:2] == [1, 1], (codes, run.tail(0), run.tail(1))
    bound("kill -9 worker 2: workers 0 and 1 exit", time.monotonic() - killed, TIMEOUT)
    lines = [given_up_in_one_line(run.log(i)) for i in (0, 1)]
    # Each names worker 2, or worker 0 (the coordination leader) once it had left.
    assert all(line.startswith(f"nntrain: error: worker {i} lost contact with") and named(line) and
               named(line) <= {0, 2} for i, line in enumerate(lines)), lines
    assert any(2 in named(line) for line in lines), lines

    resumed = restart(run, 1)
    run.wait_for_step(2 * STEPS + EVERY)
    assert_resumed(run, 1, resumed)
    net.partition(1)
    cut = time.monotonic()
    codes = run.wait(TIMEOUT + 15)
    assert codes == [1, 1, 1], (codes, [run.tail(i, 1) for i in range(3)])
    bound("partition worker 1: all three exit", time.monotonic() - cut, TIMEOUT + 15)
    for i in (0, 2):  # worker 1, and the other if it had exited by then
        line = given_up_in_one_line(run.log(i, 1))
        assert line.startswith(f"nntrain: error: worker {i} lost contact with") and 1 in named(line), line
    assert named(given_up_in_one_line(run.log(1, 1))) == {0}  # its heartbeat to the coordination leader: unanswered
    net.heal(1)
    restart_and_finish(run, 2, reference())


def test_slow_flapping_link_ends_like_the_clean_run(network, reference, tmp_path):
    """Worker 1's link at 50 Mbit/s with up to 50 ms of queueing, and down 10 ms of every 2 s (its packets then
    lost; this kernel has no netem for a 50 ms / 1% link), the cluster from a Slurm step's variables (as `srun`
    sets them): the run completes, bit-identical to the clean run (down 10 ms of every second, it took 161 s)."""
    net = network(3, "slow")
    net.slow(1, rate_mbit=50, latency_ms=50)
    run = Training(net, tmp_path / "run", tmp_path / "logs")
    with net.flapping(1, down_ms=10, every_ms=2000):
        run.start(slurm=True)
        codes = run.wait()
    assert codes == [0, 0, 0], [run.tail(i) for i in range(3)]
    listens = f"TensorFlow's gRPC server listens on every interface at port {resolvers.SLURM_PORT_BASE}"
    assert listens in run.log(1).read_text()
    assert_same_weights(run.model_dir, reference())


def test_sigstop_the_chief_past_the_timeout(network, tmp_path):
    """SIGSTOP to the chief for longer than --worker_timeout: workers 1 and 2 give up in one line naming it; the
    chief, continued, gives up in one line too; all exit 1."""
    run = Training(network(3, "stop"), tmp_path / "run", tmp_path / "logs")
    run.start()
    run.wait_for_step(STEPS)
    chief = run.processes[0]
    chief.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    others = [process.wait(timeout=TIMEOUT + 30) for process in run.processes[1:]]
    assert others == [1, 1], (others, run.tail(1), run.tail(2))
    bound("SIGSTOP the chief: workers 1 and 2 exit", time.monotonic() - stopped, TIMEOUT + 15)
    for i in (1, 2):
        line = given_up_in_one_line(run.log(i))
        # the stopped chief, or the worker that gave up first (TensorFlow names whichever error it meets first)
        assert line.startswith(f"nntrain: error: worker {i} lost contact with") and named(line) & {0, 3 - i}, line
    chief.send_signal(signal.SIGCONT)
    continued = time.monotonic()
    assert chief.wait(timeout=TIMEOUT + 30) == 1, run.tail(0)
    bound("SIGCONT the chief: it exits", time.monotonic() - continued, TIMEOUT + 15)
    # Which error TensorFlow reports first to the continued chief is a race: its own missed heartbeats, or the
    # workers that gave up meanwhile. Either way it is one line naming the loss.
    line = given_up_in_one_line(run.log(0))
    assert line.startswith("nntrain: error: worker 0 lost contact with") and (
        "this worker sent no heartbeat" in line or {1, 2} & set(named(line))), line


@in_lane
def test_a_worker_whose_peers_never_come_gives_up_with_exit_1(network, tmp_path):
    """Worker 0 of 2 started alone (its peer's host is up, nothing listens): one line after --worker_timeout and
    exit status 1, which a scheduler reads as a failure (it was 137, SIGKILL from its own watcher: out of memory)."""
    net = network(2, "alone")
    cluster = f"{net.address(0)}:{PORT},{net.address(1)}:{PORT}"
    log = tmp_path / "worker0.log"
    alone = net.start(0, [*TRAIN[:-1], "--worker_timeout=8", f"--model_dir={tmp_path / 'run'}",
                          f"--worker_hosts={cluster}", "--task_index=0"], log)
    waiting = hosts.wait_until(lambda: "waits up to 8 s" in log.read_text() or alone.poll() is not None,
                               START_TIMEOUT)
    assert waiting, log.read_text()[-3000:]
    since = time.monotonic()
    assert alone.wait(timeout=60) == 1, log.read_text()[-3000:]
    bound("worker 0 alone, --worker_timeout=8: it exits", time.monotonic() - since, 8 + 10)
    assert f"worker 0: not every worker of {cluster} joined within --worker_timeout=8 s" in \
        given_up_in_one_line(log)


TUNE_TIMEOUT = 12  # --worker_timeout of the search: also the chief's wait for its first worker (which heartbeats
# right after it connects: within seconds, even on a busy 2-core machine)
ORACLE_PORT = 8000


def tune(net: hosts.Hosts, model_dir: Path, logs: Path) -> list[subprocess.Popen]:
    """`nntrain tune --role=chief` on host 0, a `--role=worker` (w1, w2, ...) on each other host."""
    logs.mkdir(parents=True, exist_ok=True)
    args = ["tune", "--experiment=xor", f"--model_dir={model_dir}", "--strategy=cpu", "--max_trials=2",
            "--config.train.steps_per_epoch=40", "--config.train.epochs=2", f"--worker_timeout={TUNE_TIMEOUT}",
            f"--oracle_address={net.address(0)}:{ORACLE_PORT}"]
    return [net.start(0, [*args, "--role=chief"], logs / "chief.log"),
            *(net.start(i, [*args, "--role=worker", f"--worker_id=w{i}"], logs / f"w{i}.log")
              for i in range(1, net.count))]


@in_lane
def test_tune_kill_9_one_worker_mid_trial(network, tmp_path):
    """Chief + 2 workers on 3 hosts; SIGKILL to worker w1 while it runs a trial: the chief puts that trial back
    in the queue after --worker_timeout, w2 runs it, and the search ends with both trials completed once. Done with
    its own trial before that, w2 waits for it: the chief tells no worker to stop while another's trial runs
    (keras-tuner let w2 exit, and the lost trial found no worker left: 3 of 4 trials in a fresh-clone CI run)."""
    logs = tmp_path / "logs"
    chief, w1, w2 = tune(network(3, "tkill"), tmp_path / "search", logs)
    started = hosts.wait_until(lambda: " started: " in (logs / "w1.log").read_text() or chief.poll() is not None,
                               START_TIMEOUT)
    assert started and chief.poll() is None, (logs / "chief.log").read_text()[-3000:]
    w1.kill()
    killed = time.monotonic()
    assert chief.wait(timeout=START_TIMEOUT) == 0, (logs / "chief.log").read_text()[-3000:]
    bound("tune, kill -9 worker w1: the search ends without it", time.monotonic() - killed, START_TIMEOUT)
    assert w2.wait(timeout=60) == 0, (logs / "w2.log").read_text()[-3000:]
    lost = re.search(r"chief: worker w1 silent for \d+ s; trial (\d+) goes back to the queue",
                     (logs / "chief.log").read_text())
    assert lost, (logs / "chief.log").read_text()[-3000:]
    ran_by_w2 = re.search(r"worker w2: done, ran trial\(s\) (.*)", (logs / "w2.log").read_text()).group(1).split(", ")
    assert lost.group(1) in ran_by_w2
    trials = json.loads((tmp_path / "search" / "results.json").read_text())["trials"]
    assert sorted(t["trial"] for t in trials) == ["0", "1"]
    assert all(t["status"] == "completed" for t in trials), trials


@in_lane
def test_tune_partition_the_chief(network, tmp_path):
    """The chief's link down mid-search: each worker gives up in one line within --worker_timeout (plus its
    heartbeat interval and start-up slack), exit 1; so does the chief, which hears from no worker."""
    logs = tmp_path / "logs"
    net = network(3, "tpart")
    processes = tune(net, tmp_path / "search", logs)
    started = hosts.wait_until(lambda: all(" started: " in (logs / f"w{i}.log").read_text() for i in (1, 2))
                               or processes[0].poll() is not None, START_TIMEOUT)
    assert started and processes[0].poll() is None, (logs / "chief.log").read_text()[-3000:]
    net.partition(0)
    cut = time.monotonic()
    for i in (1, 2):
        assert processes[i].wait(timeout=TUNE_TIMEOUT + 30) == 1, (logs / f"w{i}.log").read_text()[-3000:]
        line = given_up_in_one_line(logs / f"w{i}.log")
        assert f"worker w{i}: the chief at {net.address(0)}:{ORACLE_PORT} has not answered for" in line
    bound("tune, partition the chief: both workers exit", time.monotonic() - cut, TUNE_TIMEOUT + 15)
    assert processes[0].wait(timeout=TUNE_TIMEOUT + 30) == 1
    assert "no worker heard from" in given_up_in_one_line(logs / "chief.log")


@in_lane
def test_data_service_host_killed_mid_epoch(network, tmp_path):
    """`nntrain data-service` on host 0 feeds a 2-worker run on hosts 1 and 2; SIGKILL to the service mid-epoch:
    the training workers end (in one line each, exit 1) or finish; none hangs."""
    net = network(3, "data")
    logs = tmp_path / "logs"
    logs.mkdir()
    service = net.start(0, ["data-service", "--port=5050", "--workers=1", f"--host={net.address(0)}"],
                        logs / "service.log")
    up = hosts.wait_until(lambda: "tf.data service: dispatcher at" in (logs / "service.log").read_text()
                          or service.poll() is not None, START_TIMEOUT)
    assert up and service.poll() is None, (logs / "service.log").read_text()[-3000:]
    assert f"grpc://{net.address(0)}:5050" in (logs / "service.log").read_text()
    args = [*TRAIN[:5], "--config.train.batch_size=32", f"--config.train.steps_per_epoch={STEPS}",
            f"--config.train.epochs={EPOCHS}", f"--config.train.checkpoint_every_steps={EVERY}",
            "--config.train.tensorboard=false", f"--worker_timeout={TIMEOUT}",
            f"--config.data.service=grpc://{net.address(0)}:5050"]
    workers = [net.start(i, [*args, f"--model_dir={tmp_path / 'run'}", f"--task_index={i - 1}",
                             f"--worker_hosts={net.address(1)}:{PORT},{net.address(2)}:{PORT}"], logs / f"w{i}.log")
               for i in (1, 2)]
    chief_state = tmp_path / "run" / "checkpoints" / "state.json"
    reached = hosts.wait_until(lambda: chief_state.exists() or workers[0].poll() is not None, START_TIMEOUT)
    assert reached and workers[0].poll() is None, (logs / "w1.log").read_text()[-3000:]
    service.kill()
    killed = time.monotonic()
    codes = [worker.wait(timeout=TIMEOUT + 30) for worker in workers]
    bound("data service killed: both trainers end", time.monotonic() - killed, TIMEOUT + 15)
    for i, code in zip((1, 2), codes, strict=True):
        if code == 1:
            assert "tf.data service" in given_up_in_one_line(logs / f"w{i}.log")
        else:
            assert code == 0, (logs / f"w{i}.log").read_text()[-3000:]



def test_namespaces_of_a_killed_test_process_are_removed_at_the_next_start():
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid stands for a test process that was killed before its close()
    orphan, ours = f"nnt{gone.pid}-orphan-h0", f"{hosts.PREFIX}alive-h0"
    listed = lambda: subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout  # noqa: E731
    for name in (orphan, ours):
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=hosts.COMMAND_TIMEOUT)
    inside = subprocess.Popen(["ip", "netns", "exec", orphan, "sleep", "60"])
    try:
        assert hosts.wait_until(lambda: subprocess.run(["ip", "netns", "pids", orphan], capture_output=True,
                                                       text=True).stdout.strip() != "", timeout=10)
        assert orphan in hosts.remove_orphans()
        assert inside.wait(timeout=10) == -signal.SIGKILL
        assert orphan not in listed() and ours in listed()  # a live process's namespaces stay
    finally:
        inside.kill()
        for name in (orphan, ours):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=hosts.COMMAND_TIMEOUT)
