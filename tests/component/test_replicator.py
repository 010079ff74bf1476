"""Component tests of the per-secondary Replicator against a scripted fake secondary.

No real waiting: backoff delays are recorded by the injected sleep, the clock stands still,
and the heartbeat loop runs one round each time a test calls `beat()`. Waits are for
conditions, with deadlines. The fake secondary is a real in-memory Secondary behind a scripted
transport, so its answers carry the real status fields (incarnation, promise, log epoch, seq, hash).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from fakes import Batch, FakeSecondary, Sleeper, eventually, settle
from replog.backoff import Backoff
from replog.commitment import Commitment
from replog.config import MasterConfig
from replog.datadir import open_log
from replog.log import Log
from replog.master import BatchEncoder, Master
from replog.progress import Status
from replog.protocol import Fence, WriteRequest
from replog.replicator import Replicator

INTERVAL = 3600.0  # heartbeat interval: the Sleeper tells heartbeat waits from backoffs by it
MASTER_ID = "master-under-test"
H, S, U, D = Status.HEALTHY, Status.SUSPECTED, Status.UNHEALTHY, Status.DIVERGED


@dataclass
class Harness:
    """One Replicator (node index 1) wired to a FakeSecondary, a Sleeper and recording callbacks.

    The harness plays the master: it holds the epoch (1 unless told), sends it as the fence of
    every request, and, like the master, stops sending (epoch 0) once on_stale deposed it.
    """

    log: Log
    fake: FakeSecondary
    sleeper: Sleeper
    epoch: int = 1
    replicator: Replicator = None  # type: ignore[assignment]
    reports: list[tuple[str | None, int]] = field(default_factory=list)  # (incarnation, match) per on_progress
    statuses: list[tuple[Status, Status]] = field(default_factory=list)  # (before, after) per on_status
    stale: list[int] = field(default_factory=list)  # the epochs on_stale was called with
    mark: int = 0  # batches the fake received before the test proper began
    task: asyncio.Task[None] | None = None

    @property
    def progress(self):
        return self.replicator.progress

    @property
    def batches(self) -> list[Batch]:
        """The replication requests since start() returned."""
        return self.fake.batches[self.mark :]

    def fence(self) -> Fence | None:
        return Fence(self.epoch, MASTER_ID) if self.epoch else None

    def current_epoch(self) -> int:
        return 0 if self.stale else self.epoch  # a deposed master sends nothing

    def append(self, n: int) -> int:
        """Append n single writes (texts m<seq>) and tell the replicator; return the last seq."""
        for _ in range(n):
            self.log.append(f"m{self.log.last_seq + 1}")
        self.replicator.notify()
        return self.log.last_seq

    def texts(self) -> list[str]:
        return [self.log.text(s) for s in range(1, self.log.last_seq + 1)]

    async def start(self, *, sync: bool = True) -> None:
        """Run the replicator and wait until its first heartbeat round (sent at start-up) is done.

        With sync, also wait until the secondary has caught up and taken our epoch (an empty log
        costs one epoch-only request), and let start() mark where the test's own requests begin.
        """
        self.task = asyncio.create_task(self.replicator.run(), name="replicator under test")
        await self.until(lambda: self.sleeper.rounds >= 1, "the first heartbeat round")
        if sync:
            p = self.progress

            def caught_up() -> bool:
                return (
                    p.promised == p.log_epoch == self.epoch
                    and p.match == self.log.last_seq == self.fake.seq
                    and self.fake.inflight == 0
                )

            await self.until(caught_up, "the secondary to hold our log under our epoch")
            await settle()
            self.mark = len(self.fake.batches)

    async def beat(self, times: int = 1) -> None:
        for _ in range(times):
            self._check_alive()
            await self.sleeper.beat()

    async def until(self, cond: Callable[[], bool], what: str = "condition", timeout: float = 5.0) -> None:
        """eventually(), but a replicator that died fails the test at once, with its error."""

        def check() -> bool:
            self._check_alive()
            return cond()

        await eventually(check, timeout, what)

    def _check_alive(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()  # raises what killed it
            raise AssertionError("the replicator stopped by itself")

    def assert_status_chain(self) -> None:
        """on_status reports every change, each starting where the previous one ended."""
        current = U  # a secondary counts as unhealthy until its first answer
        for before, after in self.statuses:
            assert before is current, self.statuses
            assert after is not before, self.statuses
            current = after
        assert current is self.progress.status, self.statuses

    def reports_of(self, incarnation: str) -> list[int]:
        return [m for i, m in self.reports if i == incarnation]


@pytest.fixture
async def make():
    """Factory of Harnesses; every replicator started is cancelled and awaited at the end."""
    made: list[Harness] = []

    def factory(*, on_progress: Callable[[int], None] | None = None, **kw: Any) -> Harness:
        log = Log("L" * 32)
        holder: list[Harness] = []
        fake = FakeSecondary(lambda: holder[0].fence())
        h = Harness(log, fake, Sleeper(INTERVAL))
        holder.append(h)

        def record_progress(index: int) -> None:
            assert index == 1
            h.reports.append((h.progress.incarnation, h.progress.match))
            if on_progress is not None:
                on_progress(index)

        def record_status(index: int, before: Status, after: Status) -> None:
            assert index == 1
            h.statuses.append((before, after))

        def record_stale(epoch: int) -> None:
            h.stale.append(epoch)

        options: dict[str, Any] = dict(
            heartbeat_interval=INTERVAL,
            sleep=h.sleeper,
            rand=lambda: 1.0,
            clock=lambda: 0.0,
            backoff=Backoff(0.05, 2.0),
        )
        options.update(kw)
        h.replicator = Replicator(
            1,
            "fake://secondary",
            log,
            fake,
            encode=BatchEncoder(log),
            on_progress=record_progress,
            on_status=record_status,
            on_stale=record_stale,
            epoch=h.current_epoch,
            **options,
        )
        made.append(h)
        return h

    yield factory
    stuck = []
    for h in made:
        if h.task is not None:
            h.task.cancel()
            # Not gather(): a replicator that ignores cancellation must fail the test, not hang it.
            done, _ = await asyncio.wait({h.task}, timeout=2.0)
            if not done:
                stuck.append(h.task)
    assert not stuck, "a replicator did not stop when cancelled"


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# --- order and batching -----------------------------------------------------------


@pytest.mark.parametrize("window", [1, 4])
@pytest.mark.parametrize("seed", range(6))
async def test_order_kept_across_failures(make, seed, window):
    rng = random.Random(seed)
    h = make(batch_max_count=7, window=window)
    await h.start()
    h.fake.plan(*rng.choices(["ok", "fail", "stored_fail"], weights=[2, 1, 1], k=60))
    n = 0
    for _ in range(10):  # entries keep arriving while batches fail and are resent
        n = h.append(rng.randint(1, 25))
        await settle(rng.randint(0, 30))
    await h.until(lambda: h.progress.match == n, "every entry acknowledged")

    assert h.fake.texts() == h.texts()  # 1..n, in order, exactly once
    assert h.fake.node.log.hash(n) == h.log.hash(n)
    batches = h.batches
    assert {b.outcome for b in batches} >= {"ok", "fail", "stored_fail"}
    previous: Batch | None = None
    for b in batches:
        assert b.log == h.log.log_id
        assert b.seqs and b.seqs == tuple(range(b.first, b.last + 1)), "a batch is consecutive seqs, ascending"
        assert b.prev == b.first - 1, "prev is the entry just before the batch"
        assert len(b.seqs) <= 7
        assert b.inflight <= window
        # A request continues the one sent before it (the window), or starts again just after
        # what the secondary last reported (a rewind): never a seq beyond both.
        assert b.first <= b.acked_before + 1 or (previous is not None and b.first == previous.last + 1), b
        previous = b
    if window == 1:
        assert all(b.first == b.acked_before + 1 for b in batches), "one at a time: each starts at the reported end"
        # Never a later seq before an earlier unacknowledged one: nothing ever waited behind a gap.
        assert h.fake.max_pending == 0
    else:
        assert any(b.first > b.acked_before + 1 for b in batches), "the window was used"
    # A 500 after storing made the replicator resend entries the fake held: it dropped them.
    assert any(b.first <= b.held_before for b in batches)
    if window == 1:  # (with a window, a resend still in flight may fail after the last ack)
        assert h.progress.failures == 0


@pytest.mark.parametrize(
    ("max_count", "max_bytes", "text_len", "expected"),
    [
        (5000, 4 << 20, 4, 1),  # the defaults: the whole backlog in one request
        (100, 4 << 20, 4, 10),  # capped by count
        (5000, 10_000, 36, 10),  # capped by size: 36 characters + 64 overhead = 100 per entry
        (64, 10_000, 36, 16),  # the count cap binds first: ceil(1000 / 64)
    ],
)
async def test_backlog_goes_in_few_batches(make, max_count, max_bytes, text_len, expected):
    h = make(batch_max_count=max_count, batch_max_bytes=max_bytes)
    for i in range(1000):
        h.log.append(f"{i:0{text_len}d}")
    h.replicator.notify()
    await h.start(sync=False)
    await h.until(lambda: h.progress.match == 1000, "the backlog acknowledged")

    assert h.fake.texts() == h.texts()
    assert h.fake.replicate_calls == len(h.fake.batches) == expected
    assert [s for b in h.fake.batches for s in b.seqs] == list(range(1, 1001)), "each entry sent once, in order"
    for b in h.fake.batches:
        assert len(b.seqs) <= max_count
        assert sum(len(h.log.text(s)) + 64 for s in b.seqs) <= max_bytes
    assert h.fake.max_inflight <= 4


async def test_one_entry_over_the_size_cap_still_goes(make):
    h = make(batch_max_bytes=150)
    h.log.append("x" * 1000)
    h.append(2)
    await h.start(sync=False)
    await h.until(lambda: h.progress.match == 3, "all acknowledged")
    assert [b.seqs for b in h.fake.batches] == [(1,), (2, 3)]


async def test_a_client_batch_is_never_split_across_requests(make):
    h = make(batch_max_count=2)
    h.log.extend([(f"B:{i}", f"b{i}", 1 | (2 if i < 4 else 0)) for i in range(5)])  # one client batch of 5
    h.log.append("single")
    h.replicator.notify()
    await h.start(sync=False)
    await h.until(lambda: h.progress.match == 6, "all acknowledged")
    assert [b.seqs for b in h.fake.batches] == [(1, 2, 3, 4, 5), (6,)]


# --- the window ----------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 2, 4])
async def test_at_most_window_requests_in_flight_in_seq_order(make, window):
    h = make(batch_max_count=1, window=window)
    await h.start()
    h.fake.plan(*["hang"] * window)
    h.append(10)
    await h.until(lambda: h.fake.hanging == window, f"{window} requests in flight")
    await settle()
    assert h.fake.hanging == window, "never more than the window"
    assert [b.seqs for b in h.batches] == [(s,) for s in range(1, window + 1)]
    assert h.fake.seq == 0

    h.fake.release()
    await h.until(lambda: h.progress.match == 10, "all acknowledged")
    assert [b.seqs for b in h.batches] == [(s,) for s in range(1, 11)], "each once, in seq order"
    assert h.fake.max_inflight == window
    assert h.fake.texts() == h.texts()
    assert h.fake.max_pending == 0 or window > 1


@pytest.mark.parametrize("failure", ["fail", "stored_fail"])
async def test_a_failure_abandons_the_rest_of_the_window_and_resends_from_match(make, failure):
    h = make(batch_max_count=2, window=4)
    await h.start()
    h.fake.plan("ok", failure, "hang", "hang")
    with capture_logs() as logs:
        h.append(8)
        await h.until(lambda: h.progress.match == 8, "all acknowledged")

    assert [(b.seqs, b.outcome) for b in h.batches] == [
        ((1, 2), "ok"),
        ((3, 4), failure),
        ((5, 6), "hang"),
        ((7, 8), "hang"),
        # The failure abandoned the two requests behind it and resent from the acknowledged seq 2.
        ((3, 4), "ok"),
        ((5, 6), "ok"),
        ((7, 8), "ok"),
    ]
    assert h.fake.cancelled == 2
    assert h.fake.texts() == h.texts(), "every entry exactly once"
    assert h.sleeper.delays == pytest.approx([0.05])
    assert [(e["failures"], e["log_level"]) for e in events(logs, "replicate_retry")] == [(1, "info")]
    assert h.progress.failures == 0


async def test_an_answer_behind_a_gap_is_no_ack(make):
    """A request stored behind a gap (the one before it failed) answers the gap-free seq: not counted."""
    h = make(batch_max_count=2, window=2)
    await h.start()
    h.fake.plan("hang", "ok")
    h.append(4)
    await h.until(lambda: len(h.batches) == 2 and h.fake.hanging == 1, "two requests sent")
    await settle()
    assert h.fake.node.buffer.pending.keys() == {3, 4}
    assert h.progress.match == 0 and h.fake.seq == 0
    h.fake.release()
    await h.until(lambda: h.progress.match == 4, "all acknowledged")
    assert [b.seqs for b in h.batches] == [(1, 2), (3, 4)]


# --- epochs ---------------------------------------------------------------------------


async def test_an_epoch_only_request_goes_once_to_a_node_of_an_older_epoch(make):
    h = make()
    h.log.extend([(None, f"m{s}", 0) for s in (1, 2, 3)])
    # Restarted on a data dir of our log from an older epoch: nothing to send, but our epoch to give.
    h.fake.restart(log_id=h.log.log_id, texts=["m1", "m2", "m3"], log_epoch=0)
    with capture_logs() as logs:
        await h.start(sync=False)
        await h.until(lambda: h.progress.log_epoch == h.epoch, "the node took our epoch")
    await settle()
    assert [(b.prev, b.seqs) for b in h.fake.batches] == [(3, ())], "one request, no entries, prev at its end"
    assert (h.fake.node.promised, h.fake.node.promised_to, h.fake.node.log_epoch) == (1, MASTER_ID, 1)
    assert h.progress.counted(h.epoch, 0) == 3
    assert [(e["epoch"], e["seq"]) for e in events(logs, "log_epoch_taken")] == [(1, 3)]

    await h.beat(3)
    await settle()
    assert len(h.fake.batches) == 1, "taken: no more epoch-only requests"


async def test_an_epoch_only_request_is_not_repeated_for_the_same_position(make):
    h = make()
    await h.start(sync=False)
    await h.until(lambda: h.progress.log_epoch == h.epoch, "the node took our epoch")
    assert [(b.prev, b.seqs) for b in h.fake.batches] == [(0, ())]

    # From now on the node reports the old log epoch, whatever it holds.
    h.fake.tamper = lambda r: dataclasses.replace(r, log_epoch=0)
    h.fake.restart()
    await h.beat()
    h.replicator.notify()  # see the test below: the heartbeat alone does not wake the drain loop
    await h.until(lambda: len(h.fake.batches) == 2, "the epoch offered to the new process")
    for _ in range(3):
        await h.beat()
        h.replicator.notify()
    await settle()
    assert [(b.prev, b.seqs) for b in h.fake.batches] == [(0, ()), (0, ())], "once per incarnation and position"
    assert h.progress.counted(h.epoch, 0) == 0, "a copy not under our epoch is never counted"

    h.append(1)
    await h.until(lambda: len(h.fake.batches) == 4, "the entry, then the epoch at the new position")
    await h.beat(2)
    h.replicator.notify()
    await settle()
    assert [(b.prev, b.seqs) for b in h.fake.batches[2:]] == [(0, (1,)), (1, ())]
    assert h.progress.match == 1 and h.progress.counted(h.epoch, 0) == 0


async def test_a_node_restarted_at_the_same_position_is_offered_our_epoch_at_once(make):
    h = make()
    await h.start()
    h.fake.restart()  # restarted empty, as it was: the same position, no promise
    await h.beat()
    await h.until(lambda: h.progress.log_epoch == h.epoch, "the new process took our epoch", timeout=1.0)
    assert [(b.prev, b.seqs) for b in h.batches] == [(0, ())]


@pytest.mark.parametrize("noticed_by", ["replication", "heartbeat"])
async def test_a_stale_answer_calls_on_stale_and_stops_sending(make, noticed_by):
    h = make()
    await h.start()
    h.append(2)
    await h.until(lambda: h.progress.match == 2, "first fill")

    await h.fake.promise_elsewhere(h.epoch + 4)  # a newer master won epoch 5
    if noticed_by == "replication":
        h.append(1)
    else:
        await h.beat()
    await h.until(lambda: h.stale != [], "on_stale called")
    assert h.stale[0] == h.epoch + 4

    calls = h.fake.replicate_calls
    h.append(3)
    await settle()
    await h.beat(2)
    await settle()
    assert h.fake.replicate_calls == calls, "a deposed master sends nothing more"
    assert h.fake.seq == 2, "the node took nothing from the old master"
    assert set(h.stale) == {h.epoch + 4}


async def test_a_node_whose_disk_failed_is_out_at_once_and_back_after_a_restart(make):
    h = make(suspect_after=100, unhealthy_after=200)
    await h.start()
    h.append(1)
    await h.until(lambda: h.progress.match == 1, "first fill")

    h.fake.fail_disk()
    with capture_logs() as logs:
        h.append(1)
        await h.until(lambda: h.progress.status is U, "unhealthy at the first 503")
    assert h.statuses == [(U, H), (H, U)], "no waiting for missed heartbeats"
    assert [(e["before"], e["after"]) for e in events(logs, "secondary_status")] == [("healthy", "unhealthy")]
    calls = h.fake.replicate_calls
    await h.beat(2)  # its heartbeats answer 503 too: it stays out
    await settle()
    assert h.progress.status is U and h.fake.replicate_calls == calls

    h.fake.restart()  # a new process on a new disk, empty
    await h.beat()
    await h.until(lambda: h.progress.match == 2 and h.fake.seq == 2, "refilled")
    assert h.statuses == [(U, H), (H, U), (U, H)]
    h.assert_status_chain()


# --- backoff -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rand", "ceilings"),
    [
        (1.0, [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]),  # rand 1: the full ceiling
        (0.0, [0.025, 0.05, 0.1, 0.2, 0.2, 0.2]),  # rand 0: equal jitter keeps half of it
    ],
)
async def test_backoff_grows_is_capped_and_resets_after_success(make, rand, ceilings):
    h = make(backoff=Backoff(0.05, 0.4), rand=lambda: rand)
    await h.start()
    h.fake.plan(*["fail"] * 6)
    with capture_logs() as logs:
        h.append(3)
        await h.until(lambda: h.progress.match == 3, "acknowledged after six failures")

    assert h.sleeper.delays == pytest.approx(ceilings)
    assert [b.outcome for b in h.batches] == ["fail"] * 6 + ["ok"]
    assert all(b.seqs == (1, 2, 3) for b in h.batches)
    assert h.progress.failures == 0
    retries = events(logs, "replicate_retry")
    assert [e["failures"] for e in retries] == [1, 2, 3, 4, 5, 6]
    assert [e["delay"] for e in retries] == pytest.approx([round(c, 3) for c in ceilings])

    h.fake.plan("fail", "stored_fail")
    h.append(1)
    await h.until(lambda: h.progress.match == 4, "acknowledged after two more failures")
    assert h.sleeper.delays[6:] == pytest.approx(ceilings[:2]), "the count restarted after the success"


async def test_unreachable_secondary_backs_off_the_same_way(make):
    h = make(backoff=Backoff(1.0, 8.0), suspect_after=100, unhealthy_after=200)
    await h.start()
    h.fake.down = True
    h.append(1)
    await h.until(lambda: len(h.sleeper.delays) >= 6, "six retries")
    assert h.sleeper.delays[:6] == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
    assert h.progress.failures >= 6
    h.fake.down = False
    await h.until(lambda: h.progress.match == 1, "acknowledged once reachable")
    assert h.progress.failures == 0


# --- restarts and stale answers ----------------------------------------------------------


async def test_secondary_restarted_empty_is_rewound_and_refilled(make):
    h = make(batch_max_count=4)
    await h.start()
    h.append(10)
    await h.until(lambda: h.progress.match == 10, "first fill")
    old = h.fake.incarnation
    sent = len(h.fake.batches)

    h.fake.restart()  # empty memory, new incarnation
    with capture_logs() as logs:
        await h.beat()  # the heartbeat sees it: no operator action
        await h.until(lambda: h.progress.match == 10 and h.fake.seq == 10, "refilled")

    assert h.fake.texts() == h.texts()
    again = h.fake.batches[sent:]
    assert [b.seqs for b in again] == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10)]
    assert all(b.incarnation == h.fake.incarnation for b in again)
    assert h.reports_of(h.fake.incarnation)[0] == 0, "the master heard at once that it holds nothing"
    assert h.reports_of(old)[-1] == 10
    assert h.statuses == [(U, H)]  # a restart seen between beats is no status change
    assert [e["seq"] for e in events(logs, "secondary_rewound")] == [0]
    assert h.progress.counted(h.epoch, 0) == 10, "the new process took our epoch with the refill"


async def test_restart_noticed_by_a_replication_answer_rewinds(make):
    h = make(batch_max_count=4)
    await h.start()
    h.append(10)
    await h.until(lambda: h.progress.match == 10, "first fill")
    sent = len(h.fake.batches)

    h.fake.restart()
    h.append(2)  # no heartbeat: the answer to this batch tells the replicator
    await h.until(lambda: h.progress.match == 12 and h.fake.seq == 12, "refilled")

    assert h.fake.texts() == h.texts()
    again = [b.seqs for b in h.fake.batches[sent:]]
    assert again[0] == (11, 12)  # held behind a gap, not acknowledged
    assert again[1][0] == 1
    assert h.reports_of(h.fake.incarnation)[0] == 0


async def test_stale_lower_seq_under_the_same_incarnation_does_not_rewind(make):
    h = make()
    await h.start()
    h.append(6)
    await h.until(lambda: h.progress.match == 6, "first fill")
    sent = len(h.fake.batches)

    # A late answer from before: seq 2, under the same incarnation.
    h.fake.tamper = lambda r: dataclasses.replace(r, seq=2, hash=h.log.hash(2), at=2, at_hash=h.log.hash(2))
    await h.beat()
    assert (h.progress.match, h.progress.next_seq) == (6, 7)
    await settle()
    assert len(h.fake.batches) == sent, "nothing resent"

    h.fake.tamper = None
    h.append(1)
    await h.until(lambda: h.progress.match == 7, "the next entry acknowledged")
    assert [b.seqs for b in h.fake.batches[sent:]] == [(7,)]
    ms = [m for _, m in h.reports]
    assert ms == sorted(ms), "the match never went down"


# --- heartbeats and status ----------------------------------------------------------------


async def test_heartbeat_status_transitions_and_prompt_resume(make):
    # A backoff far longer than the test, and a sleep that only ends when cancelled.
    h = make(backoff=Backoff(500.0, 1000.0), suspect_after=2, unhealthy_after=4)
    h.sleeper.block_backoff = True
    await h.start()
    assert h.statuses == [(U, H)]  # healthy at its first answer

    h.fake.down = True
    h.append(1)
    await h.until(lambda: h.sleeper.backoff_waiting == 1, "the drain loop backing off")
    assert h.sleeper.delays == [500.0]

    await h.beat()
    assert h.progress.status is H  # one missed beat is not yet suspicious
    await h.beat()
    assert h.progress.status is S
    await h.beat()
    assert h.progress.status is S
    await h.beat()
    assert h.progress.status is U
    assert h.statuses == [(U, H), (H, S), (S, U)]
    assert h.fake.seq == 0

    h.fake.down = False
    await h.beat()  # the first answer: healthy, and the pending entry goes at once
    assert h.statuses[-1] == (U, H)
    await h.until(lambda: h.fake.seq == 1 and h.progress.match == 1, "the entry delivered")
    assert h.sleeper.backoff_cancelled == 1, "the long backoff was cut short by the kick, not waited out"
    assert h.sleeper.delays == [500.0]
    h.assert_status_chain()


async def test_unhealthy_secondary_gets_no_batches_until_a_heartbeat_answers(make):
    h = make(suspect_after=1, unhealthy_after=2)
    h.fake.health_down = True  # replication would succeed: any batch sent would be stored
    await h.start(sync=False)
    h.append(3)
    await settle()
    await h.beat(3)
    await settle()
    assert h.progress.status is U
    assert h.fake.replicate_calls == 0, "unhealthy until its first answer: nothing sent"

    h.fake.health_down = False
    await h.beat()
    await h.until(lambda: h.progress.match == 3, "sent once a heartbeat answered")

    h.fake.health_down = True
    await h.beat(2)
    assert h.progress.status is U
    calls = h.fake.replicate_calls
    h.append(2)
    await settle()
    await h.beat()
    await settle()
    assert h.fake.replicate_calls == calls, "an unhealthy secondary is not sent batches"

    h.fake.health_down = False
    await h.beat()
    await h.until(lambda: h.progress.match == 5, "sent once a heartbeat answered again")
    assert h.fake.texts() == h.texts()
    # Never answered at first: unhealthy all along, no transition until the first answer.
    assert h.statuses == [(U, H), (H, S), (S, U), (U, H)]
    h.assert_status_chain()


async def test_returning_secondary_abandons_a_stuck_request(make):
    h = make(suspect_after=1, unhealthy_after=3)
    await h.start()
    h.fake.plan("hang")  # the request is stuck on a connection that died
    h.append(1)
    await h.until(lambda: h.fake.hanging == 1, "the request hanging")
    h.fake.health_down = True
    await h.beat()
    assert h.progress.status is S

    h.fake.health_down = False
    await h.beat()
    await h.until(lambda: h.progress.match == 1, "resent and acknowledged")
    assert h.fake.cancelled == 1
    assert [(b.seqs, b.outcome) for b in h.batches] == [((1,), "hang"), ((1,), "ok")]
    h.assert_status_chain()


# --- divergence ---------------------------------------------------------------------


async def test_refused_batch_marks_diverged_until_restarted_empty(make):
    h = make()
    await h.start()
    h.append(3)
    await h.until(lambda: h.progress.match == 3, "first fill")

    # Unseen by any heartbeat, another process takes its place, holding another log.
    h.fake.restart(log_id="O" * 32, texts=["x", "y", "z", "w"])
    other = h.fake.incarnation
    with capture_logs() as logs:
        h.append(1)
        await h.until(lambda: h.progress.status is D, "diverged")
    assert h.reports[-1][1] == 0, "on_progress with match 0: it holds none of our log"
    assert h.progress.match == 0 and h.progress.counted(h.epoch, 0) == 0
    assert h.statuses == [(U, H), (H, D)]
    [diverged] = events(logs, "secondary_diverged")
    assert (diverged["code"], diverged["log_level"]) == ("log_mismatch", "error")

    sent = len(h.fake.batches)
    h.append(1)
    await settle()
    await h.beat(2)  # the same diverged process answers: it stays diverged
    await settle()
    assert h.progress.status is D
    assert len(h.fake.batches) == sent, "a diverged secondary is not sent batches"
    assert h.fake.texts() == ["x", "y", "z", "w"], "never merged"
    assert h.statuses == [(U, H), (H, D)]
    assert h.progress.incarnation == other and h.progress.match == 0

    h.fake.restart()  # restarted empty: rejoins by itself
    await h.beat()
    await h.until(lambda: h.progress.match == 5 and h.fake.seq == 5, "refilled")
    assert h.progress.status is H
    assert h.fake.texts() == h.texts()
    assert h.statuses == [(U, H), (H, D), (D, H)]
    h.assert_status_chain()


@pytest.mark.parametrize(
    ("log_id", "texts", "code"),
    [
        pytest.param("O" * 32, ["x", "y", "z"], "log_mismatch", id="another log"),
        pytest.param("L" * 32, ["m1", "not m2"], "entry_conflict", id="a contradicting entry"),
        pytest.param("L" * 32, ["m1", "m2", "m3"], "entry_conflict", id="a tail we never wrote"),
    ],
)
async def test_a_contradicting_secondary_is_diverged_at_its_first_answer(make, log_id, texts, code):
    h = make()
    h.fake.restart(log_id=log_id, texts=texts)
    h.append(2)
    with capture_logs() as logs:
        await h.start(sync=False)
    assert h.progress.status is D
    assert h.reports[-1][1] == 0
    assert [e["code"] for e in events(logs, "secondary_diverged")] == [code]
    await settle()
    assert h.fake.batches == []
    assert h.fake.texts() == texts
    h.assert_status_chain()  # unhealthy -> diverged, reported as such


# --- stopping --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["idle", "request_hangs", "window_hangs", "backoff_pending"])
async def test_cancelling_run_stops_promptly_and_leaves_no_tasks(make, where):
    before = asyncio.all_tasks()
    h = make(backoff=Backoff(1000.0, 1000.0), batch_max_count=1)
    h.sleeper.block_backoff = True
    await h.start()
    if where == "request_hangs":
        h.fake.plan("hang")
        h.append(1)
        await h.until(lambda: h.fake.hanging == 1, "the request hanging")
    elif where == "window_hangs":
        h.fake.plan(*["hang"] * 4)
        h.append(6)
        await h.until(lambda: h.fake.hanging == 4, "the window hanging")
    elif where == "backoff_pending":
        h.fake.plan("fail")
        h.append(1)
        await h.until(lambda: h.sleeper.backoff_waiting == 1, "the backoff pending")

    h.task.cancel()
    # The deadline is asyncio.wait's, not wait_for's: on timeout wait_for cancels again and then
    # waits without limit, so a replicator that swallows cancellation would hang the test.
    done, _ = await asyncio.wait({h.task}, timeout=1.0)
    assert h.task in done, "run() did not finish within 1 s of being cancelled"
    assert h.task.cancelled()

    leftovers = [t for t in asyncio.all_tasks() if t not in before and not t.done()]
    assert leftovers == []
    assert h.fake.hanging == 0
    assert h.sleeper.backoff_waiting == 0
    if where == "request_hangs":
        assert h.fake.cancelled == 1
    if where == "window_hangs":
        assert h.fake.cancelled == 4
    if where == "backoff_pending":
        assert h.sleeper.backoff_cancelled == 1


# --- acknowledgements and the write concern --------------------------------------------------


async def test_counted_acks_are_monotone_per_incarnation_and_release_waiters(make):
    commitment = Commitment(2)  # the master (node 0) and this secondary (node 1)
    released: list[tuple[int, int]] = []  # (seq waited for, what the secondary held when released)
    holder: list[Harness] = []

    def on_progress(index: int) -> None:
        h = holder[0]
        counted = h.progress.counted(h.epoch, 0)  # what the master counts for it
        # An ack means exactly that: the secondary holds counted and everything before it.
        assert counted <= h.fake.seq
        for waiter in commitment.update(index, counted):
            released.append((waiter.token, h.fake.seq))

    h = make(batch_max_count=3, on_progress=on_progress)
    holder.append(h)
    await h.start()
    h.fake.plan(*random.Random(7).choices(["ok", "fail", "stored_fail"], k=30))

    def write(n: int) -> None:
        for _ in range(n):
            seq = h.append(1)
            commitment.update(0, seq)  # the master holds it
            assert commitment.wait(seq, 2, seq) is not None

    write(1)
    for _ in range(10):
        write(3)
        await settle(5)
    await h.until(lambda: len(released) == 31, "every write released")
    assert sorted(s for s, _ in released) == list(range(1, 32))
    assert all(held >= seq for seq, held in released)
    assert commitment.waiting == 0
    first = h.fake.incarnation

    h.fake.restart()
    await h.beat()
    await h.until(lambda: h.reports_of(h.fake.incarnation) != [], "the restart seen")
    write(1)  # seq 32 waits for the whole log to reach the new process
    await h.until(lambda: len(released) == 32, "the write after the restart released")
    assert released[-1] == (32, 32)

    for incarnation in (first, h.fake.incarnation):
        ms = h.reports_of(incarnation)
        assert ms and ms == sorted(ms), f"the match went down within incarnation {incarnation}: {ms}"
    assert h.reports_of(h.fake.incarnation)[0] == 0


async def test_master_write_concern_follows_replicator_acks():
    holder: list[Master] = []
    fakes = [FakeSecondary(lambda: holder[0].fence) for _ in range(2)]
    config = MasterConfig(secondaries=("fake://1", "fake://2"), heartbeat_interval=INTERVAL)
    master = Master(config, list(fakes), open_log(None), rand=lambda: 1.0, clock=lambda: 0.0)
    holder.append(master)
    await asyncio.wait_for(master.recover(), 5)
    assert master.epoch == 1 and not master.recovering
    assert [(f.node.promised, f.node.promised_to) for f in fakes] == [(1, master.id)] * 2
    tasks = [asyncio.create_task(r.run()) for r in master.replicators]
    try:
        await eventually(
            lambda: master.writable and all(r.progress.log_epoch == 1 for r in master.replicators),
            what="both secondaries healthy under epoch 1",
        )
        fakes[1].plan("hang")
        slow = asyncio.create_task(master.write(WriteRequest(("a",), False, 3, None, None)))
        await eventually(lambda: fakes[1].hanging == 1, what="the second secondary stuck")

        result = await asyncio.wait_for(master.write(WriteRequest(("b",), False, 2, None, None)), 5)
        assert (result.created, result.body["seq"], result.body["acks"]) == (True, 2, 2)
        await settle()
        assert not slow.done(), "w=3 waits for the stuck secondary"
        # The window: "b" went to the stuck secondary while "a" hung, and waits there behind the gap.
        await eventually(lambda: len([b for b in fakes[1].batches if b.seqs]) == 2, what="b sent behind a")
        assert [b.seqs for b in fakes[1].batches if b.seqs] == [(1,), (2,)]
        assert fakes[1].seq == 0

        fakes[1].release()
        result = await asyncio.wait_for(slow, 5)
        assert (result.created, result.body["seq"], result.body["acks"]) == (True, 1, 3)
        await eventually(lambda: master.commitment.acks(2) == 3, what="both entries everywhere")
        assert master.commitment.waiting == 0
        for fake in fakes:
            assert fake.texts() == ["a", "b"]
    finally:
        for t in tasks:
            t.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=2.0)
        assert not stuck, "a replicator did not stop when cancelled"
