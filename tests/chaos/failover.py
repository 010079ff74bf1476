"""Chaos against a failover cluster: etcd and three `replog node`s (replog.tools.failover), writers that
follow the master, and a seeded nemesis whose faults are aimed at whichever node is master when they
start: SIGKILL, SIGSTOP (shorter or longer than the lease), cut off from etcd only; and at secondaries
(kill, pause), and etcd itself (a restart on its data).

The existing checker judges the run after healing (SPEC "Automatic failover (etcd)", "Epochs and fencing"):
every node ends with the same list (so no seq holds two values), no text twice, batches whole, ids stored
once, and every write acknowledged with w >= a majority is on every node at the seq it was answered with.
Writes acknowledged with a smaller w, and 504s, may be rolled back by a failover: they are either where
their answer said or gone (never elsewhere: a retry with the same id is the only way back in).
Sampling during the run is left out here: across epochs a node may show, for a while, a tail that a
failover rolls back, which is allowed.

    python -m tests.chaos.harness --failover --seed 7 --duration 30
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replog.tools.cluster import ClusterError, Node, http_json
from replog.tools.failover import FailoverCluster, is_master

from .checker import History, check_final
from .workload import Attempt, Op, Workload

if TYPE_CHECKING:
    from .harness import RunConfig, RunResult

LEASE_TTL = 2  # seconds: short, so that a run sees several failovers

# kind -> weight. The master is the target of the first three, found when the fault starts.
WEIGHTS = {
    "kill_master": 3.0,
    "pause_master": 2.0,
    "isolate_master": 2.0,
    "kill_secondary": 1.0,
    "pause_secondary": 1.0,
    "restart_etcd": 0.5,
}
MASTER_FAULTS = ("kill_master", "pause_master", "isolate_master")


@dataclass(frozen=True)
class FailoverFault:
    at: float
    kind: str
    duration: float
    pick: float  # in [0, 1): which secondary, for the secondary faults

    def describe(self) -> str:
        return f"{self.kind} for {self.duration:.2f}s"


def failover_schedule(seed: int, duration: float, lease_ttl: float = LEASE_TTL) -> list[FailoverFault]:
    """The run's faults, one at a time, each ending before duration; a pure function of the seed."""
    rng = random.Random(f"failover-nemesis-{seed}")
    faults = []
    t = rng.uniform(1.0, 2.0)
    while True:
        kind = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
        if kind in ("pause_master", "isolate_master"):
            # Sometimes within the lease (no failover may follow), mostly past it (one must).
            d = rng.uniform(0.3, lease_ttl) if rng.random() < 0.3 else rng.uniform(lease_ttl + 0.5, 2 * lease_ttl + 2)
        elif kind == "restart_etcd":
            d = rng.uniform(0.0, lease_ttl)
        else:
            d = rng.uniform(0.1, 2.5)
        if t + d > duration - 0.5:
            break
        faults.append(FailoverFault(round(t, 3), kind, round(d, 3), rng.random()))
        # Room for the next master to be elected and to take writes before the next fault.
        t += d + rng.uniform(lease_ttl, lease_ttl + 3.0)
    return faults


class FailoverNemesis:
    """Runs a failover schedule in a thread; stop() heals everything (all running, resumed, reconnected)."""

    def __init__(self, fc: FailoverCluster, faults: list[FailoverFault]) -> None:
        self.fc = fc
        self.faults = faults
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()  # a master fault with no master to aim at
        self.timeline: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failover-nemesis", daemon=True)
        self._t0 = 0.0

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)
        self.heal_all()

    def note(self, what: str) -> None:
        self.timeline.append(f"t={time.monotonic() - self._t0:7.2f} {what}")

    def _run(self) -> None:
        for fault in self.faults:
            if self._stop.wait(max(0.0, self._t0 + fault.at - time.monotonic())):
                return
            try:
                self._inject(fault)
            except ClusterError as exc:
                self.errors.append(f"{fault.describe()}: {exc}")

    def _inject(self, fault: FailoverFault) -> None:
        fc = self.fc
        wait: Callable[[], Any] = lambda: self._stop.wait(fault.duration)  # noqa: E731
        if fault.kind == "restart_etcd":
            self.injected[fault.kind] += 1
            self.note(f"start {fault.describe()}")
            fc.restart_etcd(down=fault.duration)
            self.note("etcd back")
            return
        master = fc.master()
        if master is None:
            self.skipped[fault.kind] += 1
            self.note(f"skip {fault.describe()}: no master now")
            return
        if fault.kind in MASTER_FAULTS:
            target = master
        else:
            others = [n for n in fc.nodes if n is not master and n.running]
            target = others[int(fault.pick * len(others))]
        self.injected[fault.kind] += 1
        self.note(f"start {fault.describe()} on {fc.name(target)}{' (master)' if target is master else ''}")
        if fault.kind in ("kill_master", "kill_secondary"):
            fc.kill(target)
            wait()
            fc.restart(target)
        elif fault.kind in ("pause_master", "pause_secondary"):
            fc.pause(target)
            try:
                wait()
            finally:
                fc.resume(target)
        elif fault.kind == "isolate_master":
            fc.isolate(target)
            try:
                wait()
            finally:
                fc.heal(target)
        self.note(f"healed {fault.describe()} on {fc.name(target)}")

    def heal_all(self) -> None:
        self.fc.heal()
        if not self.fc.etcd.running:
            try:
                self.fc.etcd.start()
            except ClusterError as exc:
                self.errors.append(f"heal etcd: {exc}")
        for node in self.fc.nodes:
            node.resume()
            if not node.running:
                try:
                    self.fc.restart(node)
                except ClusterError as exc:
                    self.errors.append(f"heal {self.fc.name(node)}: {exc}")


