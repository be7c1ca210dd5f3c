"""The main job end to end: `edgepipe build` on every zoo model with every kind of evaluation folder."""

import json
import shutil

import pytest

from edgepipe.cli import main
from edgepipe.models import list_models
from edgepipe.runtime import load
from edgepipe.runtime.specs import Precision

pytestmark = pytest.mark.slow


def test_build_evaluates_and_summarises_every_model(built_with_data):
    """Over artifacts an earlier export left in --out (the session's): kept, since they are up to date (README's
    first command exports from scratch in test_readme_commands), then evaluated on every kind of folder."""
    tmp_path, code, out, exported = built_with_data
    assert code == 0, out
    for name in list_models():
        assert name in out
        figures = json.loads((tmp_path / f"{name}.fp32.json").read_text())
        assert figures["parity"]["gate_max_abs_diff"] <= 1e-4
        assert figures["evaluations"], name  # every model had a data set of its task
    metrics = {n: json.loads((tmp_path / f"{n}.fp32.json").read_text())["evaluations"] for n in list_models()}
    # Embedders are aligned by the default detector (YuNet): SFace 100.00%, dlib 98.89% (99.33% with BlazeFace).
    assert metrics["sface.opencv"]["lfw_10ids"]["metrics"]["accuracy"] >= 0.995
    assert metrics["dlib_resnet29.facerec"]["lfw_10ids"]["metrics"]["accuracy"] >= 0.985
    assert abs(metrics["yunet.opencv"]["widerface_val_100"]["metrics"]["ap_50"] - 0.8609) <= 0.005  # OpenCV's figure
    assert abs(metrics["nanodet_g.coco"]["coco_val_mini"]["metrics"]["map_50_95"] - 0.2876) <= 0.005
    assert metrics["blazeface_back.mediapipe"]["widerface_val_100"]["metrics"]["ap_50"] > 0.39
    latency = json.loads((tmp_path / "dlib_resnet29.facerec.fp32.json").read_text())["face_pipeline_latency"]
    assert latency["per_face_ms_p50"] > 0 and latency["machine"]["cpu"]
    assert json.loads((tmp_path / "nanodet_g.coco.fp32.json").read_text())["detector_latency"]["image_ms_p50"] > 0
    assert not list(tmp_path.rglob("*.partial-*"))  # no temporary files left behind
    now = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.fp32.onnx")}
    assert {name for name in now if now[name] != exported[name]} == {"blazeface_front.mediapipe.fp32.onnx"}
    assert not (tmp_path / "report").exists()  # --no-bench: no benchmark, so no report


def test_build_with_calib_adds_int8_within_the_budget(artifacts, shared_data, cache_dir, tmp_path, capsys):
    for path in (artifacts["nanodet_g.coco"], artifacts["nanodet_g.coco"].with_suffix(".json")):
        shutil.copy(path, tmp_path / path.name)  # up to date: kept
    code = main(["--cache-dir", str(cache_dir), "build", "nanodet_g.coco", "--out", str(tmp_path), "--no-bench",
                 "--data", str(shared_data / "coco_val_mini"), "--calib", str(shared_data / "coco_calib")])
    out = capsys.readouterr().out
    assert code == 0, out
    figures = json.loads((tmp_path / "nanodet_g.coco.int8.json").read_text())  # the family default: percentile
    assert (tmp_path / "nanodet_g.coco.int8.onnx").is_file() and figures["accuracy"]["within_budget"]
    assert figures["accuracy"]["drop_points"] <= 1.0 and figures["speed"]["speedup"] > 0
    assert load(tmp_path / "nanodet_g.coco.int8.onnx").meta.precision == Precision.INT8
    assert figures["size_vs_fp32"] < 0.3
    assert "int8" in out and "drop" in out
