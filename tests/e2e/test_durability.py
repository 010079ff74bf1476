"""Restarts and durability against real processes, real files and real SIGKILL.

Every node of these clusters keeps its log under the cluster's workdir ("m", "s1", "s2"),
unless a test takes the master's --data-dir away. What is asserted is the spec's
"Restarts and durability": nothing answered 2xx is lost by a crash of any node, a torn
tail is dropped and a corrupt middle refuses to start, a contradicting secondary is
never merged, and a master that lost its log recovers it from the secondaries.
"""

from __future__ import annotations

import http.client
import itertools
import shutil
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from replog.tools.cluster import LocalCluster, Node, http_json, wait_until

HEADER = struct.Struct("<II")  # payload_len, crc32 of the payload: one record of log.dat
PAYLOAD_HEADER = struct.Struct("<QI")  # seq, id_field: the payload's first bytes

# A write whose answer never came whole (connection refused or cut, body cut short): it may be stored.
UNANSWERED = (OSError, http.client.HTTPException, ValueError)


# -- helpers -----------------------------------------------------------------------


def post(node: Node, text: str, w: int, timeout: float | None = None, **fields: Any) -> tuple[int, Any]:
    """POST one message to the master `node`; `timeout` is the write concern's, in the body."""
    body: dict[str, Any] = {"message": text, "w": w, **fields}
    if timeout is not None:
        body["timeout"] = timeout
    return http_json("POST", node.url + "/messages", body, timeout=60)


def post_all(c: LocalCluster, pool, texts: list[str], ws: list[int]) -> list[tuple[int, Any]]:
    """POST every text concurrently, w taken in turn from ws; [(status, body)] in order."""
    futures = [pool.submit(post, c.master, text, w) for text, w in zip(texts, itertools.cycle(ws))]
    return [f.result(timeout=120) for f in futures]


def secondary_view(c: LocalCluster, node: Node) -> dict[str, Any]:
    """The master's /health entry for one secondary."""
    return next(s for s in c.master.health()["secondaries"] if s["url"] == node.url)


def assert_not_counted(c: LocalCluster, diverged: Node, text: str) -> None:
    """A w=3 write is not met while `diverged` is the third node: 504, held by the two others only."""
    status, body = post(c.master, text, 3, timeout=1, id=f"probe-{text}")
    assert (status, body.get("error")) == (504, "write_concern_timeout"), body
    other = next(s for s in c.secondaries if s is not diverged)
    wait_until(lambda: secondary_view(c, other)["seq"] >= body["seq"], 20, what="the other secondary to ack it")
    # Its retry waits for w=3 again, now that the healthy secondary surely holds it: only the diverged one is missing.
    status, body = post(c.master, text, 3, timeout=1, id=f"probe-{text}")
    assert (status, body.get("acks")) == (504, 2), body
    assert secondary_view(c, diverged)["status"] == "diverged"


def writable(node: Node) -> bool:
    try:
        return node.health(timeout=1.0).get("status") == "ok"
    except OSError:
        return False


def record_offsets(path: Path) -> list[int]:
    """Byte offset of every record of a whole (untorn) log.dat."""
    data = path.read_bytes()
    offsets, off = [], 0
    while off < len(data):
        offsets.append(off)
        length, _ = HEADER.unpack_from(data, off)
        off += HEADER.size + length
    assert off == len(data), f"{path} does not end on a record boundary"
    return offsets


def texts_of(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages]


def output_since(node: Node, mark: int) -> str:
    """What the node wrote to its output file past byte `mark`."""
    return node.log_path.read_bytes()[mark:].decode(errors="replace")


