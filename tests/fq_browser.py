"""Headless Chromium for the tests that look at a page as a person does (Flower, the report).

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them), driven through
Selenium with the system chromedriver: nothing is downloaded. When either is missing a test
skips with the reason, or fails under FERQUEUE_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fq_helpers import service_unavailable

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")


def _found(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


@contextmanager
def chromium(folder: Path, width: int = 1400, height: int = 1000) -> Iterator:
    """A Selenium driver of a fresh headless Chromium whose profile and logs live in ``folder``."""
    binary, driver_binary = _found("chromium"), _found("chromedriver")
    if not binary or not driver_binary:
        service_unavailable("headless Chromium", "install Debian's chromium and chromium-driver "
                            "(apt-get install -y chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        service_unavailable("Selenium", exc)
    folder.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--user-data-dir={folder / 'profile'}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    service = Service(executable_path=driver_binary, log_output=str(folder / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver, predicate: Callable[[str], bool], what: str, timeout: float = 30) -> str:
    """The page's visible text once ``predicate`` holds for it."""
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(_driver):
        text = driver.find_element("tag name", "body").text
        return text if predicate(text) else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(ready)
    except Exception as exc:  # noqa: BLE001 - a timeout, said with what the page showed instead
        shown = driver.find_element("tag name", "body").text[:2000]
        raise AssertionError(f"the page never showed {what}; it shows:\n{shown}") from exc


def full_page_screenshot(driver, path: Path, width: int = 1400) -> Path:
    """A screenshot of the whole page, however tall (up to 12000 pixels)."""
    height = driver.execute_script("return Math.max(document.body.scrollHeight, "
                                   "document.documentElement.scrollHeight)")
    driver.set_window_size(width, min(max(int(height) + 120, 600), 12000))
    driver.save_screenshot(str(path))
    return path
