"""`edgepipe run` on a video: detections tracked across frames, faces named once per track, an H.264 mp4 and
per-frame JSONL results: `run_video(step, input_path, out_path, jsonl) -> RunSummary`.

A step (`video_step`) turns one frame into (annotated frame, result rows). Boxes get track ids from the numpy
`Tracker`; with a gallery, a face is embedded when its track is new, while its identity is still uncertain, and
every `IdentityVotes.every` frames, and its name is its track's vote, so a face costs a few embeddings, not one
a frame.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from edgepipe.runtime import FaceDetector, FaceEmbedder, FaceGallery, ObjectDetector
from edgepipe.runtime.atomic import partial_file, publish
from edgepipe.runtime.draw import draw_detections, draw_faces
from edgepipe.runtime.tracking import IdentityVotes, Tracker
from edgepipe.runtime.video import VideoOut, open_video, read_frames

__all__ = ["video_step", "run_video"]

LOW = 0.1  # the least score a detection needs to continue a track
Step = Callable[[np.ndarray, int], tuple[np.ndarray, list[dict]]]


def _row(track: int, box, score: float, label: str, named: bool = False, name: str | None = None) -> dict:
    return {"track": int(track), "box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
            "label": label, **({"name": name} if named else {})}


def video_step(detector: ObjectDetector | FaceDetector, score_thresh: float | None = None,
               embedder: FaceEmbedder | None = None, gallery: FaceGallery | None = None) -> Step:
    """The per-frame work for a detector, or a face detector + embedder + gallery (names by track vote).

    Every detection at or above `score_thresh` (default: the artifact's) gets a track and is drawn and written; one
    down to `LOW` only keeps its track alive (ByteTrack's second look: a face blurred or turning for a few frames
    keeps its track, and so its name, when it comes back)."""
    high = detector.model.meta.head.score_thresh if score_thresh is None else score_thresh
    low = min(LOW, high)
    tracker = Tracker(high=high, low=low)
    if isinstance(detector, ObjectDetector):
        def objects(frame, index):
            found = detector.detect(frame, low)
            ids = tracker.update([d.box_xyxy for d in found], [d.score for d in found], [d.label for d in found])
            kept = [(i, d) for i, d in zip(ids, found) if d.score >= high]  # the low ones only hold their tracks
            texts = [f"#{i} {d.label} {d.score:.2f}" for i, d in kept]
            return (draw_detections(frame, [d for _, d in kept], texts),
                    [_row(i, d.box_xyxy, d.score, d.label) for i, d in kept])
        return objects
    votes = IdentityVotes()

    def faces(frame, index):
        found = detector.detect(frame, low)
        ids = tracker.update([f.box_xyxy for f in found], [f.score for f in found], ["face"] * len(found))
        kept = [(i, f) for i, f in zip(ids, found) if f.score >= high]
        if embedder is not None and gallery is not None:
            wanted = [(i, detector.refine(frame, f)) for i, f in kept if votes.needs_embedding(int(i), index)]
            if wanted:
                matches = gallery.identify(embedder.embed(frame, [f for _, f in wanted]))
                for (i, _), match in zip(wanted, matches):
                    votes.add(int(i), index, match.name, match.distance, gallery.threshold)
            votes.forget({t.id for t in tracker.tracks})
            names = [votes.name(int(i)) for i, _ in kept]
            texts = [f"#{i} {name or 'unknown'}" for (i, _), name in zip(kept, names)]
            known = [name is not None for name in names]
        else:
            names, known = [None] * len(kept), None
            texts = [f"#{i} {f.score:.2f}" for i, f in kept]
        rows = [_row(i, f.box_xyxy, f.score, "face", known is not None, name) for (i, f), name in zip(kept, names)]
        return draw_faces(frame, [f for _, f in kept], texts, known), rows
    return faces


def run_video(step: Step, input_path: Path, out_path: Path, jsonl: Path | None = None, progress: bool = True):
    """Run `step` on every frame of a video file; write the annotated H.264 mp4 and, with `jsonl`, one line per
    result: {"frame", "time" (s), "track", "box" [x1, y1, x2, y2], "score", "label", "name" (faces with a
    gallery)}. Both appear only when the whole video is done.

    Decoding, the step and encoding run in three threads joined by bounded queues (QUEUE frames each), so on more
    than one core the codec's work hides behind inference; every frame is processed, in order. The summary's
    latency is a frame's time in the step (detect, track, embed when needed, draw), p50 and p99 in ms: with a file
    the decoder runs ahead, so a frame's wait in the queue says nothing of a live source's delay.
    """
    from edgepipe.run import RunSummary

    started = time.perf_counter()
    capture, fps, frames = open_video(input_path)
    width, height = int(capture.get(3)), int(capture.get(4))  # CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT
    count = total = 0
    latencies: list[float] = []
    lines = partial_file(jsonl, ".jsonl") if jsonl else None
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(QUEUE)
    try:
        with VideoOut(out_path, fps, (width, height)) as video, open(lines or "/dev/null", "w") as log:
            def encode(item):
                index, annotated, rows = item
                video.write(annotated)
                for row in rows:
                    log.write(json.dumps({"frame": index, "time": round(index / fps, 4), **row}) + "\n")

            threading.Thread(target=_decode, args=(capture, decoded, stop), daemon=True).start()
            writer = _Writer(encode)
            try:
                with tqdm(total=frames, desc="frames", unit="frame", disable=None if progress else True) as bar:
                    for index, (frame, _) in enumerate(iter(lambda: _take(decoded), None)):
                        begun = time.perf_counter()
                        annotated, rows = step(frame, index)
                        latencies.append(time.perf_counter() - begun)
                        writer.put((index, annotated, rows))
                        count, total = count + 1, total + len(rows)
                        bar.update()
            finally:  # the encoder is done with the file before it is closed, whatever happened here
                stop.set()
                writer.close()
        if lines:
            publish(lines, jsonl)
    except BaseException:
        if lines:
            lines.unlink(missing_ok=True)
        raise
    finally:
        capture.release()
    ms = 1000 * np.array(latencies or [0.0])
    return RunSummary("video", count, total, time.perf_counter() - started, out_path,
                      latency_ms=(float(np.percentile(ms, 50)), float(np.percentile(ms, 99))))


QUEUE = 4  # frames waiting between two stages


def _decode(capture, out: queue.Queue, stop: threading.Event) -> None:
    """The decoder thread: (frame, time decoded) items, then None; an exception is passed on as the item."""
    try:
        for frame in read_frames(capture):
            item = (frame, time.perf_counter())
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(None)
    except BaseException as e:  # noqa: BLE001 (handed to the consumer, which raises it)
        out.put(e)


def _take(source: queue.Queue):
    item = source.get()
    if isinstance(item, BaseException):
        raise item
    return item


class _Writer:
    """The encoder thread: calls `encode(item)` for each item put, in order; `close()` waits for the last and
    raises what the thread raised (a full disk stops the run at the next frame, not at the end)."""

    def __init__(self, encode):
        self.items: queue.Queue = queue.Queue(QUEUE)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(encode,), daemon=True)
        self.thread.start()

    def _run(self, encode) -> None:
        while (item := self.items.get()) is not None:
            if self.error is None:
                try:
                    encode(item)
                except BaseException as e:  # noqa: BLE001
                    self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.items.put(item)

    def close(self) -> None:
        self.items.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
