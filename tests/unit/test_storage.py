"""Unit tests for replog.storage: format round trips, torn tails, corruption, fsync."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replog.storage import CorruptLogError, DataDirLocked, DiskLog, Loaded, Meta, Record, encode_records

Entry = Record


def rec(ident: str | None, text: str, flags: int = 0) -> Record:
    """A record whose hash differs per id and text (storage stores hashes, it does not chain them)."""
    return Record(ident, text, flags, bytes(16) if ident is None else ident.encode().ljust(16, b"#")[:16])


# Texts the callers may hand us: any str that is encodable as UTF-8.
utf8_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
entry_st = st.builds(Record, st.none() | utf8_text, utf8_text, st.integers(0, 255), st.binary(min_size=16, max_size=16))

# tmp_path is shared by all examples of one test, so each example uses its own
# fresh subdirectory.
PER_EXAMPLE_DIRS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def fresh_dir(tmp_path: Path) -> Path:
    return tmp_path / uuid.uuid4().hex


def write_log(path: Path, entries: list[Entry], *, log_id: str | None = None) -> list[int]:
    """Write entries one record per append; return each record's start offset plus the end."""
    log = DiskLog(path, fsync=False)
    log.load()
    if log_id is not None:
        log.save_meta(Meta(log_id=log_id))
    offsets = [0]
    for seq, entry in enumerate(entries, start=1):
        log.append(seq, [entry])
        offsets.append(offsets[-1] + len(encode_records(seq, [entry])))
    log.close()
    return offsets


def load(path: Path) -> Loaded:
    log = DiskLog(path, fsync=False)
    try:
        return log.load()
    finally:
        log.close()


def data_file(path: Path) -> Path:
    return path / "log.dat"


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    raw = bytearray(data_file(path).read_bytes())
    raw[offset] ^= mask
    data_file(path).write_bytes(bytes(raw))


SAMPLE: list[Entry] = [rec("a", "first"), rec(None, "second", 1), rec("ü-id", "dritte ✓", 3), rec(None, "", 255)]


# ----------------------------------------------------------------- round trips


def test_empty_directory_loads_as_new_log(tmp_path: Path) -> None:
    log = DiskLog(tmp_path / "new" / "nested")
    assert log.load() == Loaded(Meta(), [], 0)
    assert log.last_seq == 0
    log.close()


def test_round_trip_across_several_appends(tmp_path: Path) -> None:
    log = DiskLog(tmp_path)
    log.load()
    log.save_meta(Meta(log_id="log-1", promised=3, promised_to="m-3", log_epoch=2))
    log.append(1, SAMPLE[:1])
    log.append(2, SAMPLE[1:3])
    log.append(4, SAMPLE[3:])
    log.append(5, [])  # empty batch is a no-op
    log.sync()
    assert log.last_seq == 4
    log.close()

    with DiskLog(tmp_path) as again:
        loaded = again.load()
        assert loaded == Loaded(Meta("log-1", 3, "m-3", 2), SAMPLE, 0)
        assert again.last_seq == 4
        again.append(5, [rec("x", "y")])
    assert load(tmp_path).entries == [*SAMPLE, rec("x", "y")]


