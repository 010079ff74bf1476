"""Self-check 2: a secondary that joins late gets everything, and a w=3 write waits for it.

    M + S1 up, S2 down: Msg1 w=1 ok, Msg2 w=2 ok, Msg3 w=3 waits, Msg4 w=1 ok while Msg3 waits;
    start S2; Msg3 completes; S2 shows [Msg1, Msg2, Msg3, Msg4].

On a cluster of its own (free ports; it starts S2 itself when the time comes, and stops everything):

    python examples/selfcheck_rejoin.py --start

Against a running master and S1, with S2 down (the Procfile's: `honcho start master secondary1`):

    python examples/selfcheck_rejoin.py [--master URL --secondary S1_URL --secondary S2_URL]

It then asks you to start S2 (`honcho start secondary2` in another terminal) and waits for it, or runs
`--s2-command "replog secondary --port 8002"` itself (and stops it at the end).

Prints every step with its timing and every expectation; exits 0 if all held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from _selfcheck import (
    DEFAULT_MASTER,
    DEFAULT_SECONDARIES,
    Answer,
    Run,
    health,
    master_ready,
    messages,
    post,
    show,
    texts_since,
    url,
    wait_for,
)
from replog.tools.cluster import ClusterError, LocalCluster, wait_until

FAST = 1.0  # "at once": a write that waits for nobody slow answers well within this many seconds
CATCH_UP = 60.0  # S2 holds everything within this many seconds of answering (even with the Procfile's 3 s delay)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--start",
        action="store_true",
        help="start a master and S1 of its own on free ports, and S2 when the check needs it",
    )
    p.add_argument(
        "--master",
        type=url,
        metavar="URL",
        default=DEFAULT_MASTER,
        help=f"the running master (default {DEFAULT_MASTER})",
    )
    p.add_argument(
        "--secondary",
        type=url,
        action="append",
        metavar="URL",
        help="a secondary the master replicates to, twice: S1 (running), then S2 (down); default the Procfile's 8001 and 8002",
    )
    p.add_argument(
        "--s2-command",
        metavar="COMMAND",
        help='command that starts S2 when the check needs it, e.g. "replog secondary --port 8002" (default: ask you)',
    )
    p.add_argument(
        "--hold",
        type=float,
        metavar="SECONDS",
        default=1.0,
        help="seconds Msg3 must go on waiting, S2 still down, before S2 is started (default 1)",
    )
    p.add_argument(
        "--wait-s2",
        type=float,
        metavar="SECONDS",
        default=120.0,
        help="seconds to wait for S2 to answer once it is due to start (default 120)",
    )
    args = p.parse_args(argv)
    if args.start and (args.secondary or args.master != DEFAULT_MASTER or args.s2_command):
        p.error("--start runs a cluster of its own: give no --master, --secondary or --s2-command")
    args.secondary = args.secondary or list(DEFAULT_SECONDARIES)
    if len(args.secondary) != 2:
        p.error("give --secondary exactly twice: S1 (running), then S2 (down)")
    return args


class Pending:
    """A write sent from a daemon thread: a check that gives up early never waits for it to finish."""

    def __init__(self, run: Run, master: str, text: str, w: int, timeout: float) -> None:
        self.answer: Answer | None = None
        self.finished_at: float | None = None  # run time at which the answer came
        self._done = threading.Event()

        def send() -> None:
            self.answer = post(master, text, w, timeout)
            self.finished_at = run.now()
            self._done.set()

        threading.Thread(target=send, name=f"post-{text}", daemon=True).start()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> Answer | None:
        self._done.wait(timeout)
        return self.answer


class CommandS2:
    """S2 as a command this script runs when the check needs it, and stops at the end."""

    def __init__(self, command: str, s2: str, wait: float) -> None:
        self.argv = shlex.split(command)
        self.s2 = s2
        self.wait = wait
        self.log = Path(tempfile.mkstemp(prefix="replog-s2-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ClusterError(
                    f"{shlex.join(self.argv)} exited with {self.proc.returncode}; its output is in {self.log}"
                )
            return health(self.s2) is not None

        wait_until(up, self.wait, what=f"S2 at {self.s2} to answer")
        return f"ran {shlex.join(self.argv)} (output in {self.log})"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class AskUser:
    """S2 started by whoever runs the check, when asked."""

    def __init__(self, s2: str, wait: float) -> None:
        self.s2 = s2
        self.wait = wait

    def start(self) -> str:
        print(
            f"\n    >>> Start S2 now, e.g. `honcho start secondary2` in another terminal.\n"
            f"    >>> Waiting up to {self.wait:g} s for {self.s2} to answer...\n",
            flush=True,
        )
        wait_until(lambda: health(self.s2) is not None, self.wait, interval=0.1, what=f"S2 at {self.s2} to answer")
        return "started by you"

    def stop(self) -> None:
        pass  # not ours to stop


def selfcheck(run: Run, master: str, s1: str, s2: str, start_s2: Callable[[], str], wait_s2: float, hold: float) -> int:
    run.say(f"master {master}, S1 {s1}, S2 {s2} (S2 must be down)")
    if not run.expect(health(s2) is None, f"S2 ({s2}) is down at the start"):
        print(f"{'':11}stop S2 first, or run only the master and S1: `honcho start master secondary1`")
        return run.verdict()
    ready = wait_for(lambda: master_ready(master, [s1, s2], healthy=[s1]), 20.0)
    if not run.expect(ready is not None, "the master accepts writes and sees S1 healthy"):
        return run.verdict()

    def m_and_s1() -> tuple[list] | None:
        m, a = messages(master), messages(s1)
        return (m,) if m is not None and m == a else None  # a tuple: an empty list is a valid answer

    before = wait_for(m_and_s1, 30.0, interval=0.05)
    if not run.expect(before is not None, "S1 shows the master's list before the check starts"):
        return run.verdict()
    base = len(before[0])
    run.say(f"the log holds {base} entries already; this check's messages start at seq {base + 1}")
    msg3_wait = wait_s2 + CATCH_UP + 30  # the master's own limit for Msg3 (504 after it), so nothing hangs forever

    def quick(n: int, w: int) -> Answer:
        answer = post(master, f"Msg{n}", w, timeout=msg3_wait)
        run.say(answer.line())
        run.expect(
            answer.ok and answer.seq == base + n and (answer.acks or 0) >= w,
            f"Msg{n} is stored as seq {base + n} with acks >= {w}",
        )
        run.expect(answer.elapsed < FAST, f"Msg{n} w={w} answers at once (< {FAST:g} s)")
        return answer

    quick(1, 1)
    quick(2, 2)

    msg3 = Pending(run, master, "Msg3", 3, msg3_wait)
    appended = wait_for(lambda: (messages(master) or [])[base + 2 : base + 3], 10.0)
    run.say(f"Msg3 w=3 sent: the master shows it as seq {appended[0]['seq']}" if appended else "Msg3 w=3 sent")
    run.expect(bool(appended) and appended[0]["text"] == "Msg3", f"the master appends Msg3 as seq {base + 3}")
    run.expect(not msg3.done(), "Msg3 w=3 waits (S2 is down)")

    quick(4, 1)
    run.expect(not msg3.done(), "Msg4 w=1 answered while Msg3 was still waiting")
    h = health(master) or {}
    view = {s["url"]: s for s in h.get("secondaries", [])}.get(s2, {})
    run.say(
        f"the master sees S2 as {view.get('status')} with lag {view.get('lag')}; {h.get('waiting_writes')} write(s) waiting"
    )
    # Not a sleep hoping for something: Msg3 must *not* complete in this window, and the window shows it.
    run.expect(msg3.wait(hold) is None, f"Msg3 is still waiting {hold:g} s later, S2 still down")

    run.say("starting S2")
    started = run.now()
    try:
        how = start_s2()
    except ClusterError as exc:
        run.expect(False, f"S2 starts and answers ({exc})")
        return run.verdict()
    run.say(f"S2 answers ({how})")

    answer = msg3.wait(CATCH_UP)
    if answer is None or msg3.finished_at is None:
        run.expect(False, f"Msg3 completes within {CATCH_UP:g} s of S2 answering")
        return run.verdict()
    run.say(f"{answer.line()} ({msg3.finished_at - started:.2f} s after S2 was started)")
    run.expect(
        answer.ok and answer.seq == base + 3 and answer.acks == 3, f"Msg3 completes: 201, seq {base + 3}, 3 acks"
    )
    run.expect(msg3.finished_at >= started, "Msg3 completed only once S2 was started")

    def s2_same() -> tuple[list] | None:
        m, b = messages(master), messages(s2)
        return (m,) if m is not None and m == b else None

    same = wait_for(s2_same, CATCH_UP, interval=0.05)
    run.say(
        f"S2 shows the master's list {run.now() - started:.2f} s after it was started" if same else "S2 never caught up"
    )
    run.expect(same is not None, "S2 shows exactly the master's list, earlier entries included")
    for name, node in (("master", master), ("S1", s1), ("S2", s2)):
        entries = messages(node)
        run.say(f"{name:6} {show(entries, since=base)}")
        run.expect(
            texts_since(entries, base) == ["Msg1", "Msg2", "Msg3", "Msg4"],
            f"{name} shows [Msg1, Msg2, Msg3, Msg4] after seq {base}",
        )
    return run.verdict()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run()
    if args.start:
        cluster = LocalCluster(
            2, master_args=["--new-cluster"], cluster_key=secrets.token_hex(32)
        )  # S2 down from the start: a brand-new cluster
        m, (s1, s2) = cluster.master, cluster.secondaries
        run.say(f"starting a master and S1 on free ports, S2 not yet; logs in {cluster.workdir}")
        try:
            try:
                s1.start()
                m.start()
            except ClusterError as exc:
                run.expect(False, f"the master and S1 start ({exc})")
                return run.verdict()

            def start_s2() -> str:
                s2.start(timeout=args.wait_s2)
                return f"pid {s2.proc.pid if s2.proc else '?'}"

            return selfcheck(run, m.url, s1.url, s2.url, start_s2, args.wait_s2, args.hold)
        finally:
            cluster.cleanup()
    s1_url, s2_url = args.secondary
    starter = CommandS2(args.s2_command, s2_url, args.wait_s2) if args.s2_command else AskUser(s2_url, args.wait_s2)
    try:
        return selfcheck(run, args.master, s1_url, s2_url, starter.start, args.wait_s2, args.hold)
    finally:
        starter.stop()


if __name__ == "__main__":
    sys.exit(main())
