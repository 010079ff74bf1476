"""A deterministic model test of start-up recovery, epochs and fencing (issue 8, "Tests it must have").

Real Master and Secondary objects on one event loop with virtual time, talking through in-memory links
(see cluster.py). hypothesis's RuleBasedStateMachine takes random steps: writes and client batches with
random w and ids, retries, master crashes and restarts, a second master while the first runs, secondary
crashes, pauses, cut and slow links (out-of-order deliveries, lost and held answers), and late deliveries
of requests a master gave up on. test_recovery_and_epochs_in_memory runs every node in memory (a crash
loses the node's log and promises); test_recovery_and_epochs_with_data_dirs gives every node a data dir
(a crash keeps it or loses it; a master may restart on an older copy of its own). After every step:

1. a write acknowledged (2xx) with w >= majority is never lost: its own master and every master that
   recovers after it hold it at the same seq, with the same chain value; no two masters get
   conflicting writes acknowledged by a majority;
2. no two nodes that the current master (the last to recover) trusts hold different entries at one seq;
3. acks never exceed the nodes that held the entry, under a log epoch at least the master's, when the
   master answered;
4. a trusted secondary's log is a prefix of the current master's log. Trusted: not reported diverged
   by that master, not fenced against it; in memory with two secondaries nothing may diverge at all;
   otherwise a node left out of a promise majority may hold the tail of a lost w < majority write, so
   it is checked once it holds the current master's log epoch;
and no task dies, no secondary raises or answers 400, the master's id index equals the one its log
rebuilds, and once every fault heals (rule heal_and_converge) the newest master recovers, every
secondary catches up and every write that can be met is answered.

What the faults take is not the code's fault: a majority write that fewer secondaries hold than a
recovering master is sure to consult (they restarted empty) is no longer checked. A secondary restarted
empty forgets its promises, so a master it had fenced can win it back (SPEC "What this promises": the
window of static roles); the model keeps such requests from it (Cluster.window_guard), and
REPLOG_MODEL_WINDOW=1 lets them through to show what that window costs.

REPLOG_MODEL_EXAMPLES sets the examples per test (default 150 in memory, 100 with data dirs: about 25 s
together on two cores), REPLOG_MODEL_STEPS the steps per example (default 40). `pytest -s` prints how many examples reached each notable state.
"""

from __future__ import annotations

import asyncio
import collections
import os
from dataclasses import dataclass
from typing import Any

import hypothesis
import pytest
import structlog
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from replog import errors
from replog.ids import IdIndex
from replog.log import BATCH_MORE, Log
from replog.progress import Status
from replog.protocol import WriteRequest
from replog.secondary import Secondary

try:
    from tests.model.cluster import Cluster, MasterProc
except ImportError:  # pytest put tests/ rather than the repository root on sys.path
    from model.cluster import Cluster, MasterProc  # type: ignore[no-redef]

EXAMPLES = os.environ.get("REPLOG_MODEL_EXAMPLES")  # examples per test; default 150 in memory, 100 with data dirs
STEPS = int(os.environ.get("REPLOG_MODEL_STEPS", "40"))
WINDOW = os.environ.get("REPLOG_MODEL_WINDOW", "") not in ("", "0")

KEYS = ["a", "b", "c", "d"]
PICK = st.integers(0, 1 << 16)  # an index into whatever list the step picks from (shrinks towards the first)


@dataclass(frozen=True)
class Ack:
    """A 2xx answer as the client saw it, with the answering master's epoch and log at that moment."""

    event: int  # Cluster.events when it was answered
    master: int  # index of the master process
    epoch: int
    seq: int  # the last seq of the write (a batch's last entry)
    hash: bytes  # the master's chain value at seq: the whole log up to seq
    w: int
    acks: int
    key: str | None


def holds(s: Secondary, seq: int, h: bytes, epoch: int) -> bool:
    """s holds seq durably, agreeing with chain value h, under a log epoch of at least epoch."""
    return s.durable >= seq and s.log.hash(seq) == h and s.log_epoch >= epoch


def texts(log: Log) -> list[str]:
    """The texts of a log, for messages."""
    return [log.text(seq) for seq in range(1, log.last_seq + 1)]


