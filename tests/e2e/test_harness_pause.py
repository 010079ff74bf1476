"""The harness's pause and kill of a real node process (replog.tools.cluster.Node), which the failover
tests build on: pause() returns only once every thread is stopped, and kill() of a paused node ends it
as it is (no SIGCONT first, which would let it run -- and read what waits in its sockets -- until the
SIGKILL lands)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from replog.tools.cluster import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads thread states in /proc")


def thread_states(pid: int) -> str:
    """The state letter of every thread of pid (from /proc/PID/task/TID/stat), sorted."""
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        states.append(stat[stat.rindex(")") + 2])
    return "".join(sorted(states))


def test_pause_returns_with_every_thread_stopped_and_kill_ends_a_paused_node(cluster):
    c = cluster(1)
    (s1,) = c.secondaries
    assert s1.proc is not None
    pid = s1.proc.pid
    for _ in range(3):
        s1.pause()
        states = thread_states(pid)
        assert states and set(states) <= set("tT"), f"pause() returned with threads in states {states!r}"
        s1.resume()
        wait_until(lambda: not set(thread_states(pid)) <= set("tT"), 10, what="the resumed node to run")
    s1.pause()
    s1.kill()
    assert s1.proc.returncode == -signal.SIGKILL
