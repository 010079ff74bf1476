"""How a failover node reaches etcd: which CA verifies etcd's `https://` URLs, which client certificate it
presents (for etcd's `--client-cert-auth`), and which etcd user it authenticates as.

Python's ssl only. Without --etcd-ca an `https://` etcd is verified against the system's CAs; etcd's CA is
never the one the nodes verify each other with (--tls-ca). The password is held here and handed to the
coordinator; it is never logged nor shown (repr leaves it out).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from replog.coordinator import Coordinator, EtcdAuthError, EtcdError, EtcdTlsError, EtcdUnavailable
from replog.edge import TlsConfigError, load_ca, load_chain


@dataclass(frozen=True)
class EtcdAccess:
    """What a node presents to etcd beyond its URLs (all optional: a plain, open etcd needs none)."""

    ca: str | None = None  # --etcd-ca: the CA file that etcd's certificate must chain to
    cert: str | None = None  # --etcd-cert: the node's client certificate chain (PEM)
    key: str | None = None  # --etcd-key: its private key (PEM)
    user: str | None = None  # --etcd-user
    password: str | None = field(default=None, repr=False)  # --etcd-password-file / REPLOG_ETCD_PASSWORD

    @property
    def tls(self) -> bool:
        """Whether any TLS option is given (then every etcd URL must be https://)."""
        return self.ca is not None or self.cert is not None or self.key is not None


def client_context(access: EtcdAccess) -> ssl.SSLContext | bool:
    """The SSL setting of the node's etcd session: a context that verifies etcd against --etcd-ca and presents
    --etcd-cert, or True (aiohttp's default: the system's CAs) without TLS options. TlsConfigError, naming
    the flag, for a file that is missing, unreadable or does not fit."""
    if not access.tls:
        return True
    if (access.cert is None) != (access.key is None):
        raise TlsConfigError("--etcd-cert and --etcd-key go together: the client certificate and its key")
    ctx = ssl.create_default_context()
    if access.ca is not None:
        load_ca(ctx, access.ca, "--etcd-ca")
    if access.cert is not None:
        load_chain(ctx, access.cert, access.key, "--etcd-cert/--etcd-key")
    return ctx


def session(access: EtcdAccess) -> aiohttp.ClientSession:
    """The one session a node talks to etcd through (TLS as access says)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=client_context(access)))


def coordinator(
    http: aiohttp.ClientSession, endpoints: Sequence[str], cluster: str, access: EtcdAccess, *, timeout: float
) -> Coordinator:
    return Coordinator(http, endpoints, cluster, timeout=timeout, user=access.user, password=access.password)


class AccessRefused(Exception):
    """etcd answers, but not to these credentials or this TLS setting: the node must not start. The message
    is one line naming the flag to fix, and never the password."""


async def check(endpoints: Sequence[str], cluster: str, access: EtcdAccess, *, timeout: float = 2.0) -> str | None:
    """Ask etcd once what a node will ask it all along (a token, its cluster's members). AccessRefused if etcd
    refuses the credentials or the TLS handshake fails; the reason (a line to log) if no endpoint answers
    (etcd may come later: the node keeps trying, as without this check); None when all is well."""
    async with session(access) as http:
        probe = coordinator(http, endpoints, cluster, access, timeout=timeout)
        try:
            await probe.check_access()
        except EtcdTlsError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                ca = access.ca or "not given, so the system's CAs"
                raise AccessRefused(f"etcd's certificate does not verify against --etcd-ca ({ca}): {exc}") from None
            flags = "--etcd-cert/--etcd-key (etcd may require a client certificate its CA signed)"
            raise AccessRefused(f"etcd refused the TLS handshake, check {flags}: {exc}") from None
        except EtcdAuthError as exc:
            raise AccessRefused(_auth_refusal(str(exc), access, cluster)) from None
        except (EtcdUnavailable, EtcdError) as exc:
            # No endpoint answered, or one answered what no etcd would (a 404, say: not an etcd, or not yet):
            # the node starts and keeps trying, as without this check, and says why in its log.
            return str(exc)
    return None


def _auth_refusal(reason: str, access: EtcdAccess, cluster: str) -> str:
    if access.user is None:
        return f"etcd requires authentication: give --etcd-user and --etcd-password-file ({reason})"
    if "not enabled" in reason:
        return f"--etcd-user {access.user} given, but {reason}"
    if "permission denied" in reason:
        return (
            f"--etcd-user {access.user} may not read and write /replog/{cluster}/ in etcd: grant its role readwrite "
            f"on the /replog/ prefix ({reason})"
        )
    return f"etcd refused --etcd-user {access.user} with the password given (--etcd-password-file or REPLOG_ETCD_PASSWORD): {reason}"
