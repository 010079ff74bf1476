"""replog: a replicated append-only message log with per-write write concerns.

``import replog`` gives the asyncio client: ``replog.Client``, its ``Producer``, and the typed errors.
"""

__version__ = "0.1.0"

from replog.client import (  # noqa: E402 - after __version__, which the client's modules may read
    Appended,
    AppendedBatch,
    Client,
    Entry,
    NoQuorum,
    NotMaster,
    Producer,
    Rejected,
    ReplogError,
    Unavailable,
    WriteConcernTimeout,
)

__all__ = [
    "Appended",
    "AppendedBatch",
    "Client",
    "Entry",
    "NoQuorum",
    "NotMaster",
    "Producer",
    "Rejected",
    "ReplogError",
    "Unavailable",
    "WriteConcernTimeout",
    "__version__",
]
