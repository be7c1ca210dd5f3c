"""The demo in a real browser: `streamlit run apps/Home.py` headless, driven by selenium + headless Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMEDRIVER = "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout_s} s")


@pytest.mark.slow
def test_object_detection_in_a_browser(artifacts, shared_data, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    if not Path(CHROMEDRIVER).is_file():
        pytest.fail(f"{CHROMEDRIVER} not found: apt-get install chromium-driver")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, EDGEPIPE_ARTIFACTS=str(next(iter(artifacts.values())).parent),
               EDGEPIPE_GALLERY=str(tmp_path / "gallery.json"), PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "streamlit", "run", "apps/Home.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        _wait_healthy(url, server)
        options = webdriver.ChromeOptions()
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--window-size=1400,1800"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.get(f"{url}/Object_detection")
        wait = WebDriverWait(driver, 120)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        image = shared_data / "coco_val_mini" / "images" / "000000000139.jpg"
        start = time.perf_counter()
        upload.send_keys(str(image))
        result = wait.until(ec.presence_of_element_located(
            (By.XPATH, "//*[contains(text(), 'detections in')]")))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=stImage] img")))
        elapsed_s = time.perf_counter() - start
        print(f"\nupload to rendered result: {elapsed_s:.2f} s ({result.text})")
        time.sleep(1)  # let the image finish painting for the screenshot
        shot = tmp_path / "object_detection.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        page = driver.find_element(By.TAG_NAME, "body").text
        assert "Object detection" in page and "person" in page
        assert "Traceback" not in page
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
