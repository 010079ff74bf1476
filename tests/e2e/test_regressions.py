"""Regression tests of issue 8's defects 1, 2, 3, 4, 6, 7 and 11, on real `replog` processes.

Each test replays one reported defect with signals, proxies, a full tmpfs or a clean restart, and
asserts what the SPEC promises ("Restarts and durability", "Epochs and fencing", the client API):
only HTTP answers of the client API, the /health fields the SPEC names, and the JSON log lines a
node writes. Nothing here reads a node's internals or the wire format between nodes, so the tests
hold across a rewrite of the protocol.

Some checks are of the form "for this long, never": a master that must stay read-only is probed
for a window of many heartbeat intervals. The window is not a wait for something to happen (that
is always a deadline on a condition); it is how long a negative claim is observed.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import aiohttp
import pytest
from aiohttp import web

from replog.tools.cluster import ClusterError, LocalCluster, Node, http_json, wait_until

try:
    from tests.chaos.proxy import Mode, Proxy
except ImportError:  # pytest put tests/e2e rather than the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from chaos.proxy import Mode, Proxy  # type: ignore[no-redef]

HEARTBEAT = 0.2  # the e2e clusters' --heartbeat-interval
READ_ONLY_WINDOW = 3.0  # seconds (15 heartbeats) a master that must stay read-only is probed
# Refused, cut or timed out (socket.timeout is an OSError), or a body cut short.
NO_ANSWER = (OSError, ValueError, http.client.HTTPException)


# -- helpers -----------------------------------------------------------------------------------------


def post(node: Node, body: dict[str, Any], http_timeout: float = 30.0) -> tuple[int, Any]:
    """POST a raw body to a master's /messages: (status, decoded body)."""
    return http_json("POST", node.url + "/messages", body, timeout=http_timeout)


def writable(node: Node) -> bool:
    try:
        return node.health(timeout=1.0).get("status") == "ok"
    except OSError:
        return False


def wait_writable(node: Node, timeout: float = 30.0) -> None:
    wait_until(lambda: writable(node), timeout, what=f"the master {node.url} to accept writes")


def eventually(cond: Callable[[], Any], timeout: float, what: str, state: Callable[[], Any] = lambda: "") -> Any:
    """wait_until, but a missed deadline is a test failure that says what was seen last."""
    try:
        return wait_until(cond, timeout, interval=0.05, what=what)
    except ClusterError as exc:
        missed = str(exc)
    pytest.fail(f"{missed}; last seen: {state()}", pytrace=False)


def stays_read_only(master: Node, prefix: str, window: float = READ_ONLY_WINDOW) -> list[tuple[int, Any]]:
    """Probe the master with w=2 writes for `window` seconds: every answer must be 503 no_quorum.

    Returns the answers. A probe asks a short write-concern timeout, so that a master that wrongly
    appends it answers 504 at once rather than holding the probe.
    """
    answers: list[tuple[int, Any]] = []
    deadline = time.monotonic() + window
    i = 0
    while time.monotonic() < deadline:
        i += 1
        status, body = post(master, {"message": f"{prefix}-{i}", "w": 2, "timeout": 2}, http_timeout=15)
        answers.append((status, body))
        assert (status, body.get("error") if isinstance(body, dict) else body) == (503, "no_quorum"), (
            f"probe {prefix}-{i}, sent while the master must be read-only, answered {status} {body}"
        )
        time.sleep(HEARTBEAT)  # pacing of the probes, not a wait for anything
    return answers