def is_prefix(short: Any, long: Any) -> bool:
    """The log short is a prefix of the log long (chain values say so for the whole prefix)."""
    n = short.last_seq
    return n <= long.last_seq and short.hash(n) == long.hash(n)


class RecoveryModel(RuleBasedStateMachine):
    """Writes, crashes, pauses, partitions and late deliveries over real masters and secondaries."""

    DISKS = False  # every node keeps its log in a data dir (DiskRecoveryModel)

    def __init__(self) -> None:
        super().__init__()
        self.cluster: Cluster | None = None
        self.acks: list[Ack] = []
        self.voters: dict[int, dict[int | str, int]] = {}  # each recovered master's promise majority
        self.regressed = False  # an epoch went back after nodes forgot their promises (see _recovered)
        self.destroyed: set[Ack] = set()  # acks the faults took out of a recovery's reach (see _recovered)
        self.sent: list[WriteRequest] = []  # every write sent, for retries
        self.texts = 0
        self.w_of: dict[asyncio.Task[Any], int] = {}  # each write's w
        self.violations: list[str] = []
        self.outcomes: collections.Counter[str] = collections.Counter()

    # -- set-up ----------------------------------------------------------------------------

    @initialize(
        secondaries=st.sampled_from([2, 2, 4]),
        batch_max_count=st.sampled_from([1, 2, 100]),
        window=st.sampled_from([1, 2, 4]),
        late_secondary=st.sampled_from([False, False, False, True]),
        new_cluster=st.booleans(),
    )
    def boot(
        self, secondaries: int, batch_max_count: int, window: int, late_secondary: bool, new_cluster: bool = False
    ) -> None:
        """A new cluster; with late_secondary, s1 is down (paused) when the first master starts, maybe
        with --new-cluster (it then counts its own vote: the cluster has no history yet)."""
        self.cluster = Cluster(secondaries, batch_max_count=batch_max_count, window=window, disks=self.DISKS)
        # In memory with two secondaries, a master needs both promises: no secondary may ever diverge.
        # A master on its own log counts its vote, and with more secondaries one may be left out: a node
        # left out can hold the tail of a lost w < majority write, and is shown diverged.
        self.strict = secondaries == 2 and not self.DISKS
        self.cluster.window_open = WINDOW
        self.cluster.nodes[0].paused = late_secondary
        self.cluster.on_recovered.append(self._recovered)
        self.cluster.start_master(new_cluster=new_cluster)

    def teardown(self) -> None:
        if self.cluster is None:
            return
        # What the example reached, for --hypothesis-show-statistics: is the model exploring anything?
        c = self.cluster
        note(f"masters started: {len(c.masters)}")
        note(f"w >= majority acks: {min(5, sum(a.w >= self.majority for a in self.acks))}+")
        for name in ("late_delivered", "window_blocked"):
            if getattr(c, name):
                note(name)
        for code in self.outcomes:
            note(f"write answered {code}")
        if self.destroyed:
            note("a majority ack lost to secondary restarts")
        if self.regressed:
            note("an epoch went back after secondaries forgot their promises")
        for name in NOTABLE:
            if LOGGED[name]:
                note(f"logged {name}")
        LOGGED.clear()
        c.close()

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    @property
    def nodes(self) -> int:
        return self.c.config.nodes

    @property
    def majority(self) -> int:
        return self.c.config.majority

    def live(self) -> list[MasterProc]:
        return [p for p in self.c.masters if p.alive]

    def current(self) -> MasterProc | None:
        """The master that recovered last: the log everything must agree with.

        It also holds the highest epoch, unless every node that promised a higher one restarted empty
        since (nothing remembers it, and epochs can go back)."""
        done = [p for p in self.c.masters if p.recovered_at is not None]
        return max(done, key=lambda p: p.recovered_at or 0, default=None)

    # -- processes -------------------------------------------------------------------------

    @precondition(lambda self: len(self.live()) < 2 and len(self.c.masters) < 6)
    @rule(on_disk=st.booleans(), old_copy=st.booleans())
    def start_master(self, on_disk: bool, old_copy: bool) -> None:
        """A new master process (a new id) on the same secondaries; the old one may run on. With disks,
        on the master's data dir if no live master holds it (on_disk), maybe restored from an older copy."""
        self.c.start_master(on_disk=on_disk, old_copy=old_copy)

    @precondition(lambda self: self.live())
    @rule(pick=PICK, lose_disk=st.booleans())
    def crash_master(self, pick: int, lose_disk: bool) -> None:
        live = self.live()
        self.c.crash_master(live[pick % len(live)], lose_disk=lose_disk)

    @rule(pick=PICK, lose_disk=st.booleans())
    def crash_secondary(self, pick: int, lose_disk: bool) -> None:
        """SIGKILL and restart: on its data dir, or empty (in memory, or having lost its disk)."""
        self.c.crash_secondary(pick % len(self.c.nodes), lose_disk=lose_disk or not self.DISKS)

    @precondition(lambda self: self.DISKS)
    @rule()
    def keep_master_copy(self) -> None:
        """An operator copies the master's data dir (start_master(old_copy=True) restores it, by mistake)."""
        self.c.keep_master_copy()

    @rule(pick=PICK)
    def toggle_pause(self, pick: int) -> None:
        """SIGSTOP / SIGCONT: a paused secondary answers nothing; what was sent to it may arrive late."""
        node = self.c.nodes[pick % len(self.c.nodes)]
        node.paused = not node.paused
        self.c.run()

    @precondition(lambda self: self.live())
    @rule(pick=PICK, slot=PICK, mode=st.sampled_from(["up", "cut", "slow"]))
    def set_link(self, pick: int, slot: int, mode: str) -> None:
        live = self.live()
        link = live[pick % len(live)].links[slot % len(self.c.nodes)]
        link.mode = mode
        if mode == "up":
            while link.queue:
                self.c.run(self.c.deliver(link.queue.pop(0)))
        self.c.run()

    @rule(n=st.integers(1, 6))
    def tick(self, n: int) -> None:
        """Virtual time passes: heartbeats, backoffs and recovery rounds run."""
        for _ in range(n):
            self.c.tick()

    # -- the wire --------------------------------------------------------------------------

    def _queued(self) -> list[tuple[Any, Any]]:
        return [
            (link, req)
            for p in self.live()
            for link in p.links
            if link.mode != "cut" and not self.c.nodes[link.slot].paused
            for req in link.queue
        ]

    @precondition(lambda self: self._queued())
    @rule(pick=PICK, answer=st.sampled_from(["now", "lost", "held"]))
    def deliver(self, pick: int, answer: str) -> None:
        """A slow link delivers one of its queued requests (any of them: out of order); its answer comes
        back now, is lost, or is held on the wire."""
        queued = self._queued()
        link, req = queued[pick % len(queued)]
        link.queue.remove(req)
        self.c.run(self.c.deliver(req, answer=answer))

    @precondition(lambda self: self.c.answers)
    @rule(pick=PICK)
    def release_answer(self, pick: int) -> None:
        self.c.release_answer(pick % len(self.c.answers))

    @precondition(lambda self: self.c.late)
    @rule(pick=PICK)
    def deliver_late(self, pick: int) -> None:
        """A request its master gave up on (or sent before it died) reaches the secondary now."""
        req = self.c.late.pop(pick % len(self.c.late))
        self.c.run(self.c.deliver_late(req))

    # -- clients ---------------------------------------------------------------------------

    @precondition(lambda self: self.live())
    @rule(
        pick=PICK,
        w=st.integers(1, 5),
        key=st.none() | st.sampled_from(KEYS),
        count=st.integers(1, 3),
        batch=st.booleans(),
    )
    def write(self, pick: int, w: int, key: str | None, count: int, batch: bool) -> None:
        texts = []
        for _ in range(count if batch else 1):
            self.texts += 1
            texts.append(f"t{self.texts}")
        req = WriteRequest(tuple(texts), batch, min(w, self.nodes), key, None)
        self.sent.append(req)
        live = self.live()
        self._send(live[pick % len(live)], req)

    @precondition(lambda self: self.live())
    @rule(
        pick=PICK,
        w=st.integers(1, 5),
        key=st.none() | st.sampled_from(KEYS),
        count=st.integers(1, 3),
        batch=st.booleans(),
    )
    def write_more(self, pick: int, w: int, key: str | None, count: int, batch: bool) -> None:
        """The same as write: a second rule, so that about one step in five is a write."""
        self.write(pick, w, key, count, batch)

    @precondition(lambda self: self.live() and self.sent)
    @rule(pick=PICK, which=PICK)
    def retry(self, pick: int, which: int) -> None:
        """A client retries an earlier write, with the same id and texts, at any live master."""
        live = self.live()
        self._send(live[pick % len(live)], self.sent[-1 - which % len(self.sent)])

    def _send(self, proc: MasterProc, req: WriteRequest) -> None:
        task = self.c.loop.create_task(self._client(proc, req))
        proc.writes.append(task)
        self.w_of[task] = req.w
        self.c.run()

    async def _client(self, proc: MasterProc, req: WriteRequest) -> None:
        master = proc.master
        try:
            result = await master.write(req)
        except errors.Refusal as exc:
            self.outcomes[exc.code] += 1
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.c.unexpected.append(f"master {proc.index + 1}: write {req} raised {exc!r}")
            return
        # The answer is being made right now (no await since write() returned): check it against the nodes.
        self.outcomes["created" if result.created else "found"] += 1
        body = result.body
        seqs = [e["seq"] for e in body["entries"]] if req.batch else [body["seq"]]
        last, acks, epoch = seqs[-1], body["acks"], master.epoch
        where = f"master {proc.index + 1} (epoch {epoch}) answered {req} with {body}"
        if acks < req.w:
            # w was met when the waiter was released; a recount before the answer (a secondary seen to
            # have restarted empty, say) can lower acks. The body then says so; it is not a false ack.
            self.outcomes["acks_below_w"] += 1
        log = master.log
        if last > log.last_seq or [log.text(s) for s in seqs] != list(req.texts):
            self.violations.append(f"{where}: its log does not hold those texts at those seqs")
            return
        h = log.hash(last)
        held = 1 if master.durable >= last else 0  # the master itself, once its copy is durable
        for r, node in zip(master.replicators, self.c.nodes, strict=True):
            # The process now in that place, or the one the master last heard from (it may have died since).
            candidates = {id(s): s for s in (node.secondary, node.by_incarnation(r.progress.incarnation)) if s}
            if any(holds(s, last, h, epoch) for s in candidates.values()):
                held += 1
        if acks > held:
            self.violations.append(f"{where}: acks {acks}, but only {held} nodes held seq {last} under epoch {epoch}")
        if req.id is not None and req.w >= self.majority:
            for ack in self.acks:
                # A retry finds the very entry a majority acknowledged under its id, while that entry lives.
                if ack.key == req.id and ack.w >= self.majority and ack not in self.destroyed and ack.seq != last:
                    self.violations.append(f"{where}: the id {req.id!r} was acknowledged at seq {ack.seq} before")
        self.acks.append(Ack(next(self.c.events), proc.index, epoch, last, h, req.w, acks, req.id))

    # -- liveness ----------------------------------------------------------------------------

    @precondition(lambda self: self.live())
    @rule()
    def heal_and_converge(self) -> None:
        """Every fault heals: the newest live master must recover and bring every secondary up to date."""
        c = self.c
        for node in c.nodes:
            node.paused = False
        for p in self.live():
            for link in p.links:
                link.mode = "up"
        for p in self.live():
            for link in p.links:
                while link.queue:
                    c.run(c.deliver(link.queue.pop(0)))
        while c.answers:
            c.release_answer(0)
        for _ in range(40):
            c.tick()
        newest = self.live()[-1]
        m = newest.master
        name = f"master {newest.index + 1}"
        if newest.index in c.guarded:
            return  # the model keeps it from a node that forgot it had promised a newer master: no liveness
        if newest.recovered_at is None:
            self.violations.append(f"{name} did not recover with every node reachable ({m.health()})")
            return
        if m.deposed:
            return  # a later master (now dead) fenced it: with static roles an operator restarts one
        if any(p.master.epoch > m.epoch and not p.master.deposed for p in self.live()):
            return  # every node that knew of a higher epoch restarted empty: the older master is in charge
        able = 1  # nodes that can hold new writes: the master and every secondary not diverged
        for r in m.replicators:
            p = r.progress
            if p.status is Status.DIVERGED and not self.strict:
                continue
            able += 1
            if p.status is not Status.HEALTHY or p.match != m.log.last_seq:
                self.violations.append(
                    f"{name}: {r.url} is {p.status} at seq {p.match} of {m.log.last_seq} after healing"
                )
        if not all(t.done() for t in newest.writes if self.w_of[t] <= able):
            self.violations.append(f"{name}: writes still wait after every node caught up ({m.commitment.matches})")

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def nothing_unexpected(self) -> None:
        assert not self.c.unexpected, "\n".join(self.c.unexpected)
        assert not self.violations, "\n".join(self.violations)

    def _recovered(self, proc: MasterProc) -> None:
        """A master just recovered. In memory a secondary restarted empty loses its copy; a master without a
        log needs a majority of all nodes among the secondaries, so it is sure to meet a copy of a write
        only while (N - 1) - majority + 1 secondaries hold it. A write held by fewer when a master recovers
        is out of that master's reach by the faults' doing, not the code's: it is no longer checked."""
        need = self.nodes - 1 - self.majority + 1
        for ack in self.acks:
            if ack.w >= self.majority and ack not in self.destroyed:
                held = sum(1 for n in self.c.nodes if holds(n.secondary, ack.seq, ack.hash, 0))
                if held < need:
                    self.destroyed.add(ack)
        # Which places promised it, and how often each had lost its memory by then ("m": the master's data dir).
        m = proc.master
        voters = {int(url[1:]) - 1: self.c.nodes[int(url[1:]) - 1].amnesia for url in m.consulted}
        if proc.data_dir is not None and LAST_RECOVERED.get("counted_itself"):
            voters["m"] = self.c.master_amnesia
        self.voters[proc.index] = voters
        for p in self.c.masters:
            if p is proc or p.recovered_at is None or p.master.epoch < m.epoch:
                continue
            # An epoch that goes back: every place that promised both masters must have forgotten the
            # first one's promise (restarted empty). Then rank by (log epoch, seq) means nothing any more,
            # and a majority write can be lost by the faults' doing: (1) is no longer checked.
            # (A "majority" smaller than a majority is no such case: it is the code's doing.)
            shared = voters.keys() & self.voters[p.index].keys()
            if len(voters) >= self.majority and shared and all(voters[v] > self.voters[p.index][v] for v in shared):
                self.regressed = True

    @invariant()
    def majority_writes_never_lost(self) -> None:
        """(1) A w >= majority ack is held by its own master and by every master that recovers after it; and
        no two masters get conflicting writes acknowledged by a majority."""
        if self.regressed:
            return
        majority = [a for a in self.acks if a.w >= self.majority]
        for ack in majority:
            if ack in self.destroyed:
                continue
            for other in majority:
                # other's master held its log as it was when it answered (a recovered log only grows)
                log = self.c.masters[other.master].master.log
                if other.seq >= ack.seq and other.event > ack.event and log.hash(ack.seq) != ack.hash:
                    raise AssertionError(
                        f"two masters got conflicting writes acknowledged by a majority: {ack}, {other}"
                    )
            for p in self.c.masters:
                if p.recovered_at is None or not (p.index == ack.master or p.recovered_at > ack.event):
                    continue
                log = p.master.log
                assert log.last_seq >= ack.seq and log.hash(ack.seq) == ack.hash, (
                    f"{ack} is lost: master {p.index + 1} (epoch {p.master.epoch}, recovered at event "
                    f"{p.recovered_at}) holds {log.last_seq} entries, another chain at seq {ack.seq}"
                )

    def _trusted(self, cur: MasterProc) -> list[tuple[int, Secondary]]:
        """The secondaries that must agree with the current master (see the module docstring, 2 and 4)."""
        m = cur.master
        out = []
        for r, node in zip(m.replicators, self.c.nodes, strict=True):
            s = node.secondary
            if s.promised > m.epoch or (s.promised == m.epoch and s.promised_to != m.id):
                # It refuses this master (it promised another, after every node that knew of that
                # master's higher epoch restarted empty): nothing of this master reaches it.
                continue
            if r.progress.status is Status.DIVERGED and r.progress.incarnation == s.incarnation:
                assert not self.strict, f"{r.url} diverged from master {cur.index + 1} in a 3-node cluster in memory"
                continue
            if not self.strict and s.log_epoch < m.epoch:
                continue  # maybe left out of the promise majority, holding a lost w < majority tail
            out.append((node.slot, s))
        return out

    @invariant()
    def one_entry_per_seq(self) -> None:
        """(2) The current master and the secondaries it trusts never hold different entries at one seq."""
        cur = self.current()
        if cur is None:
            return
        logs = [("master", cur.master.log)] + [(f"s{slot + 1}", s.log) for slot, s in self._trusted(cur)]
        for i, (a, la) in enumerate(logs):
            for b, lb in logs[i + 1 :]:
                n = min(la.last_seq, lb.last_seq)
                assert la.hash(n) == lb.hash(n), (
                    f"{a} and {b} hold different entries at or before seq {n}: {texts(la)} vs {texts(lb)}"
                )

    @invariant()
    def secondaries_are_prefixes(self) -> None:
        """(4) A trusted secondary's log is a prefix of the current master's."""
        cur = self.current()
        if cur is None:
            return
        log = cur.master.log
        for slot, s in self._trusted(cur):
            assert is_prefix(s.log, log), (
                f"s{slot + 1} (log epoch {s.log_epoch}) holds {texts(s.log)}, "
                f"not a prefix of master {cur.index + 1}'s (epoch {cur.master.epoch}) "
                f"{texts(log)}"
            )

    @invariant()
    def whole_client_batches(self) -> None:
        """A client batch is whole or absent: no recovered master's log, and no secondary's, ends inside one."""
        logs = [(f"master {p.index + 1}", p.master.log) for p in self.live() if p.recovered_at is not None]
        logs += [(f"s{n.slot + 1}", n.secondary.log) for n in self.c.nodes]
        for name, log in logs:
            assert not (log.last_seq and log.flags(log.last_seq) & BATCH_MORE), f"{name} ends inside a client batch"

    @invariant()
    def id_index_matches_log(self) -> None:
        for p in self.live():
            m = p.master
            rebuilt = IdIndex.of((seq, m.log.raw_id(seq), m.log.flags(seq)) for seq in range(1, m.log.last_seq + 1))
            assert m.ids == rebuilt, f"master {p.index + 1}: its id index differs from the one its log rebuilds"


