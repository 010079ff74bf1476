"""`honcho start` with a cluster key in `.env`, as the Procfile's comment says: every node requires the key on
its internal endpoints and the master presents it, so writes reach both secondaries.

The Procfile runs on fixed ports (8000-8002); the test runs a copy on free ports, with honcho itself
reading the `.env` beside it.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from replog.tools.cluster import free_port, http_json, wait_until

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_honcho_runs_the_procfile_with_a_cluster_key_from_dot_env(tmp_path: Path) -> None:
    key = secrets.token_hex(32)
    ports = {str(p): str(free_port()) for p in (8000, 8001, 8002)}
    procfile = re.sub(r"\b(800[012])\b", lambda m: ports[m.group(1)], (ROOT / "Procfile").read_text())
    (tmp_path / "Procfile").write_text(procfile.replace("--delay 3", "--delay 0.5"))
    (tmp_path / ".env").write_text(f"REPLOG_CLUSTER_KEY={key}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    log = open(tmp_path / "honcho.log", "wb")
    honcho = subprocess.Popen(
        [str(BIN / "honcho"), "start"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    master, s1 = f"http://127.0.0.1:{ports['8000']}", f"http://127.0.0.1:{ports['8001']}"
    try:

        def writable() -> bool:
            try:
                return http_json("GET", master + "/health", timeout=1)[1].get("status") == "ok"
            except OSError:
                return False

        wait_until(writable, 30, what="the master to take writes")
        status, entry = http_json("POST", master + "/messages", {"message": "keyed", "w": 3}, timeout=30)
        assert status == 201 and entry["acks"] == 3, entry
        # The secondaries did ask for the key: a stranger's internal call is refused.
        status, body = http_json("GET", s1 + "/entries?since=0")
        assert status == 401 and body["error"] == "unauthorized", body
        assert key not in (tmp_path / "honcho.log").read_text(errors="replace")
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(5)
        log.close()
