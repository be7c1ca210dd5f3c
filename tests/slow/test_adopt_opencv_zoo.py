"""OpenCV Zoo's YuNet and SFace files adopted as they are (`edgepipe adopt`, no edgepipe export involved) give what
the zoo's PyTorch ports of the same models give, through the same runtime: the same faces, the same embeddings."""

import json

import numpy as np
import pytest

from edgepipe.cli import main
from edgepipe.models.zoo.sface import SFACE_2021DEC
from edgepipe.models.zoo.yunet import YUNET_2023MAR
from edgepipe.runtime import FaceDetector, FaceEmbedder, read_image
from edgepipe.runtime.postprocess import box_iou
from edgepipe.sources import fetch_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adopted(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adopted")
    assert main(["adopt", str(fetch_file(YUNET_2023MAR, cache_dir)), "--like", "yunet.opencv", "--any-size",
                 "--name", "yunet.adopted", "--out", str(out)]) == 0
    assert main(["adopt", str(fetch_file(SFACE_2021DEC, cache_dir)), "--like", "sface.opencv", "--outputs", "fc1",
                 "--name", "sface.adopted", "--out", str(out)]) == 0
    return out


def test_adopted_files_find_and_embed_the_faces_the_ports_do(adopted, artifacts, shared_data):
    ours = FaceDetector.from_path(artifacts["yunet.opencv"]), FaceEmbedder.from_path(artifacts["sface.opencv"])
    theirs = (FaceDetector.from_path(adopted / "yunet.adopted.fp32.onnx"),
              FaceEmbedder.from_path(adopted / "sface.adopted.fp32.onnx"))
    lfw = shared_data / "lfw_10ids" / "images"
    photos = [shared_data / "group_photos" / "group5.jpg", lfw / "Tony_Blair" / "Tony_Blair_0001.jpg"]
    for path in photos:
        image = read_image(path)
        faces, adopted_faces = ours[0].detect(image), theirs[0].detect(image)
        assert len(faces) == len(adopted_faces) >= 1, path
        ious = [box_iou(f.box_xyxy, g.box_xyxy[None])[0] for f, g in zip(faces, adopted_faces)]  # best first, both
        assert min(ious) > 0.99, ious
        assert np.allclose([f.score for f in faces], [f.score for f in adopted_faces], atol=1e-3)
        # all faces in one call: the adopted SFace's batch axis is fixed at 1, so the runtime runs them one by one
        a, b = ours[1].embed(image, faces), theirs[1].embed(image, faces)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert a.shape == b.shape == (len(faces), 128) and cosine.min() > 0.9999, cosine


def test_an_adopted_file_is_a_first_class_artifact(adopted, shared_data, tmp_path):
    """run and bench take it like an exported one; its JSON says where it came from and what was checked."""
    figures = json.loads((adopted / "yunet.adopted.fp32.json").read_text())
    assert figures["source_sha256"] == YUNET_2023MAR.member_sha256
    assert set(figures["checks"]["output_shapes"]) == {"1920x1920", "640x960"}
    photo = shared_data / "group_photos" / "group5.jpg"
    assert main(["run", str(adopted / "yunet.adopted.fp32.onnx"), str(photo), "--out", str(tmp_path / "a.jpg")]) == 0
    assert read_image(tmp_path / "a.jpg").shape == read_image(photo).shape
    assert main(["bench", str(adopted / "sface.adopted.fp32.onnx"), "--threads", "1", "--warmup", "1", "--runs", "3",
                 "--no-baselines", "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["model"] == "sface.adopted"


def test_an_adopted_opset_11_batch_1_embedder_quantizes_within_the_face_budget(adopted, shared_data, tmp_path):
    """SFace's file is opset 11 (per-channel int8 needs 13: converted) with its batch fixed at 1 (calibration feeds
    it one input at a time). Measured: 100.00% -> 99.89% on lfw_10ids."""
    from edgepipe.quantize import QuantizeOptions, quantize

    artifact = quantize(adopted / "sface.adopted.fp32.onnx", "int8", tmp_path, QuantizeOptions(
        calib_dir=shared_data / "coco_calib", detector=adopted / "yunet.adopted.fp32.onnx",
        eval_data=shared_data / "lfw_10ids", max_fallback_rounds=0, timing_runs=3))
    accuracy = artifact.figures["accuracy"]
    assert accuracy["within_budget"] and accuracy["drop_points"] <= 0.3 and accuracy["match_thresh"]["quantized"] > 0
    assert artifact.onnx_path.name == "sface.adopted.int8.onnx"


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # torch's own pytree, on every plain export
def test_a_zoo_detector_exported_by_plain_torch_onnx_export_and_adopted_detects_as_the_native_artifact(
        artifacts, cache_dir, group_photos, tmp_path):
    """No edgepipe metadata in the file, as a user's own export would be: `--like` brings the contract and labels."""
    import torch

    from edgepipe.models import build
    from edgepipe.runtime import ObjectDetector

    plain = tmp_path / "nanodet_plain.onnx"
    model = build("nanodet_g.coco", cache_dir=cache_dir).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 416, 416),), str(plain), input_names=["x"],
                      output_names=["scores", "distributions"], dynamo=True, external_data=False)
    assert main(["adopt", str(plain), "--like", "nanodet_g.coco", "--out", str(tmp_path / "out")]) == 0
    native = ObjectDetector.from_path(artifacts["nanodet_g.coco"])
    adopted = ObjectDetector.from_path(tmp_path / "out" / "nanodet_plain.adopted.fp32.onnx")
    assert adopted.model.meta.labels == native.model.meta.labels and len(native.model.meta.labels) == 80
    for path in group_photos[:2]:
        image = read_image(path)
        ours, theirs = native.detect(image), adopted.detect(image)
        assert [d.label for d in ours] == [d.label for d in theirs] and ours
        assert np.allclose([d.box_xyxy for d in ours], [d.box_xyxy for d in theirs], atol=1e-2)
