"""The chaos suite: a real cluster under concurrent writers and a seeded nemesis, with an invariant checker.

Run it from pytest (`tests/test_chaos.py`, a fixed seed set) or as a command for longer soaks:
`python -m tests.chaos.harness --seed 7 --duration 30 [--data-dir] [--soak MINUTES]`.
"""
