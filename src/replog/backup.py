"""Backup and restore of a whole log: what `replog export` writes and `replog import` reads.

The file is JSON lines, made of segments. A segment starts with a header line::

    {"replog_export": 1, "log": "<log id>", "since": N, "prev": "<chain value at N>",
     "last_seq": L, "hash": "<chain value at L>"}

and holds the entries N+1..L, one line each::

    {"seq": s, "id": "<the client's id>" | null, "text": "...", "flags": 0 | 1 | 3, "hash": "<chain value at s>"}

`id` null means a generated id (derived from the log id and the seq, as every node derives it); `flags`
marks the entries of a client batch (replog.log); `hash` is the chain value after the entry
(replog.log.chain). One export writes one segment. An export `--since N` appended to a file that ends at
seq N continues it: a file may hold several segments, each starting at or before the end of those
before it.

Import verifies everything before it keeps it: the chain is recomputed from GENESIS over the data
dir's own log and every entry of the file, and each entry's chain value must equal the one written;
a segment must end exactly at its header's last_seq and hash (a truncated file cannot); every segment
must be of the data dir's log. A refused import leaves the data dir as it found it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import aiohttp

from replog import jsoncodec
from replog.http import LOG_PAGE_MAX
from replog.log import BATCH, BATCH_MORE, GENESIS, HASH_SIZE, chain
from replog.protocol import parse_hash
from replog.storage import CorruptLogError, DataDirLocked, DiskLog, Meta, Record

FORMAT = 1  # the value of "replog_export" in a header
WRITE_CHUNK = 10_000  # entries per disk append of an import (extended to the end of a client batch)

Progress = Callable[[int], None]  # called with the number of entries just done


class BackupError(Exception):
    """An export or import that cannot be done; the message is one line for the user."""


def _no_progress(n: int) -> None:
    pass


# -- export -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    log_id: str
    since: int
    last_seq: int


def header_line(log_id: str, since: int, prev: str, last_seq: int, last_hash: str) -> bytes:
    return jsoncodec.dumps(
        {"replog_export": FORMAT, "log": log_id, "since": since, "prev": prev, "last_seq": last_seq, "hash": last_hash}
    )


def entry_lines(entries: list[list[Any]]) -> bytes:
    """Wire entries [seq, id, text, flags, hash] as export lines, each ending in a newline."""
    dumps = jsoncodec.dumps
    # A format per line with the encoder on each value is twice as fast as encoding one dict per entry.
    try:
        return b"".join(
            [
                b'{"seq":%d,"id":%b,"text":%b,"flags":%d,"hash":%b}\n' % (s, dumps(i), dumps(t), f, dumps(h))
                for s, i, t, f, h in entries
            ]
        )
    except (TypeError, ValueError):
        raise BackupError("the node sent malformed entries") from None


async def _get_page(session: aiohttp.ClientSession, url: str, since: int, limit: int) -> dict[str, Any]:
    async with session.get(f"{url}/log", params={"since": str(since), "limit": str(limit)}) as resp:
        raw = await resp.read()
        try:
            data = jsoncodec.loads(raw)
        except jsoncodec.DecodeError:
            raise BackupError(f"{url}/log answered HTTP {resp.status} with a body that is not JSON") from None
        if resp.status != 200:
            if isinstance(data, dict) and "error" in data:
                raise BackupError(f"{url}/log answered HTTP {resp.status} {data['error']}: {data.get('detail', '')}")
            raise BackupError(f"{url}/log answered HTTP {resp.status}")
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise BackupError(f"{url}/log answered with something that is not a page of a log (is it a replog node?)")
        return data


async def export(
    url: str,
    out: BinaryIO,
    *,
    since: int = 0,
    page: int = LOG_PAGE_MAX,
    window: int = 4,
    progress: Callable[[int, int], Progress] | None = None,
    token: str | None = None,
    ca: str | None = None,
) -> Exported:
    """Write the node's durable log after seq since, as one segment, to out (token, if given, is sent as
    Authorization: Bearer; ca, if given, is the CA file an https:// node is verified with).

    The end is the node's durable end when the export starts; pages are fetched `window` at a time and
    checked to chain onto each other (each page's "prev" is the last chain value before it), and the
    chain value at the end must still be the one the header announced. progress(since, last_seq), if
    given, returns the callback told how many entries each page wrote.
    """
    url = url.rstrip("/")
    collecting = gc.isenabled()
    gc.disable()  # pages make a million short-lived objects and no cycles: collecting them costs more than the rest
    try:
        return await _export(url, out, since, page, window, progress, token, ca)
    finally:
        if collecting:
            gc.enable()


async def _export(
    url: str,
    out: BinaryIO,
    since: int,
    page: int,
    window: int,
    progress: Callable[[int, int], Progress] | None,
    token: str | None = None,
    ca: str | None = None,
) -> Exported:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca)) if ca is not None else None
    async with aiohttp.ClientSession(timeout=timeout, headers=headers, connector=connector) as session:
        first = await _get_page(session, url, since, page)
        log_id, end, end_hash, prev = first.get("log"), first.get("last_seq"), first.get("hash"), first.get("prev")
        if not isinstance(log_id, str) or not log_id:
            raise BackupError(f"{url} holds no log yet: nothing to export")
        if type(end) is not int or not isinstance(end_hash, str) or not (isinstance(prev, str) or since > end):
            raise BackupError(f"{url}/log answered without last_seq, hash and prev (is it a replog node?)")
        if since > end:
            raise BackupError(f"{url} holds the log up to seq {end} only, before --since {since}")
        advance = progress(since, end) if progress is not None else _no_progress
        out.write(header_line(log_id, since, prev, end, end_hash) + b"\n")
        starts = list(range(since, end, page))
        pending: dict[int, asyncio.Task[dict[str, Any]]] = {}
        try:
            for i, start in enumerate(starts):
                for ahead in starts[i + 1 : i + 1 + window]:
                    if ahead not in pending:
                        pending[ahead] = asyncio.create_task(_get_page(session, url, ahead, min(page, end - ahead)))
                data = first if i == 0 else await pending.pop(start)
                entries = data["entries"]
                want = min(page, end - start)
                if data.get("log") != log_id:
                    raise BackupError(f"{url} changed logs during the export (now {data.get('log')})")
                try:
                    if data.get("prev") != prev or len(entries) < want or entries[0][0] != start + 1:
                        raise BackupError(
                            f"{url} no longer holds seq {start + 1} as before: its log changed during the export"
                        )
                    entries = entries[:want]
                    out.write(entry_lines(entries))
                    prev = entries[-1][4]
                except (TypeError, IndexError, KeyError):
                    raise BackupError(f"{url} sent a malformed page of its log at seq {start + 1}") from None
                advance(want)
        finally:
            for task in pending.values():
                task.cancel()
            await asyncio.gather(*pending.values(), return_exceptions=True)
        if prev != end_hash:
            raise BackupError(f"{url} holds another entry at seq {end} than when the export started: its log changed")
    return Exported(log_id, since, end)


# -- import -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    log_id: str
    held: int  # the last seq the data dir held before the import
    last_seq: int  # the last seq it holds now

    @property
    def added(self) -> int:
        return self.last_seq - self.held


@dataclass(frozen=True)
class Header:
    log_id: str
    since: int
    prev: bytes
    last_seq: int
    hash: bytes
    line: int


def _parse_header(obj: dict[str, Any], line: int) -> Header:
    if obj.get("replog_export") != FORMAT:
        raise BackupError(
            f"line {line}: a header of export format {obj.get('replog_export')!r}; this replog reads {FORMAT}"
        )
    log_id, since, last = obj.get("log"), obj.get("since"), obj.get("last_seq")
    prev, last_hash = parse_hash(obj.get("prev")), parse_hash(obj.get("hash"))
    if not isinstance(log_id, str) or not log_id:
        raise BackupError(f"line {line}: the header names no log id")
    if type(since) is not int or type(last) is not int or not 0 <= since <= last or prev is None or last_hash is None:
        raise BackupError(f"line {line}: the header is malformed (since, last_seq, prev or hash)")
    return Header(log_id, since, prev, last, last_hash, line)


def _refuse(line: int, what: str) -> BackupError:
    return BackupError(f"line {line}: {what}")


class _Importer:
    """One import into one locked, loaded data dir; see import_log."""

    def __init__(self, disk: DiskLog, held: list[Record], meta: Meta, progress: Callable[[int, int], Progress]) -> None:
        self.disk = disk
        self.meta = meta  # as found: restored if the import is refused
        self.held = len(held)
        self.end = len(held)  # the last seq held or verified so far
        self.hashes = bytearray(GENESIS)  # hashes[16*s : 16*s+16]: the chain value at s, for every seq up to end
        self.pending: list[Record] = []  # verified, not yet appended: seqs written_end+1 ..
        self.written_end = len(held)
        self.log_id: str | None = meta.log_id
        self.meta_saved = False
        self._progress = progress
        self._advance: Progress = _no_progress
        h = GENESIS
        for seq, rec in enumerate(held, start=1):  # the data dir's own log is checked like the file
            h = chain(h, rec.id, rec.text, rec.flags)
            if h != rec.hash:
                raise BackupError(f"the data dir's own log breaks its hash chain at seq {seq}: it is corrupt")
            self.hashes += h

    def hash_at(self, seq: int) -> bytes:
        return bytes(self.hashes[HASH_SIZE * seq : HASH_SIZE * (seq + 1)])

    def run(self, lines: Iterable[bytes]) -> Imported:
        header: Header | None = None
        expected = 0  # the next seq the current segment must carry
        h = GENESIS  # the chain value at expected - 1
        in_batch = False  # the entry before carried BATCH_MORE: the next one belongs to its client batch
        done = 0
        number = 0
        loads = jsoncodec.loads
        for number, raw in enumerate(lines, start=1):
            try:
                obj = loads(raw)
            except jsoncodec.DecodeError:
                what = "is cut short" if not raw.endswith(b"\n") else "is not JSON"
                raise _refuse(number, f"{what}: the file is truncated or corrupt") from None
            if not isinstance(obj, dict):
                raise _refuse(number, "is not a JSON object: not a replog export")
            if "replog_export" in obj:
                if header is not None:
                    self._end_segment(header, expected, h, number)
                header = _parse_header(obj, number)
                h = self._start_segment(header)
                expected, in_batch = header.since + 1, False
                self._advance = self._progress(header.since, header.last_seq)
                continue
            if header is None:
                raise _refuse(number, "the file does not start with an export header: not a replog export")
            seq, id_, text, flags, given = (
                obj.get("seq"),
                obj.get("id"),
                obj.get("text"),
                obj.get("flags"),
                obj.get("hash"),
            )
            if seq != expected or type(seq) is not int:
                raise _refuse(number, f"seq {seq!r} where {expected} was expected: the file is corrupt")
            if seq > header.last_seq:
                raise _refuse(
                    number, f"seq {seq} is past the segment's last_seq {header.last_seq}: the file is corrupt"
                )
            if (id_ is not None and (not isinstance(id_, str) or not id_)) or not isinstance(text, str):
                raise _refuse(number, f"the entry at seq {seq} has a malformed id or text")
            if (
                flags not in (0, BATCH, BATCH | BATCH_MORE)
                or type(flags) is not int
                or (in_batch and not flags & BATCH)
            ):
                raise _refuse(number, f"the entry at seq {seq} has impossible flags {flags!r}")
            try:
                h = chain(h, id_, text, flags)
            except UnicodeEncodeError:
                raise _refuse(number, f"the entry at seq {seq} is not valid Unicode") from None
            if h != parse_hash(given):
                raise _refuse(number, f"the hash chain breaks at seq {seq}: the file is corrupt or was altered")
            if seq <= self.end:
                if h != self.hash_at(seq):
                    raise _refuse(number, f"seq {seq} differs from the entry the data dir holds: another history")
            else:
                self.hashes += h
                self.end = seq
                self.pending.append(Record(id_, text, flags, h))
                if len(self.pending) >= WRITE_CHUNK and not flags & BATCH_MORE:
                    self._flush()
            in_batch = bool(flags & BATCH_MORE)
            expected += 1
            done += 1
            if done >= 10_000:
                self._advance(done)
                done = 0
        if header is None:
            raise BackupError("the input is empty: not a replog export")
        self._end_segment(header, expected, h, number + 1)
        self._advance(done)
        self._flush()
        self.disk.sync()
        if not self.meta_saved and self.meta.log_id is None:
            self._save_identity()  # an export of an empty log: the identity alone
        return Imported(self.log_id, self.held, self.end)  # type: ignore[arg-type]

    def _start_segment(self, header: Header) -> bytes:
        if self.log_id is not None and header.log_id != self.log_id:
            where = "the data dir holds" if self.meta.log_id is not None else "the file began with"
            raise _refuse(
                header.line,
                f"the export is of log {header.log_id} but {where} log {self.log_id}: refusing a foreign log",
            )
        self.log_id = header.log_id
        if header.since > self.end:
            raise _refuse(
                header.line,
                f"the segment starts after seq {header.since}, but the data dir holds only up to seq {self.end}: "
                "import the earlier part first",
            )
        if header.prev != self.hash_at(header.since):
            raise _refuse(header.line, f"the segment continues another history than the one held at seq {header.since}")
        return header.prev

    def _end_segment(self, header: Header, expected: int, h: bytes, line: int) -> None:
        if expected - 1 != header.last_seq:
            raise _refuse(
                line,
                f"the segment of line {header.line} ends at seq {expected - 1}, not at its last_seq {header.last_seq}: "
                "the file is truncated",
            )
        if h != header.hash:
            raise _refuse(line, f"the chain value at seq {header.last_seq} is not the header's: the file is corrupt")

    def _save_identity(self) -> None:
        # Before any record: the data dir is of this log, and its log epoch drops to 0 (the new entries are
        # not known to be a prefix of any master's log; a master confirms it at its first request).
        self.disk.save_meta(Meta(self.log_id, self.meta.promised, self.meta.promised_to, log_epoch=0))
        self.meta_saved = True

    def _flush(self) -> None:
        if not self.pending:
            return
        if not self.meta_saved:
            self._save_identity()
        if self.pending[-1].flags & BATCH_MORE:
            raise BackupError(f"the file ends inside a client batch (seq {self.end}): it is truncated or corrupt")
        self.disk.append(self.written_end + 1, self.pending, atomic=True)
        self.written_end += len(self.pending)
        self.pending = []

    def undo(self) -> None:
        """Put the data dir back as it was found (after a refusal)."""
        if self.written_end > self.held:
            self.disk.truncate(self.held)
        if self.meta_saved:
            self.disk.save_meta(self.meta)


def import_log(
    lines: Iterable[bytes],
    data_dir: str,
    *,
    fsync: bool = True,
    progress: Callable[[int, int], Progress] | None = None,
) -> Imported:
    """Verify an export and add what the data dir lacks to it, through DiskLog.

    The data dir may be new or empty, or hold a prefix of the same log (the import continues after it,
    checking the overlap). It is locked for the import: a running node on it is refused. The meta gets the
    file's log id and log epoch 0, and keeps the promise found there (0 in a new data dir). Raises
    BackupError, leaving the data dir as it was, for a foreign, corrupt or truncated file.
    """
    existed = os.path.exists(data_dir)
    disk = DiskLog(data_dir, fsync=fsync)  # creates the directory
    try:
        try:
            disk.lock()
            loaded = disk.load()
        except DataDirLocked:
            raise BackupError(f"{data_dir} is in use by a running replog node: stop it first") from None
        except CorruptLogError as exc:
            raise BackupError(f"the data dir's log is corrupt: {exc}") from None
        if loaded.meta.log_id is None and loaded.entries:
            raise BackupError(f"{data_dir} holds entries without a log identity: not a replog data dir")
        importer = _Importer(disk, loaded.entries, loaded.meta, progress or (lambda since, last: _no_progress))
        del loaded
        try:
            return importer.run(lines)
        except BaseException:
            importer.undo()
            raise
    except OSError as exc:
        raise BackupError(f"cannot write {data_dir}: {exc}") from None
    except BackupError:
        if not existed:  # as it was: absent (only what DiskLog created is in it)
            disk.close()
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    finally:
        disk.close()
