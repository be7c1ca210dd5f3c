"""Task metrics of an ONNX artifact on a real data set, through the torch-free runtime:
`evaluate(artifact, data_dir) -> EvalReport`: face verification (LFW layout), object detection (COCO layout,
scored by pycocotools) and face detection (WIDER FACE layout, AP@0.5)."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgepipe.engine import Engine, map_images
from edgepipe.errors import InputError, SpecError
from edgepipe.image_tasks import FALLBACK_NOTE, ImageTask, TaskSpec
from edgepipe.metrics.coco import coco_map, read_coco
from edgepipe.metrics.widerface import read_widerface_gt, widerface_ap
from edgepipe.runtime import FaceDetector, FaceEmbedder, ObjectDetector, load
from edgepipe.runtime.atomic import read_text
from edgepipe.runtime.postprocess import embedding_distance
from edgepipe.runtime.specs import Task

__all__ = ["evaluate", "evaluate_model", "EvalReport"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalReport:
    """Task metrics of one artifact on one data set (JSON-ready)."""

    task: Task  # the task scored: face verification on LFW pairs is the embedder's task, face_embedding
    metrics: dict
    data: str
    model: str
    precision: str
    n_pairs: int | None = None
    n_images: int | None = None
    details: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, indent=1)


_LAYOUTS = {  # marker file next to images/ -> layout
    "pairs.txt": "lfw",  # images/<Name>/<Name>_<NNNN>.jpg: face verification
    "instances.json": "coco",  # images/*.jpg: object detection
    "gt.txt": "widerface",  # images/<event>/*.jpg, official bbx_gt layout: face detection
}
EVAL_SCORE_FLOOR = 0.05  # detections below this score are not scored (the reference figures' protocol)


def detect_layout(data_dir: Path) -> str:
    """Name the layout of a data folder: 'lfw', 'coco' or 'widerface'. Raises InputError if none fits."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such data directory")
    for marker, layout in _LAYOUTS.items():
        if (data_dir / marker).is_file() and (data_dir / "images").is_dir():
            return layout
    raise InputError(f"{data_dir}: unknown data layout; expected images/ plus one of {', '.join(_LAYOUTS)} "
                     "(LFW pairs, COCO instances, WIDER FACE ground truth)")


def evaluate(artifact: str | Path, data_dir: str | Path, *, detector: str | Path | None = None,
             interpolation: str | None = None, reference: bool = False, progress: bool = True,
             task: str | None = None, engine: Engine = Engine()) -> EvalReport:
    """Evaluate an artifact on a data folder whose layout matches its task.

    Args:
        artifact: an edgepipe ONNX file.
        data_dir: the data set folder (see `detect_layout`).
        detector: face-detector artifact used to find and align faces for an embedder.
        interpolation: override the artifact's resize interpolation (e.g. "nearest", to reproduce a reference
            runner that resized that way).
        reference: evaluate the source PyTorch model the artifact was exported from (the zoo weights), through the
            same runtime pre- and post-processing, instead of the ONNX file.
        progress: show a progress bar on stderr.
        task: "identification" scores open-set identification on an LFW-layout folder (`edgepipe.identification`)
            instead of the task its layout implies.
        engine: where the images are run (`edgepipe.engine`): local (default) or on Ray; the same records either
            way, scored by the same code here.

    Returns:
        The report.

    Raises:
        InputError: the folder is malformed. SpecError: the artifact's task does not fit the data.
        ArtifactError: an artifact does not load.
    """
    if engine.kind != "local" and (reference or interpolation is not None):
        raise SpecError("--reference and --interpolation change the model in this process: run them with "
                        "--engine local")
    if task == "identification":
        return _identification(artifact, Path(data_dir), detector, progress, engine)
    detect_layout(Path(data_dir))  # a bad folder fails before the model loads
    model = load(artifact)
    if reference:
        model = _torch_reference(model)
    if interpolation is not None:
        model = dataclasses.replace(model, meta=dataclasses.replace(
            model.meta, input=dataclasses.replace(model.meta.input, interpolation=interpolation)))
    return evaluate_model(model, data_dir, detector=detector, progress=progress, engine=engine)