class Load:
    """Writer threads posting distinct texts to the master, each thread with its own w, until stopped.

    Every answer is recorded: `acked` (2xx: must survive), `rejected` (503: nothing was
    appended) and `unknown` (no answer, or 504: may or may not be stored). A writer that
    gets no answer or a 503 waits until the master accepts writes again, so that the load
    resumes after a restart instead of burning through its texts against a dead port.
    """

    def __init__(self, master: Node, prefix: str, ws: list[int], most: int = 3000, wait_writable: float = 60.0) -> None:
        self.master = master
        self.texts: list[str] = []  # every text a writer took, answered or not
        self._prefix = prefix
        self._most = most  # a bound on a runaway load, far above what a test waits for
        self._wait_writable = wait_writable
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.acked: dict[str, dict[str, Any]] = {}
        self.rejected: set[str] = set()
        self.unknown: set[str] = set()
        self.problems: list[str] = []
        self._threads = [
            threading.Thread(target=self._run, args=(w,), name=f"writer-{i}-w{w}", daemon=True)
            for i, w in enumerate(ws)
        ]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _next(self) -> str | None:
        with self._lock:
            if len(self.texts) >= self._most:
                return None
            self.texts.append(f"{self._prefix}-{len(self.texts):04d}")
            return self.texts[-1]

    def _run(self, w: int) -> None:
        while not self._stop.is_set() and (text := self._next()) is not None:
            try:
                # The write concern's own timeout bounds a w=3 write stuck on a dead secondary.
                status, body = post(self.master, text, w, timeout=30)
            except UNANSWERED:
                with self._lock:
                    self.unknown.add(text)
                self._await_writable()
                continue
            with self._lock:
                if status in (200, 201) and body.get("text") == text and body.get("acks", 0) >= w:
                    self.acked[text] = body
                elif status == 503:
                    self.rejected.add(text)
                elif status == 504:
                    self.unknown.add(text)
                else:
                    self.problems.append(f"{text} (w={w}): {status} {body}")
            if status == 503:
                self._await_writable()

    def _await_writable(self) -> None:
        deadline = time.monotonic() + self._wait_writable
        while not self._stop.is_set() and not writable(self.master):
            if time.monotonic() > deadline:
                with self._lock:
                    self.problems.append(f"the master did not accept writes again within {self._wait_writable}s")
                self._stop.set()
                return
            time.sleep(0.05)


def assert_nothing_acknowledged_lost(load: Load, final: list[dict[str, Any]]) -> None:
    """Every 2xx is at the seq, with the id, it was answered with; nothing doubled or invented."""
    assert [m["seq"] for m in final] == list(range(1, len(final) + 1)), "seqs 1..n with no gap"
    texts = texts_of(final)
    assert len(set(texts)) == len(texts), "a message appears once"
    assert set(texts) <= set(load.texts), "only the load's messages are in the log"
    by_seq = {m["seq"]: m for m in final}
    lost = [
        (text, body["seq"], by_seq.get(body["seq"]))
        for text, body in load.acked.items()
        if by_seq.get(body["seq"]) != {"seq": body["seq"], "id": body["id"], "text": text}
    ]
    assert not lost, f"{len(lost)} acknowledged writes are not where their answer put them: {lost[:5]}"
    assert not (load.rejected & set(texts)), "a write answered 503 was appended"


# -- 1. SIGKILL of any node under concurrent writes -----------------------------------


@pytest.mark.parametrize("victim", ["master", "s1", "s2", "all"])
def test_sigkill_mid_load_loses_no_acknowledged_write(cluster, victim):
    c = cluster(2, data_dirs=True)
    victims = {"master": [c.master], "s1": c.secondaries[:1], "s2": c.secondaries[1:], "all": c.nodes}[victim]
    load = Load(c.master, victim, ws=[1, 2, 3] * 4).start()
    try:
        wait_until(lambda: len(load.acked) >= 80, 60, what="80 writes answered before the crash")
        for node in victims:
            node.kill()
        if victim in ("s1", "s2"):
            # The master sees it go, and keeps taking w=1 and w=2 writes (w=3 ones wait).
            crashed = victims[0]
            wait_until(lambda: secondary_view(c, crashed)["status"] != "healthy", 20, what="the crash to be seen")
            down = len(load.acked)
            wait_until(lambda: len(load.acked) >= down + 20, 30, what=f"writes answered while {victim} is down")
            crashed.start()
        elif victim == "master":
            c.master.start()
        else:
            c.start()
        back = len(load.acked)
        wait_until(lambda: len(load.acked) >= back + 80, 60, what="80 writes answered after the restart")
    finally:
        load.stop()
    wait_until(lambda: load.done, 60, interval=0.05, what="the writers to finish their last writes")
    assert not load.problems, load.problems

    final = c.wait_converged(timeout=60)
    assert_nothing_acknowledged_lost(load, final)
    for node in c.secondaries:
        assert node.messages() == final
    # Writes continue at the next seq, and every node holds them.
    status, body = post(c.master, f"{victim}-after", 3, timeout=20)
    assert (status, body["seq"]) == (201, len(final) + 1), body
    assert texts_of(c.wait_converged(timeout=30)) == [*texts_of(final), f"{victim}-after"]
    print(f"{len(load.acked)} acked, {len(load.unknown)} unknown, {len(load.rejected)} rejected; log of {len(final)}")


# -- 2. torn tail, corrupt middle --------------------------------------------------------


