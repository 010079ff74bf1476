"""The asyncio client of replog, which the `replog` command itself uses.

async with replog.Client("http://127.0.0.1:8000") as log:
    stored = await log.append("hello", w=2)
    async with log.producer(w=3) as p:
        await asyncio.gather(*(p.append(f"m{i}") for i in range(1000)))
    async for entry in log.follow(since=0):
        print(entry.seq, entry.text)
"""

from replog.client.api import Client, normalize_url
from replog.client.errors import (
    NoQuorum,
    NotMaster,
    Rejected,
    ReplogError,
    Unavailable,
    WriteConcernTimeout,
)
from replog.client.producer import Producer
from replog.client.types import Appended, AppendedBatch, Entry, Page

__all__ = [
    "Appended",
    "AppendedBatch",
    "Client",
    "Entry",
    "NoQuorum",
    "NotMaster",
    "Page",
    "Producer",
    "Rejected",
    "ReplogError",
    "Unavailable",
    "WriteConcernTimeout",
    "normalize_url",
]
