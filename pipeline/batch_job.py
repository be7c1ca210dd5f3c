"""A batch job's tables: `write_tables(records, out_dir, ...) -> summary`.

`edgepipe run ... --out DIR.parquet` (either engine) writes into DIR, all at once at the end (a partial sibling
folder renamed into place, so a killed or interrupted job leaves nothing half-written):

    detections.parquet  one row per detection or face: image, x1, y1, x2, y2, score, label, name and distance
                        (when a gallery named people), embedding (with --embeddings)
    images.parquet      one row per image read: image, width, height, results (its number of rows above)
    errors.jsonl        one line per image that could not be used: {"image": ..., "error": ...}
    summary.json        images, rows, errors, seconds, images/s over the whole job and after the first record
                        (start-up: a Ray, its actors and their sessions, is before it), the engine, the artifact

Rows are written as records arrive, in row groups, so memory holds one group, not the job.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from edgepipe.runtime.atomic import atomic_write, partial_dir, publish_dir

__all__ = ["write_tables", "ROW_GROUP"]

ROW_GROUP = 20_000  # rows buffered before a row group is written


def _schemas(with_embeddings: bool):
    import pyarrow as pa

    detection = [("image", pa.string()), ("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()),
                 ("y2", pa.float32()), ("score", pa.float32()), ("label", pa.string()), ("name", pa.string()),
                 ("distance", pa.float32())]
    if with_embeddings:
        detection.append(("embedding", pa.list_(pa.float32())))
    image = [("image", pa.string()), ("width", pa.int32()), ("height", pa.int32()), ("results", pa.int32())]
    return pa.schema(detection), pa.schema(image)


class _Table:
    """A Parquet file written a row group at a time."""

    def __init__(self, path: Path, schema):
        import pyarrow.parquet as pq

        self.schema, self.rows = schema, []
        self.writer = pq.ParquetWriter(path, schema)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def write_tables(records: Iterable[dict], out_dir: str | Path, *, embeddings: bool = False,
                 about: dict | None = None) -> dict:
    """Write `records` (`edgepipe.image_tasks`) as the tables above into `out_dir`, atomically; return the summary
    (also in summary.json). `about` (engine, artifact, ...) is copied into the summary."""
    out_dir = Path(out_dir)
    tmp = partial_dir(out_dir)
    started = time.perf_counter()
    counts = {"images": 0, "rows": 0, "errors": 0}
    first = None  # when the first record arrived: start-up (a Ray, its actors, their sessions) is behind it
    try:
        detection_schema, image_schema = _schemas(embeddings)
        detections = _Table(tmp / "detections.parquet", detection_schema)
        images = _Table(tmp / "images.parquet", image_schema)
        with open(tmp / "errors.jsonl", "w") as errors:
            for rec in records:
                first = first or time.perf_counter()
                if rec["error"] is not None:
                    errors.write(json.dumps({"image": rec["image"], "error": rec["error"]}) + "\n")
                    counts["errors"] += 1
                    continue
                n = len(rec["boxes"])
                images.add({"image": rec["image"], "width": rec["width"], "height": rec["height"], "results": n})
                for i, box in enumerate(rec["boxes"]):
                    row = {"image": rec["image"], "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
                           "score": rec["scores"][i], "label": rec["labels"][i],
                           "name": rec["names"][i] if rec["names"] else None,
                           "distance": rec["distances"][i] if rec["distances"] else None}
                    if embeddings:
                        row["embedding"] = rec["embeddings"][i] if rec["embeddings"] else None
                    detections.add(row)
                counts["images"] += 1
                counts["rows"] += n
        detections.close()
        images.close()
        seconds = time.perf_counter() - started
        done = counts["images"] + counts["errors"]
        after_first = time.perf_counter() - first if first else 0.0
        summary = {**counts, "seconds": round(seconds, 3), "images_per_s": round(done / seconds, 3) if seconds else None,
                   "first_record_s": round(first - started, 3) if first else None,
                   "steady_images_per_s": round((done - 1) / after_first, 3) if after_first > 0 else None,
                   **(about or {})}
        atomic_write(tmp / "summary.json", json.dumps(summary, indent=1).encode())
        publish_dir(tmp, out_dir)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
