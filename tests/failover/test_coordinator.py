"""replog.coordinator against a real etcd: lease, membership, the leader key as a create-revision
transaction, resignation, and what a lost lease or a wiped etcd look like."""

from __future__ import annotations

import aiohttp
import pytest

from replog.coordinator import Coordinator, EtcdUnavailable, LeaseLost
from replog.lease import boottime
from replog.tools.cluster import free_port


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_campaign_is_won_once_and_its_epoch_is_the_keys_create_revision(etcd, session) -> None:
    a = Coordinator(session, [etcd.url], "c1")
    b = Coordinator(session, [etcd.url], "c1")
    await a.grant(5)
    await b.grant(5)
    won, leader = await a.campaign("a", "http://a")
    assert won and leader is not None and leader.name == "a" and leader.epoch > 0
    lost, current = await b.campaign("b", "http://b")
    assert not lost and current == leader  # the key held: b learns who holds it, at which epoch
    assert await b.leader() == leader
    # Only the holder's epoch deletes the key; a stale epoch (an older leader's) changes nothing.
    assert not await b.resign(leader.epoch - 1)
    assert await a.resign(leader.epoch)
    assert await a.leader() is None
    won, again = await b.campaign("b", "http://b")
    assert won and again is not None and again.epoch > leader.epoch  # epochs only grow


async def test_members_are_registered_under_their_lease_and_go_with_it(etcd, session) -> None:
    a = Coordinator(session, [etcd.url], "c2")
    other = Coordinator(session, [etcd.url], "another-cluster")
    await a.grant(5)
    await other.grant(5)
    await a.register("a", "http://127.0.0.1:1")
    await other.register("z", "http://127.0.0.1:9")
    members = await a.members()
    assert {m: v.url for m, v in members.items()} == {"a": "http://127.0.0.1:1"}
    won, _ = await a.campaign("a", "http://127.0.0.1:1")
    assert won
    await a.revoke()  # a lease's end takes its member key and its leader key with it
    assert await other.members() != {} and await a.members() == {}
    assert await a.leader() is None


async def test_keep_alive_returns_its_send_time_and_a_lost_lease_says_so(etcd, session) -> None:
    a = Coordinator(session, [etcd.url], "c3")
    await a.grant(1)
    before = boottime()
    sent_at = await a.keep_alive()
    assert before <= sent_at <= boottime()
    lease = a.lease
    await a.revoke()
    a.lease = lease
    with pytest.raises(LeaseLost):
        await a.keep_alive()


async def test_unreachable_endpoints_are_tried_in_turn(etcd, session) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    a = Coordinator(session, [dead, etcd.url], "c4")
    await a.grant(5)  # the dead endpoint is skipped
    assert await a.leader() is None
    lonely = Coordinator(session, [dead], "c4", timeout=0.5)
    with pytest.raises(EtcdUnavailable):
        await lonely.grant(5)


async def test_a_wiped_etcd_hands_out_lower_revisions(etcd, session) -> None:
    """What a node sees when etcd loses its data: a new leader key with a create-revision below the
    epochs it knew. (The node refuses it; this shows the coordinator reports it as it is.)"""
    a = Coordinator(session, [etcd.url], "c5")
    await a.grant(5)
    for i in range(5):
        await a.register(f"m{i}", "http://x")
    won, first = await a.campaign("a", "http://a")
    assert won and first is not None
    etcd.wipe()
    b = Coordinator(session, [etcd.url], "c5")
    await b.grant(5)
    won, second = await b.campaign("b", "http://b")
    assert won and second is not None and second.epoch < first.epoch
