"""`replog --help` and every command's --help: one whole sentence per command, and every option
names the environment variable it reads (walked through click's own introspection, so an option
added later is held to the same rule)."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from replog.cli import main

COMMANDS = sorted(main.commands)


def options(command: click.Command) -> list[click.Option]:
    """The options a user sets (not --help, which click adds, nor --version, which sets nothing)."""
    return [p for p in command.params if isinstance(p, click.Option) and p.expose_value]


def help_text(*args: str, columns: int = 80) -> str:
    result = CliRunner().invoke(main, [*args, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def test_there_are_commands_to_check() -> None:
    assert {"master", "secondary", "post", "get", "tail", "health", "bench", "export", "import"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_shows_its_environment_variable(name: str) -> None:
    command = main.commands[name]
    text = " ".join(help_text(name).split())  # unwrapped: click wraps the brackets across lines
    opts = options(command)
    assert opts, name
    for opt in opts:
        assert isinstance(opt.envvar, str) and opt.envvar.startswith("REPLOG_"), (name, opt.opts, opt.envvar)
        assert opt.show_envvar, (name, opt.opts)
        assert re.search(rf"env var: {opt.envvar}\b", text), (name, opt.opts, opt.envvar)


def test_bench_reads_only_its_own_variables() -> None:
    """A bench must never be aimed at a real cluster or data dir by the variables of post or a node."""
    for opt in options(main.commands["bench"]):
        assert opt.envvar.startswith("REPLOG_BENCH_"), (opt.opts, opt.envvar)


@pytest.mark.parametrize("columns", [80, 100, 200])
def test_command_summaries_are_whole_sentences(columns: int) -> None:
    text = help_text(columns=columns)
    listing = text[text.index("Commands:") :].splitlines()[1:]
    summaries: dict[str, str] = {}
    name = ""
    for line in listing:
        if not line.strip():
            continue
        m = re.match(r"  (\S+)\s+(.*)", line)
        if m and m.group(1) in main.commands:
            name = m.group(1)
            summaries[name] = m.group(2).strip()
        else:  # a summary wrapped onto a second line
            summaries[name] += " " + line.strip()
    assert set(summaries) == set(COMMANDS)
    for name, summary in summaries.items():
        assert not summary.endswith("..."), (name, summary)
        assert summary.endswith("."), (name, summary)
        assert len(summary) <= 60, (name, summary)
