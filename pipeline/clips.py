"""The 1280x720 clips the video benchmarks run on, made from the shared material (it holds no 720p video):

- `upscaled(src, out)`: a clip scaled up to fit 1280x720 (bicubic), centred on black bars (street_bikes.mp4:
  640x272 -> 1280x544, bars of 88 px), every frame kept.
- `moving_faces(people, out)`: LFW photos of a few people crossing a 1280x720 frame (one photo per person, 300 px
  wide, each on its own straight path at its own speed, bouncing off the edges, over a fixed soft background made
  from the photos themselves, blurred), `seconds` at `fps`. Deterministic for a seed. Beside it, OUT.truth.jsonl:
  each frame's true name and box per person; `identity_figures` scores `run --jsonl` rows against it.

`python -m edgepipe.clips DATA OUT_DIR` writes both (street_bikes_720p.mp4, faces_720p.mp4) from a shared data
folder; faces_720p uses each listed person's second photo, so their first photos can be enrolled.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edgepipe.runtime.atomic import atomic_write
from edgepipe.runtime.preprocess import read_image
from edgepipe.runtime.video import open_video, read_frames
from edgepipe.video_out import VideoOut

__all__ = ["upscaled", "moving_faces", "identity_figures", "FACE_PEOPLE", "SIZE"]

SIZE = (1280, 720)
FACE_PEOPLE = ("Colin_Powell", "Tony_Blair", "Hugo_Chavez")  # three of lfw_10ids' enrolled people


def upscaled(src: Path, out: Path, size: tuple[int, int] = SIZE) -> Path:
    capture, fps, _ = open_video(src)
    width, height = size
    try:
        with VideoOut(out, fps, size) as video:
            for frame in read_frames(capture):
                scale = min(width / frame.shape[1], height / frame.shape[0])
                w, h = round(frame.shape[1] * scale), round(frame.shape[0] * scale)
                canvas = np.zeros((height, width, 3), np.uint8)
                x, y = (width - w) // 2, (height - h) // 2
                canvas[y:y + h, x:x + w] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC)
                video.write(canvas)
    finally:
        capture.release()
    return out


def moving_faces(photos: list[Path], out: Path, size: tuple[int, int] = SIZE, seconds: float = 6.0,
                 fps: float = 30.0, side: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    width, height = size
    faces = [cv2.resize(read_image(p), (side, side), interpolation=cv2.INTER_CUBIC) for p in photos]
    background = cv2.GaussianBlur(cv2.resize(np.concatenate(faces, 1), size), (0, 0), 25)
    position = rng.uniform([0, 0], [width - side, height - side], (len(faces), 2))
    velocity = rng.uniform(120, 260, (len(faces), 2)) * rng.choice([-1, 1], (len(faces), 2)) / fps  # px a frame
    names = [p.parent.name for p in photos]
    truth = []
    with VideoOut(out, fps, size) as video:
        for index in range(round(seconds * fps)):
            frame = background.copy()
            for k, face in enumerate(faces):
                x, y = position[k].astype(int)
                frame[y:y + side, x:x + side] = face  # later faces cover earlier ones where they cross
                truth.append({"frame": index, "name": names[k], "box": [int(x), int(y), int(x) + side, int(y) + side]})
                position[k] += velocity[k]
                for axis, limit in ((0, width - side), (1, height - side)):
                    if not 0 <= position[k, axis] <= limit:
                        velocity[k, axis] *= -1
                        position[k, axis] = np.clip(position[k, axis], 0, limit)
            video.write(frame)
    atomic_write(out.with_suffix(".truth.jsonl"), "".join(json.dumps(t) + "\n" for t in truth).encode())
    return out


def identity_figures(results: list[dict], truth: list[dict], least: float = 0.5) -> dict:
    """How well `run --jsonl` rows name the people of a `moving_faces` clip: each frame's face boxes matched to the
    photos they lie on (greedy, at least `least` of the face box on the photo, the top photo first); right = matched rows showing the true name over all true faces; switches = times a
    person's shown name changes between two frames they are matched in; tracks = track ids per person."""
    by_frame = _group(results)
    right, shown, tracks = 0, {}, {}
    for frame, people in _group(truth).items():
        rows, people = by_frame.get(frame, []), people[::-1]  # the face drawn last lies on top where two cross
        boxes = np.array([r["box"] for r in rows], np.float32).reshape(-1, 4)
        inside = np.array([[_inter(p["box"], b) for b in boxes] for p in people]).reshape(len(people), len(boxes))
        overlap = inside / np.maximum(1e-6, np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))[None, :]
        while overlap.size and overlap.max() >= least:
            p, r = np.unravel_index(np.argmax(overlap), overlap.shape)
            name = people[p]["name"]
            right += rows[r].get("name") == name
            shown.setdefault(name, []).append(rows[r].get("name"))
            tracks.setdefault(name, set()).add(rows[r]["track"])
            overlap[p, :], overlap[:, r] = 0, 0
    return {"faces": len(truth), "right_name_share": right / max(1, len(truth)),
            "switches": sum(sum(a != b for a, b in zip(seq, seq[1:])) for seq in shown.values()),
            "tracks_per_person": {name: len(ids) for name, ids in sorted(tracks.items())}}


def _inter(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, float(w)) * max(0.0, float(h))


def _group(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in rows:
        out.setdefault(row["frame"], []).append(row)
    return out


def main(argv: list[str]) -> int:
    data, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    upscaled(data / "videos" / "street_bikes.mp4", out / "street_bikes_720p.mp4")
    people = [sorted((data / "lfw_10ids" / "images" / name).glob("*.jpg"))[1] for name in FACE_PEOPLE]
    moving_faces(people, out / "faces_720p.mp4")
    print(f"wrote {out / 'street_bikes_720p.mp4'} and {out / 'faces_720p.mp4'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
