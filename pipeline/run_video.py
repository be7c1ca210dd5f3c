"""`edgepipe run` on a video: detections tracked across frames, faces named once per track, an H.264 mp4 and
per-frame JSONL results: `run_video(step, input_path, out_path, jsonl) -> RunSummary`.

A step (`video_step`) turns one frame into (annotated frame, result rows). Boxes get track ids from the numpy
`Tracker`; with a gallery, a face is embedded when its track is new, while its identity is still uncertain, and
every `IdentityVotes.every` frames, and its name is its track's vote, so a face costs a few embeddings, not one
a frame.
"""

from __future__ import annotations

import dataclasses
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
from edgepipe.runtime.enums import Resize
from edgepipe.runtime.streams import FrameSource
from edgepipe.runtime.tracking import IdentityVotes, Tracker
from edgepipe.video_out import VideoOut

__all__ = ["video_step", "run_video"]

LOW = 0.1  # the least score a detection needs to continue a track
EMBED_PER_FRAME = 1  # faces embedded a frame at most: three new faces cost three frames' one embedding, not one
# frame's three (what bounds a live source's p99 latency); the others wait a frame or two
Step = Callable[[np.ndarray, int], tuple[np.ndarray, list[dict]]]


def _row(track: int, box, score: float, label: str, named: bool = False, name: str | None = None) -> dict:
    return {"track": int(track), "box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
            "label": label, **({"name": name} if named else {})}


