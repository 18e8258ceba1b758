"""A headless browser for the tests that look at a page: Debian's chromium, driven by Selenium."""

from __future__ import annotations

import shutil
from typing import Any

__all__ = ["headless_chromium"]


def headless_chromium(width: int = 1500, height: int = 1300) -> Any:
    """A Selenium driver of Debian's ``chromium`` through its ``chromedriver``
    (``make system-deps``), headless, keeping the page's console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are needed (make system-deps)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)
