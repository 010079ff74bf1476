"""The two classic self-checks, against real processes: write concern with eventual
consistency (one slow secondary), and a secondary that joins late.

They assert orders and conditions (who holds what when an answer arrives), not durations.
"""

from __future__ import annotations

from replog.tools.cluster import wait_until


def texts(node) -> list[str]:
    return [m["text"] for m in node.messages()]


def test_write_concern_and_eventual_consistency(cluster):
    c = cluster(2, delays=[0, 2])  # S2 sleeps 2 s before storing each replication request
    s1, s2 = c.secondaries

    status, msg1 = c.post("Msg1", w=1)
    assert status == 201 and msg1["seq"] == 1 and msg1["acks"] >= 1
    assert "Msg1" not in texts(s2), "a w=1 write must answer before the delayed S2 holds it"
    assert msg1["acks"] < 3

    status, msg2 = c.post("Msg2", w=2)
    assert status == 201 and msg2["seq"] == 2
    assert msg2["acks"] >= 2
    assert texts(s1)[:2] == ["Msg1", "Msg2"], "with S2 delayed, the second ack of Msg2 can only be S1's"

    status, msg3 = c.post("Msg3", w=3)
    assert status == 201 and msg3["seq"] == 3 and msg3["acks"] == 3
    assert texts(s2)[:3] == ["Msg1", "Msg2", "Msg3"], "a w=3 answer means S2 holds Msg3 and everything before it"

    status, msg4 = c.post("Msg4", w=1)
    assert status == 201 and msg4["seq"] == 4
    lagging = texts(s2)  # read S2 first: the master can only be ahead of it
    assert "Msg4" not in lagging, "a w=1 write must answer while the delayed S2 still lacks it"
    assert len(lagging) < len(texts(c.master)), "S2 shows fewer messages than the master for a while"

    final = c.wait_converged(timeout=30)
    assert [m["text"] for m in final] == ["Msg1", "Msg2", "Msg3", "Msg4"]
    assert [m["seq"] for m in final] == [1, 2, 3, 4]
    assert s1.messages() == s2.messages() == final


def test_rejoin_of_a_secondary_started_late(cluster, pool):
    # S2's port is reserved, its process not started; a new in-memory master takes writes without S2
    # only when told that this is a brand-new cluster.
    c = cluster(2, skip={1}, master_args=["--new-cluster"])
    s1, s2 = c.secondaries
    assert not s2.running

    status, body = c.post("Msg1", w=1)
    assert (status, body["seq"]) == (201, 1)
    status, body = c.post("Msg2", w=2)
    assert (status, body["seq"]) == (201, 2) and body["acks"] >= 2

    msg3 = pool.submit(c.post, "Msg3", w=3, timeout=90)
    wait_until(lambda: c.master.health()["waiting_writes"] >= 1, 20, what="Msg3 (w=3) to wait on the master")
    assert not msg3.done()

    status, body = c.post("Msg4", w=1)
    assert (status, body["seq"]) == (201, 4)
    assert not msg3.done(), "Msg3 (w=3) must still wait while S2 is down"
    assert c.master.health()["waiting_writes"] == 1

    s2.start()
    status, body = msg3.result(timeout=60)
    assert status == 201
    assert body["seq"] == 3 and body["acks"] == 3
    assert texts(s2)[:3] == ["Msg1", "Msg2", "Msg3"], "S2 acked Msg3, so it holds it and everything before it"

    final = c.wait_converged(timeout=30)
    assert [m["text"] for m in final] == ["Msg1", "Msg2", "Msg3", "Msg4"]
    assert texts(s2) == ["Msg1", "Msg2", "Msg3", "Msg4"]
    assert c.master.health()["waiting_writes"] == 0
