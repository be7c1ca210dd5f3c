"""A face gallery: named embeddings, the nearest person to a face, and the file that keeps them (no pickle).

The vectors are the truth: every enrolled embedding is kept with a stable integer key and its person. Search is
exact (numpy, one matrix product over every vector) until the gallery holds `ann_from` vectors, then goes through
an approximate nearest-neighbour index when one is registered (`register_index`; `edgepipe.gallery_ann` registers
faiss's IVF-PQ and usearch's HNSW), updated in place as people are enrolled or removed; the index's best candidates
are re-ranked exactly with the vectors, so a distance is always the true one. A device without the index's library
still answers, exactly, from the vectors.

Files: a `.json` path is format 1 (people's vectors inline, readable, for small galleries); any other path is
format 2, an uncompressed NumPy archive of the meta JSON, the vectors, keys and owners, and the index in its
library's own serialised form, read with `allow_pickle=False` and checked: an index that disagrees with the
vectors, or owners that name no one, is an error, not a wrong answer.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepipe.runtime.atomic import atomic_write, locked
from edgepipe.runtime.errors import InputError
from edgepipe.runtime.postprocess import embedding_distance

__all__ = ["FaceGallery", "Match", "register_index"]

log = logging.getLogger(__name__)

GALLERY_FORMAT = "edgepipe-face-gallery"
# Vectors from which the index answers. Below, exact search takes at most ~4 ms and is exact; and an IVF index trains
# its lists once, on the vectors it starts with, so starting at 10^5 gives it the 2,564 lists a gallery of millions
# needs (`faces bench-gallery`: at 10^6, recall@1 0.995 in 0.48 ms with them).
ANN_FROM = 100_000
# An index's answer is sure when it beats every other person among the candidates by this share of the threshold
# (SFace at 10^6 synthetic people: right answers' margins >= 0.098 for 99%, wrong ones' <= 0.083; threshold 0.637:
# 15% is 0.096).
SURE_MARGIN = 0.15
_INDEXES: dict[str, Callable] = {}  # kind -> factory(metric, ndim, data: bytes | None) -> index


def register_index(kind: str, factory: Callable) -> None:
    """Make an approximate index available to galleries: `factory(metric, ndim, data)` returns an object with
    `add(keys, vectors)`, `remove(keys)`, `search(queries, k) -> (keys (Q, k), -1 where none; distances (Q, k))`,
    `__len__`, `keys() -> ndarray`, `to_bytes()`, `settings` (a JSON-able dict) and `candidates` (how many of its
    best the gallery re-ranks exactly); `data` is what `to_bytes` gave, or None."""
    _INDEXES[kind] = factory


@dataclass(frozen=True)
class Match:
    """Who a face is: `name` is None for an unknown face; `distance` is to the nearest enrolled embedding."""

    name: str | None
    distance: float
    nearest: str | None  # the closest enrolled name, even when over the threshold


class FaceGallery:
    """Named face embeddings; identifies by the nearest enrolled embedding under a threshold."""

    def __init__(self, model_name: str, metric: str, threshold: float, *, ann_from: int = ANN_FROM,
                 index_kind: str = "faiss-ivf"):
        self.model_name = model_name
        self.metric = metric
        self.threshold = float(threshold)
        self.ann_from, self.index_kind = int(ann_from), index_kind
        self.index = None  # the approximate index once built (or loaded)
        self._warned = False  # said once that a large gallery has no index library to use
        self._names: dict[int, str] = {}  # person id -> name
        self._ids: dict[str, int] = {}  # name -> person id
        self._keys = np.empty(0, np.int64)  # one per vector, increasing
        self._owners = np.empty(0, np.int64)  # person id per vector
        self._vectors: np.ndarray | None = None  # (N, D) float32
        self._prepared: np.ndarray | None = None  # exact search's matrix (unit rows, or squared norms), lazily
        self._next_key = self._next_id = 0

    @classmethod
    def for_embedder(cls, embedder) -> FaceGallery:
        return cls(embedder.model.meta.model_name, embedder.head.metric, embedder.head.match_thresh)

    @property
    def names(self) -> list[str]:
        return sorted(self._ids)

    def __len__(self) -> int:
        """Enrolled vectors (a person may have several)."""
        return len(self._keys)

    def count(self, name: str) -> int:
        return int((self._owners == self._ids[name]).sum()) if name in self._ids else 0

    def embeddings(self, name: str) -> np.ndarray:
        """`name`'s enrolled embeddings, (n, D)."""
        return self._vectors[self._owners == self._ids[name]] if name in self._ids else np.empty((0, 0), np.float32)

    def enroll(self, name: str, embeddings: np.ndarray) -> None:
        """Add embeddings (D,) or (N, D) under `name`; checked before anything changes."""
        self.enroll_many([name], [embeddings])

    def enroll_many(self, names: list[str], embeddings: list[np.ndarray]) -> None:
        """Enroll several people at once (one index update): `embeddings[i]` (D,) or (n, D) under `names[i]`."""
        rows, owners = [], []
        dim = None if self._vectors is None else self._vectors.shape[1]
        new_ids: dict[str, int] = {}
        for name, vectors in zip(names, embeddings, strict=True):
            name = self._checked_name(name)
            vectors = np.atleast_2d(np.asarray(vectors, np.float32))
            if vectors.ndim != 2 or not vectors.size or (dim is not None and vectors.shape[1] != dim):
                raise InputError(f"embeddings of shape {vectors.shape} do not fit this gallery "
                                 f"(expected (N, {dim or 'D'}))")
            if not np.isfinite(vectors).all():
                raise InputError(f"embeddings for {name!r} hold NaN or infinite values")
            dim = vectors.shape[1]
            person = self._ids.get(name, new_ids.get(name))
            if person is None:
                person = new_ids[name] = self._next_id + len(new_ids)
            rows.append(vectors)
            owners.append(np.full(len(vectors), person, np.int64))
        if not rows:
            return
        vectors = np.concatenate(rows)
        keys = np.arange(self._next_key, self._next_key + len(vectors), dtype=np.int64)
        for name, person in new_ids.items():
            self._ids[name], self._names[person] = person, name
        self._next_id += len(new_ids)
        self._next_key += len(vectors)
        self._keys = np.concatenate([self._keys, keys])
        self._owners = np.concatenate([self._owners, *owners])
        self._vectors = vectors if self._vectors is None else np.concatenate([self._vectors, vectors])
        self._prepared = None
        if self.index is not None:
            self.index.add(keys, vectors)
        else:
            self._maybe_build_index()

    @staticmethod
    def _checked_name(name: str) -> str:
        name = str(name).strip()
        if not name:
            raise InputError("a gallery name must not be empty")
        return name

    def remove(self, name: str) -> None:
        if name not in self._ids:
            raise InputError(f"gallery has no person {name!r}; enrolled: {self.names}")
        person = self._ids.pop(name)
        del self._names[person]
        gone = self._owners == person
        if self.index is not None:
            self.index.remove(self._keys[gone])
        self._keys, self._owners, self._vectors = self._keys[~gone], self._owners[~gone], self._vectors[~gone]
        self._prepared = None

    def rename(self, old: str, new: str) -> None:
        """Give `old`'s embeddings the name `new`; every check comes before the change, so a bad name loses nothing."""
        new = self._checked_name(new)
        if old not in self._ids:
            raise InputError(f"gallery has no person {old!r}; enrolled: {self.names}")
        if new in self._ids:
            raise InputError(f"gallery already has a person {new!r}")
        person = self._ids.pop(old)
        self._ids[new], self._names[person] = person, new

    def nearest(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of the nearest enrolled vector for each query (Q,), and its distance (Q,): exact without an index;
        with one, its candidates re-ranked by true distance, and, for an index that can look deeper (`deep_depth`),
        the queries whose answer is not sure looked up again deeper: sure is nearer than the gallery's threshold and
        nearer by `SURE_MARGIN` x the threshold than any other person among the candidates (a new photo of an
        enrolled person stands out like that; the nearest of millions of strangers does not)."""
        queries = np.atleast_2d(np.asarray(embeddings, np.float32))
        if self.index is None:
            rows = self._exact(queries)
            return rows, np.array([embedding_distance(q, self._vectors[r], self.metric)[0, 0]
                                   for q, r in zip(queries, rows)], np.float64)
        k = min(len(self), getattr(self.index, "candidates", 1))
        rows, distances, sure = self._reranked(queries, self.index.search(queries, k)[0])
        deep = getattr(self.index, "deep_depth", None)
        if deep is not None and not sure.all():
            again = np.flatnonzero(~sure)
            rows[again], distances[again], _ = self._reranked(queries[again],
                                                              self.index.search(queries[again], k, depth=deep)[0])
        return rows, distances

    def _reranked(self, queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nearest of each query's candidate keys (-1: none) by true distance: rows, distances, and whether
        each answer is sure (see `nearest`)."""
        rows, distances = np.empty(len(queries), np.int64), np.empty(len(queries), np.float64)
        sure = np.zeros(len(queries), bool)
        for i, (query, found) in enumerate(zip(queries, keys)):
            found = found[found >= 0]
            found = np.searchsorted(self._keys, found) if len(found) else self._exact(query[None])
            exact = embedding_distance(query, self._vectors[found], self.metric)[0]
            best = int(np.argmin(exact))
            rows[i], distances[i] = found[best], exact[best]
            others = exact[self._owners[found] != self._owners[found[best]]]
            runner_up = others.min() if len(others) else np.inf
            sure[i] = exact[best] <= self.threshold and runner_up - exact[best] >= SURE_MARGIN * self.threshold
        return rows, distances, sure

    def _exact(self, queries: np.ndarray) -> np.ndarray:
        """Every vector compared: cosine as the largest dot product with unit rows (a query's norm does not change
        the order), Euclidean as the smallest |v|^2 - 2 q.v."""
        vectors = self._vectors
        if self._prepared is None:
            self._prepared = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if self.metric == "cosine"
                              else (vectors * vectors).sum(1))
        if self.metric == "cosine":
            return np.argmax(queries @ self._prepared.T, axis=1)
        return np.argmin(self._prepared[None, :] - 2 * queries @ vectors.T, axis=1)

    def identify(self, embeddings: np.ndarray, threshold: float | None = None) -> list[Match]:
        """Match each row of `embeddings` (N, D) to the nearest enrolled person."""
        threshold = self.threshold if threshold is None else float(threshold)
        if not np.isfinite(threshold) or threshold <= 0:
            raise InputError(f"match threshold must be a finite distance > 0, got {threshold!r}")
        embeddings = np.atleast_2d(embeddings)
        if not len(self):
            return [Match(None, float("inf"), None) for _ in embeddings]
        rows, distances = self.nearest(embeddings)
        names = [self._names[int(self._owners[r])] for r in rows]
        return [Match(n if d <= threshold else None, float(d), n) for n, d in zip(names, distances)]

    def _maybe_build_index(self) -> None:
        if len(self) >= self.ann_from and self.index_kind not in _INDEXES and not self._warned:
            self._warned = True
            log.warning("%d vectors and no %s index registered (the gallery extra): searching exactly", len(self),
                        self.index_kind)
        if len(self) >= self.ann_from and self.index_kind in _INDEXES:
            self.index = _INDEXES[self.index_kind](self.metric, self._vectors.shape[1], None)
            self.index.add(self._keys, self._vectors)

    @classmethod
    def update(cls, path: str | Path, change, new) -> FaceGallery:
        """Read the gallery at `path` (or start `new()`), apply `change(gallery)` and save it, all under an
        exclusive lock: concurrent writers each see the others' changes, none is lost."""
        with locked(path):
            gallery = cls.load(path) if Path(path).exists() else new()
            change(gallery)
            gallery.save(path)
        return gallery

    def _meta(self) -> dict:
        return {"format": GALLERY_FORMAT, "model": self.model_name, "metric": self.metric,
                "threshold": self.threshold}

    def save(self, path: str | Path) -> Path:
        """Write the gallery to `path` in one step (temporary file, then rename): JSON for `.json`, else format 2."""
        if Path(path).suffix == ".json":
            people = {name: self.embeddings(name).round(7).tolist() for name in self.names}
            return atomic_write(path, json.dumps({**self._meta(), "version": 1, "people": people}, indent=1).encode())
        names = [self._names.get(p, "") for p in range(self._next_id)]
        meta = {**self._meta(), "version": 2, "names": names, "next_key": self._next_key,
                "ann_from": self.ann_from, "index_kind": self.index_kind,
                "index": None if self.index is None else {"kind": self.index_kind, **self.index.settings}}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), "keys": self._keys,
                  "owners": self._owners, "vectors": self._vectors if self._vectors is not None else
                  np.empty((0, 0), np.float32)}
        if self.index is not None:
            arrays["index"] = np.frombuffer(bytes(self.index.to_bytes()), np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return atomic_write(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> FaceGallery:
        """Read a gallery file; raises InputError naming the file and the problem if it is missing or corrupt."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such gallery file")
        try:
            return (_load_json if path.suffix == ".json" else _load_archive)(cls, path)
        except InputError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError,
                AttributeError) as e:
            raise InputError(f"{path}: corrupt gallery file ({type(e).__name__}: {e})") from e


def _header(cls, body, path: Path, version: int) -> FaceGallery:
    if not isinstance(body, dict) or body.get("format") != GALLERY_FORMAT:
        raise InputError(f"{path}: not an edgepipe face gallery (format field is missing or wrong)")
    if body.get("version") != version:
        raise InputError(f"{path}: gallery version {body.get('version')!r}; expected {version} for a "
                         f"{'.json' if version == 1 else 'non-.json'} file")
    gallery = cls(str(body["model"]), str(body["metric"]), float(body["threshold"]),
                  **({"ann_from": int(body["ann_from"]), "index_kind": str(body["index_kind"])} if version == 2
                     else {}))
    if not np.isfinite(gallery.threshold) or gallery.threshold <= 0:
        raise ValueError(f"threshold {gallery.threshold!r} is not a finite distance > 0")
    return gallery


def _load_json(cls, path: Path) -> FaceGallery:
    body = json.loads(path.read_text())
    gallery = _header(cls, body, path, 1)
    for name, rows in body["people"].items():
        array = np.asarray(rows, np.float32)
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(f"person {name!r} has embeddings of shape {array.shape}")
        try:
            gallery.enroll(name, array)
        except InputError as e:
            raise ValueError(str(e)) from e
    return gallery


def _load_archive(cls, path: Path) -> FaceGallery:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # not a zip, or truncated
        raise InputError(f"{path}: not a gallery archive ({type(e).__name__}: {e})") from e
    meta = json.loads(arrays["meta"].tobytes().decode())
    gallery = _header(cls, meta, path, 2)
    keys, owners, vectors = arrays["keys"].astype(np.int64), arrays["owners"].astype(np.int64), arrays["vectors"]
    names = [str(n) for n in meta["names"]]
    if not (len(keys) == len(owners) == len(vectors)) or (len(keys) and vectors.ndim != 2):
        raise ValueError(f"{len(keys)} keys, {len(owners)} owners and {len(vectors)} vectors")
    if len(keys) and (np.any(np.diff(keys) <= 0) or keys[-1] >= int(meta["next_key"])):
        raise ValueError("vector keys are not increasing below next_key")
    if len(owners) and (owners.min() < 0 or owners.max() >= len(names) or not all(names[o] for o in set(owners.tolist()))):
        raise ValueError("a vector's owner names no one")
    if len(vectors) and not np.isfinite(vectors).all():
        raise ValueError("vectors hold NaN or infinite values")
    people = {p: n for p, n in enumerate(names) if n}
    if len(set(people.values())) != len(people) or set(people) != set(owners.tolist()):
        raise ValueError("names are repeated, or a person has no vector")
    gallery._names, gallery._ids = people, {n: p for p, n in people.items()}
    gallery._keys, gallery._owners = keys, owners
    gallery._vectors = vectors.astype(np.float32) if len(vectors) else None
    gallery._next_key, gallery._next_id = int(meta["next_key"]), len(names)
    stored = meta.get("index")
    if stored is not None:
        if "index" not in arrays:
            raise ValueError("the meta names an index the file does not hold")
        if stored["kind"] not in _INDEXES:
            log.warning("%s: its %s index cannot be read here (no such library registered); searching exactly",
                        path, stored["kind"])
        else:
            index = _INDEXES[stored["kind"]](gallery.metric, vectors.shape[1], arrays["index"].tobytes())
            if len(index) != len(keys) or not np.array_equal(np.sort(index.keys()), keys):
                raise InputError(f"{path}: the gallery's index holds {len(index)} vectors and its names "
                                 f"{len(keys)}: they disagree (rebuild it: load with the index removed)")
            gallery.index = index
    else:
        gallery._maybe_build_index()
    return gallery
