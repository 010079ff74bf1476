"""Run a local cluster of real `replog` processes: for the examples, `replog bench` and the tests.

Each node is a `python -m replog` subprocess on a free loopback port, logging JSON lines
to a file. Waiting is always for a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ClusterError(RuntimeError):
    """A node did not start, or a condition was not met by its deadline."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def key_file_args(workdir: Path, cluster_key: str | None) -> list[str]:
    """Write cluster_key to workdir/cluster.key (mode 0600) and return the node options that read it;
    [] without a key."""
    if cluster_key is None:
        return []
    key_file = workdir / "cluster.key"
    key_file.touch(mode=0o600)
    key_file.write_text(cluster_key + "\n")
    return ["--cluster-key-file", str(key_file)]


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll cond() until it returns something truthy; ClusterError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def http_json(
    method: str,
    url: str,
    body: Any = None,
    timeout: float = 10.0,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    """One HTTP request with a JSON body (and token, if given, as Authorization: Bearer); (status, decoded
    JSON). Raises OSError when unreachable (and on an https:// URL whose certificate context does not verify)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


@dataclass(frozen=True)
class ClusterTls:
    """TLS files of a LocalCluster: every node serves HTTPS with cert/key, the master verifies the
    secondaries with ca; node_certs replaces the (cert, key, the CA that signed it) of some nodes (0 the
    master, i the i-th secondary), say with one another CA signed (the tooling verifies that node with its
    own CA; the master still with ca). With mutual, secondaries require the master's certificate on their
    internal endpoints (--tls-client-ca ca)."""

    ca: str
    cert: str
    key: str
    node_certs: Mapping[int, tuple[str, str, str]] = field(default_factory=dict)
    mutual: bool = False

    def args(self, index: int) -> list[str]:
        cert, key, _ = self.node_certs.get(index, (self.cert, self.key, self.ca))
        args = ["--tls-cert", cert, "--tls-key", key]
        if index == 0:
            args += ["--tls-ca", self.ca]
        elif self.mutual:
            args += ["--tls-client-ca", self.ca]
        return args

    def context(self, index: int = 0) -> ssl.SSLContext:
        """What the tooling verifies node index with (0 the master, i the i-th secondary)."""
        return ssl.create_default_context(cafile=self.node_certs.get(index, (None, None, self.ca))[2])


def _all_threads_stopped(pid: int) -> bool:
    """Whether every live thread of pid is stopped (state T or t in /proc/PID/task/TID/stat); True once it
    is gone, since a process that is gone runs no more either."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        # The state follows the command name in parentheses, which may itself hold ") ".
        if stat[stat.rindex(")") + 2] not in "TtZX":
            return False
    return True


class Node:
    """One replog process: start it, signal it, restart it, read its log."""

    def __init__(
        self,
        role: str,
        port: int,
        args: Sequence[str],
        log_path: Path,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        self.role = role
        self.port = port
        self.host = host
        self.ssl_context = ssl_context  # given: the node serves HTTPS and is verified with this
        self.url = f"{'https' if ssl_context is not None else 'http'}://{host}:{port}"
        self.args = list(args)  # options after `replog ROLE --port PORT`
        self.log_path = log_path
        self.env = dict(env or {})  # extra environment of the process (inherited REPLOG_* variables are dropped)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.token = token  # what this harness presents on its own calls (a token, or the cluster key)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "replog",
            self.role,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--log-format",
            "json",
            *self.args,
        ]

    def start(self, wait: bool = True, timeout: float = 15.0) -> None:
        if self.running:
            raise ClusterError(f"{self.role} on {self.port} is already running")
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPLOG_")}
        env.update(self.env)
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        self.starts += 1
        if wait:
            self.wait_listening(timeout)

    def wait_listening(self, timeout: float = 15.0) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ClusterError(
                    f"{self.role} on port {self.port} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                return self.health(timeout=1.0) is not None
            except OSError:
                return False

        wait_until(up, timeout, what=f"{self.role} on port {self.port} to listen")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        status, data = http_json(
            "GET", self.url + "/health", timeout=timeout, token=self.token, context=self.ssl_context
        )
        return data

    def messages(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        status, data = http_json(
            "GET", self.url + "/messages", timeout=timeout, token=self.token, context=self.ssl_context
        )
        if status != 200:
            raise ClusterError(f"GET /messages on {self.url} answered {status}: {data}")
        return data["messages"]

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages()]

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean-up runs, and a stopped (paused) process never runs again.

        No SIGCONT first: SIGKILL ends a stopped process as it is, while a SIGCONT would let it run until
        the SIGKILL lands -- long enough, on a busy machine, to read and store a request that waited unread
        in its socket (a paused secondary taking a write it was meant never to see)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self, timeout: float = 10.0) -> None:
        """SIGSTOP, and wait until every thread of the process is stopped.

        kill(2) returns before the target has stopped: a thread that is running or about to run may still
        execute (read a socket, write its log) for a moment. Waiting for /proc to show each thread stopped
        makes "paused" a fact when this returns. Without /proc (not Linux) it returns after the signal."""
        self.signal(signal.SIGSTOP)
        if self.proc is not None and self.proc.poll() is None and os.path.isdir(f"/proc/{self.proc.pid}/task"):
            pid = self.proc.pid
            wait_until(lambda: _all_threads_stopped(pid), timeout, interval=0.005, what=f"pid {pid} to stop")

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def start_with(self, extra_args: Sequence[str], wait: bool = True, timeout: float = 15.0) -> None:
        """Start once with extra options after the usual ones (say `--reset`); later starts go without them."""
        usual = self.args
        self.args = [*usual, *extra_args]
        try:
            self.start(wait=wait, timeout=timeout)
        finally:
            self.args = usual

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log event this node has written so far."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


