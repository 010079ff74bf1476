"""The invariant checker: samplers that watch the cluster during the run, and the checks after it.

Each violation is one readable string, "[invariant] what was seen". The invariants (SPEC "Guarantees"):

- prefix: a secondary's list, read just before the master's, is a prefix of it (sampled during the run);
- gap / shrink: a node shows seqs 1..n with no gap, and within one process its list never gets shorter;
- seq-conflict: no seq ever shows two different (id, text), on any node, at any sample, counting what a
  node showed before it restarted; the one exception is an entry every node that showed it has since lost
  (restarted without its log), as a master restarted in memory loses a write only it held (SPEC: one
  acknowledged with a smaller w survives only if a secondary holding it answers at the restart);
- duplicate: no message text (they are unique per write) appears at two seqs;
- converge: after healing, every node shows the same list within a deadline;
- lost: every write answered 2xx or 504 is on every node at the end, at the seq it was answered with;
- answers: the answers to one write (retries of an id) agree on its seqs; a 2xx has acks >= w;
- refused: a write every attempt of which got 503 was not appended;
- atomic: a batch is present entirely, at consecutive seqs in order, or not at all;
- order: a write acknowledged before another was sent has the lower seq;
- idempotency: an id is stored once;
- status: no answer other than 200, 201, 503, 504 (connection errors while the master dies are not answers).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from replog.tools.cluster import ClusterError, LocalCluster, Node, http_json

from .workload import ALLOWED_STATUSES, Attempt, Op, answered_entries

MayLose = Callable[[Op, Attempt], bool]  # whether this stored answer may be undone (its master lost its log since)


def _never(op: Op, attempt: Attempt) -> bool:
    return False


OVERLAP = 64  # entries re-read at each incremental sample, so a change just before the cursor is seen


Memory = tuple[str, int]  # (node, how many times it had lost its log when it showed an entry)


class History:
    """Every entry any node showed, ever: a seq has one entry, a text one seq. Collects violations.

    Per seq it keeps one entry: [id, text, "node@t" where first seen, the memories that showed it];
    so each sample costs a dict look-up and a compare per entry read, whatever the run's length.
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.by_seq: dict[int, list[Any]] = {}  # seq -> [id, text, where first seen, tuple of Memory]
        self.by_text: dict[str, int] = {}
        self.generations: dict[str, int] = {}  # node -> times it lost its log (restarted empty)
        self.violations: list[str] = []
        self.samples = 0  # prefix comparisons made
        self._reported: set[tuple[str, object]] = set()
        self._lock = threading.Lock()

    def lost(self, node: str) -> None:
        """node has just been killed and will come back without its log. Call it after the kill and
        before the restart: then a read sent earlier was answered by the old process or not at all."""
        with self._lock:
            self.generations[node] = self.generations.get(node, 0) + 1

    def generation(self, node: str) -> int:
        """How many times node lost its log so far: take it just before sending a read of node."""
        return self.generations.get(node, 0)

    def _gone(self, memory: Memory) -> bool:
        return memory[1] < self.generations.get(memory[0], 0)

    @staticmethod
    def _names(memories: tuple[Memory, ...]) -> str:
        return ", ".join(f"{node}#{gen}" if gen else node for node, gen in memories)

    def violation(self, invariant: str, key: object, text: str) -> None:
        """Record a violation once per (invariant, key), so that one bad seq does not flood the report."""
        with self._lock:
            if (invariant, key) in self._reported:
                return
            self._reported.add((invariant, key))
            self.violations.append(f"[{invariant}] {text}")

    def stamp(self, node: str) -> str:
        return f"{node}@t={time.monotonic() - self.t0:.2f}"

    def observe(
        self,
        node: str,
        entries: list[dict[str, Any]],
        since: int,
        *,
        generation: int | None = None,
        label: str | None = None,
    ) -> None:
        """Entries a node showed for `GET /messages?since=since`: gap-free from since+1, consistent with all seen.

        generation: node's generation when the read was sent (default: now); label names the read in reports.
        """
        where = self.stamp(label or node)
        memory: Memory = (node, self.generation(node) if generation is None else generation)
        expected = since + 1
        for e in entries:
            seq, id_, text = e["seq"], e["id"], e["text"]
            if seq != expected:
                self.violation("gap", (label or node, seq), f"{where} showed seq {seq} where seq {expected} was due")
                expected = seq
            expected += 1
            conflict = None
            duplicate = None
            with self._lock:
                seen = self.by_seq.get(seq)
                if seen is None:
                    self.by_seq[seq] = [id_, text, where, (memory,)]
                elif seen[0] == id_ and seen[1] == text:
                    if memory not in seen[3]:
                        seen[3] += (memory,)
                elif all(self._gone(m) for m in seen[3]):
                    # Every node that showed the old entry has lost its log since: nothing holds it any more.
                    if self.by_text.get(seen[1]) == seq:
                        del self.by_text[seen[1]]
                    self.by_seq[seq] = [id_, text, where, (memory,)]
                else:
                    conflict = (seen[0], seen[1], seen[2], self._names(seen[3]))
                other = self.by_text.setdefault(text, seq)
                if other != seq:
                    held = self.by_seq.get(other)
                    if held is not None and held[1] == text and not all(self._gone(m) for m in held[3]):
                        duplicate = (other, held[2])
                    else:
                        self.by_text[text] = seq  # its other seq holds it no more (lost with every copy)
            if conflict is not None:
                self.violation(
                    "seq-conflict",
                    seq,
                    f"seq {seq}: {where} shows {id_!r} {text!r}, "
                    f"but {conflict[2]} showed {conflict[0]!r} {conflict[1]!r} (held by {conflict[3]})",
                )
            if duplicate is not None:
                where_else = f"seq {duplicate[0]} on {duplicate[1]}"
                self.violation("duplicate", text, f"text {text!r} is at seq {seq} on {where} and at {where_else}")