def test_torn_last_record_is_dropped_on_start_then_refilled(cluster):
    c = cluster(2, data_dirs=True)
    s1 = c.secondaries[0]
    for i in range(10):
        assert post(c.master, f"m{i + 1}", 3)[0] == 201
    want = c.wait_converged()
    assert len(want) == 10
    s1.stop()
    path = c.workdir / "s1" / "log.dat"
    whole = path.read_bytes()
    last = record_offsets(path)[-1]
    # A crash in the middle of writing the last record: its header whole, half its payload.
    torn = last + HEADER.size + (len(whole) - last - HEADER.size) // 2
    with open(path, "r+b") as f:
        f.truncate(torn)

    c.master.pause()  # nothing may refill S1 before we looked at what it loaded
    try:
        s1.start()
        assert s1.messages() == want[:-1], "the torn record is dropped, the nine before it kept"
        assert s1.health()["seq"] == 9
        assert path.stat().st_size == last, "the torn bytes are cut from the file"
    finally:
        c.master.resume()
    wait_until(lambda: s1.messages() == want, 20, what="the master to send S1 the dropped entry again")
    wait_until(lambda: path.read_bytes() == whole, 20, what="S1's file to hold the same records again")


def test_flipped_byte_in_the_middle_is_a_clear_start_up_error(cluster):
    c = cluster(2, data_dirs=True)
    s2 = c.secondaries[1]
    for i in range(10):
        assert post(c.master, f"m{i + 1}", 3)[0] == 201
    c.wait_converged()
    s2.stop()
    path = c.workdir / "s2" / "log.dat"
    bad = record_offsets(path)[4]  # seq 5 of 10: intact records follow it
    data = bytearray(path.read_bytes())
    data[bad + HEADER.size + PAYLOAD_HEADER.size] ^= 0xFF  # the first byte of its text
    path.write_bytes(data)

    mark = s2.log_path.stat().st_size
    s2.start(wait=False)
    assert s2.proc is not None
    code = s2.proc.wait(timeout=20)
    out = output_since(s2, mark)
    assert code != 0, out
    assert "corrupt" in out and str(path) in out and f"byte offset {bad}" in out, out
    assert path.read_bytes() == bytes(data), "a refused start changes nothing on disk"
    # The others go on: S2 being down is a lost secondary, not a lost cluster.
    assert post(c.master, "m11", 2)[0] == 201


# -- 3. another log's data, an empty data dir -------------------------------------------------


def test_secondary_holding_another_log_is_diverged_never_merged_and_reset_rejoins(cluster):
    a = cluster(2, data_dirs=True)
    b = cluster(2, data_dirs=True)
    for i in range(5):
        assert post(a.master, f"a{i + 1}", 3)[0] == 201
    for i in range(8):
        assert post(b.master, f"b{i + 1}", 3)[0] == 201
    a.wait_converged()
    foreign = b.wait_converged()
    b.stop()

    s1 = a.secondaries[0]
    s1.stop()
    shutil.rmtree(a.workdir / "s1")
    shutil.copytree(b.workdir / "s1", a.workdir / "s1")
    s1.start()
    shown = []  # what S1 shows at every poll until the master calls it diverged

    def diverged() -> bool:
        shown.append(s1.messages())
        return secondary_view(a, s1)["status"] == "diverged"

    wait_until(diverged, 20, what="S1 to be reported diverged")
    assert all(messages == foreign for messages in shown), "S1 keeps the other log, untouched"
    diverged = [e for e in a.master.events() if e.get("event") == "secondary_diverged" and e.get("secondary") == s1.url]
    assert diverged, "the master logs the divergence"

    # Not counted: w=2 is met by S2, w=3 cannot be; and S1 takes none of it.
    assert post(a.master, "a6", 2)[0] == 201
    assert_not_counted(a, s1, "a7")
    assert s1.messages() == foreign, "a diverged secondary is never merged"
    assert secondary_view(a, s1)["status"] == "diverged"

    s1.stop()
    s1.start_with(["--reset"])
    want = a.master.messages()
    assert texts_of(want) == [f"a{i + 1}" for i in range(7)]
    wait_until(lambda: s1.messages() == want, 20, what="S1 restarted with --reset to hold the master's log")
    wait_until(lambda: secondary_view(a, s1)["status"] == "healthy", 20, what="S1 to be healthy again")
    status, body = post(a.master, "a8", 3, timeout=20)
    assert (status, body["acks"]) == (201, 3), body


def test_empty_secondary_is_filled_and_keeps_it_on_disk(cluster):
    c = cluster(2, data_dirs=True)
    s2 = c.secondaries[1]
    for i in range(20):
        assert post(c.master, f"m{i + 1}", 3, id=f"key-{i + 1}" if i % 2 else None)[0] == 201
    c.wait_converged()
    s2.stop()
    shutil.rmtree(c.workdir / "s2")  # a lost disk: the node comes back with a fresh data dir
    for i in range(20, 25):
        assert post(c.master, f"m{i + 1}", 2)[0] == 201
    s2.start()
    want = c.master.messages()
    assert len(want) == 25
    wait_until(lambda: s2.messages() == want, 20, what="the empty S2 to be filled")
    wait_until(lambda: s2.health()["seq"] == 25, 20, what="S2 to hold all 25 on disk")

    # What it was sent is on its disk: killed and restarted alone, it shows all of it.
    s2.kill()
    c.master.pause()
    try:
        s2.start()
        assert s2.messages() == want
    finally:
        c.master.resume()


