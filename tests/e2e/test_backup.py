"""`replog export` and `replog import` against real nodes: the round trip, a resumed export, and a
secondary restored from a backup that rejoins its cluster without being diverged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from replog.storage import DiskLog, Meta
from replog.tools.cluster import LocalCluster, Node, http_json, wait_until

REPLOG = [sys.executable, "-m", "replog"]


def run(*args: str, stdin: Any = None, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([*REPLOG, *args], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def export(node: Node, path: Path, since: int | None = None) -> str:
    """`replog export --node URL [--since N] >> path`; its summary line."""
    extra = [] if since is None else ["--since", str(since)]
    with open(path, "ab") as out:
        return run("export", "--node", node.url, *extra, stdout=out).stderr.decode()


def import_(path: Path, data_dir: Path) -> str:
    with open(path, "rb") as inp:
        return run("import", "--data-dir", str(data_dir), stdin=inp).stderr.decode()


def raw_log(node: Node) -> dict[str, Any]:
    """The node's whole raw log through GET /log, page after page."""
    entries: list[list[Any]] = []
    while True:
        status, page = http_json("GET", f"{node.url}/log?since={len(entries)}")
        assert status == 200, page
        entries += page["entries"]
        if len(entries) >= page["last_seq"]:
            return {**page, "entries": entries}


def restored(data_dir: Path) -> tuple[Meta, list[list[Any]]]:
    with DiskLog(data_dir, fsync=False) as disk:
        loaded = disk.load()
    wire = [[seq, r.id, r.text, r.flags, r.hash.hex()] for seq, r in enumerate(loaded.entries, start=1)]
    return loaded.meta, wire


def write_some(c: LocalCluster, tag: str, w: int = 3) -> None:
    """Single writes with generated and client ids, and client batches with and without an id."""
    for i in range(5):
        status, body = c.post(f"{tag}-{i}", w=w, **({"id": f"{tag}-key-{i}"} if i % 2 else {}))
        assert status == 201, body
    for batch_id in (f"{tag}-batch", None):
        fields = {"id": batch_id} if batch_id else {}
        status, body = c.post(None, messages=[f"{tag}-b{j}" for j in range(4)], w=w, **fields)
        assert status == 201, body


def test_round_trip_keeps_identity_ids_and_chain(cluster, tmp_path):
    c = cluster(2, data_dirs=True)
    write_some(c, "a")
    source = raw_log(c.master)
    summary = export(c.master, tmp_path / "log.jsonl")
    assert summary == f"exported 13 entries (seq 1..13) of log {source['log']}\n"  # no progress bar off a terminal

    header, *lines = (json.loads(line) for line in (tmp_path / "log.jsonl").read_bytes().splitlines())
    assert header == {
        "replog_export": 1,
        "log": c.master.health()["log"],
        "since": 0,
        "prev": "0" * 32,
        "last_seq": 13,
        "hash": source["hash"],
    }
    assert [[e["seq"], e["id"], e["text"], e["flags"], e["hash"]] for e in lines] == source["entries"]

    assert "imported 13 entries" in import_(tmp_path / "log.jsonl", tmp_path / "restored")
    meta, entries = restored(tmp_path / "restored")
    assert meta == Meta(source["log"], promised=0, promised_to=None, log_epoch=0)
    assert entries == source["entries"]
    # A secondary's copy exports the same file.
    wait_until(lambda: c.secondaries[1].health()["seq"] == 13, 20, what="the secondary to hold everything")
    export(c.secondaries[1], tmp_path / "from-secondary.jsonl")
    assert (tmp_path / "from-secondary.jsonl").read_bytes() == (tmp_path / "log.jsonl").read_bytes()


def test_resumed_export_and_import(cluster, tmp_path):
    c = cluster(2)
    write_some(c, "a", w=1)
    export(c.master, tmp_path / "log.jsonl")
    import_(tmp_path / "log.jsonl", tmp_path / "restored")
    write_some(c, "b", w=1)
    assert "exported 13 entries (seq 14..26)" in export(c.master, tmp_path / "log.jsonl", since=13)
    # The data dir holds 1..13 already: the import checks them against the file and adds 14..26.
    assert "imported 13 entries" in import_(tmp_path / "log.jsonl", tmp_path / "restored")
    assert restored(tmp_path / "restored")[1] == raw_log(c.master)["entries"]
    # And the appended file restores the whole log into a new data dir.
    assert "imported 26 entries" in import_(tmp_path / "log.jsonl", tmp_path / "fresh")


def test_a_restored_secondary_rejoins_without_diverging(cluster, tmp_path):
    c = cluster(2, data_dirs=True)
    write_some(c, "before")
    export(c.master, tmp_path / "backup.jsonl")

    lost = c.secondaries[0]
    lost.stop()
    data_dir = c.workdir / "s1"
    shutil.rmtree(data_dir)  # the disk is lost
    write_some(c, "meanwhile", w=2)  # the log goes on past the backup
    import_(tmp_path / "backup.jsonl", data_dir)
    lost.start()

    def caught_up() -> bool:
        view = next(s for s in c.master.health()["secondaries"] if s["url"] == lost.url)
        assert view["status"] != "diverged", view
        return view["status"] == "healthy" and view["seq"] == c.master.health()["seq"]

    wait_until(caught_up, 30, what="the restored secondary to catch up")
    status, body = c.post("after", w=3)
    assert (status, body["acks"]) == (201, 3), body
    assert lost.messages() == c.master.messages()
    assert raw_log(lost)["entries"] == raw_log(c.master)["entries"]
    assert not [e for e in c.master.events() if e.get("event") == "secondary_diverged"]
