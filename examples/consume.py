"""Consuming the log: a follower that sees every entry once, in order, live; and a long-poll loop.

    python examples/consume.py                 # against the Procfile's cluster (honcho start)
    python examples/consume.py --node URL      # read another node (a secondary, say); --master for writes
    python examples/consume.py --start         # on a local cluster of its own

It writes 200 messages through a producer while a follower (GET /messages/stream) and a long-poller
(GET /messages?wait=) read them from the node, and checks that both saw each one once, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import Iterator

import replog
from replog.tools.cluster import LocalCluster

COUNT = 200


async def follower(log: replog.Client, since: int, tag: str, seen: list[str]) -> None:
    """Follow the stream from since until the run's last message; follow() reconnects by itself."""
    async for entry in log.follow(since=since):
        if entry.text.startswith(tag):
            seen.append(entry.text)
            if len(seen) == COUNT:
                return


async def long_poller(log: replog.Client, since: int, tag: str, seen: list[str]) -> None:
    """Read in a loop; each read waits (up to 10 s) for something new instead of polling."""
    while len(seen) < COUNT:
        page = await log.read(since=since, wait=10)
        for entry in page:
            if entry.text.startswith(tag):
                seen.append(entry.text)
        since = page[-1].seq if page else since


async def run(master: str, node: str) -> bool:
    tag = uuid.uuid4().hex[:6]
    async with replog.Client(node) as reader, replog.Client(master) as writer:
        start = (await reader.read(since=0, limit=0)).last_seq  # read from here on
        followed: list[str] = []
        polled: list[str] = []
        consumers = [
            asyncio.create_task(follower(reader, start, tag, followed)),
            asyncio.create_task(long_poller(reader, start, tag, polled)),
        ]
        started = time.monotonic()
        async with writer.producer(w="all") as producer:
            for i in range(COUNT):  # one at a time, so that the consumers see them arrive live
                await producer.append(f"{tag} m{i}")
        await asyncio.wait_for(asyncio.gather(*consumers), 30)
        took = time.monotonic() - started
    want = [f"{tag} m{i}" for i in range(COUNT)]
    print(f"wrote {COUNT} messages at w=all in {took:.2f} s")
    print(f"follower saw {len(followed)}, in order and once each: {followed == want}")
    print(f"long-poller saw {len(polled)}, in order and once each: {polled == want}")
    return followed == want and polled == want


@contextlib.contextmanager
def cluster(start: bool, master: str, node: str | None) -> Iterator[tuple[str, str]]:
    if not start:
        yield master, node or master
        return
    with LocalCluster(2, cluster_key=secrets.token_hex(32)) as local:
        yield local.master.url, local.secondaries[0].url  # read a secondary: it shows what it holds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", default="http://127.0.0.1:8000", help="the master's URL (writes)")
    parser.add_argument("--node", default=None, help="the node to read (default: the master)")
    parser.add_argument("--start", action="store_true", help="start a local cluster of its own")
    args = parser.parse_args()
    with cluster(args.start, args.master, args.node) as (master, node):
        return 0 if asyncio.run(run(master, node)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
