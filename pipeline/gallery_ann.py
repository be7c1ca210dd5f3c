"""usearch's HNSW index behind a `FaceGallery` once it is large: importing this module registers it (kind
"usearch"), so the CLI, the evaluator and the benchmark, which import it, build and read galleries with the index;
the torch-free runtime itself never imports usearch and searches exactly where it is absent.

Why usearch (measured by `edgepipe bench-gallery`, see README): an HNSW index that adds and removes vectors in
place (faiss's HNSW cannot remove), serialises to bytes in its own format (stored inside the gallery file, no
pickle), ships wheels (hnswlib is a source build) and answers a query on 1 thread in well under a millisecond at
10^6 vectors.
"""

from __future__ import annotations

import numpy as np
from usearch.index import Index

from edgepipe.runtime.gallery import register_index

__all__ = ["UsearchIndex", "CONNECTIVITY", "EXPANSION_ADD", "EXPANSION_SEARCH"]

CONNECTIVITY = 16  # HNSW's M
EXPANSION_ADD = 128  # efConstruction
EXPANSION_SEARCH = 128  # ef: recall@1 0.994 against exact at 10^5, 2.2 ms vs 8.1 (faces bench-gallery)
# cosine: unit vectors under inner product (measured 1.6x faster per query than usearch's own "cos", same recall)
_METRICS = {"cosine": "ip", "euclidean": "l2sq"}


class UsearchIndex:
    """A gallery's approximate index: vectors under integer keys, HNSW, f32, one thread per query."""

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

    @property
    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def keys(self) -> np.ndarray:
        return np.asarray(self._index.keys, np.int64)

    def _prepared(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if self.unit else vectors

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add(np.asarray(keys, np.uint64), self._prepared(vectors), threads=self.threads)

    def remove(self, keys: np.ndarray) -> None:
        self._index.remove(np.asarray(keys, np.uint64))

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        found = self._index.search(self._prepared(queries), k, threads=1)
        keys, distances = np.asarray(found.keys, np.int64), np.asarray(found.distances, np.float64)
        return keys.reshape(len(queries), k), distances.reshape(len(queries), k)

    def to_bytes(self) -> bytes:
        return bytes(self._index.save())


register_index("usearch", UsearchIndex)