def incarnation(health: dict[str, Any]) -> object:
    """The id a node's /health gives its process (a new one per start), whichever name it has."""
    return health.get("incarnation", health.get("boot"))


def _get(url: str, timeout: float) -> Any:
    status, body = http_json("GET", url, timeout=timeout)
    if status != 200:
        raise ClusterError(f"GET {url} answered {status}: {body}")
    return body


class Cursor:
    """Reads one node's list incrementally (`?since=`), re-reading all of it when the node restarted."""

    def __init__(self, node: Node, name: str, history: History, *, timeout: float = 2.0) -> None:
        self.node = node
        self.name = name
        self.history = history
        self.timeout = timeout
        self.length = 0  # entries the node showed at the last read
        self.incarnation: object = None  # the node's process, as far as we can tell
        self.series: list[tuple[float, int]] = []  # (clock time the read was sent, entries shown), one per read

    def read(self, incarnation: object, recheck: Callable[[], object]) -> int:
        """Read what is new, check it, return the node's length. OSError/ClusterError if it did not answer.

        incarnation names the node's process as seen just before; recheck() names it again, now.
        """
        since = max(0, self.length - OVERLAP) if incarnation == self.incarnation else 0
        sent = time.monotonic()
        generation = self.history.generation(self.name)
        body = _get(f"{self.node.url}/messages?since={since}", self.timeout)
        entries = body["messages"]
        if since > 0 and not entries:
            if recheck() == incarnation:
                # Shorter than before although the same process: it hid entries it had shown.
                self.history.violation(
                    "shrink",
                    (self.name, self.length),
                    f"{self.history.stamp(self.name)} showed {self.length} entries, later at most {since}",
                )
            sent = time.monotonic()
            generation = self.history.generation(self.name)
            body = _get(f"{self.node.url}/messages", self.timeout)
            entries, since = body["messages"], 0
        self.history.observe(self.name, entries, since, generation=generation)
        self.length = entries[-1]["seq"] if entries else since
        self.incarnation = incarnation
        self.series.append((sent, self.length))
        return self.length


