"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver.

`chromium(width, height)` yields a WebDriver of a fresh headless Chromium (its own profile, no
proxy from the environment, no network use of Selenium's own: the driver is the system's), and
quits it afterwards. `scripts/setup-debian` installs both packages (`chromium`,
`chromium-driver`). `wait_for(driver, condition)` is a bounded wait for a condition.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

__all__ = ["CHROMEDRIVER", "CHROMIUM", "chromium", "wait_for"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 60.0
T = TypeVar("T")


@contextmanager
def chromium(width: int = 1100, height: int = 820) -> Iterator[WebDriver]:
    for program in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(str(program)), f"{program} is missing: run scripts/setup-debian"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # containers and CI run as root
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[Any], T], seconds: float = WAIT_SECONDS) -> T:
    """What `condition(driver)` gives once it is truthy, polled until `seconds` have passed."""
    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(condition)