def test_save_meta_replaces_atomically(tmp_path: Path) -> None:
    log = DiskLog(tmp_path)
    log.save_meta(Meta(log_id="one", promised=1))
    log.save_meta(Meta(log_id="twö", promised=7, promised_to="m", log_epoch=5))
    assert load(tmp_path).meta == Meta("twö", 7, "m", 5)
    assert json.loads((tmp_path / "meta.json").read_text()) == {
        "format": 2,
        "log_id": "twö",
        "promised": 7,
        "promised_to": "m",
        "log_epoch": 5,
    }
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_corrupt_meta_is_reported(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(CorruptLogError) as info:
        load(tmp_path)
    assert "meta.json" in str(info.value)


@PER_EXAMPLE_DIRS
@given(entries=st.lists(entry_st, max_size=30), split=st.integers(0, 30))
def test_any_entries_round_trip(tmp_path: Path, entries: list[Entry], split: int) -> None:
    path = fresh_dir(tmp_path)
    log = DiskLog(path, fsync=False)
    log.load()
    split = min(split, len(entries))
    log.append(1, entries[:split])
    log.append(split + 1, entries[split:])
    log.close()
    assert load(path) == Loaded(Meta(), entries, 0)


# ------------------------------------------------------------------- torn tails


@PER_EXAMPLE_DIRS
@given(entries=st.lists(entry_st, min_size=1, max_size=8), data=st.data())
def test_cut_at_any_offset_keeps_whole_records(tmp_path: Path, entries: list[Entry], data: st.DataObject) -> None:
    path = fresh_dir(tmp_path)
    offsets = write_log(path, entries)
    cut = data.draw(st.integers(0, offsets[-1]), label="cut")
    os.truncate(data_file(path), cut)

    whole = max(i for i, end in enumerate(offsets) if end <= cut)
    loaded = load(path)
    assert loaded.entries == entries[:whole]
    assert loaded.truncated_bytes == cut - offsets[whole]
    assert data_file(path).stat().st_size == offsets[whole]  # really cut

    log = DiskLog(path, fsync=False)
    log.load()
    log.append(whole + 1, [rec("after", "crash")])
    log.close()
    assert load(path) == Loaded(Meta(), [*entries[:whole], rec("after", "crash")], 0)


def test_flipped_byte_in_last_record_drops_it(tmp_path: Path) -> None:
    offsets = write_log(tmp_path, SAMPLE)
    last_start, end = offsets[-2], offsets[-1]
    original = data_file(tmp_path).read_bytes()
    for pos in range(last_start, end):  # header and payload alike
        data_file(tmp_path).write_bytes(original)
        flip_byte(tmp_path, pos)
        loaded = load(tmp_path)
        assert loaded.entries == SAMPLE[:-1], pos
        assert loaded.truncated_bytes == end - last_start, pos


def test_zeroed_tail_of_full_length_record_is_torn(tmp_path: Path) -> None:
    offsets = write_log(tmp_path, [rec(None, "keep"), rec("id", "a longer text that gets zeroed")])
    raw = bytearray(data_file(tmp_path).read_bytes())
    raw[-10:] = bytes(10)
    data_file(tmp_path).write_bytes(bytes(raw))
    assert load(tmp_path) == Loaded(Meta(), [rec(None, "keep")], offsets[2] - offsets[1])


def test_zero_filled_extension_is_torn(tmp_path: Path) -> None:
    write_log(tmp_path, SAMPLE)
    with open(data_file(tmp_path), "ab") as f:
        f.write(bytes(5000))
    assert load(tmp_path) == Loaded(Meta(), SAMPLE, 5000)


def test_garbage_length_past_eof_is_torn(tmp_path: Path) -> None:
    write_log(tmp_path, SAMPLE)
    with open(data_file(tmp_path), "ab") as f:
        f.write(b"\xff\xff\xff\x7fjunk-after-a-crash")
    loaded = load(tmp_path)
    assert loaded.entries == SAMPLE
    assert loaded.truncated_bytes == 22


# ------------------------------------------------------------------- corruption


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_flipped_byte_in_middle_record_is_corruption(tmp_path: Path, mask: int) -> None:
    offsets = write_log(tmp_path, SAMPLE)
    start, end = offsets[1], offsets[2]  # the second of four records
    original = data_file(tmp_path).read_bytes()
    for pos in range(start, end):  # including the length field
        data_file(tmp_path).write_bytes(original)
        flip_byte(tmp_path, pos, mask)
        with pytest.raises(CorruptLogError) as info:
            load(tmp_path)
        err = info.value
        assert err.offset == start, pos
        assert err.path == str(data_file(tmp_path))
        assert str(data_file(tmp_path)) in str(err) and f"offset {start}" in str(err)
    assert data_file(tmp_path).stat().st_size == offsets[-1]  # nothing was cut


def test_out_of_order_seq_is_corruption(tmp_path: Path) -> None:
    offsets = write_log(tmp_path, SAMPLE[:2])
    with open(data_file(tmp_path), "ab") as f:
        f.write(encode_records(4, [rec(None, "skipped seq 3")]))  # checksum is valid
    with pytest.raises(CorruptLogError) as info:
        load(tmp_path)
    assert info.value.offset == offsets[2]
    assert "seq 4" in str(info.value)


def test_corrupt_log_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(CorruptLogError("/x/log.dat", 42, "bad")))
    assert (err.path, err.offset, str(err)) == ("/x/log.dat", 42, str(CorruptLogError("/x/log.dat", 42, "bad")))


