"""Reproduction of two open bugs the chaos soak found: `python -m tests.chaos.repro_master_crash`.

1. A master with a data dir shows entries on GET /messages before they are durable; killed
   before its fsync, it restarts without them and gives their seqs to other messages, so a
   reader saw two different entries at one seq (the soak's seed 105: "seq-conflict").
2. A batch torn by the crash survives in part (a prefix of its entries, never acknowledged),
   so the batch is not all or nothing, and its idempotent retry is refused 409 id_conflict.

The secondaries are paused (SIGSTOP) so that nothing is replicated; a 50 MiB batch keeps the
master's group commit busy long enough to read the batch and SIGKILL the master before its fsync.
Either outcome shows in a run or two (which one depends on how much of the batch hit the disk).
"""

from __future__ import annotations

import threading
from typing import Any

from replog.tools.cluster import LocalCluster, http_json


def short(text: str) -> str:
    return text if len(text) < 20 else text[:4] + "..." + text[-6:]


def main() -> None:
    with LocalCluster(2, data_dirs=True, heartbeat_interval=1.0) as c:
        assert c.post("before", w=3)[0] == 201
        for s in c.secondaries:
            s.pause()
        answer: dict[str, Any] = {}
        big = ["x" * (1 << 19) + f"-{i}" for i in range(100)]
        writer = threading.Thread(
            target=lambda: answer.update(r=c.post(messages=big, w=1, id="batch-1", timeout=60)), daemon=True
        )
        writer.start()
        seen = None
        while seen is None:
            _, body = http_json("GET", c.master.url + "/messages?since=1&limit=1")
            seen = body["messages"][0] if body["messages"] else None
        c.master.kill()
        writer.join(5)
        print(
            f"1. master showed seq {seen['seq']} = {short(seen['text'])}; the batch's answer: {answer['r'][0] if 'r' in answer else 'none'}"
        )
        for s in c.secondaries:
            s.resume()
        c.master.start()
        c.wait_writable()
        kept = [m for m in c.master.messages() if m["text"] != "before"]
        print(f"2. after the restart the master holds {len(kept)} of the batch's 100 entries")
        status, body = c.post("after-restart", w=1)
        print(f"3. a new write got {status} seq {body.get('seq')}")
        now = c.master.messages()[seen["seq"] - 1]
        verdict = "REUSED" if now["text"] != seen["text"] else "same"
        print(f"4. seq {seen['seq']} was {short(seen['text'])} and is now {short(now['text'])}: {verdict}")
        status, body = c.post(messages=big, w=1, id="batch-1", timeout=10)
        print(
            f"5. the batch retried with its id: {status} {body.get('error', '')} {body.get('detail', '') if status >= 300 else ''}"
        )


if __name__ == "__main__":
    main()
