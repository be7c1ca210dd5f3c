import json
import os

import numpy as np
import pytest

from edgepipe.errors import InputError
from edgepipe.runtime import FaceGallery


def _gallery():
    gallery = FaceGallery("dlib_resnet29.facerec", "euclidean", 0.6)
    gallery.enroll("ada", np.array([[0.0, 0.0], [0.1, 0.0]]))
    gallery.enroll("bob", np.array([1.0, 1.0]))
    return gallery


def test_identify_names_known_faces_and_reports_unknown_ones():
    matches = _gallery().identify(np.array([[0.05, 0.0], [1.0, 1.2], [5.0, 5.0]]))
    assert [m.name for m in matches] == ["ada", "bob", None]
    assert matches[0].distance == pytest.approx(0.05) and matches[2].nearest == "bob"
    assert _gallery().identify(np.array([[1.0, 1.2]]), threshold=0.1)[0].name is None


def test_save_load_round_trip_without_pickle(tmp_path):
    path = _gallery().save(tmp_path / "g.json")
    body = json.loads(path.read_text())
    assert body["format"] == "edgepipe-face-gallery" and sorted(body["people"]) == ["ada", "bob"]
    loaded = FaceGallery.load(path)
    assert loaded.names == ["ada", "bob"] and loaded.count("ada") == 2 and loaded.threshold == 0.6


def test_remove_and_rename():
    gallery = _gallery()
    gallery.rename("bob", "robert")
    gallery.remove("ada")
    assert gallery.names == ["robert"]
    with pytest.raises(InputError, match="no person 'ada'"):
        gallery.remove("ada")


@pytest.mark.parametrize("content, message", [
    ("{not json", "corrupt gallery file"),
    ('{"format": "something-else"}', "not an edgepipe face gallery"),
    ('{"format": "edgepipe-face-gallery", "version": 1, "model": "m", "metric": "euclidean", "threshold": 0.6,'
     ' "people": {"a": [[1, 2], [3]]}}', "corrupt gallery file"),
    ('{"format": "edgepipe-face-gallery", "version": 7}', "version 7"),
])
def test_corrupt_gallery_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "g.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        FaceGallery.load(path)


def test_unwritable_directory_leaves_nothing(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits; a path under a regular file is unwritable for anyone
        target = tmp_path / "file" / "g.json"
        (tmp_path / "file").write_text("")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = tmp_path / "ro" / "g.json"
    with pytest.raises(InputError, match="cannot write"):
        _gallery().save(target)
    assert not target.exists()


def test_a_rename_or_enrollment_that_fails_changes_nothing():
    """Issue #13: rename("bob", "  ") removed bob before it raised; a 5-d vector entered a 2-d gallery."""
    gallery = _gallery()
    for old, new, message in (("bob", "  ", "must not be empty"), ("bob", "ada", "already has a person 'ada'"),
                              ("carol", "dave", "no person 'carol'")):
        with pytest.raises(InputError, match=message):
            gallery.rename(old, new)
    assert gallery.names == ["ada", "bob"] and gallery.count("bob") == 1
    for embeddings, message in ((np.ones(5), r"do not fit this gallery \(expected \(N, 2\)\)"),
                                (np.array([np.nan, 1.0]), "NaN or infinite"), (np.zeros((0, 2)), "do not fit")):
        with pytest.raises(InputError, match=message):
            gallery.enroll("bob", embeddings)
    assert gallery.count("bob") == 1


@pytest.mark.parametrize("threshold", [float("nan"), -1.0, 0.0, float("inf")])
def test_a_threshold_that_is_no_distance_is_refused(threshold):
    with pytest.raises(InputError, match="finite distance > 0"):
        _gallery().identify(np.array([[1.0, 1.0]]), threshold=threshold)


def test_a_gallery_file_with_nan_or_mixed_sizes_is_corrupt(tmp_path):
    for people, threshold in (({"a": [[float("nan"), 1.0]]}, 0.6), ({"a": [[1.0, 2.0]], "b": [[1.0, 2.0, 3.0]]}, 0.6),
                              ({"a": [[1.0, 2.0]]}, -1)):
        body = {"format": "edgepipe-face-gallery", "version": 1, "model": "m", "metric": "euclidean",
                "threshold": threshold, "people": people}
        (tmp_path / "g.json").write_text(json.dumps(body))  # json writes NaN as NaN, which it reads back
        with pytest.raises(InputError, match="g.json: corrupt gallery file"):
            FaceGallery.load(tmp_path / "g.json")
