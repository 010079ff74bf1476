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
            (
                "secondary.py",
                "        seq = self.durable\n        at = seq if at is None else min(seq, at)\n",
                "        seq = max(self.durable, max(self.buffer.pending, default=0))\n"
                "        at = seq if at is None else min(seq, at)\n",
            ),
            (
                "secondary.py",
                '"hash": self.log.hash(seq).hex(),',
                '"hash": self.log.hash(min(seq, self.log.last_seq)).hex(),',
            ),
            (
                "secondary.py",
                '"at_hash": self.log.hash(at).hex(),',
                '"at_hash": self.log.hash(min(at, self.log.last_seq)).hex(),',
            ),
        ],
    ),
    "release-unchained": (
        "the reorder buffer releases entries held behind a gap without checking they chain onto the log",
        [("reorder.py", "            if chain(head, id_, text, flags) != h:\n", "            if False:\n")],
    ),
    "never-rewind": (
        "the master never rewinds a secondary that restarted with less",
        [
            (
                "progress.py",
                "            rewound = self.incarnation is not None\n            self.incarnation = incarnation\n"
                "            self.match, self.promised, self.log_epoch = seq, promised, log_epoch\n",
                "            self.incarnation = incarnation\n"
                "            self.match, self.promised, self.log_epoch = max(self.match, seq), promised, log_epoch\n",
            )
        ],
    ),
    "count-sent": (
        "the master counts a secondary as holding what it merely sent",
        [
            (
                "replicator.py",
                "        p.sent(last)\n",
                "        p.sent(last)\n        p.match = max(p.match, last)\n        self._on_progress(self.index)\n",
            )
        ],
    ),
    "no-fence": (
        "a secondary never refuses a master of an older epoch",
        [
            (
                "secondary.py",
                "        if fence.epoch < self.promised or (fence.epoch == self.promised and fence.master != self.promised_to):\n",
                "        if False:\n",
            )
        ],
    ),
    "count-any-epoch": (
        "the master counts copies held under any epoch, not only its own",
        [
            (
                "progress.py",
                "        if self.status is Status.DIVERGED or self.promised != epoch or self.log_epoch != epoch:\n",
                "        if self.status is Status.DIVERGED:\n",
            )
        ],
    ),
    "self-vote": (
        "a master that lost its log still counts its own vote at start-up",
        [
            (
                "recovery.py",
                "    return (had_log and saved >= max(reported, default=0)) or (blank and not had_log)\n",
                "    return True\n",
            )
        ],
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
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.mutants", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    str(SRC.parents[1] / "tests" / "test_chaos.py"),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            for line in proc.stdout.splitlines():
                if (
                    "invariant violations:" in line
                    or "chaos run seed" in line
                    or " passed" in line
                    or " failed" in line
                ):
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
