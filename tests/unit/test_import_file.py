"""replog.backup on real files: what import keeps, what it refuses, and that a refusal changes nothing.

Export files are made here the way `replog export` writes them (header_line, entry_lines over a Log's
wire entries); the round trip through live nodes is in tests/e2e/test_backup.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from replog.backup import BackupError, entry_lines, header_line, import_log
from replog.log import BATCH, BATCH_MORE, GENESIS, Log
from replog.storage import DiskLog, Meta, Record


def make_log(n: int, log_id: str = "a" * 32) -> Log:
    """n entries: generated ids, client ids, and a client batch of three in the middle."""
    log = Log(log_id)
    for seq in range(1, n + 1):
        if seq == n // 2:
            log.extend([(f"b:{i}", f"batch {i}", BATCH | (BATCH_MORE if i < 2 else 0)) for i in range(3)])
        elif log.last_seq < n:
            log.append(f"message {seq} é ✓", id=f"k{seq}" if seq % 3 == 0 else None)
        if log.last_seq >= n:
            break
    return log


def export_bytes(log: Log, since: int = 0, last: int | None = None) -> bytes:
    """What `replog export --since since` writes for a node holding log up to last."""
    last = log.last_seq if last is None else last
    header = header_line(log.log_id, since, log.hash(since).hex(), last, log.hash(last).hex())
    return header + b"\n" + entry_lines(log.wire(since + 1, last))


def lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def held(data_dir: Path) -> tuple[Meta, list[Record]]:
    with DiskLog(data_dir, fsync=False) as disk:
        loaded = disk.load()
        return loaded.meta, loaded.entries


def records(log: Log, last: int | None = None) -> list[Record]:
    return [Record(*h) for h in log.hashed(1, log.last_seq if last is None else last)]


def test_round_trip_keeps_identity_ids_flags_and_chain(tmp_path):
    log = make_log(40)
    done = import_log(lines(export_bytes(log)), str(tmp_path / "d"), fsync=False)
    assert (done.log_id, done.held, done.last_seq, done.added) == (log.log_id, 0, 40, 40)
    meta, entries = held(tmp_path / "d")
    assert meta == Meta(log.log_id, promised=0, promised_to=None, log_epoch=0)
    assert entries == records(log)
    assert [r.id for r in entries[:3]] == [None, None, "k3"]  # raw ids: generated stay generated


def test_export_lines_are_the_documented_objects():
    log = make_log(6)
    first, *rest = export_bytes(log).splitlines()
    assert json.loads(first) == {
        "replog_export": 1,
        "log": log.log_id,
        "since": 0,
        "prev": GENESIS.hex(),
        "last_seq": 6,
        "hash": log.hash(6).hex(),
    }
    assert [json.loads(line) for line in rest] == [
        {"seq": s, "id": i, "text": t, "flags": f, "hash": h} for s, i, t, f, h in log.wire(1, 6)
    ]


def test_an_empty_log_keeps_its_identity(tmp_path):
    log = Log("e" * 32)
    done = import_log(lines(export_bytes(log)), str(tmp_path / "d"), fsync=False)
    assert done.last_seq == 0
    assert held(tmp_path / "d") == (Meta(log.log_id), [])


def test_appended_segments_continue_the_file(tmp_path):
    """`export` then `export --since 25 >>` after more writes: one file, imported whole."""
    log = make_log(40)
    data = export_bytes(log, 0, 25) + export_bytes(log, 25)
    assert import_log(lines(data), str(tmp_path / "d"), fsync=False).last_seq == 40
    assert held(tmp_path / "d")[1] == records(log)


def test_import_continues_a_data_dir_holding_a_prefix_and_checks_the_overlap(tmp_path):
    log = make_log(40)
    import_log(lines(export_bytes(log, 0, 10)), str(tmp_path / "d"), fsync=False)
    # The whole file again: seqs 1..10 are checked against the data dir, 11..40 added.
    done = import_log(lines(export_bytes(log)), str(tmp_path / "d"), fsync=False)
    assert (done.held, done.last_seq, done.added) == (10, 40, 30)
    assert held(tmp_path / "d")[1] == records(log)
    # A segment starting inside what it holds: fine too.
    assert import_log(lines(export_bytes(log, 30)), str(tmp_path / "d"), fsync=False).added == 0


def test_import_keeps_the_promise_and_drops_the_log_epoch(tmp_path):
    """A node's data dir restored further: its promise stays (promises never go down), its log epoch goes to 0
    (the new entries are not known to be a prefix of that epoch's log until a master says so)."""
    log = make_log(20)
    with DiskLog(tmp_path / "d", fsync=False) as disk:
        disk.load()
        disk.save_meta(Meta(log.log_id, promised=7, promised_to="m7", log_epoch=7))
        disk.append(1, records(log, 5), atomic=True)
    import_log(lines(export_bytes(log)), str(tmp_path / "d"), fsync=False)
    assert held(tmp_path / "d")[0] == Meta(log.log_id, promised=7, promised_to="m7", log_epoch=0)


# -- refusals: one line, and the data dir as it was ----------------------------------------------------


def refused(data: bytes | list[bytes], data_dir: Path) -> str:
    existed = data_dir.exists()
    before = held(data_dir) if existed else None
    with pytest.raises(BackupError) as info:
        import_log(lines(data) if isinstance(data, bytes) else data, str(data_dir), fsync=False)
    message = str(info.value)
    assert "\n" not in message and message
    if existed:
        assert held(data_dir) == before, "a refused import changed the data dir"
    else:
        assert not data_dir.exists(), "a refused import left a data dir behind"
    return message


def test_a_changed_text_breaks_the_chain(tmp_path):
    log = make_log(30)
    data = lines(export_bytes(log))
    data[12] = data[12].replace(b"message", b"massage")
    assert "hash chain breaks at seq 12" in refused(data, tmp_path / "d")


def test_a_changed_id_or_flags_breaks_the_chain(tmp_path):
    log = make_log(30)
    for old, new in ((b'"id":null', b'"id":"x"'), (b'"flags":0', b'"flags":1')):
        data = lines(export_bytes(log))
        data[5] = data[5].replace(old, new)
        assert "hash chain breaks at seq 5" in refused(data, tmp_path / "d")


def test_a_forged_hash_is_refused(tmp_path):
    """Rewriting one entry and its hash is caught by the next entry (and by the header at the end)."""
    log = make_log(30)
    data = lines(export_bytes(log))
    entry = json.loads(data[7])
    forged = Log(log.log_id)
    forged.extend_hashed(log.hashed(1, 6))
    forged.append("forged", id=entry["id"], flags=entry["flags"])
    entry.update(text="forged", hash=forged.hash(7).hex())
    data[7] = json.dumps(entry).encode() + b"\n"
    assert "hash chain breaks at seq 8" in refused(data, tmp_path / "d")


def test_a_file_cut_at_a_line_is_truncated(tmp_path):
    log = make_log(30)
    data = lines(export_bytes(log))
    assert "truncated" in refused(data[:-3], tmp_path / "d")
    assert "truncated" in refused(data[:1], tmp_path / "d")  # the header alone


def test_a_file_cut_inside_a_line_is_refused(tmp_path):
    data = export_bytes(make_log(30))
    assert "cut short" in refused(data[: len(data) // 2], tmp_path / "d")


def test_a_dropped_or_repeated_line_is_refused(tmp_path):
    data = lines(export_bytes(make_log(30)))
    assert "seq 11 where 10 was expected" in refused(data[:10] + data[11:], tmp_path / "d")
    assert "seq 9 where 10 was expected" in refused(data[:10] + data[9:], tmp_path / "d")


def test_a_foreign_file_is_refused(tmp_path):
    mine, theirs = make_log(20, "a" * 32), make_log(20, "b" * 32)
    import_log(lines(export_bytes(mine, 0, 9)), str(tmp_path / "d"), fsync=False)
    assert "refusing a foreign log" in refused(export_bytes(theirs), tmp_path / "d")
    # Two segments of different logs in one file
    assert "refusing a foreign log" in refused(export_bytes(mine) + export_bytes(theirs, 20), tmp_path / "new")


def test_another_history_of_the_same_log_is_refused(tmp_path):
    """Same log id, other entries (a diverged copy): the overlap does not match."""
    log, other = make_log(20), make_log(20)
    other.truncate(8)
    other.extend([(None, f"other {i}", 0) for i in range(12)])  # seqs 9..20, not the log's
    import_log(lines(export_bytes(log, 0, 15)), str(tmp_path / "d"), fsync=False)
    assert "differs from the entry the data dir holds" in refused(export_bytes(other), tmp_path / "d")
    assert "another history" in refused(export_bytes(other, 12), tmp_path / "d")


def test_a_segment_past_the_end_held_is_refused(tmp_path):
    log = make_log(30)
    import_log(lines(export_bytes(log, 0, 10)), str(tmp_path / "d"), fsync=False)
    assert "import the earlier part first" in refused(export_bytes(log, 20), tmp_path / "d")
    assert "import the earlier part first" in refused(export_bytes(log, 20), tmp_path / "new")


def test_what_is_not_an_export_is_refused(tmp_path):
    assert "empty" in refused(b"", tmp_path / "d")
    assert "export header" in refused(b'{"seq": 1}\n', tmp_path / "d")
    assert "not a JSON object" in refused(b"[1, 2]\n", tmp_path / "d")
    assert "not JSON" in refused(b"hello\n", tmp_path / "d")
    log = make_log(3)
    header = json.loads(export_bytes(log).splitlines()[0])
    assert "format" in refused(json.dumps({**header, "replog_export": 2}).encode() + b"\n", tmp_path / "d")
    assert "malformed" in refused(json.dumps({**header, "hash": "zz"}).encode() + b"\n", tmp_path / "d")


def test_a_batch_cut_short_is_refused(tmp_path):
    """A file that ends inside a client batch, even with a header that agrees: a batch is whole or absent."""
    log = make_log(30)
    inside = next(seq for seq in range(1, 31) if log.flags(seq) & BATCH_MORE)
    assert "inside a client batch" in refused(export_bytes(log, 0, inside), tmp_path / "d")


def test_a_refused_import_into_a_prefix_leaves_the_prefix(tmp_path):
    """Entries already appended by a refused import (past WRITE_CHUNK) are taken back."""
    log = Log("c" * 32)
    log.extend([(None, f"m{i}", 0) for i in range(25_000)])
    import_log(lines(export_bytes(log, 0, 100)), str(tmp_path / "d"), fsync=False)
    data = lines(export_bytes(log))
    data[-2] = data[-2].replace(b'"m', b'"M')
    assert "hash chain breaks at seq 24999" in refused(data, tmp_path / "d")
    assert len(held(tmp_path / "d")[1]) == 100


def test_a_data_dir_in_use_is_refused(tmp_path):
    with DiskLog(tmp_path / "d", fsync=False) as disk:
        disk.lock()
        assert "in use by a running replog node" in refused(export_bytes(make_log(3)), tmp_path / "d")


def test_a_data_dir_with_a_broken_chain_is_refused(tmp_path):
    log = make_log(10)
    with DiskLog(tmp_path / "d", fsync=False) as disk:
        disk.load()
        disk.save_meta(Meta(log.log_id))
        bad = records(log)
        bad[3] = Record(bad[3].id, "tampered", bad[3].flags, bad[3].hash)
        disk.append(1, bad, atomic=True)
    assert "own log breaks its hash chain at seq 4" in refused(export_bytes(log), tmp_path / "d")


def test_the_cli_refuses_with_one_line_and_exit_1(tmp_path):
    data = lines(export_bytes(make_log(30)))
    bad = b"".join(data[:-1])
    run = subprocess.run(
        [sys.executable, "-m", "replog", "import", "--data-dir", str(tmp_path / "d")],
        input=bad,
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.decode().count("\n") == 1, run.stderr
    assert run.stderr.startswith(b"Error: import refused"), run.stderr
    assert b"truncated" in run.stderr
    # And the whole file goes in.
    run = subprocess.run(
        [sys.executable, "-m", "replog", "import", "--data-dir", str(tmp_path / "d")],
        input=b"".join(data),
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert b"imported 30 entries" in run.stderr
