"""Secondary.roll_back, in process on a real data dir: what a failover master asks of a node whose tail
its log contradicts (SPEC "Contradicting tails"). Only under a promised epoch above the node's log epoch,
only past a seq where both logs agree, removed entries in the rollback file first."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replog import errors
from replog.config import SecondaryConfig
from replog.log import Log
from replog.master import BatchEncoder
from replog.protocol import Fence
from replog.secondary import Secondary

OLD = Fence(1, "old-master")
NEW = Fence(2, "new-master")


@pytest.fixture
async def secondary(tmp_path: Path) -> AsyncIterator[Secondary]:
    node = Secondary(SecondaryConfig(data_dir=str(tmp_path / "data")))
    task = asyncio.create_task(node.commit.run())  # type: ignore[union-attr]
    try:
        yield node
    finally:
        await node.commit.close()  # type: ignore[union-attr]
        await asyncio.gather(task, return_exceptions=True)


def logs() -> tuple[Log, Log]:
    """The old master's log (a1 a2 a3) and the new master's (a1 b2): they agree at seq 1 only."""
    old, new = Log("log-1"), Log("log-1")
    old.extend([("a1", "a1", 0), ("a2", "a2", 0), ("a3", "a3", 0)])
    new.extend([("a1", "a1", 0), ("b2", "b2", 0)])
    return old, new


async def test_a_contradicting_tail_goes_to_the_rollback_file_and_the_node_answers_anew(
    secondary: Secondary, tmp_path: Path
) -> None:
    old, new = logs()
    await secondary.replicate(BatchEncoder(old)(1, 3), OLD)
    assert (secondary.log_epoch, secondary.durable) == (1, 3)
    before = secondary.incarnation

    status = await secondary.roll_back(NEW, 1, new.hash(1))

    assert status["seq"] == 1 and status["promised"] == 2 and status["incarnation"] != before
    assert secondary.log.hash(1) == new.hash(1)
    files = list((tmp_path / "data" / "rollback").glob("2-*.jsonl"))
    assert len(files) == 1
    removed = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert [(r["seq"], r["text"]) for r in removed] == [(2, "a2"), (3, "a3")]
    # The new master's entries are taken from there, and its epoch becomes the log epoch.
    await secondary.replicate(BatchEncoder(new)(2, 2), NEW)
    assert (secondary.log_epoch, secondary.durable, secondary.log.text(2)) == (2, 2, "b2")


async def test_a_rollback_is_refused_from_a_master_of_the_nodes_own_log_epoch(secondary: Secondary) -> None:
    old, _ = logs()
    await secondary.replicate(BatchEncoder(old)(1, 3), OLD)
    with pytest.raises(errors.StaleEpoch):
        await secondary.roll_back(OLD, 1, old.hash(1))  # its log is a prefix of this master's: nothing contradicts
    with pytest.raises(errors.StaleEpoch):
        await secondary.roll_back(Fence(0, "older"), 1, old.hash(1))
    assert secondary.durable == 3


async def test_a_rollback_past_a_seq_where_the_logs_disagree_is_refused(secondary: Secondary) -> None:
    old, new = logs()
    await secondary.replicate(BatchEncoder(old)(1, 3), OLD)
    with pytest.raises(errors.EntryConflict):
        await secondary.roll_back(NEW, 2, new.hash(2))  # seq 2 differs: keeping it would keep a contradiction
    assert secondary.durable == 3 and secondary.log.text(3) == "a3"
