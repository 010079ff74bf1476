"""Frozen configuration of each node role, built by the CLI (or by tests) and read by the app factories."""

from __future__ import annotations

from dataclasses import dataclass, field

from replog.commitment import majority

DEFAULT_MAX_CONNECTIONS = 2048  # above the 1,000 idle streams `replog bench` holds, far below usual hard limits
DEFAULT_READ_TIMEOUT = 10.0  # seconds a request head may take, and a body may stall
ACCEPT_BATCH = 16  # connections asyncio accepts in one loop pass, before any reaches the gate (see replog.edge)
LISTEN_BACKLOG = 1024  # connections the kernel queues for the node to accept
# Descriptors a node keeps beyond its cap: accept batches not yet gated or not yet closed (a few loop passes'
# worth), its log files, its listener and its outbound calls.
DESCRIPTOR_RESERVE = 64 + 4 * ACCEPT_BATCH


@dataclass(frozen=True)
class Tls:
    """The TLS files of one node (replog.edge loads them); all None: plain HTTP."""

    cert: str | None = None  # this node's certificate chain (PEM): it serves HTTPS, and presents it when calling
    key: str | None = None  # its private key (PEM)
    ca: str | None = None  # the CA that signs the nodes this one calls (None: the system's trust store)
    client_ca: str | None = None  # internal endpoints require a client certificate signed by this CA

    @property
    def serving(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True)
class Edge:
    """A node's network edge as the CLI gives it to the server: TLS files and the connection bounds."""

    tls: Tls = Tls()
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # open client connections at most
    read_timeout: float = DEFAULT_READ_TIMEOUT
    reserve: int = DESCRIPTOR_RESERVE  # descriptors kept beyond the cap for the node's own use


@dataclass(frozen=True)
class MasterConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    secondaries: tuple[str, ...] = ()  # base URLs, exactly as given, without a trailing slash
    default_w: int | str = "majority"  # w of a write that names none: 1..nodes, "majority" or "all"
    w_timeout: float | None = None  # seconds a write waits for its w when it names no timeout; None = no limit
    heartbeat_interval: float = 1.0  # seconds between two heartbeats to one secondary
    suspect_after: int = 2  # missed heartbeats before a secondary is suspected
    unhealthy_after: int = 5  # missed heartbeats before a secondary is unhealthy
    quorum_check: bool = True  # refuse writes (503) without a majority of available nodes
    max_message_bytes: int = 1 << 20  # UTF-8 size cap of one message
    max_body_bytes: int = 64 << 20  # size cap of one request body
    batch_max_count: int = 5000  # entries in one replication request, at most
    replication_window: int = 4  # replication requests in flight to one secondary, at most
    batch_max_bytes: int = 4 << 20  # approximate size of one replication request, at most (one entry always fits)
    backoff_base: float = 0.05  # first retry delay, seconds
    backoff_cap: float = 2.0  # longest retry delay, seconds
    replication_timeout: float = 30.0  # seconds one replication request may take (must exceed a secondary's --delay)
    data_dir: str | None = None  # keep the log on disk here; None = in memory
    new_cluster: bool = False  # the operator says this is a brand-new cluster: with no history on any
    # node that answers, the master's own vote counts although it has no log of its own
    fsync: bool = True  # with data_dir: fsync before counting a write as held
    stream_keepalive: float = 15.0  # seconds between keep-alive comments of an idle GET /messages/stream
    tls_ca: str | None = None  # CA that verifies the secondaries (https:// URLs); None: the system's trust store
    tls_cert: str | None = None  # this node's certificate and key, presented to secondaries that ask (mutual TLS)
    tls_key: str | None = None
    cluster_key: str | None = field(default=None, repr=False)  # sent to every secondary; asked of internal calls
    token_file: str | None = None  # lines `<role> <token>` guarding the client API; None = open
    summary_interval: float = 10.0  # seconds between two `summary` log lines (when something happened)
    size: int = 0  # under failover (replog node --nodes N): the cluster's size, whoever is registered now
    roll_back_diverged: bool = False  # under failover: a secondary whose tail contradicts ours rolls it back

    @property
    def nodes(self) -> int:
        """Every node of the cluster, the master included (under failover: --nodes, fixed)."""
        return self.size or len(self.secondaries) + 1

    @property
    def majority(self) -> int:
        return majority(self.nodes)


@dataclass(frozen=True)
class SecondaryConfig:
    host: str = "127.0.0.1"
    port: int = 8001
    delay: float = 0.0  # seconds slept before storing each replication request
    fail_rate: float = 0.0  # probability of answering 500 after storing a replication request
    max_body_bytes: int = 64 << 20
    data_dir: str | None = None
    fsync: bool = True
    seed: int | None = None  # seeds the fail-rate dice, for reproducible runs
    stream_keepalive: float = 15.0  # seconds between keep-alive comments of an idle GET /messages/stream
    buffer_max_bytes: int = 64 << 20  # memory held behind a gap at most (503 buffer_full beyond)
    buffer_max_distance: int = 1_000_000  # entries this far past the gap-free end are refused (seq_out_of_window)
    cluster_key: str | None = field(default=None, repr=False)  # asked of every internal call (never shown)
    token_file: str | None = None  # lines `<role> <token>` guarding the client API; None = open
    summary_interval: float = 10.0  # seconds between two `summary` log lines (when something happened)
