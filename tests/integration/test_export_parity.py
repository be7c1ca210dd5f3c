"""Every zoo model: real weights -> ONNX (one file, dynamic batch, contract inside) -> onnxruntime parity."""

import json

import numpy as np
import onnx
import pytest

from edgepipe.models import list_models
from edgepipe.runtime import load
from edgepipe.runtime.preprocess import read_image, resize_to_input, to_input

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", list_models())
def test_export_writes_a_checked_self_describing_artifact(name, artifacts):
    path = artifacts[name]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)  # weights inside
    model = load(path)
    assert model.meta.model_name == name and model.meta.source_sha256 and model.meta.edgepipe_version
    figures = json.loads(path.with_suffix(".json").read_text())
    assert figures["parity"]["gate_max_abs_diff"] <= 1e-4, figures["parity"]  # live anchors / all embedder outputs
    assert figures["sha256"] and figures["size_mb"] > 0


@pytest.mark.parametrize("name", list_models())
def test_dynamic_batch_matches_single_images(name, artifacts, group_photos):
    model = load(artifacts[name])
    # One size for all three (a Resize.PAD model keeps each photo's own size, and a batch holds one size)
    images = [resize_to_input(read_image(p)[:480, :640], model.meta.input)[0] for p in group_photos[:3]]
    batch = to_input(images, model.meta.input)
    together = model.run(batch)
    for i in range(len(images)):
        alone = model.run(batch[i:i + 1])
        for a, b in zip(together, alone):
            assert np.abs(a[i] - b[0]).max() <= 1e-4


def test_detector_parity_includes_decoding(artifacts):
    figures = json.loads(artifacts["blazeface_back.mediapipe"].with_suffix(".json").read_text())["parity"]
    assert figures["n_faces_torch"] >= 20 and figures["face_count_mismatches"] == 0  # 6 group photos
    assert figures["box_max_abs_diff_px"] <= 0.05 and figures["keypoint_max_abs_diff_px"] <= 0.05


def test_embedder_parity_on_real_chips(artifacts):
    figures = json.loads(artifacts["dlib_resnet29.facerec"].with_suffix(".json").read_text())["parity"]
    assert figures["n_chips"] >= 20 and figures["cosine_min"] >= 0.99999
