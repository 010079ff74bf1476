"""What the client returns: entries of the log, and what a write stored."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple


class Entry(NamedTuple):
    """One entry of the log. A named tuple: follow() makes hundreds of thousands a second."""

    seq: int
    id: str
    text: str

    @classmethod
    def of(cls, d: dict[str, Any]) -> Entry:
        return cls(d["seq"], d["id"], d["text"])


@dataclass(frozen=True, slots=True)
class Appended:
    """A message the master holds: its entry, the w asked for and the acks it had (master included);
    created is False when it was already stored under its id (a retry)."""

    seq: int
    id: str
    text: str
    w: int
    acks: int
    created: bool = True

    @property
    def entry(self) -> Entry:
        return Entry(self.seq, self.id, self.text)


@dataclass(frozen=True, slots=True)
class AppendedBatch:
    """A batch the master holds, as consecutive entries, with the w asked for and the acks it had."""

    entries: list[Entry]
    w: int
    acks: int
    created: bool = True


class Page(list[Entry]):
    """Entries a read returned; last_seq is the highest seq the node showed when it answered."""

    def __init__(self, entries: Iterable[Entry] = (), last_seq: int = 0) -> None:
        super().__init__(entries)
        self.last_seq = last_seq
