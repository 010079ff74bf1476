"""Mutation proof: the chaos suite fails on deliberately broken builds.

    python -m tests.chaos.mutants [NAME ...] [--list] [--keep]

Each mutant is a copy of src/replog in a temporary directory with one bug put in; the CI part
(tests/test_chaos.py) runs against it through PYTHONPATH, which comes before the editable
install for the test process and every node it starts. The working tree is never touched, so
this is safe while others edit src/. A mutant whose pattern no longer matches the source is
reported as stale (the code moved on; update the pattern), not silently skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "replog"

# name -> (what it breaks, [(file, original text, broken text)])
MUTANTS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "acks-buffered": (
        "a secondary acks the highest seq it holds, counting entries buffered behind a gap",
        [
            ("secondary.py", "        seq = self.durable\n", "        seq = max(self.durable, max(self.buffer.pending, default=0))\n"),
            ("secondary.py", '            "crc": self.log.crc(crc_seq),', '            "crc": self.log.crc(min(crc_seq, self.log.last_seq)),'),
        ],
    ),
    "release-past-gap": (
        "the reorder buffer releases held entries past a gap",
        [
            (
                "reorder.py",
                "        while nxt in pending:\n            released.items.append(pending.pop(nxt))\n            nxt += 1",
                "        for seq in sorted(pending):\n            released.items.append(pending.pop(seq))",
            )
        ],
    ),
    "never-rewind": (
        "the master never rewinds a secondary that restarted with less",
        [
            (
                "progress.py",
                "            rewound = self.boot is not None and seq < self.match\n            self.boot = boot\n            self.match = seq",
                "            self.boot = boot\n            self.match = max(self.match, seq)",
            )
        ],
    ),
    "count-sent": (
        "the master counts a secondary as holding what it merely sent",
        [("replicator.py", "            p.sent(last)\n", "            p.sent(last)\n            self._on_match(self.index, last)\n")],
    ),
}


def build(name: str, root: Path) -> Path:
    """A copy of src/replog with the mutant's edits, under root/name; ValueError if stale."""
    dest = root / name / "replog"
    shutil.copytree(SRC, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for fname, old, new in MUTANTS[name][1]:
        path = dest / fname
        text = path.read_text()
        if text.count(old) != 1:
            raise ValueError(f"{name}: the pattern is not (exactly once) in {fname} any more")
        path.write_text(text.replace(old, new))
    return dest.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.mutants", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--keep", action="store_true", help="keep the mutant copies")
    args = parser.parse_args(argv)
    if args.list:
        for name, (what, _) in MUTANTS.items():
            print(f"{name}: {what}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="replog-mutants-"))
    survived = []
    try:
        for name in args.names or list(MUTANTS):
            try:
                path = build(name, root)
            except ValueError as exc:
                print(f"STALE {exc}")
                survived.append(name)
                continue
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))}
            print(f"=== {name}: {MUTANTS[name][0]}", flush=True)
            proc = subprocess.run(
                # Only the seeded runs: the two-masters test fails without fencing whatever the mutant.
                [
                    sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-k", "under_faults", str(SRC.parents[1] / "tests" / "test_chaos.py"),
                ],
                env=env, capture_output=True, text=True,
            )
            for line in proc.stdout.splitlines():
                if "invariant violations:" in line or "chaos run seed" in line or " passed" in line or " failed" in line:
                    print("   ", line.lstrip("E").strip())
            caught = proc.returncode != 0
            print(f"    -> {'CAUGHT' if caught else 'SURVIVED'}", flush=True)
            if not caught:
                survived.append(name)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
