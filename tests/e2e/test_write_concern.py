"""Write concern against real processes: a blocked w=3 write holds up no one, a timeout is a
504 that keeps the message, an idempotent retry is stored once, and without a quorum the
master is read-only until a majority is back."""

from __future__ import annotations

import threading

from replog.tools.cluster import http_json, wait_until


def post(c, body: dict, http_timeout: float = 60.0) -> tuple[int, dict]:
    """POST a raw body (LocalCluster.post keeps `timeout` for the HTTP client, not for the body)."""
    return http_json("POST", c.master.url + "/messages", body, timeout=http_timeout)


def test_blocked_w3_write_holds_up_no_w1_write(cluster, pool):
    c = cluster(2)
    s1, s2 = c.secondaries
    s2.kill()

    blocked = pool.submit(c.post, "needs everyone", w=3, timeout=90)
    wait_until(lambda: c.master.health()["waiting_writes"] == 1, 20, what="the w=3 write to wait on the master")

    quick = [pool.submit(c.post, f"quick{i}", w=1, timeout=30) for i in range(20)]
    answers = [f.result(timeout=60) for f in quick]
    assert not blocked.done(), "the w=3 write cannot be answered while S2 is down"
    assert [status for status, _ in answers] == [201] * 20
    assert sorted(body["seq"] for _, body in answers) == list(range(2, 22))
    assert c.master.health()["waiting_writes"] == 1

    s2.start()  # empty, same port: it gets everything, and the w=3 write is answered
    status, body = blocked.result(timeout=60)
    assert (status, body["seq"], body["acks"]) == (201, 1, 3)
    final = c.wait_converged(timeout=30)
    assert len(final) == 21


def test_timeout_is_504_and_the_message_is_kept_and_later_delivered(cluster):
    c = cluster(2)
    s1, s2 = c.secondaries
    assert post(c, {"message": "first", "w": 3})[0] == 201
    s2.kill()

    status, body = post(c, {"message": "late", "w": 3, "timeout": 0.5})
    assert status == 504, body
    assert body["error"] == "write_concern_timeout"
    assert body["seq"] == 2 and body["w"] == 3 and body["acks"] < 3
    assert isinstance(body["id"], str) and body["id"] and body["detail"]

    kept = c.master.messages()
    assert [(m["seq"], m["text"]) for m in kept] == [(1, "first"), (2, "late")], "a 504 does not roll the message back"
    assert kept[1]["id"] == body["id"]
    wait_until(lambda: s1.messages() == kept, 20, what="S1 to hold the timed-out message")

    s2.start()  # restarted empty: it receives both, in order
    wait_until(lambda: s2.messages() == kept, 30, interval=0.05, what="S2 to receive the timed-out message")
    wait_until(lambda: c.master.health()["secondaries"][1]["seq"] == 2, 20, what="the master to count S2's ack")


def test_retry_of_a_504_with_the_id_it_answered_is_not_appended_twice(cluster):
    """A client whose write timed out retries it with the id the 504 gave it (the master generated it)."""
    c = cluster(2)
    s1, s2 = c.secondaries
    s2.kill()
    status, body = post(c, {"message": "late", "w": 3, "timeout": 0.5})
    assert status == 504, body
    s2.start()
    status, again = post(c, {"message": "late", "id": body["id"], "w": 3, "timeout": 20})
    assert (status, again["seq"], again["id"], again["acks"]) == (200, body["seq"], body["id"], 3), again
    shown = c.master.messages()
    assert len({m["id"] for m in shown}) == len(shown), f"two entries share an id: {shown}"
    assert [m["text"] for m in shown] == ["late"]


def test_idempotent_retry_is_stored_once_on_every_node(cluster, pool):
    c = cluster(2)
    assert post(c, {"message": "before", "w": 3})[0] == 201
    body = {"message": "pay 10", "id": "order-42", "w": 3}
    start = threading.Barrier(3)

    def send() -> tuple[int, dict]:
        start.wait(10)
        return post(c, body)

    concurrent = [f.result(timeout=60) for f in [pool.submit(send) for _ in range(3)]]
    assert sorted(status for status, _ in concurrent) == [200, 200, 201], concurrent
    assert {(b["seq"], b["id"], b["text"]) for _, b in concurrent} == {(2, "order-42", "pay 10")}

    status, later = post(c, body)  # and once more, after the first attempts were answered
    assert (status, later["seq"], later["acks"]) == (200, 2, 3)

    status, conflict = post(c, {"message": "pay 99", "id": "order-42", "w": 1})
    assert status == 409 and conflict["error"] == "id_conflict"

    assert post(c, {"message": "after", "w": 3})[1]["seq"] == 3
    final = c.wait_converged(timeout=30)
    assert [(m["seq"], m["text"]) for m in final] == [(1, "before"), (2, "pay 10"), (3, "after")]
    for node in c.nodes:
        assert [m for m in node.messages() if m["id"] == "order-42"] == [{"seq": 2, "id": "order-42", "text": "pay 10"}]


def test_no_quorum_is_503_and_writes_resume_when_a_secondary_returns(cluster):
    c = cluster(2)
    s1, s2 = c.secondaries
    assert post(c, {"message": "kept", "w": 3})[0] == 201
    s1.kill()
    s2.kill()

    wait_until(lambda: c.master.health()["status"] == "read_only", 20, what="the master to be read-only")
    for w in (1, 2):
        status, body = post(c, {"message": "refused", "w": w})
        assert status == 503, body
        assert body["error"] == "no_quorum" and body["detail"]
    assert [m["text"] for m in c.master.messages()] == ["kept"], "a 503 appends nothing"
    assert c.master.health()["seq"] == 1

    s1.start()  # one secondary back (empty): master + S1 is a majority again
    c.wait_writable(timeout=20)  # no operator action: the master notices by itself
    status, body = post(c, {"message": "accepted again", "w": 2})
    assert (status, body["seq"]) == (201, 2) and body["acks"] >= 2
    wait_until(lambda: s1.messages() == c.master.messages(), 20, what="S1 to get the log back")
    assert [m["text"] for m in s1.messages()] == ["kept", "accepted again"]
    assert c.master.health()["status"] == "ok"
