"""Append-only on-disk log for one node.

A node keeps its log in a directory ``data_dir``:

``meta.json``
    The log identity and the node's epoch state, format 2::

        {"format": 2, "log_id": str|null, "promised": int, "promised_to": str|null, "log_epoch": int}

    It is only ever replaced atomically: write ``meta.json.tmp``, fsync it,
    ``os.replace`` it over ``meta.json``, fsync the directory.  A missing
    ``meta.json`` means "nothing saved yet" and reads as :class:`Meta` ``()``.
    A format-1 meta (``{"format": 1, "log_id": str}``) reads as promised 0,
    log_epoch 0.

``log.dat``
    A sequence of records, nothing else (no file header).  All integers are
    little-endian and unsigned::

        offset  size  field
        ------  ----  -----------------------------------------------------
        0       4     payload_len  u32  number of payload bytes that follow
        4       4     crc          u32  zlib.crc32(payload)
        -- payload (payload_len bytes, at least 29) --
        8       8     seq          u64  entry sequence number
        16      1     flags        u8   the entry's client-batch flags
        17      16    hash              the hash chain value after this entry
        33      4     id_field     u32  low 31 bits: 0 when id is None, else
                                        len(id_utf8) + 1; high bit: more records
                                        of the same atomic append follow
        37      k     id_utf8           k = id_field - 1 (absent when id is None)
        37+k    m     text_utf8         m = payload_len - 29 - k

    i.e. one ``struct "<IIQB16sI"`` followed by id and text.  A record costs 37
    bytes of overhead plus the UTF-8 id and text.  Seqs in the file are
    consecutive starting at 1: the node only persists a gap-free prefix.  The
    "more" bit groups records of one disk append; it has nothing to do with
    ``flags``.  Storage stores flags and hash as given and checks neither.

    A data file written by format 1 (records without flags and hash) is
    refused by :meth:`DiskLog.load`.  It is recognised by its meta: records
    are only ever written after a format-2 meta exists (load() writes one
    when the data file is empty), so records without a format-2 meta are
    format 1.

``rollback/<epoch>-<UTC time>.jsonl``
    Records a node dropped from its log (:meth:`DiskLog.write_rollback`), one
    JSON object per line; never read back by replog.

``LOCK``
    Held with ``flock`` by the process that uses the directory (:meth:`DiskLog.lock`).

Recovery rule (applied by :meth:`DiskLog.load`)
    Records are read from offset 0.  A record at offset X is *bad* when its
    header is shorter than 8 bytes, its payload_len is below 29, its payload
    runs past end of file, or its checksum does not match.  For a bad record,
    the rest of the file (every byte offset after X) is searched for an
    *intact* record: payload_len >= 29, fits in the file, seq not lower than the
    seq expected at X and not higher than the file could hold, checksum
    matches.

    * nothing intact after X  -> torn tail: the file is cut to X with
      ``os.ftruncate`` (and fsynced); ``Loaded.truncated_bytes`` = size - X.
      This covers a partial header, a partial payload, a garbage length that
      runs past EOF, and a full-length payload whose last bytes are zeros or
      garbage -- everything a crash during an unsynced append can leave.
    * an intact record after X -> :class:`CorruptLogError` at offset X.  A
      crash only damages the end of the file, so valid data after a bad record
      means the bad bytes are not a torn write (e.g. a flipped bit in the
      length of a record in the middle must not silently drop its successors).

    After that, a trailing group of an atomic append whose last record (the one
    without the "more" bit) is missing is dropped as well, so an append torn by a
    crash leaves nothing of itself: a batch is on disk whole or not at all.

    A record whose checksum matches but whose content is wrong (seq not
    previous + 1, id_field too large, invalid UTF-8) is always
    :class:`CorruptLogError`, wherever it is: a torn write cannot produce a
    matching checksum.

Durability
    :meth:`DiskLog.append` writes but does not fsync; :meth:`DiskLog.sync` makes
    appended records durable.  :meth:`DiskLog.load` fsyncs the data file and
    the directory before it returns, so everything it returns is durable even
    if the previous process crashed before its fsync (records it left in the
    page cache are synced now, not merely read back).  With ``fsync=False`` no
    method ever calls ``os.fsync`` (for tests and throw-away nodes).
"""

from __future__ import annotations

import datetime
import fcntl
import gc
import itertools
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self
from zlib import crc32

