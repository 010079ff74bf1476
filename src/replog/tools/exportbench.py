"""Measure `replog export` and `replog import` on a log of many entries.

    python -m replog.tools.exportbench [--entries 1000000] [--text-bytes 40]

Builds a data dir holding a log of that many entries (single writes and client batches of 100, with
generated and client ids) directly through DiskLog, starts a real `replog master` on it, and times
the real commands as a user runs them: `replog export --node URL > FILE`, then
`replog import --data-dir DIR < FILE` into a new data dir, whose log must equal the original.
Prints entries/s of each. A measurement for the README, not a test: it takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from replog.log import BATCH, BATCH_MORE, Log
from replog.storage import DiskLog, Meta, Record
from replog.tools.cluster import Node, free_port


def build(data_dir: Path, entries: int, text_bytes: int) -> DiskLog:
    """A data dir holding a log of `entries` entries: every tenth group of 100 a client batch with ids."""
    log = Log("0123456789abcdef0123456789abcdef")
    pad = "x" * max(0, text_bytes - 16)
    seq = 0
    while seq < entries:
        group = min(100, entries - seq)
        if (seq // 100) % 10 == 9:
            items = [
                (f"batch-{seq}:{i}", f"{pad}{seq + i:016d}", BATCH | (BATCH_MORE if i < group - 1 else 0))
                for i in range(group)
            ]
        else:
            items = [(None, f"{pad}{seq + i:016d}", 0) for i in range(group)]
        log.extend(items)
        seq += group
    disk = DiskLog(data_dir, fsync=False)
    disk.load()
    disk.save_meta(Meta(log.log_id, promised=1, promised_to="exportbench", log_epoch=1))
    step = 100_000
    for first in range(1, entries + 1, step):
        last = min(entries, first + step - 1)
        disk.append(first, [Record(*h) for h in log.hashed(first, last)], atomic=True)
    disk.close()
    return disk


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--text-bytes", type=int, default=40, help="size of each message's text")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="replog-exportbench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        build(work / "m", args.entries, args.text_bytes)
        print(f"built a log of {args.entries:,} entries in {time.perf_counter() - started:.1f} s", flush=True)
        master = Node("master", free_port(), ["--data-dir", str(work / "m"), "--fsync", "never"], work / "m.log")
        master.start(timeout=120)
        try:
            dump = work / "log.jsonl"
            replog = [sys.executable, "-m", "replog"]
            env = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
            with open(dump, "wb") as out:
                t0 = time.perf_counter()
                subprocess.run([*replog, "export", "--node", master.url], stdout=out, check=True, env=env)
                export_s = time.perf_counter() - t0
        finally:
            master.stop()
        size = dump.stat().st_size
        with open(dump, "rb") as inp:
            t0 = time.perf_counter()
            subprocess.run([*replog, "import", "--data-dir", str(work / "r")], stdin=inp, check=True, env=env)
            import_s = time.perf_counter() - t0
        original, restored = DiskLog(work / "m", fsync=False).load(), DiskLog(work / "r", fsync=False).load()
        if original.entries != restored.entries or original.meta.log_id != restored.meta.log_id:
            raise SystemExit("the restored log differs from the original")
        n = args.entries
        print(f"export: {n:,} entries ({size / 1e6:.0f} MB) in {export_s:.2f} s = {n / export_s:,.0f} entries/s")
        print(f"import: {n:,} entries in {import_s:.2f} s = {n / import_s:,.0f} entries/s (whole chain verified)")


if __name__ == "__main__":
    main()