def _identification(artifact, data_dir: Path, detector, progress: bool, engine: Engine) -> EvalReport:
    from edgepipe.identification import identification

    model = load(artifact)
    if model.meta.head.task != Task.FACE_EMBEDDING:
        raise SpecError(f"{artifact}: identification needs a face embedder, not a {model.meta.task.value} model")
    if detector is None:
        raise SpecError("identification needs a face detector to align faces: pass --detector")
    faces = _Images(model, detector, engine, progress)
    return identification(faces, data_dir, precision=_precision(model))


class _Images:
    """Runs one kind of image task over paths on the engine: locally on the models open here, on Ray from their
    paths; `records(kind, paths, **options) -> {path: record}`."""

    def __init__(self, model, detector: str | Path | None, engine: Engine, progress: bool):
        self.model, self.detector, self.engine, self.progress = model, detector, engine, progress
        self._face_detector = None

    @property
    def face_detector(self) -> FaceDetector:
        """The --detector that aligns faces for an embedder, opened once."""
        if self._face_detector is None:
            self._face_detector = FaceDetector.from_path(self.detector)
        return self._face_detector

    def records(self, kind: str, paths: list[Path], *, score_thresh: float | None = None,
                classes: tuple[str, ...] | None = None) -> dict[str, dict]:
        embedder = kind in ("centre_face", "largest_face")
        if self.engine.kind == "local":
            if embedder:
                task = ImageTask(kind, detector=self.face_detector, embedder=FaceEmbedder(self.model),
                                 score_thresh=score_thresh)
            else:
                detector = ObjectDetector(self.model) if self.model.meta.head.task == Task.DETECTION \
                    else FaceDetector(self.model)
                task = ImageTask(kind, detector=detector, score_thresh=score_thresh, classes=classes)
        else:
            task = TaskSpec(kind, str(self.model.path), detector=str(self.detector) if embedder else None,
                            score_thresh=score_thresh, classes=classes)
        return {rec["image"]: rec for rec in map_images(task, paths, self.engine, progress=self.progress)}

    @property
    def embedder_head(self):
        return self.model.meta.head

    @property
    def detector_name(self) -> str:
        return self.face_detector.model.meta.model_name


def evaluate_model(model, data_dir: str | Path, *, detector: str | Path | None = None,
                   progress: bool = True, engine: Engine = Engine()) -> EvalReport:
    """`evaluate` for an already-open model: anything with the runtime `Model` interface (`path`, `meta`,
    `run(batch)`), such as an onnxruntime session, the PyTorch reference or an independent reference runner.
    With a Ray `engine` each actor opens `model.path` itself."""
    data_dir = Path(data_dir)
    layout = detect_layout(data_dir)
    artifact = model.path
    images = _Images(model, detector, engine, progress)
    if layout == "lfw":
        if model.meta.head.task != Task.FACE_EMBEDDING:
            raise SpecError(f"{artifact}: a {model.meta.task.value} model cannot be evaluated on LFW pairs; "
                            "pass a face embedder")
        if detector is None:
            raise SpecError("face verification needs a face detector to align faces: pass --detector (none was found "
                            "beside the embedder or in CACHE/artifacts)")
        return _face_verification(images, data_dir)
    if layout == "coco":
        if model.meta.head.task != Task.DETECTION:
            raise SpecError(f"{artifact}: a {model.meta.task.value} model cannot be scored on COCO boxes; "
                            "pass an object detector")
        return _coco_detection(images, data_dir)
    if model.meta.head.task == Task.FACE_DETECTION:
        return _face_detection(images, data_dir, "faces")
    if model.meta.head.task == Task.DETECTION and "face" in model.meta.labels:
        return _face_detection(images, data_dir, "detect")
    raise SpecError(f"{artifact}: WIDER FACE needs a face detector (or a box detector with a 'face' label); "
                    f"this is {model.meta.model_name} with labels {list(model.meta.labels)[:5]}")


