"""Training NanoDet-g on real WIDER FACE images: the loss falls, bad input fails in one line with no checkpoint,
the split keeps events apart, and a checkpoint exports with its own labels."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edgepipe.cli import main
from edgepipe.models import build, get_spec
from edgepipe.models.training.checkpoint import save_checkpoint
from edgepipe.models.training.data import BoxAugment, read_box_set
from edgepipe.models.training.detection import DetectionRecipe

NAME = "nanodet_g.coco"
pytestmark = pytest.mark.slow  # every test here reads real WIDER FACE images, most with the zoo weights


@pytest.fixture(scope="module")
def wider_split(shared_data, tmp_path_factory):
    from edgepipe.train import split_data

    out = tmp_path_factory.mktemp("split") / "faces"
    counts = split_data(shared_data / "widerface_val_100", out, val_fraction=0.3, seed=0)
    return out, counts


def test_split_keeps_events_apart(wider_split, shared_data):
    out, counts = wider_split
    train_events = {p.name for p in (out / "train" / "images").iterdir()}
    val_events = {p.name for p in (out / "val" / "images").iterdir()}
    assert not train_events & val_events
    assert val_events == set(counts["val_events"])
    assert counts["train"] + counts["val"] == 100 and counts["val"] >= 30
    train, val = read_box_set(out / "train"), read_box_set(out / "val")
    assert len(train.samples) == counts["train"] and len(val.samples) == counts["val"]
    assert train.n_boxes + val.n_boxes == read_box_set(shared_data / "widerface_val_100").n_boxes


def test_a_few_steps_on_real_images_lower_the_loss(shared_data, cache_dir):
    spec = get_spec(NAME)
    data = read_box_set(shared_data / "widerface_val_100")
    data = type(data)(data.root, data.layout, data.labels, data.samples[:4])
    torch.manual_seed(0)
    model = build(NAME, cache_dir=cache_dir, labels=data.labels).train()
    recipe = DetectionRecipe(model, spec, data, BoxAugment(enabled=False))
    batch = next(recipe.batches(np.random.default_rng(0), 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        parts = recipe.loss(model, batch)
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        losses.append(float(parts["loss"].detach()))
    assert parts["positives"] > 0
    assert losses[-1] < 0.8 * losses[0], losses


def test_augmentation_keeps_boxes_on_the_faces(shared_data):
    spec = get_spec(NAME)
    data = read_box_set(shared_data / "widerface_val_100")
    sample = max(data.samples, key=lambda s: len(s.boxes_xyxy))
    rng = np.random.default_rng(0)
    plain, boxes, _ = BoxAugment(enabled=False)(sample, spec.input, rng)
    assert plain.shape == (3, 416, 416) and len(boxes) == len(sample.boxes_xyxy)
    for _ in range(5):
        pixels, boxes, classes = BoxAugment()(sample, spec.input, rng)
        assert pixels.shape == (3, 416, 416) and np.isfinite(pixels).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= 416).all() and (boxes[:, 3] <= 416).all()
        assert len(boxes) == len(classes) and (classes == 0).all()


def _coco(folder, categories, shared_data, bbox=(10, 10, 20, 20)):
    (folder / "images").mkdir(parents=True)
    source = sorted((shared_data / "coco_val_mini" / "images").glob("*.jpg"))[0]
    shutil.copy(source, folder / "images" / "a.jpg")
    import cv2

    h, w = cv2.imread(str(source)).shape[:2]
    (folder / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": categories[0][0], "bbox": list(bbox), "area": 1,
                         "iscrowd": 0}],
        "categories": [{"id": i, "name": n} for i, n in categories],
    }))
    return folder


def _train_cli(capsys, data, val, out, *extra):
    code = main(["train", NAME, "--data", str(data), "--val", str(val), "--out", str(out), *extra])
    return code, capsys.readouterr().err.strip().splitlines()


def test_bad_training_input_is_one_line_and_writes_nothing(tmp_path, shared_data, capsys):
    good = _coco(tmp_path / "good", [(1, "cat")], shared_data)
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    cases = [
        ((empty, good), "no annotations; expected images/ with instances.json (COCO) or gt.txt"),
        ((_coco(tmp_path / "outside", [(1, "cat")], shared_data, bbox=(10, 10, 5000, 20)), good),
         "lies outside its"),
        ((good, _coco(tmp_path / "dog", [(1, "dog")], shared_data)), "the classes differ between train (1: cat) "
                                                                      "and val (1: dog)"),
    ]
    for (data, val), message in cases:
        code, err = _train_cli(capsys, data, val, out, "--epochs", "1")
        assert code == 2 and len(err) == 1 and message in err[0], err
    code, err = _train_cli(capsys, good, good, out, "--epochs", "0")
    assert code == 2 and err == ["edgepipe: error: epochs must be an integer >= 1, got 0"]
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    code, err = _train_cli(capsys, good, good, out, "--resume", str(truncated))
    assert code == 2 and len(err) == 1 and "not a readable safetensors checkpoint" in err[0]
    other = save_checkpoint(tmp_path / "other.safetensors", {"model": "blazeface_back.mediapipe", "labels": ["face"],
                                                             "settings": {"epochs": 3}}, {})
    code, err = _train_cli(capsys, good, good, out, "--resume", str(other))
    assert code == 2 and len(err) == 1
    assert "a checkpoint of 'blazeface_back.mediapipe', not of 'nanodet_g.coco'" in err[0]
    assert not out.exists()
    out.mkdir()
    (out / "last.safetensors").write_bytes(b"")
    code, err = _train_cli(capsys, good, good, out, "--epochs", "1")
    assert code == 2 and len(err) == 1 and "already holds a training run (last.safetensors); pass --resume" in err[0]


def test_train_one_epoch_then_export_with_the_data_labels(wider_split, tmp_path, cache_dir, shared_data, capsys):
    """The CLI end to end on a slice: train, resume for one more epoch, export the best checkpoint; the artifact
    carries 'face' and `eval` scores it on WIDER FACE."""
    out, _ = wider_split
    small = tmp_path / "small"
    from edgepipe.train import split_data

    split_data(out / "train", small, val_fraction=0.85, seed=0)  # a handful of training images: 1 epoch is quick
    run = tmp_path / "run"
    code, err = _train_cli(capsys, small / "train", out / "val", run, "--epochs", "1", "--batch", "4")
    assert code == 0, err
    code, err = _train_cli(capsys, small / "train", out / "val", tmp_path / "again", "--epochs", "1", "--batch", "4")
    assert code == 0, err
    from edgepipe.models.training.checkpoint import read_checkpoint

    first, again = read_checkpoint(run / "last.safetensors"), read_checkpoint(tmp_path / "again" / "last.safetensors")
    for key, tensor in first.raw_weights.items():  # deterministic on CPU for a seed
        assert torch.equal(tensor, again.raw_weights[key]), key
    code, err = _train_cli(capsys, small / "train", out / "val", run, "--epochs", "2", "--resume",
                           str(run / "last.safetensors"))
    assert code == 0, err
    assert main(["export", NAME, "--weights", str(run / "best.safetensors"), "--out", str(tmp_path / "art")]) == 0
    onnx_path = tmp_path / "art" / f"{NAME}.fp32.onnx"
    from edgepipe.evaluate import evaluate
    from edgepipe.runtime import load

    meta = load(onnx_path).meta
    assert meta.labels == ("face",) and meta.source_file == "best.safetensors"
    report = evaluate(onnx_path, out / "val", progress=False)
    assert report.task == "face_detection" and 0.0 <= report.metrics["ap_50"] <= 1.0
    from edgepipe.build import build_models

    coco = _coco(tmp_path / "cats", [(1, "cat")], shared_data)  # no class in common with a face detector: skipped
    rows = build_models([NAME], tmp_path / "built", data_dirs=(out / "val", coco), cache_dir=cache_dir, bench=False,
                        weights=run / "best.safetensors", progress=False)
    assert rows[0].metric == f"ap_50 {100 * report.metrics['ap_50']:.2f}% (val)"
