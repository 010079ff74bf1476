"""The dashboard at GET /, in a real headless Chromium against a real cluster (a master and two secondaries).

What a person at the page sees: the three nodes with their statuses; an append made with the form lands in
the master's log and in the page's tail; a secondary killed with SIGKILL turns suspected/unhealthy within
the heartbeat window and healthy again after its restart; the charts draw their series. Every wait is on a
condition with a deadline (WebDriverWait).
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from replog.tools.cluster import LocalCluster, http_json

HEARTBEAT = 0.2  # seconds: suspected after 2 missed heartbeats, unhealthy after 5 (the master's defaults)
PAGE_POLL = 1.0  # the page reads /health every second


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(2, heartbeat_interval=HEARTBEAT, workdir=tmp_path_factory.mktemp("dashboard"))
    try:
        c.start()
        c.wait_healthy()
        yield c
    finally:
        c.stop()


def wait(driver: Any, cond: Any, timeout: float, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond(d), message=f"waiting for {what}")


def open_page(driver: Any, url: str) -> None:
    driver.get(url + "/")
    wait(
        driver,
        lambda d: d.execute_script("return document.body.dataset.ready === 'true'"),
        10,
        "the page's first /health",
    )


def open_page_unready(driver: Any, url: str) -> None:
    """Open the page without waiting for its first /health (which a guarded node refuses without a token)."""
    driver.get(url + "/")
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete", 10, "the page to load")


def statuses(driver: Any) -> dict[str, str]:
    """{node URL: status} as the page's nodes table shows them."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#nodes tbody tr[data-node]')]"
        ".map(tr => [tr.dataset.node, tr.querySelector('.status').dataset.status]))"
    )