__all__ = ["CorruptLogError", "DataDirLocked", "DiskLog", "Loaded", "Meta", "Record", "encode_records"]

META_NAME = "meta.json"
DATA_NAME = "log.dat"
LOCK_NAME = "LOCK"
ROLLBACK_DIR = "rollback"
FORMAT_VERSION = 2
HASH_SIZE = 16

# One struct for the record header and the fixed part of the payload, so the decoder
# unpacks a record with one call: payload_len, crc32(payload), seq, flags, hash, id_field.
_RECORD_HEAD = struct.Struct("<IIQB16sI")
_HEADER = struct.Struct("<II")  # payload_len, crc32(payload)
_PAYLOAD_HEAD = struct.Struct("<QB16sI")  # seq, flags, hash, id_field
_HEADER_SIZE = _HEADER.size  # 8
_MIN_PAYLOAD = _PAYLOAD_HEAD.size  # 29
_MIN_RECORD = _RECORD_HEAD.size  # 37
_ID_FIELD_AT = _HEADER_SIZE + 8 + 1 + HASH_SIZE  # offset of id_field within a record: 33
_ID_FIELD = struct.Struct("<I")

# High bit of id_field: more records of the same append follow this one. A crash can
# tear an append; load() drops a trailing append whose last record never made it, so a
# batch is on disk all or nothing.
_MORE = 0x80000000
_ID_MASK = _MORE - 1


@dataclass(frozen=True, slots=True)
class Record:
    """One log entry as stored: its id (None for a generated one), text, client-batch flags and chain hash."""

    id: str | None
    text: str
    flags: int
    hash: bytes


@dataclass(frozen=True)
class Meta:
    """What meta.json holds besides the format: the log identity and the node's epoch state."""

    log_id: str | None = None
    promised: int = 0  # highest epoch this node promised to follow
    promised_to: str | None = None  # the master id that promise went to
    log_epoch: int = 0  # epoch of the master whose log this node's log is a prefix of


@dataclass(frozen=True)
class Loaded:
    """What :meth:`DiskLog.load` found on disk."""

    meta: Meta
    entries: list[Record]  # seq 1..n, in order
    truncated_bytes: int


class CorruptLogError(Exception):
    """A log file is damaged in a way that is not a torn tail, or is in a format this version cannot read.

    ``path`` names the file and ``offset`` the byte offset of the first bad
    record (0 for a bad ``meta.json``); both also appear in the message.
    """

    def __init__(self, path: str, offset: int, reason: str = "") -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: corrupt at byte offset {offset}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, int, str]]:
        # Keep the exception picklable despite the custom constructor.
        return (type(self), (self.path, self.offset, self.reason))


