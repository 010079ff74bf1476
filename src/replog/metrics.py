"""Prometheus metrics of one node, GET /metrics and GET /readyz, and the periodic summary line.

Each node owns one CollectorRegistry (never the process-wide default: several nodes may live in one
test process). What happens on the write path is counted where it happens, cheaply: the domain
keeps plain integer counters (entries appended, batches and bytes sent, retries, fsyncs) and calls
record_write() / fsynced(), which count in plain numbers too (no lock: a node's code runs on one
event loop; prometheus_client's own Counter and Histogram take a lock per update, several times the
cost). What the node *is* (its seq, epoch, each secondary's position and status, waiting writes) is
read when Prometheus scrapes, by a collector: nothing is recomputed on the write path for a scrape
that may never come.

Names follow Prometheus conventions: counters end in _total, durations are _seconds, sizes _bytes.
docs/observability.md lists every metric with its meaning.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from replog import __version__
from replog.edge import serving_gate
from replog.http import json_response
from replog.progress import Status

if TYPE_CHECKING:
    from replog.log import Log
    from replog.master import Master
    from replog.secondary import Secondary

# Write latency: from a loopback w=1 write (~0.2 ms) to a w=all write waiting on a delayed secondary.
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# fsync: tmpfs answers in microseconds, a spinning disk in tens of milliseconds.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The classic text format every Prometheus reads (replog's names need none of the 1.0.0 format's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SUMMARY_INTERVAL = 10.0  # seconds between two summary lines, when something happened


class LogBytes:
    """UTF-8 bytes of a log's texts, counted incrementally: a scrape costs only the entries new since the last."""

    def __init__(self) -> None:
        self._seq = 0  # texts up to here are counted in _bytes
        self._bytes = 0
        self._log_id = ""

    def __call__(self, log: Log) -> int:
        if log.last_seq < self._seq or log.log_id != self._log_id:  # rolled back or adopted: count afresh
            self._seq, self._bytes, self._log_id = 0, 0, log.log_id
        for seq in range(self._seq + 1, log.last_seq + 1):
            self._bytes += len(log.text(seq).encode())
        self._seq = log.last_seq
        return self._bytes


class Buckets:
    """A histogram as plain numbers: observe() costs a bisect and two additions, no lock (every
    caller runs on the node's event loop); the collector turns it into Prometheus buckets at scrape."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # counts[i]: bounds[i-1] < value <= bounds[i]; the last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, count of values <= le) for each bound and +Inf, as Prometheus's buckets are."""
        out, total = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class NodeMetrics:
    """What every node measures: its registry, and the fsync latency its GroupCommit reports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(GateCollector())
        self.fsyncs = Buckets(FSYNC_BUCKETS)

    def fsynced(self, seconds: float) -> None:
        """Hook of GroupCommit: one write + fsync took this long."""
        self.fsyncs.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect_own(self) -> Iterator[Metric]:
        h = HistogramMetricFamily(
            "replog_fsync_duration_seconds", "Time one group-commit write and fsync of the log took (with --data-dir)."
        )
        h.add_metric([], self.fsyncs.cumulative(), self.fsyncs.sum)
        yield h


class MasterMetrics(NodeMetrics):
    """The master's metrics: writes by w and outcome, their latency, and a collector of its state."""

    def __init__(self, master: Master) -> None:
        super().__init__()
        self.write_count = 0  # every write answered, for the summary line
        self._writes: dict[tuple[int, str], int] = {}  # (w, outcome) -> writes answered
        self._latency: dict[int, Buckets] = {}  # w -> time to answer
        self.registry.register(_MasterCollector(master, self))

    def record_write(self, w: int, outcome: str, seconds: float) -> None:
        """One write was answered (or refused) after seconds."""
        key = (w, outcome)
        self._writes[key] = self._writes.get(key, 0) + 1
        buckets = self._latency.get(w)
        if buckets is None:
            buckets = self._latency[w] = Buckets(WRITE_BUCKETS)
        buckets.observe(seconds)
        self.write_count += 1

    def collect_own(self) -> Iterator[Metric]:
        yield from super().collect_own()
        c = CounterMetricFamily(
            "replog_writes",
            "Client writes answered, by write concern w and outcome (created, duplicate, or the error code).",
            labels=["w", "outcome"],
        )
        for (w, outcome), n in sorted(self._writes.items()):
            c.add_metric([str(w), outcome], n)
        yield c
        h = HistogramMetricFamily(
            "replog_write_duration_seconds",
            "Time from a write's arrival to its answer, by write concern w.",
            labels=["w"],
        )
        for w, buckets in sorted(self._latency.items()):
            h.add_metric([str(w)], buckets.cumulative(), buckets.sum)
        yield h


