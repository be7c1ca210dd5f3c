"""Approximate nearest-neighbour indexes behind a large `FaceGallery`: importing this module registers them, so the
CLI, the evaluator and the benchmark, which import it, build and read galleries with an index; the torch-free
runtime itself never imports faiss or usearch and searches exactly where they are absent.

New galleries use "faiss-ivf": faiss's inverted file of 4-bit product-quantised codes scanned with SIMD
(`IVF<lists>,PQ32x4fs`, 16 bytes a vector), whose best `candidates` the gallery re-ranks exactly with its own
vectors, looking again `DEEPER` times deeper when an answer is not sure (`FaceGallery.nearest`). Chosen by
`edgepipe faces bench-gallery` (README "Large face galleries"): on face-like embeddings, whose variance fills most of
the 128 dimensions (real SFace faces: half the variance in 30 dims, 90% in 89), it beats usearch's HNSW at 10^5
(recall@1 0.999 in 0.27 ms vs 0.987 in 1.7 ms at ef 128) and 10^6 (0.995 in 0.48 ms vs 0.872 in 8.3 ms at ef 256),
builds in 39 s instead of 27 min at 10^6, adds and removes in place and serialises to bytes (no pickle). How deep it
looks first is `depth` (faiss's nprobe: lists scanned, default 1/16 of them). usearch's HNSW ("usearch") stays
registered: galleries written with it still load, and the benchmark measures it beside faiss with `--ef`.
"""

from __future__ import annotations

import faiss
import numpy as np
from usearch.index import Index

from edgepipe.runtime.gallery import register_index

__all__ = ["FaissIvfIndex", "UsearchIndex", "CONNECTIVITY", "EXPANSION_ADD", "EXPANSION_SEARCH"]

CONNECTIVITY = 16  # HNSW's M
EXPANSION_ADD = 128  # efConstruction
EXPANSION_SEARCH = 128  # ef: recall@1 0.994 against exact at 10^5, 2.2 ms vs 8.1 (faces bench-gallery)
# cosine: unit vectors under inner product (measured 1.6x faster per query than usearch's own "cos", same recall)
_METRICS = {"cosine": "ip", "euclidean": "l2sq"}
DEEPER = 8  # an unsure answer's second look scans this many times the lists


