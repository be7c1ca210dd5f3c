"""Start and stop a local server for a test: a free port, a health wait, a clean stop."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 60) -> None:
    """Poll Streamlit's health endpoint until it answers 200; raises if the server exits or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"no answer at {url} within {timeout_s} s")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


class MjpegServer:
    """A live camera on 127.0.0.1: `http://127.0.0.1:PORT/live.mjpg` streams JPEG frames (multipart, as IP cameras
    do) at `fps`. `plan[k]` says what connection k does: ("frames", n) sends n frames then closes (a stream that
    dies mid-way), ("stall", n) sends n frames then holds the connection open, silent (a stream that stalls)."""

    def __init__(self, frames_jpeg: list[bytes], plan: list[tuple[str, int]], fps: float = 25.0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.connections = 0
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                k = server.connections
                server.connections += 1
                what, n = plan[min(k, len(plan) - 1)]
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(n):
                        jpg = frames_jpeg[i % len(frames_jpeg)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg))
                        self.wfile.write(jpg + b"\r\n")
                        time.sleep(1 / fps)
                    if what == "stall":
                        server.stop.wait(120)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/live.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "MjpegServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
