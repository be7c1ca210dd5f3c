"""`faces bench`'s face_recognition peer protocol, against stand-in interpreters (the real one runs in the slow
README test): a broken environment, a peer that fails, a peer that answers."""

import json
import stat
from pathlib import Path

import pytest

from edgepipe.envs import probe_env
from edgepipe.errors import BenchmarkError
from edgepipe.face_bench import FaceBenchOptions, _face_recognition_row

VERSIONS = {"dlib": "20.0.1", "face_recognition": "1.3.0"}


def _interpreter(cache: Path, peer_answer: str, peer_exit: int = 0) -> Path:
    """A stand-in `python` for CACHE/envs/face_recognition: answers the probe (`-c CODE`), and answers the peer
    script (reading its request from stdin) with `peer_answer` and `peer_exit`."""
    python = cache / "envs" / "face_recognition" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f"#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then echo '{json.dumps({'versions': VERSIONS})}'; exit 0; fi\n"
                      f"cat > /dev/null\ncat <<'EOF'\n{peer_answer}\nEOF\nexit {peer_exit}\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return python


def test_a_broken_environment_says_face_recognition_does_not_import(tmp_path):
    python = _interpreter(tmp_path, "")
    python.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named dlib' >&2\nexit 1\n")
    probe = probe_env("face_recognition", tmp_path)
    assert "face_recognition does not import" in probe["reason"] and "No module named dlib" in probe["reason"]
    row = _face_recognition_row("set", [tmp_path / "a.jpg"], FaceBenchOptions(cache_dir=tmp_path))
    assert not row["ok"] and row["reason"] == probe["reason"]


def test_a_failing_peer_is_a_row_with_its_last_line(tmp_path):
    _interpreter(tmp_path, "Traceback (most recent call last):\nRuntimeError: Unsupported image type", peer_exit=1)
    assert probe_env("face_recognition", tmp_path)["versions"] == VERSIONS
    row = _face_recognition_row("set", [tmp_path / "a.jpg"], FaceBenchOptions(cache_dir=tmp_path))
    assert not row["ok"] and row["reason"] == "face_recognition failed (exit 1): RuntimeError: Unsupported image type"


def test_an_answering_peer_gives_the_mean_of_each_photos_median(tmp_path):
    answer = {"versions": VERSIONS, "images": [{"path": "a.jpg", "faces": 1, "ms": [10.0, 30.0, 20.0]},
                                               {"path": "b.jpg", "faces": 3, "ms": [40.0, 40.0, 100.0]}]}
    _interpreter(tmp_path, json.dumps(answer))
    row = _face_recognition_row("lfw", [tmp_path / "a.jpg", tmp_path / "b.jpg"], FaceBenchOptions(cache_dir=tmp_path))
    assert row["ok"] and row["faces"] == 4 and row["image_ms"] == 30.0 and row["image_ms_p50"] == 30.0
    assert row["pipeline"] == "face_recognition 1.3.0 (dlib HOG + ResNet)" and row["models"] == ["dlib 20.0.1, "
                                                                                                 "face_recognition 1.3.0"]


@pytest.mark.parametrize("bad", [{"threads": 0}, {"warmup": -1}, {"runs": 0}])
def test_options_refuse_counts_out_of_range(bad):
    with pytest.raises(BenchmarkError, match="need threads >= 1, warmup >= 0 and runs >= 1"):
        FaceBenchOptions(**bad)


def test_options_refuse_an_unknown_execution_provider():
    with pytest.raises(BenchmarkError, match=r"unknown execution provider\(s\) \['cuda'\]; expected cpu or openvino"):
        FaceBenchOptions(embedder_ep="cuda")