def _rows(unit: bool, vectors: np.ndarray) -> np.ndarray:
    """Vectors as an index takes them: C-contiguous float32 rows, unit length for cosine (inner product)."""
    vectors = np.ascontiguousarray(np.atleast_2d(vectors), np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if unit else vectors


class UsearchIndex:
    """A gallery's approximate index: vectors under integer keys, HNSW, f32, one thread per query."""

    candidates = 1  # the gallery re-ranks this many of the index's best exactly

    def __init__(self, metric: str, ndim: int, data: bytes | None = None, *, threads: int = 0):
        self.threads = threads  # for add: 0 = all cores
        self.unit = metric == "cosine"
        if data is not None:
            self._index = Index.restore(bytearray(data))
            if self._index is None or self._index.ndim != ndim:
                raise ValueError(f"the stored usearch index is unreadable or not {ndim}-dimensional")
        else:
            self._index = Index(ndim=ndim, metric=_METRICS[metric], dtype="f32", connectivity=CONNECTIVITY,
                                expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)

    @property
    def settings(self) -> dict:
        import usearch

        return {"library": f"usearch {usearch.__version__}", "connectivity": self._index.connectivity,
                "expansion_add": self._index.expansion_add, "expansion_search": self._index.expansion_search}

    def __len__(self) -> int:
        return len(self._index)

    @property
    def expansion_search(self) -> int:
        """HNSW's ef: how many candidates a query visits (recall against speed)."""
        return self._index.expansion_search

    @expansion_search.setter
    def expansion_search(self, ef: int) -> None:
        self._index.expansion_search = int(ef)

    depth = expansion_search  # the search-depth knob every index has

    @property
    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def keys(self) -> np.ndarray:
        return np.asarray(self._index.keys, np.int64)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add(np.asarray(keys, np.uint64), _rows(self.unit, vectors), threads=self.threads)

    def remove(self, keys: np.ndarray) -> None:
        self._index.remove(np.asarray(keys, np.uint64))

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        found = self._index.search(_rows(self.unit, queries), k, threads=1)
        keys, distances = np.asarray(found.keys, np.int64), np.asarray(found.distances, np.float64)
        return keys.reshape(len(queries), k), distances.reshape(len(queries), k)

    def to_bytes(self) -> bytes:
        return bytes(self._index.save())


register_index("usearch", UsearchIndex)


class FaissIvfIndex:
    """A gallery's approximate index: faiss IVF + 4-bit PQ fast scan under integer keys (see the module's docstring).

    The coarse lists are trained on the first vectors added (up to 256 per list, a fixed seed): `min(LISTS, n // 39)`
    of them for n vectors (faiss wants 39 training points a list); later vectors go into those lists untrained. The
    codes: sub-vectors of 4 dims (2 or 1 where the size is odd), 16 centroids each (`PQ<ndim/4>x4fs`, 16 bytes for
    128 dims); fewer than 624 first vectors (39 x 16) cannot train them, and are kept whole (`Flat`)."""

    LISTS = 4096
    IMPLEM = 10  # faiss's fast-scan kernel choice: 10 measured 18% faster than its default at 10^6 (same answers)
    candidates = 20  # best by code, re-ranked exactly by the gallery (20 and 100 found the same at 10^6: the lists
    # scanned decide the recall, not the codes)

    def __init__(self, metric: str, ndim: int, data: bytes | None = None, *, threads: int = 0):
        self.unit, self.ndim = metric == "cosine", ndim
        self.searches = self.deep_searches = 0  # queries, and those looked up again deeper
        self._metric = faiss.METRIC_INNER_PRODUCT if self.unit else faiss.METRIC_L2
        self._index = None
        if data is not None:
            try:
                self._index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
                self._tuned()
            except RuntimeError as e:
                raise ValueError(f"the stored faiss index is unreadable: {str(e).splitlines()[0][:200]}") from None
            if self._index.d != ndim:
                raise ValueError(f"the stored faiss index is {self._index.d}-dimensional, not {ndim}")

    def _built(self, vectors: np.ndarray) -> None:
        lists = max(1, min(self.LISTS, len(vectors) // 39))
        per = 4 if self.ndim % 4 == 0 else 2 if self.ndim % 2 == 0 else 1
        code = f"PQ{self.ndim // per}x4fs" if len(vectors) >= 39 * 16 else "Flat"
        self._index = faiss.index_factory(self.ndim, f"IVF{lists},{code}", self._metric)
        rng = np.random.default_rng(0)
        sample = vectors if len(vectors) <= 256 * lists else vectors[rng.choice(len(vectors), 256 * lists, False)]
        self._tuned()
        self._ivf.cp.seed = 0
        self._index.train(sample)
        self._ivf.nprobe = max(1, lists // 16)  # then 8x deeper when unsure (`FaceGallery.nearest`, bench-gallery)

    def _tuned(self) -> None:
        """Find the IVF inside the index (its concrete class) and set what faiss does not store."""
        self._ivf = faiss.downcast_index(faiss.extract_index_ivf(self._index))
        fast = isinstance(self._ivf, faiss.IndexIVFFastScan)
        self.code = f"PQ{self._ivf.pq.M}x4fs" if fast else "Flat"
        if fast:
            self._ivf.implem = self.IMPLEM

    @property
    def settings(self) -> dict:
        return {"library": f"faiss {faiss.__version__}", "factory": f"IVF{self._ivf.nlist},{self.code}",
                "lists": self._ivf.nlist, "nprobe": self._ivf.nprobe, "deep_nprobe": self.deep_depth,
                "candidates": self.candidates}

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def depth(self) -> int:
        """faiss's nprobe: how many of the lists nearest a query are scanned (recall against speed)."""
        return self._ivf.nprobe

    @depth.setter
    def depth(self, lists: int) -> None:
        self._ivf.nprobe = int(lists)

    @property
    def memory_bytes(self) -> int:
        """The codes, their keys and the centroids (the gallery's own float vectors come on top)."""
        if self._index is None:
            return 0
        return int(len(self) * (self._ivf.code_size + 8) + self._ivf.nlist * self.ndim * 4)

    def keys(self) -> np.ndarray:
        if self._index is None:
            return np.empty(0, np.int64)
        lists = self._ivf.invlists
        return np.concatenate([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                               for i in range(lists.nlist)] or [np.empty(0, np.int64)]).astype(np.int64)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        vectors = _rows(self.unit, vectors)
        if self._index is None:
            self._built(vectors)
        self._index.add_with_ids(vectors, np.ascontiguousarray(keys, np.int64))

    def remove(self, keys: np.ndarray) -> None:
        self._index.remove_ids(np.ascontiguousarray(keys, np.int64))

    @property
    def deep_depth(self) -> int:
        """The lists scanned when the gallery is not sure of an answer: `DEEPER` x `depth`, at most all of them."""
        return min(self._ivf.nlist, DEEPER * self._ivf.nprobe)

    def search(self, queries: np.ndarray, k: int = 1, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keys (Q, k) best first, -1 where fewer than k were found, and their approximate distances; `depth`:
        scan this many lists for these queries only (default `depth`)."""
        params = None if depth is None else faiss.SearchParametersIVF(nprobe=int(depth))
        distances, keys = self._index.search(_rows(self.unit, queries), k, params=params)
        if depth is None:
            self.searches += len(queries)
        else:
            self.deep_searches += len(queries)
        return keys.astype(np.int64), distances.astype(np.float64)

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self._index).tobytes()


register_index("faiss-ivf", FaissIvfIndex)
