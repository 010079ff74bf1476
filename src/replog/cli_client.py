"""The client commands of `replog` (post, get, health, tail), on top of replog.Client.

Imported only by replog.cli: failures become one click.ClickException line, which the CLI prints
as `Error: ...` before it exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TextIO

import click

from replog import jsoncodec
from replog.client import Appended, AppendedBatch, Client, ReplogError, WriteConcernTimeout, normalize_url

W = int | str | None
WINDOW = 1000  # messages read from stdin and not yet answered, at most
PAGE = 10_000  # entries per read of `replog tail` without -f


def run(coro: Awaitable[Any]) -> Any:
    """Run one client command; a refusal or an unreachable node becomes one clear line (exit 1)."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except WriteConcernTimeout as exc:
        raise click.ClickException(
            f"write concern timeout: stored as {_where(exc.body)}, held by {exc.acks} of the {exc.w} nodes asked "
            "for; it keeps replicating"
        ) from None
    except ReplogError as exc:
        raise click.ClickException(str(exc)) from None
    except BrokenPipeError:
        # The reader of our output went away (`replog tail | head`): not an error of ours.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush is quiet
        return None


def client(urls: str | Sequence[str], token: str | None, ca: str | None, retry_for: float | None) -> Client:
    """A Client of these URLs ("host:port" means http://); a URL that is none is one Error line."""
    try:
        listed = [urls] if isinstance(urls, str) else list(urls)
        return Client([normalize_url(u) for u in listed], token=token, ca=ca, retry_for=retry_for)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read the CA file: {exc}") from None


# -- post -------------------------------------------------------------------------------


async def post(
    log: Client, texts: Sequence[str], w: W, id_: str | None, timeout: float | None, as_json: bool, watch: bool
) -> None:
    """Append TEXT (several: one batch); print the stored entry and its acks. With watch, a wait of
    more than a second shows, on stderr, what the write waits for."""
    async with log:
        if len(texts) == 1:
            write: Awaitable[Any] = log.append(texts[0], w=w, id=id_, timeout=timeout)
        else:
            write = log.append_batch(list(texts), w=w, id=id_, timeout=timeout)
        result = await (_watched(log, write, w) if watch else write)
    _print_stored(result, as_json)


async def post_lines(log: Client, w: W, timeout: float | None, as_json: bool) -> None:
    """Append every non-empty line of stdin as one message, in order, through a producer; print each."""
    async with log, log.producer(w=w, timeout=timeout) as producer:
        window: list[asyncio.Task[Appended]] = []
        try:
            async for line in _stdin_lines():
                window.append(asyncio.ensure_future(producer.append(line)))
                if len(window) >= WINDOW:
                    _print_stored(await window.pop(0), as_json)
            while window:
                _print_stored(await window.pop(0), as_json)
        finally:
            for task in window:
                task.cancel()


async def _stdin_lines() -> AsyncIterator[str]:
    fd = sys.stdin.fileno()
    if stat.S_ISREG(os.fstat(fd).st_mode):  # a file: reading it never blocks
        for line in sys.stdin:
            if line.rstrip("\r\n"):
                yield line.rstrip("\r\n")
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while raw := await reader.readline():
        line = raw.decode().rstrip("\r\n")
        if line:
            yield line


def _print_stored(result: Appended | AppendedBatch, as_json: bool) -> None:
    if isinstance(result, AppendedBatch):
        body = {"entries": [e._asdict() for e in result.entries], "w": result.w, "acks": result.acks}
    else:
        body = {"seq": result.seq, "id": result.id, "text": result.text, "w": result.w, "acks": result.acks}
    created = result.created
    if as_json:
        click.echo(jsoncodec.dumps(body).decode())
        return
    verb = "stored" if created else "already stored"
    click.echo(f"{verb} {_where(body)} w={body['w']} acks={body['acks']}")


def _where(data: dict[str, Any]) -> str:
    if data.get("entries"):
        entries = data["entries"]
        return f"seq={entries[0]['seq']}..{entries[-1]['seq']} ({len(entries)} entries)"
    return f"seq={data.get('seq')} id={data.get('id')}"


