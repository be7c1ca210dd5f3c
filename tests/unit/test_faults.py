"""Bad input and faults (issue #13): partial files that a later run removes, destinations checked before any work,
decompression bombs refused from the header, contracts checked against the graph, binary annotation files, and
property tests at the boundaries (arrays, metadata JSON, gallery JSON, data-set files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from edgepipe.errors import ArtifactError, InputError
from edgepipe.evaluate import read_lfw_pairs
from edgepipe.metrics.coco import read_coco
from edgepipe.metrics.widerface import read_widerface_gt
from edgepipe.runtime import FaceEmbedder, FaceGallery, load
from edgepipe.runtime import preprocess as pre
from edgepipe.runtime.atomic import atomic_write, check_destination, partial_file, read_text, scratch_dir
from edgepipe.runtime.specs import ArtifactMeta, InputSpec
from tests.support.tiny import TINY_META, png_claiming, tiny_embedder

FUZZ = settings(max_examples=int(os.environ.get("EDGEPIPE_FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- partial files and scratch folders ---------------------------------------------------------------------------
def test_partial_files_are_named_for_users_and_removed_once_their_process_is_gone(tmp_path):
    target = tmp_path / "out.mp4"
    stale = tmp_path / f"out.mp4.partial-{_dead_pid()}-abc.mp4"
    live = tmp_path / f"out.mp4.partial-{os.getppid()}-def.mp4"  # a process that is still running
    other = tmp_path / "notes.partial-1-x.txt"  # another file's partial: not ours to judge
    for path in (stale, live, other):
        path.write_bytes(b"half")
    mine = partial_file(target, ".mp4")
    assert mine.name.startswith(f"out.mp4.partial-{os.getpid()}-") and mine.suffix == ".mp4"
    assert not stale.exists() and live.exists() and other.exists()
    atomic_write(target, b"whole")
    assert target.read_bytes() == b"whole" and oct(target.stat().st_mode & 0o777) != "0o600"


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_scratch_dirs_go_on_error_and_stale_ones_of_dead_processes_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"edgepipe-export-{_dead_pid()}-zz"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"x" * 100)
    with pytest.raises(KeyboardInterrupt), scratch_dir("export") as folder:
        assert folder.parent == tmp_path and not stale.exists()
        (folder / "big.onnx").write_bytes(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing, dest, folder, match", [
    ("dir/", "dir", False, "is a directory; expected a file name"),
    ("file", "file", True, "is a file; expected a folder"),
    ("file", "file/out.json", False, "cannot be created: .*file is a file"),
])
def test_destinations_are_refused_before_any_work(tmp_path, existing, dest, folder, match):
    made = tmp_path / existing.rstrip("/")
    made.mkdir() if existing.endswith("/") else made.write_text("x")
    with pytest.raises(InputError, match=match):
        check_destination(tmp_path / dest, folder=folder)
    assert check_destination(tmp_path / "new" / "deeper", folder=True) and not (tmp_path / "new").exists()


def test_unwritable_places_are_refused_even_for_root():
    with pytest.raises(InputError, match="cannot be written"):
        check_destination(Path("/proc/edgepipe/report.json"))


def test_binary_text_files_are_one_line_errors(tmp_path):
    png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    (tmp_path / "images").mkdir()
    for name in ("instances.json", "gt.txt", "pairs.txt"):
        (tmp_path / name).write_bytes(png)
    for reader in (read_coco, read_widerface_gt, read_lfw_pairs):
        with pytest.raises(InputError, match=r"not a UTF-8 text file \(byte 0x89 at offset 0\)"):
            reader(tmp_path)
    with pytest.raises(InputError, match="cannot be read"):
        read_text(tmp_path / "absent.txt")


# ---- images ------------------------------------------------------------------------------------------------------
@FUZZ
@given(arrays(st.sampled_from([np.uint8, np.float32, np.int16, np.bool_]),
              array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)))
def test_any_array_is_an_rgb_image_or_the_runtimes_own_error(image):
    try:
        rgb = pre.as_rgb(image)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[:2] == image.shape[:2]
    assert np.array_equal(rgb[..., 0], image[..., 0] if image.ndim == 3 else image)


@FUZZ
@given(arrays(np.uint8, array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=40)))
def test_any_uint8_image_runs_through_an_embedder(tmp_path_factory, image):
    embedder = _tiny_embedder(tmp_path_factory)
    try:
        embedding = embedder.embed_chips([image])
    except InputError:  # wrong size for the chip, or channels that are no image
        assert image.shape[:2] != (16, 16) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4))
        return
    assert embedding.shape == (1, 4) and np.isfinite(embedding).all()


def _tiny_embedder(factory, cache={}) -> FaceEmbedder:  # noqa: B006  (one per session)
    if "embedder" not in cache:
        cache["embedder"] = FaceEmbedder(load(tiny_embedder(factory.mktemp("tiny") / "tiny.onnx")))
    return cache["embedder"]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp"])
@FUZZ
@given(height=st.integers(1, 70), width=st.integers(1, 70))
def test_image_headers_give_the_size_before_decoding(suffix, height, width):
    data = cv2.imencode(suffix, np.full((height, width, 3), 128, np.uint8))[1].tobytes()
    assert pre._header_size(data) == (width, height)


def test_decompression_bombs_are_refused_from_their_header(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(50_000, 50_000))
    with pytest.raises(InputError, match=r"bomb.png: 50000x50000 is 2500 megapixels, over the 100 MP limit"):
        pre.read_image(bomb)
    monkeypatch.setattr(pre, "MAX_PIXELS", 3_000_000_000)  # raised: now it is decoded, and fails as a bad PNG
    with pytest.raises(InputError, match="could not be decoded"):
        pre.read_image(bomb)


# ---- contracts ---------------------------------------------------------------------------------------------------
def test_a_contract_that_disagrees_with_the_graph_is_refused_at_load(tmp_path):
    with pytest.raises(ArtifactError, match=r"graph input 'x' is \?x3x16x16 but the contract says NCHW 3x999x999"):
        load(tiny_embedder(tmp_path / "a.onnx", shape_chw=(3, 999, 999)))
    with pytest.raises(ArtifactError, match="graph input 'x' is tensor\\(float\\) but the contract says uint8"):
        load(tiny_embedder(tmp_path / "b.onnx", dtype="uint8", mean=(0, 0, 0), std=(1, 1, 1)))
    with pytest.raises(ArtifactError, match="c.onnx: malformed edgepipe metadata: InputSpec.mean, std and pad_value "
                                            "must be finite"):
        load(tiny_embedder(tmp_path / "c.onnx", contract=TINY_META.to_json().replace("127.5", "NaN", 1)))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8)


@FUZZ
@given(field=st.sampled_from(["input", "head", "task", "precision", "labels", "model_name", "contract_version"]),
       sub=st.sampled_from(["shape_chw", "mean", "std", "layout", "resize", "dtype", "dim", "metric", "kind"]),
       value=_JSON)
def test_any_mangled_contract_is_parsed_or_refused_as_an_artifact_error(field, sub, value):
    raw = json.loads(TINY_META.to_json())
    if isinstance(raw[field], dict):
        raw[field][sub] = value
    else:
        raw[field] = value
    try:
        meta = ArtifactMeta.from_json(json.dumps(raw))
    except ArtifactError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(meta.input, InputSpec) and all(np.isfinite(meta.input.mean))


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["format", "version", "model", "metric", "threshold", "people"]), _JSON)
       | _JSON)
def test_any_gallery_file_loads_or_is_refused_in_one_line(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("gallery") / "g.json"
    if isinstance(body, dict):
        body = {"format": "edgepipe-face-gallery", "version": 1, **body}
    path.write_text(json.dumps(body))
    try:
        gallery = FaceGallery.load(path)
    except InputError as e:
        assert "\n" not in str(e)
        return
    for name in gallery.names:
        assert np.isfinite(gallery.embeddings(name)).all()


# ---- data sets ---------------------------------------------------------------------------------------------------
def _coco_folder(root: Path, images: list, annotations: list, categories: list) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / "a.jpg"), np.zeros((20, 30, 3), np.uint8))
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": categories}))
    return root


IMAGE = {"id": 1, "file_name": "a.jpg", "width": 30, "height": 20}
CATEGORY = {"id": 18, "name": "dog"}
BOX = {"id": 1, "image_id": 1, "category_id": 18, "bbox": [1, 2, 10, 8], "area": 80, "iscrowd": 0}


@pytest.mark.parametrize("images, annotations, match", [
    ([], [BOX], "'images' is empty"),
    ([IMAGE], [], "'annotations' is empty"),
    ([IMAGE], [BOX, dict(BOX, bbox=[1, 2, -10, 8])], r"1 of 2 annotations are malformed, first annotations\[1\]: bbox "
                                                     "width or height <= 0"),
    ([IMAGE], [dict(BOX, category_id=3)], "category_id 3 is not in 'categories'"),
    ([IMAGE], [dict(BOX, image_id=7)], "image_id 7 is not in 'images'"),
    ([IMAGE], [dict(BOX, bbox=[1, 2, "nan", 3])], "bbox is not finite"),
])
def test_coco_sets_that_would_score_nothing_are_errors(tmp_path, images, annotations, match):
    with pytest.raises(InputError, match=match):
        read_coco(_coco_folder(tmp_path, images, annotations, [CATEGORY]))


@FUZZ
@given(annotations=st.lists(st.dictionaries(st.sampled_from(["image_id", "category_id", "bbox", "iscrowd"]),
                                            _JSON | st.lists(st.floats(), max_size=5)), max_size=4))
def test_any_coco_annotations_read_or_are_refused_in_one_line(tmp_path_factory, annotations):
    folder = _coco_folder(tmp_path_factory.mktemp("coco"), [IMAGE], annotations, [CATEGORY])
    try:
        coco = read_coco(folder)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert len(coco.images) == 1 and annotations


_LINES = st.lists(st.one_of(st.just("a.jpg"), st.integers(-2, 3).map(str),
                            st.lists(st.integers(-5, 40), min_size=0, max_size=11).map(lambda v: " ".join(map(str, v))),
                            st.text(max_size=8)), max_size=8)


@FUZZ
@given(lines=_LINES)
def test_any_widerface_ground_truth_reads_or_is_refused_in_one_line(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("wider")
    (folder / "images").mkdir()
    cv2.imwrite(str(folder / "images" / "a.jpg"), np.zeros((20, 30, 3), np.uint8))
    (folder / "gt.txt").write_text("\n".join(lines))
    try:
        gt = read_widerface_gt(folder)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert all(image.boxes_xyxy.shape[1] == 4 for image in gt)


@FUZZ
@given(lines=st.lists(st.lists(st.one_of(st.just("ada"), st.integers(-1, 3).map(str), st.text(max_size=4)),
                               max_size=5).map(" ".join), max_size=6))
def test_any_lfw_pairs_file_reads_or_is_refused_in_one_line(tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("lfw")
    (folder / "images" / "ada").mkdir(parents=True)
    for k in (1, 2):
        cv2.imwrite(str(folder / "images" / "ada" / f"ada_{k:04d}.jpg"), np.zeros((8, 8, 3), np.uint8))
    (folder / "pairs.txt").write_text("\n".join(lines))
    try:
        folds, pairs = read_lfw_pairs(folder)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert folds >= 1 and pairs and all(a.is_file() and b.is_file() for a, b, _ in pairs)