class FollowingWorkload(Workload):
    """The chaos writers, sending each attempt to the node they believe is master: the one a 503
    not_master names, else the first node whose /health says master. (One belief shared by the writers.)"""

    def __init__(self, fc: FailoverCluster, **kw: Any) -> None:
        super().__init__(fc.nodes[0].url, **kw)
        self.fc = fc
        self._target: Node | None = None

    def _find(self) -> Node | None:
        for node in self.fc.nodes:
            if is_master(self.fc.health(node, timeout=0.5)):
                return node
        return None

    def _attempt(self, op: Op, body: dict[str, Any]) -> None:
        target = self._target
        if target is None or not target.running:
            target = self._target = self._find()
        client_timeout = self.max_wait if op.timeout is None else op.timeout + min(10.0, self.max_wait)
        attempt = Attempt(time.monotonic())
        if target is None:
            attempt.error = "no master found"
        else:
            try:
                attempt.status, attempt.body = http_json("POST", target.url + "/messages", body, timeout=client_timeout)
            except Exception as exc:  # noqa: BLE001 -- any failure to get an answer is "no answer"
                attempt.error = f"{type(exc).__name__}: {exc}"
        attempt.ended = time.monotonic()
        with self._lock:
            op.attempts.append(attempt)
        if attempt.status is None or attempt.status == 503:
            named = self.fc.node_at(attempt.body.get("master")) if isinstance(attempt.body, dict) else None
            self._target = named if named is not None and named is not target else None
            self._stop.wait(0.05)


@dataclass
class _Finals:
    converged: bool
    lists: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reference: str = "n1"
    waited: float = 0.0


def _converge(fc: FailoverCluster, timeout: float) -> _Finals:
    start = time.monotonic()
    try:
        fc.wait_converged(timeout)
        converged = True
    except ClusterError:
        converged = False
    master = fc.master()
    lists = {}
    for node in fc.nodes:
        try:
            lists[fc.name(node)] = node.messages(timeout=30.0)
        except (OSError, ClusterError):
            lists[fc.name(node)] = []
    reference = fc.name(master) if master is not None else max(lists, key=lambda k: len(lists[k]))
    return _Finals(converged, lists, reference, time.monotonic() - start)


# Log events a failover node must never write, whatever the faults.
FAILOVER_BAD_EVENTS = frozenset({"request_failed", "replicator_crashed", "disk_write_failed", "task_crashed"})


def run_failover(config: RunConfig, result: RunResult, history: History, workdir: Path, progress: Callable) -> None:
    """One chaos run against a FailoverCluster; violations go to history, counts to result."""
    fc = FailoverCluster(3, lease_ttl=LEASE_TTL, workdir=workdir)
    majority = 2
    try:
        fc.start(timeout=60)
        progress(f"failover cluster up in {workdir}; running {config.duration:g}s: {config.command()}")
        faults = failover_schedule(config.seed, config.duration)
        nemesis = FailoverNemesis(fc, faults)
        workload = FollowingWorkload(fc, nodes=3, seed=config.seed, writers=config.writers, tag=f"f{config.seed}")
        t0 = time.monotonic()
        history.t0 = t0
        workload.start()
        nemesis.start(t0)
        try:
            time.sleep(max(0.0, t0 + config.duration - time.monotonic()))
        finally:
            nemesis.stop()
            workload.stop()
        for error in nemesis.errors:
            history.violation("restart", error, error)
        finals = _converge(fc, config.converge_timeout)

        def may_lose(op: Op, answer: Attempt) -> bool:
            # SPEC: under failover a write acknowledged with w below a majority, or a 504, can be rolled back.
            return answer.status == 504 or op.w_nodes < majority

        check_final(
            history,
            workload.ops,
            finals.lists,
            converged=finals.converged,
            waited=finals.waited,
            may_lose=may_lose,
            reference=finals.reference,
        )
        for node in fc.nodes:
            for e in node.events():
                if e.get("event") in FAILOVER_BAD_EVENTS or e.get("level") == "critical":
                    detail = {k: v for k, v in e.items() if k not in ("timestamp", "port")}
                    history.violation("node-error", (fc.name(node), e.get("event")), f"{fc.name(node)} logged {detail}")
        result.faults = nemesis.injected
        result.skipped_faults = sum(nemesis.skipped.values())
        result.timeline = nemesis.timeline
        result.converge_seconds = finals.waited
        result.log_length = len(finals.lists[finals.reference])
        for op in workload.ops:
            result.outcomes[op.outcome] += 1
            result.messages[op.outcome] += len(op.texts)
            for a in op.attempts:
                result.statuses[str(a.status) if a.status is not None else "no answer"] += 1
    except ClusterError as exc:
        history.violation("cluster", str(exc), f"the failover cluster failed: {exc}")
    finally:
        fc.stop()