async def _watched(log: Client, write: Awaitable[Any], w: W, out: TextIO | None = None, every: float = 1.0) -> Any:
    """Await write; meanwhile, after `every` seconds, show on out (stderr) what it waits for, each `every`."""
    out = out if out is not None else sys.stderr
    task = asyncio.ensure_future(write)
    shown = False
    started = time.monotonic()
    target: int | None = None  # the master's last seq when we first looked: ours is at most that
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=every)
            if done:
                return task.result()
            try:
                health = await asyncio.wait_for(log.health(), every)
            except (ReplogError, TimeoutError):
                continue
            if target is None:
                target = health.get("appended_seq", health.get("seq", 0))
            out.write("\r\x1b[K" + _waiting_line(health, w, target, time.monotonic() - started))
            out.flush()
            shown = True
    finally:
        if shown:
            out.write("\r\x1b[K")
            out.flush()


def _waiting_line(health: dict[str, Any], w: W, target: int, waited: float) -> str:
    nodes = health.get("nodes", 1 + len(health.get("secondaries", [])))
    need = {"majority": health.get("quorum"), "all": nodes}.get(w, w) if isinstance(w, str) else w
    holding = 1 + sum(1 for s in health.get("secondaries", []) if s.get("seq", 0) >= target)
    missing = [
        f"{s['url']} ({s['status']}, seq {s['seq']})" for s in health.get("secondaries", []) if s.get("seq", 0) < target
    ]
    wanted = f"{need} nodes" if need is not None else "the master's default w"
    line = f"waiting {waited:.0f}s for {wanted} to hold it: {holding} of {nodes} do"
    if missing:
        line += "; not yet " + ", ".join(missing)
    return line + " (Ctrl-C stops waiting; the message stays stored)"


# -- reads ----------------------------------------------------------------------------------


async def get(log: Client, since: int | None, limit: int | None, as_json: bool) -> None:
    """Print the messages a node shows, one SEQ<TAB>TEXT line each (or its JSON answer)."""
    async with log:
        page = await log.read(since or 0, limit)
    if as_json:
        body = {"messages": [e._asdict() for e in page], "last_seq": page.last_seq}
        click.echo(jsoncodec.dumps(body).decode())
        return
    sys.stdout.write("".join(f"{e.seq}\t{e.text}\n" for e in page))


async def tail(log: Client, since: int, follow: bool) -> None:
    """Print SEQ<TAB>TEXT lines after since; with follow, then every new entry, reconnecting (and
    resuming after the last line printed) when the node goes away and comes back."""
    out = sys.stdout
    async with log:
        if not follow:
            while page := await log.read(since, PAGE):
                out.write("".join(f"{e.seq}\t{e.text}\n" for e in page))
                since = page[-1].seq
            return
        lost = False

        def on_error(error: BaseException, delay: float) -> None:
            nonlocal lost
            if not lost:
                sys.stderr.write(f"replog tail: lost the stream ({error or type(error).__name__}); reconnecting\n")
                sys.stderr.flush()
            lost = True

        async for entries in log.follow_chunks(since, on_error=on_error):
            lost = False
            out.write("".join(f"{e.seq}\t{e.text}\n" for e in entries))
            out.flush()


async def health(log: Client, as_json: bool) -> None:
    """Print the master's status and each secondary's status and lag."""
    async with log:
        data = await log.health()
    if as_json:
        click.echo(jsoncodec.dumps(data).decode())
        return
    if data.get("role") != "master":
        click.echo(f"{data.get('role')} seq={data.get('seq')}")
        return
    click.echo(f"master {data['status']} seq={data['seq']} quorum={data['quorum']}/{data.get('nodes', '?')}")
    for s in data["secondaries"]:
        contact = "never" if s["last_contact"] is None else f"{s['last_contact']:.1f}s ago"
        click.echo(f"  {s['url']}  {s['status']:<9}  seq={s['seq']}  lag={s['lag']}  contact={contact}")
