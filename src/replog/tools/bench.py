"""`replog bench`: how fast replog takes writes at each write concern, how fast a secondary
catches up, and how fast the master serves its whole log — one command, one table.

It starts a master and two in-memory secondaries as subprocesses (`replog.tools.cluster.LocalCluster`),
or targets a running cluster with `--master URL`, and runs these scenarios in order:

    w1        single-message POSTs, w=1, --clients concurrent clients
    majority  single-message POSTs, w=majority (2 of 3 nodes)
    all       single-message POSTs, w=all (3 of 3 nodes)
    latency   single-message POSTs, w=all, one client (a quarter of --requests)
    batch     POSTs of --batch-size messages, w=all, 8 clients
    catchup   SIGKILL a secondary, write --catchup-messages in batches with w=1, restart it empty,
              and time its restart until the master's /health shows its lag at 0 (local cluster only)
    read      GET /messages of the whole log on the master, one client, five times
    replay    the whole log through GET /messages/stream and Client.follow (entries/s at the consumer)
    client    --requests / 4 appends through replog.Client, w=all, --clients coroutines: one POST each
    producer  --requests appends through one Client.producer, w=all, --clients coroutines each awaiting
              its own append: coalesced into batch POSTs (compare with the client row)
    stream    a follower of the master and a writer appending one message at a time at w=all: the
              latency from sending each append to the follower having the entry (and, in the note,
              from the append's answer: a follower usually has the entry before its writer's answer)
    idle      --idle-streams streams open on the master, waiting past the end of the log: the master's
              memory for them, and single-message POSTs at w=all with them open (compare with "all")

Every option also reads REPLOG_BENCH_<OPTION> (REPLOG_BENCH_MASTER, ...): not the REPLOG_MASTER or
REPLOG_DATA_DIR of the other commands, so that an environment set up for `replog post` or for a
node never points a bench, and its hundreds of thousands of writes, at a real cluster or data dir.
The command and its options are declared in replog.cli, which imports this module only when the
command runs; `run` is what it runs.

Each row gives the rate (writes/s, messages/s for batches, entries/s for reads), p50/p99/max
latency, errors (non-2xx answers and failed connections), each node's peak RSS (VmHWM) and the
CPU seconds of the load generator and of the master over the same window.

The load generator (replog.tools.loadgen) is a separate process speaking bare HTTP/1.1 from protocol
callbacks (uvloop when importable), so it costs a fraction of what the master spends per request;
the table's footer states the measured ratio on every run. On the 2-core AMD EPYC this was built
on, shared with other test runs, full runs gave: generator 47-48 µs of CPU per
single-message POST (about half of it the kernel's share of loopback TCP), master 224-249 µs;
while those rows ran the master used 75-100% of a core and the generator 14-17%. The master, not
the generator, is the process at its limit.
"""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from replog import __version__
from replog.commitment import majority
from replog.tools import loadgen
from replog.tools.cluster import ClusterError, ClusterTls, LocalCluster, http_json, wait_until

SCENARIOS = (
    "w1",
    "majority",
    "all",
    "latency",
    "batch",
    "catchup",
    "read",
    "replay",
    "client",
    "producer",
    "stream",
    "idle",
)
THROUGHPUT = ("w1", "majority", "all")  # the scenarios where the generator could be the bottleneck
BATCH_CLIENTS = 8
READ_REPEATS = 5
STALL_TIMEOUT = 30.0  # seconds without one answer before a load gives up


@dataclass(frozen=True)
class Settings:
    requests: int  # single-message POSTs per scenario
    clients: int  # concurrent clients of the single-message scenarios
    batch_size: int  # messages per batch POST
    batch_requests: int  # batch POSTs of the batch scenario
    catchup_messages: int  # messages written while a secondary is down
    loop: str  # the load generator's event loop: auto, uvloop, asyncio
    idle_streams: int = 1000  # streams the idle scenario holds open


# -- the machine and the processes --------------------------------------------------


def machine_info(loop: str) -> dict[str, Any]:
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        _, loop_name = loadgen.loop_factory(loop)
    except ImportError:
        loop_name = "unavailable"
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loop": loop_name,
        "replog": __version__,
        "platform": platform.platform(),
    }


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:  # psutil missing or the process gone: the figure is simply unknown
        return None


