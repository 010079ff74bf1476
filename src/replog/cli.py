"""The `replog` command: every node role and the client commands.

Options map to a frozen config; this is the only module that reads the environment
(through click's envvar) or exits.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from replog import __version__
from replog.cli_etcd import check_etcd_access, etcd_access_config, etcd_options
from replog.cli_security import security_config, security_options, warn_insecure
from replog.config import (
    ACCEPT_BATCH,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_TIMEOUT,
    DESCRIPTOR_RESERVE,
    LISTEN_BACKLOG,
    Edge,
    MasterConfig,
    SecondaryConfig,
    Tls,
)

DEFAULT_MASTER = "http://127.0.0.1:8000"


def _split_urls(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    urls: list[str] = []
    for chunk in value:
        for url in chunk.replace(",", " ").split():
            if not url.startswith(("http://", "https://")):
                raise click.BadParameter(f"{url!r} is not an http:// URL")
            urls.append(url.rstrip("/"))
    return tuple(urls)


def _parse_w(value: str) -> int | str:
    if value in ("majority", "all"):
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f'{value!r} is not an integer, "majority" or "all"') from None


class WType(click.ParamType):
    name = "W"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int):
            return value
        try:
            return _parse_w(str(value))
        except click.BadParameter as exc:
            self.fail(str(exc), param, ctx)


def server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every node role shares."""
    opts = [
        click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            envvar="REPLOG_HOST",
            help="Address to listen on; binding beyond loopback is an explicit choice.",
        ),
        click.option(
            "--max-body-bytes",
            type=click.IntRange(1),
            default=64 << 20,
            show_default=True,
            envvar="REPLOG_MAX_BODY_BYTES",
            help="Largest request body accepted (413 beyond).",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            default=None,
            envvar="REPLOG_DATA_DIR",
            help="Keep the log on disk in this directory (default: in memory).",
        ),
        click.option(
            "--fsync",
            type=click.Choice(["always", "never"]),
            default="always",
            show_default=True,
            envvar="REPLOG_FSYNC",
            help="With --data-dir: fsync before a write counts as held (always), or leave flushing to the OS (never).",
        ),
        click.option(
            "--loop",
            "loop_name",
            type=click.Choice(["asyncio", "uvloop", "auto"]),
            default="asyncio",
            show_default=True,
            envvar="REPLOG_LOOP",
            help="Event loop: the standard one (measured as fast as uvloop for replog's nodes), uvloop, or uvloop when installed (auto).",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_TLS_CERT",
            help="Serve HTTPS with this certificate chain (PEM); also presented to nodes this one calls that ask for one.",
        ),
        click.option(
            "--tls-key",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_TLS_KEY",
            help="The private key (PEM) of --tls-cert.",
        ),
        click.option(
            "--tls-ca",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_TLS_CA",
            help="CA file that verifies the https:// nodes this one calls (default: the system's CAs).",
        ),
        click.option(
            "--tls-client-ca",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_TLS_CLIENT_CA",
            help="Mutual TLS: internal endpoints (replication, promises, recovery reads, heartbeats) require a client certificate signed by this CA; clients need none.",
        ),
        click.option(
            "--max-connections",
            type=click.IntRange(1),
            default=DEFAULT_MAX_CONNECTIONS,
            show_default=True,
            envvar="REPLOG_MAX_CONNECTIONS",
            help="Open connections at most (client requests: 90% of them); at the cap the longest-idle one is closed, or, all busy, a new one gets 503 overloaded. Lowered (with a warning) to fit the descriptor limit.",
        ),
        click.option(
            "--read-timeout",
            type=click.FloatRange(0, min_open=True),
            default=DEFAULT_READ_TIMEOUT,
            show_default=True,
            envvar="REPLOG_READ_TIMEOUT",
            help="Seconds a request head may take to arrive whole, and a body may stall; slower clients get 408 and are dropped.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["auto", "console", "json"]),
            default="auto",
            show_default=True,
            envvar="REPLOG_LOG_FORMAT",
            help="Console lines on a terminal, JSON lines otherwise (auto).",
        ),
        click.option(
            "--log-level",
            type=click.Choice(["debug", "info", "warning", "error"]),
            default="info",
            show_default=True,
            envvar="REPLOG_LOG_LEVEL",
            help="Least severe events to log.",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


class ReplogGroup(click.Group):
    """The `replog` group: every command's options show their environment variable in --help, and
    every command has a one-sentence summary that `replog --help` never cuts.

    An option declared without a variable gets REPLOG_<OPTION> (its long name), so the rule holds for
    options added later too; a command without `short_help` gets its docstring's first sentence.
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        for param in cmd.params:
            if isinstance(param, click.Option) and param.expose_value:
                if not param.envvar:
                    long = max(param.opts, key=len).lstrip("-")
                    param.envvar = "REPLOG_" + long.replace("-", "_").upper()
                param.show_envvar = True
        if not cmd.short_help and cmd.help:
            cmd.short_help = first_sentence(cmd.help)
        super().add_command(cmd, name)


def first_sentence(text: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    para = " ".join(text.strip().split("\n\n")[0].split())
    end = para.find(". ")
    return para if end < 0 else para[: end + 1]


def port_option(default: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--port of a node role, defaulting to that role's usual port."""
    return click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=default,
        show_default=True,
        envvar="REPLOG_PORT",
        help="Port to listen on.",
    )


