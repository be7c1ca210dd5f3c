"""The demo in a real browser: `edgepipe demo` headless, driven by selenium + headless Chromium."""

from __future__ import annotations

import os
import re
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


def _y4m(source: Path, out: Path, frames: int) -> Path:
    """The first `frames` frames of `source` as a YUV4MPEG2 file: what Chromium's fake camera plays, in a loop."""
    import cv2

    capture = cv2.VideoCapture(str(source))
    width, height = int(capture.get(3)) // 2 * 2, int(capture.get(4)) // 2 * 2
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            ok, frame = capture.read()
            assert ok
            f.write(b"FRAME\n" + cv2.cvtColor(frame[:height, :width], cv2.COLOR_BGR2YUV_I420).tobytes())
    capture.release()
    return out


@pytest.mark.slow
def test_live_camera_names_a_face_over_webrtc(artifacts, shared_data, tmp_path):
    """The Live camera page in headless Chromium whose camera is a clip (--use-file-for-fake-video-capture): START
    streams it to the app over WebRTC, and the caller, enrolled from the clip's first frame, is tracked and named."""
    import cv2
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchFrameException, StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    clip = shared_data / "videos" / "face_carphone.mp4"
    (tmp_path / "people" / "Caller").mkdir(parents=True)
    ok, first = cv2.VideoCapture(str(clip)).read()
    assert ok and cv2.imwrite(str(tmp_path / "people" / "Caller" / "0.png"), first)
    edgepipe = str(Path(sys.executable).with_name("edgepipe"))
    subprocess.run([edgepipe, "faces", "enroll", str(tmp_path / "gallery.json"), "--folder", str(tmp_path / "people"),
                    "--embedder", str(artifacts["sface.opencv"]), "--detector", str(artifacts["yunet.opencv"])],
                   check=True, capture_output=True, timeout=300)
    camera = _y4m(clip, tmp_path / "camera.y4m", 100)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, EDGEPIPE_ARTIFACTS=str(artifacts["sface.opencv"].parent),
               EDGEPIPE_GALLERY=str(tmp_path / "gallery.json"))
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen([edgepipe, "demo", "--server.headless", "true", "--server.port", str(port)], cwd=tmp_path,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    driver = None
    try:
        wait_healthy(url, server)
        options = webdriver.ChromeOptions()
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1400",
                     "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-video-capture={camera}", "--disable-features=WebRtcHideLocalIpsWithMdns"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.get(f"{url}/Live_camera")

        def status(d):
            found = re.search(r"(\d+) frames processed, [\d.]+ per second; now: (.*)",
                              d.find_element(By.TAG_NAME, "body").text)
            return found if found and int(found[1]) >= 50 and found[2] == "Caller" else False

        def press_start(d) -> bool:
            """Press START in whichever iframe shows it. Its DOM text is "Start", upper-cased by CSS: match the
            rendered text (`.text`), not an XPath on the DOM's (which never matched 'START')."""
            for frame in d.find_elements(By.CSS_SELECTOR, "iframe"):
                d.switch_to.frame(frame)
                try:
                    buttons = [b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "START"]
                    if buttons:
                        buttons[0].click()
                        return True
                finally:
                    d.switch_to.default_content()
            return False

        presses = []  # when START was pressed: again if it shows 15 s after a press (lost on a rerun, ICE failed)

        def streaming(d):
            if (not presses or time.monotonic() - presses[-1] > 15) and press_start(d):
                presses.append(time.monotonic())
            return status(d)

        try:  # the iframe may be replaced under us by a rerun: a stale element or frame is just polled again
            found = WebDriverWait(driver, 120, poll_frequency=0.5,
                                  ignored_exceptions=(StaleElementReferenceException, NoSuchFrameException)
                                  ).until(streaming)
        except TimeoutException:
            driver.save_screenshot(str(tmp_path / "live_camera_failed.png"))
            log.flush()
            pytest.fail(f"no '50+ frames ... now: Caller' after {len(presses)} START presses (screenshot: "
                        f"{tmp_path / 'live_camera_failed.png'}); page:\n"
                        f"{driver.find_element(By.TAG_NAME, 'body').text[-500:]}\nstreamlit log:\n"
                        f"{(tmp_path / 'streamlit.log').read_text()[-3000:]}")
        driver.save_screenshot(str(tmp_path / "live_camera.png"))
        print(f"\n{found[0]} ({len(presses)} START press(es)); screenshot: {tmp_path / 'live_camera.png'}")
    finally:
        if driver is not None:
            driver.quit()
        stop(server)
        log.close()
