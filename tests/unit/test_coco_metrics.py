"""COCO reader errors, the 80-class tables, and pycocotools mAP on a tiny synthetic set."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgepipe.errors import InputError
from edgepipe.metrics.coco import COCO80_LABELS, COCO80_TO_CATEGORY_ID, CocoSet, coco_map, read_coco

BOXES = [(1, 1, [10, 20, 60, 80]), (1, 3, [100, 40, 120, 100]), (2, 1, [5, 5, 200, 150])]  # (image, category, xywh)


def write_coco(root: Path, boxes=BOXES, files=("a.jpg", "b.jpg")) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in files:
        cv2.imwrite(str(root / "images" / name), np.full((240, 320, 3), 127, np.uint8))
    dataset = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 320, "height": 240},
                   {"id": 2, "file_name": "b.jpg", "width": 320, "height": 240}],
        "annotations": [{"id": k + 1, "image_id": image_id, "category_id": category_id, "bbox": bbox,
                         "area": bbox[2] * bbox[3], "iscrowd": 0}
                        for k, (image_id, category_id, bbox) in enumerate(boxes)],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    (root / "instances.json").write_text(json.dumps(dataset))
    return root


def as_detections(boxes, shift_px=0.0):
    return [{"image_id": image_id, "category_id": category_id, "bbox": [bbox[0] + shift_px, *bbox[1:]], "score": 0.9}
            for image_id, category_id, bbox in boxes]


def test_read_coco_returns_images_and_categories(tmp_path):
    coco_set = read_coco(write_coco(tmp_path))
    assert isinstance(coco_set, CocoSet) and coco_set.instances_path == tmp_path / "instances.json"
    images = tmp_path / "images"
    assert coco_set.images == ((1, images / "a.jpg", 320, 240), (2, images / "b.jpg", 320, 240))
    assert coco_set.categories == {1: "person", 3: "car"}


def test_perfect_detections_score_one_and_shifted_ones_less(tmp_path):
    coco_set = read_coco(write_coco(tmp_path))
    perfect = coco_map(coco_set, as_detections(BOXES))
    assert perfect["map_50_95"] == pytest.approx(1.0) and perfect["map_50"] == pytest.approx(1.0)
    assert perfect["map_medium"] == pytest.approx(1.0) and perfect["map_large"] == pytest.approx(1.0)
    assert perfect["map_small"] is None  # no ground truth under 32^2 px: COCOeval's -1
    shifted = coco_map(coco_set, as_detections(BOXES, shift_px=8.0))
    assert 0.0 <= shifted["map_50_95"] < perfect["map_50_95"]
    assert shifted["map_50"] == pytest.approx(1.0)  # IoU stays >= 0.5 after an 8 px shift
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in shifted.values() if v is not None)


def test_empty_detections_score_zero_quietly(tmp_path, capsys):
    result = coco_map(read_coco(write_coco(tmp_path)), [])
    assert result == {"map_50_95": 0.0, "map_50": 0.0, "map_75": 0.0, "map_small": None, "map_medium": 0.0,
                      "map_large": 0.0}
    coco_map(read_coco(tmp_path), as_detections(BOXES))
    assert capsys.readouterr().out == ""


def test_detection_errors_name_the_entry(tmp_path):
    coco_set = read_coco(write_coco(tmp_path))
    with pytest.raises(InputError, match=r"detections\[0\]: missing keys \['score'\]"):
        coco_map(coco_set, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(InputError, match=r"detections\[1\]: image_id 7 is not in"):
        coco_map(coco_set, as_detections(BOXES[:1]) + [dict(as_detections(BOXES[:1])[0], image_id=7)])
    with pytest.raises(InputError, match=r"detections\[0\]: category_id 2 is not in .*COCO80_TO_CATEGORY_ID"):
        coco_map(coco_set, [dict(as_detections(BOXES[:1])[0], category_id=2)])
    with pytest.raises(InputError, match=r"detections\[0\]: bbox must be \[x, y, w, h\]"):
        coco_map(coco_set, [dict(as_detections(BOXES[:1])[0], bbox=[1, 2, 3])])


def test_broken_json_names_the_file_and_position(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "instances.json").write_text('{"images": [}')
    with pytest.raises(InputError, match=r"instances\.json: not valid JSON: .* at line 1 column 13"):
        read_coco(tmp_path)


def test_json_without_required_keys(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "instances.json").write_text('{"images": [], "categories": []}')
    with pytest.raises(InputError, match=r"instances\.json: missing or non-list keys \['annotations'\]"):
        read_coco(tmp_path)


def test_missing_image_and_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"instances\.json: no such annotation file"):
        read_coco(tmp_path)
    with pytest.raises(InputError, match=r"instances\.json: 1 of 2 listed images are missing, first: .*b\.jpg"):
        read_coco(write_coco(tmp_path, files=("a.jpg",)))


def test_malformed_image_entry(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "instances.json").write_text('{"images": [{"id": 1}], "annotations": [], "categories": []}')
    with pytest.raises(InputError, match=r"images\[0\] needs 'id', 'file_name', 'width' and 'height'"):
        read_coco(tmp_path)


def test_coco80_tables_match_the_official_categories(shared_data):
    categories = json.loads((shared_data / "coco_val_mini" / "instances.json").read_text())["categories"]
    ordered = sorted(categories, key=lambda c: c["id"])
    assert list(COCO80_LABELS) == [c["name"] for c in ordered] and len(COCO80_LABELS) == 80
    assert COCO80_TO_CATEGORY_ID == {k: c["id"] for k, c in enumerate(ordered)}


def test_real_coco_val_mini(shared_data):
    coco_set = read_coco(shared_data / "coco_val_mini")
    assert len(coco_set.images) == 79 and len(coco_set.categories) == 80
    assert all(path.is_file() for _, path, _, _ in coco_set.images)
