"""Open-set face identification on an LFW-layout folder (`edgepipe eval ART --data DIR --task identification`).

Protocol: people are taken in name order; every `impostor_every`-th one is never enrolled (an impostor: their
photos must come out "unknown"); each other person's first photo is enrolled into a `FaceGallery` (the product's own
search), the rest of their photos are genuine probes. Each photo's face is the detection nearest its centre (LFW
photos are centred on the face they are about), aligned and embedded as `eval`'s verification does (the same
image task, `centre_face`, on the same engine).

Figures: rank-1 accuracy (a genuine probe's nearest enrolled person is theirs, whatever the distance), and at a
threshold t: the detection-and-identification rate DIR(t) (genuine probes whose nearest person is theirs at distance
<= t) and the false-accept rate FAR(t) (impostor probes whose nearest person is within t); both at the embedder's
own threshold, and as a curve over thresholds, which the report draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.runtime import FaceGallery, InputError
from edgepipe.runtime.specs import Task

__all__ = ["identification"]

CURVE_POINTS = 41


def identification(faces, data_dir: Path, *, impostor_every: int = 5, precision: str = "fp32"):
    """Score open-set identification on `data_dir/images/<Name>/*.jpg` (see the module's protocol); `faces` runs
    the images (`evaluate`'s engine-backed runner: `faces.records("centre_face", paths)`).

    Returns:
        An `EvalReport` (task face_embedding) with metrics rank1, dir and far at the embedder's threshold, and the
        curve, counts and the impostors' names in its details.

    Raises:
        InputError: no images/ folder, fewer than two enrollable people, no impostor, or a photo with no face.
    """
    from edgepipe.evaluate import EvalReport

    root = Path(data_dir) / "images"
    people = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    photos = {p.name: sorted(p.glob("*.jpg")) for p in people}
    impostors = [name for i, name in enumerate(photos) if i % impostor_every == impostor_every - 1]
    enrolled = [name for name in photos if name not in impostors and len(photos[name]) >= 2]
    if len(enrolled) < 2 or not impostors:
        raise InputError(f"{data_dir}: identification needs images/<Name>/*.jpg with at least two people of two or "
                         f"more photos and one impostor (every {impostor_every}th person); found {len(people)} "
                         f"people, {len(enrolled)} enrollable, {len(impostors)} impostors")
    wanted = [(name, path) for name in [*enrolled, *impostors] for path in photos[name]]
    vectors = {}
    for path, rec in faces.records("centre_face", [path for _, path in wanted]).items():
        if rec["error"]:
            raise InputError(rec["error"])
        vectors[Path(path)] = np.array(rec["embeddings"][0], np.float32)
    head = faces.embedder_head
    gallery = FaceGallery(faces.model.meta.model_name, head.metric, head.match_thresh)
    gallery.enroll_many(enrolled, [vectors[photos[name][0]] for name in enrolled])
    genuine = [(name, vectors[p]) for name in enrolled for p in photos[name][1:]]
    impostor = [vectors[p] for name in impostors for p in photos[name]]
    # the nearest person and the distance to them, whatever the threshold
    matches = gallery.identify(np.stack([v for _, v in genuine]), threshold=np.finfo(np.float64).max)
    hits = np.array([m.nearest == name for m, (name, _) in zip(matches, genuine)])
    found = np.array([m.distance for m in matches])
    impostor_distances = np.array([m.distance for m in gallery.identify(np.stack(impostor),
                                                                        threshold=np.finfo(np.float64).max)])
    threshold = gallery.threshold
    top = max(float(found.max()), float(impostor_distances.max()), threshold) * 1.05
    curve = [{"threshold": round(float(t), 4), "dir": float(np.mean(hits & (found <= t))),
              "far": float(np.mean(impostor_distances <= t))} for t in np.linspace(0, top, CURVE_POINTS)]
    metrics = {"rank1": float(hits.mean()), "dir": float(np.mean(hits & (found <= threshold))),
               "far": float(np.mean(impostor_distances <= threshold)), "threshold": threshold}
    details = {"protocol": f"first photo enrolled, the rest probes; every {impostor_every}th person an impostor",
               "enrolled": len(enrolled), "impostors": impostors, "genuine_probes": len(genuine),
               "impostor_probes": len(impostor), "metric": head.metric, "detector": faces.detector_name,
               "curve": curve}
    return EvalReport(Task.FACE_EMBEDDING, metrics, str(data_dir), faces.model.meta.model_name, precision,
                      n_images=len(wanted), details=details)
