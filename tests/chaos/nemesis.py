"""The nemesis: a seeded schedule of faults, and the thread that injects and heals them.

The schedule is a pure function of the seed and the run's shape, so a seed names a run.
By default at most one node is faulted at a time (a quorum usually exists); `overlap` runs
two independent tracks whose faults may coincide (then 503s are expected). Every fault is
healed when its duration ends, and whatever is still faulted is healed when the run stops.

late_delivery is the one fault that spans two nodes: it captures the replication requests the master
sends through the proxy (held back from the secondary, or passed on and copied), kills the master,
restarts it (on its data dir, or without its log: in memory, or its data dir wiped), and then hands
the secondary some of the dead master's requests, byte for byte, on fresh connections, later.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from replog.tools.cluster import ClusterError, LocalCluster

from .proxy import Mode, Proxy

SECONDARY_FAULTS = ("kill_secondary", "pause_secondary")
PROXY_FAULTS = (
    "proxy_drop",
    "proxy_reset",
    "proxy_latency",
    "proxy_partition",
    "proxy_cut",
    "proxy_replay",
    "partition_restart",
    "late_delivery",
)
TWO_NODE_FAULTS = ("partition_restart", "late_delivery")  # on the proxy and the secondary behind it (or the master)


@dataclass(frozen=True)
class Fault:
    """One fault: what, on which node, when (seconds after the start) and for how long."""

    at: float
    kind: str
    target: int | None  # secondary index (0-based); None for the master and the proxy
    duration: float
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        where = "master" if self.kind == "kill_master" else ("proxy" if self.target is None else f"s{self.target + 1}")
        if self.kind == "partition_restart":
            where = f"proxy+s{self.target + 1}"  # type: ignore[operator]
        if self.kind == "late_delivery":
            where = f"master->s{self.target + 1}"  # type: ignore[operator]
        extra = "".join(f" {k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind} {where} for {self.duration:.2f}s{extra}"


def schedule(
    seed: int,
    duration: float,
    *,
    secondaries: int,
    data_dirs: bool,
    proxied: int | None,
    overlap: bool = False,
) -> list[Fault]:
    """The faults of a run, sorted by start time; all of them end before `duration`."""
    rng = random.Random(f"nemesis-{seed}")
    tracks = 2 if overlap else 1
    faults: list[Fault] = []
    for _ in range(tracks):
        t = rng.uniform(0.3, 1.0)
        while True:
            fault = _one(rng, t, secondaries=secondaries, data_dirs=data_dirs, proxied=proxied)
            if fault.at + fault.duration > duration - 0.5:
                break
            faults.append(fault)
            t = fault.at + fault.duration + rng.uniform(0.2, 1.2)
    return sorted(faults, key=lambda f: f.at)


def _one(rng: random.Random, at: float, *, secondaries: int, data_dirs: bool, proxied: int | None) -> Fault:
    weights = {"kill_secondary": 3.0, "pause_secondary": 2.0}
    if proxied is not None:
        weights.update(
            proxy_drop=1.0,
            proxy_reset=1.0,
            proxy_latency=1.0,
            proxy_partition=1.0,
            proxy_cut=0.5,
            proxy_replay=0.5,
            partition_restart=1.0,
        )
        weights["late_delivery"] = 1.0
    if data_dirs:
        weights["kill_master"] = 2.0
    kind = rng.choices(list(weights), list(weights.values()))[0]
    target = rng.randrange(secondaries) if kind in SECONDARY_FAULTS else proxied if kind in TWO_NODE_FAULTS else None
    duration = rng.uniform(0.3, 2.5)
    params: dict[str, Any] = {}
    if kind == "kill_secondary":
        params["restart"] = rng.choice(["disk", "disk", "empty"]) if data_dirs else "empty"
        if rng.random() < 0.4:
            # Back before the master marks it unhealthy: its replicator, still sending from where the
            # old process was, races the heartbeat that would tell it of the new, empty, process.
            duration = rng.uniform(0.0, 0.15)
    elif kind == "partition_restart":
        # The secondary restarts empty behind a partition, and old requests are delivered to the new process.
        params["restart"] = "empty"
        params["replay"] = rng.randint(1, 8)
    elif kind == "proxy_replay":
        params["replay"] = rng.randint(1, 8)
        duration = 0.0
    elif kind == "kill_master":
        duration = rng.uniform(0.05, 1.0)
    elif kind == "proxy_latency":
        params["latency"] = rng.choice([0.01, 0.05, 0.2, 0.4])
        params["jitter"] = rng.choice([0.0, 0.05])
    elif kind == "proxy_cut":
        params["rst"] = rng.random() < 0.5
        duration = 0.0
    elif kind == "late_delivery":
        # hold: the captured requests never reached the secondary (a gap it has to be sent again), else copies.
        params["hold"] = rng.random() < 0.5
        params["restart"] = rng.choice(["disk", "disk", "empty"]) if data_dirs else "empty"
        params["deliver"] = rng.randint(1, 8)
        params["capture"] = round(rng.uniform(0.2, 1.5), 3)  # seconds of capture before the master is killed
        params["down"] = round(rng.uniform(0.05, 0.8), 3)  # seconds the master stays dead
        params["later"] = round(rng.uniform(0.0, 1.5), 3)  # seconds after the new master listens
        duration = params["capture"] + params["down"] + params["later"] + 0.5  # (0.5: a master's start-up)
    return Fault(round(at, 3), kind, target, round(duration, 3), params)


class Nemesis:
    """Injects a schedule in a background thread; heal_all() undoes whatever is still in effect."""

    def __init__(
        self,
        cluster: LocalCluster,
        proxy: Proxy | None,
        faults: list[Fault],
        *,
        proxied: int | None = None,
        on_loss: Callable[[str], None] = lambda node: None,
    ) -> None:
        self.cluster = cluster
        self.proxy = proxy
        self.proxied = proxied  # index of the secondary behind the proxy
        self.faults = faults
        self.injected: Counter[str] = Counter()  # kind -> faults injected
        self.skipped: Counter[str] = Counter()  # kind -> faults skipped because their target was busy
        self.timeline: list[str] = []  # "t=1.23 start kill_secondary s1 ...", for a failing run's report
        self.errors: list[str] = []  # a node that would not come back: a product bug, reported as a violation
        self.master_epoch = 0  # bumped when the master is killed and when it is back: samplers skip those windows
        # secondary index -> (killed, restarted) clock times of each restart that lost its log (empty memory or --reset)
        self.losses: dict[int, list[tuple[float, float]]] = {}
        self.master_losses: list[tuple[float, float]] = []  # (killed, restarted) of each master restart without its log
        self.on_loss = on_loss  # called with "master" or "s<i>" just after a node that will restart empty was killed
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0

    # -- driving --------------------------------------------------------------

    def start(self, t0: float) -> None:
        self._t0 = t0
        tracks: dict[int, list[Fault]] = {}
        # Faults that overlap in the schedule run on separate threads; one thread keeps them sequential.
        ends: list[float] = []
        for fault in self.faults:
            for i, end in enumerate(ends):
                if end <= fault.at:
                    ends[i] = fault.at + fault.duration
                    tracks.setdefault(i, []).append(fault)
                    break
            else:
                ends.append(fault.at + fault.duration)
                tracks.setdefault(len(ends) - 1, []).append(fault)
        for i, faults in sorted(tracks.items()):
            thread = threading.Thread(target=self._run, args=(faults,), name=f"nemesis-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Stop injecting, wait for the tracks to heal their current fault, then heal everything."""
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self.heal_all()

    def _run(self, faults: list[Fault]) -> None:
        for fault in faults:
            if self._stop.wait(max(0.0, self._t0 + fault.at - time.monotonic())):
                return
            keys = self._targets(fault)
            with self._lock:
                if keys & self._busy:
                    self.skipped[fault.kind] += 1
                    continue
                self._busy |= keys
            try:
                self._inject(fault)
            finally:
                with self._lock:
                    self._busy -= keys

    def _targets(self, fault: Fault) -> set[str]:
        """What a fault takes over: two faults on one target never run at once."""
        if fault.kind == "kill_master":
            return {"master"}
        if fault.kind == "late_delivery":
            return {"master", "proxy"}
        if fault.kind == "partition_restart":
            return {"proxy", f"s{fault.target}"}
        if fault.target is None:
            return {"proxy"}
        return {f"s{fault.target}"}

    def _note(self, what: str) -> None:
        line = f"t={time.monotonic() - self._t0:7.2f} {what}"
        with self._lock:
            self.timeline.append(line)

    # -- faults -----------------------------------------------------------------

    def _inject(self, fault: Fault) -> None:
        self.injected[fault.kind] += 1
        self._note("start " + fault.describe())
        try:
            action = getattr(self, "_" + fault.kind)
            action(fault, lambda: self._stop.wait(fault.duration))
        except ClusterError as exc:
            self.errors.append(f"{fault.describe()}: {exc}")
        self._note("healed " + fault.describe())

    def _kill_secondary(self, fault: Fault, wait: Callable[[], Any]) -> None:
        node = self.cluster.secondaries[fault.target]  # type: ignore[index]
        empty = fault.params.get("restart") == "empty"
        killed = time.monotonic()
        node.kill()
        if empty:
            self.on_loss(f"s{fault.target + 1}")  # type: ignore[operator]
        wait()
        try:
            if empty and "--data-dir" in node.args:
                node.start_with(["--reset"])
            else:
                node.start()
        finally:
            if empty:
                with self._lock:
                    self.losses.setdefault(fault.target, []).append((killed, time.monotonic()))  # type: ignore[arg-type]

    def _partition_restart(self, fault: Fault, wait: Callable[[], Any]) -> None:
        assert self.proxy is not None
        half = Fault(fault.at, fault.kind, fault.target, fault.duration / 2, fault.params)

        def restart_then_replay() -> None:
            self._kill_secondary(half, lambda: self._stop.wait(half.duration))
            # Requests the master sent to the old process, delivered late to the new one.
            replayed = self.proxy.replay(fault.params.get("replay", 0))  # type: ignore[union-attr]
            self._note(f"replayed {replayed} old replication requests to s{fault.target + 1}")  # type: ignore[operator]

        self._proxy(Mode.PARTITION, restart_then_replay)

    def _proxy_replay(self, fault: Fault, wait: Callable[[], Any]) -> None:
        assert self.proxy is not None
        self.proxy.replay(fault.params["replay"])

    def _pause_secondary(self, fault: Fault, wait: Callable[[], Any]) -> None:
        node = self.cluster.secondaries[fault.target]  # type: ignore[index]
        node.pause()
        try:
            wait()
        finally:
            node.resume()

    def _kill_master(self, fault: Fault, wait: Callable[[], Any]) -> None:
        self.master_epoch += 1
        try:
            self.cluster.master.kill()
            if self.proxy is not None:
                self.proxy.forget()  # its requests are not to be replayed to the next master's secondaries
            wait()
            self.cluster.master.start()
        finally:
            self.master_epoch += 1

    def _late_delivery(self, fault: Fault, wait: Callable[[], Any]) -> None:
        assert self.proxy is not None
        p = fault.params
        master = self.cluster.master
        empty = p["restart"] == "empty"
        self.proxy.start_capture()
        captured: list[bytes] = []
        try:
            if p["hold"]:
                self.proxy.set_mode(Mode.HOLD)
            self._stop.wait(p["capture"])
        finally:
            self.master_epoch += 1
        killed = time.monotonic()
        try:
            try:
                master.kill()
                if empty:
                    self.on_loss("master")
            finally:
                captured = self.proxy.stop_capture()
                self.proxy.forget()  # proxy_replay is for the live master's requests; these are delivered below
                self.proxy.heal()
                self.proxy.cut()  # the dead master's connections: nothing of theirs reaches the secondary but deliver()
            self._stop.wait(p["down"])
            if empty:
                _wipe_data_dir(master.args)
            master.start()
        finally:
            self.master_epoch += 1
            if empty:
                with self._lock:
                    self.master_losses.append((killed, time.monotonic()))
        s = f"s{fault.target + 1}"  # type: ignore[operator]
        back = "without its log" if empty else "on its data dir"
        self._note(f"captured {len(captured)} requests of the dead master to {s}; master back {back}")
        self._stop.wait(p["later"])
        rng = random.Random(f"late-{fault.at}-{len(captured)}")
        tail = captured[-2 * p["deliver"] :]  # the dead master's last words
        picked = rng.sample(tail, min(p["deliver"], len(tail)))
        delivered = self.proxy.deliver(picked)
        seqs = ", ".join(_seqs(r) for r in picked) or "-"
        self._note(f"delivered {delivered} of {len(picked)} late to {s}: seqs {seqs}")

    def _proxy(self, mode: Mode, wait: Callable[[], Any], **kw: float) -> None:
        assert self.proxy is not None
        self.proxy.set_mode(mode, **kw)
        try:
            wait()
        finally:
            self.proxy.heal()

    def _proxy_drop(self, fault: Fault, wait: Callable[[], Any]) -> None:
        self._proxy(Mode.DROP, wait)

    def _proxy_reset(self, fault: Fault, wait: Callable[[], Any]) -> None:
        self._proxy(Mode.RESET, wait)

    def _proxy_partition(self, fault: Fault, wait: Callable[[], Any]) -> None:
        self._proxy(Mode.PARTITION, wait)

    def _proxy_latency(self, fault: Fault, wait: Callable[[], Any]) -> None:
        self._proxy(Mode.LATENCY, wait, latency=fault.params["latency"], jitter=fault.params["jitter"])

    def _proxy_cut(self, fault: Fault, wait: Callable[[], Any]) -> None:
        assert self.proxy is not None
        self.proxy.cut(rst=fault.params["rst"])

    # -- the end ---------------------------------------------------------------------

    def heal_all(self) -> None:
        """Every node running and answering, the proxy forwarding."""
        if self.proxy is not None:
            self.proxy.heal()
        for node in self.cluster.secondaries:
            node.resume()
        for node in self.cluster.nodes:
            if not node.running:
                try:
                    node.start()
                except ClusterError as exc:
                    self.errors.append(f"heal: {exc}")


def _wipe_data_dir(args: list[str]) -> None:
    """Remove the data dir named in a node's options (a disk lost with its contents); nothing without one."""
    if "--data-dir" in args:
        shutil.rmtree(args[args.index("--data-dir") + 1], ignore_errors=True)


def _seqs(request: bytes) -> str:
    """The seqs a captured POST /replicate carries, as "first-last", for the timeline."""
    try:
        entries = json.loads(request.split(b"\r\n\r\n", 1)[1])["entries"]
        return f"{entries[0][0]}-{entries[-1][0]}" if entries else "none"
    except (ValueError, KeyError, IndexError, TypeError):
        return "?"
