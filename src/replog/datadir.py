"""Opening a node's log: from its data dir (locked, loaded, checked) or new in memory. One place for both roles."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from replog.log import Log
from replog.storage import DiskLog, Meta


@dataclass
class Opened:
    """A node's log as it starts, and what its data dir said of it."""

    log: Log
    meta: Meta  # promise, log epoch and identity as saved (all zero/None without a data dir)
    disk: DiskLog | None  # the open, locked data dir; None in memory
    had_log: bool  # the data dir held a log identity: the node did not lose its log


def open_log(data_dir: str | None, *, fsync: bool = True, reset: bool = False) -> Opened:
    """Open the node's log. With a data dir: lock it (DataDirLocked if another process holds
    it), optionally reset it, load it (CorruptLogError names file and offset)."""
    log = Log(uuid.uuid4().hex)
    if data_dir is None:
        return Opened(log, Meta(), None, False)
    disk = DiskLog(data_dir, fsync=fsync)
    try:
        disk.lock()
        if reset:
            disk.reset()
        loaded = disk.load()
    except BaseException:
        disk.close()
        raise
    if loaded.meta.log_id is not None:
        log.adopt(loaded.meta.log_id)
    log.extend_hashed([(r.id, r.text, r.flags, r.hash) for r in loaded.entries])
    return Opened(log, loaded.meta, disk, loaded.meta.log_id is not None)
