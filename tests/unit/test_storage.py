"""Unit tests for replog.storage: format round trips, torn tails, corruption, fsync."""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replog.storage import CorruptLogError, DiskLog, Loaded, encode_records

Entry = tuple[str | None, str]

# Texts the callers may hand us: any str that is encodable as UTF-8.
utf8_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
entry_st = st.tuples(st.none() | utf8_text, utf8_text)

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
        log.set_log_id(log_id)
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


SAMPLE: list[Entry] = [("a", "first"), (None, "second"), ("ü-id", "dritte ✓"), (None, "")]


# ----------------------------------------------------------------- round trips


def test_empty_directory_loads_as_new_log(tmp_path: Path) -> None:
    log = DiskLog(tmp_path / "new" / "nested")
    assert log.load() == Loaded(None, [], 0)
    assert log.last_seq == 0
    log.close()


def test_round_trip_across_several_appends(tmp_path: Path) -> None:
    log = DiskLog(tmp_path)
    log.load()
    log.set_log_id("log-1")
    log.append(1, SAMPLE[:1])
    log.append(2, SAMPLE[1:3])
    log.append(4, SAMPLE[3:])
    log.append(5, [])  # empty batch is a no-op
    log.sync()
    assert log.last_seq == 4
    log.close()

    with DiskLog(tmp_path) as again:
        loaded = again.load()
        assert loaded == Loaded("log-1", SAMPLE, 0)
        assert again.last_seq == 4
        again.append(5, [("x", "y")])
    assert load(tmp_path).entries == [*SAMPLE, ("x", "y")]


def test_set_log_id_replaces_atomically(tmp_path: Path) -> None:
    log = DiskLog(tmp_path)
    log.set_log_id("one")
    log.set_log_id("twö")
    assert load(tmp_path).log_id == "twö"
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
    assert load(path) == Loaded(None, entries, 0)


# ------------------------------------------------------------------- torn tails


@PER_EXAMPLE_DIRS
@given(entries=st.lists(entry_st, min_size=1, max_size=8), data=st.data())
def test_cut_at_any_offset_keeps_whole_records(
    tmp_path: Path, entries: list[Entry], data: st.DataObject
) -> None:
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
    log.append(whole + 1, [("after", "crash")])
    log.close()
    assert load(path) == Loaded(None, [*entries[:whole], ("after", "crash")], 0)


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
    offsets = write_log(tmp_path, [(None, "keep"), ("id", "a longer text that gets zeroed")])
    raw = bytearray(data_file(tmp_path).read_bytes())
    raw[-10:] = bytes(10)
    data_file(tmp_path).write_bytes(bytes(raw))
    assert load(tmp_path) == Loaded(None, [(None, "keep")], offsets[2] - offsets[1])


def test_zero_filled_extension_is_torn(tmp_path: Path) -> None:
    write_log(tmp_path, SAMPLE)
    with open(data_file(tmp_path), "ab") as f:
        f.write(bytes(5000))
    assert load(tmp_path) == Loaded(None, SAMPLE, 5000)


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
        f.write(encode_records(4, [(None, "skipped seq 3")]))  # checksum is valid
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
    log.append(1, [(None, "a")])
    for wrong in (0, 1, 3):
        with pytest.raises(ValueError):
            log.append(wrong, [(None, "b")])
    assert log.last_seq == 1
    log.close()
    assert load(tmp_path).entries == [(None, "a")]


def test_append_before_load_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        DiskLog(tmp_path).append(1, [(None, "a")])


def test_reset_empties_log_and_meta(tmp_path: Path) -> None:
    write_log(tmp_path, SAMPLE, log_id="old")
    log = DiskLog(tmp_path, fsync=False)
    log.load()
    log.reset()
    assert log.last_seq == 0
    log.append(1, [("n", "new")])
    log.close()
    assert load(tmp_path) == Loaded(None, [("n", "new")], 0)


def test_reset_without_load(tmp_path: Path) -> None:
    write_log(tmp_path, SAMPLE, log_id="old")
    log = DiskLog(tmp_path, fsync=False)
    log.reset()
    log.close()
    assert load(tmp_path) == Loaded(None, [], 0)


@pytest.fixture
def fsync_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_fsync_false_never_fsyncs(tmp_path: Path, fsync_calls: list[int]) -> None:
    log = DiskLog(tmp_path, fsync=False)
    log.load()
    log.set_log_id("x")
    log.append(1, SAMPLE)
    log.sync()
    log.reset()
    log.close()
    assert fsync_calls == []


def test_fsync_true_sync_fsyncs_data_file(tmp_path: Path, fsync_calls: list[int]) -> None:
    log = DiskLog(tmp_path, fsync=True)
    log.load()
    log.append(1, SAMPLE)
    fsync_calls.clear()
    log.sync()
    assert len(fsync_calls) == 1
    assert os.fstat(fsync_calls[0]).st_ino == data_file(tmp_path).stat().st_ino
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
    whole = [g for g, end in zip(groups, ends) if end <= cut]
    loaded = DiskLog(d, fsync=False).load()
    assert loaded.entries == [e for g in whole for e in g]
    assert os.path.getsize(d / "log.dat") == (max([e for e in ends if e <= cut], default=0))