class SecondaryMetrics(NodeMetrics):
    """A secondary's metrics: a collector of its state and counters."""

    def __init__(self, secondary: Secondary) -> None:
        super().__init__()
        self.registry.register(_SecondaryCollector(secondary, self))


class GateCollector(Collector):
    """The connection gate's counts (replog.edge): what the node holds now against its cap, and how many
    connections it refused, displaced or dropped for a stalled request since it started."""

    def collect(self) -> Iterator[Metric]:
        gate = serving_gate()
        if gate is None:
            return
        held = GaugeMetricFamily(
            "replog_connections",
            "Connections the node holds now: open (all admitted), idle (waiting for a request, displaceable), "
            "internal (a master's, never displaced), client_requests (handling a client request now).",
            labels=["state"],
        )
        for state, n in (
            ("open", len(gate.live)),
            ("idle", len(gate.idle)),
            ("internal", len(gate.internal)),
            ("client_requests", len(gate.clients)),
        ):
            held.add_metric([state], n)
        yield held
        yield _gauge("replog_connections_max", "The cap on open connections (--max-connections).", gate.max_connections)
        closed = CounterMetricFamily(
            "replog_connections_closed",
            "Connections the gate closed: refused (503 overloaded at the cap), displaced (idle, to make room), "
            "timed_out (a request head or body stalled past --read-timeout).",
            labels=["reason"],
        )
        for reason, n in (("refused", gate.refused), ("displaced", gate.displaced), ("timed_out", gate.timed_out)):
            closed.add_metric([reason], n)
        yield closed


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    g.add_metric(list((labels or {}).values()), value)
    return g


def _info(role: str, log_id: str | None) -> GaugeMetricFamily:
    return _gauge(
        "replog_node_info",
        "Always 1: this node's role, its log identity and the replog version.",
        1,
        {"role": role, "log": log_id or "", "version": __version__},
    )


def _common(node: Any, log_bytes: LogBytes) -> Iterator[Metric]:
    """What both roles expose about their own log, readers and disk."""
    log = node.log
    yield _gauge("replog_log_entries", "Entries in this node's log (held in memory, gap-free).", log.last_seq)
    yield _gauge("replog_durable_seq", "Highest seq this node holds durably (on disk with --data-dir).", node.durable)
    yield _gauge("replog_log_bytes", "UTF-8 bytes of the message texts in this node's log.", log_bytes(log))
    yield _gauge("replog_waiting_reads", "Long-poll reads waiting for the log to grow.", node.tail.waiting)
    yield _gauge("replog_open_streams", "Open GET /messages/stream answers.", node.tail.streams)
    commit = node.commit
    if commit is not None:
        yield _gauge("replog_disk_log_bytes", "Size of the log's data file on disk.", commit.disk.size)
        c = CounterMetricFamily("replog_fsyncs", "Group-commit fsyncs of the log (with --data-dir).")
        c.add_metric([], commit.syncs)
        yield c


