"""The client rows of `replog bench`: loads driven through replog.Client, in a process of their own.

Unlike replog.tools.loadgen (bare HTTP, as cheap as a client can be), these measure what a Python
user of the library gets. One process runs one load, `python -m replog.tools.clientload SPEC_JSON`,
speaking loadgen's protocol on stdout ({"ready"}, then a line on stdin starts the clock, {"done"},
{"result"}). SPEC_JSON: {"url", "kind", "count", "clients", "w", "loop"} where kind is

    client    count appends, clients coroutines each awaiting its own Client.append (one POST each)
    producer  the same through one Client.producer: concurrent appends coalesced into batch POSTs
    stream    a follower of the node (Client.follow) and a writer appending one message at a time:
              latency is from sending each append to the follower having the entry
    replay    Client.follow from seq 0 to the node's last seq, as fast as it goes
    hold      open `clients` streams waiting past the end of the log (idle), report "ready", and
              hold them until stdin closes
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from replog.client import Client, ReplogError
from replog.tools.loadgen import cpu_seconds, emit, loop_factory, percentile


class Clock:
    """The load's window: from the parent's go to the end, in wall time and in this process's CPU."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = cpu_seconds()
        self.extra: dict[str, Any] = {}  # what a load adds to its result

    async def go(self) -> None:
        """Say ready, wait for the parent's line on stdin, and start the clock."""
        emit({"ready": True})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        self.t0, self.cpu0 = time.perf_counter(), cpu_seconds()


async def appends(spec: dict[str, Any], clock: Clock, produce: bool) -> tuple[int, list[float], list[str]]:
    count, w = spec["count"], spec.get("w")
    latencies: list[float] = []
    errors: list[str] = []
    async with Client(spec["url"]) as log:
        await log.health()  # connected before the clock starts
        producer = log.producer(w=w)
        if produce:
            producer.start()
        append = producer.append if produce else (lambda text: log.append(text, w=w))
        numbers = iter(range(count))

        async def worker() -> None:
            for n in numbers:
                t = time.perf_counter()
                try:
                    await append(f"c{n:09d}")
                except ReplogError as exc:
                    errors.append(str(exc))
                    continue
                latencies.append(time.perf_counter() - t)

        await clock.go()
        await asyncio.gather(*(worker() for _ in range(spec["clients"])))
        await producer.close()
    return count, latencies, errors


async def stream(spec: dict[str, Any], clock: Clock) -> tuple[int, list[float], list[str]]:
    """Latencies from each append's sending until the follower has the entry; the result's extra
    "after_answer_p99_ms" is the p99 from the append's answer instead (0 when the entry came first)."""
    count, w = spec["count"], spec.get("w")
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    seen: dict[int, float] = {}
    async with Client(spec["url"]) as log:
        start = (await log.read(limit=0)).last_seq

        async def follow() -> None:
            async for entry in log.follow(since=start):
                seen[entry.seq] = time.perf_counter()
                if len(seen) >= count:
                    return

        follower = asyncio.create_task(follow())
        await clock.go()
        for n in range(count):
            t = time.perf_counter()
            stored = await log.append(f"s{n:09d}", w=w)
            acked[stored.seq] = time.perf_counter()
            sent[stored.seq] = t
        await asyncio.wait_for(follower, 60)
    after = sorted(max(0.0, seen[seq] - t) for seq, t in acked.items())
    clock.extra["after_answer_p99_ms"] = round(percentile(after, 99) * 1000, 3)
    clock.extra["seen_before_answer"] = sum(1 for seq, t in acked.items() if seen[seq] <= t)
    return count, [seen[seq] - t for seq, t in sent.items()], []


async def replay(spec: dict[str, Any], clock: Clock) -> tuple[int, list[float], list[str]]:
    async with Client(spec["url"]) as log:
        last = (await log.read(limit=0)).last_seq
        await clock.go()
        n = 0
        if last:
            async for entries in log.follow_chunks(0):
                n += len(entries)
                if entries[-1].seq >= last:
                    break
    return n, [], []


async def hold(spec: dict[str, Any], clock: Clock) -> None:
    async with Client(spec["url"]) as log:
        last = (await log.read(limit=0)).last_seq
        far = last + 10**12  # past any seq this bench writes: the streams stay idle
        followers = [asyncio.create_task(_idle(log, far)) for _ in range(spec["clients"])]
        await clock.go()  # the parent counts the streams on the master's /health, then measures
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def _idle(log: Client, since: int) -> None:
    async for _ in log.follow(since=since):
        pass


async def run(spec: dict[str, Any], loop_name: str) -> dict[str, Any] | None:
    kind, clock = spec["kind"], Clock()
    if kind == "hold":
        await hold(spec, clock)
        return None
    if kind in ("client", "producer"):
        count, latencies, errors = await appends(spec, clock, produce=kind == "producer")
    elif kind == "stream":
        count, latencies, errors = await stream(spec, clock)
    elif kind == "replay":
        count, latencies, errors = await replay(spec, clock)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    elapsed = time.perf_counter() - clock.t0
    cpu1 = cpu_seconds()
    user, system = cpu1[0] - clock.cpu0[0], cpu1[1] - clock.cpu0[1]
    lat = sorted(latencies)
    ms = 1000.0
    return {
        "count": count,
        "ok": count - len(errors),
        "errors": len(errors),
        "statuses": {},
        "error_sample": errors[0] if errors else None,
        "stalled": False,
        "elapsed_s": elapsed,
        "cpu_s": user + system,
        "cpu_user_s": user,
        "cpu_sys_s": system,
        "p50_ms": percentile(lat, 50) * ms,
        "p99_ms": percentile(lat, 99) * ms,
        "max_ms": (lat[-1] if lat else 0.0) * ms,
        "mean_ms": (sum(lat) / len(lat) if lat else 0.0) * ms,
        "bytes_in": 0,
        "loop": loop_name,
        **clock.extra,
    }


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    factory, name = loop_factory(spec.get("loop", "auto"))
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(spec, name))
    if result is not None:
        emit({"result": result})


if __name__ == "__main__":
    main(sys.argv[1:])
