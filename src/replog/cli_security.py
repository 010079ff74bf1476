"""The security options of every node role (SPEC "Security"): cluster key, token file, protected mode.

Part of the CLI edge: it reads the environment (REPLOG_CLUSTER_KEY) and turns every bad secret into one
click error line that never quotes the secret.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

KEY_ENV = "REPLOG_CLUSTER_KEY"  # the key itself; an environment variable only, so that `ps` never shows it


def security_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--cluster-key-file, --token-file and --insecure of a node role."""
    opts = [
        click.option(
            "--cluster-key-file",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_CLUSTER_KEY_FILE",
            help=f"File holding the cluster key that every internal call between nodes must present (or give the "
            f"key itself in {KEY_ENV}). Every node of a cluster needs the same key.",
        ),
        click.option(
            "--token-file",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_TOKEN_FILE",
            help="File of `<role> <token>` lines (role read or write) that guard the client API; reloaded on "
            "SIGHUP (default: the client API is open).",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            envvar="REPLOG_INSECURE",
            help="Listen beyond loopback without a cluster key (anyone who reaches the port can then write "
            "into the log); refused otherwise.",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def security_config(kw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Take the security options out of a role's options (kw, which holds its --host); return the config
    fields they make (cluster_key, token_file) and whether the node listens beyond loopback without a key
    (--insecure: it must warn at start). ClickException, one line, for a bad key or token file, or
    for a node that would listen beyond loopback without a key (protected mode)."""
    from replog import auth  # here: it imports aiohttp, which the client commands need not load

    key_file = kw.pop("cluster_key_file")
    token_file = kw.pop("token_file")
    insecure = kw.pop("insecure")
    key_text = os.environ.get(KEY_ENV)
    try:
        if key_file is not None and key_text:
            raise auth.SecretError(f"give the cluster key once: --cluster-key-file or {KEY_ENV}, not both")
        key = auth.read_key_file(key_file) if key_file is not None else None
        if key is None and key_text:
            key = auth.check_key(key_text, KEY_ENV)
        if token_file is not None:
            auth.read_token_file(token_file)  # refuse a bad file now, with its line number
    except auth.SecretError as exc:
        raise click.ClickException(str(exc)) from None
    host = kw["host"]
    if key is None and not auth.is_loopback(host) and not insecure:
        raise click.ClickException(
            f"refusing to listen on {host or 'every interface'} without a cluster key: give --cluster-key-file "
            f"(or {KEY_ENV}), or --insecure to accept that anyone who reaches this port can write into the log"
        )
    return {"cluster_key": key, "token_file": token_file}, key is None and not auth.is_loopback(host)


def warn_insecure(app: Any, host: str, insecure: bool) -> Any:
    """Have app log a warning at start-up (if insecure) that it listens beyond loopback without a cluster key."""
    import structlog

    if not insecure:
        return app

    async def warn(app: Any) -> None:
        structlog.get_logger().warning(
            "insecure",
            host=host,
            detail="listening beyond loopback without a cluster key (--insecure): anyone who reaches this port "
            "can write into the log",
        )

    app.on_startup.append(warn)
    return app