def default_w_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--default-w of a role that can be the master."""
    return click.option(
        "--default-w",
        type=WType(),
        default="majority",
        show_default=True,
        envvar="REPLOG_DEFAULT_W",
        help=help_text,
    )


W_TIMEOUT_OPTION = click.option(
    "--w-timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    envvar="REPLOG_W_TIMEOUT",
    help="Seconds a write waits for its w when it names no timeout (default: no limit).",
)


@click.group(cls=ReplogGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="replog")
def main() -> None:
    """replog: a replicated append-only message log with per-write write concerns."""


@main.command(short_help="Run the master: it takes writes and replicates them.")
@port_option(8000)
@click.option(
    "--secondary",
    "secondaries",
    multiple=True,
    callback=_split_urls,
    envvar="REPLOG_SECONDARY",
    help="A secondary's base URL; repeat it, or give a space- or comma-separated list.",
)
@default_w_option('Write concern of a write that names none: 1..N+1, "majority" or "all".')
@W_TIMEOUT_OPTION
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(0.01),
    default=1.0,
    show_default=True,
    envvar="REPLOG_HEARTBEAT_INTERVAL",
    help="Seconds between heartbeats to each secondary.",
)
@click.option(
    "--suspect-after",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    envvar="REPLOG_SUSPECT_AFTER",
    help="Missed heartbeats before a secondary is suspected.",
)
@click.option(
    "--unhealthy-after",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    envvar="REPLOG_UNHEALTHY_AFTER",
    help="Missed heartbeats before a secondary is unhealthy.",
)
@click.option(
    "--quorum-check/--no-quorum-check",
    default=True,
    show_default=True,
    envvar="REPLOG_QUORUM_CHECK",
    help="Refuse writes (503) while fewer than a majority of nodes are reachable.",
)
@click.option(
    "--max-message-bytes",
    type=click.IntRange(1),
    default=1 << 20,
    show_default=True,
    envvar="REPLOG_MAX_MESSAGE_BYTES",
    help="Largest message (UTF-8 bytes) accepted (413 beyond).",
)
@click.option(
    "--batch-max-count",
    type=click.IntRange(1),
    default=5000,
    show_default=True,
    envvar="REPLOG_BATCH_MAX_COUNT",
    help="Most entries in one replication request.",
)
@click.option(
    "--batch-max-bytes",
    type=click.IntRange(1),
    default=4 << 20,
    show_default=True,
    envvar="REPLOG_BATCH_MAX_BYTES",
    help="Approximate largest replication request (one entry always fits).",
)
@click.option(
    "--new-cluster",
    is_flag=True,
    envvar="REPLOG_NEW_CLUSTER",
    help="Start a brand-new cluster: while no node that answers holds any log or promise, the master counts its "
    "own vote, so writes are taken with a secondary still down. Never on a restart: a master without its log "
    "would then outvote a secondary that holds acknowledged writes.",
)
@click.option(
    "--replication-window",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    envvar="REPLOG_REPLICATION_WINDOW",
    help="Replication requests in flight to one secondary at most (in seq order; a slow secondary costs each write its delay once).",
)
@click.option(
    "--replication-timeout",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    envvar="REPLOG_REPLICATION_TIMEOUT",
    help="Seconds one replication request may take; keep it above any secondary's --delay.",
)
@click.option(
    "--backoff-cap",
    type=click.FloatRange(0, min_open=True),
    default=2.0,
    show_default=True,
    envvar="REPLOG_BACKOFF_CAP",
    help="Longest delay between two retries to a secondary, seconds.",
)
@server_options
@security_options
def master(
    port: int,
    secondaries: tuple[str, ...],
    default_w: int | str,
    loop_name: str,
    log_format: str,
    log_level: str,
    fsync: str,
    **kw: Any,
) -> None:
    """Run the master: it takes writes and replicates them to every --secondary."""
    from replog.master_app import build_master_app

    if len(set(secondaries)) != len(secondaries):
        raise click.BadParameter("a secondary is named twice", param_hint="--secondary")
    nodes = len(secondaries) + 1
    if isinstance(default_w, int) and not 1 <= default_w <= nodes:
        raise click.BadParameter(
            f"must be from 1 to {nodes} with {len(secondaries)} secondaries", param_hint="--default-w"
        )
    if kw["suspect_after"] > kw["unhealthy_after"]:
        raise click.BadParameter("must not exceed --unhealthy-after", param_hint="--suspect-after")
    edge = _edge(kw, reserve=DESCRIPTOR_RESERVE + len(secondaries) * (kw["replication_window"] + 2))
    tls = edge.tls
    secured, insecure = security_config(kw)
    config = MasterConfig(
        port=port,
        secondaries=secondaries,
        default_w=default_w,
        fsync=fsync == "always",
        tls_ca=tls.ca,
        tls_cert=tls.cert,
        tls_key=tls.key,
        **secured,
        **kw,
    )
    _serve(
        "master",
        config.host,
        port,
        loop_name,
        log_format,
        log_level,
        lambda: warn_insecure(build_master_app(config), config.host, insecure),
        edge=edge,
        secondaries=list(secondaries),
    )


@main.command(short_help="Run a secondary: it stores what the master sends.")
@port_option(8001)
@click.option(
    "--delay",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    envvar="REPLOG_DELAY",
    help="Seconds to sleep (asynchronously) before storing each replication request.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    envvar="REPLOG_FAIL_RATE",
    help="Probability of answering 500 after storing a replication request (fault injection).",
)
@click.option(
    "--seed", type=int, default=None, envvar="REPLOG_SEED", help="Seed of the --fail-rate dice, for reproducible runs."
)
@click.option(
    "--reset",
    is_flag=True,
    envvar="REPLOG_RESET",
    help="Erase the log in --data-dir before starting: how a diverged secondary rejoins.",
)
@click.option(
    "--buffer-max-bytes",
    type=click.IntRange(1),
    default=64 << 20,
    show_default=True,
    envvar="REPLOG_BUFFER_MAX_BYTES",
    help="Memory held for entries that arrived past a gap, at most; a replication request beyond it gets 503 buffer_full (the master resends from the gap).",
)
@click.option(
    "--buffer-max-distance",
    type=click.IntRange(1),
    default=1_000_000,
    show_default=True,
    envvar="REPLOG_BUFFER_MAX_DISTANCE",
    help="Entries this many seqs past the gap-free end are refused (400 seq_out_of_window; the master resends from the gap).",
)
@server_options
@security_options
def secondary(port: int, loop_name: str, log_format: str, log_level: str, fsync: str, reset: bool, **kw: Any) -> None:
    """Run a secondary: it stores what the master replicates and serves reads."""
    from replog.secondary import build_secondary_app

    edge = _edge(kw, reserve=DESCRIPTOR_RESERVE)
    secured, insecure = security_config(kw)
    config = SecondaryConfig(port=port, fsync=fsync == "always", **secured, **kw)
    _serve(
        "secondary",
        config.host,
        port,
        loop_name,
        log_format,
        log_level,
        lambda: warn_insecure(build_secondary_app(config, reset=reset), config.host, insecure),
        edge=edge,
        delay=config.delay,
    )


def _edge(kw: dict[str, Any], *, reserve: int) -> Edge:
    """Take the TLS and connection options out of kw; a TLS file that is missing or does not fit is one
    error line now, before the node opens its log."""
    from replog.edge import TlsConfigError, client_context, server_context

    tls = Tls(kw.pop("tls_cert"), kw.pop("tls_key"), kw.pop("tls_ca"), kw.pop("tls_client_ca"))
    try:
        server_context(tls)
        client_context(tls)
    except TlsConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return Edge(tls, kw.pop("max_connections"), kw.pop("read_timeout"), reserve)


@main.command(short_help="Run a node that etcd makes master or secondary.")
@click.option("--name", required=True, envvar="REPLOG_NAME", help="This node's name in the cluster (unique, stable).")
@click.option(
    "--advertise",
    default=None,
    envvar="REPLOG_ADVERTISE",
    help="The base URL other nodes and clients reach this node at (default: http://HOST:PORT).",
)
@click.option(
    "--etcd",
    "etcd",
    required=True,
    multiple=True,
    callback=_split_urls,
    envvar="REPLOG_ETCD",
    help="etcd client URLs; repeat it, or give a space- or comma-separated list.",
)
@click.option(
    "--nodes",
    type=click.IntRange(1),
    required=True,
    envvar="REPLOG_NODES",
    help="The cluster's size N: a majority of N promises is needed to take writes, whoever is registered.",
)
@click.option(
    "--cluster",
    default="replog",
    show_default=True,
    envvar="REPLOG_CLUSTER",
    help="The cluster's name: its keys live under /replog/<cluster>/ in etcd.",
)
@click.option(
    "--lease-ttl",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    envvar="REPLOG_LEASE_TTL",
    help="Seconds of this node's etcd lease: a dead master's key goes after it; a cut-off master stops before it.",
)
@port_option(8000)
@default_w_option('Write concern of a write that names none, while this node is the master: 1..N, "majority" or "all".')
@W_TIMEOUT_OPTION
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(0.01),
    default=0.5,
    show_default=True,
    envvar="REPLOG_HEARTBEAT_INTERVAL",
    help="Seconds between the master's heartbeats to each node (and between its promise rounds).",
)
@server_options
@security_options
@etcd_options
def node(
    name: str,
    advertise: str | None,
    etcd: tuple[str, ...],
    nodes: int,
    port: int,
    default_w: int | str,
    loop_name: str,
    log_format: str,
    log_level: str,
    fsync: str,
    **kw: Any,
) -> None:
    """Run a node that etcd makes master or secondary (automatic failover; see docs/failover.md)."""
    from replog.node import NodeConfig, build_node_app

    if not etcd:
        raise click.BadParameter("at least one etcd URL is needed", param_hint="--etcd")
    if isinstance(default_w, int) and not 1 <= default_w <= nodes:
        raise click.BadParameter(f"must be from 1 to {nodes} with --nodes {nodes}", param_hint="--default-w")
    if port == 0 and advertise is None:
        raise click.BadParameter("with --port 0, say which URL others reach this node at", param_hint="--advertise")
    if advertise is not None and not advertise.startswith(("http://", "https://")):
        raise click.BadParameter(f"{advertise!r} is not an http:// URL", param_hint="--advertise")
    url = (advertise or f"http://{kw['host']}:{port}").rstrip("/")
    # The connection bounds, TLS and the security options apply to this role as to the static ones: its
    # calls to other nodes verify them with --tls-ca and present the cluster key (etcd's: the --etcd-* options).
    edge = _edge(kw, reserve=DESCRIPTOR_RESERVE + 6 * nodes)
    secured, insecure = security_config(kw)
    etcd_access = etcd_access_config(kw, etcd)
    config = NodeConfig(
        etcd_access=etcd_access,
        name=name,
        advertise=url,
        etcd=etcd,
        nodes=nodes,
        port=port,
        default_w=default_w,
        fsync=fsync == "always",
        tls=edge.tls,
        **secured,
        **kw,
    )
    # A refused password or an etcd certificate that does not verify stops the node now, in one line; an etcd
    # that does not answer yet does not (the node keeps trying, and says so in its log).
    check_etcd_access(etcd, config.cluster, etcd_access)
    _serve(
        "node",
        config.host,
        port,
        loop_name,
        log_format,
        log_level,
        lambda: warn_insecure(build_node_app(config), config.host, insecure),
        edge=edge,
        name=name,
        advertise=url,
        etcd=list(etcd),
        nodes=nodes,
    )


def _new_loop(name: str) -> asyncio.AbstractEventLoop:
    """uvloop when asked for or (auto) installed; the standard loop otherwise."""
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise click.BadParameter("uvloop is not installed (pip install uvloop)", param_hint="--loop") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _serve(
    role: str,
    host: str,
    port: int,
    loop_name: str,
    log_format: str,
    log_level: str,
    build: Callable[[], Any],
    edge: Edge,
    **startup: Any,
) -> None:
    from aiohttp import web

    from replog import logs

    logs.configure(log_format, log_level, role=role, port=port)
    import aiohttp.web_server
    import structlog

    from replog import edge as edges
    from replog.http import JsonErrorHandler
    from replog.storage import CorruptLogError

    log = structlog.get_logger()
    # Bind first: a port in use is one clear error line and exit 1, before the data dir is opened
    # and before anything says the node started.
    socks = _listen(host, port)
    max_connections = edges.fit_descriptors(edge.max_connections, edge.reserve)
    if max_connections < edge.max_connections:
        log.warning(
            "max_connections_lowered",
            asked=edge.max_connections,
            max_connections=max_connections,
            detail="the descriptor limit (ulimit -n) is too low for --max-connections; raise it",
        )
    try:
        app = build()
    except CorruptLogError as exc:
        raise click.ClickException(f"the log on disk is corrupt, refusing to start: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"cannot open the data directory: {exc}") from None

    loop = _new_loop(loop_name)
    edge_notes: dict[str, Any] = {}  # the start line names TLS and the bounds only where they are not the defaults
    if edge.tls.serving:
        edge_notes["tls"] = "mutual" if edge.tls.client_ca is not None else "on"
    if max_connections != DEFAULT_MAX_CONNECTIONS:
        edge_notes["max_connections"] = max_connections
    if edge.read_timeout != DEFAULT_READ_TIMEOUT:
        edge_notes["read_timeout"] = edge.read_timeout
    bound = socks[0].getsockname()[1]  # the port asked for, or the one the kernel chose for 0

    async def announce(app: Any) -> None:
        log.info(
            "node_started", host=host, port=bound, loop=type(loop).__module__.split(".")[0], **edge_notes, **startup
        )

    async def stopping(app: Any) -> None:
        log.info("node_stopping")

    app.on_startup.append(announce)
    app.on_shutdown.append(stopping)
    if edge.tls.client_ca is not None:
        app.middlewares.append(edges.internal_needs_peer_cert)
    gate = edges.Gate(max_connections, edge.read_timeout)
    # JsonErrorHandler gives aiohttp's own error answers JSON bodies; the gate bounds the connections. With TLS the
    # handler runs each handshake itself once the gate has counted the TCP connection: the server gets no context.
    tls_context = edges.server_context(edge.tls)
    aiohttp.web_server.RequestHandler = edges.guarded(JsonErrorHandler, gate, tls_context)  # type: ignore[misc]
    web.run_app(
        app,
        sock=socks,
        print=None,
        access_log=None,
        handler_cancellation=True,
        loop=loop,
        shutdown_timeout=2.0,
        # What asyncio accepts in one pass (the kernel queue stays LISTEN_BACKLOG). uvloop calls listen() itself
        # with this number, and libuv copes with running out of descriptors on its own: give it the whole queue.
        backlog=LISTEN_BACKLOG if type(loop).__module__.startswith("uvloop") else ACCEPT_BATCH,
    )
    log.info("node_stopped")


def _listen(host: str, port: int) -> list[Any]:
    """Listening sockets on every address host resolves to (as asyncio's create_server binds them);
    a ClickException naming host:port when one cannot be bound."""
    import socket

    from replog.edge import Listener

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = Listener(family, kind, proto)  # keeps its kernel queue when asyncio listens again
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr[0], port, *addr[2:]))
            sock.listen(LISTEN_BACKLOG)
            port = sock.getsockname()[1]  # with port 0: every address on the port the kernel chose for the first
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return socks


# -- client commands -------------------------------------------------------------
# Thin: replog.cli_client runs each on replog.Client; a failure is one `Error:` line and exit 1.


TOKEN_OPTION = click.option(
    "--token",
    default=None,
    envvar="REPLOG_TOKEN",
    help="Send this token as Authorization: Bearer (for nodes that require one).",
)
CA_OPTION = click.option(
    "--ca",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="REPLOG_CA",
    help="CA file to verify https:// nodes with (default: the system's).",
)


def client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every client command shares."""
    opts = [
        TOKEN_OPTION,
        CA_OPTION,
        click.option(
            "--retry-for",
            type=click.FloatRange(0),
            default=0.0,
            show_default=True,
            envvar="REPLOG_RETRY_FOR",
            help="Seconds to keep retrying an unreachable node or a 503 (writes carry an id: never stored twice).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@main.command(short_help="Append messages and print each stored entry.")
@click.argument("texts", nargs=-1, required=True, metavar="TEXT...")
@click.option(
    "-w",
    "w",
    type=WType(),
    default=None,
    envvar="REPLOG_W",
    help='Nodes that must hold the message, master included: 1..N+1, "majority" or "all" (default: the master\'s).',
)
@click.option(
    "--master",
    "master_url",
    default=DEFAULT_MASTER,
    show_default=True,
    envvar="REPLOG_MASTER",
    help="The master's base URL (host:port means http://); several, comma-separated, are tried in turn.",
)
@click.option(
    "--id",
    "id_",
    default=None,
    envvar="REPLOG_ID",
    help="Idempotency key: a retry with the same id never appends twice (default: one made up).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    envvar="REPLOG_TIMEOUT",
    help="Seconds to wait for the write concern (default: the master's).",
)
@click.option("--json", "as_json", is_flag=True, envvar="REPLOG_JSON", help="Print the stored entry as JSON.")
@client_options
def post(
    texts: tuple[str, ...],
    w: int | str | None,
    master_url: str,
    id_: str | None,
    timeout: float | None,
    as_json: bool,
    **kw: Any,
) -> None:
    """Append TEXT (several TEXTs: one batch, consecutive seqs) and print the stored entry and its acks.

    `replog post -` appends every non-empty line of stdin as a message, in order.
    While a write waits for its w on a terminal, stderr shows what it waits for.
    """
    from replog import cli_client

    log = cli_client.client(_split_list(master_url), kw["token"], kw["ca"], kw["retry_for"])
    if texts == ("-",):
        if id_ is not None:
            raise click.ClickException("--id names one write; with - every line is a write of its own")
        cli_client.run(cli_client.post_lines(log, w, timeout, as_json))
        return
    watch = timeout is None and not as_json and sys.stderr.isatty()
    cli_client.run(cli_client.post(log, texts, w, id_, timeout, as_json, watch))


def _split_list(value: str) -> list[str]:
    return [u for u in value.replace(",", " ").split() if u] or [value]


@main.command(short_help="Print the messages a node shows, one line each.")
@click.option(
    "--node",
    default=DEFAULT_MASTER,
    show_default=True,
    envvar="REPLOG_NODE",
    help="Base URL of the node to read, master or secondary (host:port means http://).",
)
@click.option(
    "--since",
    type=click.IntRange(0),
    default=None,
    envvar="REPLOG_SINCE",
    help="Only entries with a seq above this one (exclusive).",
)
@click.option("--limit", type=click.IntRange(0), default=None, envvar="REPLOG_LIMIT", help="At most this many entries.")
@click.option("--json", "as_json", is_flag=True, envvar="REPLOG_JSON", help="Print the node's JSON answer.")
@client_options
def get(node: str, since: int | None, limit: int | None, as_json: bool, **kw: Any) -> None:
    """Print the messages a node shows, in order: one "SEQ<TAB>TEXT" line each."""
    from replog import cli_client

    log = cli_client.client(node, kw["token"], kw["ca"], kw["retry_for"])
    cli_client.run(cli_client.get(log, since, limit, as_json))


@main.command(short_help="Print the log after a seq; -f follows it live.")
@click.option(
    "--node",
    default=DEFAULT_MASTER,
    show_default=True,
    envvar="REPLOG_NODE",
    help="Base URL of the node to read, master or secondary (host:port means http://).",
)
@click.option(
    "--since",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    envvar="REPLOG_SINCE",
    help="Start after this seq (exclusive).",
)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    envvar="REPLOG_FOLLOW",
    help="Keep printing new entries as they come; survives node restarts.",
)
@client_options
def tail(node: str, since: int, follow: bool, **kw: Any) -> None:
    """Print the log as "SEQ<TAB>TEXT" lines; with -f, follow it (Ctrl-C stops)."""
    from replog import cli_client

    log = cli_client.client(node, kw["token"], kw["ca"], kw["retry_for"])
    try:
        cli_client.run(cli_client.tail(log, since, follow))
    except KeyboardInterrupt:
        pass  # how -f ends


@main.command(short_help="Print the master's status and each secondary's lag.")
@click.option(
    "--master",
    "master_url",
    default=DEFAULT_MASTER,
    show_default=True,
    envvar="REPLOG_MASTER",
    help="The master's base URL (host:port means http://).",
)
@click.option("--json", "as_json", is_flag=True, envvar="REPLOG_JSON", help="Print the master's JSON answer.")
@client_options
def health(master_url: str, as_json: bool, **kw: Any) -> None:
    """Print the master's status and each secondary's status and lag."""
    from replog import cli_client

    log = cli_client.client(master_url, kw["token"], kw["ca"], kw["retry_for"])
    cli_client.run(cli_client.health(log, as_json))


# -- backup and restore ----------------------------------------------------------


def _progress_bars(
    label: str, bars: list[Any], *, data_on_stdout: bool = False
) -> Callable[[int, int], Callable[[int], None]] | None:
    """Progress bars on stderr when it is a terminal, none otherwise (a pipe or a log file gets no bar,
    nor does a terminal that also shows the data written to stdout).

    The result makes one bar per segment (from since to last) and returns its update function; the
    bars made are added to bars, for _close_bars.
    """
    if not sys.stderr.isatty() or (data_on_stdout and sys.stdout.isatty()):
        return None

    def start(since: int, last: int) -> Callable[[int], None]:
        _close_bars(bars)
        bar = click.progressbar(length=max(last - since, 1), label=label, file=sys.stderr, show_pos=True)
        bar.__enter__()
        bars.append(bar)
        return bar.update

    return start


def _close_bars(bars: list[Any]) -> None:
    while bars:
        bars.pop().__exit__(None, None, None)


def _client_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run an async command; network failures become one clear line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import aiohttp

        try:
            return asyncio.run(fn(*args, **kwargs))
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise click.ClickException(f"cannot reach the node: {exc}") from None
        except TimeoutError:
            raise click.ClickException("the node did not answer in time") from None

    return wrapper


@main.command("export", short_help="Write a node's whole log to stdout as JSON lines.")
@click.option(
    "--node",
    default=DEFAULT_MASTER,
    show_default=True,
    envvar="REPLOG_NODE",
    help="Base URL of the node to back up (master or secondary).",
)
@click.option(
    "--since",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    envvar="REPLOG_SINCE",
    help="Export only the entries after this seq: appended (>>) to a file that ends at this seq, it continues it.",
)
@TOKEN_OPTION
@CA_OPTION
@_client_call
async def export_(node: str, since: int, token: str | None, ca: str | None) -> None:
    """Write a node's whole log, with its identity and hash chain, to stdout as JSON lines.

    The first line is a header with the log id, the seq range and the chain values at both ends; then
    one line per entry: {"seq", "id" (null: generated), "text", "flags", "hash"}. A progress bar shows on
    a terminal. Restore it with `replog import --data-dir DIR < FILE`.
    """
    from replog import backup

    bars: list[Any] = []
    out = sys.stdout.buffer
    try:
        done = await backup.export(
            node, out, since=since, token=token, ca=ca, progress=_progress_bars("exporting", bars, data_on_stdout=True)
        )
        out.flush()
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    except BrokenPipeError:
        raise click.ClickException("the output was closed before the export ended") from None
    finally:
        _close_bars(bars)
    count = done.last_seq - done.since
    span = f" (seq {done.since + 1}..{done.last_seq})" if count else ""
    click.echo(f"exported {count} entries{span} of log {done.log_id}", err=True)


@main.command("import", short_help="Restore an export from stdin into a data dir.")
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False),
    envvar="REPLOG_DATA_DIR",
    help="The data dir to restore into: new, empty, or holding a prefix of the same log (the import continues it).",
)
def import_(data_dir: str) -> None:
    """Restore a log from an export read on stdin into a node's data dir, verifying its whole hash chain.

    A foreign (another log), corrupt or truncated file is refused with one line and leaves the data dir
    as it was. Start a node on the data dir afterwards: a secondary rejoins its master and catches up.
    """
    from replog import backup

    if sys.stdin.isatty():
        raise click.UsageError("pipe an export into it: replog import --data-dir DIR < log.jsonl")
    bars: list[Any] = []
    try:
        done = backup.import_log(sys.stdin.buffer, data_dir, progress=_progress_bars("importing", bars))
    except backup.BackupError as exc:
        raise click.ClickException(f"import refused, {data_dir} unchanged: {exc}") from None
    finally:
        _close_bars(bars)
    click.echo(
        f"imported {done.added} entries of log {done.log_id} into {data_dir}: it holds seq 1..{done.last_seq}", err=True
    )