def _precision(model) -> str:
    """The artifact's precision, or 'torch' when the PyTorch reference ran."""
    return getattr(model, "precision_label", None) or model.meta.precision.value


def _torch_reference(model):
    """The zoo PyTorch model behind `model`'s artifact, wrapped to run like an onnxruntime session."""
    from edgepipe.models import build
    from edgepipe.parity import TorchModel

    meta = model.meta
    if getattr(meta.head, "mode", "dense") == "nms":  # the source module gives the dense outputs
        meta = dataclasses.replace(meta, head=dataclasses.replace(meta.head, mode="dense",
                                                                  outputs=("scores", "distributions")))
    return TorchModel(model.path, meta, build(meta.model_name))


def _face_detection(images: _Images, data_dir: Path, kind: str) -> EvalReport:
    gt = read_widerface_gt(data_dir)
    found = images.records(kind, [entry.path for entry in gt], score_thresh=EVAL_SCORE_FLOOR,
                           classes=("face",) if kind == "detect" else None)
    detections = {}
    for entry in gt:
        rec = found[str(entry.path)]
        if rec["error"]:
            raise InputError(rec["error"])
        detections[entry.path] = (np.array(rec["boxes"], np.float32).reshape(-1, 4),
                                  np.array(rec["scores"], np.float32))
    figures = widerface_ap(detections, gt)
    metrics = {"ap_50": figures.pop("ap_50"), "recall": figures.pop("recall")}
    meta = images.model.meta
    details = {**figures, "score_floor": EVAL_SCORE_FLOOR, "protocol": "VOC all-point AP at IoU 0.5 over faces with "
               "invalid == 0; detections matching invalid faces ignored"}
    details["interpolation"] = meta.input.interpolation
    return EvalReport(Task.FACE_DETECTION, metrics, str(data_dir), meta.model_name, _precision(images.model),
                      n_images=len(gt), details=details)