class LocalCluster:
    """A master and n secondaries on loopback. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        secondaries: int = 2,
        *,
        delays: Sequence[float] = (),
        fail_rates: Sequence[float] = (),
        master_args: Sequence[str] = (),
        secondary_args: Sequence[str] = (),
        data_dirs: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        heartbeat_interval: float | None = 0.2,
        host: str = "127.0.0.1",
        tls: ClusterTls | None = None,
        cluster_key: str | None = None,
    ) -> None:
        """cluster_key, if given, is written to a file in the workdir that every node reads
        (--cluster-key-file); the harness's own calls present it too (it is good wherever a token is)."""
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="replog-cluster-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.cluster_key = cluster_key
        keyed = key_file_args(self.workdir, cluster_key)
        self.secondaries: list[Node] = []
        for i in range(secondaries):
            args = [*keyed, *secondary_args]
            if i < len(delays) and delays[i]:
                args += ["--delay", str(delays[i])]
            if i < len(fail_rates) and fail_rates[i]:
                args += ["--fail-rate", str(fail_rates[i])]
            if data_dirs:
                args += ["--data-dir", str(self.workdir / f"s{i + 1}")]
            if tls is not None:
                args += tls.args(i + 1)
            self.secondaries.append(
                Node(
                    "secondary",
                    free_port(host),
                    args,
                    self.workdir / f"s{i + 1}.log",
                    host,
                    ssl_context=tls.context(i + 1) if tls is not None else None,
                    token=cluster_key,
                )
            )
        margs = [*keyed, *(a for s in self.secondaries for a in ("--secondary", s.url))]
        if tls is not None:
            margs += tls.args(0)
        if heartbeat_interval is not None:
            margs += ["--heartbeat-interval", str(heartbeat_interval)]
        if data_dirs:
            margs += ["--data-dir", str(self.workdir / "m")]
        margs += list(master_args)
        context = tls.context(0) if tls is not None else None
        self.master = Node(
            "master", free_port(host), margs, self.workdir / "m.log", host, ssl_context=context, token=cluster_key
        )

    def route_secondary(self, index: int, url: str) -> None:
        """Have the master reach secondary `index` at url (a proxy in front of it, say) instead of its own URL.

        It rewrites that secondary's `--secondary` option of the master, so it applies from the master's next start.
        """
        at = [i for i, arg in enumerate(self.master.args) if arg == "--secondary"]
        self.master.args[at[index] + 1] = url.rstrip("/")

    @property
    def nodes(self) -> list[Node]:
        return [self.master, *self.secondaries]

    def start(self, wait_writable: bool = True, timeout: float = 20.0, *, skip: Collection[int] = ()) -> LocalCluster:
        """Start the secondaries (but those whose index is in skip: their ports stay reserved), then the master.
        The master is spawned right after them, not once they listen: it asks for promises until they answer,
        as after any start, and the processes' start-ups (most of it Python importing aiohttp) overlap."""
        started = [s for i, s in enumerate(self.secondaries) if i not in skip]
        for s in started:
            s.start(wait=False)
        self.master.start(wait=False)
        for s in started:
            s.wait_listening(timeout)
        self.master.wait_listening(timeout)
        if wait_writable:
            self.wait_writable(timeout)
        return self

    def wait_writable(self, timeout: float = 20.0) -> None:
        wait_until(lambda: self.master.health().get("status") == "ok", timeout, what="the master to accept writes")

    def wait_healthy(self, timeout: float = 20.0) -> None:
        def all_healthy() -> bool:
            return all(s["status"] == "healthy" for s in self.master.health()["secondaries"])

        wait_until(all_healthy, timeout, what="every secondary to be healthy")

    def wait_converged(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every running node shows the master's list; return it."""

        def same() -> list[dict[str, Any]] | None:
            want = self.master.messages()
            for s in self.secondaries:
                if s.running and s.messages() != want:
                    return None
            return want or [{}]

        return wait_until(same, timeout, interval=0.05, what="every secondary to show the master's list")

    def post(self, message: str | None = None, timeout: float = 60.0, **fields: Any) -> tuple[int, Any]:
        body = dict(fields)
        if message is not None:
            body["message"] = message
        return http_json(
            "POST",
            self.master.url + "/messages",
            body,
            timeout=timeout,
            token=self.master.token,
            context=self.master.ssl_context,
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
