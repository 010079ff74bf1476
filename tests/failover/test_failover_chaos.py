"""The chaos suite against a failover cluster: one short seeded run (etcd and three `replog node`s, writers
at mixed w following the master, a nemesis that kills, pauses and cuts the master off from etcd), judged
by the chaos checker. Longer runs: `python -m tests.chaos.harness --failover --duration 120`, or
`--failover --soak MINUTES` for one run after another with rotating seeds.
"""

from __future__ import annotations

import pytest

try:
    from tests.chaos.harness import RunConfig, run
except ImportError:  # pytest put tests/ rather than the repository root on sys.path
    from chaos.harness import RunConfig, run  # type: ignore[no-redef]


# Seed 132 injects, in 25 s: a secondary paused, the master paused past its lease, the master killed, the master
# cut off from etcd past its lease, a secondary killed.
@pytest.mark.timeout(150)
def test_no_invariant_violation_with_master_kills_pauses_and_etcd_cuts() -> None:
    config = RunConfig(seed=132, duration=25, failover=True, converge_timeout=40)
    result = run(config)
    master_faults = sum(result.faults[k] for k in ("kill_master", "pause_master", "isolate_master"))
    assert master_faults >= 2, result.summary()
    assert result.outcomes["ok"] > 0, result.summary()
    assert result.ok, f"failover seed {config.seed}: {len(result.violations)} violations\n{result.summary()}"
