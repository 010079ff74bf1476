"""Append-only on-disk log for one node.

A node keeps its log in a directory ``data_dir`` with two files:

``meta.json``
    The log identity: ``{"format": 1, "log_id": "<str>"}``.  It is only ever
    replaced atomically: write ``meta.json.tmp``, fsync it, ``os.replace`` it
    over ``meta.json``, fsync the directory.  A missing ``meta.json`` means "no
    identity yet" (a new, empty log).

``log.dat``
    A sequence of records, nothing else (no file header).  All integers are
    little-endian and unsigned::

        offset  size  field
        ------  ----  -----------------------------------------------------
        0       4     payload_len  u32  number of payload bytes that follow
        4       4     crc          u32  zlib.crc32(payload)
        -- payload (payload_len bytes, at least 12) --
        8       8     seq          u64  entry sequence number
        16      4     id_field     u32  low 31 bits: 0 when id is None, else
                                        len(id_utf8) + 1; high bit: more records
                                        of the same atomic append follow
        20      k     id_utf8           k = id_field - 1 (absent when id is None)
        20+k    m     text_utf8         m = payload_len - 12 - k

    i.e. header ``struct "<II"``, payload header ``struct "<QI"``.  A record
    costs 20 bytes of overhead plus the UTF-8 id and text.  Seqs in the file are
    consecutive starting at 1: the node only persists a gap-free prefix.

Recovery rule (applied by :meth:`DiskLog.load`)
    Records are read from offset 0.  A record at offset X is *bad* when its
    header is shorter than 8 bytes, its payload_len is below 12, its payload
    runs past end of file, or its checksum does not match.  For a bad record,
    the rest of the file (every byte offset after X) is searched for an
    *intact* record: payload_len >= 12, fits in the file, seq not lower than the
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
    appended records durable.  With ``fsync=False`` no method ever calls
    ``os.fsync`` (for tests and throw-away nodes).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from zlib import crc32

__all__ = ["CorruptLogError", "DiskLog", "Loaded"]

META_NAME = "meta.json"
DATA_NAME = "log.dat"
FORMAT_VERSION = 1

_HEADER = struct.Struct("<II")  # payload_len, crc32(payload)
_PAYLOAD_HEADER = struct.Struct("<QI")  # seq, id_field
_HEADER_SIZE = _HEADER.size  # 8
_MIN_PAYLOAD = _PAYLOAD_HEADER.size  # 12
_MIN_RECORD = _HEADER_SIZE + _MIN_PAYLOAD  # 20


class CorruptLogError(Exception):
    """A log file is damaged in a way that is not a torn tail.

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


@dataclass(frozen=True)
class Loaded:
    """What :meth:`DiskLog.load` found on disk."""

    log_id: str | None
    entries: list[tuple[str | None, str]]  # (id, text) for seq 1..n, in order
    truncated_bytes: int