class DataDirLocked(Exception):
    """Another process holds the data directory's lock (:meth:`DiskLog.lock`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"data dir {path} is locked: another replog process holds it")

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.path,))


class DiskLog:
    """The log files of one node; see the module docstring for the format.

    Not thread-safe, and one directory must be used by one DiskLog at a time
    (:meth:`lock` makes sure of it across processes).
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: bool = True) -> None:
        """Remember the directory (creating it if missing); reads nothing yet."""
        self._dir = os.fspath(data_dir)
        self._fsync = fsync
        self._meta_path = os.path.join(self._dir, META_NAME)
        self._data_path = os.path.join(self._dir, DATA_NAME)
        self._fd: int | None = None  # the data file, open from load() to close()
        self._lock_fd: int | None = None  # LOCK, flocked, from lock() to close()
        self._last_seq: int | None = None  # None until load()/reset()
        self._size = 0  # bytes of valid records in the data file
        os.makedirs(self._dir, exist_ok=True)

    # ------------------------------------------------------------------ state

    @property
    def last_seq(self) -> int:
        """Seq of the last record in the file (0 when empty)."""
        if self._last_seq is None:
            raise RuntimeError("DiskLog.load() has not been called")
        return self._last_seq

    @property
    def path(self) -> str:
        """The data directory."""
        return self._dir

    @property
    def size(self) -> int:
        """Bytes of valid records in the data file (what its log takes on disk)."""
        return self._size

    def lock(self) -> None:
        """Take an exclusive lock on the directory for as long as this DiskLog is open (until close()).

        Raises DataDirLocked at once when another process (or another DiskLog) holds it.
        Idempotent.  Call it before load(): two processes on one log would corrupt it.
        """
        if self._lock_fd is not None:
            return
        fd = os.open(os.path.join(self._dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(self._dir) from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    # --------------------------------------------------------------- loading

    def load(self) -> Loaded:
        """Read meta and all records, cutting away a torn tail, and make what it returns durable.

        Raises CorruptLogError for damage that is not a torn tail and for a
        format-1 data file.  Afterwards the data file is open and positioned
        for :meth:`append`.
        """
        self._close_data()
        meta, fmt = self._read_meta()
        fd = self._open_data()
        try:
            data = _read_all(fd)
            if data and fmt != FORMAT_VERSION:
                raise CorruptLogError(
                    self._data_path,
                    0,
                    "records in the older format 1 (no format-2 meta.json beside them); this replog reads "
                    "format 2 only: start the node on an empty data dir",
                )
            entries, valid_end = _decode_records(data, self._data_path)
            truncated = len(data) - valid_end
            if truncated:
                os.ftruncate(fd, valid_end)
            # Unconditionally: a crash may have left records (or the cut) in the page cache only.
            self._maybe_fsync(fd)
            if fmt != FORMAT_VERSION:
                self._write_meta(meta)  # records must never exist without a format-2 meta
            else:
                self._fsync_dir()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = valid_end
        self._last_seq = len(entries)
        return Loaded(meta, entries, truncated)

    def _read_meta(self) -> tuple[Meta, int | None]:
        """The stored meta and its format; (Meta(), None) when there is no meta file."""
        try:
            with open(self._meta_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return Meta(), None
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise CorruptLogError(self._meta_path, 0, f"invalid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise CorruptLogError(self._meta_path, 0, "not a JSON object")
        fmt = obj.get("format")
        if fmt == 1:
            if not isinstance(obj.get("log_id"), str):
                raise CorruptLogError(self._meta_path, 0, "no string log_id")
            return Meta(log_id=obj["log_id"]), 1
        if fmt != FORMAT_VERSION:
            raise CorruptLogError(self._meta_path, 0, f"unsupported format {fmt!r}")
        meta = Meta(
            log_id=obj.get("log_id"),
            promised=obj.get("promised"),  # type: ignore[arg-type]
            promised_to=obj.get("promised_to"),
            log_epoch=obj.get("log_epoch"),  # type: ignore[arg-type]
        )
        problem = _meta_problem(meta)
        if problem:
            raise CorruptLogError(self._meta_path, 0, problem)
        return meta, fmt

    def _open_data(self) -> int:
        """Open (creating if needed) the data file for reading and appending.

        Callers fsync the directory afterwards, so that a new file's entry survives a crash.
        """
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        return os.open(self._data_path, flags, 0o644)

    # --------------------------------------------------------------- writing

    def save_meta(self, meta: Meta) -> None:
        """Atomically replace meta.json so that it records ``meta`` (durable on return)."""
        problem = _meta_problem(meta)
        if problem:
            raise ValueError(problem)
        self._write_meta(meta)

    def _write_meta(self, meta: Meta) -> None:
        body = json.dumps(
            {
                "format": FORMAT_VERSION,
                "log_id": meta.log_id,
                "promised": meta.promised,
                "promised_to": meta.promised_to,
                "log_epoch": meta.log_epoch,
            }
        ).encode()
        tmp = self._meta_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, body)
            self._maybe_fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._meta_path)
        self._fsync_dir()

    def append(self, first_seq: int, records: Sequence[Record], *, atomic: bool = False) -> None:
        """Append records as seqs first_seq, first_seq+1, ... with one write.

        ``first_seq`` must be last_seq + 1 (ValueError otherwise).  With atomic,
        a crash leaves all of them or none (see the module docstring).  Not
        durable until :meth:`sync`.  If the write fails, the file is cut back
        so that no partial record is left in front of later appends.
        """
        fd = self._require_open()
        if first_seq != self.last_seq + 1:
            raise ValueError(f"append at seq {first_seq}, expected {self.last_seq + 1}")
        if not records:
            return
        buf = encode_records(first_seq, records, atomic=atomic)
        try:
            _write_all(fd, buf)
        except BaseException:
            # A half-written batch followed by a later good append would look
            # like mid-file corruption on the next load; drop it now.
            os.ftruncate(fd, self._size)
            raise
        self._size += len(buf)
        self._last_seq = first_seq + len(records) - 1

    def sync(self) -> None:
        """Make all appended records durable (no-op when fsync=False)."""
        self._maybe_fsync(self._require_open())

    def truncate(self, last_seq: int) -> None:
        """Drop every record after ``last_seq`` (0 drops all); durable on return.

        Records up to last_seq stay whole even when the cut falls inside one
        atomic append: the kept part becomes a complete append of its own.
        ValueError unless 0 <= last_seq <= last_seq of the file.
        """
        fd = self._require_open()
        if not 0 <= last_seq <= self.last_seq:
            raise ValueError(f"truncate to seq {last_seq}, log holds 1..{self.last_seq}")
        if last_seq == self.last_seq:
            return
        data = _read_all(fd)[: self._size]
        unpack_len = _ID_FIELD.unpack_from  # payload_len is the first u32 of a record
        off = prev = 0
        for _ in range(last_seq):  # a rare operation: walking the headers is fast enough
            prev = off
            off += _HEADER_SIZE + unpack_len(data, off)[0]
        if last_seq and _ID_FIELD.unpack_from(data, prev + _ID_FIELD_AT)[0] & _MORE:
            self._end_append_at(data, prev, off)
        os.ftruncate(fd, off)
        self._maybe_fsync(fd)
        self._size = off
        self._last_seq = last_seq

    def _end_append_at(self, data: bytes, start: int, end: int) -> None:
        """Rewrite the record at data[start:end] in place without its "more" bit, and fsync.

        Otherwise load() would take the kept records for the torn start of an
        append and drop them.  The file stays valid before and after the
        rewrite (the records after it then form an append of their own); only
        a crash tearing this one small in-place write shows up as
        CorruptLogError at ``start``, never as silently lost records.
        """
        payload = bytearray(data[start + _HEADER_SIZE : end])
        at = _ID_FIELD_AT - _HEADER_SIZE
        _ID_FIELD.pack_into(payload, at, _ID_FIELD.unpack_from(payload, at)[0] & _ID_MASK)
        record = _HEADER.pack(len(payload), crc32(payload)) + payload
        # The data fd is O_APPEND, where Linux pwrite() appends: write through a second fd.
        fd = os.open(self._data_path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.pwrite(fd, record, start)
            if written != len(record):
                raise OSError(f"short write rewriting the record at offset {start}")
            self._maybe_fsync(fd)
        finally:
            os.close(fd)

    def write_rollback(self, epoch: int, first_seq: int, records: Sequence[Record]) -> str:
        """Write records (seqs first_seq..) to rollback/<epoch>-<UTC time>.jsonl, durably; return its path.

        One JSON object per line: {"seq", "id", "text", "flags", "hash" (hex)}.
        Never overwrites an existing file.
        """
        rollback_dir = os.path.join(self._dir, ROLLBACK_DIR)
        new_dir = not os.path.isdir(rollback_dir)
        os.makedirs(rollback_dir, exist_ok=True)
        lines = [
            json.dumps(
                {"seq": seq, "id": r.id, "text": r.text, "flags": r.flags, "hash": r.hash.hex()},
                ensure_ascii=False,
            )
            + "\n"
            for seq, r in enumerate(records, start=first_seq)
        ]
        body = "".join(lines).encode()
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for n in itertools.count():
            path = os.path.join(rollback_dir, f"{epoch}-{stamp}{f'-{n}' if n else ''}.jsonl")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            break
        try:
            _write_all(fd, body)
            self._maybe_fsync(fd)
        finally:
            os.close(fd)
        self._fsync_dir(rollback_dir)
        if new_dir:
            self._fsync_dir()
        return path

    def reset(self) -> None:
        """Drop every record, the log identity, the log epoch and the promise: the node is new and empty.

        The promise goes too: a reset node is one of another log (another cluster's copy, a
        diverged secondary), whose promise belonged to that log's masters; like a node restarted
        empty it has forgotten them (the README states that window).
        The records go first: a crash in between leaves an empty log that still
        has its identity (a valid, if short, replica), never records without
        the identity they belong to.
        """
        if self._fd is None:
            self._fd = self._open_data()
        os.ftruncate(self._fd, 0)
        self._maybe_fsync(self._fd)
        self._size = 0
        self._last_seq = 0
        self._write_meta(Meta())

    def close(self) -> None:
        """Close the data file and release the lock (idempotent); load() may be called again."""
        self._close_data()
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # releases the flock

    def _close_data(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._last_seq = None
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --------------------------------------------------------------- helpers

    def _require_open(self) -> int:
        if self._fd is None:
            raise RuntimeError("DiskLog is not open; call load() first")
        return self._fd

    def _maybe_fsync(self, fd: int) -> None:
        if self._fsync:
            os.fsync(fd)

    def _fsync_dir(self, path: str | None = None) -> None:
        """fsync a directory (the data dir by default) so that renames/creations/unlinks are durable."""
        if not self._fsync:
            return
        fd = os.open(path or self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _meta_problem(meta: Meta) -> str:
    """Why ``meta`` cannot be stored ("" when it can)."""
    if meta.log_id is not None and not isinstance(meta.log_id, str):
        return "log_id is neither a string nor null"
    if meta.promised_to is not None and not isinstance(meta.promised_to, str):
        return "promised_to is neither a string nor null"
    for name in ("promised", "log_epoch"):
        value = getattr(meta, name)
        if type(value) is not int or value < 0:
            return f"{name} is not a non-negative integer"
    return ""


# ------------------------------------------------------------------ encoding


def encode_records(first_seq: int, records: Sequence[Record], *, atomic: bool = False) -> bytes:
    """Encode records as consecutive records starting at ``first_seq``.

    With atomic, every record but the last carries the "more follows" bit, so that
    load() keeps the group whole or not at all.  Raises ValueError for a record that
    cannot be stored (id too long, flags not a u8, hash not 16 bytes).
    """
    pack_header = _HEADER.pack
    pack_payload = _PAYLOAD_HEAD.pack
    parts: list[bytes] = []
    add = parts.append
    seq = first_seq
    last = first_seq + len(records) - 1
    try:
        for rec in records:
            more = _MORE if atomic and seq != last else 0
            digest = rec.hash
            if len(digest) != HASH_SIZE:  # "16s" would silently pad or cut it
                raise ValueError(f"cannot encode entry with seq {seq}: hash of {len(digest)} bytes")
            ident = rec.id
            if ident is None:
                payload = pack_payload(seq, rec.flags, digest, more) + rec.text.encode()
            else:
                raw_id = ident.encode()
                if len(raw_id) + 1 >= _MORE:
                    raise ValueError(f"cannot encode entry with seq {seq}: id too long")
                payload = pack_payload(seq, rec.flags, digest, (len(raw_id) + 1) | more) + raw_id + rec.text.encode()
            add(pack_header(len(payload), crc32(payload)))
            add(payload)
            seq += 1
    except struct.error as exc:
        raise ValueError(f"cannot encode entry with seq {seq}: {exc}") from None
    return b"".join(parts)


# ------------------------------------------------------------------ decoding

# Record's generated frozen __init__ goes through object.__setattr__ per field (about
# 0.8 us a record); the decoder builds a million of them, so it fills the slots directly.
_new_object = object.__new__
_set_id = Record.id.__set__  # type: ignore[attr-defined]
_set_text = Record.text.__set__  # type: ignore[attr-defined]
_set_flags = Record.flags.__set__  # type: ignore[attr-defined]
_set_hash = Record.hash.__set__  # type: ignore[attr-defined]


def _decode_records(data: bytes, path: str) -> tuple[list[Record], int]:
    """Decode all records of a data file.

    Returns the records and the offset where valid records end (len(data)
    unless there is a torn tail).  Raises CorruptLogError per the module rule.
    """
    # Collecting garbage while a million new objects pile up costs as much as decoding them,
    # and they form no cycles: pause the collector for the loop.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _decode_loop(data, path)
    finally:
        if collecting:
            gc.enable()


def _decode_loop(data: bytes, path: str) -> tuple[list[Record], int]:
    unpack_head = _RECORD_HEAD.unpack_from
    view = memoryview(data)  # checksums read slices of it without copying them
    new, set_id, set_text, set_flags, set_hash = _new_object, _set_id, _set_text, _set_flags, _set_hash
    cls = Record
    entries: list[Record] = []
    add = entries.append
    size = len(data)
    off = 0
    expected = 1
    whole_end, whole_count = 0, 0  # where the last complete append ends, and its entry count
    # The hot loop is written out inline on purpose: a million records must
    # decode in a couple of seconds.
    while off < size:
        if size - off < _MIN_RECORD:
            reason = "short header" if size - off < _HEADER_SIZE else _why_bad(data, off)
            torn = _torn_or_raise(data, off, expected, path, reason)
            return _whole(entries, torn, whole_end, whole_count)
        length, crc, seq, flags, digest, id_field = unpack_head(data, off)
        start = off + _HEADER_SIZE
        end = start + length
        if length < _MIN_PAYLOAD or end > size or crc32(view[start:end]) != crc:
            torn = _torn_or_raise(data, off, expected, path, _why_bad(data, off))
            return _whole(entries, torn, whole_end, whole_count)
        if seq != expected:
            raise CorruptLogError(path, off, f"seq {seq} where {expected} was expected")
        body = off + _MIN_RECORD
        id_len = id_field & _ID_MASK
        rec = new(cls)
        try:
            if id_len:
                id_end = body + id_len - 1
                if id_end > end:
                    raise CorruptLogError(path, off, f"id length {id_len - 1} exceeds payload")
                set_id(rec, data[body:id_end].decode())
                set_text(rec, data[id_end:end].decode())
            else:
                set_id(rec, None)
                set_text(rec, data[body:end].decode())
        except UnicodeDecodeError as exc:
            raise CorruptLogError(path, off, f"invalid UTF-8 ({exc.reason})") from None
        set_flags(rec, flags)
        set_hash(rec, digest)
        add(rec)
        expected += 1
        off = end
        if not id_field & _MORE:
            whole_end, whole_count = off, expected - 1
    return _whole(entries, off, whole_end, whole_count)


def _whole(entries: list[Record], end: int, whole_end: int, whole_count: int) -> tuple[list[Record], int]:
    """Entries and end offset cut back to the last complete append (a torn group is dropped whole)."""
    if whole_end < end:
        del entries[whole_count:]
        return entries, whole_end
    return entries, end


def _why_bad(data: bytes, off: int) -> str:
    """Human-readable reason why the record at ``off`` failed the checks."""
    length, _ = _HEADER.unpack_from(data, off)
    if length < _MIN_PAYLOAD:
        return f"impossible payload length {length}"
    if off + _HEADER_SIZE + length > len(data):
        return f"payload length {length} runs past end of file ({len(data)} bytes)"
    return "checksum mismatch"


def _torn_or_raise(data: bytes, off: int, expected: int, path: str, reason: str) -> int:
    """Decide whether the bad record at ``off`` is a torn tail.

    Returns ``off`` (where the file must be cut) when nothing intact follows;
    raises CorruptLogError otherwise.
    """
    found = _find_intact_record(data, off + 1, expected)
    if found is None:
        return off
    raise CorruptLogError(path, off, f"{reason}; an intact record follows at offset {found}")


def _find_intact_record(data: bytes, start: int, expected: int) -> int | None:
    """Offset of the first intact record at or after ``start``, or None.

    Intact: plausible length, fits in the file, seq between ``expected`` and
    the most records the file could still hold, checksum matches.  Only runs
    after a bad record, so it may be slow-ish (one Python step per byte).
    """
    size = len(data)
    if not data[start:].strip(b"\0"):
        return None  # zero-filled tail (e.g. file size extended, data lost)
    max_seq = expected + (size - start) // _MIN_RECORD
    unpack_head = _RECORD_HEAD.unpack_from
    for pos in range(start, size - _MIN_RECORD + 1):
        length, crc, seq, _, _, _ = unpack_head(data, pos)
        begin = pos + _HEADER_SIZE
        end = begin + length
        if length < _MIN_PAYLOAD or end > size:
            continue
        # Cheap seq filter before the checksum: keeps the scan linear-ish.
        if expected <= seq <= max_seq and crc32(data[begin:end]) == crc:
            return pos
    return None


# ------------------------------------------------------------------- raw I/O


def _read_all(fd: int) -> bytes:
    """The whole file behind ``fd``, read from offset 0."""
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    pos = 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break  # file shrank under us; take what is there
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, buf: bytes) -> None:
    """Write all of ``buf``: one write() unless the kernel returns short."""
    view = memoryview(buf)
    while view:
        written = os.write(fd, view)
        view = view[written:]
