"""A real headless Chromium, driven by selenium through chromium-driver, for the dashboard's tests.

Without the browser (Debian's `chromium` and `chromium-driver`) the tests skip and say why, but where
REPLOG_REQUIRE_BROWSER=1 (as `.ci/run` sets it) a missing browser is a failure: CI never passes by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

INSTALL = "apt-get install chromium chromium-driver"


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(name for name, path in (("chromium", browser), ("chromedriver", driver)) if path is None)
        return f"no {missing} on PATH: the dashboard's browser tests need a headless Chromium ({INSTALL})"
    return browser, driver


def new_driver(width: int = 1440, height: int = 1000) -> Any:
    """A headless Chromium; skips (or fails under REPLOG_REQUIRE_BROWSER=1) when there is none."""
    found = find_browser()
    if isinstance(found, str):
        if os.environ.get("REPLOG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"REPLOG_REQUIRE_BROWSER=1 but {found}")
        pytest.skip(found)
    browser, driver = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
        "--force-color-profile=srgb",  # canvas pixels in the colours the page asked for
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given: selenium's manager has nothing to look up or download.
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = new_driver()
    try:
        yield driver
    finally:
        driver.quit()