LOGGED: collections.Counter[str] = collections.Counter()  # events the nodes logged in the current example
STATS: collections.Counter[str] = collections.Counter()  # examples that reached each notable state
LAST_RECOVERED: dict[str, Any] = {}  # the last "recovered" event a master logged


def note(what: str) -> None:
    """Count an example that reached what (printed after the run, shown by pytest -s or on failure)."""
    STATS[what] += 1
    if currently_in_test_context():  # not when a found sequence is replayed by hand (test_found.py)
        hypothesis.event(what)


NOTABLE = ("rolled_back", "deposed", "secondary_diverged", "foreign_entries_dropped", "recovering_entries", "task_died")


@pytest.fixture
def quiet_logs() -> Any:
    """structlog counts every event's name and drops it (a run logs thousands); the old configuration comes
    back after."""
    old = structlog.get_config()

    def drop(_logger: Any, _name: str, event: dict[str, Any]) -> Any:
        LOGGED[event.get("event", "")] += 1
        if event.get("event") == "recovered":
            LAST_RECOVERED.clear()
            LAST_RECOVERED.update(event)
        raise structlog.DropEvent

    structlog.configure(processors=[drop], cache_logger_on_first_use=False)
    yield
    structlog.configure(**old)


class DiskRecoveryModel(RecoveryModel):
    """The same with a data dir on every node: crashes keep it or lose it, a master may restart on an older copy."""

    DISKS = True


def run_model(machine: type[RecoveryModel], examples: int) -> None:
    STATS.clear()
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(EXAMPLES) if EXAMPLES else examples,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print("examples reaching:", dict(sorted(STATS.items())))


@pytest.mark.timeout(900)  # a failure's shrinking can take minutes; a passing default run takes far less
def test_recovery_and_epochs_in_memory(quiet_logs: Any) -> None:
    run_model(RecoveryModel, 150)


@pytest.mark.timeout(900)
def test_recovery_and_epochs_with_data_dirs(quiet_logs: Any) -> None:
    run_model(DiskRecoveryModel, 100)