class _MasterCollector(Collector):
    """The master's state, read at scrape time."""

    def __init__(self, master: Master, metrics: MasterMetrics) -> None:
        self._m = master
        self._metrics = metrics
        self._log_bytes = LogBytes()

    def collect(self) -> Iterator[Metric]:
        m = self._m
        yield from self._metrics.collect_own()
        known = not m.recovering or m.log.last_seq > 0
        yield _info("master", m.log.log_id if known else None)
        yield _gauge("replog_epoch", "The epoch this master takes writes under (0 until it has recovered).", m.epoch)
        yield _gauge("replog_read_only", "1 while the master refuses writes (see /readyz for why).", m.status != "ok")
        yield _gauge("replog_recovering", "1 while the master recovers its log at start-up.", m.recovering)
        yield _gauge("replog_disk_failed", "1 once writing the log to disk has failed.", m.disk_failed is not None)
        yield _gauge("replog_available_nodes", "Nodes counting towards the quorum, the master included.", m.available)
        yield _gauge("replog_quorum_nodes", "Nodes a majority needs.", m.config.majority)
        yield _gauge("replog_waiting_writes", "Writes waiting for their write concern.", m.commitment.waiting)
        c = CounterMetricFamily("replog_appended_entries", "Entries appended to the master's log by client writes.")
        c.add_metric([], m.appended)
        yield c
        yield from _common(m, self._log_bytes)
        yield from self._secondaries()

    def _secondaries(self) -> Iterator[Metric]:
        m = self._m
        now = time.monotonic()
        last = m.log.last_seq
        lab = ["secondary"]
        seq = GaugeMetricFamily(
            "replog_secondary_seq", "Highest seq the secondary reported holding durably.", labels=lab
        )
        lag = GaugeMetricFamily("replog_secondary_lag_entries", "Entries the master holds that it lacks.", labels=lab)
        status = GaugeMetricFamily(
            "replog_secondary_status",
            "1 for the secondary's current status, 0 for the others.",
            labels=[*lab, "status"],
        )
        contact = GaugeMetricFamily(
            "replog_secondary_last_contact_age_seconds", "Seconds since the secondary last answered.", labels=lab
        )
        failures = GaugeMetricFamily(
            "replog_secondary_consecutive_failures", "Replication requests failed in a row.", labels=lab
        )
        batches = CounterMetricFamily("replog_replication_batches", "Replication requests sent.", labels=lab)
        retries = CounterMetricFamily(
            "replog_replication_retries", "Replication requests that failed and are resent.", labels=lab
        )
        sent = CounterMetricFamily(
            "replog_replication_sent_bytes", "Bytes of replication request bodies sent.", labels=lab
        )
        for r in m.replicators:
            p = r.progress
            url = [r.url]
            seq.add_metric(url, p.match)
            lag.add_metric(url, max(0, last - p.match))
            for s in Status:
                status.add_metric([r.url, str(s)], 1 if p.status is s else 0)
            if p.last_contact is not None:
                contact.add_metric(url, max(0.0, now - p.last_contact))
            failures.add_metric(url, p.failures)
            batches.add_metric(url, r.batches)
            retries.add_metric(url, r.retries)
            sent.add_metric(url, r.sent_bytes)
        yield from (seq, lag, status, contact, failures, batches, retries, sent)


class _SecondaryCollector(Collector):
    """A secondary's state, read at scrape time."""

    def __init__(self, secondary: Secondary, metrics: SecondaryMetrics) -> None:
        self._s = secondary
        self._metrics = metrics
        self._log_bytes = LogBytes()

    def collect(self) -> Iterator[Metric]:
        s = self._s
        yield from self._metrics.collect_own()
        yield _info("secondary", s.log.log_id if s.adopted else None)
        yield _gauge(
            "replog_epoch", "The log epoch: the master epoch whose log this node's log is a prefix of.", s.log_epoch
        )
        yield _gauge("replog_promised_epoch", "The highest master epoch this node promised.", s.promised)
        yield _gauge("replog_disk_failed", "1 once writing the log to disk has failed.", s.failed is not None)
        yield _gauge(
            "replog_reorder_buffer_entries", "Entries held behind a gap, waiting for it to fill.", len(s.buffer.pending)
        )
        entries = CounterMetricFamily(
            "replog_received_entries", "Entries received in replication requests (resent ones too)."
        )
        entries.add_metric([], s.received_entries)
        yield entries
        body = CounterMetricFamily("replog_received_bytes", "Bytes of replication request bodies received.")
        body.add_metric([], s.received_bytes)
        yield body
        yield from _common(s, self._log_bytes)


# -- HTTP ------------------------------------------------------------------------------------------


def metrics_handler(
    source: Callable[[web.Application], NodeMetrics],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /metrics: the node's registry in the Prometheus text format."""

    async def get_metrics(request: web.Request) -> web.Response:
        resp = web.Response(body=source(request.app).render())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    return get_metrics


NotReady = tuple[str, str] | None  # (reason code, one sentence), or None when the node is ready


def readyz_handler(
    source: Callable[[web.Application], Any], role: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /readyz: 200 {"status": "ready"} when source(app).not_ready() is None, else 503
    {"error": "not_ready", "reason": code, "detail": sentence}."""

    async def get_readyz(request: web.Request) -> web.Response:
        node = source(request.app)
        why: NotReady = node.not_ready() if node is not None else ("starting", "the node is starting")
        if why is None:
            return json_response({"status": "ready", "role": role})
        reason, detail = why
        return json_response({"error": "not_ready", "reason": reason, "detail": detail, "role": role}, status=503)

    return get_readyz


# -- the summary line ------------------------------------------------------------------------------


def short_url(url: str) -> str:
    """host:port of a node's URL: short enough for a log line."""
    return urlsplit(url).netloc or url


async def log_summaries(
    describe: Callable[[], dict[str, Any] | None],
    interval: float = SUMMARY_INTERVAL,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Every interval seconds, log one `summary` line at info of what describe() says happened
    since the last (it returns None when nothing did): normal work is visible at the default level."""
    log = structlog.get_logger()
    while True:
        await sleep(interval)
        fields = describe()
        if fields is not None:
            log.info("summary", **fields)