class Sampler:
    """One thread per secondary: read the secondary, then the master, and compare, until stopped."""

    def __init__(
        self,
        cluster: LocalCluster,
        history: History,
        index: int,
        master_epoch: Callable[[], int],
        *,
        interval: float = 0.05,
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.index = index
        self.master_epoch = master_epoch  # odd while the nemesis restarts the master
        self.interval = interval
        self.secondary = Cursor(cluster.secondaries[index], f"s{index + 1}", history)
        self.master = Cursor(cluster.master, "master", history)
        self.skipped = 0  # samples abandoned because a node did not answer or the master restarted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-s{index + 1}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except (OSError, ClusterError, ValueError, KeyError, TypeError):
                self.skipped += 1

    def _boot(self) -> object:
        return incarnation(_get(self.secondary.node.url + "/health", 2.0))

    def sample(self) -> None:
        epoch = self.master_epoch()
        if epoch % 2:
            self.skipped += 1
            return
        before = _get(self.cluster.master.url + "/health", 2.0)
        boot = self._boot()
        s_len = self.secondary.read(boot, self._boot)
        if self._boot() != boot:
            self.secondary.incarnation = None  # restarted during the read: read it all next time
        m_len = self.master.read(epoch, self.master_epoch)
        after = _get(self.cluster.master.url + "/health", 2.0)
        if (
            any(h.get("recovering") or h.get("status") == "recovering" for h in (before, after))
            or self.master_epoch() != epoch
        ):
            # A master restarted on its data dir shows less than a secondary until it has recovered.
            self.master.incarnation = None
            self.skipped += 1
            return
        self.history.samples += 1
        if s_len > m_len:
            self.history.violation(
                "prefix",
                (self.secondary.name, s_len),
                f"{self.history.stamp(self.secondary.name)} showed {s_len} entries, the master just after only {m_len}",
            )


class Watcher:
    """One thread reading several nodes in turn, each through its own Cursor (and so its own History),
    until stopped: for runs whose nodes are not a master and its secondaries (two masters, say)."""

    def __init__(self, cursors: list[Cursor], *, interval: float = 0.05) -> None:
        self.cursors = cursors
        self.interval = interval
        self.reads = 0
        self.skipped = 0  # reads abandoned because the node did not answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for cursor in self.cursors:

                def now(node: Node = cursor.node) -> object:
                    return incarnation(_get(node.url + "/health", 2.0))

                try:
                    cursor.read(now(), now)
                    self.reads += 1
                except (OSError, ClusterError, ValueError, KeyError, TypeError):
                    self.skipped += 1


# -- after the run -----------------------------------------------------------------


def converge(
    cluster: LocalCluster, timeout: float, *, master: Node | None = None, master_name: str = "master"
) -> tuple[bool, dict[str, list[dict[str, Any]]], float]:
    """Wait until every secondary shows the master's list: (converged, each node's final list, seconds waited).

    master: the node whose list is the reference (default the cluster's), named master_name in the result.
    """
    start = time.monotonic()
    leader = master if master is not None else cluster.master
    nodes = {master_name: leader, **{f"s{i + 1}": s for i, s in enumerate(cluster.secondaries)}}

    def seqs_match() -> bool:
        try:
            m = leader.health(timeout=2.0)
            if m.get("status") != "ok" or any(s["status"] != "healthy" or s["lag"] for s in m["secondaries"]):
                return False
            return all(s.health(timeout=2.0).get("seq") == m["seq"] for s in cluster.secondaries)
        except (OSError, KeyError, TypeError, ValueError):
            return False

    while time.monotonic() - start < timeout:
        if seqs_match():
            lists = _read_all(nodes)
            if all(lst == lists[master_name] for lst in lists.values()):
                return True, lists, time.monotonic() - start
        time.sleep(0.1)
    return False, _read_all(nodes), time.monotonic() - start


def _read_all(nodes: dict[str, Node]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, node in nodes.items():
        try:
            out[name] = node.messages(timeout=30.0)
        except (OSError, ClusterError):
            out[name] = []
    return out


def check_final(
    history: History,
    ops: list[Op],
    finals: dict[str, list[dict[str, Any]]],
    *,
    converged: bool,
    waited: float,
    series: list[list[tuple[float, int]]] = (),  # type: ignore[assignment]
    losses: dict[int, list[tuple[float, float]]] | None = None,
    may_lose: MayLose = _never,
    reference: str = "master",
) -> None:
    """The checks after healing; violations go to history.

    series[i] is secondary i's samples (time sent, entries shown); losses[i] the (killed, restarted)
    times of its restarts that lost its log; with them the write concern of every 2xx is checked.
    may_lose(op, answer) says an answer may be undone: its entries are then either where it said or gone.
    finals[reference] is the final log every other list is compared with.
    """
    for name, entries in finals.items():
        history.observe(name, entries, 0, label=name + "(final)")
    master = finals[reference]
    if not converged:
        lengths = ", ".join(f"{name} {len(lst)}" for name, lst in finals.items())
        first_diff = _first_difference(finals, reference)
        history.violation(
            "converge", None, f"the nodes did not converge within {waited:.1f}s: lengths {lengths}{first_diff}"
        )
    at = {e["text"]: e["seq"] for e in master}
    ids = Counter(e["id"] for e in master)
    kept = {op.op_id: _kept_answers(op, at, may_lose) for op in ops}
    for op in ops:
        _check_op(history, op, kept[op.op_id], finals, at, ids)
    _check_order(history, ops, kept, at)
    if series:
        _check_write_concern(history, ops, kept, series, losses or {})


def _kept_answers(op: Op, at: dict[str, int], may_lose: MayLose) -> list[Attempt]:
    """The op's stored answers, less those that may be undone and were (not all their entries where they said)."""
    kept = []
    for a in op.stored_answers():
        try:
            in_place = all(at.get(text) == seq for seq, _, text in answered_entries(a.body))
        except (KeyError, TypeError):
            in_place = True  # malformed: _check_op reports it
        if in_place or not may_lose(op, a):
            kept.append(a)
    return kept


def _first_difference(finals: dict[str, list[dict[str, Any]]], reference: str = "master") -> str:
    master = finals[reference]
    for name, lst in finals.items():
        for a, b in zip(master, lst, strict=False):
            if a != b:
                return f"; first difference at seq {a['seq']}: {reference} {a} vs {name} {b}"
    return ""


def _check_op(
    history: History,
    op: Op,
    stored: list[Attempt],
    finals: dict[str, list[dict[str, Any]]],
    at: dict[str, int],
    ids: Counter[str],
) -> None:
    for a in op.attempts:
        if a.status is not None and a.status not in ALLOWED_STATUSES:
            history.violation("status", (op.op_id, a.status), f"{op.op_id} got HTTP {a.status}: {a.body}")
    answered: set[tuple[tuple[int, str, str], ...]] = set()
    for a in stored:
        try:
            entries = tuple(answered_entries(a.body))
        except (KeyError, TypeError):
            history.violation("answers", op.op_id, f"{op.op_id} got HTTP {a.status} without its seq: {a.body}")
            continue
        answered.add(entries)
        if [e[2] for e in entries] != op.texts:
            history.violation("answers", op.op_id, f"{op.op_id} was answered with other texts: {a.body}")
        if a.status == 200 and op.id is None:
            history.violation("answers", op.op_id, f"{op.op_id} has no id, yet got 200 (already stored)")
    if len(answered) > 1:
        history.violation(
            "answers", op.op_id, f"{op.op_id} (id {op.id}) was answered with different seqs: {sorted(answered)}"
        )
    for entries in answered:
        for seq, id_, text in entries:
            for name, lst in finals.items():
                held = lst[seq - 1] if 0 < seq <= len(lst) else None
                if held is None or (held["id"], held["text"]) != (id_, text):
                    history.violation(
                        "lost",
                        (op.op_id, name),
                        f"{op.op_id} ({op.outcome}, w={op.w}) was answered seq {seq} {text!r}, but {name} holds {held} there at the end",
                    )
    present = [at.get(t) for t in op.texts]
    if op.outcome == "refused" and any(p is not None for p in present):
        history.violation("refused", op.op_id, f"{op.op_id} got only 503s, yet is stored at seqs {present}")
    if any(p is not None for p in present):
        if None in present or present != list(range(present[0], present[0] + len(present))):  # type: ignore[operator]
            history.violation("atomic", op.op_id, f"{op.op_id} ({len(op.texts)} messages) is stored at seqs {present}")
    if op.id is not None:
        keys = [f"{op.id}:{i}" for i in range(len(op.texts))] if op.batch else [op.id]
        for key in keys:
            if ids[key] > 1:
                history.violation("idempotency", key, f"id {key!r} is stored {ids[key]} times")


def _check_order(history: History, ops: list[Op], kept: dict[str, list[Attempt]], at: dict[str, int]) -> None:
    """A write acknowledged (2xx or 504) before another write was first sent holds a lower seq."""
    acked: list[tuple[float, int, str]] = []  # (answer time, highest seq, op) of every write with a stored answer
    for op in ops:
        answers = kept[op.op_id]
        seqs = [at.get(t) for t in op.texts]
        if answers and None not in seqs:
            acked.append((min(a.ended for a in answers), max(seqs), op.op_id))  # type: ignore[type-var]
    acked.sort()
    ends = [a[0] for a in acked]
    best: list[tuple[int, str]] = []  # best[i]: highest seq among acked[0..i], and its op
    for _, seq, op_id in acked:
        best.append(max(best[-1], (seq, op_id)) if best else (seq, op_id))
    for op in ops:
        seqs = [at.get(t) for t in op.texts]
        if not op.attempts or None in seqs:
            continue
        i = bisect.bisect_left(ends, op.first_started) - 1
        if i >= 0 and best[i][0] >= min(seqs):  # type: ignore[type-var]
            history.violation(
                "order",
                op.op_id,
                f"{op.op_id} was sent after {best[i][1]} had been acknowledged at seq {best[i][0]}, yet is stored at seq {min(seqs)}",  # type: ignore[type-var]
            )


# A secondary that lost its log still looks like it holds everything to the master until a heartbeat
# reaches its new process: within a beat of its restart, plus this margin for a busy machine.
LOSS_MARGIN = 1.0


def _check_write_concern(
    history: History,
    ops: list[Op],
    kept: dict[str, list[Attempt]],
    series: list[list[tuple[float, int]]],
    losses: dict[int, list[tuple[float, float]]],
) -> None:
    """A 2xx with w=k at time T: at T, k-1 secondaries held the write (and all before it).

    A secondary's list only grows within a process, and one that held the write at T shows it at
    any later read, unless it lost its log in between. So if its first read sent after the answer
    lacks the write, it did not hold it at T. Fewer than k-1 secondaries left: the answer lied.
    """
    times = [[t for t, _ in s] for s in series]
    for op in ops:
        acked = [a for a in kept[op.op_id] if a.status in (200, 201)]
        if not acked:
            continue
        answer = min(acked, key=lambda a: a.ended)
        try:
            seq = max(e[0] for e in answered_entries(answer.body))
        except (KeyError, TypeError, ValueError):
            continue
        acks = answer.body.get("acks")
        if (
            isinstance(acks, int)
            and acks < op.w_nodes
            and not any(
                k <= answer.ended and op.first_started <= r + LOSS_MARGIN
                for windows in losses.values()
                for k, r in windows
            )
        ):
            # (A secondary that just lost its log may lower the count between the ack and the answer.)
            history.violation(
                "answers", op.op_id, f"{op.op_id} got HTTP {answer.status} with acks {acks} < w={op.w_nodes}"
            )
        lacking = []
        for i, samples in enumerate(series if op.w_nodes > 1 else ()):
            j = bisect.bisect_right(times[i], answer.ended)
            if j == len(samples):
                continue  # never read after the answer: cannot tell
            read_at, shown = samples[j]
            if any(k <= read_at and op.first_started <= r + LOSS_MARGIN for k, r in losses.get(i, ())):
                continue  # it lost its log meanwhile
            if shown < seq:
                lacking.append(f"s{i + 1} showed {shown} entries {read_at - answer.ended:.3f}s after the answer")
        if len(series) - len(lacking) < op.w_nodes - 1:
            history.violation(
                "write-concern",
                op.op_id,
                f"{op.op_id} got HTTP {answer.status} w={op.w} (acks {answer.body.get('acks')}) for seq {seq} "
                f"at t={answer.ended - history.t0:.2f}, but {'; '.join(lacking)}",
            )
