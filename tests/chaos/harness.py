"""Run one chaos run (or a soak of many): cluster + proxy + workload + nemesis + checker.

    python -m tests.chaos.harness --seed 7 --duration 20 [--data-dir] [--secondaries 3]
    python -m tests.chaos.harness --soak 30            # runs of --duration each, seeds and shapes rotating
    python -m tests.chaos.harness --two-masters --seed 7 --duration 8   # a second master over the same secondaries
    python -m tests.chaos.harness --failover --seed 7 --duration 30     # etcd + three replog nodes (chaos/failover.py)

Prints a summary (faults injected by kind, writes by outcome, violations) and the seed; a failing
run prints the exact command that reproduces it and keeps its nodes' logs. Exit status 1 on violations.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from replog.tools.cluster import ClusterError, LocalCluster, Node, free_port

from .checker import LOSS_MARGIN, Cursor, History, Sampler, Watcher, check_final, converge
from .nemesis import Nemesis, schedule
from .proxy import Proxy
from .workload import Attempt, Op, Workload

# Log events that a node under these faults should never write: a bug, a crash of a task, a divergence.
BAD_EVENTS = frozenset(
    {
        "request_failed",
        "replicator_crashed",
        "disk_write_failed",
        "secondary_diverged",
        "entry_conflict",
        "log_mismatch",
    }
)


@dataclass(frozen=True)
class RunConfig:
    """The shape of one run; with the seed it names the run exactly."""

    seed: int
    duration: float = 15.0  # seconds of faults and writes (healing and checking come after)
    data_dirs: bool = False  # every node on a data dir (and the nemesis kills the master too)
    secondaries: int = 2
    overlap: bool = False  # faults may coincide (quorum may be lost)
    fail_rate: float = 0.0  # every secondary's --fail-rate
    delay: float = 0.0  # every secondary's --delay
    writers: int = 4
    proxy: bool = True  # put secondary 1 behind the fault proxy
    converge_timeout: float = 30.0
    keep: bool = False  # keep the nodes' logs even if the run passes
    two_masters: bool = False  # no nemesis: a second in-memory master is started over the same secondaries
    failover: bool = False  # etcd and three `replog node`s; master kills, pauses and etcd cuts (chaos/failover.py)

    def command(self) -> str:
        """The command line that runs exactly this run."""
        parts = [
            "python -m tests.chaos.harness",
            f"--seed {self.seed}",
            f"--duration {self.duration:g}",
            f"--secondaries {self.secondaries}",
        ]
        if self.data_dirs:
            parts.append("--data-dir")
        if self.overlap:
            parts.append("--overlap")
        if self.fail_rate:
            parts.append(f"--fail-rate {self.fail_rate:g}")
        if self.delay:
            parts.append(f"--delay {self.delay:g}")
        if self.writers != 4:
            parts.append(f"--writers {self.writers}")
        if not self.proxy:
            parts.append("--no-proxy")
        if self.two_masters:
            parts.append("--two-masters")
        if self.failover:
            parts = [p for p in parts if not p.startswith("--secondaries")] + ["--failover"]
        return " ".join(parts)


@dataclass
class RunResult:
    config: RunConfig
    violations: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)  # kind -> injected
    skipped_faults: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # op outcome -> ops
    messages: Counter[str] = field(default_factory=Counter)  # op outcome -> messages
    statuses: Counter[str] = field(default_factory=Counter)  # "201", "504", "no answer" -> attempts
    log_length: int = 0
    samples: int = 0
    converge_seconds: float = 0.0
    wall: float = 0.0
    timeline: list[str] = field(default_factory=list)
    workdir: str | None = None  # kept for a failing run

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        c = self.config
        lines = [
            f"chaos run seed={c.seed}: {'PASS' if self.ok else 'FAIL'} in {self.wall:.1f}s "
            + (
                "(failover: etcd and three nodes on data dirs"
                if c.failover
                else f"({c.secondaries} secondaries, {'data dirs' if c.data_dirs else 'in memory'}"
            )
            + f"{', overlapping faults' if c.overlap else ''}{f', fail-rate {c.fail_rate:g}' if c.fail_rate else ''}"
            f"{f', delay {c.delay:g}s' if c.delay else ''}{', two masters' if c.two_masters else ''})",
            f"  faults injected: {sum(self.faults.values())} {_fmt(self.faults)}"
            + (f", {self.skipped_faults} skipped (target busy)" if self.skipped_faults else ""),
            f"  writes: {sum(self.outcomes.values())} ops, {sum(self.messages.values())} messages; by outcome {_fmt(self.outcomes)}",
            f"  answers: {_fmt(self.statuses)}",
            f"  final log: master {self.log_length} entries, waited {self.converge_seconds:.1f}s for the rest; {self.samples} prefix samples",
            f"  invariant violations: {len(self.violations)} {_fmt(Counter(v[1 : v.index(']')] for v in self.violations))}",
        ]
        shown: Counter[str] = Counter()
        for v in self.violations:
            kind = v[1 : v.index("]")]
            shown[kind] += 1
            if shown[kind] <= 8:
                lines.append(f"    {v}")
        if sum(shown.values()) > sum(min(n, 8) for n in shown.values()):
            lines.append(f"    ... ({sum(shown.values()) - sum(min(n, 8) for n in shown.values())} more not shown)")
        if not self.ok:
            lines.append(f"  reproduce: {c.command()}")
            if self.workdir:
                lines.append(f"  node logs kept in {self.workdir}")
            lines.append("  nemesis timeline:")
            lines += [f"    {t}" for t in self.timeline[-60:]]
        return "\n".join(lines)


def _fmt(counter: Counter[str]) -> str:
    return "(" + ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) + ")" if counter else "()"


def run(config: RunConfig, *, progress: Callable[[str], None] = lambda _: None) -> RunResult:
    """One run; every thread and process it starts is stopped before it returns."""
    wall = time.monotonic()
    result = RunResult(config)
    workdir = Path(tempfile.mkdtemp(prefix=f"replog-chaos-{config.seed}-"))
    if config.failover:
        return _finish(config, result, _failover(config, result, workdir, progress), workdir, wall)
    n = config.secondaries
    cluster = LocalCluster(
        n,
        delays=[config.delay] * n,
        fail_rates=[config.fail_rate] * n,
        secondary_args=["--seed", str(config.seed)] if config.fail_rate else [],
        data_dirs=config.data_dirs,
        workdir=workdir,
    )
    proxied = config.proxy and not config.two_masters
    proxy = Proxy(cluster.secondaries[0].port, seed=config.seed).start() if proxied else None
    if proxy is not None:
        cluster.route_secondary(0, proxy.url)
    history = History(time.monotonic())
    extra: list[Node] = []  # nodes the run starts besides the cluster's (the second master)
    try:
        cluster.start(timeout=30)
        cluster.wait_healthy(30)
        progress(f"cluster up in {workdir}; running {config.duration:g}s: {config.command()}")
        if config.two_masters:
            _two_masters(config, cluster, extra, history, result)
        else:
            _exercise(config, cluster, proxy, history, result)
        named = zip(cluster.nodes, ["master", *(f"s{i + 1}" for i in range(n))], strict=False)
        for node, name in [*named, *((m, "m2") for m in extra)]:
            _scan_log(history, node.events(), name, allowed=TWO_MASTER_EVENTS if config.two_masters else LATE_EVENTS)
    except ClusterError as exc:
        history.violation("cluster", str(exc), f"the cluster failed: {exc}")
    finally:
        for node in extra:
            node.stop()
        cluster.stop()
        if proxy is not None:
            proxy.close()
    result.violations = history.violations
    result.samples = history.samples
    result.wall = time.monotonic() - wall
    if result.ok and not config.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result.workdir = str(workdir)
    return result


def _failover(config: RunConfig, result: RunResult, workdir: Path, progress: Callable[[str], None]) -> History:
    from .failover import run_failover  # (imports the failover tools only for such a run)

    history = History(time.monotonic())
    run_failover(config, result, history, workdir, progress)
    return history


def _finish(config: RunConfig, result: RunResult, history: History, workdir: Path, wall: float) -> RunResult:
    result.violations = history.violations
    result.samples = history.samples
    result.wall = time.monotonic() - wall
    if result.ok and not config.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result.workdir = str(workdir)
    return result


def _exercise(
    config: RunConfig, cluster: LocalCluster, proxy: Proxy | None, history: History, result: RunResult
) -> None:
    n = config.secondaries
    faults = schedule(
        config.seed,
        config.duration,
        secondaries=n,
        data_dirs=config.data_dirs,
        proxied=0 if proxy else None,
        overlap=config.overlap,
    )
    nemesis = Nemesis(cluster, proxy, faults, proxied=0 if proxy else None, on_loss=history.lost)
    workload = Workload(
        cluster.master.url, nodes=n + 1, seed=config.seed, writers=config.writers, tag=f"r{config.seed}"
    )
    samplers = [Sampler(cluster, history, i, lambda: nemesis.master_epoch) for i in range(n)]
    t0 = time.monotonic()
    history.t0 = t0
    workload.start()
    for s in samplers:
        s.start()
    nemesis.start(t0)
    try:
        time.sleep(max(0.0, t0 + config.duration - time.monotonic()))
    finally:
        nemesis.stop()  # every fault healed, every node running
        workload.stop()
        for s in samplers:
            s.stop()
    for error in nemesis.errors:
        history.violation("restart", error, error)
    converged, finals, waited = converge(cluster, config.converge_timeout)
    series = [s.secondary.series for s in samplers]
    majority = (n + 1) // 2 + 1

    def may_lose(op: Op, answer: Attempt) -> bool:
        # SPEC: a master that lost its log keeps the writes acknowledged with w >= a majority; a smaller w,
        # or a 504, only if a secondary holding it answered at the restart. (A request sent before the kill
        # was answered by the old process, if at all.) A majority write is gone too if each of its w - 1
        # secondaries may have lost its log as well, after it took the write and before the new master
        # recovered: with logs in memory no protocol keeps what no node holds any more.
        for killed, restarted in nemesis.master_losses:
            if answer.started > killed:
                continue
            if answer.status == 504 or op.w_nodes < majority:
                return True
            end = restarted + LOSS_MARGIN
            gone = {i for i, windows in nemesis.losses.items() for k, _ in windows if answer.started <= k <= end}
            if len(gone) >= op.w_nodes - 1:
                return True
        return False

    check_final(
        history,
        workload.ops,
        finals,
        converged=converged,
        waited=waited,
        series=series,
        losses=nemesis.losses,
        may_lose=may_lose,
    )
    result.faults = nemesis.injected
    result.skipped_faults = sum(nemesis.skipped.values())
    result.timeline = nemesis.timeline
    result.converge_seconds = waited
    result.log_length = len(finals["master"])
    _count(result, workload.ops)


def _count(result: RunResult, ops: list[Op]) -> None:
    for op in ops:
        result.outcomes[op.outcome] += 1
        result.messages[op.outcome] += len(op.texts)
        for a in op.attempts:
            result.statuses[str(a.status) if a.status is not None else "no answer"] += 1


# A secondary refusing a dead master's late request for its epoch (SPEC, "Epochs and fencing") does its job.
LATE_EVENTS = frozenset({"stale_epoch"})
# A deposed master says so, and nodes refuse its requests: expected when two masters meet.
TWO_MASTER_EVENTS = LATE_EVENTS | {"deposed", "not_master"}


def _two_masters(
    config: RunConfig, cluster: LocalCluster, extra: list[Node], history: History, result: RunResult
) -> None:
    """A second in-memory master over the same secondaries while the first runs, writers on both.

    It must hold: the later master fences the first (SPEC, "Epochs and fencing"), so no seq shows two
    entries on the secondaries or the second master, at any sample; every write either master
    acknowledged with w >= a majority is in the final log at its seq; the second master's writes meet
    every single-master rule. The first master's own list is checked only against itself: entries
    only it held when it was deposed (w below a majority) may be contradicted.
    """
    n = config.secondaries
    majority = (n + 1) // 2 + 1
    first = cluster.master
    second = Node("master", free_port(), list(first.args), cluster.workdir / "m2.log")
    extra.append(second)
    writers = max(1, config.writers // 2)
    # A write stuck between two masters is given up after a few seconds (an unknown outcome), to keep the run short.
    w1 = Workload(first.url, nodes=n + 1, seed=config.seed, writers=writers, tag=f"r{config.seed}a", max_wait=4.0)
    w2 = Workload(
        second.url, nodes=n + 1, seed=config.seed + 100_000, writers=writers, tag=f"r{config.seed}b", max_wait=4.0
    )
    alone = History(history.t0)  # the first master's list, checked against itself only
    cursors = [
        Cursor(first, "m1", alone),
        Cursor(second, "m2", history),
        *(Cursor(s, f"s{i + 1}", history) for i, s in enumerate(cluster.secondaries)),
    ]
    watcher = Watcher(cursors)
    t0 = time.monotonic()
    history.t0 = alone.t0 = t0

    def note(what: str) -> None:
        result.timeline.append(f"t={time.monotonic() - t0:7.2f} {what}")

    w1.start()
    watcher.start()
    try:
        time.sleep(max(1.0, config.duration / 4))
        note(f"second master starting on port {second.port} (first on {first.port})")
        second.start(timeout=30)
        note("second master listening")
        result.faults["second_master"] += 1
        w2.start()
        time.sleep(max(0.0, t0 + config.duration - time.monotonic()))
    finally:
        w1.stop()
        w2.stop()
        note("writers stopped")
    converged, finals, waited = converge(cluster, config.converge_timeout, master=second, master_name="m2")
    watcher.stop()
    note(f"{'converged' if converged else 'not converged'} after {waited:.1f}s")
    try:
        alone.observe("m1", first.messages(timeout=30.0), 0, label="m1(final)")
    except (OSError, ClusterError):
        pass
    first_ops = {op.op_id for op in w1.ops}

    def may_lose(op: Op, answer: Attempt) -> bool:
        return op.op_id in first_ops and (answer.status == 504 or op.w_nodes < majority)

    series = [c.series for c in cursors[2:]]
    check_final(
        history,
        [*w1.ops, *w2.ops],
        finals,
        converged=converged,
        waited=waited,
        series=series,
        may_lose=may_lose,
        reference="m2",
    )
    history.violations += alone.violations  # (they name m1)
    history.samples = watcher.reads
    result.converge_seconds = waited
    result.log_length = len(finals["m2"])
    _count(result, [*w1.ops, *w2.ops])


def _scan_log(history: History, events: list[dict], name: str, allowed: frozenset[str] = frozenset()) -> None:
    for e in events:
        if e.get("event") in allowed:
            continue
        if e.get("event") in BAD_EVENTS or e.get("level") in ("error", "critical"):
            detail = {k: v for k, v in e.items() if k not in ("timestamp", "role", "port")}
            history.violation("node-error", (name, e.get("event")), f"{name} logged {detail}")


# -- the command -----------------------------------------------------------------------


def soak_configs(base: RunConfig) -> Iterator[RunConfig]:
    """Rotating shapes for a soak: in memory and on disk, 2 and 3 secondaries, flaky ones, overlapping faults."""
    shapes = [
        {},
        {"data_dirs": True},
        {"secondaries": 3},
        {"data_dirs": True, "secondaries": 3, "overlap": True},
        {"fail_rate": 0.2, "delay": 0.05},
        {"data_dirs": True, "fail_rate": 0.1, "overlap": True},
    ]
    seed = base.seed
    while True:
        for shape in shapes:
            yield replace(base, seed=seed, **shape)
            seed += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.harness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the schedule and the writers (default: from the clock, printed)"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds of faults per run (default 15; 60 in a soak)"
    )
    parser.add_argument("--data-dir", action="store_true", help="every node on a data dir; the master is killed too")
    parser.add_argument("--secondaries", type=int, choices=(2, 3), default=2)
    parser.add_argument("--overlap", action="store_true", help="let faults coincide (more than one node down)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="every secondary's --fail-rate")
    parser.add_argument("--delay", type=float, default=0.0, help="every secondary's --delay")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--no-proxy", dest="proxy", action="store_false", help="no network faults")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' logs of a passing run")
    parser.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="MINUTES",
        help="run one run after another for this long, rotating shapes",
    )
    parser.add_argument(
        "--two-masters", action="store_true", help="no nemesis: start a second master over the same secondaries mid-run"
    )
    parser.add_argument(
        "--failover",
        action="store_true",
        help="a failover cluster (etcd + three replog nodes): master kills, pauses, etcd cuts",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000
    base = RunConfig(
        seed=seed,
        duration=args.duration if args.duration is not None else (60.0 if args.soak else 15.0),
        data_dirs=args.data_dir,
        secondaries=args.secondaries,
        overlap=args.overlap,
        fail_rate=args.fail_rate,
        delay=args.delay,
        writers=args.writers,
        proxy=args.proxy,
        keep=args.keep,
        two_masters=args.two_masters,
        failover=args.failover,
    )
    if args.soak is None:
        result = run(base, progress=print)
        print(result.summary(), flush=True)
        return 0 if result.ok else 1
    return _soak(base, args.soak * 60)


def _soak(base: RunConfig, seconds: float) -> int:
    start = time.monotonic()
    total = RunResult(base)
    failed: list[RunResult] = []
    runs = 0
    for config in soak_configs(base):
        if time.monotonic() - start + config.duration > seconds and runs:
            break
        result = run(config)
        runs += 1
        print(result.summary(), flush=True)
        total.faults.update(result.faults)
        total.outcomes.update(result.outcomes)
        total.messages.update(result.messages)
        total.statuses.update(result.statuses)
        total.samples += result.samples
        total.violations += result.violations
        if not result.ok:
            failed.append(result)
    print(
        f"\nsoak: {runs} runs in {(time.monotonic() - start) / 60:.1f} min, seeds {base.seed}..{base.seed + runs - 1}\n"
        f"  faults injected: {sum(total.faults.values())} {_fmt(total.faults)}\n"
        f"  writes: {sum(total.outcomes.values())} ops, {sum(total.messages.values())} messages; by outcome {_fmt(total.outcomes)}\n"
        f"  answers: {_fmt(total.statuses)}\n"
        f"  prefix samples: {total.samples}\n"
        f"  invariant violations: {len(total.violations)}",
        flush=True,
    )
    for result in failed:
        print(f"  FAILED seed {result.config.seed}: {result.config.command()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
