"""Take the README's dashboard screenshot: a live local cluster with traffic and one lagging secondary.

    python tests/browser/screenshot.py [OUT.png] [--seconds S]

Starts a master and two secondaries (the second with a 1.5 s replication delay, so that its lag shows),
writes to the master for S seconds (default 75) at a rate that rises and falls, appends three messages through
the page's own form, and saves the page as headless Chromium draws it (default docs/img/dashboard.png).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conftest import find_browser, new_driver  # noqa: E402
from replog.tools.cluster import LocalCluster, http_json, wait_until  # noqa: E402

EVENTS = ["order {n} placed", "order {n} paid", "user {u} signed in", "invoice {n} sent", "cart {u} updated"]


def traffic(cluster: LocalCluster, stop: threading.Event, started: float) -> None:
    """Writes with w=1 at 4..40 per second, in a slow wave; now and then a small batch."""
    n = 1000
    rnd = random.Random(7)
    while not stop.is_set():
        rate = 22 + 18 * math.sin((time.monotonic() - started) / 9)
        n += 1
        text = rnd.choice(EVENTS).format(n=n, u=rnd.randint(10, 99))
        if rnd.random() < 0.1:
            http_json("POST", cluster.master.url + "/messages", {"messages": [text, f"{text} (audit)"], "w": 1})
        else:
            http_json("POST", cluster.master.url + "/messages", {"message": text, "w": 1})
        stop.wait(1 / max(rate, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(HERE.parents[1] / "docs" / "img" / "dashboard.png"))
    parser.add_argument("--seconds", type=float, default=75.0)
    args = parser.parse_args()
    found = find_browser()

    if isinstance(found, str):
        print(found, file=sys.stderr)
        return 1
    from selenium.webdriver.support.ui import Select

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with LocalCluster(2, delays=(0, 1.5), heartbeat_interval=0.5) as cluster:
        cluster.wait_healthy()
        driver = new_driver(1440, 1000)
        stop = threading.Event()
        writer = threading.Thread(target=traffic, args=(cluster, stop, time.monotonic()), daemon=True)
        try:
            driver.get(cluster.master.url + "/")
            driver.execute_script("localStorage.setItem('replog.theme', 'light')")
            driver.refresh()
            writer.start()
            time.sleep(args.seconds)  # the charts need minutes of history: this is what they show
            for text, w in (
                ("deploy 2.4.1 started", "1"),
                ("deploy 2.4.1 done", "majority"),
                ("hello from the form", "3"),
            ):
                driver.find_element("id", "append-message").send_keys(text)
                Select(driver.find_element("id", "append-w")).select_by_value(w)
                driver.find_element("id", "append-send").click()
                wait_until(
                    lambda: driver.find_element("id", "append-result").get_attribute("data-outcome") == "ok",
                    10,
                    what="the form's append",
                )
            # The whole page in one picture: a viewport as tall as the page (the window's own size counts its frame).
            height = driver.execute_script("return document.documentElement.scrollHeight")
            metrics = {"width": 1440, "height": height, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            redrawn = "const c = document.getElementById('rate-chart'); return c.width === Math.round(c.clientWidth * devicePixelRatio)"
            wait_until(lambda: driver.execute_script(redrawn), 5, what="the charts redrawn at the new size")
            driver.save_screenshot(str(out))
        finally:
            stop.set()
            writer.join(5)
            driver.quit()
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