def tail(driver: Any) -> dict[int, str]:
    """{seq: text} of the page's log tail."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#tail li[data-seq]')]"
        ".map(li => [Number(li.dataset.seq), li.querySelector('.text').textContent])"
    )
    return {seq: text for seq, text in rows}


# Counts the pixels of a canvas drawn in one series' colour (within a tolerance: lines are anti-aliased)
# strictly above the plot's zero line: a series that stays at 0, or is not drawn at all, counts none.
SERIES_PIXELS = """
const [id, index] = arguments;
const c = document.getElementById(id);
const color = (c.dataset.colors || '').split(' ')[index];
if (!color || !c.dataset.plot) return 0;
const probe = document.createElement('canvas').getContext('2d');
probe.fillStyle = color; probe.fillRect(0, 0, 1, 1);
const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
const [left, top, width, height] = c.dataset.plot.split(' ').map(Number);
const dpr = c.width / c.clientWidth;
const bottom = Math.floor((top + height - 3) * dpr);
const data = c.getContext('2d').getImageData(0, 0, c.width, bottom).data;
let n = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i + 3] > 200 && Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 && Math.abs(data[i + 2] - b) < 40) n++;
}
return n;
"""


def series_pixels(driver: Any, canvas: str, index: int = 0) -> int:
    return driver.execute_script(SERIES_PIXELS, canvas, index)


# -- the files, without a browser ----------------------------------------------------------------------------


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


def test_every_node_serves_the_page_and_its_assets(cluster: LocalCluster) -> None:
    for node in cluster.nodes:
        status, kind, body = fetch(node.url + "/")
        assert (status, kind) == (200, "text/html") and b'src="/ui/app.js"' in body
        for name, want in (("app.js", "text/javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")):
            status, kind, body = fetch(f"{node.url}/ui/{name}")
            assert (status, kind) == (200, want) and body, name
        status, body = http_json("GET", node.url + "/ui/secrets.txt")
        assert status == 404 and body["error"] == "not_found"
        status, body = http_json("GET", node.url + "/ui/..%2Fopenapi.json")
        assert status == 404 and body["error"] == "not_found"


# -- in the browser ------------------------------------------------------------------------------------------


def test_the_page_lists_the_three_nodes_with_their_statuses(browser: Any, cluster: LocalCluster) -> None:
    open_page(browser, cluster.master.url)
    want = {cluster.master.url: "ok", **{s.url: "healthy" for s in cluster.secondaries}}
    wait(browser, lambda d: statuses(d) == want, 10, f"the nodes table to show {want}")
    assert browser.find_element("id", "role").get_attribute("data-role") == "master"
    health = cluster.master.health()
    assert browser.find_element("id", "epoch").text == str(health["epoch"])
    assert browser.find_element("id", "waiting-writes").text == "0"
    # w offers every node count, majority and all
    options = browser.execute_script("return [...document.querySelectorAll('#append-w option')].map(o => o.value)")
    assert options == ["1", "2", "3", "majority", "all"]

    # A secondary's page shows itself, no append form, and sends writers to the master.
    secondary = cluster.secondaries[0]
    open_page(browser, secondary.url)
    wait(browser, lambda d: statuses(d) == {secondary.url: "ok"}, 10, "the secondary's own row")
    assert not browser.find_element("id", "append").is_displayed()
    note = browser.find_element("id", "append-note")
    assert note.is_displayed() and "secondary" in note.text and "master" in note.text


def test_an_append_from_the_form_shows_in_the_log_and_the_tail(browser: Any, cluster: LocalCluster) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(browser, cluster.master.url)
    text = f"from the form {uuid.uuid4().hex[:8]}"
    browser.find_element("id", "append-message").send_keys(text)
    Select(browser.find_element("id", "append-w")).select_by_value("3")
    browser.find_element("id", "append-send").click()
    result = browser.find_element("id", "append-result")
    wait(browser, lambda d: result.get_attribute("data-outcome") == "ok", 10, "the append's answer")
    assert "acks=3" in result.text and "w=3" in result.text
    seq = int(result.text.split("seq=")[1].split()[0])

    assert {"seq": seq, "text": text} in [{"seq": m["seq"], "text": m["text"]} for m in cluster.master.messages()]
    wait(browser, lambda d: tail(d).get(seq) == text, 5, f"seq {seq} in the page's tail")
    assert browser.find_element("id", "append-message").get_attribute("value") == ""

    # An answer that is an error shows as one: a zero timeout, refused by the node (the page's own check is
    # lifted so that the node's answer is what shows).
    browser.execute_script("document.getElementById('append-timeout').removeAttribute('min')")
    browser.find_element("id", "append-message").send_keys("never stored")
    browser.find_element("id", "append-timeout").send_keys("0")
    browser.find_element("id", "append-send").click()
    wait(browser, lambda d: result.get_attribute("data-outcome") == "error", 10, "the refusal")
    assert result.text.startswith("400 invalid_timeout")
    browser.find_element("id", "append-timeout").clear()
    assert "never stored" not in cluster.master.texts()


def test_the_page_updates_every_second(browser: Any, cluster: LocalCluster) -> None:
    open_page(browser, cluster.master.url)
    samples = lambda d: int(d.execute_script("return document.body.dataset.samples"))  # noqa: E731
    first = samples(browser)
    wait(browser, lambda d: samples(d) >= first + 4, 4 * PAGE_POLL + 1.5, "four more /health samples")


def test_the_charts_draw_the_write_rate(browser: Any, cluster: LocalCluster) -> None:
    open_page(browser, cluster.master.url)

    def drawn(d: Any) -> bool:
        cluster.post("rate", w=1)  # a write between two of the page's samples: the rate is above zero
        return series_pixels(d, "rate-chart") > 20

    wait(browser, drawn, 15, "the write rate's line above zero")
    assert int(browser.find_element("id", "rate-chart").get_attribute("data-points")) >= 2


def test_a_killed_secondary_turns_unhealthy_and_healthy_after_its_restart(browser: Any, cluster: LocalCluster) -> None:
    """SIGKILL a secondary: suspected/unhealthy within the heartbeat window, its lag line rises, a w=all
    append times out (504, stored) or waits (a waiting write) until it is back and healthy."""
    open_page(browser, cluster.master.url)
    victim = cluster.secondaries[1]
    wait(browser, lambda d: statuses(d).get(victim.url) == "healthy", 10, "the secondary healthy")
    victim.kill()  # SIGKILL
    # The master suspects it after 2 missed heartbeats and gives up on it after 5; the page reads it within
    # a second more. Generous deadline for a loaded machine, still well short of a hang.
    window = 5 * HEARTBEAT + PAGE_POLL
    wait(browser, lambda d: statuses(d).get(victim.url) in ("suspected", "unhealthy"), window + 4, "suspected")
    wait(browser, lambda d: statuses(d).get(victim.url) == "unhealthy", window + 4, "unhealthy")
    assert statuses(browser)[cluster.secondaries[0].url] == "healthy"

    # While it is down, writes pile up behind it: its lag line rises on the chart.
    for i in range(5):
        assert cluster.post(f"while down {i}", w=2)[0] == 201
    index = [s.url for s in cluster.secondaries].index(victim.url)
    wait(browser, lambda d: series_pixels(d, "lag-chart", index) > 10, 10, "the lag line of the killed secondary")
    row = browser.find_element("css selector", f'tr[data-node="{victim.url}"]')
    assert int(row.get_attribute("data-lag")) >= 5

    # An append that needs every node cannot be met now: the form shows the 504 and that it is stored.
    from selenium.webdriver.support.ui import Select

    browser.find_element("id", "append-message").send_keys("needs all")
    Select(browser.find_element("id", "append-w")).select_by_value("all")
    browser.find_element("id", "append-timeout").send_keys("0.3")
    browser.find_element("id", "append-send").click()
    result = browser.find_element("id", "append-result")
    wait(browser, lambda d: result.get_attribute("data-outcome") == "error", 10, "the write concern timeout")
    assert "504 write_concern_timeout" in result.text and "stored as seq" in result.text

    # Without a timeout it waits: the page counts it among the master's waiting writes until the restart.
    browser.find_element("id", "append-timeout").clear()
    browser.find_element("id", "append-message").send_keys("waits for all")
    browser.find_element("id", "append-send").click()
    wait(browser, lambda d: d.find_element("id", "waiting-writes").text == "1", 10, "one waiting write")
    assert result.get_attribute("data-outcome") == "pending"

    victim.start()
    wait(browser, lambda d: statuses(d).get(victim.url) == "healthy", 20, "healthy after the restart")
    wait(browser, lambda d: result.get_attribute("data-outcome") == "ok", 20, "the waiting write answered")
    assert "acks=3" in result.text
    wait(browser, lambda d: d.find_element("id", "waiting-writes").text == "0", 10, "no waiting write")
    wait(browser, lambda d: row.get_attribute("data-lag") == "0", 20, "the restarted secondary caught up")


# -- with client tokens --------------------------------------------------------------------------------------


def test_with_a_token_file_the_page_asks_for_a_token_and_sends_it(browser: Any, tmp_path: Any) -> None:
    """The page itself is open (a browser cannot send a bearer token when it opens it); its requests carry the
    token typed into its field, kept for the tab: without one it says so, with a write token it works."""
    from selenium.webdriver.common.keys import Keys

    key, writer = uuid.uuid4().hex, uuid.uuid4().hex
    tokens = tmp_path / "tokens"
    tokens.write_text(f"write {writer}\nread {uuid.uuid4().hex}\n")
    with LocalCluster(
        1,
        heartbeat_interval=HEARTBEAT,
        cluster_key=key,
        master_args=["--token-file", str(tokens)],
        workdir=tmp_path / "cluster",
    ) as guarded:
        guarded.wait_healthy()
        assert http_json("GET", guarded.master.url + "/health")[0] == 401
        open_page_unready(browser, guarded.master.url)
        conn = browser.find_element("id", "conn")
        wait(browser, lambda d: conn.text == "token needed", 10, "the page to ask for a token")
        assert statuses(browser) == {}

        browser.find_element("css selector", "details.token summary").click()
        field = browser.find_element("id", "token")
        field.send_keys(writer)
        field.send_keys(Keys.TAB)  # a change event: the page keeps it for the tab
        want = {guarded.master.url: "ok", guarded.secondaries[0].url: "healthy"}
        wait(browser, lambda d: statuses(d) == want, 10, "the nodes once the token is given")

        browser.find_element("id", "append-message").send_keys("with a token")
        browser.find_element("id", "append-send").click()
        result = browser.find_element("id", "append-result")
        wait(browser, lambda d: result.get_attribute("data-outcome") == "ok", 10, "the append's answer")
        seq = int(result.text.split("seq=")[1].split()[0])
        wait(browser, lambda d: tail(d).get(seq) == "with a token", 10, "the append in the tail")

        browser.refresh()  # the same tab keeps the token
        wait(browser, lambda d: statuses(d) == want, 10, "the nodes after a reload")
        browser.execute_script("sessionStorage.clear()")