def converged(nodes: list[Node], timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until every node in `nodes` shows the same list as the first one; return it."""
    last: list[Any] = []

    def same() -> list[dict[str, Any]] | None:
        lists = [n.messages() for n in nodes]
        last[:] = lists
        return (lists[0] or [{}]) if all(x == lists[0] for x in lists) else None

    return eventually(same, timeout, "every node to show the same list", lambda: last)


def assert_one_entry_per_seq(nodes: list[Node]) -> None:
    """No seq holds two different entries across the nodes (SPEC: nodes never disagree at a seq)."""
    seen: dict[int, dict[tuple[str, str], list[str]]] = {}
    for node in nodes:
        for m in node.messages():
            seen.setdefault(m["seq"], {}).setdefault((m["id"], m["text"]), []).append(node.url)
    clashes = {seq: held for seq, held in seen.items() if len(held) > 1}
    assert not clashes, f"seqs holding different entries on different nodes: {clashes}"


def assert_acked_present(final: list[dict[str, Any]], acked: dict[str, dict[str, Any]]) -> None:
    """Every 2xx write is in `final` once, at the seq and with the id its answer gave."""
    texts = [m["text"] for m in final]
    by_seq = {m["seq"]: m for m in final}
    wrong = {
        text: (body["seq"], by_seq.get(body["seq"]))
        for text, body in acked.items()
        if texts.count(text) != 1 or by_seq.get(body["seq"]) != {"seq": body["seq"], "id": body["id"], "text": text}
    }
    assert not wrong, f"acknowledged writes missing, doubled or moved (text: (answered seq, entry there)): {wrong}"


def error_events(node: Node, since: int) -> list[dict[str, Any]]:
    return [e for e in node.events()[since:] if e.get("level") in ("error", "critical")]


def status_of(master: Node, url: str) -> str | None:
    return next((s["status"] for s in master.health()["secondaries"] if s["url"] == url), None)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted at the end. Ask for it before `cluster`, so that nodes stop first."""
    path = tmp_path / "tiny"
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)]
    done = subprocess.run(mount, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


# -- defect 1: a master that lost its log counts itself -------------------------------------------------


def _lose_the_master_with_w2_writes_on_s1_only(
    c: LocalCluster, before_b: Callable[[], None] = lambda: None
) -> dict[str, dict[str, Any]]:
    """a1..a3 at w=3; S2 stopped; b4, b5 at w=2 (held by the master and S1); then S1 stopped,
    S2 continued, the master killed. Returns the 201 answers of b4 and b5 by text."""
    s1, s2 = c.secondaries
    for text in ("a1", "a2", "a3"):
        assert post(c.master, {"message": text, "w": 3, "timeout": 20})[0] == 201
    before_b()
    s2.pause()
    acked = {}
    for text in ("b4", "b5"):
        status, body = post(c.master, {"message": text, "w": 2, "timeout": 20})
        assert (status, body["seq"], body["acks"]) == (201, int(text[1]), 2), body
        acked[text] = body
    s1.pause()
    s2.resume()
    c.master.kill()
    return acked


def _master_recovers_b4_b5_from_s1(c: LocalCluster, acked: dict[str, dict[str, Any]]) -> None:
    s1 = c.secondaries[0]
    # While S1 is stopped, only S2 (a1..a3) answers: not a majority of the nodes other than the master.
    stays_read_only(c.master, "c-probe")
    shown = [m["text"] for m in c.master.messages()]
    assert shown == ["a1", "a2", "a3", "b4", "b5"][: len(shown)], f"the read-only master shows {shown}"

    s1.resume()
    wait_writable(c.master)
    got = c.master.messages()
    assert [(m["seq"], m["text"]) for m in got] == [(1, "a1"), (2, "a2"), (3, "a3"), (4, "b4"), (5, "b5")], got
    assert_acked_present(got, acked)

    b5 = acked["b5"]
    status, body = post(c.master, {"message": "b5", "id": b5["id"], "w": 2, "timeout": 20})
    assert (status, body.get("seq"), body.get("id")) == (200, 5, b5["id"]), f"retry of b5: {status} {body}"
    status, body = post(c.master, {"message": "c6", "w": 2, "timeout": 20})
    assert (status, body.get("seq")) == (201, 6), f"the first new write: {status} {body}"

    final = converged(c.nodes)
    assert [m["text"] for m in final] == ["a1", "a2", "a3", "b4", "b5", "c6"]
    assert_one_entry_per_seq(c.nodes)


def test_master_that_lost_its_log_waits_for_a_majority_of_the_others_and_keeps_w2_writes(cluster):
    c = cluster(2)
    acked = _lose_the_master_with_w2_writes_on_s1_only(c)
    c.master.start()  # in memory: it lost a1..a3, b4, b5
    _master_recovers_b4_b5_from_s1(c, acked)


def test_master_restarted_on_an_older_copy_of_its_data_dir_keeps_w2_writes(cluster, tmp_path):
    home, old = tmp_path / "m", tmp_path / "m-old"
    c = cluster(2, master_args=["--data-dir", str(home)])

    def copy_then_restart() -> None:
        # The copy is of a stopped master; the restart after it takes a new epoch, so the copy's saved
        # epoch is below what the secondaries report once b4 and b5 are written.
        c.master.stop()
        shutil.copytree(home, old)
        c.master.start()
        wait_writable(c.master)

    acked = _lose_the_master_with_w2_writes_on_s1_only(c, before_b=copy_then_restart)
    shutil.rmtree(home)
    shutil.copytree(old, home)  # the master comes back on a log that ends at a3
    c.master.start()
    _master_recovers_b4_b5_from_s1(c, acked)


# -- defect 2: split brain ----------------------------------------------------------------------------


def test_second_master_is_fenced_and_only_one_master_takes_writes(cluster):
    c = cluster(2, start=False)
    s1, s2 = c.secondaries
    with Proxy(s2.port) as m1_to_s2, Proxy(s1.port) as m2_to_s1:
        c.route_secondary(1, m1_to_s2.url)  # M1 reaches S1 directly, S2 through a proxy
        c.start()
        m1 = c.master
        m2 = cluster.node(
            "master", ["--secondary", m2_to_s1.url, "--secondary", s2.url, "--heartbeat-interval", str(HEARTBEAT)]
        )
        acked: dict[str, dict[str, Any]] = {}  # text -> 2xx answer, from either master
        for text in ("x1", "x2", "x3"):
            status, body = post(m1, {"message": text, "w": 3, "timeout": 20})
            assert status == 201, body
            acked[text] = body

        m1_to_s2.set_mode(Mode.RESET)  # M1 reaches S1 only ...
        m2_to_s1.set_mode(Mode.RESET)  # ... and M2, once started, S2 only
        m2.start()  # in memory
        stays_read_only(m2, "m2-probe")
        for text in ("y1", "y2"):  # M1 with S1 is still a majority, and the only master taking writes
            status, body = post(m1, {"message": text, "w": 2, "timeout": 5})
            if status in (200, 201):
                acked[text] = body

        m1_to_s2.heal()
        m2_to_s1.heal()
        wait_writable(m2)  # M2 has taken over; from here on M1 must take nothing
        for text in ("z1", "z2", "z3"):
            status, body = post(m2, {"message": text, "w": 2, "timeout": 20})
            assert status == 201, f"the new master M2 refused {text}: {status} {body}"
            acked[text] = body

        answers: list[tuple[int, Any]] = []

        def m1_refuses() -> bool:
            status, body = post(m1, {"message": f"m1-late-{len(answers)}", "w": 2, "timeout": 5})
            answers.append((status, body))
            assert status not in (200, 201), f"the deposed M1 acknowledged a write after M2 took over: {body}"
            return status == 503 and body.get("error") == "not_master"

        eventually(m1_refuses, 20, "M1 to refuse writes with 503 not_master", lambda: answers[-3:])

        # The deposed M1 may hold unacknowledged entries of its own; the nodes of the new master agree.
        final = converged([m2, s1, s2])
        assert_acked_present(final, acked)
        assert_one_entry_per_seq([m2, s1, s2])


# -- defect 3: a client batch recovered in part ----------------------------------------------------------


def test_client_batch_is_recovered_whole_or_not_at_all(cluster, pool):
    delay = 0.5
    c = cluster(2, delays=[delay, delay], master_args=["--batch-max-count", "2"])
    batch = {"messages": ["o1", "o2", "o3", "o4"], "id": "order-7", "w": 3}
    posted = pool.submit(post, c.master, batch, 60)
    t0 = time.monotonic()

    def mid_replication() -> bool:
        # The crash point: a secondary shows part of the batch (the defect), or the first replication
        # request is stored and the second is still in flight. Any crash point must keep the batch whole.
        if time.monotonic() - t0 >= 1.5 * delay:
            return True
        return any(s.health().get("seq", 0) >= 2 for s in c.secondaries)

    wait_until(mid_replication, 10, what="the batch to be part-way through replication")
    c.master.kill()
    try:
        posted.result(timeout=30)  # the client saw the connection go: it will retry
    except NO_ANSWER:
        pass
    c.master.start()  # in memory: what it has comes from the secondaries
    wait_writable(c.master)

    held = [(m["seq"], m["id"], m["text"]) for m in c.master.messages() if m["id"].startswith("order-7:")]
    assert len(held) in (0, 4), f"the batch came back in part: {held}"

    status, body = post(c.master, {**batch, "timeout": 30})
    assert status in (200, 201), f"retrying the batch: {status} {body}"
    entries = body["entries"]
    assert [(e["id"], e["text"]) for e in entries] == [(f"order-7:{i}", t) for i, t in enumerate(batch["messages"])]
    assert [e["seq"] for e in entries] == list(range(entries[0]["seq"], entries[0]["seq"] + 4))
    final = converged(c.nodes)
    assert [m["text"] for m in final].count("o1") == 1 and len(final) == 4, final
    assert_one_entry_per_seq(c.nodes)


# -- defect 4: a full master disk --------------------------------------------------------------------------


def test_full_master_disk_answers_503_disk_failed_and_loses_no_acknowledged_write(tiny_disk, cluster, tmp_path):
    c = cluster(2, master_args=["--data-dir", str(tiny_disk)])
    acked: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    pad = "x" * 4000  # 64 of these fill 256 KiB
    for i in range(200):
        text = f"m{i:03d}-{pad}"
        try:
            # No write-concern timeout: a write the disk cannot take must still be answered.
            status, body = post(c.master, {"message": text, "w": 2}, http_timeout=15)
        except NO_ANSWER as exc:
            free = shutil.disk_usage(tiny_disk).free
            pytest.fail(f"write {i} ({free} bytes free on the disk) got no answer in 15 s: {exc!r}")
        if status == 201:
            acked[text] = body
            continue
        assert (status, body.get("error")) == (503, "disk_failed"), f"write {i} on a full disk: {status} {body}"
        refused.append(text)
        break
    assert refused, "256 KiB never filled up"
    assert acked, "nothing was written before the disk filled up"
    for i in range(3):  # later writes are refused at once, too
        text = f"late{i}-{pad}"
        status, body = post(c.master, {"message": text, "w": 2}, http_timeout=15)
        assert (status, body.get("error")) == (503, "disk_failed"), f"{status} {body}"
        refused.append(text)
    health = c.master.health()
    assert health["status"] != "ok" and "disk_failed" in json.dumps(health), health
    for node in c.nodes:  # a write answered 503 is shown as stored by no node
        shown = {m["text"] for m in node.messages()}
        assert not shown & set(refused), f"{node.url} shows writes answered 503 disk_failed"

    c.master.kill()
    bigger = tmp_path / "m-bigger"
    shutil.copytree(tiny_disk, bigger)
    at = c.master.args.index("--data-dir")
    c.master.args[at + 1] = str(bigger)
    c.master.start()
    wait_writable(c.master)
    final = converged(c.nodes)
    assert [m["seq"] for m in final] == list(range(1, len(final) + 1))
    assert_acked_present(final, acked)
    assert_one_entry_per_seq(c.nodes)
    status, body = post(c.master, {"message": "after", "w": 3, "timeout": 20})
    assert (status, body.get("seq")) == (201, len(final) + 1), body


# -- defect 6: the id "<log prefix>-0" --------------------------------------------------------------------


@pytest.mark.parametrize("log", ["empty", "non_empty"])
def test_generated_form_id_with_seq_0_is_reserved(cluster, log):
    c = cluster(2)
    prefix = c.master.health()["log"][:8]
    if log == "non_empty":
        for text in ("a", "b", "x"):  # the last entry has a generated id and the text "x"
            status, body = post(c.master, {"message": text, "w": 3, "timeout": 20})
            assert status == 201, body
        prefix = body["id"].rsplit("-", 1)[0]
    before = c.master.messages()
    status, body = post(c.master, {"message": "x", "id": f"{prefix}-0", "w": 3, "timeout": 5})
    assert (status, body.get("error") if isinstance(body, dict) else body) == (400, "reserved_id"), (
        f"{log} log: {status} {body}"
    )
    assert c.master.messages() == before, "a refused write appends nothing"


# -- defect 7: idempotency answers across a clean restart --------------------------------------------------


def restart_cleanly(c: LocalCluster) -> None:
    c.master.stop()  # SIGTERM
    c.master.start()
    wait_writable(c.master)


def test_batch_retry_answers_200_with_the_same_entries_before_and_after_a_clean_restart(cluster):
    c = cluster(2, data_dirs=True)
    batch = {"messages": ["b0", "b1"], "id": "B", "w": 3, "timeout": 20}
    status, first = post(c.master, batch)
    assert status == 201, first
    # A single write whose id happens to look like a third entry of B: a different id, a new write.
    status, body = post(c.master, {"message": "b2", "id": "B:2", "w": 3, "timeout": 20})
    assert status == 201, body
    status, body = post(c.master, batch)
    assert (status, body.get("entries")) == (200, first["entries"]), f"retry before the restart: {status} {body}"
    restart_cleanly(c)
    status, body = post(c.master, batch)
    assert (status, body.get("entries")) == (200, first["entries"]), f"retry after the restart: {status} {body}"


def test_single_id_j_is_new_after_a_restart_when_only_j0_is_stored(cluster):
    c = cluster(2, data_dirs=True)
    status, body = post(c.master, {"message": "first", "id": "j:0", "w": 3, "timeout": 20})
    assert status == 201, body
    restart_cleanly(c)
    status, body = post(c.master, {"message": "second", "id": "j", "w": 3, "timeout": 20})
    assert (status, body.get("seq"), body.get("id")) == (201, 2, "j"), f"a new id after the restart: {status} {body}"


def test_batch_never_sent_is_409_after_a_restart_not_glued_from_a_batch_and_a_single(cluster):
    c = cluster(2, data_dirs=True)
    status, body = post(c.master, {"messages": ["k0", "k1"], "id": "k", "w": 3, "timeout": 20})
    assert status == 201, body
    status, body = post(c.master, {"message": "k2", "id": "k:2", "w": 3, "timeout": 20})
    assert status == 201, body
    three = {"messages": ["k0", "k1", "k2"], "id": "k", "w": 3, "timeout": 20}
    status, body = post(c.master, three)
    assert (status, body.get("error")) == (409, "id_conflict"), f"before the restart: {status} {body}"
    restart_cleanly(c)
    status, body = post(c.master, three)
    assert (status, body.get("error")) == (409, "id_conflict"), f"after the restart: {status} {body}"
    assert len(c.master.messages()) == 3


# -- defect 11: a dead background task leaves a node that looks up but does nothing -------------------------


class CorruptEntriesProxy:
    """An HTTP proxy in front of a real secondary that forwards everything unchanged, except that it
    replaces the first item of every non-empty "entries" list a GET /entries answers with a malformed one.

    It stands for a donor whose log is corrupt, whatever the rest of the protocol looks like; `mangled`
    counts the answers it spoiled, so a test can tell the master did ask for entries through it.
    """

    HOP: ClassVar[set[str]] = {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "content-encoding",
    }

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = 0
        self.mangled = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="corrupt-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP}
        try:
            async with self._session.request(
                request.method, self.upstream + request.rel_url.path_qs, data=body or None, headers=headers
            ) as resp:
                payload, status = await resp.read(), resp.status
                out = {k: v for k, v in resp.headers.items() if k.lower() not in self.HOP}
        except (TimeoutError, aiohttp.ClientError, OSError):
            return web.Response(status=502, text='{"error": "bad_gateway", "detail": "upstream down"}')
        if request.path == "/entries" and status == 200:
            payload = self._mangle(payload)
        return web.Response(status=status, body=payload, headers=out)

    def _mangle(self, payload: bytes) -> bytes:
        try:
            data = json.loads(payload)
        except ValueError:
            return payload
        if isinstance(data, dict) and isinstance(data.get("entries"), list) and data["entries"]:
            data["entries"][0] = {"malformed": True}
            self.mangled += 1
            return json.dumps(data).encode()
        return payload


def test_corrupt_recovery_donor_is_logged_loudly_and_the_master_takes_no_writes(cluster):
    c = cluster(2, start=False)
    s1 = c.secondaries[0]
    with CorruptEntriesProxy(s1.url) as proxy:
        c.route_secondary(0, proxy.url)  # S1, the donor-to-be, is reached through the proxy
        c.start()
        _lose_the_master_with_w2_writes_on_s1_only(c)  # S1 holds 5 entries, S2 3
        s1.resume()  # both answer at the restart: S1, the most advanced, is the donor
        mark = len(c.master.events())
        c.master.start()  # in memory: it must recover b4 and b5 from S1, which sends a malformed entry

        seen: list[Any] = []

        def loud_and_read_only() -> list[dict[str, Any]]:
            status, body = post(c.master, {"message": f"probe-{len(seen)}", "w": 1, "timeout": 2}, http_timeout=15)
            health = c.master.health()
            seen.append((status, body, health.get("status")))
            assert proxy.mangled or status not in (200, 201), "the master never asked S1 for entries: no corrupt donor"
            assert status not in (200, 201), f"the master took a write while recovering from a corrupt donor: {body}"
            assert health.get("status") != "ok", f"/health says ok while recovery failed: {health}"
            words = ("recover", "entr", "donor", "malformed", "invalid", "corrupt", proxy.url)
            return [e for e in error_events(c.master, mark) if any(w in json.dumps(e).lower() for w in words)]

        eventually(
            loud_and_read_only,
            10,
            "an error or critical event in the master's log about its recovery",
            lambda: f"{proxy.mangled} /entries answers spoiled; last probes {seen[-2:]}",
        )
        assert proxy.mangled, "the master never fetched entries from S1: the scenario did not happen"
        deadline = time.monotonic() + 2 * HEARTBEAT * 5
        while time.monotonic() < deadline:  # and it stays read-only after saying so
            loud_and_read_only()
            time.sleep(HEARTBEAT)


def test_secondary_whose_disk_failed_does_not_count_toward_quorum(tiny_disk, cluster):
    c = cluster(2, start=False)
    s1, s2 = c.secondaries
    s1.args += ["--data-dir", str(tiny_disk)]
    c.start()
    pad = "y" * 4000
    for i in range(100):  # 400 KiB: more than S1's 256 KiB disk can take
        status, body = post(c.master, {"message": f"m{i:03d}-{pad}", "w": 2, "timeout": 20})
        assert status == 201, f"write {i}: {status} {body}"

    eventually(
        lambda: status_of(c.master, s1.url) not in ("healthy", "suspected"),
        10 * HEARTBEAT * 5,
        "S1, whose disk is full, to be shown neither healthy nor suspected",
        lambda: (status_of(c.master, s1.url), shutil.disk_usage(tiny_disk).free),
    )
    # Not counted: with S2 gone too, the master alone is no majority.
    s2.pause()
    eventually(lambda: status_of(c.master, s2.url) == "unhealthy", 10, "the stopped S2 to be unhealthy")
    status, body = post(c.master, {"message": "alone", "w": 1, "timeout": 2})
    assert (status, body.get("error")) == (503, "no_quorum"), f"S1 (disk failed) still counts: {status} {body}"
