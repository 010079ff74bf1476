"""`replog node`'s options for reaching etcd securely: TLS (--etcd-ca, --etcd-cert, --etcd-key) and etcd's
authentication (--etcd-user, --etcd-password-file or REPLOG_ETCD_PASSWORD).

Part of the CLI edge: it reads the environment and turns a bad file, a refused password or a certificate
etcd's does not verify against into one click error line that never quotes the password.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

PASSWORD_ENV = "REPLOG_ETCD_PASSWORD"  # the password itself; an environment variable only, so `ps` never shows it


def etcd_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--etcd-ca, --etcd-cert, --etcd-key, --etcd-user and --etcd-password-file."""
    opts = [
        click.option(
            "--etcd-ca",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_ETCD_CA",
            help="CA file that etcd's certificate must chain to (https:// etcd URLs; default: the system's CAs).",
        ),
        click.option(
            "--etcd-cert",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_ETCD_CERT",
            help="Client certificate (PEM) presented to etcd, for an etcd run with --client-cert-auth.",
        ),
        click.option(
            "--etcd-key",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_ETCD_KEY",
            help="The private key (PEM) of --etcd-cert.",
        ),
        click.option(
            "--etcd-user",
            metavar="NAME",
            default=None,
            envvar="REPLOG_ETCD_USER",
            help="etcd user to authenticate as (etcd's auth enabled); it needs readwrite on the /replog/ prefix.",
        ),
        click.option(
            "--etcd-password-file",
            type=click.Path(dir_okay=False),
            default=None,
            envvar="REPLOG_ETCD_PASSWORD_FILE",
            help=f"File holding the password of --etcd-user (or give the password itself in {PASSWORD_ENV}).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _password(path: str | None) -> str | None:
    """The password from its file (its final line break dropped) or REPLOG_ETCD_PASSWORD; None without either."""
    env = os.environ.get(PASSWORD_ENV)
    if path is not None and env:
        raise click.ClickException(f"give the etcd password once: --etcd-password-file or {PASSWORD_ENV}, not both")
    if path is None:
        return env or None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise click.ClickException(f"cannot read --etcd-password-file {path}: {reason}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise click.ClickException(f"--etcd-password-file {path} is empty")
    return password


def etcd_access_config(kw: dict[str, Any], etcd: Sequence[str]) -> Any:
    """Take the etcd options out of a node's options; the EtcdAccess they make. ClickException, one line, for
    a user without a password (or the reverse), TLS options with an http:// etcd URL, or a bad TLS file."""
    from replog.edge import TlsConfigError
    from replog.etcd_access import EtcdAccess, client_context

    user = kw.pop("etcd_user")
    password = _password(kw.pop("etcd_password_file"))
    access = EtcdAccess(kw.pop("etcd_ca"), kw.pop("etcd_cert"), kw.pop("etcd_key"), user, password)
    if user is not None and password is None:
        raise click.BadParameter(f"needs a password: --etcd-password-file or {PASSWORD_ENV}", param_hint="--etcd-user")
    if user is None and password is not None:
        raise click.BadParameter("an etcd password needs --etcd-user", param_hint="--etcd-password-file")
    plain = [url for url in etcd if not url.startswith("https://")]
    if access.tls and plain:
        raise click.BadParameter(
            f"--etcd-ca/--etcd-cert/--etcd-key apply to https:// etcd URLs, not {plain[0]}", param_hint="--etcd"
        )
    try:
        client_context(access)
    except TlsConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return access


def check_etcd_access(etcd: Sequence[str], cluster: str, access: Any) -> str | None:
    """Ask etcd once, before the node starts, whether it takes these credentials and this TLS setting:
    ClickException (one line naming the flag) if not; the reason if etcd does not answer (the node then
    starts and keeps trying, as it always has)."""
    from replog.etcd_access import AccessRefused, check

    async def bounded() -> str | None:
        try:
            return await asyncio.wait_for(check(etcd, cluster, access, timeout=1.0), 3.0)
        except TimeoutError:
            return "etcd did not answer within 3 s"

    try:
        return asyncio.run(bounded())
    except AccessRefused as exc:
        raise click.ClickException(str(exc)) from None