def _coco_detection(images: _Images, data_dir: Path) -> EvalReport:
    coco = read_coco(data_dir)
    detector = ObjectDetector(images.model)
    category_of = {name: cid for cid, name in coco.categories.items()}  # our labels -> the data set's ids
    unmatched = sorted(set(detector.labels) - set(category_of))
    if len(unmatched) == len(set(detector.labels)):
        raise InputError(f"{coco.instances_path}: none of its categories ({', '.join(sorted(category_of)[:5])}"
                         f"{', ...' if len(category_of) > 5 else ''}) is a label of {detector.model.meta.model_name} "
                         f"({', '.join(detector.labels[:5])}{', ...' if len(detector.labels) > 5 else ''}): "
                         "nothing could be scored")
    found = images.records("detect", [path for _, path, _, _ in coco.images], score_thresh=EVAL_SCORE_FLOOR)
    detections = []
    for image_id, path, _, _ in coco.images:
        rec = found[str(path)]
        if rec["error"]:
            raise InputError(rec["error"])
        for (x1, y1, x2, y2), score, label in zip(rec["boxes"], rec["scores"], rec["labels"]):
            if label in category_of:
                detections.append({"image_id": image_id, "category_id": category_of[label],
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    figures = coco_map(coco, detections)
    metrics = {k: figures[k] for k in ("map_50_95", "map_50", "map_small", "map_medium", "map_large")}
    meta = detector.model.meta
    details = {"map_75": figures.get("map_75"), "n_detections": len(detections), "score_floor": EVAL_SCORE_FLOOR,
               "labels_not_in_data": unmatched, "evaluator": "pycocotools COCOeval (bbox)",
               "preprocess": meta.input.resize.value, "interpolation": meta.input.interpolation}
    return EvalReport(Task.DETECTION, metrics, str(data_dir), meta.model_name, _precision(detector.model),
                      n_images=len(coco.images), details=details)


def read_lfw_pairs(data_dir: Path) -> tuple[int, list[tuple[Path, Path, bool]]]:
    """Parse LFW `pairs.txt`: (number of folds, [(image_a, image_b, same_person)])."""
    path = data_dir / "pairs.txt"
    lines = [line.split() for line in read_text(path).splitlines() if line.strip()]
    try:
        n_folds, per_fold = int(lines[0][0]), int(lines[0][1])
    except (IndexError, ValueError) as e:
        raise InputError(f"{path}:1: header must be '<folds> <pairs per fold>', got {' '.join(lines[0]) if lines else ''!r}") from e
    if n_folds < 1 or per_fold < 1:
        raise InputError(f"{path}:1: header must promise >= 1 fold of >= 1 pair, got {n_folds} {per_fold}")

    def image(name: str, number: str) -> Path:
        return data_dir / "images" / name / f"{name}_{int(number):04d}.jpg"

    pairs = []
    for lineno, fields in enumerate(lines[1:], start=2):
        try:
            if len(fields) == 3:
                pairs.append((image(fields[0], fields[1]), image(fields[0], fields[2]), True))
            elif len(fields) == 4:
                pairs.append((image(fields[0], fields[1]), image(fields[2], fields[3]), False))
            else:
                raise ValueError(f"{len(fields)} fields")
        except ValueError as e:
            raise InputError(f"{path}:{lineno}: expected 'name i j' or 'name1 i name2 j', got {' '.join(fields)!r}") from e
    if len(pairs) != n_folds * per_fold * 2:
        raise InputError(f"{path}: header promises {n_folds} x 2 x {per_fold} pairs, found {len(pairs)}")
    missing = sorted({str(p) for pair in pairs for p in pair[:2] if not p.is_file()})
    if missing:
        raise InputError(f"{path}: {len(missing)} listed images are missing, first: {missing[0]}")
    return n_folds, pairs


def _face_verification(images: _Images, data_dir: Path) -> EvalReport:
    n_folds, pairs = read_lfw_pairs(data_dir)
    # LFW photos are centred on the face they are about; a photo with no confident face keeps its pairs in the
    # protocol through the lowest-threshold detection, and is counted
    found = images.records("centre_face", sorted({p for pair in pairs for p in pair[:2]}))
    embeddings, no_face = {}, []
    for path, rec in sorted(found.items()):
        if rec["error"]:
            raise InputError(rec["error"])
        if rec["note"] == FALLBACK_NOTE:
            no_face.append(Path(path).name)
        embeddings[path] = np.array(rec["embeddings"][0], np.float32)
    head = images.embedder_head
    distances = np.array([embedding_distance(embeddings[str(a)], embeddings[str(b)], head.metric)[0, 0]
                          for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    folds = np.arange(len(pairs)) * n_folds // len(pairs)  # pairs are stored fold by fold
    accuracies, thresholds = _kfold_accuracy(distances, same, folds)
    metrics = {"accuracy": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
               "threshold": float(np.mean(thresholds))}
    details = {"fold_accuracy": [float(a) for a in accuracies], "fold_threshold": [float(t) for t in thresholds],
               "images_without_confident_face": no_face, "detector": images.detector_name,
               "metric": head.metric, "accuracy_at_model_threshold": float(((distances <= head.match_thresh) == same).mean()),
               "model_threshold": head.match_thresh}
    return EvalReport(Task.FACE_EMBEDDING, metrics, str(data_dir), images.model.meta.model_name,
                      _precision(images.model), n_pairs=len(pairs), details=details)


def _kfold_accuracy(distances: np.ndarray, same: np.ndarray, folds: np.ndarray):
    """LFW protocol: per fold, pick the threshold that is best on the other folds, score it on this fold."""
    candidates = np.unique(distances)
    candidates = np.concatenate([candidates, [candidates[-1] + 1e-6]])
    accuracies, thresholds = [], []
    for k in np.unique(folds):
        train = folds != k
        train_acc = ((distances[train][None, :] <= candidates[:, None]) == same[train][None, :]).mean(1)
        best = candidates[np.flatnonzero(train_acc == train_acc.max())]
        threshold = float(best[len(best) // 2])  # middle of the best plateau, not its edge
        thresholds.append(threshold)
        accuracies.append(float(((distances[~train] <= threshold) == same[~train]).mean()))
    return accuracies, thresholds