def capped(detector: ObjectDetector | FaceDetector, max_side: int | None):
    """The detector running on frames shrunk to at most `max_side` px a side (its boxes still in frame pixels),
    for a detector that takes any image size (Resize.PAD, as YuNet); a fixed-size one (already shrinking every
    frame to its input) is returned as it is."""
    meta = detector.model.meta
    if not max_side or meta.input.resize != Resize.PAD:
        return detector
    m = meta.input.size_multiple
    side = max(m, max_side // m * m)
    if side >= max(meta.input.input_hw):
        return detector
    model = dataclasses.replace(detector.model, meta=dataclasses.replace(
        meta, input=dataclasses.replace(meta.input, shape_chw=(meta.input.shape_chw[0], side, side))))
    return type(detector)(model)


def video_step(detector: ObjectDetector | FaceDetector, score_thresh: float | None = None,
               embedder: FaceEmbedder | None = None, gallery: FaceGallery | None = None, *,
               threshold: float | None = None, classes: set[str] | None = None) -> Step:
    """The per-frame work for a detector, or a face detector + embedder + gallery (names by track vote).

    Every detection at or above `score_thresh` (default: the artifact's) gets a track and is drawn and written; one
    down to `LOW` only keeps its track alive (ByteTrack's second look: a face blurred or turning for a few frames
    keeps its track, and so its name, when it comes back). `threshold`: the match distance for faces (default: the
    gallery's); `classes`: an object detector keeps only these labels (default: all)."""
    high = detector.model.meta.head.score_thresh if score_thresh is None else score_thresh
    low = min(LOW, high)
    tracker = Tracker(high=high, low=low)
    if isinstance(detector, ObjectDetector):
        def objects(frame, index):
            found = detector.detect(frame, low, classes)
            ids = tracker.update([d.box_xyxy for d in found], [d.score for d in found], [d.label for d in found])
            kept = [(i, d) for i, d in zip(ids, found) if d.score >= high]  # the low ones only hold their tracks
            texts = [f"#{i} {d.label} {d.score:.2f}" for i, d in kept]
            return (draw_detections(frame, [d for _, d in kept], texts),
                    [_row(i, d.box_xyxy, d.score, d.label) for i, d in kept])
        return objects
    votes = IdentityVotes()
    limit = gallery.threshold if threshold is None and gallery is not None else threshold

    def faces(frame, index):
        found = detector.detect(frame, low)
        ids = tracker.update([f.box_xyxy for f in found], [f.score for f in found], ["face"] * len(found))
        kept = [(i, f) for i, f in zip(ids, found) if f.score >= high]
        if embedder is not None and gallery is not None:
            due = sorted((votes.waited(int(i), index), k) for k, (i, _) in enumerate(kept)
                         if votes.needs_embedding(int(i), index))  # new tracks first, then the longest waiting
            wanted = [(kept[k][0], detector.refine(frame, kept[k][1])) for _, k in due[::-1][:EMBED_PER_FRAME]]
            if wanted:
                matches = gallery.identify(embedder.embed(frame, [f for _, f in wanted]), limit)
                for (i, _), match in zip(wanted, matches):
                    votes.add(int(i), index, match.name, match.distance, limit)
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


def run_video(step: Step, source: FrameSource, out_path: Path, jsonl: Path | None = None, progress: bool = True):
    """Run `step` on the frames of `source` (`edgepipe.runtime.streams`); write the annotated H.264 mp4 and, with
    `jsonl`, one line per result: {"frame", "time" (s), "track", "box" [x1, y1, x2, y2], "score", "label", "name"
    (faces with a gallery)}. Both appear only when the run is done.

    Decoding, the step and encoding run in three threads joined by bounded queues, so on more than one core the
    codec's work hides behind inference. A file's frames are all processed, in order; a live source's newest frame
    wins (the step takes the latest decoded frame; the ones it skipped are counted as dropped). The summary's
    latency: live, from a frame's capture to its results; a file, the frame's time in the step (its decoder runs
    ahead, so queueing says nothing there); p50 and p99 in ms.
    """
    from edgepipe.run import RunSummary

    started = time.perf_counter()
    count = total = dropped = 0
    latencies: list[float] = []
    lines = partial_file(jsonl, ".jsonl") if jsonl else None
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(1 if source.live else QUEUE)
    try:
        with VideoOut(out_path, source.fps, source.size_wh) as video, open(lines or "/dev/null", "w") as log:
            def encode(item):
                index, at, annotated, rows = item
                video.write(annotated)
                for row in rows:
                    log.write(json.dumps({"frame": index, "time": round(at, 4), **row}) + "\n")

            reader = threading.Thread(target=_decode, args=(source, decoded, stop), daemon=True)
            reader.start()
            writer = _Writer(encode)
            try:
                with tqdm(total=source.frames, desc="frames", unit="frame", disable=None if progress else True) as bar:
                    for index, (frame, captured, skipped) in enumerate(iter(lambda: _take(decoded), None)):
                        begun = time.perf_counter()
                        annotated, rows = step(frame, index)
                        latencies.append(time.perf_counter() - (captured if source.live else begun))
                        at = captured - started if source.live else index / source.fps
                        writer.put((index, at, annotated, rows))
                        count, total, dropped = count + 1, total + len(rows), dropped + skipped
                        bar.update()
            finally:  # the encoder is done with the file before it is closed, whatever happened here
                stop.set()
                writer.close()
                reader.join(timeout=source.timeout_s + 1)
        if lines:
            publish(lines, jsonl)
    except BaseException:
        if lines:
            lines.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    ms = 1000 * np.array(latencies or [0.0])
    return RunSummary("video", count, total, time.perf_counter() - started, out_path,
                      latency_ms=(float(np.percentile(ms, 50)), float(np.percentile(ms, 99))), dropped=dropped,
                      live=source.live)


QUEUE = 4  # frames waiting between two stages


def _decode(source: FrameSource, out: queue.Queue, stop: threading.Event) -> None:
    """The decoder thread: (frame, captured at, frames skipped before it) items, then None; an exception is passed
    on as the item. Live: a frame the step has not taken yet is replaced by the newer one (and counted)."""
    try:
        for frame, captured in source:
            skipped = 0
            if source.live:
                try:
                    skipped = 1 + out.get_nowait()[2]  # the step was busy: that older frame is dropped
                except queue.Empty:
                    pass
            if not _put(out, (frame, captured, skipped), stop):
                return
        _put(out, None, stop)
    except BaseException as e:  # noqa: BLE001 (handed to the consumer, which raises it)
        _put(out, e, stop)


def _put(out: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item`, waiting while the consumer lives; False once it has stopped."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


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
