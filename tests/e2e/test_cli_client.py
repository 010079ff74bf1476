"""The consumer and client commands against real processes: `replog tail -f` across a master restart,
`replog post -` from stdin, a post that waits on a terminal, and the friction of a first try (a URL
without a scheme, a write sent to a secondary)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

from replog.tools.cluster import http_json, wait_until

REPLOG = str(Path(sys.executable).with_name("replog"))


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REPLOG, *args], env=env(), capture_output=True, text=True, timeout=60, input=stdin)


class Lines:
    """The lines a process prints on a pipe, collected by a thread as they come."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)


def test_tail_f_prints_every_entry_once_across_a_master_restart(cluster):
    c = cluster(0, data_dirs=True)
    url = c.master.url.removeprefix("http://")  # and no scheme: http:// is assumed
    for k in range(1, 31):
        assert c.post(f"m{k}", w=1)[0] == 201
    proc = subprocess.Popen(
        [REPLOG, "tail", "-f", "--node", url], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out = Lines(proc.stdout)
        wait_until(lambda: len(out.lines) >= 30, 20, what="the backlog")
        c.master.kill()  # a crash; the data dir keeps every acknowledged entry
        c.master.start()
        c.wait_writable()
        for k in range(31, 61):
            assert c.post(f"m{k}", w=1)[0] == 201
        assert c.post("end", w=1)[0] == 201  # in order behind everything: once printed, all before it is
        wait_until(lambda: out.lines and out.lines[-1] == "61\tend\n", 20, what="the entries after the restart")
    finally:
        proc.terminate()
        proc.wait(10)
    assert out.lines == [f"{k}\tm{k}\n" for k in range(1, 61)] + ["61\tend\n"]
    assert c.master.starts == 2


def test_tail_without_f_prints_the_log_after_since(cluster):
    c = cluster(0)
    assert c.post(None, messages=["a", "b\tc", "d"], w=1)[0] == 201
    out = run("tail", "--node", c.master.url, "--since", "1")
    assert (out.returncode, out.stdout) == (0, "2\tb\tc\n3\td\n"), out.stderr


def test_post_dash_appends_each_line_of_stdin_in_order(cluster):
    c = cluster(1)
    lines = [f"line {k}" for k in range(300)]
    out = run("post", "-", "-w", "2", "--master", c.master.url.removeprefix("http://"), stdin="\n".join(lines) + "\n\n")
    assert out.returncode == 0, out.stderr
    printed = out.stdout.splitlines()
    assert len(printed) == 300
    assert all(re.fullmatch(rf"stored seq={k + 1} id=\S+ w=2 acks=2", p) for k, p in enumerate(printed)), printed[:3]
    assert c.master.texts() == lines  # the blank line is no message


def test_a_post_waiting_on_a_terminal_shows_what_it_waits_for(cluster):
    c = cluster(2, skip=(1,), master_args=["--new-cluster"])  # s2 down: a w=3 write waits for it
    s2 = c.secondaries[1]
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [REPLOG, "post", "waits", "-w", "3", "--master", c.master.url],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=secondary,
        text=True,
    )
    os.close(secondary)
    shown = bytearray()
    try:

        def says_what_it_waits_for() -> bool:
            try:
                shown.extend(os.read(primary, 65536))
            except OSError:
                return False
            return b"not yet " + s2.url.encode() in shown

        wait_until(says_what_it_waits_for, 20, what="the waiting line on the terminal")
        text = shown.decode()
        assert "waiting" in text and "for 3 nodes to hold it: 2 of 3 do" in text, text
        s2.start()
        stdout, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        os.close(primary)
    assert proc.returncode == 0
    assert re.fullmatch(r"stored seq=1 id=\S+ w=3 acks=3\n", stdout), stdout


def test_a_post_to_a_secondary_says_it_is_one(cluster):
    c = cluster(1)
    out = run("post", "x", "--master", c.secondaries[0].url)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert lines[0].startswith("Error: ") and "not_master" in lines[0] and "secondary" in lines[0]
    status, body = http_json("POST", c.secondaries[0].url + "/messages", {"message": "x"})
    assert status == 503 and body["role"] == "secondary"


def test_a_url_that_is_none_is_one_error_line():
    out = run("post", "x", "--master", "http://")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and out.stderr.startswith("Error: "), out.stderr
