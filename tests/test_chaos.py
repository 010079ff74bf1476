"""The chaos suite's CI part: a fixed seed set of short runs, each with zero invariant violations.

Each run is a real cluster (replog processes on loopback) under concurrent writers at mixed w
while a seeded nemesis kills, pauses, partitions and restarts nodes; see tests/chaos/. A failing
run's message holds its seed, its summary and the command that reproduces it. Longer soaks:
`python -m tests.chaos.harness --soak MINUTES`.
"""

from __future__ import annotations

import pytest

try:
    from tests.chaos.harness import RunConfig, run
except ImportError:  # pytest put tests/ rather than the repository root on sys.path
    from chaos.harness import RunConfig, run  # type: ignore[no-redef]

# Seeds picked so that together they inject every fault kind (see the summary each run prints):
# in memory: kills (quick and slow), a partition with a restart behind it, drops, resets;
# on disk: master kills and recovery, a partition with a restart, pauses, latency;
# three flaky, slow secondaries (--fail-rate 0.2, --delay 0.05): kills, pauses, latency, partitions;
# overlapping faults on disk (quorum lost at times: 503s): master kills during secondary faults, replays.
RUNS = [
    pytest.param(RunConfig(seed=10, duration=12), id="memory-seed10"),
    pytest.param(RunConfig(seed=17, duration=12, data_dirs=True), id="data-dirs-seed17"),
    pytest.param(RunConfig(seed=27, duration=10, secondaries=3, fail_rate=0.2, delay=0.05), id="flaky-3-secondaries-seed27"),
    pytest.param(RunConfig(seed=20, duration=10, secondaries=3, data_dirs=True, overlap=True), id="overlap-data-dirs-seed20"),
]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("config", RUNS)
def test_no_invariant_violation_under_faults(config: RunConfig) -> None:
    result = run(config)
    assert sum(result.faults.values()) > 0, result.summary()
    assert result.outcomes["ok"] > 0, result.summary()
    assert result.ok, f"seed {config.seed}: {len(result.violations)} violations\n{result.summary()}"