# ---------------------------------------------------------------- API contracts


def test_append_requires_next_seq(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, fsync=False)
    log.load()
    log.append(1, [rec(None, "a")])
    for wrong in (0, 1, 3):
        with pytest.raises(ValueError):
            log.append(wrong, [rec(None, "b")])
    assert log.last_seq == 1
    log.close()
    assert load(tmp_path).entries == [rec(None, "a")]


def test_append_before_load_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        DiskLog(tmp_path).append(1, [rec(None, "a")])


def test_reset_empties_log_and_meta(tmp_path: Path) -> None:
    write_log(tmp_path, SAMPLE, log_id="old")
    log = DiskLog(tmp_path, fsync=False)
    log.load()
    log.reset()
    assert log.last_seq == 0
    log.append(1, [rec("n", "new")])
    log.close()
    assert load(tmp_path) == Loaded(Meta(), [rec("n", "new")], 0)


def test_reset_without_load(tmp_path: Path) -> None:
    write_log(tmp_path, SAMPLE, log_id="old")
    log = DiskLog(tmp_path, fsync=False)
    log.reset()
    log.close()
    assert load(tmp_path) == Loaded(Meta(), [], 0)


def inode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


@pytest.fixture
def fsync_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records (st_dev, st_ino) of each file os.fsync is called on (the OS is mocked, not replog)."""
    calls: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        st = os.fstat(fd)
        calls.append((st.st_dev, st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_fsync_false_never_fsyncs(tmp_path: Path, fsync_calls: list[tuple[int, int]]) -> None:
    log = DiskLog(tmp_path, fsync=False)
    log.load()
    log.save_meta(Meta(log_id="x"))
    log.append(1, SAMPLE, atomic=True)
    log.sync()
    log.truncate(2)
    log.write_rollback(1, 3, SAMPLE[2:])
    log.reset()
    log.close()
    log.load()
    log.close()
    assert fsync_calls == []


def test_fsync_true_sync_fsyncs_data_file(tmp_path: Path, fsync_calls: list[tuple[int, int]]) -> None:
    log = DiskLog(tmp_path, fsync=True)
    log.load()
    log.append(1, SAMPLE)
    fsync_calls.clear()
    log.sync()
    assert fsync_calls == [inode(data_file(tmp_path))]
    log.close()


# -- atomic appends -------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.lists(st.lists(entry_st, min_size=1, max_size=5), min_size=1, max_size=5),
    data=st.data(),
)
def test_a_torn_atomic_append_is_dropped_whole(tmp_path: Path, groups: list[list[Entry]], data: st.DataObject) -> None:
    """Cut the file anywhere: what loads is exactly the appends that were whole before the cut."""
    d = tmp_path / uuid.uuid4().hex
    log = DiskLog(d, fsync=False)
    log.load()
    ends = []  # file size after each append
    seq = 1
    for group in groups:
        log.append(seq, group, atomic=True)
        seq += len(group)
        ends.append(os.path.getsize(d / "log.dat"))
    log.close()
    cut = data.draw(st.integers(0, ends[-1]), label="cut")
    with open(d / "log.dat", "r+b") as f:
        f.truncate(cut)
    whole = [g for g, end in zip(groups, ends, strict=False) if end <= cut]
    loaded = DiskLog(d, fsync=False).load()
    assert loaded.entries == [e for g in whole for e in g]
    assert os.path.getsize(d / "log.dat") == (max([e for e in ends if e <= cut], default=0))


# -- format 2: meta, older formats --------------------------------------------------


def format1_records(entries: list[tuple[str | None, str]]) -> bytes:
    """Records as format 1 wrote them: seq u64, id_field u32, id, text (no flags, no hash)."""
    out = b""
    for seq, (ident, text) in enumerate(entries, start=1):
        raw_id = b"" if ident is None else ident.encode()
        payload = struct.pack("<QI", seq, 0 if ident is None else len(raw_id) + 1) + raw_id + text.encode()
        out += struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    return out


@pytest.mark.parametrize("meta", ['{"format": 1, "log_id": "old"}', None])
def test_a_format_1_data_file_is_refused(tmp_path: Path, meta: str | None) -> None:
    if meta is not None:
        (tmp_path / "meta.json").write_text(meta)
    old = format1_records([("a", "x"), (None, "y")])
    data_file(tmp_path).write_bytes(old)
    with pytest.raises(CorruptLogError) as info:
        load(tmp_path)
    assert "older format 1" in str(info.value) and str(data_file(tmp_path)) in str(info.value)
    assert data_file(tmp_path).read_bytes() == old  # nothing was cut or rewritten
    assert (tmp_path / "meta.json").exists() == (meta is not None)


def test_a_format_1_meta_without_records_reads_as_epoch_0_and_is_upgraded(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"format": 1, "log_id": "old"}')
    log = DiskLog(tmp_path, fsync=False)
    assert log.load() == Loaded(Meta(log_id="old"), [], 0)
    log.append(1, SAMPLE)
    log.close()
    assert json.loads((tmp_path / "meta.json").read_text())["format"] == 2
    assert load(tmp_path) == Loaded(Meta(log_id="old"), SAMPLE, 0)


@pytest.mark.parametrize(
    "body",
    [
        '{"format": 3, "log_id": "x", "promised": 0, "promised_to": null, "log_epoch": 0}',
        '{"format": 2, "log_id": "x", "promised": "1", "promised_to": null, "log_epoch": 0}',
        '{"format": 2, "log_id": "x", "promised": 1, "promised_to": null, "log_epoch": -1}',
        '{"format": 2, "log_id": 5, "promised": 1, "promised_to": null, "log_epoch": 0}',
        '{"format": 2, "log_id": "x", "promised": 1, "log_epoch": 0, "promised_to": true}',
        '{"format": 2, "log_id": "x", "promised": 1}',
        '{"format": 1}',
        "[]",
    ],
)
def test_a_meta_that_is_not_format_2_or_1_is_reported(tmp_path: Path, body: str) -> None:
    (tmp_path / "meta.json").write_text(body)
    with pytest.raises(CorruptLogError) as info:
        load(tmp_path)
    assert "meta.json" in str(info.value)


@pytest.mark.parametrize(
    "meta",
    [Meta(log_id=1), Meta(promised=-1), Meta(log_epoch=True), Meta(promised_to=b"m")],  # type: ignore[arg-type]
)
def test_save_meta_refuses_what_it_could_not_read_back(tmp_path: Path, meta: Meta) -> None:
    with pytest.raises(ValueError):
        DiskLog(tmp_path, fsync=False).save_meta(meta)
    assert not (tmp_path / "meta.json").exists()


@pytest.mark.parametrize("bad", [Record(None, "x", 0, bytes(15)), Record(None, "x", 256, bytes(16))])
def test_a_record_that_cannot_be_stored_is_refused(bad: Record) -> None:
    with pytest.raises(ValueError):
        encode_records(1, [bad])


def test_reset_makes_a_new_node(tmp_path: Path) -> None:
    write_log(tmp_path, SAMPLE)
    log = DiskLog(tmp_path, fsync=False)
    log.save_meta(Meta(log_id="old", promised=9, promised_to="m-9", log_epoch=8))
    log.reset()
    log.close()
    # --reset is how a node of another log (another cluster's copy, a diverged secondary) rejoins: its
    # promise belonged to that log's masters, and keeping it would fence this cluster's master.
    assert load(tmp_path) == Loaded(Meta(), [], 0)


# -- durability of what load() returns (issue 8, defect 8) ------------------------------


def test_load_of_an_intact_log_fsyncs_file_and_directory(tmp_path: Path, fsync_calls: list[tuple[int, int]]) -> None:
    """A crash may leave records in the page cache only; load() must make what it returns durable."""
    write_log(tmp_path, SAMPLE, log_id="x")  # written without fsync, as a crashed node may have left it
    fsync_calls.clear()
    log = DiskLog(tmp_path, fsync=True)
    assert log.load().entries == SAMPLE
    log.close()
    for path in (data_file(tmp_path), tmp_path):
        assert inode(path) in fsync_calls, path


# -- truncate -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.lists(st.lists(entry_st, min_size=1, max_size=5), min_size=1, max_size=5),
    data=st.data(),
)
def test_truncate_keeps_exactly_the_prefix(tmp_path: Path, groups: list[list[Entry]], data: st.DataObject) -> None:
    """Cut at any seq, also inside an atomic append: the kept records load back whole, later appends follow."""
    d = fresh_dir(tmp_path)
    log = DiskLog(d, fsync=False)
    log.load()
    entries: list[Entry] = []
    for group in groups:
        log.append(len(entries) + 1, group, atomic=True)
        entries += group
    keep = data.draw(st.integers(0, len(entries)), label="keep")
    log.truncate(keep)
    assert log.last_seq == keep
    assert os.path.getsize(d / "log.dat") == len(encode_records(1, entries[:keep]))
    log.close()
    assert load(d) == Loaded(Meta(), entries[:keep], 0)

    log.load()
    log.append(keep + 1, [rec("next", "after truncate")], atomic=True)
    log.close()
    assert load(d).entries == [*entries[:keep], rec("next", "after truncate")]


def test_truncate_bounds(tmp_path: Path) -> None:
    log = DiskLog(tmp_path, fsync=False)
    log.load()
    log.append(1, SAMPLE)
    for wrong in (-1, 5):
        with pytest.raises(ValueError):
            log.truncate(wrong)
    log.truncate(4)  # nothing to drop
    assert log.last_seq == 4
    log.close()
    assert load(tmp_path).entries == SAMPLE


def test_truncate_is_synced(tmp_path: Path, fsync_calls: list[tuple[int, int]]) -> None:
    log = DiskLog(tmp_path, fsync=True)
    log.load()
    log.append(1, SAMPLE, atomic=True)
    fsync_calls.clear()
    log.truncate(1)
    assert fsync_calls == [inode(data_file(tmp_path))] * 2  # the in-place rewrite of record 1, the cut
    log.close()


# -- rollback files -----------------------------------------------------------------


def test_write_rollback_writes_one_json_line_per_record(tmp_path: Path, fsync_calls: list[tuple[int, int]]) -> None:
    log = DiskLog(tmp_path, fsync=True)
    first = log.write_rollback(7, 3, SAMPLE)
    second = log.write_rollback(7, 3, SAMPLE[:1])
    assert first != second
    for path in (first, second):
        assert os.path.dirname(path) == str(tmp_path / "rollback")
        assert re.fullmatch(r"7-\d{8}T\d{6}\.\d{6}Z(-\d+)?\.jsonl", os.path.basename(path)), path
    lines = Path(first).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"seq": seq, "id": r.id, "text": r.text, "flags": r.flags, "hash": r.hash.hex()}
        for seq, r in enumerate(SAMPLE, start=3)
    ]
    assert {inode(Path(first)), inode(tmp_path / "rollback"), inode(tmp_path)} <= set(fsync_calls)


# -- the data dir lock ----------------------------------------------------------------


def test_a_second_disk_log_cannot_lock_the_dir(tmp_path: Path) -> None:
    first = DiskLog(tmp_path, fsync=False)
    first.lock()
    first.lock()  # idempotent
    second = DiskLog(tmp_path, fsync=False)
    with pytest.raises(DataDirLocked) as info:
        second.lock()
    assert str(tmp_path) in str(info.value) and "another replog process" in str(info.value)
    first.close()
    second.lock()  # released by close()
    second.close()


def test_the_lock_holds_against_another_process(tmp_path: Path) -> None:
    script = (
        "import sys; from replog.storage import DiskLog; "
        f"DiskLog({str(tmp_path)!r}).lock(); print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(DataDirLocked):
            DiskLog(tmp_path).lock()
    finally:
        holder.communicate("", timeout=30)  # EOF on stdin: the holder exits, the kernel drops its lock
    log = DiskLog(tmp_path)
    log.lock()
    log.close()


def test_data_dir_locked_pickles() -> None:
    err = pickle.loads(pickle.dumps(DataDirLocked("/x")))
    assert (err.path, str(err)) == ("/x", str(DataDirLocked("/x")))
