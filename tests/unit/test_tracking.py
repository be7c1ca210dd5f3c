"""The numpy tracker: stable ids for moving objects, ByteTrack's second look at low scores, ended tracks, and
identity votes that ask for few embeddings; `video_step`'s class filter and match threshold, on fake models."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepipe.run_video import video_step
from edgepipe.runtime import Detection, Face, FaceDetector, FaceGallery, ObjectDetector
from edgepipe.runtime.tracking import IdentityVotes, Tracker, pairwise_iou


def test_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(pairwise_iou(a, b), [[50 / 150, 1, 0], [0, 0, 0]], rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), objects=st.integers(1, 6), frames=st.integers(2, 40))
def test_objects_moving_apart_keep_their_ids_whatever_the_order_of_detections(seed, objects, frames):
    rng = np.random.default_rng(seed)
    start = np.stack([np.arange(objects) * 120.0, rng.uniform(0, 50, objects)], 1)  # 120 px apart, 60 px wide
    speed = rng.uniform(-4, 4, (objects, 2))
    speed[:, 0].sort()  # apart: each moves right no faster than the one to its right, so no two ever cross
    tracker, seen = Tracker(), {}
    for f in range(frames):
        centre = start + speed * f + rng.normal(0, 1.0, (objects, 2))
        boxes = np.concatenate([centre - 30, centre + 30], 1)
        order = rng.permutation(objects)
        ids = tracker.update(boxes[order], rng.uniform(0.6, 1.0, objects)[order], ["face"] * objects)
        for obj, track_id in zip(order, ids):
            assert seen.setdefault(obj, track_id) == track_id  # no switch
    assert len(set(seen.values())) == objects


def test_a_track_survives_a_gap_up_to_max_misses_then_ends():
    tracker = Tracker(max_misses=3)
    box = np.array([[100, 100, 160, 160]], np.float32)
    first = tracker.update(box, [0.9])[0]
    for _ in range(3):
        tracker.update(np.zeros((0, 4)), [])
    assert tracker.update(box, [0.9])[0] == first
    for _ in range(4):
        tracker.update(np.zeros((0, 4)), [])
    assert tracker.update(box, [0.9])[0] != first


def test_low_scores_continue_a_track_but_never_start_one():
    tracker = Tracker(high=0.5, low=0.1)
    box = np.array([[10, 10, 50, 50]], np.float32)
    assert tracker.update(box, [0.3])[0] == -1 and not tracker.tracks  # too unsure to start
    first = tracker.update(box, [0.9])[0]
    assert tracker.update(box + 2, [0.3])[0] == first  # a half-turned face keeps its track
    assert tracker.update(box + 4, [0.05])[0] == -1  # below low: ignored, the track misses a frame
    assert tracker.tracks[0].misses == 1


def test_labels_never_share_a_track():
    tracker = Tracker()
    box = np.array([[0, 0, 40, 40]], np.float32)
    cat = tracker.update(box, [0.9], ["cat"])[0]
    assert tracker.update(box, [0.9], ["dog"])[0] != cat


@settings(max_examples=100, deadline=None)
@given(frames=st.lists(st.lists(st.tuples(st.floats(-50, 500), st.floats(-50, 500), st.floats(0, 200),
                                          st.floats(0, 200), st.floats(0, 1)), max_size=8), max_size=6))
def test_any_detections_get_one_id_each_or_none(frames):
    tracker = Tracker()
    for dets in frames:
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _ in dets], np.float32).reshape(-1, 4)
        scores = np.array([s for *_, s in dets], np.float32)
        ids = tracker.update(boxes, scores)
        assert ids.shape == (len(dets),) and ids.dtype == np.int64
        given_ids = ids[ids >= 0]
        assert len(set(given_ids.tolist())) == len(given_ids)  # one detection per track per frame
        assert ((ids >= 0) | (scores < tracker.high)).all()  # a confident detection always has a track


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="low <= high"):
        Tracker(high=0.2, low=0.5)
    with pytest.raises(ValueError, match="differ in length"):
        Tracker().update(np.zeros((2, 4)), [0.9])


def test_votes_settle_after_a_few_embeddings_then_recheck_periodically():
    votes = IdentityVotes(every=30, settle=3, share=0.7)
    asked = []
    for frame in range(100):
        if votes.needs_embedding(7, frame):
            asked.append(frame)
            votes.add(7, frame, "ann" if frame != 1 else "bob", distance=0.3, threshold=0.6)
    assert asked[:4] == [0, 1, 2, 3] and votes.name(7) == "ann"  # bob's one vote is outweighed
    assert len(asked) <= 8  # not one embedding a frame
    votes.forget(set())
    assert votes.name(7) is None and votes.needs_embedding(7, 100)


_META = SimpleNamespace(meta=SimpleNamespace(head=SimpleNamespace(score_thresh=0.5)))


class _CatAndDog(ObjectDetector):
    """The same cat and dog in every frame, filtered by `classes` as `ObjectDetector.detect` does."""

    def __init__(self):
        self.model = _META

    def detect(self, image_rgb, score_thresh=None, classes=None):
        found = [Detection(np.array([10, 10, 50, 50], np.float32), 0.9, 0, "cat"),
                 Detection(np.array([60, 10, 100, 50], np.float32), 0.8, 1, "dog")]
        return [d for d in found if classes is None or d.label in classes]


class _OneFace(FaceDetector):
    def __init__(self):
        self.model = _META

    def detect(self, image_rgb, score_thresh=None):
        return [Face(np.array([10, 10, 60, 60], np.float32), 0.9, np.zeros((5, 2), np.float32), ("k",) * 5)]

    def refine(self, image_rgb, face):
        return face


class _Embedder:
    def embed(self, image_rgb, faces):
        return np.tile(np.array([1.0, 0.0], np.float32), (len(faces), 1))  # cosine distance 0.2 from Ann's


def _rows(step, frames: int = 5) -> list[dict]:
    frame = np.zeros((120, 160, 3), np.uint8)
    return [row for index in range(frames) for row in step(frame, index)[1]]


def test_video_step_keeps_only_the_classes_asked_for():
    assert {r["label"] for r in _rows(video_step(_CatAndDog()))} == {"cat", "dog"}
    rows = _rows(video_step(_CatAndDog(), classes={"dog"}))
    assert {r["label"] for r in rows} == {"dog"} and len({r["track"] for r in rows}) == 1 and len(rows) == 5


def test_video_step_names_faces_under_the_threshold_given_else_the_gallery_s():
    gallery = FaceGallery("fake", "cosine", 0.5)
    gallery.enroll("Ann", np.array([0.8, 0.6], np.float32))

    def names(**kwargs) -> set:
        return {r["name"] for r in _rows(video_step(_OneFace(), None, _Embedder(), gallery, **kwargs))}

    assert names() == {"Ann"}  # 0.2 under the gallery's 0.5
    assert names(threshold=0.1) == {None}  # a stricter slider: unknown
    gallery.threshold = 0.1
    assert names() == {None} and names(threshold=0.3) == {"Ann"}
