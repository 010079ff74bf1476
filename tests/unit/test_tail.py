"""Tail: waiters wake when the end grows past their seq, time out, and never outlive their wait."""

from __future__ import annotations

import asyncio

from replog.tail import Tail


class End:
    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


async def test_a_wait_past_a_shown_seq_returns_at_once() -> None:
    end = End()
    end.value = 3
    tail = Tail(end)
    assert await tail.wait_past(2, timeout=None)
    assert tail.waiting == 0


async def test_a_waiter_wakes_when_the_end_grows_past_its_seq_only() -> None:
    end = End()
    tail = Tail(end)
    low = asyncio.create_task(tail.wait_past(0, timeout=None))
    high = asyncio.create_task(tail.wait_past(1, timeout=None))
    await asyncio.sleep(0)
    assert tail.waiting == 2
    end.value = 1
    tail.notify()
    assert await low is True
    await asyncio.sleep(0)
    assert not high.done() and tail.waiting == 1  # woken, checked, waiting again
    end.value = 2
    tail.notify()
    assert await high is True
    assert tail.waiting == 0


async def test_a_notify_without_growth_wakes_nobody_for_good() -> None:
    end = End()
    tail = Tail(end)
    task = asyncio.create_task(tail.wait_past(0, timeout=None))
    for _ in range(3):
        await asyncio.sleep(0)
        tail.notify()
    await asyncio.sleep(0)
    assert not task.done() and tail.waiting == 1
    task.cancel()


async def test_a_timeout_returns_false_and_leaves_no_waiter() -> None:
    tail = Tail(End())
    assert await tail.wait_past(0, timeout=0.01) is False
    assert tail.waiting == 0


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    tail = Tail(End())
    tasks = [asyncio.create_task(tail.wait_past(0, timeout=30)) for _ in range(10)]
    await asyncio.sleep(0)
    assert tail.waiting == 10
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert tail.waiting == 0


async def test_close_ends_every_wait_and_later_ones_at_once() -> None:
    tail = Tail(End())
    task = asyncio.create_task(tail.wait_past(0, timeout=None))
    await asyncio.sleep(0)
    tail.close()
    assert await task is False
    assert await tail.wait_past(0, timeout=None) is False
    assert tail.waiting == 0
