"""`edgepipe faces bench-gallery`: how a face gallery scales, exact search against faiss's IVF-PQ index (and
usearch's HNSW with `efs`), at sizes from thousands to millions of people: build time, memory, query p50/p99 on one
thread through `FaceGallery.identify` (the Python around the index and the exact re-rank included), and recall@1 of
the index against exact search.

The gallery is synthetic: `size` people, one 128-d unit vector each, clustered the way face embeddings are (groups of
look-alikes around shared directions); each probe is an enrolled person's vector moved by noise to cosine distance
~0.36 (a new photo of them), so every probe has a true nearest person. Checked against 559 real SFace embeddings of
the shared photos: real ones spread wider (half their variance in 30 dimensions, these in 18; 90% in 89 and 88), and
LFW's median same-person distance is 0.34, so these are no easier to search than real faces. With `real` embeddings
(for example LFW faces through the embedder), those people join the gallery (one photo each) and their other photos
are probes too. A fifth as many impostors (people never enrolled) are timed apart: an index is never sure of their
answer, so they show what its second, deeper look costs. The gallery's threshold is SFace's 0.637 (or the
embedder's with `real`). As in a gallery that grows, an index is made at `ANN_FROM` people (faiss trains its lists on
them) and the others are added to it.

The measurement runs in a child process whose BLAS and OpenMP pools have one thread, so "1 thread" is true for the
exact search's matrix product as well as for the index; building the index uses every core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgepipe.errors import BenchmarkError

__all__ = ["GalleryBenchOptions", "bench_gallery"]

SFACE_THRESHOLD = 0.637  # the synthetic probes stand at SFace's same-person distance; so does its threshold


@dataclass(frozen=True)
class GalleryBenchOptions:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    dim: int = 128
    queries: int = 1000  # timed probes per size and search
    metric: str = "cosine"
    seed: int = 0
    shares: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4)  # faiss IVF: share of its lists scanned (nprobe), on one build
    efs: tuple[int, ...] = ()  # usearch HNSW search depths measured on one build (none: usearch not measured)
    real: dict = field(default_factory=dict)  # name -> (n, dim) embeddings of real people (their first is enrolled)
    threshold: float | None = None  # the gallery's match distance (default SFace's, 0.637 cosine)

    def __post_init__(self) -> None:
        if not self.sizes or any(not isinstance(s, int) or s < 1 for s in self.sizes):
            raise BenchmarkError(f"sizes must be ints >= 1, got {self.sizes!r}")
        if not 2 <= self.dim <= 4096 or not 1 <= self.queries <= 1_000_000:
            raise BenchmarkError(f"need 2 <= dim <= 4096 and 1 <= queries <= 10^6, got {self.dim}, {self.queries}")
        if any(not isinstance(e, int) or e < 1 for e in self.efs):
            raise BenchmarkError(f"efs must be ints >= 1, got {self.efs!r}")
        if any(not 0 < s <= 1 for s in self.shares):
            raise BenchmarkError(f"shares of the lists must be in (0, 1], got {self.shares!r}")
        if not self.shares and not self.efs:
            raise BenchmarkError("nothing to compare exact search with: give shares or efs")
        if self.threshold is not None and not (np.isfinite(self.threshold) and self.threshold > 0):
            raise BenchmarkError(f"threshold must be a finite distance > 0, got {self.threshold!r}")
        if self.metric not in ("cosine", "euclidean"):
            raise BenchmarkError(f"metric must be cosine or euclidean, got {self.metric!r}")


def bench_gallery(options: GalleryBenchOptions) -> list[dict]:
    """One row per size x search ("exact", then "faiss-ivf N% lists" (that share of its lists scanned first) and
    "usearch efN" for each search depth), measured in a one-thread child process.

    Raises:
        BenchmarkError: bad options, or the child process failed (its last line).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    request = {**asdict(options), "real": {k: np.asarray(v, np.float32).tolist() for k, v in options.real.items()},
               "cores": os.cpu_count()}
    done = subprocess.run([sys.executable, "-m", "edgepipe.gallery_bench"], input=json.dumps(request), text=True,
                          capture_output=True, env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise BenchmarkError(f"the gallery benchmark failed (exit {done.returncode}): {lines[-1][:300]}")
    return json.loads(done.stdout)


def _people(size: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """`size` unit vectors in look-alike groups of about 50 around shared unit directions: 0.8 x the group's
    direction + an isotropic part of norm ~1 (cosine similarity to a group-mate ~0.4, to a stranger ~0)."""
    centres = _unit(rng.standard_normal((max(size // 50, 1), dim)).astype(np.float32))
    return _unit(0.8 * centres[rng.integers(0, len(centres), size)] + _noise(rng, size, dim, 1.0))


def _noise(rng: np.random.Generator, n: int, dim: int, norm: float) -> np.ndarray:
    return (norm / np.sqrt(dim)) * rng.standard_normal((n, dim)).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _measure(request: dict) -> list[dict]:
    from edgepipe import gallery_ann
    from edgepipe.runtime import FaceGallery
    from edgepipe.runtime.gallery import ANN_FROM
    from edgepipe.timing import machine_info

    rng = np.random.default_rng(request["seed"])
    real = {name: np.asarray(v, np.float32) for name, v in request["real"].items()}
    machine, rows = machine_info(), []
    for size in request["sizes"]:
        people = _people(size, request["dim"], rng)
        picks = rng.integers(0, size, request["queries"])
        # a new photo: cosine similarity ~0.64 to the enrolled one (distance ~0.36, as SFace's same-person pairs)
        probes = _unit(people[picks] + _noise(rng, len(picks), request["dim"], 1.2))
        truth = [f"s{i}" for i in picks]
        names = [f"s{i}" for i in range(size)] + list(real)
        vectors = [*people] + [v[0] for v in real.values()]
        for name, v in real.items():
            probes, truth = np.concatenate([probes, v[1:]]), truth + [name] * (len(v) - 1)
        # people never enrolled (impostors): their nearest is a stranger, so an index is never sure of them
        probes = np.concatenate([probes, _people(max(1, len(picks) // 5), request["dim"], rng)])
        truth += [None] * (len(probes) - len(truth))
        threshold = request["threshold"] or (SFACE_THRESHOLD if request["metric"] == "cosine"
                                             else float(np.sqrt(2 * SFACE_THRESHOLD)))  # the same on unit vectors
        exact, answers = _timed(FaceGallery("bench", request["metric"], threshold, ann_from=10**12), "exact",
                                names, vectors, probes, truth, None, None, request, machine)
        rows.append(exact)
        for kind, depths in (("faiss-ivf", request["shares"]), ("usearch", request["efs"])):
            # as a gallery grows: the index is made (and faiss's lists trained) at ANN_FROM people, the rest added
            indexed = FaceGallery("bench", request["metric"], threshold, ann_from=min(size, ANN_FROM),
                                  index_kind=kind)
            for depth in depths:  # one build, several search depths: recall against latency
                label = f"{kind} {100 * depth:g}% lists" if kind == "faiss-ivf" else f"{kind} ef{depth}"
                rows.append(_timed(indexed, label, names, vectors, probes, truth, depth, answers, request,
                                   machine)[0])
            del indexed
    del gallery_ann
    return rows


def _timed(gallery, search: str, names, vectors, probes, truth, depth, exact, request, machine) -> tuple[dict, list]:
    """Enroll (first call only), then identify every probe one at a time, timed; recall against the `exact`
    answers (None: these are the exact ones). Returns the row and the answers."""
    t0 = time.perf_counter()
    if not len(gallery):
        first = min(len(names), gallery.ann_from)
        gallery.enroll_many(names[:first], vectors[:first])
        gallery.enroll_many(names[first:], vectors[first:])
    build_s = time.perf_counter() - t0
    if depth is not None:
        lists = gallery.index.settings.get("lists")  # faiss: a share of the lists; usearch: ef itself
        gallery.index.depth = max(1, round(depth * lists)) if lists else depth
    for probe in probes[:20]:  # warm-up
        gallery.identify(probe)
    latencies, found, deeper = [], [], []
    for probe in probes:
        before = getattr(gallery.index, "deep_searches", 0)
        t0 = time.perf_counter()
        found.append(gallery.identify(probe)[0].nearest)
        latencies.append((time.perf_counter() - t0) * 1e3)
        deeper.append(getattr(gallery.index, "deep_searches", 0) > before)
    memory = (gallery.index.memory_bytes if gallery.index is not None else len(gallery) * request["dim"] * 4) / 2**20
    reference = exact if exact is not None else found
    genuine = np.array([t is not None for t in truth])
    right = np.array([a == b for a, b in zip(found, reference)])
    latencies, deeper = np.array(latencies), np.array(deeper)
    return {
        "size": len(names), "search": search, "people": len(gallery.names), "dim": request["dim"],
        "build_s": round(build_s, 3) if build_s > 1e-3 else None, "memory_mb": round(memory, 1),
        "query_ms_p50": round(float(np.percentile(latencies[genuine], 50)), 4),
        "query_ms_p99": round(float(np.percentile(latencies[genuine], 99)), 4),
        "recall_at_1": round(float(right[genuine].mean()), 4),
        "rank1_vs_truth": round(float(np.mean([a == t for a, t, g in zip(found, truth, genuine) if g])), 4),
        "deeper_share": round(float(deeper[genuine].mean()), 4),  # probes looked up again, deeper (not sure)
        "impostor_ms_p50": round(float(np.percentile(latencies[~genuine], 50)), 4),
        "impostor_deeper_share": round(float(deeper[~genuine].mean()), 4),
        "impostor_recall_at_1": round(float(right[~genuine].mean()), 4),
        "threshold": round(gallery.threshold, 4),
        "queries": int(genuine.sum()), "impostors": int((~genuine).sum()),
        "real_probes": sum(t is not None and not t.startswith("s") for t in truth),
        "index": gallery.index.settings if gallery.index is not None else None,
        "build_threads": request["cores"], "query_threads": 1, "machine": machine,
    }, found


def _worker() -> int:
    request = json.loads(sys.stdin.read())
    print(json.dumps(_measure(request)))
    return 0


if __name__ == "__main__":
    sys.exit(_worker())
