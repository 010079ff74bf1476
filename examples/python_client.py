"""The Python client in one sitting: append, batch, producer, typed errors, reads and health.

    python examples/python_client.py                 # against the Procfile's cluster (honcho start)
    python examples/python_client.py --master URL    # against another master
    python examples/python_client.py --start         # on a local cluster of its own

Every message it writes starts with a run tag, so that it can run against a log that holds others.
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


async def tour(master: str) -> None:
    tag = uuid.uuid4().hex[:6]
    async with replog.Client(master) as log:
        # One message: the call returns once w nodes (the master included) hold it.
        stored = await log.append(f"{tag} hello", w=2)
        print(f"append: seq={stored.seq} w={stored.w} acks={stored.acks}")

        # The same id again is a retry: the entry already stored comes back, nothing is appended.
        again = await log.append(f"{tag} hello", w=2, id=stored.id)
        print(f"retry with the same id: seq={again.seq} created={again.created}")

        # A batch: consecutive seqs, all or nothing.
        batch = await log.append_batch([f"{tag} a", f"{tag} b", f"{tag} c"], w="majority")
        print(f"append_batch: seqs {batch.entries[0].seq}..{batch.entries[-1].seq} acks={batch.acks}")

        # A producer: 1,000 coroutines each awaiting its own append, written as a few batch POSTs.
        started = time.monotonic()
        async with log.producer(w="majority") as producer:
            entries = await asyncio.gather(*(producer.append(f"{tag} p{i}") for i in range(1000)))
        took = time.monotonic() - started
        print(f"producer: {len(entries)} appends in {producer.batches} batch writes, {took:.2f} s")
        print(f"producer: each caller got its own seq: {len({e.seq for e in entries}) == len(entries)}")

        # Typed errors: a w above the cluster's size is Rejected (a 4xx, nothing appended) ...
        try:
            await log.append(f"{tag} too many", w=99)
        except replog.Rejected as exc:
            print(f"Rejected: {exc.code}")
        # ... and a w that is not met in time is WriteConcernTimeout: stored, and still replicating.
        try:
            await log.append(f"{tag} in a hurry", w="all", timeout=0.000001)
            print("WriteConcernTimeout: not raised, every node was fast enough")
        except replog.WriteConcernTimeout as exc:
            print(f"WriteConcernTimeout: stored as seq {exc.seq}, {exc.acks} of {exc.w} acks in time")

        # Reads: a page of entries after a seq, and the highest seq the node shows.
        page = await log.read(since=stored.seq - 1, limit=4)
        print(f"read: {[e.text.removeprefix(tag + ' ') for e in page]}, the node shows up to seq {page.last_seq}")

        health = await log.health()
        print(f"health: {health['status']}, {len(health['secondaries'])} secondaries")


@contextlib.contextmanager
def cluster(start: bool, master: str) -> Iterator[str]:
    if not start:
        yield master
        return
    with LocalCluster(2, cluster_key=secrets.token_hex(32)) as local:
        yield local.master.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master", default="http://127.0.0.1:8000", help="the master's URL")
    parser.add_argument("--start", action="store_true", help="start a local cluster of its own")
    args = parser.parse_args()
    with cluster(args.start, args.master) as master:
        asyncio.run(tour(master))


if __name__ == "__main__":
    main()