# -- 4. master restarted without its data dir -----------------------------------------------------


def without_data_dir(node: Node) -> None:
    at = node.args.index("--data-dir")
    del node.args[at : at + 2]


def test_master_restarted_without_data_dir_recovers_the_secondaries_log(cluster, pool):
    c = cluster(2, data_dirs=True)
    texts = [f"m{i + 1:03d}" for i in range(100)]
    answers = post_all(c, pool, texts, ws=[2, 3])
    assert all(status == 201 for status, _ in answers), answers
    before = c.wait_converged()
    assert sorted(texts_of(before)) == texts
    log_id = c.master.health()["log"]

    c.master.kill()
    without_data_dir(c.master)  # it comes back with an empty memory and no disk
    c.master.start()
    c.wait_writable()
    health = c.master.health()
    assert health["recovering"] is False
    assert health["seq"] == 100
    assert health["log"] == log_id, "the master adopts the log it recovered, identity included"
    assert c.master.messages() == before, "the same 100 entries: seqs, ids and texts"
    assert any(e.get("event") == "recovering_entries" for e in c.master.events())

    status, body = post(c.master, "m101", 3, timeout=20)
    assert (status, body["seq"]) == (201, 101), body
    assert texts_of(c.wait_converged()) == [*texts_of(before), "m101"]


# -- 5. an unconsulted secondary holding other entries at the same seqs ------------------------------


def test_master_that_lost_its_log_waits_for_the_secondary_holding_more(cluster):
    """An in-memory master restarted while the only secondary holding its last w=2 writes is down
    must not start on the shorter copy (it would reuse their seqs): it waits, then recovers them."""
    c = cluster(2, data_dirs=True, start=False)
    without_data_dir(c.master)  # the master lives in memory; the secondaries on disk
    c.start()
    s1, s2 = c.secondaries
    first = [f"first-{i}" for i in range(1, 11)]
    old = [f"old-{i}" for i in range(11, 16)]
    for text in first:
        assert post(c.master, text, 3)[0] == 201
    c.wait_converged()
    s2.kill()
    for text in old:
        assert post(c.master, text, 2)[0] == 201  # held by the master and S1 only
    s1.kill()
    c.master.kill()  # the master's memory goes: only S1 knows old-11..old-15 now

    s2.start()
    c.master.start()  # S1 is down: S2 alone (10 entries) is no majority of the others
    wait_until(lambda: c.master.health()["recovering"], 10, what="the master to be up and recovering")
    for i in range(3):
        status, body = http_json("POST", c.master.url + "/messages", {"message": f"probe-{i}", "w": 1})
        assert (status, body["error"]) == (503, "no_quorum"), body
    assert c.master.messages() == []

    s1.start()  # holds old-11..old-15 under the same epoch: the most up-to-date
    c.wait_writable()
    assert texts_of(c.master.messages()) == first + old
    status, body = post(c.master, "new-16", 3, timeout=20)
    assert (status, body["seq"], body["acks"]) == (201, 16, 3), body
    final = c.wait_converged()
    assert texts_of(final) == [*first, *old, "new-16"]
    assert s1.messages() == s2.messages() == final


# -- 6. clean restart with either fsync policy ------------------------------------------------


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_clean_stop_and_restart_keeps_every_entry(cluster, pool, fsync):
    c = cluster(2, data_dirs=True, master_args=["--fsync", fsync], secondary_args=["--fsync", fsync])
    answers = post_all(c, pool, [f"m{i + 1:02d}" for i in range(30)], ws=[1, 2, 3])
    assert all(status == 201 for status, _ in answers), answers
    before = c.wait_converged()
    assert len(before) == 30

    c.stop()  # SIGTERM
    assert [n.proc.returncode for n in c.nodes if n.proc is not None] == [0, 0, 0], "a clean stop exits 0"
    # Each node alone, before any other could send it anything: what it shows came from its disk.
    for s in c.secondaries:
        s.start()
        assert s.messages() == before
    c.master.start()
    assert c.master.messages() == before
    c.wait_writable()
    status, body = post(c.master, "m31", 3, timeout=20)
    assert (status, body["seq"]) == (201, 31), body
    assert len(c.wait_converged()) == 31
