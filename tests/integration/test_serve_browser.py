"""`miner serve` in a real browser: the CLI serves the tiny run on a free loopback port and Debian's headless
Chromium, driven by selenium through chromedriver, follows an index link, steps to the next unit with the arrow
key, searches, and tries a sentence (coloured tokens, top units) and a script tag (shown as text, never run).
No page logs a console message or records a script error or CSP violation. A screenshot of each page is written
(copied to MINER_SCREENSHOTS, a folder, when set; the README's come from there)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("chromedriver") is None,
    reason="chromium and chromedriver are not installed (Debian: apt-get install -y chromium chromium-driver)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(served_run: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "miner.cli", "serve", str(served_run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"miner serve did not start: {proc.stdout.read() if proc.stdout else ''}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def driver() -> Iterator:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    browser.set_page_load_timeout(120)
    try:
        yield browser
    finally:
        browser.quit()


def _clean(driver, name: str, tmp_path: Path) -> None:  # noqa: ANN001
    """No console message, no recorded script error, scripts finished; then a screenshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") in ("ok", "failed"))
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "ok"
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("data-errors") is None
    assert driver.get_log("browser") == []
    shot = tmp_path / f"serve-{name}.png"
    driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    target = os.environ.get("MINER_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


def test_browse_search_and_try_in_chromium(base_url: str, driver, tmp_path: Path) -> None:  # noqa: ANN001
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base_url + "/")
    _clean(driver, "runs", tmp_path)
    driver.find_element(By.CSS_SELECTOR, 'a[href="/r/tiny/model.html"]').click()
    _clean(driver, "overview", tmp_path)
    link = driver.find_element(By.CSS_SELECTOR, '#index a[href^="unit-"]')
    target = link.get_attribute("href")
    link.click()
    WebDriverWait(driver, 60).until(lambda d: d.current_url == target)
    _clean(driver, "unit", tmp_path)
    label = driver.find_element(By.CSS_SELECTOR, "h1 .mono").text
    layer, idx = (int(x) for x in label.split(":"))
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "h1 .mono").text == f"{layer}:{idx + 1}")
    _clean(driver, "next-unit", tmp_path)

    driver.get(base_url + "/r/tiny/search")
    box = driver.find_element(By.NAME, "words")
    box.send_keys("the, a")
    box.submit()
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.results tbody tr"))
    _clean(driver, "search", tmp_path)
    assert len(driver.find_elements(By.CSS_SELECTOR, 'table.results a[href^="/r/tiny/unit-"]')) >= 20

    for text in ("The stock market fell sharply today.", "<script>alert(1)</script> is not code here"):
        driver.get(base_url + "/r/tiny/try")
        driver.find_element(By.NAME, "unit").send_keys("1:17")
        area = driver.find_element(By.NAME, "text")
        area.send_keys(text)
        area.submit()
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.top-units tbody tr"))
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018
        _clean(driver, "try" if text.startswith("The") else "try-script", tmp_path)
        shown = driver.find_element(By.CSS_SELECTOR, ".try-sentences .text").text
        assert shown == text
        assert driver.find_elements(By.CSS_SELECTOR, ".try-sentences span.a")  # coloured tokens
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.top-units tbody tr")) == 20
