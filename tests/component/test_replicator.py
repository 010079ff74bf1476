"""Component tests of the per-secondary Replicator against a scripted fake secondary.

No real waiting: backoff delays are recorded by the injected sleep, the clock stands still,
and the heartbeat loop runs one round each time a test calls `beat()`. Waits are for
conditions, with deadlines.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from fakes import FakeSecondary, Sleeper, eventually, settle

from replog.backoff import Backoff
from replog.client import Reply
from replog.commitment import Commitment
from replog.config import MasterConfig
from replog.log import Log
from replog.master import BatchEncoder, Master
from replog.progress import Status
from replog.protocol import WriteRequest
from replog.replicator import Replicator

INTERVAL = 3600.0  # heartbeat interval: the Sleeper tells heartbeat waits from backoffs by it
H, S, U, D = Status.HEALTHY, Status.SUSPECTED, Status.UNHEALTHY, Status.DIVERGED


@dataclass
class Harness:
    """One Replicator (node index 1) wired to a FakeSecondary, a Sleeper and recording callbacks."""

    log: Log
    fake: FakeSecondary
    sleeper: Sleeper
    replicator: Replicator
    matches: list[tuple[str | None, int]] = field(default_factory=list)  # (boot, match) per on_match
    statuses: list[tuple[Status, Status]] = field(default_factory=list)  # (before, after) per on_status
    task: asyncio.Task[None] | None = None

    @property
    def progress(self):
        return self.replicator.progress

    def append(self, n: int) -> int:
        """Append n entries (texts m<seq>) and tell the replicator; return the last seq."""
        for _ in range(n):
            self.log.append(f"m{self.log.last_seq + 1}")
        self.replicator.notify()
        return self.log.last_seq

    def texts(self) -> list[str]:
        return [self.log.text(s) for s in range(1, self.log.last_seq + 1)]

    async def start(self) -> None:
        """Run the replicator and wait until its first heartbeat round (sent at start-up) is done."""
        self.task = asyncio.create_task(self.replicator.run(), name="replicator under test")
        await self.until(lambda: self.sleeper.rounds >= 1, "the first heartbeat round")

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

    def matches_of(self, boot: str) -> list[int]:
        return [m for b, m in self.matches if b == boot]


@pytest.fixture
async def make():
    """Factory of Harnesses; every replicator started is cancelled and awaited at the end."""
    made: list[Harness] = []

    def factory(*, on_match: Callable[[int, int], None] | None = None, **kw: Any) -> Harness:
        log = Log("L" * 32)
        fake = FakeSecondary()
        sleeper = Sleeper(INTERVAL)
        holder: list[Harness] = []

        def record_match(index: int, match: int) -> None:
            assert index == 1
            holder[0].matches.append((holder[0].replicator.progress.boot, match))
            if on_match is not None:
                on_match(index, match)

        def record_status(index: int, before: Status, after: Status) -> None:
            assert index == 1
            holder[0].statuses.append((before, after))

        options: dict[str, Any] = dict(
            heartbeat_interval=INTERVAL,
            sleep=sleeper,
            rand=lambda: 1.0,
            clock=lambda: 0.0,
            backoff=Backoff(0.05, 2.0),
        )
        options.update(kw)
        replicator = Replicator(
            1,
            "fake://secondary",
            log,
            fake,
            encode=BatchEncoder(log),
            on_match=record_match,
            on_status=record_status,
            **options,
        )
        h = Harness(log, fake, sleeper, replicator)
        holder.append(h)
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


# --- order and batching -----------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
async def test_order_kept_across_failures(make, seed):
    rng = random.Random(seed)
    h = make(batch_max_count=7)
    h.fake.plan(*rng.choices(["ok", "fail", "stored_fail"], weights=[2, 1, 1], k=60))
    await h.start()
    n = 0
    for _ in range(10):  # entries keep arriving while batches fail and are resent
        n = h.append(rng.randint(1, 25))
        await settle(rng.randint(0, 30))
    await h.until(lambda: h.progress.match == n, "every entry acknowledged")

    assert h.fake.texts() == h.texts()  # 1..n, in order, exactly once
    batches = h.fake.batches
    assert {b.outcome for b in batches} >= {"ok", "fail", "stored_fail"}
    for b in batches:
        assert b.log == h.log.log_id
        assert b.seqs == tuple(range(b.first, b.last + 1)), "a batch is consecutive seqs, ascending"
        assert b.first == b.acked_before + 1, "every batch starts just after the acknowledged position"
        assert len(b.seqs) <= 7
    # Never a later seq before an earlier unacknowledged one: nothing ever waited behind a gap.
    assert h.fake.max_pending == 0
    # A 500 after storing made the replicator resend entries the fake held: it dropped them.
    assert any(b.first <= b.held_before for b in batches)
    assert h.progress.failures == 0


@pytest.mark.parametrize(
    ("max_count", "max_bytes", "text_len", "expected"),
    [
        (5000, 4 << 20, 4, 1),  # the defaults: the whole backlog in one request
        (100, 4 << 20, 4, 10),  # capped by count
        (5000, 10_000, 68, 10),  # capped by size: 68 characters + 32 overhead = 100 per entry
        (64, 10_000, 68, 16),  # the count cap binds first: ceil(1000 / 64)
    ],
)
async def test_backlog_goes_in_few_batches(make, max_count, max_bytes, text_len, expected):
    h = make(batch_max_count=max_count, batch_max_bytes=max_bytes)
    for i in range(1000):
        h.log.append(f"{i:0{text_len}d}")
    h.replicator.notify()
    await h.start()
    await h.until(lambda: h.progress.match == 1000, "the backlog acknowledged")

    assert h.fake.texts() == h.texts()
    assert h.fake.replicate_calls == len(h.fake.batches) == expected
    for b in h.fake.batches:
        assert len(b.seqs) <= max_count
        assert sum(len(h.log.text(s)) + 32 for s in b.seqs) <= max_bytes


async def test_one_entry_over_the_size_cap_still_goes(make):
    h = make(batch_max_bytes=100)
    h.log.append("x" * 1000)
    h.append(2)
    await h.start()
    await h.until(lambda: h.progress.match == 3, "all acknowledged")
    assert [b.seqs for b in h.fake.batches] == [(1,), (2, 3)]


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
    h.fake.plan(*["fail"] * 6)
    await h.start()
    h.append(3)
    await h.until(lambda: h.progress.match == 3, "acknowledged after six failures")

    assert h.sleeper.delays == pytest.approx(ceilings)
    assert [b.outcome for b in h.fake.batches] == ["fail"] * 6 + ["ok"]
    assert all(b.seqs == (1, 2, 3) for b in h.fake.batches)
    assert h.progress.failures == 0

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
    old_boot = h.fake.boot
    sent = len(h.fake.batches)

    h.fake.restart()  # empty memory, new boot id
    await h.beat()  # the heartbeat sees it: no operator action
    await h.until(lambda: h.progress.match == 10 and h.fake.seq == 10, "refilled")

    assert h.fake.texts() == h.texts()
    again = h.fake.batches[sent:]
    assert [b.seqs for b in again] == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10)]
    assert all(b.boot == h.fake.boot for b in again)
    assert h.matches_of(h.fake.boot)[0] == 0, "the master heard at once that it holds nothing"
    assert h.matches_of(old_boot)[-1] == 10
    assert h.statuses == [(U, H)]  # a restart seen between beats is no status change


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
    assert h.matches_of(h.fake.boot)[0] == 0


async def test_stale_lower_seq_under_the_same_boot_does_not_rewind(make):
    h = make()
    await h.start()
    h.append(6)
    await h.until(lambda: h.progress.match == 6, "first fill")
    sent = len(h.fake.batches)

    h.fake.health_override = Reply(h.fake.boot, 2, h.log.log_id, 2, h.log.crc(2))  # a late answer from before
    await h.beat()
    assert (h.progress.match, h.progress.next_seq) == (6, 7)
    await settle()
    assert len(h.fake.batches) == sent, "nothing resent"

    h.fake.health_override = None
    h.append(1)
    await h.until(lambda: h.progress.match == 7, "the next entry acknowledged")
    assert [b.seqs for b in h.fake.batches[sent:]] == [(7,)]
    ms = [m for _, m in h.matches]
    assert ms == sorted(ms), "on_match never went down"


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
    assert h.sleeper.backoff_cancelled == 1, "the long backoff was cut short, not waited out"
    assert h.sleeper.delays == [500.0]
    h.assert_status_chain()


async def test_unhealthy_secondary_gets_no_batches_until_a_heartbeat_answers(make):
    h = make(suspect_after=1, unhealthy_after=2)
    h.fake.health_down = True  # replication would succeed: any batch sent would be stored
    await h.start()
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
    assert [(b.seqs, b.outcome) for b in h.fake.batches] == [((1,), "hang"), ((1,), "ok")]
    h.assert_status_chain()


# --- divergence ---------------------------------------------------------------------


async def test_refused_batch_marks_diverged_until_restarted_empty(make):
    h = make()
    await h.start()
    h.append(3)
    await h.until(lambda: h.progress.match == 3, "first fill")

    # Unseen by any heartbeat, another process takes its place, holding another log.
    h.fake.restart(log_id="O" * 32, texts=["x", "y", "z", "w"])
    other_boot = h.fake.boot
    h.append(1)
    await h.until(lambda: h.progress.status is D, "diverged")
    assert h.matches[-1][1] == 0, "on_match(index, 0): it holds none of our log"
    assert h.progress.match == 0
    assert h.statuses == [(U, H), (H, D)]

    sent = len(h.fake.batches)
    h.append(1)
    await settle()
    await h.beat(2)  # the same diverged process answers: it stays diverged
    await settle()
    assert h.progress.status is D
    assert len(h.fake.batches) == sent, "a diverged secondary is not sent batches"
    assert h.fake.texts() == ["x", "y", "z", "w"], "never merged"
    assert h.statuses == [(U, H), (H, D)]
    assert h.progress.boot == other_boot and h.progress.match == 0

    h.fake.restart()  # restarted empty: rejoins by itself
    await h.beat()
    await h.until(lambda: h.progress.match == 5 and h.fake.seq == 5, "refilled")
    assert h.progress.status is H
    assert h.fake.texts() == h.texts()
    assert h.statuses == [(U, H), (H, D), (D, H)]
    h.assert_status_chain()


async def test_secondary_of_another_log_is_diverged_at_its_first_answer(make):
    h = make()
    h.fake.restart(log_id="O" * 32, texts=["x", "y", "z"])
    h.append(2)
    await h.start()
    assert h.progress.status is D
    assert h.matches[-1][1] == 0
    await settle()
    assert h.fake.batches == []
    h.assert_status_chain()  # unhealthy -> diverged, reported as such


# --- stopping --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["idle", "request_hangs", "backoff_pending"])
async def test_cancelling_run_stops_promptly_and_leaves_no_tasks(make, where):
    before = asyncio.all_tasks()
    h = make(backoff=Backoff(1000.0, 1000.0))
    h.sleeper.block_backoff = True
    await h.start()
    if where == "request_hangs":
        h.fake.plan("hang")
        h.append(1)
        await h.until(lambda: h.fake.hanging == 1, "the request hanging")
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
    if where == "backoff_pending":
        assert h.sleeper.backoff_cancelled == 1


# --- acknowledgements and the write concern --------------------------------------------------


async def test_on_match_is_monotone_per_boot_and_releases_waiters(make):
    commitment = Commitment(2)  # the master (node 0) and this secondary (node 1)
    released: list[tuple[int, int]] = []  # (seq waited for, what the secondary held when released)
    holder: list[Any] = []

    def on_match(index: int, match: int) -> None:
        fake = holder[0].fake
        # An ack means exactly that: the secondary holds match and everything before it.
        assert match <= fake.seq
        for waiter in commitment.update(index, match):
            released.append((waiter.token, fake.seq))

    h = make(batch_max_count=3, on_match=on_match)
    holder.append(h)
    h.fake.plan(*random.Random(7).choices(["ok", "fail", "stored_fail"], k=30))
    await h.start()

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
    first_boot = h.fake.boot

    h.fake.restart()
    await h.beat()
    await h.until(lambda: h.matches_of(h.fake.boot) != [], "the restart seen")
    write(1)  # seq 32 waits for the whole log to reach the new process
    await h.until(lambda: len(released) == 32, "the write after the restart released")
    assert released[-1] == (32, 32)

    for boot in (first_boot, h.fake.boot):
        ms = h.matches_of(boot)
        assert ms and ms == sorted(ms), f"on_match went down within boot {boot}: {ms}"
    assert h.matches_of(h.fake.boot)[0] == 0


async def test_master_write_concern_follows_replicator_acks():
    fakes = [FakeSecondary(), FakeSecondary()]
    sleeper = Sleeper(INTERVAL)
    config = MasterConfig(secondaries=("fake://1", "fake://2"), heartbeat_interval=INTERVAL)
    master = Master(config, list(fakes), sleep=sleeper, rand=lambda: 1.0, clock=lambda: 0.0)
    await master.recover()
    tasks = [asyncio.create_task(r.run()) for r in master.replicators]
    try:
        await eventually(lambda: sleeper.rounds >= 2 and master.writable, what="both secondaries healthy")
        fakes[1].plan("hang")
        slow = asyncio.create_task(master.write(WriteRequest(("a",), False, 3, None, None)))
        await eventually(lambda: fakes[1].hanging == 1, what="the second secondary stuck")

        status, body = await asyncio.wait_for(master.write(WriteRequest(("b",), False, 2, None, None)), 5)
        assert (status, body["seq"], body["acks"]) == (201, 2, 2)
        await settle()
        assert not slow.done(), "w=3 waits for the stuck secondary"

        fakes[1].release()
        status, body = await asyncio.wait_for(slow, 5)
        assert (status, body["seq"], body["acks"]) == (201, 1, 3)
        await eventually(lambda: master.commitment.acks(2) == 3, what="both entries everywhere")
        assert master.commitment.waiting == 0
        for fake in fakes:
            assert fake.texts() == ["a", "b"]
    finally:
        for t in tasks:
            t.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=2.0)
        assert not stuck, "a replicator did not stop when cancelled"
