"""A local failover cluster of real processes: one etcd and N `replog node`s, for the tests and the bench.

Every node reaches etcd through a TcpProxy of its own (unless proxies=False), so any node — the master
etcd chose, typically — can be cut off from etcd alone while it still reaches its peers and clients.
The master is found the way a client finds it: a node whose /health says it is the master and takes
writes; etcd's leader key is readable too. Waiting is always for a condition with a deadline.

    with FailoverCluster(3, lease_ttl=2) as fc:
        master = fc.wait_master()
        fc.post("hello", w="majority")
        fc.kill(master)
        fc.wait_master(exclude=[master])
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cluster import ClusterError, ClusterTls, Node, free_port, http_json, key_file_args, wait_until
from .etcd import EtcdServer, KeyValue
from .tcpproxy import LinkMode, TcpProxy


def is_master(health: Any) -> bool:
    """A /health body of a node that says it is the master and takes writes."""
    return isinstance(health, dict) and health.get("role") == "master" and health.get("status") == "ok"


class FailoverCluster:
    """etcd plus `nodes` `replog node` processes on loopback. Use as a context manager, or start()/cleanup()."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        lease_ttl: float = 2.0,
        data_dirs: bool = True,
        workdir: str | os.PathLike[str] | None = None,
        cluster: str = "replog-test",
        node_args: Sequence[str] = (),
        proxies: bool = True,
        etcd_fsync: bool = False,
        host: str = "127.0.0.1",
        cluster_key: str | None = None,
        tls: ClusterTls | None = None,
    ) -> None:
        """cluster_key, if given, is written to a file in the workdir that every node reads
        (--cluster-key-file); the harness's own calls to the nodes present it too (it is good wherever a
        token is). With tls every node serves HTTPS with tls.cert, verifies the others with tls.ca (and, if
        tls.mutual, asks them for a certificate on its internal endpoints); they advertise https:// URLs."""
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="replog-failover-")
        self.workdir = Path(workdir if workdir is not None else self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.cluster_key = cluster_key
        keyed = key_file_args(self.workdir, cluster_key)
        self.lease_ttl = lease_ttl
        # Tests share a slow disk, and etcd's own durability is not what they test: fsync off unless asked.
        self.etcd = EtcdServer(
            self.workdir / "etcd", host=host, extra_args=() if etcd_fsync else ("--unsafe-no-fsync",)
        )
        self.proxies: list[TcpProxy | None] = []
        self.nodes: list[Node] = []
        self.data_dirs: list[Path | None] = []
        for i in range(nodes):
            name = f"n{i + 1}"
            proxy = TcpProxy(self.etcd.client_port, host=host, upstream_host=host) if proxies else None
            self.proxies.append(proxy)
            port = free_port(host)
            data_dir = self.workdir / name if data_dirs else None
            self.data_dirs.append(data_dir)
            scheme = "https" if tls is not None else "http"
            args = ["--name", name, "--advertise", f"{scheme}://{host}:{port}", "--nodes", str(nodes)]
            args += ["--cluster", cluster, "--lease-ttl", f"{lease_ttl:g}"]
            if data_dir is not None:
                args += ["--data-dir", str(data_dir)]
            args += keyed
            if tls is not None:
                args += ["--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-ca", tls.ca]
                args += ["--tls-client-ca", tls.ca] if tls.mutual else []
            args += list(node_args)
            context = tls.context() if tls is not None else None
            self.nodes.append(
                Node("node", port, args, self.workdir / f"{name}.log", host, ssl_context=context, token=cluster_key)
            )

    # -- life cycle -------------------------------------------------------------------

    def start(self, wait_master: bool = True, timeout: float = 30.0) -> FailoverCluster:
        """Start etcd, the proxies and every node; with wait_master, until a master takes writes."""
        self.etcd.start(timeout=timeout)
        for i, node in enumerate(self.nodes):
            proxy = self.proxies[i]
            if proxy is not None and proxy.port == 0:
                proxy.start()
            node.args += ["--etcd", self.etcd_url(i)]
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_listening(timeout)
        if wait_master:
            self.wait_master(timeout)
        return self

    def etcd_url(self, index: int) -> str:
        """The etcd URL node `index` is given: its proxy's, or etcd's own."""
        proxy = self.proxies[index]
        return proxy.url if proxy is not None else self.etcd.url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.etcd.stop()
        for proxy in self.proxies:
            if proxy is not None:
                proxy.close()

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> FailoverCluster:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- who is master ---------------------------------------------------------------------

    def name(self, node: Node) -> str:
        return f"n{self.nodes.index(node) + 1}"

    def index(self, node: Node) -> int:
        return self.nodes.index(node)

    def health(self, node: Node, timeout: float = 2.0) -> dict[str, Any] | None:
        """node's /health, or None if it does not answer (down, paused, busy past the timeout)."""
        if not node.running:
            return None
        try:
            status, body = http_json(
                "GET", node.url + "/health", timeout=timeout, token=node.token, context=node.ssl_context
            )
        except OSError:
            return None
        return body if isinstance(body, dict) else None

    def masters(self, exclude: Collection[Node] = (), timeout: float = 2.0) -> list[Node]:
        """The running nodes (but those in exclude) whose /health says they are the master and take writes."""
        return [n for n in self.nodes if n not in exclude and is_master(self.health(n, timeout))]

    def master(self, exclude: Collection[Node] = ()) -> Node | None:
        """The one node that says it is the master and takes writes; None if none (or, for a moment, two)."""
        found = self.masters(exclude)
        return found[0] if len(found) == 1 else None

    def wait_master(self, timeout: float = 30.0, exclude: Collection[Node] = ()) -> Node:
        """Wait until exactly one node (not in exclude) says it is the master and takes writes; return it."""
        return wait_until(
            lambda: self.master(exclude), timeout, interval=0.05, what="one node to be master and take writes"
        )

    def leader(self) -> KeyValue | None:
        """etcd's leader key of this cluster (the oldest under the leader prefix), or None if no one holds it."""
        held = self.etcd.range(f"/replog/{self.cluster}/leader")
        return min(held, key=lambda kv: kv.create_revision) if held else None

    def members(self) -> list[KeyValue]:
        """The nodes registered in etcd under /replog/<cluster>/members/."""
        return self.etcd.range(f"/replog/{self.cluster}/members/")

    def node_at(self, url: str | None) -> Node | None:
        """The node that serves url (as a not_master answer or the leader key names it)."""
        if not url:
            return None
        url = url.rstrip("/")
        return next((n for n in self.nodes if n.url == url), None)

    # -- faults ---------------------------------------------------------------------------

    def kill(self, node: Node) -> float:
        """SIGKILL node (a crash); the monotonic time the signal was sent."""
        at = time.monotonic()
        node.kill()
        return at

    def pause(self, node: Node) -> float:
        at = time.monotonic()
        node.pause()
        return at

    def resume(self, node: Node) -> None:
        node.resume()

    def restart(self, node: Node, timeout: float = 30.0) -> None:
        """Start a node that was killed or stopped, on its data dir, and wait until it listens."""
        node.start(timeout=timeout)

    def isolate(self, node: Node, mode: LinkMode | str = LinkMode.PARTITION) -> None:
        """Cut node off from etcd only (a black hole by default; "reset" refuses instead)."""
        proxy = self.proxies[self.index(node)]
        if proxy is None:
            raise ClusterError("this cluster runs without etcd proxies: proxies=True to isolate a node")
        proxy.set_mode(mode)

    def heal(self, node: Node | None = None) -> None:
        """Reconnect node (every node when None) to etcd."""
        for i, proxy in enumerate(self.proxies):
            if proxy is not None and (node is None or self.nodes[i] is node):
                proxy.heal()

    def restart_etcd(self, *, kill: bool = False, down: float = 0.0, timeout: float = 30.0) -> None:
        """Stop (or SIGKILL) etcd, keep it down for `down` seconds, start it again on the same data dir."""
        if kill:
            self.etcd.kill()
        else:
            self.etcd.stop()
        if down > 0:
            time.sleep(down)  # an outage of a chosen length is the fault itself, not a wait for a condition
        self.etcd.start(timeout=timeout)

    # -- data -----------------------------------------------------------------------------

    def post(self, message: str, timeout: float = 30.0, **fields: Any) -> tuple[int, Any]:
        """POST one message to the master (found first, waiting up to timeout); (status, body)."""
        master = self.wait_master(timeout)
        body = {"message": message, **fields}
        return http_json(
            "POST", master.url + "/messages", body, timeout=timeout, token=master.token, context=master.ssl_context
        )

    def wait_converged(self, timeout: float = 30.0, nodes: Collection[Node] | None = None) -> list[dict[str, Any]]:
        """Wait until one node is master and every running node (or those given) shows its list; return it."""

        def same() -> list[dict[str, Any]] | None:
            master = self.master()
            if master is None:
                return None
            try:
                want = master.messages(timeout=5.0)
                for node in nodes if nodes is not None else self.nodes:
                    if node.running and node is not master and node.messages(timeout=5.0) != want:
                        return None
            except (OSError, ClusterError):
                return None
            return want or [{}]

        got = wait_until(same, timeout, interval=0.1, what="every node to show the master's list")
        return [] if got == [{}] else got

    def rollback_files(self, node: Node) -> list[Path]:
        """node's rollback files (DATA_DIR/rollback/*.jsonl), oldest first."""
        data_dir = self.data_dirs[self.index(node)]
        if data_dir is None or not (data_dir / "rollback").is_dir():
            return []
        return sorted((data_dir / "rollback").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)

    def tails(self, lines: int = 25) -> str:
        """The last lines of every node's log and etcd's, for a failing test's report."""
        out = [f"--- etcd ({self.etcd.url}) ---", self.etcd.tail(lines)]
        for node in self.nodes:
            out += [f"--- {self.name(node)} ({node.url}) ---", node.tail(lines)]
        return "\n".join(out)


# -- a writer that follows the master ---------------------------------------------------------------


@dataclass
class Ack:
    """A write the cluster acknowledged: its text, id, seq, and the monotonic time the answer came."""

    text: str
    id: str
    seq: int
    at: float
    status: int
    node: str  # URL of the master that answered
    acks: int | None = None


@dataclass
class WriterStats:
    acked: list[Ack] = field(default_factory=list)
    attempts: int = 0
    refused: int = 0  # 503s (not_master, no_quorum, ...)
    timeouts: int = 0  # 504s
    errors: int = 0  # no answer: refused connection, reset, client-side timeout


class Writer:
    """One thread writing numbered messages at w (default majority) to whichever node is master.

    Every write carries an idempotency id and is retried with it until acknowledged (2xx), across
    masters: a 503 not_master names the master to try next; no answer makes it look for one.
    `stats.acked` holds every acknowledged write in answer order. A retry of an id the cluster already
    stored answers 200 with the same seq, so an acknowledged write appears once.
    """

    def __init__(
        self,
        cluster: FailoverCluster,
        *,
        tag: str = "w",
        w: int | str = "majority",
        request_timeout: float = 5.0,
        pace: float = 0.0,
    ) -> None:
        self.cluster = cluster
        self.tag = tag
        self.w = w
        self.request_timeout = request_timeout
        self.pace = pace
        self.stats = WriterStats()
        self.target: Node | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"writer-{tag}", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> WriterStats:
        self._stop.set()
        self._thread.join(timeout)
        return self.stats

    def acked(self) -> list[Ack]:
        with self._lock:
            return list(self.stats.acked)

    def first_ack_after(self, t: float, by: Collection[str] | None = None) -> Ack | None:
        """The first write acknowledged after monotonic time t (by a node whose URL is in by, if given)."""
        return next((a for a in self.acked() if a.at > t and (by is None or a.node in by)), None)

    def wait_acks_after(
        self, t: float, count: int = 1, timeout: float = 30.0, by: Collection[str] | None = None
    ) -> list[Ack]:
        """Wait until `count` writes were acknowledged after t (by a node in by, if given); return them."""

        def got() -> list[Ack] | None:
            after = [a for a in self.acked() if a.at > t and (by is None or a.node in by)]
            return after if len(after) >= count else None

        return wait_until(got, timeout, interval=0.02, what=f"{count} writes acknowledged by a master")

    def _find_target(self) -> None:
        live = [n for n in self.cluster.nodes if n.running]
        for node in live:
            if self._stop.is_set():
                return
            if is_master(self.cluster.health(node, timeout=0.5)):
                self.target = node
                return
        self.target = None

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            text = f"{self.tag}-{n}"
            self._write(text, f"id-{text}")
            n += 1
            if self.pace:
                self._stop.wait(self.pace)

    def _write(self, text: str, id_: str) -> None:
        body = {"message": text, "w": self.w, "id": id_}
        while not self._stop.is_set():
            if self.target is None or not self.target.running:
                self._find_target()
                if self.target is None:
                    self._stop.wait(0.02)
                    continue
            self.stats.attempts += 1
            try:
                target = self.target
                status, answer = http_json(
                    "POST",
                    target.url + "/messages",
                    body,
                    timeout=self.request_timeout,
                    token=target.token,
                    context=target.ssl_context,
                )
            except OSError:
                self.stats.errors += 1
                self.target = None
                continue
            if status in (200, 201) and isinstance(answer, dict):
                ack = Ack(text, id_, int(answer["seq"]), time.monotonic(), status, self.target.url, answer.get("acks"))
                with self._lock:
                    self.stats.acked.append(ack)
                return
            if status == 504:
                self.stats.timeouts += 1
                continue  # stored, its concern not met yet: the retry waits again
            self.stats.refused += 1
            named = self.cluster.node_at(answer.get("master")) if isinstance(answer, dict) else None
            self.target = named if named is not None and named is not self.target else None
            if self.target is None:
                self._stop.wait(0.02)
