"""int8 static quantization of real zoo models, calibrated on real images and held to the accuracy budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepipe.errors import QuantizeError
from edgepipe.quantize import CalibMethod, QuantizeOptions, quantize
from edgepipe.runtime import load

pytestmark = pytest.mark.slow


def _coco_slice(data: Path, folder: Path, n: int) -> Path:
    """The first `n` images of a COCO folder with their annotations: a budget test that needs rounds, not figures."""
    instances = json.loads((data / "instances.json").read_text())
    images = sorted(instances["images"], key=lambda i: i["file_name"])[:n]
    ids = {i["id"] for i in images}
    (folder / "images").mkdir(parents=True)
    for image in images:
        (folder / "images" / image["file_name"]).symlink_to(data / "images" / image["file_name"])
    kept = {**instances, "images": images, "annotations": [a for a in instances["annotations"] if a["image_id"] in ids]}
    (folder / "instances.json").write_text(json.dumps(kept))
    return folder


def test_dlib_int8_within_point_three_accuracy(artifacts, shared_data, tmp_path):
    detector = artifacts["blazeface_back.mediapipe"]
    calib = tmp_path / "calib"  # chips of the faces in coco_calib + group_photos, none of whom is in lfw_10ids
    calib.mkdir()
    for photo in [*(shared_data / "coco_calib").glob("*.jpg"), *(shared_data / "group_photos").glob("*.jpg")]:
        (calib / photo.name).symlink_to(photo)
    # Measured: the default (MinMax, per-channel 7-bit weights, 64 chips) drops -0.11 points over seeds 0-2, in the
    # first try; 8-bit weights dropped 0.89 (int16 overflow in the AVX2 int8 kernels).
    options = QuantizeOptions(calib_dir=calib, detector=detector, eval_data=shared_data / "lfw_10ids",
                              max_fallback_rounds=1, timing_runs=5)
    out = quantize(artifacts["dlib_resnet29.facerec"], "int8", tmp_path / "out", options)
    accuracy = out.figures["accuracy"]
    assert accuracy["within_budget"] and accuracy["drop_points"] <= 0.3 and accuracy["max_drop_points"] == 0.3
    assert out.figures["parity"]["embedding_cosine_min"] > 0.95


def test_blazeface_int8_within_one_ap_point(artifacts, shared_data, tmp_path):
    options = QuantizeOptions(calib_dir=shared_data / "coco_calib", eval_data=shared_data / "widerface_val_100",
                              max_fallback_rounds=1, timing_runs=5)
    out = quantize(artifacts["blazeface_back.mediapipe"], "int8", tmp_path, options)
    accuracy = out.figures["accuracy"]  # measured: 0.08 / -0.04 / 0.51 points over seeds 0-2, all in the first try
    assert accuracy["within_budget"] and accuracy["drop_points"] <= 1.0
    tail = out.figures["settings"]["float_tail_nodes"]
    assert tail[-1] == "node_cat_1"  # the score and box outputs stay float
    assert set(tail) <= set(out.figures["nodes"]["float"])  # also the tail's first node, which reads a dequantized input


def test_over_budget_falls_back_then_tries_the_other_weight_scaling_and_keeps_only_the_figures(
        artifacts, shared_data, tmp_path):
    """Over budget: harm-ranked nodes go back to float for a round, then (per_channel left to the family default)
    the other weight scaling is tried the same way; nothing passes a 0-point budget, so only the JSON is written."""
    options = QuantizeOptions(calib_dir=shared_data / "coco_calib", calib_size=1, method=CalibMethod.MINMAX,
                              eval_data=_coco_slice(shared_data / "coco_val_mini", tmp_path / "slice", 24),
                              max_drop=0.0, max_fallback_rounds=1, timing_runs=3)
    out = tmp_path / "out"
    with pytest.raises(QuantizeError, match="over the 0 budget after 2 fallback rounds, per-channel and per-tensor "
                                            "weights tried"):
        quantize(artifacts["nanodet_g.coco"], "int8", out, options)
    assert not (out / "nanodet_g.coco.int8.onnx").exists()
    rounds = json.loads((out / "nanodet_g.coco.int8.json").read_text())["accuracy"]["rounds"]
    assert [r["per_channel"] for r in rounds] == [True, True, False, False]
    assert not rounds[0]["excluded"] and rounds[1]["excluded"] and rounds[3]["excluded"]


def test_yunet_and_sface_int8_within_the_face_budgets(artifacts, shared_data, tmp_path):
    """The default pair through quantize: YuNet on WIDER (1.0 point), SFace on LFW aligned by YuNet (0.3 point),
    its threshold re-measured on the int8 embeddings. Measured: AP 86.09 -> 86.27; accuracy 100.00 -> 99.89."""
    detector = quantize(artifacts["yunet.opencv"], "int8", tmp_path, QuantizeOptions(
        calib_dir=shared_data / "coco_calib", eval_data=shared_data / "widerface_val_100", max_fallback_rounds=0,
        timing_runs=3))
    assert detector.figures["accuracy"]["within_budget"] and detector.figures["accuracy"]["drop_points"] <= 1.0
    embedder = quantize(artifacts["sface.opencv"], "int8", tmp_path, QuantizeOptions(
        calib_dir=shared_data / "coco_calib", detector=artifacts["yunet.opencv"], eval_data=shared_data / "lfw_10ids",
        max_fallback_rounds=0, timing_runs=3))
    accuracy = embedder.figures["accuracy"]
    assert accuracy["within_budget"] and accuracy["drop_points"] <= 0.3
    assert 0.55 < accuracy["quantized_metrics"]["threshold"] < 0.7  # its own, measured on the int8 embeddings
    # The contract's threshold moves with the measured one: what `faces` and the demo use for the int8 model.
    moved = accuracy["match_thresh"]
    shift = moved["lfw_threshold_quantized"] - moved["lfw_threshold_fp32"]
    assert moved["fp32"] == load(artifacts["sface.opencv"]).meta.head.match_thresh
    assert moved["quantized"] == pytest.approx(moved["fp32"] + shift, abs=2e-4)
    assert load(embedder.onnx_path).meta.head.match_thresh == moved["quantized"]