# -- tooling ---------------------------------------------------------------------
# Declared here, run from replog.tools: a node never imports that package, and this module imports it
# only inside the command that needs it.

BENCH_SCENARIOS = (  # replog.tools.bench.SCENARIOS
    *("w1", "majority", "all", "latency", "batch", "catchup", "read"),
    *("replay", "client", "producer", "stream", "idle"),
)


@main.command(short_help="Measure a cluster's write rates, latency and memory.")
@click.option(
    "--master",
    "master_url",
    default=None,
    envvar="REPLOG_BENCH_MASTER",
    help="Bench a running cluster at this master URL (the catch-up scenario is skipped). Default: start a local cluster of a master and 2 secondaries.",
)
@click.option(
    "--requests",
    type=click.IntRange(1),
    default=20_000,
    show_default=True,
    envvar="REPLOG_BENCH_REQUESTS",
    help="Single-message POSTs per scenario (the one-client latency scenario runs a quarter of them).",
)
@click.option(
    "--clients",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    envvar="REPLOG_BENCH_CLIENTS",
    help="Concurrent clients (connections) of the single-message scenarios.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    envvar="REPLOG_BENCH_BATCH_SIZE",
    help="Messages per batch POST.",
)
@click.option(
    "--batch-requests",
    type=click.IntRange(1),
    default=None,
    envvar="REPLOG_BENCH_BATCH_REQUESTS",
    help="Batch POSTs of the batch scenario (default: --requests / 20).",
)
@click.option(
    "--catchup-messages",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    envvar="REPLOG_BENCH_CATCHUP_MESSAGES",
    help="Messages written while a secondary is down, in batches of --batch-size.",
)
@click.option(
    "--scenario",
    "scenarios",
    type=click.Choice(BENCH_SCENARIOS),
    multiple=True,
    envvar="REPLOG_BENCH_SCENARIO",
    help="Run only this scenario; repeat for several (default: all, in the order listed).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    envvar="REPLOG_BENCH_DATA_DIR",
    help="Run the local cluster's nodes with data dirs in a fresh directory under this one (removed afterwards).",
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "never"]),
    default="always",
    show_default=True,
    envvar="REPLOG_BENCH_FSYNC",
    help="With --data-dir: the nodes' --fsync.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(0.01),
    default=None,
    envvar="REPLOG_BENCH_HEARTBEAT_INTERVAL",
    help="The local master's --heartbeat-interval (default: the master's own default).",
)
@click.option(
    "--loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    envvar="REPLOG_BENCH_LOOP",
    help="The load generator's event loop (auto: uvloop when installed).",
)
@click.option(
    "--node-loop",
    type=click.Choice(["asyncio", "uvloop"]),
    default=None,
    envvar="REPLOG_BENCH_NODE_LOOP",
    help="The local nodes' --loop (default: the nodes' own default, asyncio).",
)
@click.option(
    "--idle-streams",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    envvar="REPLOG_BENCH_IDLE_STREAMS",
    help="Streams the idle scenario holds open on the master.",
)
@click.option(
    "--secure",
    is_flag=True,
    envvar="REPLOG_BENCH_SECURE",
    help="Also start a local cluster over TLS, with a cluster key, and run each scenario on both: plain and [TLS] rows with their ratio (default scenarios: all, batch; needs trustme).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    envvar="REPLOG_BENCH_ROUNDS",
    help="With --secure: run each scenario this many times on each cluster, alternating, and show the round whose ratio is the median (odd numbers are clearest).",
)
@click.option(
    "--json", "as_json", is_flag=True, envvar="REPLOG_BENCH_JSON", help="Print the results as JSON instead of a table."
)
def bench(**kw: Any) -> None:
    """Measure writes/s, latency, catch-up time and memory of a replog cluster, and print a table.

    Every option also reads REPLOG_BENCH_<OPTION>, never the REPLOG_MASTER or REPLOG_DATA_DIR of the
    other commands: an environment set up for `replog post` or a node never aims a bench at real data.
    """
    from replog.tools import bench as tool

    tool.run(**kw)
