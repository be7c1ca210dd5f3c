"""Task metrics of an ONNX artifact on a real data set, through the torch-free runtime:
`evaluate(artifact, data_dir) -> EvalReport`. Face verification on an LFW-layout folder for now."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.errors import InputError, SpecError
from pipeline.runtime import FaceDetector, FaceEmbedder, load
from pipeline.runtime.faces import face_chip, nearest_face
from pipeline.runtime.postprocess import embedding_distance
from pipeline.runtime.preprocess import read_image
from pipeline.runtime.specs import EmbeddingHead

__all__ = ["evaluate", "EvalReport", "detect_layout"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalReport:
    """Task metrics of one artifact on one data set (JSON-ready)."""

    task: str
    metrics: dict
    data: str
    model: str
    precision: str
    n_pairs: int | None = None
    n_images: int | None = None
    details: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, indent=1)


def detect_layout(data_dir: Path) -> str:
    """Name the layout of a data folder: 'lfw' (images/ + pairs.txt). Raises InputError if none fits."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such data directory")
    if (data_dir / "pairs.txt").is_file() and (data_dir / "images").is_dir():
        return "lfw"
    raise InputError(f"{data_dir}: unknown data layout; expected an LFW folder (images/<Name>/<Name>_<NNNN>.jpg + pairs.txt)")


def evaluate(artifact: str | Path, data_dir: str | Path, *, detector: str | Path | None = None,
             progress: bool = True) -> EvalReport:
    """Evaluate an artifact on a data folder whose layout matches its task.

    Args:
        artifact: an edgepipe ONNX file.
        data_dir: the data set folder (see `detect_layout`).
        detector: face-detector artifact used to find and align faces for an embedder.
        progress: show a progress bar on stderr.

    Returns:
        The report.

    Raises:
        InputError: the folder is malformed. SpecError: the artifact's task does not fit the data.
        ArtifactError: an artifact does not load.
    """
    data_dir = Path(data_dir)
    layout = detect_layout(data_dir)
    model = load(artifact)
    if layout == "lfw":
        if not isinstance(model.meta.head, EmbeddingHead):
            raise SpecError(f"{artifact}: a {model.meta.task.value} model cannot be evaluated on LFW pairs; "
                            "pass a face embedder")
        if detector is None:
            raise SpecError("face verification needs --detector, the face detector artifact that aligns faces")
        return _face_verification(FaceEmbedder(model), FaceDetector.from_path(detector), data_dir, progress)
    raise InputError(f"{data_dir}: layout {layout!r} is not supported yet")


def read_lfw_pairs(data_dir: Path) -> tuple[int, list[tuple[Path, Path, bool]]]:
    """Parse LFW `pairs.txt`: (number of folds, [(image_a, image_b, same_person)])."""
    path = data_dir / "pairs.txt"
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    try:
        n_folds, per_fold = int(lines[0][0]), int(lines[0][1])
    except (IndexError, ValueError) as e:
        raise InputError(f"{path}:1: header must be '<folds> <pairs per fold>', got {' '.join(lines[0]) if lines else ''!r}") from e

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


def _face_verification(embedder: FaceEmbedder, detector: FaceDetector, data_dir: Path, progress: bool) -> EvalReport:
    n_folds, pairs = read_lfw_pairs(data_dir)
    images = sorted({p for pair in pairs for p in pair[:2]})
    embeddings, no_face = {}, []
    for path in tqdm(images, desc="embedding", unit="img", disable=not progress):
        image = read_image(path)
        centre = np.array([image.shape[1], image.shape[0]]) / 2  # LFW photos are centred on the face they are about
        face = nearest_face(detector.detect(image), centre)
        if face is None:
            # Keep the pair in the protocol: fall back to the lowest-threshold detection, then count it.
            face = nearest_face(detector.detect(image, score_thresh=0.05), centre)
            no_face.append(path.name)
        if face is None:
            raise InputError(f"no face found in {path}")
        face = detector.refine(image, face)
        embeddings[path] = embedder.embed_chips([face_chip(image, face, embedder.head)])[0]
    distances = np.array([embedding_distance(embeddings[a], embeddings[b], embedder.head.metric)[0, 0]
                          for a, b, _ in pairs])
    same = np.array([s for _, _, s in pairs])
    folds = np.arange(len(pairs)) * n_folds // len(pairs)  # pairs are stored fold by fold
    accuracies, thresholds = _kfold_accuracy(distances, same, folds)
    metrics = {"accuracy": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
               "threshold": float(np.mean(thresholds))}
    details = {"fold_accuracy": [float(a) for a in accuracies], "fold_threshold": [float(t) for t in thresholds],
               "images_without_confident_face": no_face, "detector": detector.model.meta.model_name,
               "metric": embedder.head.metric,
               "accuracy_at_model_threshold": float(((distances <= embedder.head.match_thresh) == same).mean()),
               "model_threshold": embedder.head.match_thresh}
    return EvalReport("face_verification", metrics, str(data_dir), embedder.model.meta.model_name,
                      embedder.model.meta.precision.value, n_pairs=len(pairs), details=details)


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
