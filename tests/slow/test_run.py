"""`edgepipe run` on real images and videos, and its bad-input messages."""

import os
import stat

import av
import cv2
import pytest

from edgepipe.cli import main
from edgepipe.runtime.video import open_video

pytestmark = pytest.mark.slow


def test_run_annotates_a_video_and_a_folder(artifacts, shared_data, tmp_path, capsys):
    detector = str(artifacts["blazeface_back.mediapipe"])
    out = tmp_path / "face.mp4"
    assert main(["run", detector, str(shared_data / "videos" / "face_carphone.mp4"), "--out", str(out)]) == 0
    capture, _, frames = open_video(out)
    capture.release()
    assert frames == 120
    with av.open(str(out)) as video:  # what browsers play (opencv's mp4v they do not)
        assert video.streams.video[0].codec_context.name == "h264"
    summary = capsys.readouterr().out
    assert "video: 120 frames" in summary and "per second" in summary
    assert "video: 120 frames, 0 detections" not in summary  # the faces in the clip are found
    assert main(["run", detector, str(shared_data / "group_photos"), "--out", str(tmp_path / "annotated")]) == 0
    assert len(list((tmp_path / "annotated").glob("*.jpg"))) == 6
    assert "6 image(s), 0 detections" not in capsys.readouterr().out
    umask = os.umask(0)
    os.umask(umask)
    for path in (out, next((tmp_path / "annotated").glob("*.jpg"))):  # a video as readable as an image
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def _error(capsys, code, needle):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_run_bad_inputs(artifacts, shared_data, group_photos, tmp_path, capsys):
    detector = str(artifacts["blazeface_back.mediapipe"])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    _error(capsys, main(["run", detector, str(broken), "--out", str(tmp_path / "o.mp4")]), "cannot be opened as a video")
    empty = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    writer.release()  # a valid container with zero frames, or no file at all depending on the codec
    _error(capsys, main(["run", detector, str(empty), "--out", str(tmp_path / "o.mp4")]), str(empty))
    (tmp_path / "no_images").mkdir()
    _error(capsys, main(["run", detector, str(tmp_path / "no_images"), "--out", str(tmp_path / "x")]), "no images")
    embedder = str(artifacts["dlib_resnet29.facerec"])
    _error(capsys, main(["run", embedder, str(broken), "--out", str(tmp_path / "o.mp4")]), "pass --gallery")
    assert not list(tmp_path.glob("o.*")) and not (tmp_path / "x").exists()
    # Destinations that cannot take the result are refused before any frame is processed (issue #13).
    video = str(shared_data / "videos" / "face_carphone.mp4")
    (tmp_path / "taken.mp4").mkdir()
    _error(capsys, main(["run", detector, video, "--out", str(tmp_path / "taken.mp4")]), "is a directory")
    _error(capsys, main(["run", detector, video, "--out", str(tmp_path / "v.avi")]), "written as .mp4")
    _error(capsys, main(["run", detector, str(group_photos[0]), "--out", str(tmp_path / "x.xyz")]),
           "cannot write an image as '.xyz'")
    left = {p.name for p in tmp_path.iterdir()} - {"empty.mp4"}  # the codec may or may not have written it
    assert left == {"broken.mp4", "no_images", "taken.mp4"}, left  # no output, no temporary file
