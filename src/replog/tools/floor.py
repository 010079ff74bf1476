"""The floor under the producer row of `replog bench`: the same w=3 round trip with no replog in it.

    python -m replog.tools.floor [--messages N] [--transport raw|websocket|http ...] [--loop asyncio|uvloop]

Four processes on loopback, shaped like the producer row: a client where 32 coroutines each await
their own append, coalesced into one batch per turn of the loop (as Client.producer does), one
batch in flight; a "master" that gives each message a seq, sends the batch to two "secondaries" and
answers once both have acknowledged it; the secondaries decode the batch and acknowledge its last seq.
JSON on every hop, nothing else: no log, no hash chain, no ids, no durability, no auth, no TLS.

The same relay runs over three transports:

    raw        length-prefixed frames on asyncio Protocols (the least Python can do per hop)
    websocket  one aiohttp WebSocket per hop, a message per batch
    http       aiohttp servers and ClientSessions, a POST per batch and hop (what replog does)

With 32 messages outstanding, throughput is 32 / (one batch's round trip): every process is on
the path of every batch, so the round trip is the sum of each one's cost per hop. The table shows
where that cost puts the ceiling on this machine, and so what a change of transport could buy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from replog.tools.bench import machine_info, process_cpu
from replog.tools.cluster import free_port
from replog.tools.loadgen import loop_factory

CALLERS = 32
TRANSPORTS = ("raw", "websocket", "http")
_LENGTH = struct.Struct("!I")


def _encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _entries(state: dict[str, int], texts: list[str]) -> tuple[int, bytes]:
    """What the master does per batch: number the messages, encode the batch for the secondaries."""
    first = state["seq"] + 1
    state["seq"] += len(texts)
    body = {"entries": [{"seq": first + i, "text": t} for i, t in enumerate(texts)], "last": state["seq"]}
    return first, _encode(body)


def _ack(frame: bytes) -> bytes:
    """What a secondary does per batch: decode it, acknowledge its last seq."""
    return _encode({"seq": json.loads(frame)["last"]})


# -- raw: length-prefixed frames on asyncio Protocols ----------------------------------------------


class _Framed(asyncio.Protocol):
    def __init__(self, on_frame: Callable[[_Framed, bytes], None]) -> None:
        self._buf = bytearray()
        self._on_frame = on_frame
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= _LENGTH.size:
            (n,) = _LENGTH.unpack_from(self._buf)
            if len(self._buf) < _LENGTH.size + n:
                return
            frame = bytes(self._buf[_LENGTH.size : _LENGTH.size + n])
            del self._buf[: _LENGTH.size + n]
            self._on_frame(self, frame)

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_LENGTH.pack(len(payload)) + payload)


async def _raw_secondary(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: _Framed(lambda p, f: p.send(_ack(f))), "127.0.0.1", port)


async def _raw_master(port: int, secondaries: list[int]) -> None:
    loop = asyncio.get_running_loop()
    waiting: dict[int, list[Any]] = {}  # last seq of a batch -> [acks, client, first, count]
    state = {"seq": 0}

    def on_ack(_: _Framed, frame: bytes) -> None:
        last = json.loads(frame)["seq"]
        batch = waiting[last]
        batch[0] += 1
        if batch[0] == len(secondaries):
            del waiting[last]
            batch[1].send(_encode({"first": batch[2], "n": batch[3]}))

    links = []
    for p in secondaries:
        _, link = await loop.create_connection(lambda: _Framed(on_ack), "127.0.0.1", p)
        links.append(link)

    def on_batch(client: _Framed, frame: bytes) -> None:
        texts = json.loads(frame)["messages"]
        first, out = _entries(state, texts)
        waiting[state["seq"]] = [0, client, first, len(texts)]
        for link in links:
            link.send(out)

    await loop.create_server(lambda: _Framed(on_batch), "127.0.0.1", port)


async def _raw_client(port: int) -> Callable[[list[str]], Awaitable[int]]:
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    _, link = await loop.create_connection(lambda: _Framed(lambda _, f: answers.put_nowait(f)), "127.0.0.1", port)

    async def send(texts: list[str]) -> int:
        link.send(_encode({"messages": texts}))
        return int(json.loads(await answers.get())["first"])

    return send


# -- websocket and http: aiohttp on every hop ---------------------------------------------------


async def _serve(port: int, routes: list[Any]) -> None:
    from aiohttp import web

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()


async def _ws_secondary(port: int) -> None:
    from aiohttp import web

    async def replicate(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(_ack(msg.data))
        return ws

    await _serve(port, [web.get("/", replicate)])


async def _ws_master(port: int, secondaries: list[int]) -> None:
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession()
    links = [await session.ws_connect(f"http://127.0.0.1:{p}/") for p in secondaries]
    state = {"seq": 0}

    async def write(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            texts = json.loads(msg.data)["messages"]
            first, out = _entries(state, texts)
            for link in links:
                await link.send_bytes(out)
            for link in links:  # one batch in flight per link: the next message is this batch's ack
                await link.receive()
            await ws.send_bytes(_encode({"first": first, "n": len(texts)}))
        return ws

    await _serve(port, [web.get("/", write)])


async def _ws_client(port: int) -> Callable[[list[str]], Awaitable[int]]:
    import aiohttp

    ws = await aiohttp.ClientSession().ws_connect(f"http://127.0.0.1:{port}/")

    async def send(texts: list[str]) -> int:
        await ws.send_bytes(_encode({"messages": texts}))
        return int(json.loads((await ws.receive()).data)["first"])

    return send


async def _http_secondary(port: int) -> None:
    from aiohttp import web

    async def replicate(request: web.Request) -> web.Response:
        return web.Response(body=_ack(await request.read()), content_type="application/json")

    await _serve(port, [web.post("/replicate", replicate)])


async def _http_master(port: int, secondaries: list[int]) -> None:
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession()
    state = {"seq": 0}
    headers = {"Content-Type": "application/json"}

    async def replicate(p: int, out: bytes) -> None:
        async with session.post(f"http://127.0.0.1:{p}/replicate", data=out, headers=headers) as r:
            await r.read()

    async def write(request: web.Request) -> web.Response:
        texts = json.loads(await request.read())["messages"]
        first, out = _entries(state, texts)
        await asyncio.gather(*(replicate(p, out) for p in secondaries))
        return web.Response(body=_encode({"first": first, "n": len(texts)}), content_type="application/json")

    await _serve(port, [web.post("/messages", write)])


async def _http_client(port: int) -> Callable[[list[str]], Awaitable[int]]:
    import aiohttp

    session = aiohttp.ClientSession()
    url = f"http://127.0.0.1:{port}/messages"

    async def send(texts: list[str]) -> int:
        async with session.post(
            url, data=_encode({"messages": texts}), headers={"Content-Type": "application/json"}
        ) as r:
            return int(json.loads(await r.read())["first"])

    return send


ROLES: dict[str, dict[str, Any]] = {
    "raw": {"secondary": _raw_secondary, "master": _raw_master, "client": _raw_client},
    "websocket": {"secondary": _ws_secondary, "master": _ws_master, "client": _ws_client},
    "http": {"secondary": _http_secondary, "master": _http_master, "client": _http_client},
}


# -- the client's load: 32 callers, one coalescing sender, as Client.producer ----------------------


async def _load(send: Callable[[list[str]], Awaitable[int]], messages: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    queue: list[tuple[str, asyncio.Future[int]]] = []
    wake = asyncio.Event()
    seqs: list[int] = []

    async def sender() -> None:
        while True:
            await wake.wait()
            wake.clear()
            while queue:
                await asyncio.sleep(0)  # a turn of the loop, for the callers woken together to join
                batch = queue[:]
                queue.clear()
                first = await send([text for text, _ in batch])
                for i, (_, fut) in enumerate(batch):
                    fut.set_result(first + i)

    async def append(text: str) -> int:
        fut: asyncio.Future[int] = loop.create_future()
        queue.append((text, fut))
        wake.set()
        return await fut

    numbers = iter(range(messages))

    async def caller() -> None:
        for n in numbers:
            seqs.append(await append(f"c{n:09d}"))

    task = asyncio.create_task(sender())
    await send(["warm-up"])
    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    task.cancel()
    return {"messages": len(seqs), "distinct": len(set(seqs)), "elapsed_s": elapsed, "cpu_s": cpu}


def _role(argv: list[str]) -> None:
    """A child process: `--role NAME TRANSPORT LOOP PORT [MESSAGES | SECONDARY_PORT...]`."""
    role, transport, loop_name, port, *rest = argv
    factory, _ = loop_factory(loop_name)

    async def main() -> None:
        make = ROLES[transport][role]
        if role == "client":
            result = await _load(await make(int(port)), int(rest[0]))
            print(json.dumps(result), flush=True)
            return
        await (make(int(port), [int(p) for p in rest]) if role == "master" else make(int(port)))
        print("ready", flush=True)
        await asyncio.Event().wait()  # served until killed

    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def measure(transport: str, messages: int, loop: str = "asyncio") -> dict[str, Any]:
    """Run the relay over one transport; its rate and each process's CPU per batch."""
    child = [sys.executable, "-m", "replog.tools.floor", "--role"]
    ports = [free_port() for _ in range(3)]
    servers: list[subprocess.Popen[str]] = []
    try:
        for role, port, extra in (
            ("secondary", ports[0], []),
            ("secondary", ports[1], []),
            ("master", ports[2], ports[:2]),
        ):
            proc = subprocess.Popen(
                [*child, role, transport, loop, str(port), *map(str, extra)], stdout=subprocess.PIPE, text=True
            )
            servers.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {transport} {role} did not start")
        before = [process_cpu(p.pid) or 0.0 for p in servers]
        done = subprocess.run(
            [*child, "client", transport, loop, str(ports[2]), str(messages)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        after = [process_cpu(p.pid) or 0.0 for p in servers]
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
    if done.returncode != 0:
        raise RuntimeError(f"the {transport} client failed: {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout)
    batches = result["messages"] / CALLERS
    ms = 1000.0 / batches
    return {
        "transport": transport,
        "messages": result["messages"],
        "distinct_seqs": result["distinct"],
        "rate": result["messages"] / result["elapsed_s"],
        "batch_ms": result["elapsed_s"] * ms,
        "cpu_ms_per_batch": {
            "client": result["cpu_s"] * ms,
            "master": (after[2] - before[2]) * ms,
            "secondary": (after[0] - before[0]) * ms,
        },
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--role"]:
        _role(argv[1:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=64_000, help="appends per transport (default 64,000)")
    parser.add_argument("--transport", choices=TRANSPORTS, action="append", help="repeat for several (default: all)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="every process's event loop")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.messages < CALLERS:
        parser.error(f"--messages must be at least {CALLERS}")
    rows = [measure(t, args.messages, args.loop) for t in args.transport or TRANSPORTS]
    info = machine_info(args.loop)
    if args.json:
        print(json.dumps({"machine": info, "rows": rows}, indent=2))
        return
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, loop {info['loop']}")
    print(f"{CALLERS} callers each awaiting its own append, one batch in flight, w=3 (relay, no replog)\n")
    print(f"{'transport':<10} {'msgs/s':>9} {'ms/batch':>9}   CPU ms per batch: client / master / a secondary")
    for r in rows:
        cpu = r["cpu_ms_per_batch"]
        print(
            f"{r['transport']:<10} {r['rate']:>9,.0f} {r['batch_ms']:>9.2f}"
            f"   {cpu['client']:.2f} / {cpu['master']:.2f} / {cpu['secondary']:.2f}"
        )


if __name__ == "__main__":
    main()
