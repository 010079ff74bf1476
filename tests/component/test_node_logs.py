"""What a master says in its log as a new user meets it: a fresh cluster's start, quorum changes, the
periodic summary line. The master runs on real asyncio time (short heartbeats) against scripted fake
secondaries; its events are caught with structlog's capture_logs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from fakes import FakeSecondary, eventually
from replog.config import MasterConfig
from replog.datadir import open_log
from replog.master import Master
from replog.metrics import log_summaries
from replog.protocol import WriteRequest

BEAT = 0.01  # seconds between heartbeats (and election rounds)
LOUD = ("warning", "error", "critical")


class Run:
    """A master over two fake secondaries, its replicators running once it has recovered."""

    def __init__(self, new_cluster: bool, **config: Any) -> None:
        self.fakes = [FakeSecondary(lambda: self.master.fence) for _ in range(2)]
        cfg = MasterConfig(
            secondaries=("http://s1:1", "http://s2:2"), heartbeat_interval=BEAT, new_cluster=new_cluster, **config
        )
        self.master = Master(cfg, list(self.fakes), open_log(None))
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        self.tasks.append(asyncio.create_task(self._run()))

    async def _run(self) -> None:
        await self.master.recover()
        async with asyncio.TaskGroup() as tg:
            for r in self.master.replicators:
                tg.create_task(r.run())

    async def write(self, text: str, w: int) -> dict[str, Any]:
        return (await asyncio.wait_for(self.master.write(WriteRequest((text,), False, w, None, None)), 5)).body

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        _, stuck = await asyncio.wait(self.tasks, timeout=2.0) if self.tasks else (set(), set())
        assert not stuck


@pytest.fixture
async def runs() -> AsyncIterator[list[Run]]:
    made: list[Run] = []
    yield made
    for r in made:
        await r.stop()


def names(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs]


@pytest.mark.parametrize("new_cluster", [False, True], ids=["static", "new_cluster"])
async def test_a_fresh_cluster_with_a_late_secondary_starts_quietly_and_ends_fully_consulted(runs, new_cluster):
    with capture_logs() as logs:
        run = Run(new_cluster)
        runs.append(run)
        run.fakes[1].down = True  # starts a little after the master
        await run.start()
        if new_cluster:  # the master's own vote counts: it recovers with the first secondary alone
            await eventually(lambda: not run.master.recovering, what="the master to recover without it")
            assert run.master.health()["unconsulted"] == ["http://s2:2"]
        else:  # it needs both promises
            await eventually(lambda: run.fakes[0].promise_calls >= 3, what="a few election rounds without it")
        run.fakes[1].down = False
        await eventually(lambda: not run.master.recovering, what="the master to recover")
        # Recovered is not yet writable: quorum is judged from heartbeats, which may not have answered yet.
        await eventually(lambda: run.master.writable, what="the master to take writes")
        assert (await run.write("first", 3))["acks"] == 3
        await eventually(
            lambda: all(r.progress.log_epoch == 1 for r in run.master.replicators), what="both secondaries caught up"
        )
        health = run.master.health()
    assert health["unconsulted"] == [], "a secondary that caught up with the master's log is no longer unconsulted"
    assert [(s["status"], s["seq"]) for s in health["secondaries"]] == [("healthy", 1)] * 2
    assert [e for e in logs if e["log_level"] in LOUD] == [], "an empty cluster's start is normal"
    events = names(logs)
    assert "quorum_regained" not in events and "quorum_lost" not in events, "quorum was never lost"
    assert events.count("secondary_connected") == 2 and "secondary_status" not in events
    if not new_cluster:  # it waited for the late secondary's promise: said once, not once per round
        assert events.count("awaiting_promises") == 1


async def test_quorum_lost_is_a_warning_and_regained_an_info_once_each(runs):
    run = Run(True, suspect_after=1, unhealthy_after=2)
    runs.append(run)
    await run.start()
    await eventually(lambda: run.master.writable and run.master.available == 3, what="a healthy cluster")
    with capture_logs() as logs:
        for f in run.fakes:
            f.down = True
        await eventually(lambda: not run.master.writable, what="quorum lost")
        run.fakes[0].down = False
        await eventually(lambda: run.master.writable, what="quorum regained")
    quorum = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("quorum_")]
    assert quorum == [("quorum_lost", "warning"), ("quorum_regained", "info")]
    unhealthy = [e for e in logs if e["event"] == "secondary_status" and e["after"] == "unhealthy"]
    assert len(unhealthy) == 2 and {e["log_level"] for e in unhealthy} == {"warning"}


async def test_the_summary_says_what_happened_since_the_last_line_and_nothing_when_idle(runs):
    run = Run(True)
    runs.append(run)
    await run.start()
    await eventually(lambda: run.master.writable and run.master.available == 3, what="a healthy cluster")
    master = run.master
    master.summary()  # whatever the start did
    assert master.summary() is None, "idle and caught up: no line"
    for i in range(3):
        await run.write(f"m{i}", 3)
    assert master.summary() == {"writes": 3, "entries": 3, "seq": 3, "lag": {"s1:1": 0, "s2:2": 0}}
    assert master.summary() is None
    run.fakes[1].down = True
    await run.write("m3", 2)
    assert master.summary() == {"writes": 1, "entries": 1, "seq": 4, "lag": {"s1:1": 0, "s2:2": 1}}
    assert master.summary() is not None, "a lagging secondary is worth a line every interval"
    node = run.fakes[0].node
    assert node.summary() == {"received": 4, "seq": 4, "buffered": 0}
    assert node.summary() is None


async def test_log_summaries_logs_one_info_line_per_interval_with_news():
    said = iter([{"writes": 2}, None, {"writes": 1}])
    slept: list[float] = []
    done = asyncio.Event()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 3:
            done.set()
            await asyncio.Event().wait()  # until cancelled

    with capture_logs() as logs:
        task = asyncio.create_task(log_summaries(lambda: next(said), 7.5, sleep))
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert slept == [7.5] * 4
    assert [(e["event"], e["log_level"], e["writes"]) for e in logs] == [("summary", "info", 2), ("summary", "info", 1)]
