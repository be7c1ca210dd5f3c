"""The demo in a real browser: `edgepipe demo` headless, driven by selenium + headless Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import free_port, stop, wait_healthy

CHROMEDRIVER = "/usr/bin/chromedriver"


def _clip(source: Path, out: Path, frames: int) -> Path:
    """The first `frames` frames of `source`, as opencv's MPEG-4 Part 2 (what the demo reads needn't play)."""
    import cv2

    capture = cv2.VideoCapture(str(source))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for _ in range(frames):
        ok, frame = capture.read()
        assert ok
        writer.write(frame)
    writer.release()
    capture.release()
    return out


@pytest.mark.slow
def test_object_detection_in_a_browser(artifacts, shared_data, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    if not Path(CHROMEDRIVER).is_file():
        pytest.fail(f"{CHROMEDRIVER} not found: apt-get install chromium-driver")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, EDGEPIPE_ARTIFACTS=str(next(iter(artifacts.values())).parent),
               EDGEPIPE_GALLERY=str(tmp_path / "gallery.json"))
    command = [str(Path(sys.executable).with_name("edgepipe")), "demo", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1"]
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        wait_healthy(url, server)
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
        # A video: the annotated result (H.264 from PyAV) must play in the browser, which MPEG-4 Part 2 did not
        upload = driver.find_element(By.CSS_SELECTOR, "input[type=file]")
        upload.send_keys(str(_clip(shared_data / "videos" / "street_bikes.mp4", tmp_path / "bikes.mp4", 30)))
        video = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "video")))
        wait.until(lambda d: d.execute_script("return arguments[0].readyState >= 1 || arguments[0].error", video))
        duration, error = driver.execute_script("return [arguments[0].duration, arguments[0].error && "
                                                "arguments[0].error.code]", video)
        assert error is None and duration > 0, f"the annotated video does not load: error {error}"
        driver.execute_script("arguments[0].muted = true; arguments[0].play();", video)
        wait.until(lambda d: d.execute_script("return arguments[0].currentTime", video) > 0.2)
        driver.execute_script("arguments[0].scrollIntoView(); arguments[0].pause();", video)
        driver.save_screenshot(str(tmp_path / "object_detection_video.png"))
        print(f"video: {duration:.2f} s, plays; screenshot: {tmp_path / 'object_detection_video.png'}")
    finally:
        if driver is not None:
            driver.quit()
        stop(server)
        log.close()
