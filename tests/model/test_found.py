"""The step sequences the model test found, replayed as plain tests: one per defect, each failing until
its defect is fixed (the model test itself finds them again within its default run).

Each replays the (hypothesis-minimised, then hand-checked) steps on RecoveryModel and then runs every
invariant, as the state machine does after each step.
"""

from __future__ import annotations

from typing import Any

import pytest

try:
    from tests.model.test_recovery_model import DiskRecoveryModel, RecoveryModel, quiet_logs
except ImportError:  # pytest put tests/ rather than the repository root on sys.path
    from model.test_recovery_model import DiskRecoveryModel, RecoveryModel, quiet_logs  # type: ignore[no-redef]

__all__ = ["quiet_logs"]  # the fixture, imported for the tests below


def check(state: RecoveryModel) -> None:
    """Every invariant of the model, as hypothesis runs them after a step."""
    state.nothing_unexpected()
    state.majority_writes_never_lost()
    state.one_entry_per_seq()
    state.secondaries_are_prefixes()
    state.whole_client_batches()
    state.id_index_matches_log()


def replay(state: RecoveryModel, steps: list[tuple[str, dict[str, Any]]]) -> None:
    try:
        for name, kw in steps:
            getattr(state, name)(**kw)
            check(state)
    finally:
        state.teardown()


def test_a_restarted_master_recovers_once_the_secondaries_it_could_not_reach_come_back(quiet_logs: Any) -> None:
    """A master started while no secondary answers proposes epoch 1 and sends its promises in vain; once
    they answer, every later round's GET /health carries that fence, a node that promised epoch 1 to the
    first master answers stale_epoch, and Master.recover() retries with the same fence forever: the
    raised epoch it learnt (`seen`) is never used, because _positions() raises before next_epoch()."""
    replay(
        RecoveryModel(),
        [
            ("boot", {"secondaries": 2, "batch_max_count": 1, "window": 1, "late_secondary": False}),
            ("toggle_pause", {"pick": 0}),
            ("toggle_pause", {"pick": 1}),
            ("start_master", {"on_disk": False, "old_copy": False}),
            ("heal_and_converge", {}),
        ],
    )


def test_a_master_without_its_log_does_not_count_itself_when_the_only_answer_is_blank(quiet_logs: Any) -> None:
    """s1 is down when the cluster starts (its first master runs with --new-cluster); w=2 is acknowledged
    by the master and s2. The master restarts in memory while s2 is paused and s1 is back: s1 never heard
    of the log, so the round was "blank" (recovery.counts_itself(blank=True)), the master counted its own
    vote, recovered an empty log from s1 alone, and the w=2 write was lost. A restart must not count its
    vote: only a brand-new cluster's first master, by the operator's word (--new-cluster)."""
    replay(
        RecoveryModel(),
        [
            (
                "boot",
                {"secondaries": 2, "batch_max_count": 1, "window": 1, "late_secondary": True, "new_cluster": True},
            ),
            ("write", {"pick": 0, "w": 2, "key": None, "count": 1, "batch": False}),
            ("crash_master", {"pick": 0, "lose_disk": False}),
            ("toggle_pause", {"pick": 1}),
            ("toggle_pause", {"pick": 0}),
            ("start_master", {"on_disk": False, "old_copy": False}),
        ],
    )


@pytest.mark.timeout(30)
def test_answers_out_of_order_do_not_make_the_replicator_spin(quiet_logs: Any) -> None:
    """With a window of requests in flight, the second request's answer arrives before the first's: the
    drain loop's asyncio.wait() over every request in flight returns at once, _collect() takes answers
    from the head only, and the loop spins without yielding to time until the first answer comes
    (replicator.py, _drain_loop): the model's loop never goes idle (Livelock)."""
    replay(
        RecoveryModel(),
        [
            ("boot", {"secondaries": 2, "batch_max_count": 1, "window": 4, "late_secondary": False}),
            ("set_link", {"pick": 0, "slot": 0, "mode": "slow"}),
            ("write", {"pick": 0, "w": 1, "key": None, "count": 1, "batch": False}),
            ("write", {"pick": 0, "w": 1, "key": None, "count": 1, "batch": False}),
            ("deliver", {"pick": 1, "answer": "now"}),
        ],
    )


def test_a_master_back_on_its_data_dir_takes_the_newer_log_of_another_identity(quiet_logs: Any) -> None:
    """The master (data dir) writes t1 at w=1 while cut off from both secondaries, and crashes. Started
    once without its data dir, a master recovers an empty log from secondaries that hold the first log's
    identity but no entry (choose_donor skips seq 0), keeps a new identity, and gets t2 acknowledged at
    w=2 by all three nodes (log epoch 2). Restarted on its data dir (log epoch 1, t1), the master skips
    both secondaries' log of another identity although its log epoch is higher (choose_donor: "a master
    holding entries trusts only nodes of its own log"), recovers its own t1, and calls both diverged:
    the majority write t2 is lost from the recovered master and the cluster has no quorum."""
    replay(
        DiskRecoveryModel(),
        [
            ("boot", {"secondaries": 2, "batch_max_count": 1, "window": 1, "late_secondary": False}),
            ("set_link", {"pick": 0, "slot": 0, "mode": "cut"}),
            ("set_link", {"pick": 0, "slot": 1, "mode": "cut"}),
            ("write", {"pick": 0, "w": 1, "key": None, "count": 1, "batch": False}),
            ("crash_master", {"pick": 0, "lose_disk": False}),
            ("start_master", {"on_disk": False, "old_copy": False}),
            ("write", {"pick": 0, "w": 2, "key": None, "count": 1, "batch": False}),
            ("crash_master", {"pick": 0, "lose_disk": False}),
            ("start_master", {"on_disk": True, "old_copy": False}),
        ],
    )


def test_a_superseded_master_is_deposed_not_told_its_secondaries_diverged(quiet_logs: Any) -> None:
    """A second master starts beside the first, on secondaries that hold the first one's log identity
    with no entry yet. When it kept a new identity (choose_donor skipped nodes at seq 0), its first write
    made them adopt that, and the first master's next heartbeat got stale_epoch from a node holding
    "another log" (Stale.foreign): it marked both secondaries diverged instead of stepping down, stayed
    undeposed, answered no_quorum rather than not_master, and /health showed two false divergences."""
    replay(
        RecoveryModel(),
        [
            ("boot", {"secondaries": 2, "batch_max_count": 1, "window": 1, "late_secondary": False}),
            ("start_master", {"on_disk": False, "old_copy": False}),
            ("write", {"pick": 1, "w": 1, "key": None, "count": 1, "batch": False}),
            ("crash_master", {"pick": 1, "lose_disk": False}),
            ("heal_and_converge", {}),
        ],
    )
