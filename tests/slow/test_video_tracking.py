"""`edgepipe run` on a video with a gallery, through the installed script: an H.264 mp4 (what browsers play), and
per-frame JSONL in which the enrolled person keeps one track and one name (issue #16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import pytest

pytestmark = pytest.mark.slow

EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))


def test_a_tracked_face_keeps_its_name_and_the_video_is_h264(artifacts, shared_data, tmp_path):
    clip = shared_data / "videos" / "face_carphone.mp4"
    people = tmp_path / "people"
    (people / "Caller").mkdir(parents=True)
    capture = cv2.VideoCapture(str(clip))
    ok, first = capture.read()
    capture.release()
    assert ok and cv2.imwrite(str(people / "Caller" / "frame0.png"), first)  # the person in the clip, enrolled
    for person in sorted((shared_data / "lfw_10ids" / "images").iterdir())[:3]:  # and three others
        (people / person.name).mkdir()
        (people / person.name / "1.jpg").symlink_to(next(person.glob("*.jpg")))
    faces = ["--embedder", str(artifacts["sface.opencv"]), "--detector", str(artifacts["yunet.opencv"])]
    subprocess.run([EDGEPIPE, "faces", "enroll", str(tmp_path / "g.json"), "--folder", str(people), *faces],
                   check=True, capture_output=True, timeout=300)
    done = subprocess.run([EDGEPIPE, "run", str(artifacts["sface.opencv"]), str(clip), "--gallery",
                           str(tmp_path / "g.json"), "--detector", str(artifacts["yunet.opencv"]), "--out",
                           str(tmp_path / "named.mp4"), "--jsonl", str(tmp_path / "named.jsonl")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with av.open(str(tmp_path / "named.mp4")) as video:
        stream = video.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in video.decode(stream)) == 120
    rows = [json.loads(line) for line in (tmp_path / "named.jsonl").read_text().splitlines()]
    assert f"120 frames, {len(rows)} detections" in done.stdout and len(rows) >= 100
    assert [r["frame"] for r in rows] == sorted(r["frame"] for r in rows)
    assert all(abs(r["time"] - r["frame"] / 29.97) < 0.01 and len(r["box"]) == 4 and r["label"] == "face" for r in rows)
    named = [r["name"] for r in rows]
    assert named.count("Caller") >= 0.95 * len(rows), named  # the right name on the track
    assert len({r["track"] for r in rows}) <= 2  # one face, one track (a second at most, after a lost frame)
    switches = sum(a["name"] != b["name"] for a, b in zip(rows, rows[1:]) if a["track"] == b["track"])
    assert switches == 0


def test_people_crossing_a_720p_frame_keep_their_names(artifacts, shared_data, tmp_path):
    """README's benchmark clips (`python -m edgepipe.clips DATA OUT`: three LFW people crossing 1280x720), the faces
    tracked and named at --max-side 640, scored against the clip's truth."""
    from edgepipe.clips import FACE_PEOPLE, identity_figures

    subprocess.run([sys.executable, "-m", "edgepipe.clips", str(shared_data), str(tmp_path / "clips")], check=True,
                   capture_output=True, timeout=300)
    clip = tmp_path / "clips" / "faces_720p.mp4"
    with av.open(str(tmp_path / "clips" / "street_bikes_720p.mp4")) as bikes:
        assert (bikes.streams.video[0].width, bikes.streams.video[0].height, bikes.streams.video[0].frames) == \
            (1280, 720, 250)
    photos = {name: sorted((shared_data / "lfw_10ids" / "images" / name).glob("*.jpg")) for name in FACE_PEOPLE}
    for name, paths in photos.items():  # each enrolled from another photo than the clip shows
        (tmp_path / "people" / name).mkdir(parents=True)
        (tmp_path / "people" / name / "0.jpg").symlink_to(paths[0])
    detector = ["--detector", str(artifacts["yunet.opencv"])]
    subprocess.run([EDGEPIPE, "faces", "enroll", str(tmp_path / "g.json"), "--folder", str(tmp_path / "people"),
                    *detector, "--embedder", str(artifacts["sface.opencv"])], check=True, capture_output=True,
                   timeout=300)
    done = subprocess.run([EDGEPIPE, "run", str(artifacts["sface.opencv"]), str(clip), "--gallery",
                           str(tmp_path / "g.json"), *detector, "--max-side", "640", "--out", str(tmp_path / "o.mp4"),
                           "--jsonl", str(tmp_path / "o.jsonl")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    truth = [json.loads(line) for line in clip.with_suffix(".truth.jsonl").read_text().splitlines()]
    figures = identity_figures(results, truth)
    print(f"\n{figures}")
    assert figures["faces"] == 540 and figures["right_name_share"] >= 0.8 and figures["switches"] <= 8
    assert set(figures["tracks_per_person"]) == set(FACE_PEOPLE)
