"""WIDER FACE reader errors and the AP protocol on hand-made cases whose AP is worked out by hand."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepipe.errors import InputError
from edgepipe.metrics.widerface import WiderImage, read_widerface_gt, widerface_ap

FACE_A = [0, 0, 10, 10]
FACE_B = [100, 100, 140, 140]


def image(name, boxes, invalid=None):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    invalid = np.zeros(len(boxes), bool) if invalid is None else np.array(invalid, bool)
    return WiderImage(Path(name), boxes, invalid)


def dets(*rows):
    """(boxes, scores) from rows of (x1, y1, x2, y2, score)."""
    table = np.array(rows, np.float64).reshape(-1, 5)
    return table[:, :4], table[:, 4]


def test_perfect_detections_score_one():
    gt = [image("a.jpg", [FACE_A, FACE_B]), image("b.jpg", [[5, 5, 50, 60]])]
    result = widerface_ap({g.path: (g.boxes_xyxy, np.ones(len(g.boxes_xyxy))) for g in gt}, gt)
    assert result["ap_50"] == pytest.approx(1.0) and result["recall"] == 1.0
    assert result["n_faces"] == 3 and result["n_detections"] == 3


def test_one_false_positive_above_the_only_true_positive_halves_ap():
    # ranked: FP (P 0, R 0), TP (P 1/2, R 1) -> envelope 1/2 over recall 0..1
    gt = [image("a.jpg", [FACE_A])]
    result = widerface_ap({Path("a.jpg"): dets([*FACE_B, 0.9], [*FACE_A, 0.8])}, gt)
    assert result["ap_50"] == pytest.approx(0.5) and result["recall"] == 1.0


def test_envelope_takes_the_best_precision_to_the_right():
    # ranked: TP (P 1, R 1/2), FP (P 1/2, R 1/2), TP (P 2/3, R 1) -> 1/2 * 1 + 1/2 * 2/3
    gt = [image("a.jpg", [FACE_A, FACE_B])]
    result = widerface_ap({Path("a.jpg"): dets([*FACE_A, 0.9], [50, 50, 60, 60, 0.8], [*FACE_B, 0.7])}, gt)
    assert result["ap_50"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_duplicate_detection_is_a_false_positive():
    # same ranking as above with the FP a second box on face A: not ignored, so AP < 1
    gt = [image("a.jpg", [FACE_A, FACE_B])]
    result = widerface_ap({Path("a.jpg"): dets([*FACE_A, 0.9], [0, 0, 10, 11, 0.8], [*FACE_B, 0.7])}, gt)
    assert result["ap_50"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_matches_to_invalid_faces_are_ignored():
    gt = [image("a.jpg", [FACE_A, FACE_B], invalid=[False, True])]
    result = widerface_ap({Path("a.jpg"): dets([*FACE_B, 0.95], [140, 140, 141, 141, 0.1], [*FACE_A, 0.9])}, gt)
    # the hit on invalid face B counts for nothing; the FP ranks below the TP -> AP 1, recall 1 over 1 face
    assert result["ap_50"] == pytest.approx(1.0) and result["n_faces"] == 1 and result["recall"] == 1.0
    assert result["n_detections"] == 3


def test_ranking_is_global_across_images():
    # ranked: FP in b (P 0, R 0), TP in a (P 1/2, R 1/2), TP in b (P 2/3, R 1) -> envelope 2/3 everywhere
    gt = [image("a.jpg", [FACE_A]), image("b.jpg", [FACE_B])]
    detections = {Path("a.jpg"): dets([*FACE_A, 0.9]), Path("b.jpg"): dets([0, 0, 5, 5, 0.95], [*FACE_B, 0.5])}
    assert widerface_ap(detections, gt)["ap_50"] == pytest.approx(2 / 3)


def test_missed_faces_cap_recall_and_images_without_detections_are_allowed():
    gt = [image("a.jpg", [FACE_A]), image("b.jpg", [FACE_B]), image("c.jpg", [])]
    detections = {"a.jpg": dets([*FACE_A, 0.9]), "b.jpg": dets(), "c.jpg": dets([1, 1, 9, 9, 0.3])}
    result = widerface_ap(detections, gt)
    assert result["ap_50"] == pytest.approx(0.5) and result["recall"] == 0.5  # str keys are read as paths
    no_detections = widerface_ap({g.path: dets() for g in gt}, gt)
    assert no_detections["ap_50"] == 0.0 and no_detections["recall"] == 0.0 and no_detections["n_detections"] == 0


def test_iou_threshold_is_inclusive():
    gt = [image("a.jpg", [FACE_A])]
    half = {Path("a.jpg"): dets([0, 0, 10, 20, 0.9])}  # IoU exactly 100 / 200
    assert widerface_ap(half, gt)["ap_50"] == 1.0
    assert widerface_ap(half, gt, iou_thresh=0.51)["ap_50"] == 0.0


def test_recall_by_size_buckets_on_sqrt_area():
    small, medium, edge_medium, large = [0, 0, 20, 20], [0, 100, 50, 150], [200, 0, 232, 32], [300, 0, 396, 96]
    gt = [image("a.jpg", [small, medium, edge_medium, large])]
    result = widerface_ap({Path("a.jpg"): dets([*medium, 0.9], [*large, 0.8])}, gt)
    assert result["recall_by_size"] == {"small": {"n": 1, "recall": 0.0}, "medium": {"n": 2, "recall": 0.5},
                                        "large": {"n": 1, "recall": 1.0}}
    assert result["recall"] == 0.5 and result["ap_50"] == pytest.approx(0.5)


def test_empty_bucket_has_no_recall():
    result = widerface_ap({Path("a.jpg"): dets()}, [image("a.jpg", [FACE_A])])
    assert result["recall_by_size"]["large"] == {"n": 0, "recall": None}


def test_detection_contract_errors():
    gt = [image("a.jpg", [FACE_A]), image("b.jpg", [FACE_B])]
    with pytest.raises(InputError, match=r"miss 1 of 2 ground-truth images, first: b\.jpg"):
        widerface_ap({Path("a.jpg"): dets()}, gt)
    with pytest.raises(InputError, match=r"1 images not in the ground truth, first: c\.jpg"):
        widerface_ap({g.path: dets() for g in gt} | {Path("c.jpg"): dets()}, gt)
    with pytest.raises(InputError, match=r"expected boxes \(M, 4\) and scores \(M,\)"):
        widerface_ap({Path("a.jpg"): (np.zeros((2, 4)), np.zeros(3)), Path("b.jpg"): dets()}, gt)
    with pytest.raises(InputError, match="no face with invalid == 0"):
        widerface_ap({Path("a.jpg"): dets()}, [image("a.jpg", [FACE_A], invalid=[True])])


def write_folder(root: Path, gt_text: str, images=("0--Parade/a.jpg", "0--Parade/b.jpg")) -> Path:
    for name in images:
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / name), np.full((48, 64, 3), 127, np.uint8))
    (root / "gt.txt").write_text(gt_text)
    return root


GOOD_GT = ("0--Parade/a.jpg\n2\n1 2 10 20 1 0 0 0 0 0 \n30 5 4 6 2 0 0 1 0 0 \n"
           "0--Parade/b.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")


def test_reader_parses_boxes_invalid_flags_and_empty_images(tmp_path):
    gt = read_widerface_gt(write_folder(tmp_path, GOOD_GT))
    assert [g.path for g in gt] == [tmp_path / "images/0--Parade/a.jpg", tmp_path / "images/0--Parade/b.jpg"]
    assert gt[0].boxes_xyxy.dtype == np.float32 and gt[0].boxes_xyxy.tolist() == [[1, 2, 11, 22], [30, 5, 34, 11]]
    assert gt[0].invalid.tolist() == [False, True]
    assert gt[1].boxes_xyxy.shape == (0, 4) and gt[1].invalid.shape == (0,)
    without_zero_line = read_widerface_gt(write_folder(tmp_path, GOOD_GT.replace("0 0 0 0 0 0 0 0 0 0 \n", "")))
    assert without_zero_line[1].boxes_xyxy.shape == (0, 4)


@pytest.mark.parametrize("text, message", [
    ("", r"gt\.txt: empty"),
    ("0--Parade/a.jpg\n3\n1 2 10 20 1 0 0 0 0 0\n30 5 4 6 2 0 0 1 0 0\n0--Parade/b.jpg\n0\n",
     r"gt\.txt:2: count says 3 faces but only 2 box lines follow before line 5"),
    ("0--Parade/a.jpg\n2\n1 2 10 20 1 0 0 0 0 0\n",
     r"gt\.txt:2: count says 2 faces but only 1 box lines follow before the end of the file"),
    ("0--Parade/a.jpg\n1\n1 2 10 20 1 0 0 0 0 0\n30 5 4 6 2 0 0 1 0 0\n",
     r"gt\.txt:2: count says 1 faces but more box lines follow \(line 4\)"),
    ("0--Parade/a.jpg\n0\n1 2 10 20 1 0 0 0 0 0\n", r"gt\.txt:2: count says 0 faces but more box lines follow"),
    ("0--Parade/a.jpg\n1\n1 2 10 20 1 0 0 0 0\n", r"gt\.txt:3: expected 10 fields .*, got 9"),
    ("0--Parade/a.jpg\n1\n1 2 ten 20 1 0 0 0 0 0\n", r"gt\.txt:3: box fields must be numbers, got '1 2 ten"),
    ("0--Parade/a.jpg\ntwo\n", r"gt\.txt:2: expected the number of faces .*, got 'two'"),
    ("0--Parade/a.jpg\n", r"gt\.txt:1: image '0--Parade/a\.jpg' has no face-count line"),
    ("0--Parade/a.jpg\n0\n0--Parade/a.jpg\n0\n",
     r"gt\.txt:3: image '0--Parade/a\.jpg' is listed twice \(first on line 1\)"),
    (GOOD_GT + "0--Parade/gone.jpg\n0\n",
     r"gt\.txt:8: listed image .*gone\.jpg does not exist \(1 of 3 listed images missing\)"),
])
def test_reader_errors_name_the_line(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as info:
        read_widerface_gt(write_folder(tmp_path, text))
    assert "\n" not in str(info.value)


def test_reader_without_gt_file(tmp_path):
    with pytest.raises(InputError, match=r"gt\.txt: no such ground-truth file"):
        read_widerface_gt(tmp_path)


def test_real_widerface_val_100(shared_data):
    gt = read_widerface_gt(shared_data / "widerface_val_100")
    assert len(gt) == 100 and sum(len(g.boxes_xyxy) for g in gt) == 584
    assert sum(int(g.invalid.sum()) for g in gt) == 1 and all(g.path.is_file() for g in gt)
    result = widerface_ap({g.path: (g.boxes_xyxy, np.ones(len(g.boxes_xyxy))) for g in gt}, gt)
    assert result["ap_50"] == 1.0 and result["n_faces"] == 583
    assert {k: v["n"] for k, v in result["recall_by_size"].items()} == {"small": 257, "medium": 238, "large": 88}


def test_metrics_stay_torch_free():
    code = ("import sys, edgepipe.metrics.widerface, edgepipe.metrics.coco; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('edgepipe.models')]; "
            "sys.exit(str(bad) if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
