"""Box tracking across video frames in numpy: `Tracker().update(boxes, scores, labels) -> track ids`.

ByteTrack's association, without its Kalman filter: each track's next box is predicted by its last box moved by
its smoothed velocity; confident detections are matched to tracks first (greedy on IoU, same label only), then
the low-score ones take the tracks still unmatched (a face half-turned keeps its track instead of starting a new
one); a confident detection left over starts a track; a track unseen for `max_misses` frames ends. Greedy matching
in IoU order gives the Hungarian answer whenever the boxes of neighbouring objects overlap little, which is the
case association relies on anyway.

Identity on top of tracks (`IdentityVotes`): a track's name is the vote of the embeddings made for it, so a face
needs one embedding when it appears, not one a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Tracker", "Track", "IdentityVotes", "pairwise_iou"]


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy boxes -> (N, M) IoU; empty or degenerate boxes give 0."""
    a, b = np.asarray(a, np.float32).reshape(-1, 4), np.asarray(b, np.float32).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


@dataclass
class Track:
    id: int
    box: np.ndarray  # (4,) last matched box
    label: str
    score: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    hits: int = 1  # frames matched
    misses: int = 0  # frames in a row without a match

    def predicted(self) -> np.ndarray:
        return self.box + self.velocity * (1 + self.misses)


class Tracker:
    """Give detections of consecutive frames stable ids.

    Args:
        high: detections at or above this score are matched first and may start tracks.
        low: detections between `low` and `high` only continue tracks; below `low` they are ignored.
        iou: the least IoU between a track's predicted box and a detection to match them (first pass); the
            second pass, of low-score detections, asks for `iou_low`.
        max_misses: frames a track survives without a match.
    """

    def __init__(self, high: float = 0.5, low: float = 0.1, iou: float = 0.3, iou_low: float = 0.5,
                 max_misses: int = 30):
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"expected 0 <= low <= high <= 1, got low={low}, high={high}")
        if not (0.0 < iou <= 1.0 and 0.0 < iou_low <= 1.0) or max_misses < 0:
            raise ValueError(f"iou thresholds must be in (0, 1] and max_misses >= 0, got {iou}, {iou_low}, {max_misses}")
        self.high, self.low, self.iou, self.iou_low, self.max_misses = high, low, iou, iou_low, max_misses
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: list[str] | None = None) -> np.ndarray:
        """One frame's detections -> their track ids (N,), int64; -1 for a low-score detection no track took."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        labels = list(labels) if labels is not None else [""] * len(boxes)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"boxes, scores and labels differ in length: {len(boxes)}, {len(scores)}, {len(labels)}")
        ids = np.full(len(boxes), -1, np.int64)
        free = list(range(len(self.tracks)))
        for wanted, least in ((scores >= self.high, self.iou), ((scores >= self.low) & (scores < self.high), self.iou_low)):
            dets = np.flatnonzero(wanted)
            matched = self._match(boxes, labels, dets, free, least)
            for det, t in matched:
                self._continue(self.tracks[t], boxes[det], float(scores[det]))
                ids[det] = self.tracks[t].id
            taken = {t for _, t in matched}
            free = [t for t in free if t not in taken]
        for t in free:
            self.tracks[t].misses += 1
        self.tracks = [t for t in self.tracks if t.misses <= self.max_misses]
        for det in np.flatnonzero((scores >= self.high) & (ids < 0)):
            track = Track(self._next_id, boxes[det].copy(), labels[det], float(scores[det]))
            self._next_id += 1
            self.tracks.append(track)
            ids[det] = track.id
        return ids

    def _match(self, boxes, labels, dets: np.ndarray, free: list[int], least: float) -> list[tuple[int, int]]:
        if not len(dets) or not free:
            return []
        predicted = np.stack([self.tracks[t].predicted() for t in free])
        iou = pairwise_iou(boxes[dets], predicted)
        same = np.array([[labels[d] == self.tracks[t].label for t in free] for d in dets])
        iou = np.where(same, iou, 0.0)
        pairs = []
        while True:
            d, t = np.unravel_index(np.argmax(iou), iou.shape)
            if iou[d, t] < least or iou[d, t] <= 0:
                return pairs
            pairs.append((int(dets[d]), free[t]))
            iou[d, :], iou[:, t] = 0.0, 0.0

    @staticmethod
    def _continue(track: Track, box: np.ndarray, score: float) -> None:
        step = (box - track.box) / (1 + track.misses)
        track.velocity = 0.5 * track.velocity + 0.5 * step if track.hits > 1 else step
        track.box, track.score, track.hits, track.misses = box.copy(), score, track.hits + 1, 0


class IdentityVotes:
    """Each track's identity from the embeddings made for it: a vote per match, weighted by its margin under the
    threshold; `needs_embedding` says when another embedding is worth its cost.

    Args:
        every: embed a named track again after this many frames (a face can turn out to be someone else).
        settle: votes after which a track whose leading name holds `share` of the weight is settled.
        retry: a track no enrolled person leads yet is embedded again after this many frames, not every frame.
    """

    def __init__(self, every: int = 30, settle: int = 3, share: float = 0.7, retry: int = 5):
        self.every, self.settle, self.share, self.retry = every, settle, share, retry
        self._votes: dict[int, dict[str | None, float]] = {}
        self._count: dict[int, int] = {}
        self._last: dict[int, int] = {}

    def needs_embedding(self, track_id: int, frame: int) -> bool:
        if track_id not in self._votes:
            return True  # new
        since = frame - self._last[track_id]
        if since >= self.every:
            return True  # periodic re-check
        if self.name(track_id) is None:  # nobody yet (a face turned away, half hidden): look again now and then
            return since >= self.retry
        return not self._settled(track_id)  # uncertain between people: keep asking until settled

    def waited(self, track_id: int, frame: int) -> float:
        """Frames since the track's last embedding; infinite for a track never embedded."""
        return frame - self._last[track_id] if track_id in self._last else float("inf")

    def add(self, track_id: int, frame: int, name: str | None, distance: float, threshold: float) -> None:
        weight = max(1e-3, 1.0 - distance / threshold) if name is not None else 0.5
        votes = self._votes.setdefault(track_id, {})
        votes[name] = votes.get(name, 0.0) + weight
        self._count[track_id] = self._count.get(track_id, 0) + 1
        self._last[track_id] = frame

    def name(self, track_id: int) -> str | None:
        """The leading name; unknown (None) only while no enrolled person has a vote as heavy."""
        votes = self._votes.get(track_id)
        return max(votes, key=lambda n: (votes[n], n is not None)) if votes else None

    def _settled(self, track_id: int) -> bool:
        votes = self._votes[track_id]
        return self._count[track_id] >= self.settle and max(votes.values()) >= self.share * sum(votes.values())

    def forget(self, live: set[int]) -> None:
        """Drop the votes of tracks that ended."""
        for gone in set(self._votes) - live:
            del self._votes[gone], self._count[gone], self._last[gone]
