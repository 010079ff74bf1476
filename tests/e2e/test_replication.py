"""Replication against real processes: a secondary restarted empty gets the whole log back,
injected failures under concurrent writes change nothing in what the nodes show, and a
stopped (SIGSTOP) secondary goes suspected, unhealthy, then healthy and catches up."""

from __future__ import annotations

import itertools
import threading

from replog.tools.cluster import wait_until


def secondary_view(master, node) -> dict:
    """The master's /health entry for one secondary."""
    return next(s for s in master.health()["secondaries"] if s["url"] == node.url)


def post_all(c, pool, texts, ws):
    """POST every text concurrently (the pool's threads), w taken in turn from ws; [(status, body)] in order."""
    futures = [pool.submit(c.post, text, w=w) for text, w in zip(texts, itertools.cycle(ws))]
    return [f.result(timeout=120) for f in futures]


def test_secondary_killed_and_restarted_empty_gets_the_whole_log_back(cluster, pool):
    c = cluster(2)
    s1, s2 = c.secondaries
    answers = post_all(c, pool, [f"m{i}" for i in range(200)], ws=[1, 2, 3])
    assert all(status == 201 for status, _ in answers)
    before = c.wait_converged(timeout=30)
    assert len(before) == 200

    s1.kill()  # SIGKILL: its memory, hence its whole log, is gone
    more = post_all(c, pool, [f"late{i}" for i in range(20)], ws=[1, 2])  # written while S1 is down
    assert all(status == 201 for status, _ in more)

    s1.start()  # same port, empty memory, no operator action on the master
    want = c.master.messages()
    assert len(want) == 220
    wait_until(lambda: s1.messages() == want, 30, interval=0.05, what="the restarted S1 to hold the whole log")
    assert [m["seq"] for m in s1.messages()] == list(range(1, 221))
    assert s1.health()["seq"] == 220
    wait_until(lambda: secondary_view(c.master, s1)["seq"] == 220, 20, what="the master to see S1 at seq 220")
    assert s2.messages() == want

    # And it counts again as a holder: a write that needs every node is answered.
    status, body = c.post("after rejoin", w=3)
    assert (status, body["seq"], body["acks"]) == (201, 221, 3)


def test_fail_rate_and_concurrent_writes_keep_order_and_exactly_once(cluster, pool):
    # Small batches: many replication requests, hence many injected failures, retries and duplicates.
    c = cluster(2, fail_rates=[0.3, 0.3], master_args=["--batch-max-count", "8"])
    texts = [f"t{i:03d}" for i in range(300)]
    done = threading.Event()
    samples = []
    problems = []

    def sample() -> None:
        # Read the secondary first, then the master: the master can only be ahead.
        while not done.is_set():
            for s in c.secondaries:
                try:
                    shown = s.messages()
                    master = c.master.messages()
                except OSError as exc:
                    problems.append(f"read failed: {exc!r}")
                    return
                samples.append((len(shown), len(master)))
                if master[: len(shown)] != shown:
                    problems.append(
                        f"{s.url} shows {shown[-3:]}... not a prefix of the master's {master[: len(shown)][-3:]}"
                    )
                    return

    sampler = threading.Thread(target=sample, name="prefix-sampler", daemon=True)
    sampler.start()
    try:
        answers = post_all(c, pool, texts, ws=[1, 2, 3])  # 32 in flight (the pool's size)
    finally:
        done.set()
        sampler.join(30)
    assert not problems, problems
    assert len(samples) >= 2, "the sampler must have read the lists while the writes ran"

    for (status, body), w in zip(answers, itertools.cycle([1, 2, 3])):
        assert status == 201, body
        assert body["acks"] >= w
    assert sorted(body["seq"] for _, body in answers) == list(range(1, 301))

    final = c.wait_converged(timeout=60)
    assert [m["seq"] for m in final] == list(range(1, 301))
    assert sorted(m["text"] for m in final) == texts, "every message once, none lost, none doubled"
    assert len({m["id"] for m in final}) == 300
    by_text = {body["text"]: body["seq"] for _, body in answers}
    assert all(by_text[m["text"]] == m["seq"] for m in final), "each entry sits at the seq its write was answered with"
    for s in c.secondaries:
        assert s.messages() == final
    # The injected failures did happen (otherwise this test proves nothing about them).
    failures = [e for e in c.master.events() if e.get("event") == "replicate_retry"]
    assert failures, "no replication request failed: --fail-rate was not exercised"
    print(f"{len(samples)} prefix samples, {len(failures)} injected failures retried")


def test_stopped_secondary_is_suspected_then_unhealthy_then_catches_up(cluster):
    # A wider suspected window (beats 2..7 missed) so that a poll sees it on a busy machine.
    c = cluster(2, master_args=["--unhealthy-after", "8"])
    s1, s2 = c.secondaries
    c.wait_healthy()
    for i in range(3):
        assert c.post(f"before{i}", w=3)[0] == 201
    c.wait_converged()

    s1.pause()  # SIGSTOP: the socket accepts, nothing answers
    seen = []

    def status_is(wanted: str) -> bool:
        status = secondary_view(c.master, s1)["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == wanted

    wait_until(lambda: status_is("suspected"), 20, interval=0.02, what="S1 to be suspected")
    while_stopped = [c.post(f"during{i}", w=2) for i in range(5)]  # S2 is the second holder
    assert all(status == 201 for status, _ in while_stopped)
    wait_until(lambda: status_is("unhealthy"), 20, interval=0.02, what="S1 to be unhealthy")
    assert seen == ["healthy", "suspected", "unhealthy"] or seen == ["suspected", "unhealthy"], seen
    view = secondary_view(c.master, s1)
    assert view["seq"] == 3 and view["lag"] == 5
    assert c.master.health()["status"] == "ok", "the master and S2 are a majority"

    s1.resume()  # SIGCONT
    wait_until(lambda: status_is("healthy"), 20, interval=0.02, what="S1 to be healthy again")
    want = c.master.messages()
    assert [m["text"] for m in want] == [f"before{i}" for i in range(3)] + [f"during{i}" for i in range(5)]
    wait_until(lambda: s1.messages() == want, 30, interval=0.05, what="S1 to catch up")
    wait_until(lambda: secondary_view(c.master, s1)["lag"] == 0, 20, what="the master to see S1 caught up")

    changes = [
        (e["before"], e["after"])
        for e in c.master.events()
        if e.get("event") == "secondary_status" and e.get("secondary") == s1.url
    ]
    assert changes[-3:] == [("healthy", "suspected"), ("suspected", "unhealthy"), ("unhealthy", "healthy")], changes
