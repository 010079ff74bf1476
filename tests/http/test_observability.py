"""GET /metrics and GET /readyz of the real master and secondary apps, several of them in one process.

Metrics are read back with prometheus_client's own parser: what Prometheus would scrape.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(api: Any) -> Samples:
    """Every sample of a node's /metrics, by (name, sorted labels)."""
    async with api.session.get(api.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"{key} twice"
            samples[key] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_a_write_moves_the_masters_and_the_secondaries_metrics(cluster):
    master, (s1, s2) = cluster.master, [n.api for n in cluster.secondaries]
    before = await scrape(master)
    before_s1 = await scrape(s1)
    assert value(before, "replog_node_info", role="master", log=(await cluster.health())["log"], version="0.1.0") == 1
    assert value(before, "replog_epoch") == 1
    assert value(before, "replog_read_only") == 0

    (await master.post({"message": "hello", "w": 3})).ok(201)
    (await master.post({"messages": ["a", "bc"], "batch": True, "w": 2})).ok(201)
    await cluster.wait_converged()
    after = await scrape(master)

    assert value(after, "replog_writes_total", w="3", outcome="created") == 1
    assert value(after, "replog_writes_total", w="2", outcome="created") == 1
    assert value(after, "replog_write_duration_seconds_count", w="3") == 1
    assert value(after, "replog_write_duration_seconds_sum", w="3") > 0
    assert value(after, "replog_write_duration_seconds_bucket", w="3", le="+Inf") == 1
    assert value(after, "replog_appended_entries_total") - value(before, "replog_appended_entries_total") == 3
    assert (value(after, "replog_log_entries"), value(after, "replog_durable_seq")) == (3, 3)
    assert value(after, "replog_log_bytes") == len(b"hello" + b"a" + b"bc")
    assert value(after, "replog_waiting_writes") == 0
    for s in cluster.secondaries:
        assert value(after, "replog_secondary_seq", secondary=s.url) == 3
        assert value(after, "replog_secondary_lag_entries", secondary=s.url) == 0
        assert value(after, "replog_secondary_status", secondary=s.url, status="healthy") == 1
        assert value(after, "replog_secondary_status", secondary=s.url, status="unhealthy") == 0
        assert value(after, "replog_replication_batches_total", secondary=s.url) >= 2
        assert value(after, "replog_replication_sent_bytes_total", secondary=s.url) > 0
        assert value(after, "replog_secondary_last_contact_age_seconds", secondary=s.url) >= 0

    got = await scrape(s1)
    assert value(got, "replog_received_entries_total") - value(before_s1, "replog_received_entries_total") >= 3
    assert value(got, "replog_received_bytes_total") > value(before_s1, "replog_received_bytes_total")
    assert (value(got, "replog_durable_seq"), value(got, "replog_log_entries")) == (3, 3)
    assert value(got, "replog_reorder_buffer_entries") == 0
    assert (value(got, "replog_epoch"), value(got, "replog_promised_epoch")) == (1, 1)
    assert value(got, "replog_disk_failed") == 0
    # Each node its own registry: the other secondary's numbers are its own, not a shared process total.
    other = await scrape(s2)
    assert (
        value(other, "replog_durable_seq") == 3
        and ("replog_writes_total", (("outcome", "created"), ("w", "3"))) not in other
    )


async def test_refused_and_duplicate_writes_are_counted_by_outcome(cluster):
    master = cluster.master
    (await master.post({"message": "x", "id": "k1", "w": 1})).ok(201)
    (await master.post({"message": "x", "id": "k1", "w": 1})).ok(200)
    (await master.post({"message": "other", "id": "k1", "w": 1})).error(409, "id_conflict")
    got = await scrape(master)
    assert value(got, "replog_writes_total", w="1", outcome="created") == 1
    assert value(got, "replog_writes_total", w="1", outcome="duplicate") == 1
    assert value(got, "replog_writes_total", w="1", outcome="id_conflict") == 1
    assert value(got, "replog_write_duration_seconds_count", w="1") == 3


async def test_a_stopped_secondary_lags_and_turns_unhealthy_in_the_metrics(make_cluster):
    cluster = await make_cluster(suspect_after=1, unhealthy_after=2)
    gone = cluster.secondaries[1]
    await cluster.stop(1)
    await cluster.wait_secondaries("healthy", "unhealthy")
    for i in range(4):
        (await cluster.master.post({"message": f"m{i}", "w": 2})).ok(201)
    got = await scrape(cluster.master)
    assert value(got, "replog_secondary_lag_entries", secondary=gone.url) == 4
    assert value(got, "replog_secondary_status", secondary=gone.url, status="unhealthy") == 1
    assert value(got, "replog_secondary_status", secondary=gone.url, status="healthy") == 0
    assert value(got, "replog_available_nodes") == 2


# -- /readyz ---------------------------------------------------------------------------------------------


async def readyz(api: Any) -> tuple[int, dict[str, Any]]:
    reply = await api.get("/readyz")
    return reply.status, reply.body


async def test_ready_master_and_secondaries_answer_200(cluster):
    assert await readyz(cluster.master) == (200, {"status": "ready", "role": "master"})
    for node in cluster.secondaries:
        assert await readyz(node.api) == (200, {"status": "ready", "role": "secondary"})


async def test_a_master_still_recovering_is_not_ready(make_cluster):
    # No node answers and this is no new cluster: no majority has promised, so it recovers on and on.
    cluster = await make_cluster(down=(0, 1), wait=False, new_cluster=False)
    status, body = await readyz(cluster.master)
    assert (status, body["error"], body["reason"], body["role"]) == (503, "not_ready", "recovering", "master"), body
    assert body["detail"]
    assert value(await scrape(cluster.master), "replog_recovering") == 1


async def test_a_read_only_master_without_a_quorum_is_not_ready_and_ready_again_when_it_returns(make_cluster):
    cluster = await make_cluster(suspect_after=1, unhealthy_after=2)
    await cluster.stop(0)
    await cluster.stop(1)

    async def reason() -> str | None:
        status, body = await readyz(cluster.master)
        return body.get("reason") if status == 503 else "ready"

    await cluster.wait_for(lambda: _is(reason, "no_quorum"), "the master to be read-only for want of a quorum")
    got = await scrape(cluster.master)
    assert (value(got, "replog_read_only"), value(got, "replog_recovering"), value(got, "replog_epoch")) == (1, 0, 1)
    await cluster.start(0)
    await cluster.wait_for(lambda: _is(reason, "ready"), "the master to be ready with one secondary back")
    assert value(await scrape(cluster.master), "replog_read_only") == 0


async def _is(get: Any, want: str) -> bool:
    return await get() == want