def process_loop(pid: int) -> str | None:
    """The event loop a live node runs on, read from the libraries mapped into it (None: unknown)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "uvloop" if "uvloop" in f.read() else "asyncio"
    except OSError:
        return None


def process_rss(pid: int) -> int | None:
    """Resident set size in bytes now (VmRSS)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_peak_rss(pid: int) -> int | None:
    """Peak resident set size in bytes (VmHWM); psutil's current RSS where /proc is missing."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except Exception:  # psutil missing or the process gone
        return None


class Target:
    """The cluster under test: its master's URL and, for a local cluster, its processes."""

    def __init__(self, url: str, cluster: LocalCluster | None = None) -> None:
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        tls = cluster.tls if cluster is not None else None
        if parts.scheme != ("https" if tls is not None else "http") or not parts.hostname:
            raise click.BadParameter(f"{url!r} is not an http:// URL", param_hint="--master")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.cluster = cluster
        self.ca = tls.ca if tls is not None else None  # a local cluster over TLS: its CA file
        self._context = tls.context() if tls is not None else None

    def health(self) -> dict[str, Any]:
        status, data = http_json("GET", self.url + "/health", timeout=10.0, context=self._context)
        if status != 200 or not isinstance(data, dict):
            raise click.ClickException(f"{self.url}/health answered HTTP {status}")
        return data

    def node_count(self) -> int:
        h = self.health()
        return int(h.get("nodes") or len(h.get("secondaries", [])) + 1)

    def pids(self) -> dict[str, int]:
        if self.cluster is None:
            return {}
        names = ["master"] + [f"s{i + 1}" for i in range(len(self.cluster.secondaries))]
        return {
            name: n.proc.pid
            for name, n in zip(names, self.cluster.nodes, strict=True)
            if n.proc is not None and n.running
        }

    def cpu(self) -> dict[str, tuple[int, float]]:
        out = {}
        for name, pid in self.pids().items():
            cpu = process_cpu(pid)
            if cpu is not None:
                out[name] = (pid, cpu)
        return out

    def peak_rss_mb(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pid in self.pids().items():
            rss = process_peak_rss(pid)
            out[name] = None if rss is None else round(rss / 2**20, 1)
        return out

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Before a scenario: the master takes writes and every secondary has the whole log,
        so that one scenario's replication backlog is not billed to the next."""

        def settled() -> bool:
            h = self.health()
            return h.get("status") == "ok" and all(s["status"] == "healthy" and s["lag"] == 0 for s in h["secondaries"])

        try:
            wait_until(settled, timeout, interval=0.05, what="every secondary to be healthy with no lag")
        except ClusterError as exc:
            click.echo(f"warning: {exc}; measuring anyway", err=True)


# -- progress -------------------------------------------------------------------------


class Progress:
    """One line per scenario on a terminal, rewritten in place while it runs; nothing at all on a pipe
    or a file, where the table says everything (and a `0/N` start line or a second machine line would
    only be noise in the output)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.label = ""
        self.started = 0.0
        self.width = 0

    def start(self, label: str, total: int | None = None) -> None:
        self.label, self.started = label, time.monotonic()
        self._show(f"{label} ..." if total is None else f"{label}  0/{total:,}")

    def update(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        self._show(f"{self.label}  {done:,}/{total:,}  {rate:,.0f}/s")

    def note(self, text: str) -> None:
        self._show(f"{self.label}  {text}")

    def finish(self, text: str) -> None:
        self._show(f"{self.label}  {text}", final=True)

    def _show(self, line: str, final: bool = False) -> None:
        if not self.tty:
            return
        pad = max(0, self.width - len(line))
        self.stream.write("\r" + line + " " * pad + ("\n" if final else ""))
        self.width = 0 if final else len(line)
        self.stream.flush()


# -- one load, in a child process ----------------------------------------------------------


def _json_str(value: Any) -> str:
    return json.dumps(value).replace("%", "%%")


def single_body(tag: str, w: int | str) -> str:
    """A single-message POST template: 10-byte texts, unique per request."""
    return '{"message":"' + tag + '%(n)09d","w":' + _json_str(w) + "}"


def batch_body(tag: str, size: int, w: int | str) -> str:
    items = ",".join(f'"{tag}%(n)07d.{i}"' for i in range(size))
    return '{"messages":[' + items + '],"w":' + _json_str(w) + "}"


class Bench:
    """Runs the scenarios against one target and collects a row per scenario."""

    def __init__(self, target: Target, settings: Settings, progress: Progress, data_dirs: bool) -> None:
        self.target = target
        self.settings = settings
        self.progress = progress
        self.data_dirs = data_dirs
        self.nodes = target.node_count()
        self._rates: dict[str, float] = {}  # rate of each scenario run so far, for the rows that compare

    def load(
        self, *, method: str, path: str, body: str | None, count: int, clients: int
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Run one load in a loadgen process: (its result, each node's CPU seconds over the same window).

        The result gains "window_s", the wall time between the two CPU snapshots."""
        spec = {
            "host": self.target.host,
            "port": self.target.port,
            "method": method,
            "path": path,
            "body": body,
            "count": count,
            "clients": clients,
            "loop": self.settings.loop,
            "stall_timeout": STALL_TIMEOUT,
            "ca": self.target.ca,
        }
        return self._child("replog.tools.loadgen", spec, count)

    def client_load(
        self, kind: str, count: int, clients: int = 1, w: int | str | None = None
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Run one replog.tools.clientload load (through replog.Client); as load()."""
        spec = {"url": self.target.url, "kind": kind, "count": count, "clients": clients, "w": w}
        return self._child("replog.tools.clientload", {**spec, "loop": self.settings.loop}, count)

    def _child(self, module: str, spec: dict[str, Any], count: int) -> tuple[dict[str, Any], dict[str, float]]:
        cmd = [sys.executable, "-m", module, json.dumps(spec)]
        before: dict[str, tuple[int, float]] = {}
        result = None
        window = 0.0
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                for line in proc.stdout:
                    msg = json.loads(line)
                    if "ready" in msg:
                        before = self.target.cpu()
                        window = time.monotonic()
                        proc.stdin.write("go\n")
                        proc.stdin.flush()
                    elif "done" in msg:
                        self.progress.update(msg["done"], count)
                    elif "result" in msg:
                        result = msg["result"]
                after = self.target.cpu()
                window = time.monotonic() - window
                proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if result is None:
                err.seek(0)
                detail = err.read().decode(errors="replace")[-3000:]
                raise click.ClickException(f"the load generator failed (exit {proc.returncode}):\n{detail}")
        cpu = {
            name: round(after[name][1] - b[1], 3)
            for name, b in before.items()
            if name in after and after[name][0] == b[0]
        }
        result["window_s"] = window
        return result, cpu

    def row(
        self,
        name: str,
        title: str,
        result: dict[str, Any],
        cpu: dict[str, float],
        *,
        clients: int,
        per_request: int,
        unit: str,
    ) -> dict[str, Any]:
        elapsed = result["elapsed_s"]
        rate = result["ok"] * per_request / elapsed if elapsed > 0 else 0.0
        row: dict[str, Any] = {
            "name": name,
            "title": title,
            "clients": clients,
            "requests": result["count"],
            "per_request": per_request,
            "rate": round(rate, 1),
            "unit": unit,
            "elapsed_s": round(elapsed, 3),
            "window_s": round(result["window_s"], 3),
            "p50_ms": round(result["p50_ms"], 3),
            "p99_ms": round(result["p99_ms"], 3),
            "max_ms": round(result["max_ms"], 3),
            "mean_ms": round(result["mean_ms"], 3),
            "errors": result["errors"],
            "statuses": result["statuses"],
            "error_sample": result["error_sample"],
            "loadgen_cpu_s": round(result["cpu_s"], 3),
            "loadgen_cpu_user_s": round(result["cpu_user_s"], 3),
            "loadgen_cpu_sys_s": round(result["cpu_sys_s"], 3),
            "master_cpu_s": cpu.get("master"),
            # Share of one core over the load's window: a master near 1.0 is the bottleneck.
            "master_cpu_util": round(cpu["master"] / result["window_s"], 2)
            if "master" in cpu and result["window_s"] > 0
            else None,
            "loadgen_cpu_util": round(result["cpu_s"] / result["window_s"], 2) if result["window_s"] > 0 else None,
            "node_cpu_s": cpu,
            "loadgen_loop": result["loop"],
        }
        if unit != "entries/s":
            row["writes_per_s"] = row["rate"]
        return row

    def finish_row(self, row: dict[str, Any]) -> dict[str, Any]:
        row["rss_peak_mb"] = self.target.peak_rss_mb()
        row["log_seq"] = self.target.health().get("seq")
        p99 = f"p99 {row['p99_ms']:.1f} ms" if row["p99_ms"] else ""
        self.progress.finish(f"{row['rate']:,.0f} {row['unit']}  {p99}  errors {row['errors']}")
        return row

    # -- the scenarios -------------------------------------------------------------

    def single(self, name: str, w: int | str, clients: int, count: int) -> dict[str, Any]:
        wn = self._resolve(w)
        title = f"POST w={wn}" + (f" ({w})" if isinstance(w, str) else "") + (", 1 client" if clients == 1 else "")
        self.target.wait_settled()
        self.progress.start(title, count)
        result, cpu = self.load(
            method="POST", path="/messages", body=single_body(name[0], w), count=count, clients=clients
        )
        row = self.row(name, title, result, cpu, clients=clients, per_request=1, unit="writes/s")
        row["w"] = wn
        return self.finish_row(row)

    def batch(self) -> dict[str, Any]:
        s = self.settings
        title = f"POST batch x{s.batch_size} w={self.nodes} (all)"
        self.target.wait_settled()
        self.progress.start(title, s.batch_requests)
        body = batch_body("b", s.batch_size, "all")
        result, cpu = self.load(
            method="POST", path="/messages", body=body, count=s.batch_requests, clients=BATCH_CLIENTS
        )
        row = self.row("batch", title, result, cpu, clients=BATCH_CLIENTS, per_request=s.batch_size, unit="msgs/s")
        row["w"] = self.nodes
        return self.finish_row(row)

    def catchup(self) -> dict[str, Any]:
        cluster = self.target.cluster
        assert cluster is not None
        s = self.settings
        victim = cluster.secondaries[-1]
        name = f"s{len(cluster.secondaries)}"
        batches = math.ceil(s.catchup_messages / s.batch_size)
        title = f"catch-up {batches * s.batch_size:,} msgs"
        self.target.wait_settled()
        self.progress.start(title, batches)
        victim.kill()
        if self.data_dirs:
            shutil.rmtree(cluster.workdir / name, ignore_errors=True)  # it comes back empty
        body = batch_body("c", s.batch_size, 1)
        result, cpu = self.load(method="POST", path="/messages", body=body, count=batches, clients=BATCH_CLIENTS)
        row = self.row("catchup", title, result, cpu, clients=BATCH_CLIENTS, per_request=s.batch_size, unit="msgs/s")
        row["w"] = 1

        self.progress.note(f"restarting {name} empty")
        before = next(x for x in self.target.health()["secondaries"] if x["url"] == victim.url)["seq"]
        spawned = time.monotonic()
        victim.start(wait=False)
        victim.wait_listening(30)
        listening = time.monotonic()
        noticed: list[float] = []
        seq = 0

        def caught_up() -> bool:
            nonlocal seq
            h = self.target.health()
            mine = next(x for x in h["secondaries"] if x["url"] == victim.url)
            if not noticed and mine["seq"] != before:
                noticed.append(time.monotonic())
            seq = h["seq"]
            return mine["lag"] == 0 and mine["seq"] == h["seq"] and mine["status"] == "healthy"

        try:
            wait_until(caught_up, 300, interval=0.01, what=f"{name} to catch up")
        except ClusterError as exc:
            raise click.ClickException(str(exc)) from None
        done = time.monotonic()
        shown = len(victim.messages(timeout=60))
        master_shows = len(cluster.master.messages(timeout=60))
        if shown != master_shows:
            row["errors"] += 1
            row["error_sample"] = f"{name} shows {shown} entries, the master {master_shows}"
        row.update(
            catchup_s=round(done - listening, 3),
            catchup_from_spawn_s=round(done - spawned, 3),
            noticed_s=round(noticed[0] - listening, 3) if noticed else None,
            caught_up_entries=seq,
        )
        row["note"] = (
            f"{name} back empty: all {seq:,} entries in {done - listening:.2f} s after it answered"
            f" ({done - spawned:.2f} s after spawn)"
        )
        return self.finish_row(row)

    def read(self) -> dict[str, Any]:
        entries = int(self.target.health().get("seq", 0))
        title = "GET /messages (whole log)"
        self.progress.start(title, READ_REPEATS)
        result, cpu = self.load(method="GET", path="/messages", body=None, count=READ_REPEATS, clients=1)
        row = self.row("read", title, result, cpu, clients=1, per_request=entries, unit="entries/s")
        row["entries"] = entries
        size = result["bytes_in"] / max(1, result["ok"])
        row["note"] = f"{entries:,} entries, {size / 2**20:.1f} MB"
        return self.finish_row(row)

    def replay(self) -> dict[str, Any]:
        entries = int(self.target.health().get("seq", 0))
        title = f"stream replay ({entries:,} entries)"
        self.progress.start(title)
        result, cpu = self.client_load("replay", entries)
        row = self.row("replay", title, result, cpu, clients=1, per_request=1, unit="entries/s")
        row["note"] = "GET /messages/stream from seq 0, read with Client.follow"
        return self.finish_row(row)

    def appends(self, kind: str) -> dict[str, Any]:
        s = self.settings
        count = max(1, s.requests // 4) if kind == "client" else s.requests
        how = "Client.append" if kind == "client" else "Client.producer"
        title = f"{how} w={self.nodes} (all)"
        self.target.wait_settled()
        self.progress.start(title, count)
        result, cpu = self.client_load(kind, count, s.clients, "all")
        row = self.row(kind, title, result, cpu, clients=s.clients, per_request=1, unit="writes/s")
        row["w"] = self.nodes
        if kind == "producer":
            row["note"] = f"{s.clients} coroutines, each awaiting its own append"
            base = self._rates.get("client")
            if base:
                row["note"] += f"; {row['rate'] / base:.1f}x the Client.append row"
        self._rates[kind] = row["rate"]
        return self.finish_row(row)

    def stream(self) -> dict[str, Any]:
        count = max(1, self.settings.requests // 10)
        title = "stream: append -> follower"
        self.target.wait_settled()
        self.progress.start(title, count)
        result, cpu = self.client_load("stream", count, 1, "all")
        row = self.row("stream", title, result, cpu, clients=1, per_request=1, unit="writes/s")
        row["after_answer_p99_ms"] = result.get("after_answer_p99_ms")
        row["note"] = (
            f"ms from sending each w=all append until a follower of the master has it; "
            f"{result.get('seen_before_answer', 0):,} of {count:,} seen before their answer, "
            f"p99 after the answer {result.get('after_answer_p99_ms', 0):.2f} ms"
        )
        return self.finish_row(row)

    def idle(self) -> dict[str, Any]:
        s = self.settings
        n = s.idle_streams
        title = f"POST w={self.nodes} (all), {n:,} idle streams"
        self.target.wait_settled()
        self.progress.start(title, s.requests)
        pid = self.target.pids().get("master")
        before = process_rss(pid) if pid else None
        spec = {"url": self.target.url, "kind": "hold", "clients": n, "loop": self.settings.loop}
        holder = subprocess.Popen(
            [sys.executable, "-m", "replog.tools.clientload", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdin is not None
            holder.stdout.readline()  # ready: every stream asked for
            wait_until(lambda: self.target.health().get("streams", 0) >= n, 60, 0.05, f"{n} open streams")
            after = process_rss(pid) if pid else None
            result, cpu = self.load(
                method="POST", path="/messages", body=single_body("i", "all"), count=s.requests, clients=s.clients
            )
        finally:
            if holder.stdin is not None:
                holder.stdin.close()
            try:
                holder.wait(30)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
        row = self.row("idle", title, result, cpu, clients=s.clients, per_request=1, unit="writes/s")
        row["w"] = self.nodes
        row["streams"] = n
        notes = []
        if before is not None and after is not None:
            row["stream_rss_mb"] = round((after - before) / 2**20, 1)
            notes.append(
                f"master RSS +{(after - before) / 2**20:.1f} MB ({(after - before) / 1024 / n:.1f} KiB/stream)"
            )
        base = self._rates.get("all")
        if base:
            notes.append(f"{(row['rate'] / base - 1) * 100:+.0f}% vs the w=all row")
        row["note"] = ", ".join(notes)
        return self.finish_row(row)

    def _resolve(self, w: int | str) -> int:
        if w == "all":
            return self.nodes
        if w == "majority":
            return majority(self.nodes)
        return int(w)

    def run(self, names: list[str]) -> list[dict[str, Any]]:
        s = self.settings
        rows = []
        for name in names:
            if name == "w1":
                rows.append(self.single(name, 1, s.clients, s.requests))
            elif name == "majority":
                rows.append(self.single(name, "majority", s.clients, s.requests))
            elif name == "all":
                rows.append(self.single(name, "all", s.clients, s.requests))
            elif name == "latency":
                rows.append(self.single(name, "all", 1, max(1, s.requests // 4)))
            elif name == "batch":
                rows.append(self.batch())
            elif name == "catchup":
                rows.append(self.catchup())
            elif name == "read":
                rows.append(self.read())
            elif name == "replay":
                rows.append(self.replay())
            elif name in ("client", "producer"):
                rows.append(self.appends(name))
            elif name == "stream":
                rows.append(self.stream())
            elif name == "idle":
                rows.append(self.idle())
            if rows and rows[-1]["name"] in THROUGHPUT:
                self._rates[rows[-1]["name"]] = rows[-1]["rate"]
        return rows


# -- the report -----------------------------------------------------------------------------


def header_line(m: dict[str, Any]) -> str:
    return (
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"load generator loop {m['loop']}, replog {m['replog']}"
    )


def cpu_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The load generator's CPU per request against the master's, over the many-client single-message scenarios."""
    singles = [r for r in rows if r["name"] in THROUGHPUT and r["master_cpu_s"] is not None]
    requests = sum(r["requests"] for r in singles)
    out: dict[str, Any] = {
        "loadgen_cpu_s": round(sum(r["loadgen_cpu_s"] for r in rows), 3),
        "master_cpu_s": round(sum(r["master_cpu_s"] or 0.0 for r in rows), 3)
        if any(r["master_cpu_s"] is not None for r in rows)
        else None,
    }
    if requests:
        gen = sum(r["loadgen_cpu_s"] for r in singles)
        master = sum(r["master_cpu_s"] for r in singles)
        window = sum(r["window_s"] for r in singles)
        out["single_post_requests"] = requests
        out["loadgen_us_per_request"] = round(gen / requests * 1e6, 1)
        out["master_us_per_request"] = round(master / requests * 1e6, 1)
        out["loadgen_cpu_util"] = round(gen / window, 2) if window else None
        out["master_cpu_util"] = round(master / window, 2) if window else None
    return out


def _fmt_ms(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:,.0f}"


WIDTH = 100  # columns of the text report: every line fits, tables and notes included


def _table(head: list[str], lines: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]


def _wrap(text: str, indent: str = "  ") -> list[str]:
    """One report line folded to WIDTH columns, continuation lines indented."""
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False) or [""]


def render_table(report: dict[str, Any]) -> str:
    """The text report, at most WIDTH columns: the results (rate, latency, errors), then the load and
    the resources of each scenario (clients, requests, peak memory, CPU), then the notes and the CPU
    footer, folded."""
    rows = report["scenarios"]
    names = ["master"] + [f"s{i + 1}" for i in range(report["nodes"] - 1)]
    results = _table(
        ["scenario", "rate", "p50 ms", "p99 ms", "max ms", "errors"],
        [
            [
                r["title"],
                f"{r['rate']:,.0f} {r['unit']}",
                _fmt_ms(r["p50_ms"]),
                _fmt_ms(r["p99_ms"]),
                _fmt_ms(r["max_ms"]),
                str(r["errors"]),
            ]
            for r in rows
        ],
        right={1, 2, 3, 4, 5},
    )
    load_lines = []
    for r in rows:
        rss = r.get("rss_peak_mb") or {}
        rss_cell = "/".join("-" if rss.get(n) is None else f"{rss[n]:.0f}" for n in names) if rss else "-"
        master_cpu = "-" if r["master_cpu_s"] is None else f"{r['master_cpu_s']:.2f}"
        load_lines.append(
            [r["title"], str(r["clients"]), f"{r['requests']:,}", rss_cell, f"{r['loadgen_cpu_s']:.2f}/{master_cpu}"]
        )
    load = _table(
        ["scenario", "clients", "requests", "peak RSS MB", "CPU s gen/master"],
        load_lines,
        right={1, 2},
    )
    out = [*_wrap(header_line(report["machine"])), *_wrap(f"cluster: {report['cluster']}"), ""]
    out += results + ["", f"peak RSS MB of {'/'.join(names)}; CPU seconds of the load generator/the master:"] + load
    notes = [r for r in rows if r.get("note")]
    if notes:
        out += ["", "notes:"]
        for r in notes:
            out += _wrap(f"  {r['title']}: {r['note']}", indent="      ")
    cpu = report["cpu"]
    out.append("")
    if "loadgen_us_per_request" in cpu:
        out += _wrap(
            f"load generator CPU per single-message POST: {cpu['loadgen_us_per_request']:.0f} µs, "
            f"master {cpu['master_us_per_request']:.0f} µs (over the {cpu['single_post_requests']:,} requests "
            f"of the many-client POST rows); while they ran the master used {cpu['master_cpu_util']:.0%} "
            f"of a core and the generator {cpu['loadgen_cpu_util']:.0%}."
        )
    if cpu["master_cpu_s"] is not None:
        out += _wrap(
            f"CPU over the whole run: load generator {cpu['loadgen_cpu_s']:.2f} s, master {cpu['master_cpu_s']:.2f} s."
        )
    else:
        out += _wrap(
            f"CPU over the whole run: load generator {cpu['loadgen_cpu_s']:.2f} s "
            "(the master's CPU is unknown for an external cluster)."
        )
    for r in rows:
        if r["errors"] and r.get("error_sample"):
            out += _wrap(
                f"{r['name']}: {r['errors']} errors, first: {r['error_sample']} {r['statuses'] or ''}".rstrip()
            )
    out += _wrap_command(report["command"])
    return "\n".join(out)


def _wrap_command(command: str) -> list[str]:
    """`command: replog bench …`, folded between options (an option stays with its value) with shell
    line continuations, so that it still pastes."""
    words: list[str] = []
    for word in shlex.split(command):
        if words and words[-1].startswith("--") and " " not in words[-1] and not word.startswith("-"):
            words[-1] += " " + shlex.quote(word)
        else:
            words.append(shlex.quote(word))
    lines = ["command:"]
    for word in words:
        if len(lines[-1]) + 1 + len(word) > WIDTH - 2 and lines[-1].strip() != "command:":
            lines[-1] += " \\"
            lines.append("   ")
        lines[-1] += " " + word
    return lines


# -- the command -----------------------------------------------------------------------------


SECURE_SCENARIOS = ("w1", "majority", "all", "latency", "batch")  # the ones the load generator runs (over TLS too)
SECURE_DEFAULT = ("all", "batch")


def _tls_files(workdir: str) -> ClusterTls:
    """A throwaway CA and one certificate for 127.0.0.1, made with trustme, in workdir."""
    try:
        import trustme
    except ImportError:
        raise click.ClickException("--secure makes its certificates with trustme: pip install trustme") from None
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    paths = [os.path.join(workdir, name) for name in ("ca.pem", "cert.pem", "key.pem")]
    ca.cert_pem.write_to_path(paths[0])
    leaf.cert_chain_pems[0].write_to_path(paths[1])
    leaf.private_key_pem.write_to_path(paths[2])
    return ClusterTls(*paths)


def _ratio(pair: tuple[dict[str, Any], dict[str, Any]]) -> float:
    plain, secure = pair
    return secure["rate"] / plain["rate"] if plain["rate"] else 0.0


def _secure_rows(rounds: list[list[tuple[dict[str, Any], dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Each scenario's plain row, then its secure row noting the ratio of their rates. With several
    rounds of a scenario (each a plain and a secure row, run back to back), the rows shown are those of
    the round whose ratio is the median, and the note lists every round's ratio."""
    rows = []
    for pairs in rounds:
        ranked = sorted(pairs, key=_ratio)
        p, s = ranked[(len(ranked) - 1) // 2]  # the lower median of an even count
        ratio = _ratio((p, s))
        s["secure_ratio"] = round(ratio, 3)
        note = f"{ratio:.2f}x plain"
        if len(pairs) > 1:
            s["secure_ratios"] = [round(_ratio(pair), 3) for pair in pairs]
            note += f" (median of {len(pairs)} rounds: {' '.join(f'{_ratio(pair):.2f}' for pair in ranked)})"
        s["note"] = note + (f"; {s['note']}" if s.get("note") else "")
        rows += [p, s]
    return rows


def _start_cluster(
    data_dir: str | None,
    fsync: str,
    heartbeat_interval: float | None,
    extra_node_args: tuple[str, ...] = (),
    tls: ClusterTls | None = None,
    cluster_key: str | None = None,
) -> LocalCluster:
    workdir = None
    if data_dir is not None:
        try:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            workdir = tempfile.mkdtemp(prefix="replog-bench-", dir=data_dir)
        except OSError as exc:
            raise click.ClickException(f"cannot use --data-dir {data_dir}: {exc}") from None
    node_args = ["--fsync", fsync, *extra_node_args] if data_dir is not None else list(extra_node_args)
    cluster = LocalCluster(
        2,
        data_dirs=data_dir is not None,
        workdir=workdir,
        master_args=node_args,
        secondary_args=node_args,
        heartbeat_interval=heartbeat_interval,
        tls=tls,
        cluster_key=cluster_key,
    )
    try:
        cluster.start(timeout=60)
        cluster.wait_healthy(60)
    except (ClusterError, OSError) as exc:
        _stop_cluster(cluster, workdir)
        what = f" with --data-dir {data_dir}" if data_dir is not None else ""
        raise click.ClickException(f"the local cluster did not start{what}: {exc}") from None
    return cluster


def _stop_cluster(cluster: LocalCluster, workdir: str | None) -> None:
    cluster.cleanup()
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


def run(
    master_url: str | None,
    requests: int,
    clients: int,
    batch_size: int,
    batch_requests: int | None,
    catchup_messages: int,
    scenarios: tuple[str, ...],
    data_dir: str | None,
    fsync: str,
    heartbeat_interval: float | None,
    loop: str,
    as_json: bool,
    idle_streams: int = 1000,
    secure: bool = False,
    rounds: int = 1,
    node_loop: str | None = None,
) -> None:
    """`replog bench` once its options are parsed: run the scenarios named (all when none) on a local
    cluster, or on the one at master_url, and print the table (or JSON). Bad combinations of options
    are click.BadParameter, failures click.ClickException, as from any command.

    With secure, a second local cluster runs over TLS (its own CA, made with trustme) with a cluster key, and each scenario
    runs on the plain cluster and then on the secure one: both rows, and the secure one's rate as a
    fraction of the plain one's; with rounds, each scenario runs that many times on each, alternating, and
    the round with the median ratio is shown."""
    if node_loop is not None and master_url is not None:
        raise click.BadParameter("only applies to a local cluster, not with --master", param_hint="--node-loop")
    if node_loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise click.BadParameter("uvloop is not installed (pip install uvloop)", param_hint="--node-loop") from None
    node_args = ("--loop", node_loop) if node_loop else ()
    if rounds > 1 and not secure:
        raise click.BadParameter("only compares rounds with --secure", param_hint="--rounds")
    if secure:
        if master_url is not None:
            raise click.BadParameter("compares two local clusters, not with --master", param_hint="--secure")
        unsupported = [n for n in scenarios if n not in SECURE_SCENARIOS]
        if unsupported:
            raise click.BadParameter(
                f"--secure runs {', '.join(SECURE_SCENARIOS)}, not {', '.join(unsupported)}", param_hint="--scenario"
            )
        scenarios = scenarios or SECURE_DEFAULT
    names = [n for n in SCENARIOS if n in scenarios] if scenarios else list(SCENARIOS)
    if master_url is not None and "catchup" in names:
        if scenarios:
            raise click.BadParameter(
                "the catch-up scenario needs a local cluster (it kills and restarts a secondary)",
                param_hint="--scenario",
            )
        names.remove("catchup")
        click.echo("note: skipping the catch-up scenario, which needs a local cluster", err=True)
    if master_url is not None and data_dir is not None:
        raise click.BadParameter("only applies to a local cluster, not with --master", param_hint="--data-dir")
    if loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise click.BadParameter("uvloop is not installed (pip install uvloop)", param_hint="--loop") from None
    settings = Settings(
        requests, clients, batch_size, batch_requests or max(1, requests // 20), catchup_messages, loop, idle_streams
    )
    info = machine_info(loop)
    progress = Progress(sys.stderr)
    if progress.tty and not as_json and not sys.stdout.isatty():
        # The table on stdout names the machine again; say it up front only where the table is not shown.
        click.echo(header_line(info), err=True)
    cluster = None
    secure_cluster = None
    workdir = None
    tls_dir = tempfile.mkdtemp(prefix="replog-bench-tls-") if secure else None
    try:
        if master_url is None:
            progress.start("starting a master and 2 secondaries")
            cluster = _start_cluster(data_dir, fsync, heartbeat_interval, node_args)
            workdir = str(cluster.workdir) if data_dir is not None else None
            progress.finish("up")
            target = Target(cluster.master.url, cluster)
            where = "local, master + 2 secondaries" + (
                f", data dirs under {data_dir} (fsync {fsync})" if data_dir else ", in memory"
            )
            seen = process_loop(cluster.master.proc.pid) if cluster.master.proc is not None else None
            where += f", nodes on {seen}" if seen else ""
        else:
            target = Target(master_url)
            where = f"external, {target.url}"
        runner = Bench(target, settings, progress, data_dirs=data_dir is not None)
        if tls_dir is None:
            rows = measured = runner.run(names)
        else:
            progress.start("starting a master and 2 secondaries over TLS, with a cluster key")
            secure_cluster = _start_cluster(
                None, fsync, heartbeat_interval, node_args, tls=_tls_files(tls_dir), cluster_key=secrets.token_hex(32)
            )
            progress.finish("up")
            secured = Bench(Target(secure_cluster.master.url, secure_cluster), settings, progress, data_dirs=False)
            # Alternating, scenario by scenario and round by round, so that the machine's drift during the
            # run (a shared VM's neighbours, CPU frequency) hits both clusters alike.
            pairs = []
            for name in names:
                pairs.append([])
                for _ in range(rounds):
                    plain = runner.run([name])[0]
                    row = secured.run([name])[0]
                    row["title"] += " [TLS]"
                    pairs[-1].append((plain, row))
            rows = _secure_rows(pairs)
            measured = [row for scenario in pairs for pair in scenario for row in pair]
            where += "; a second one over TLS with a cluster key for the [TLS] rows, in memory"
    except OSError as exc:
        raise click.ClickException(f"cannot reach the cluster: {exc}") from None
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if cluster is not None:
            _stop_cluster(cluster, workdir)
        if secure_cluster is not None:
            _stop_cluster(secure_cluster, None)
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)

    report = {
        "machine": info,
        "cluster": where,
        "nodes": runner.nodes,
        "settings": asdict(settings),
        "command": shlex.join(["replog", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else "replog bench",
        "scenarios": rows,
        "cpu": cpu_summary(measured),  # every row run, shown or not (rounds)
    }
    report["loadgen_cpu_s"] = report["cpu"]["loadgen_cpu_s"]
    report["master_cpu_s"] = report["cpu"]["master_cpu_s"]
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_table(report))