class DiskLog:
    """The log files of one node; see the module docstring for the format.

    Not thread-safe, and one directory must be used by one DiskLog at a time.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: bool = True) -> None:
        """Remember the directory (creating it if missing); reads nothing yet."""
        self._dir = os.fspath(data_dir)
        self._fsync = fsync
        self._meta_path = os.path.join(self._dir, META_NAME)
        self._data_path = os.path.join(self._dir, DATA_NAME)
        self._fd: int | None = None
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

    # --------------------------------------------------------------- loading

    def load(self) -> Loaded:
        """Read meta and all records, cutting away a torn tail.

        Raises CorruptLogError for damage that is not a torn tail.  Afterwards
        the data file is open and positioned for :meth:`append`.
        """
        self.close()
        log_id = self._read_meta()
        fd = self._open_data()
        try:
            data = _read_all(fd)
            entries, valid_end = _decode_records(data, self._data_path)
            truncated = len(data) - valid_end
            if truncated:
                os.ftruncate(fd, valid_end)
                self._maybe_fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = valid_end
        self._last_seq = len(entries)
        return Loaded(log_id, entries, truncated)

    def _read_meta(self) -> str | None:
        """The stored log_id, or None when there is no meta file."""
        try:
            with open(self._meta_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise CorruptLogError(self._meta_path, 0, f"invalid JSON ({exc})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("log_id"), str):
            raise CorruptLogError(self._meta_path, 0, "no string log_id")
        if meta.get("format") != FORMAT_VERSION:
            raise CorruptLogError(self._meta_path, 0, f"unsupported format {meta.get('format')!r}")
        return meta["log_id"]

    def _open_data(self) -> int:
        """Open (creating if needed) the data file for reading and appending."""
        existed = os.path.exists(self._data_path)
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self._data_path, flags, 0o644)
        if not existed:
            # The new directory entry must survive a crash too.
            self._fsync_dir()
        return fd

    # --------------------------------------------------------------- writing

    def set_log_id(self, log_id: str) -> None:
        """Atomically replace meta.json so that it records ``log_id``."""
        if not isinstance(log_id, str):
            raise TypeError(f"log_id must be str, not {type(log_id).__name__}")
        body = json.dumps({"format": FORMAT_VERSION, "log_id": log_id}).encode()
        tmp = self._meta_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            _write_all(fd, body)
            self._maybe_fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._meta_path)
        self._fsync_dir()

    def append(self, first_seq: int, entries: Sequence[tuple[str | None, str]], *, atomic: bool = False) -> None:
        """Append entries as seqs first_seq, first_seq+1, ... with one write.

        ``first_seq`` must be last_seq + 1 (ValueError otherwise).  Not
        durable until :meth:`sync`.  If the write fails, the file is cut back
        so that no partial record is left in front of later appends.
        """
        fd = self._require_open()
        if first_seq != self.last_seq + 1:
            raise ValueError(f"append at seq {first_seq}, expected {self.last_seq + 1}")
        if not entries:
            return
        buf = encode_records(first_seq, entries, atomic=atomic)
        try:
            _write_all(fd, buf)
        except BaseException:
            # A half-written batch followed by a later good append would look
            # like mid-file corruption on the next load; drop it now.
            os.ftruncate(fd, self._size)
            raise
        self._size += len(buf)
        self._last_seq = first_seq + len(entries) - 1

    def sync(self) -> None:
        """Make all appended records durable (no-op when fsync=False)."""
        self._maybe_fsync(self._require_open())

    def reset(self) -> None:
        """Drop every record and the meta; the log is afterwards new and empty.

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
        for name in (self._meta_path, self._meta_path + ".tmp"):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        self._fsync_dir()

    def close(self) -> None:
        """Close the data file (idempotent); load() may be called again."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._last_seq = None
            os.close(fd)

    def __enter__(self) -> DiskLog:
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

    def _fsync_dir(self) -> None:
        """fsync the directory so that renames/creations/unlinks are durable."""
        if not self._fsync:
            return
        fd = os.open(self._dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------ encoding


# High bit of id_field: more records of the same append follow this one. A crash can
# tear an append; load() drops a trailing append whose last record never made it, so a
# batch is on disk all or nothing.
_MORE = 0x80000000


def encode_records(first_seq: int, entries: Sequence[tuple[str | None, str]], *, atomic: bool = False) -> bytes:
    """Encode entries as consecutive records starting at ``first_seq``.

    With atomic, every record but the last carries the "more follows" bit, so that
    load() keeps the group whole or not at all. Raises ValueError for an entry too large.
    """
    pack_header = _HEADER.pack
    pack_payload = _PAYLOAD_HEADER.pack
    parts: list[bytes] = []
    add = parts.append
    seq = first_seq
    last = first_seq + len(entries) - 1
    try:
        for ident, text in entries:
            more = _MORE if atomic and seq != last else 0
            if ident is None:
                payload = pack_payload(seq, more) + text.encode()
            else:
                raw_id = ident.encode()
                if len(raw_id) + 1 >= _MORE:
                    raise ValueError(f"cannot encode entry with seq {seq}: id too long")
                payload = pack_payload(seq, (len(raw_id) + 1) | more) + raw_id + text.encode()
            add(pack_header(len(payload), crc32(payload)))
            add(payload)
            seq += 1
    except struct.error as exc:
        raise ValueError(f"cannot encode entry with seq {seq}: {exc}") from None
    return b"".join(parts)


# ------------------------------------------------------------------ decoding


def _decode_records(data: bytes, path: str) -> tuple[list[tuple[str | None, str]], int]:
    """Decode all records of a data file.

    Returns the entries and the offset where valid records end (len(data)
    unless there is a torn tail).  Raises CorruptLogError per the module rule.
    """
    unpack_header = _HEADER.unpack_from
    unpack_payload = _PAYLOAD_HEADER.unpack_from
    entries: list[tuple[str | None, str]] = []
    add = entries.append
    size = len(data)
    off = 0
    expected = 1
    whole_end, whole_count = 0, 0  # where the last complete append ends, and its entry count
    # The hot loop is written out inline on purpose: a million records must
    # decode in a couple of seconds.
    while off < size:
        if size - off < _HEADER_SIZE:
            end = _torn_or_raise(data, off, expected, path, "short header")
            return _whole(entries, end, whole_end, whole_count)
        length, crc = unpack_header(data, off)
        start = off + _HEADER_SIZE
        end = start + length
        if length < _MIN_PAYLOAD or end > size or crc32(data[start:end]) != crc:
            torn = _torn_or_raise(data, off, expected, path, _why_bad(data, off))
            return _whole(entries, torn, whole_end, whole_count)
        seq, id_field = unpack_payload(data, start)
        more = id_field & _MORE
        id_field &= ~_MORE
        if seq != expected:
            raise CorruptLogError(path, off, f"seq {seq} where {expected} was expected")
        body = start + _MIN_PAYLOAD
        try:
            if id_field:
                id_end = body + id_field - 1
                if id_end > end:
                    raise CorruptLogError(path, off, f"id length {id_field - 1} exceeds payload")
                add((data[body:id_end].decode(), data[id_end:end].decode()))
            else:
                add((None, data[body:end].decode()))
        except UnicodeDecodeError as exc:
            raise CorruptLogError(path, off, f"invalid UTF-8 ({exc.reason})") from None
        expected += 1
        off = end
        if not more:
            whole_end, whole_count = off, len(entries)
    return _whole(entries, off, whole_end, whole_count)


def _whole(entries: list[tuple[str | None, str]], end: int, whole_end: int, whole_count: int) -> tuple[list[tuple[str | None, str]], int]:
    """Entries and end offset cut back to the last complete append (a torn group is dropped whole)."""
    if whole_end < end:
        del entries[whole_count:]
        return entries, whole_end
    return entries, end


def _why_bad(data: bytes, off: int) -> str:
    """Human-readable reason why the record at ``off`` failed the checks."""
    length, crc = _HEADER.unpack_from(data, off)
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
    unpack_header = _HEADER.unpack_from
    unpack_payload = _PAYLOAD_HEADER.unpack_from
    for pos in range(start, size - _MIN_RECORD + 1):
        length, crc = unpack_header(data, pos)
        begin = pos + _HEADER_SIZE
        end = begin + length
        if length < _MIN_PAYLOAD or end > size:
            continue
        seq, _ = unpack_payload(data, begin)
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
