"""Self-check 1: write concern and eventual consistency, on a master and two secondaries (S2 slow).

    Msg1 w=1 answers at once; Msg2 w=2 once S1 holds it; Msg3 w=3 only after the slow S2;
    Msg4 w=1 at once; S2 then shows fewer messages than the master for a while, then the same list.

Against a running cluster (by default the Procfile's: `honcho start`, S2 on 8002 with --delay 3):

    python examples/selfcheck_write_concern.py [--master URL --secondary S1_URL --secondary S2_URL]

or on a cluster of its own, on free ports, stopped at the end:

    python examples/selfcheck_write_concern.py --start [--delay 3]

Prints every step with its timing and every expectation; exits 0 if all held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from _selfcheck import (
    DEFAULT_MASTER,
    DEFAULT_SECONDARIES,
    Run,
    is_prefix,
    master_ready,
    messages,
    post,
    show,
    texts_since,
    url,
    wait_for,
)
from replog.tools.cluster import ClusterError, LocalCluster


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--start",
        action="store_true",
        help="start a master and two secondaries of its own on free ports (S2 with --delay)",
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
        help="a running secondary, twice: S1 (no delay), then S2 (delayed); default the Procfile's 8001 and 8002",
    )
    p.add_argument(
        "--delay",
        type=float,
        metavar="SECONDS",
        default=3.0,
        help="S2's --delay in seconds: what --start gives it, or what the running S2 has (default 3)",
    )
    args = p.parse_args(argv)
    if args.start and (args.secondary or args.master != DEFAULT_MASTER):
        p.error("--start runs a cluster of its own: give no --master or --secondary")
    args.secondary = args.secondary or list(DEFAULT_SECONDARIES)
    if len(args.secondary) != 2:
        p.error("give --secondary exactly twice: S1, then the delayed S2")
    if args.delay <= 0:
        p.error("--delay must be positive: the check is about a slow S2")
    return args


def selfcheck(run: Run, master: str, s1: str, s2: str, delay: float) -> int:
    fast = min(1.0, delay / 2)  # "at once": well under S2's delay
    wait = 2 * delay + 10  # longest any step may take before it counts as stuck
    run.say(
        f"master {master}, S1 {s1}, S2 {s2} (S2 delays each replication by {delay:g} s); 'at once' means under {fast:.2f} s"
    )

    ready = wait_for(lambda: master_ready(master, [s1, s2], healthy=[s1, s2]), 20.0)
    if not run.expect(ready is not None, "the master accepts writes and sees S1 and S2 healthy"):
        return run.verdict()

    def lists() -> tuple[list, list, list] | tuple[None, None, None]:
        m, a, b = messages(master), messages(s1), messages(s2)
        return (m, a, b) if None not in (m, a, b) else (None, None, None)

    def converged() -> tuple[list] | None:
        m, a, b = lists()
        return (m,) if m is not None and m == a == b else None  # a tuple: an empty list is a valid answer

    before = wait_for(converged, wait, interval=0.05)
    if not run.expect(before is not None, "every node shows the same list before the check starts"):
        return run.verdict()
    base = len(before[0])
    run.say(f"the log holds {base} entries already; this check's messages start at seq {base + 1}")

    def step(n: int, w: int) -> tuple:
        answer = post(master, f"Msg{n}", w, timeout=wait)
        run.say(answer.line())
        run.expect(answer.ok and answer.seq == base + n, f"Msg{n} is stored as seq {base + n} (201)")
        run.expect(answer.acks is not None and answer.acks >= w, f"Msg{n} has acks >= {w}")
        return answer, *lists()

    def sample(m: list | None, a: list | None, b: list | None) -> None:
        run.say(f"lists: master {len(m or [])}, S1 {len(a or [])}, S2 {len(b or [])}")
        run.expect(
            m is not None and is_prefix(a, m) and is_prefix(b, m), "S1's and S2's lists are prefixes of the master's"
        )

    msg1, m, a, b = step(1, 1)
    run.expect(msg1.elapsed < fast, f"Msg1 w=1 answers at once (< {fast:.2f} s)")
    sample(m, a, b)

    msg2, m, a, b = step(2, 2)
    run.expect(msg2.elapsed < fast, f"Msg2 w=2 answers at once, as soon as S1 holds it (< {fast:.2f} s)")
    run.expect(a is not None and len(a) >= base + 2, "S1 holds Msg2 when Msg2 is answered")
    sample(m, a, b)

    msg3, m, a, b = step(3, 3)
    run.expect(
        delay - 0.05 <= msg3.elapsed < 2 * delay + 2,
        f"Msg3 w=3 waits for the slow S2 ({delay:g} s to {2 * delay + 2:g} s)",
    )
    run.expect(b is not None and len(b) >= base + 3, "S2 holds Msg3 when Msg3 is answered")
    sample(m, a, b)

    msg4, m, a, b = step(4, 1)
    answered = run.now()
    run.expect(msg4.elapsed < fast, f"Msg4 w=1 answers at once (< {fast:.2f} s)")
    sample(m, a, b)
    run.expect(
        m is not None and b is not None and len(b) < len(m), "S2 shows fewer messages than the master right after Msg4"
    )

    same = wait_for(converged, wait, interval=0.05)
    run.say(
        f"S2 shows the master's list {run.now() - answered:.2f} s after Msg4 was answered"
        if same
        else "S2 never caught up"
    )
    run.expect(same is not None, f"then every node shows the same list (within {wait:g} s)")

    m, a, b = lists()
    for name, entries in (("master", m), ("S1", a), ("S2", b)):
        run.say(f"{name:6} {show(entries, since=base)}")
        run.expect(
            texts_since(entries, base) == ["Msg1", "Msg2", "Msg3", "Msg4"],
            f"{name} shows Msg1..Msg4 in order, once each",
        )
    return run.verdict()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run()
    if not args.start:
        return selfcheck(run, args.master, *args.secondary, args.delay)
    # The master must wait out S2's delay on each replication request.
    cluster = LocalCluster(
        2,
        delays=(0, args.delay),
        master_args=["--replication-timeout", str(max(30.0, 3 * args.delay))],
        cluster_key=secrets.token_hex(32),  # its nodes talk to each other with a key, as a deployment should
    )
    run.say(f"starting a master, S1 and S2 (--delay {args.delay:g}) on free ports; logs in {cluster.workdir}")
    try:
        try:
            cluster.start()
        except ClusterError as exc:
            run.expect(False, f"the local cluster starts ({exc})")
            return run.verdict()
        return selfcheck(run, cluster.master.url, *(s.url for s in cluster.secondaries), args.delay)
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    sys.exit(main())
