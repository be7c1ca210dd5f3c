"""`YuNetHead.decode` on the real YuNet file (onnxruntime) against OpenCV's own FaceDetectorYN on real photos: the
same faces, boxes, landmarks and scores."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edgepipe.models.zoo.yunet import YUNET_2023MAR
from edgepipe.runtime.heads.yunet import YuNetHead
from edgepipe.runtime.results import Face, InputMapping
from edgepipe.runtime.specs import ArtifactMeta, Color, InputSpec, Precision, Resize, Task
from edgepipe.sources import fetch_file
from tests.support.yunet import open_size_copy

pytestmark = pytest.mark.slow

NUM_WIDERFACE_IMAGES = 20
SCORE_THRESH, NMS_IOU, TOP_K = 0.5, 0.3, 5000
BOX_ATOL_PX = LANDMARK_ATOL_PX = 0.05
SCORE_ATOL = 1e-4


@pytest.fixture(scope="module")
def yunet_path(cache_dir) -> Path:
    return fetch_file(YUNET_2023MAR, cache_dir)


@pytest.fixture(scope="module")
def session(yunet_path) -> ort.InferenceSession:
    """The file with symbolic H, W and cell counts: it declares a static 640x640 that OpenCV overrides per image."""
    return ort.InferenceSession(open_size_copy(yunet_path), providers=["CPUExecutionProvider"])


def _photos(shared_data: Path) -> list[Path]:
    group = sorted((shared_data / "group_photos").glob("*.jpg"))
    widerface = sorted((shared_data / "widerface_val_100" / "images").rglob("*.jpg"))[:NUM_WIDERFACE_IMAGES]
    if not group or len(widerface) != NUM_WIDERFACE_IMAGES:
        pytest.fail(f"{shared_data}: found {len(group)} group photos and {len(widerface)} WIDER FACE images; "
                    f"expected >= 1 and {NUM_WIDERFACE_IMAGES}")
    return group + widerface


def _edgepipe_faces(session: ort.InferenceSession, image_bgr: np.ndarray) -> list[Face]:
    """Pad bottom/right with zeros to multiples of 32 as OpenCV does, run the file, decode with the head."""
    height, width = image_bgr.shape[:2]
    pad_h, pad_w = -(-height // 32) * 32, -(-width // 32) * 32
    padded = cv2.copyMakeBorder(image_bgr, 0, pad_h - height, 0, pad_w - width, cv2.BORDER_CONSTANT, value=0)
    batch_nchw = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
    head = YuNetHead(score_thresh=SCORE_THRESH, nms_iou=NMS_IOU, top_k=TOP_K)
    meta = ArtifactMeta("yunet_n.opencv_2023mar", Task.FACE_DETECTION, Precision.FP32,
                        InputSpec((3, pad_h, pad_w), color=Color.BGR, mean=(0, 0, 0), std=(1, 1, 1),
                                  resize=Resize.LETTERBOX), head, input_name="input")
    outputs = session.run(list(head.outputs), {"input": batch_nchw})
    return head.decode(outputs, meta, InputMapping(), (height, width))


def _opencv_faces(detector, image_bgr: np.ndarray) -> np.ndarray:
    """FaceDetectorYN's rows (N, 15): x, y, w, h, 5 x (x, y), score."""
    detector.setInputSize((image_bgr.shape[1], image_bgr.shape[0]))
    _, faces = detector.detect(image_bgr)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def test_decode_matches_opencv_face_detector(shared_data, yunet_path, session):
    detector = cv2.FaceDetectorYN.create(str(yunet_path), "", (320, 320), score_threshold=SCORE_THRESH,
                                         nms_threshold=NMS_IOU, top_k=TOP_K)
    counts, box_err, landmark_err, score_err = [], 0.0, 0.0, 0.0
    for path in _photos(shared_data):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        height, width = image.shape[:2]
        ours, theirs = _edgepipe_faces(session, image), _opencv_faces(detector, image)
        assert len(ours) == len(theirs), f"{path.name}: {len(ours)} faces decoded, OpenCV finds {len(theirs)}"
        counts.append(len(ours))
        if not ours:
            continue
        # The head clips boxes to the image (as every head does); OpenCV's rows may reach past its edges.
        their_boxes = np.clip(np.concatenate([theirs[:, :2], theirs[:, :2] + theirs[:, 2:4]], 1), 0,
                              [width, height, width, height])
        our_boxes = np.stack([face.box_xyxy for face in ours])
        # Match by box, not rank: two faces with near-equal scores may swap places between the two backends.
        distance = np.abs(their_boxes[:, None, :] - our_boxes[None, :, :]).max(-1)  # (OpenCV, ours)
        match = distance.argmin(1)
        assert len(set(match.tolist())) == len(ours), f"{path.name}: faces do not pair one to one"
        box_err = max(box_err, float(distance[np.arange(len(match)), match].max()))
        our_landmarks = np.stack([ours[j].keypoints_xy for j in match])
        landmark_err = max(landmark_err, float(np.abs(our_landmarks - theirs[:, 4:14].reshape(-1, 5, 2)).max()))
        score_err = max(score_err, float(np.abs(np.array([ours[j].score for j in match]) - theirs[:, 14]).max()))
    summary = (f"{len(counts)} images, {sum(counts)} faces (per image {counts}); max abs diff: box {box_err:.2g} px, "
               f"landmarks {landmark_err:.2g} px, score {score_err:.2g}")
    print(f"\nYuNetHead vs FaceDetectorYN: {summary}")
    assert box_err <= BOX_ATOL_PX and landmark_err <= LANDMARK_ATOL_PX and score_err <= SCORE_ATOL, summary
