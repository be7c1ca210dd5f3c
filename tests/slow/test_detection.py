"""The detection path on real weights and real data: COCO mAP three ways, NMS in the graph, WIDER FACE AP."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgepipe.cli import main
from edgepipe.evaluate import evaluate, evaluate_model
from edgepipe.export import export_onnx
from edgepipe.models.weights.tfjs_graph import read_tfjs_graph
from edgepipe.runtime import ObjectDetector, load, read_image
from edgepipe.runtime.preprocess import prepare
from edgepipe.runtime.specs import ArtifactMeta
from tests.support.tfjs_numpy import run_tfjs_graph

pytestmark = pytest.mark.slow

REFERENCE_COCO = {"map_50_95": 0.2876, "map_50": 0.4687}  # ZOO.md: independent numpy run of the TF.js graph
REFERENCE_WIDER = {"blazeface_back.mediapipe": 0.3988, "blazeface_front.mediapipe": 0.0825}


@dataclass
class TfjsModel:
    """The original TF.js graph, run by the independent numpy interpreter, behind the runtime Model interface."""

    path: Path
    meta: ArtifactMeta
    precision_label: str = "tfjs-numpy"

    def __post_init__(self):
        self.graph = read_tfjs_graph(self.path)

    def run(self, batch):
        outs = [run_tfjs_graph(self.graph, {"input_1": x[None]}, [f"Identity{s}" for s in ("", "_1", "_2", "_3",
                                                                                             "_4", "_5")])
                for x in batch]
        scores = np.stack([np.concatenate(o[:3], 1)[0] for o in outs])  # strides 8, 16, 32
        distributions = np.stack([np.concatenate(o[3:], 1)[0] for o in outs])
        return [scores, distributions]


def test_coco_map_of_onnx_torch_and_tfjs_reference_agree(artifacts, shared_data, cache_dir):
    from edgepipe.models import get_spec
    from edgepipe.sources import fetch_file

    data = shared_data / "coco_val_mini"
    onnx_report = evaluate(artifacts["nanodet_g.coco"], data, progress=False)
    torch_report = evaluate(artifacts["nanodet_g.coco"], data, reference=True, progress=False)
    meta = load(artifacts["nanodet_g.coco"]).meta
    tfjs = TfjsModel(fetch_file(get_spec("nanodet_g.coco").weights, cache_dir), meta)
    tfjs_report = evaluate_model(tfjs, data, progress=False)
    assert onnx_report.n_images == 79 and onnx_report.precision == "fp32" and torch_report.precision == "torch"
    for key, reference in REFERENCE_COCO.items():
        figures = [r.metrics[key] for r in (onnx_report, torch_report, tfjs_report)]
        assert max(figures) - min(figures) <= 0.005 and all(abs(f - reference) <= 0.005 for f in figures), (key, figures)


def test_nms_in_graph_matches_numpy_with_a_dynamic_batch(artifacts, shared_data, cache_dir, tmp_path):
    images = sorted((shared_data / "coco_val_mini" / "images").glob("*.jpg"))[:6]
    nms = ObjectDetector(load(export_onnx("nanodet_g.coco", tmp_path, cache_dir=cache_dir, images=images,
                                          nms_in_graph=True).onnx_path))
    dense = ObjectDetector.from_path(artifacts["nanodet_g.coco"])
    photos = [read_image(p) for p in images]
    batch, scales = zip(*(prepare(im, nms.model.meta.input) for im in photos))
    outputs = nms.model.run(np.concatenate(batch))  # one run over all six images
    for i, image in enumerate(photos):
        meta = nms.model.meta
        together = meta.head.decode(outputs, meta, scales[i], image.shape[:2], 0.05, index=i)
        alone = nms.detect(image, 0.05)
        numpy_path = dense.detect(image, 0.05)
        assert len(together) == len(alone) == len(numpy_path) > 0
        for a, b, c in zip(together, alone, numpy_path):
            assert a.label == b.label == c.label
            assert np.abs(a.box_xyxy - c.box_xyxy).max() < 1e-2 and abs(a.score - c.score) < 1e-4
            assert np.abs(a.box_xyxy - b.box_xyxy).max() < 1e-3


@pytest.mark.parametrize("name", sorted(REFERENCE_WIDER))
def test_widerface_ap_reproduces_the_reference_runner(artifacts, shared_data, name):
    data = shared_data / "widerface_val_100"
    # The reference runner's numbers come out with nearest-neighbour resizing (front 8.25 exactly, back 39.84).
    reproduced = evaluate(artifacts[name], data, interpolation="nearest", progress=False)
    assert abs(reproduced.metrics["ap_50"] - REFERENCE_WIDER[name]) <= 0.002, reproduced.metrics
    ours = evaluate(artifacts[name], data, progress=False)  # our default: area-averaged resizing
    assert ours.n_images == 100 and ours.details["n_faces"] == 583
    assert set(ours.details["recall_by_size"]) == {"small", "medium", "large"}


def _error(capsys, code, needle):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_bad_data_folders_are_one_line_errors(artifacts, shared_data, tmp_path, capsys):
    detector = str(artifacts["nanodet_g.coco"])
    coco = tmp_path / "coco"
    (coco / "images").mkdir(parents=True)
    (coco / "instances.json").write_text('{"images": [')
    out = tmp_path / "report.json"
    _error(capsys, main(["eval", detector, "--data", str(coco), "--json", str(out)]), "instances.json")
    body = json.loads((shared_data / "coco_val_mini" / "instances.json").read_text())
    (coco / "instances.json").write_text(json.dumps(body))
    _error(capsys, main(["eval", detector, "--data", str(coco), "--json", str(out)]), "missing")
    wider = tmp_path / "wider"
    (wider / "images").mkdir(parents=True)
    source = (shared_data / "widerface_val_100" / "gt.txt").read_text().splitlines()
    (wider / "gt.txt").write_text("\n".join([source[0], "5", *source[2:4]]) + "\n")
    _error(capsys, main(["eval", str(artifacts["blazeface_back.mediapipe"]), "--data", str(wider)]), "gt.txt")
    _error(capsys, main(["run", detector, str(shared_data / "coco_val_mini" / "images" / "x.jpg"), "--out",
                         str(tmp_path / "o.jpg")]), "no such file")
    assert not out.exists()
