"""The master's HTTP application: thin handlers around replog.master.Master, and the tasks it owns."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from replog.auth import Guard
from replog.config import MasterConfig, Tls
from replog.dashboard import add_dashboard_routes
from replog.datadir import open_log
from replog.durable import GroupCommit
from replog.edge import client_context
from replog.http import (
    expect_handler,
    json_errors,
    json_response,
    livez,
    log_handler,
    messages_handler,
    openapi,
    read_body,
)
from replog.log import Log
from replog.master import Master
from replog.metrics import log_summaries, metrics_handler, readyz_handler
from replog.protocol import parse_write
from replog.replicator import supervise
from replog.stream import stream_handler
from replog.transport import HttpTransport, Transport

MASTER = web.AppKey("master", Master)


async def post_messages(request: web.Request) -> web.Response:
    master = request.app[MASTER]
    cfg = master.config
    req = parse_write(
        await read_body(request),
        nodes=cfg.nodes,
        default_w=cfg.default_w,
        default_timeout=cfg.w_timeout,
        max_message_bytes=cfg.max_message_bytes,
    )
    result = await master.write(req)
    return json_response(result.body, status=201 if result.created else 200)


async def get_health(request: web.Request) -> web.Response:
    return json_response(request.app[MASTER].health())


def build_master_app(config: MasterConfig, **replicator_kw: Any) -> web.Application:
    """The master's application. With a data dir its log is locked and loaded here, before it
    listens; at start-up it wins an epoch and recovers, then runs one replicator per secondary."""
    app = web.Application(middlewares=[json_errors], client_max_size=config.max_body_bytes)
    Guard(config.cluster_key, config.token_file).install(app)  # replog.auth: who may call which route
    opened = open_log(config.data_dir, fsync=config.fsync)  # DataDirLocked / CorruptLogError stop the node

    async def replication(app: web.Application) -> AsyncIterator[None]:
        health_timeout = max(config.heartbeat_interval, 0.5)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.replication_timeout),
            connector=aiohttp.TCPConnector(limit=0, ssl=_node_ssl(config)),
        )
        holder: list[Master] = []
        transports: list[Transport] = [
            HttpTransport(
                session,
                url,
                lambda: holder[0].fence,
                replicate_timeout=config.replication_timeout,
                health_timeout=health_timeout,
                cluster_key=config.cluster_key,
            )
            for url in config.secondaries
        ]
        master = Master(config, transports, opened, **replicator_kw)
        holder.append(master)
        tasks: list[asyncio.Task[Any]] = []

        def own(coro: Any, name: str) -> asyncio.Task[Any]:
            """Start a task this app owns: cancelled and awaited at shutdown; its death is loud."""
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(_on_death(master, name))
            tasks.append(task)
            return task

        if opened.disk is not None:
            master.attach_disk(
                GroupCommit(
                    opened.disk,
                    on_durable=master.durable_to,
                    on_failed=master._on_disk_failed,
                    on_sync=master.metrics.fsynced,
                )
            )
            own(master.commit.run(), "group commit")  # type: ignore[union-attr]
        app[MASTER] = master

        async def start() -> None:
            await master.recover()
            for r in master.replicators:
                own(supervise(r), f"replicator {r.url}")

        own(start(), "recovery")
        own(log_summaries(master.summary, config.summary_interval), "summary")
        try:
            yield
        finally:
            for t in reversed(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
            if master.commit is not None:
                await master.commit.close()  # waits until no worker thread uses the disk, then closes it
            elif opened.disk is not None:
                opened.disk.close()

    app.cleanup_ctx.append(replication)
    app.on_shutdown.append(_close_readers)
    app.router.add_post("/messages", post_messages, expect_handler=expect_handler)
    app.router.add_get("/messages", messages_handler(lambda app: app[MASTER]))
    app.router.add_get("/messages/stream", stream_handler(lambda app: app[MASTER]))
    app.router.add_get("/health", get_health)
    add_read_routes(app)
    app.router.add_get("/metrics", metrics_handler(lambda app: app[MASTER].metrics))
    app.router.add_get("/readyz", readyz_handler(lambda app: app.get(MASTER), "master"))
    return app


def _node_ssl(config: MasterConfig) -> ssl.SSLContext | bool:
    """How the master verifies its secondaries: against --tls-ca, presenting its own certificate (for
    secondaries that ask for one); without TLS options, aiohttp's default (the system's CAs)."""
    if config.tls_ca is None and config.tls_cert is None:
        return True
    return client_context(Tls(cert=config.tls_cert, key=config.tls_key, ca=config.tls_ca))


def _master_log(app: web.Application) -> tuple[Log, int, str | None]:
    """The master's log for GET /log; its identity is not yet known while it recovers an empty log."""
    master = app[MASTER]
    known = not master.recovering or master.log.last_seq > 0
    return master.log, master.durable, master.log.log_id if known else None


def add_read_routes(app: web.Application) -> None:
    """GET /livez, /openapi.json, /log (the raw log, for `replog export`) and the dashboard (/ and /ui/) of the master."""
    app.router.add_get("/livez", livez)
    add_dashboard_routes(app)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/log", log_handler(_master_log))


async def _close_readers(app: web.Application) -> None:
    """Shutting down: long-polls answer now and streams end, instead of holding the shutdown up."""
    if MASTER in app:
        app[MASTER].tail.close()


def _on_death(master: Master, name: str) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            master.task_died(name, task.exception())  # type: ignore[arg-type]

    return done
