"""Batch jobs without Ray: which images a job reads, the tables it writes (all or nothing), and the engine flags."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepipe.batch_job import write_tables
from edgepipe.cli import main
from edgepipe.engine import image_paths
from edgepipe.errors import InputError
from edgepipe.image_tasks import record


def test_a_folder_is_read_recursively_and_a_list_file_relative_to_itself(tmp_path):
    for name in ("b/2.jpg", "a/1.PNG", "a/notes.txt", "3.jpeg"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / name).write_bytes(b"")
    assert [p.relative_to(tmp_path / "photos").as_posix() for p in image_paths(tmp_path / "photos")] == \
        ["3.jpeg", "a/1.PNG", "b/2.jpg"]
    listing = tmp_path / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_text("# photos to run\n../photos/3.jpeg\n\n  ../photos/b/2.jpg  \n../photos/3.jpeg\n")
    assert image_paths(listing) == [listing.parent / "../photos/3.jpeg", listing.parent / "../photos/b/2.jpg"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nothing", "no such folder or list file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no images"),
    (lambda p: (p / "l.txt").write_text("# only a comment\n\n") and p / "l.txt", "a list file with no image paths"),
])
def test_no_images_is_one_line(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        image_paths(make(tmp_path))


_box = st.tuples(*[st.floats(-1e4, 1e4, width=32)] * 4)
_face = st.tuples(_box, st.floats(0, 1, width=32), st.sampled_from(["face", "person", "ü ñ"]),
                  st.one_of(st.none(), st.text(min_size=1, max_size=8)))


@st.composite
def _records(draw):
    out = []
    for i in range(draw(st.integers(0, 12))):
        if draw(st.booleans()) and i % 3 == 0:
            out.append(record(f"img{i}.jpg", error=f"img{i}.jpg: could not be decoded"))
            continue
        faces = draw(st.lists(_face, max_size=5))
        named = draw(st.booleans())
        out.append(record(f"img{i}.jpg", draw(st.integers(1, 5000)), draw(st.integers(1, 5000)),
                          boxes=[f[0] for f in faces], scores=[f[1] for f in faces], labels=[f[2] for f in faces],
                          names=[f[3] for f in faces] if named else (),
                          distances=[0.5] * len(faces) if named else (),
                          embeddings=[[0.25, -1.0]] * len(faces)))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records(), embeddings=st.booleans())
def test_tables_hold_every_record_once(tmp_path_factory, records, embeddings):
    out = tmp_path_factory.mktemp("job") / "out.parquet"
    summary = write_tables(iter(records), out, embeddings=embeddings, about={"engine": "local"})
    good = [r for r in records if r["error"] is None]
    images = pq.read_table(out / "images.parquet").to_pylist()
    rows = pq.read_table(out / "detections.parquet").to_pylist()
    assert [i["image"] for i in images] == [r["image"] for r in good]
    assert [i["results"] for i in images] == [len(r["boxes"]) for r in good]
    assert len(rows) == sum(len(r["boxes"]) for r in good) == summary["rows"]
    expected = [(r["image"], s, lab, r["names"][k] if r["names"] else None)
                for r in good for k, (s, lab) in enumerate(zip(r["scores"], r["labels"]))]
    assert [(row["image"], pytest.approx(row["score"]), row["label"], row["name"]) for row in rows] == expected
    assert ("embedding" in (rows[0] if rows else {"embedding": 0})) or not embeddings
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["image"] for e in errors] == [r["image"] for r in records if r["error"]]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["images"] == len(good) and summary["errors"] == len(errors) and summary["engine"] == "local"
    assert [p.name for p in out.parent.iterdir()] == ["out.parquet"]  # no partial folder left


def test_an_interrupted_job_leaves_no_table_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "out.parquet"
    write_tables(iter([record("a.jpg", 10, 10, boxes=[[0, 0, 1, 1]], scores=[0.9], labels=["face"])]), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted():
        yield record("b.jpg", 10, 10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tables(interrupted(), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


@pytest.mark.parametrize("argv, message", [
    (["run", "a.onnx", "photos", "--out", "o", "--actors", "2"], "--ray-address, --actors and --actor-threads belong "
                                                                   "to --engine ray"),
    (["run", "a.onnx", "photos", "--out", "o.jpg", "--engine", "ray"], "writes tables into a folder named *.parquet"),
    (["run", "a.onnx", "clip.mp4", "--out", "o.parquet"], "tables are made from images"),
    (["run", "a.onnx", "photos", "--out", "o.jpg", "--embeddings"], "--embeddings goes into tables"),
    (["faces", "enroll", "g.json", "Ann", "--folder", "people"], "give a NAME and their IMAGES, or --folder"),
    (["faces", "enroll", "g.json"], "give a NAME and their IMAGES, or --folder"),
])
def test_engine_flags_out_of_place_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--actors", "--batch", "--actor-threads"])
@given(value=st.one_of(st.integers(-3, 0).map(str), st.sampled_from(["x", "1.5", ""])))
@settings(max_examples=10, deadline=None)
def test_engine_counts_are_whole_numbers_above_zero(flag, value):
    with pytest.raises(SystemExit) as stop:
        main(["eval", "a.onnx", "--data", "d", flag, value])
    assert stop.value.code == 2
