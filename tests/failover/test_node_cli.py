"""`replog node`'s command line: what it requires and refuses before it opens anything."""

from __future__ import annotations

from click.testing import CliRunner

from replog.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["node", *args], env=env)
    return result.exit_code, result.output


def test_name_etcd_and_nodes_are_required() -> None:
    for missing in ("--name", "--etcd", "--nodes"):
        args = {"--name": "a", "--etcd": "http://127.0.0.1:2379", "--nodes": "3"}
        del args[missing]
        code, out = run(*[x for kv in args.items() for x in kv])
        assert code == 2 and missing in out


def test_bad_values_are_refused_with_the_option_named() -> None:
    base = ["--name", "a", "--nodes", "3"]
    code, out = run(*base, "--etcd", "127.0.0.1:2379")
    assert code == 2 and "is not an http:// URL" in out
    code, out = run(*base, "--etcd", "http://e:2379", "--default-w", "4")
    assert code == 2 and "--default-w" in out
    code, out = run(*base, "--etcd", "http://e:2379", "--port", "0")
    assert code == 2 and "--advertise" in out
    code, out = run(*base, "--etcd", "http://e:2379", "--advertise", "e:8000")
    assert code == 2 and "--advertise" in out


def test_every_option_reads_its_environment_variable() -> None:
    # A bad REPLOG_DEFAULT_W is refused like the flag: the environment reached the option.
    env = {"REPLOG_NAME": "a", "REPLOG_ETCD": "http://e1:2379,http://e2:2379", "REPLOG_NODES": "3"}
    code, out = run(env={**env, "REPLOG_DEFAULT_W": "9"})
    assert code == 2 and "--default-w" in out
    code, out = run(env={**env, "REPLOG_LEASE_TTL": "0"})
    assert code == 2 and "--lease-ttl" in out
