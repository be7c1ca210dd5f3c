"""Any detector with keypoints aligns faces for any embedder: the points both name, a mouth centre derived from mouth
corners on either side, refused in one line when too few are shared."""

from __future__ import annotations

import numpy as np
import pytest

from edgepipe.errors import ArtifactError
from edgepipe.runtime.faces import alignment_points, face_chip
from edgepipe.runtime.results import Face
from edgepipe.runtime.specs import EmbeddingHead

BLAZEFACE_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
YUNET_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_right", "mouth_left")
DLIB = EmbeddingHead(chip_size=150, template=(("right_eye", 47.55, 46.60), ("left_eye", 100.48, 46.60),
                                              ("nose_tip", 74.01, 76.56), ("mouth", 74.01, 105.42)))
SFACE = EmbeddingHead(dim=128, metric="cosine", chip_size=112, template=(
    ("right_eye", 38.2946, 51.6963), ("left_eye", 73.5318, 51.5014), ("nose_tip", 56.0252, 71.7366),
    ("mouth_right", 41.5493, 92.3655), ("mouth_left", 70.7299, 92.2041)))


def _face(names: tuple[str, ...]) -> Face:
    points = {"right_eye": (40, 50), "left_eye": (80, 50), "nose_tip": (60, 70), "mouth": (60, 92),
              "mouth_right": (45, 92), "mouth_left": (75, 92), "right_ear": (20, 60), "left_ear": (100, 60)}
    return Face(np.array([10, 10, 110, 120], np.float32), 0.9, np.array([points[n] for n in names], np.float32), names)


@pytest.mark.parametrize("names, head, expected", [
    (BLAZEFACE_NAMES, DLIB, [(40, 50), (80, 50), (60, 70), (60, 92)]),  # as before: four named points
    (YUNET_NAMES, DLIB, [(40, 50), (80, 50), (60, 70), (60, 92)]),  # the mouth centre from YuNet's corners
    (YUNET_NAMES, SFACE, [(40, 50), (80, 50), (60, 70), (45, 92), (75, 92)]),  # all five, no derived centre
])
def test_detector_points_meet_the_template_by_name(names, head, expected):
    source, target = alignment_points(_face(names), head)
    assert source.tolist() == [list(map(float, p)) for p in expected] and len(target) == len(expected)


def test_blazeface_meets_sface_through_the_templates_mouth_centre():
    source, target = alignment_points(_face(BLAZEFACE_NAMES), SFACE)
    assert source.tolist()[-1] == [60.0, 92.0]
    assert target[-1] == pytest.approx([(41.5493 + 70.7299) / 2, (92.3655 + 92.2041) / 2])
    chip = face_chip(np.zeros((130, 130, 3), np.uint8), _face(BLAZEFACE_NAMES), SFACE)
    assert chip.shape == (112, 112, 3)


def test_too_few_shared_points_are_one_line():
    with pytest.raises(ArtifactError, match=r"they share \['right_eye', 'left_eye'\], too few to align a face"):
        alignment_points(_face(("right_eye", "left_eye", "right_ear")), SFACE)
