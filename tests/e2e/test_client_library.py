"""replog.Client against real processes: a producer stores every message exactly once, in each
producer's order, through connection resets (the chaos proxy in front of the master) and 503s (the
master read-only while the secondaries are down); follow() loses and repeats nothing across a
master restart on its data dir; a long-poll is woken within a deadline of the append.
"""

from __future__ import annotations

import asyncio
import random
import time

import replog
from replog.backoff import Backoff
from replog.tools.cluster import wait_until

try:
    from tests.chaos.proxy import Proxy
except ImportError:  # pytest put tests/ rather than the repository root on sys.path
    from chaos.proxy import Proxy  # type: ignore[no-redef]

FAST = Backoff(0.02, 0.3)


async def test_a_producer_stores_every_message_once_in_order_through_resets_and_503s(cluster):
    c = cluster(2)
    proxy = Proxy(c.master.port).start()
    writers = 8
    results: dict[int, list[replog.Appended]] = {i: [] for i in range(writers)}
    done = asyncio.Event()
    try:
        # w=1: a batch is answered at once, so the next one meets the read-only master and its 503s.
        async with replog.Client(proxy.url, retry_for=60, backoff=FAST) as log, log.producer(w=1) as p:

            async def writer(i: int) -> None:
                k = 0
                while not done.is_set():
                    results[i].append(await p.append(f"w{i}-{k}"))
                    k += 1
                    await asyncio.sleep(0.002)

            async def chaos() -> None:
                rng = random.Random(7)
                try:
                    # Connection resets at random moments, then 503 no_quorum: both secondaries down until
                    # the master turns read-only, and back; then resets again.
                    for _ in range(15):
                        await asyncio.sleep(rng.uniform(0.01, 0.08))
                        await asyncio.to_thread(proxy.cut, rst=True)
                    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in c.secondaries))
                    await asyncio.to_thread(
                        wait_until, lambda: c.master.health()["status"] == "read_only", 20, 0.02, "read-only"
                    )
                    await asyncio.sleep(0.3)
                    for s in c.secondaries:
                        await asyncio.to_thread(s.start)
                    for _ in range(10):
                        await asyncio.sleep(rng.uniform(0.01, 0.08))
                        await asyncio.to_thread(proxy.cut, rst=True)
                finally:
                    done.set()

            await asyncio.gather(chaos(), *(writer(i) for i in range(writers)))
    finally:
        proxy.close()

    assert p.retried["no_quorum"] >= 1, p.retried  # 503s were met, and retried
    assert p.retried["unreachable"] >= 1, p.retried  # so were connections reset under a request
    shown = c.master.messages()
    texts = [m["text"] for m in shown]
    acked = sum(len(r) for r in results.values())
    assert len(texts) == len(set(texts)) == acked, f"{len(texts)} shown, {len(set(texts))} distinct, {acked} acked"
    by_seq = {m["seq"]: m for m in shown}
    for i in range(writers):
        mine = [m["text"] for m in shown if m["text"].startswith(f"w{i}-")]
        assert mine == [f"w{i}-{k}" for k in range(len(results[i]))], f"writer {i}'s order"
        for got in results[i]:  # each caller's answer is its own entry
            assert by_seq[got.seq]["text"] == got.text and by_seq[got.seq]["id"] == got.id


async def test_follow_resumes_across_a_master_restart_with_nothing_lost_or_repeated(cluster):
    c = cluster(0, data_dirs=True)
    total = 300
    seen: list[replog.Entry] = []
    async with replog.Client(c.master.url, retry_for=60, backoff=FAST) as log:

        async def follow() -> None:
            async for entry in log.follow(since=0):
                seen.append(entry)
                if entry.seq == total:
                    return

        async def write() -> None:
            for k in range(total):
                await log.append(f"m{k}", w=1)
                if k == total // 2:
                    await asyncio.to_thread(c.master.kill)  # a crash, mid-stream
                    await asyncio.to_thread(c.master.start)

        follower = asyncio.create_task(follow())
        await write()
        await asyncio.wait_for(follower, 30)
    assert c.master.starts == 2
    assert [e.seq for e in seen] == list(range(1, total + 1))
    assert [e.text for e in seen] == [f"m{k}" for k in range(total)]


async def test_a_long_poll_on_a_real_node_answers_within_a_deadline_of_the_append(cluster):
    c = cluster(1)
    async with replog.Client(c.secondaries[0].url) as reader, replog.Client(c.master.url) as writer:
        for k in range(3):
            poll = asyncio.create_task(reader.read(since=k, wait=30))
            await asyncio.to_thread(
                wait_until, lambda: c.secondaries[0].health()["waiting_reads"] == 1, 10, 0.01, "a waiting read"
            )
            await writer.append(f"m{k}", w=2)  # held by the secondary when this returns
            appended = time.monotonic()
            got = await asyncio.wait_for(poll, 10)
            assert time.monotonic() - appended < 0.5
            assert [e.text for e in got] == [f"m{k}"]
