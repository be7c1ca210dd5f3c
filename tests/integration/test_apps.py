"""The Streamlit demo pages driven headless with `AppTest`, on real zoo artifacts and real photos.

Inputs reach the pages through their documented test hook (`st.session_state["<key>_path"]`, read through the same
checks as an upload); one test also goes through AppTest's file uploader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APPS = Path(__file__).resolve().parents[2] / "apps"
pytestmark = pytest.mark.integration


@pytest.fixture()
def demo(artifacts, tmp_path, monkeypatch) -> Path:
    """Point the apps at the session's exported artifacts and a fresh gallery and cache; returns the gallery path."""
    folder = next(iter(artifacts.values())).parent
    monkeypatch.setenv("EDGEPIPE_ARTIFACTS", str(folder))
    monkeypatch.setenv("EDGEPIPE_GALLERY", str(tmp_path / "gallery.json"))
    monkeypatch.setenv("EDGEPIPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "gallery.json"


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(APPS / name), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def no_exceptions(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def result_table(at: AppTest, column: str):
    tables = [t.value for t in at.dataframe if column in t.value.columns]
    assert tables, f"no table with a {column!r} column"
    return tables[-1]


def test_home_lists_artifacts_and_offers_a_build(demo, tmp_path, monkeypatch):
    at = no_exceptions(page("Home.py"))
    assert "All the artifacts" in at.success[0].value
    assert set(at.dataframe[0].value["found"]) == {"fp32"}
    monkeypatch.setenv("EDGEPIPE_ARTIFACTS", str(tmp_path / "empty"))
    at = no_exceptions(page("Home.py"))
    assert "Missing:" in at.warning[0].value
    assert "edgepipe.cli build" in at.code[0].value and "--no-bench" in at.code[0].value
    assert at.button(key="build").label == "Build missing artifacts"


def enroll(at: AppTest, name: str, photo: Path) -> AppTest:
    at.text_input(key="enroll_name").input(name)
    at.session_state["enroll_path"] = str(photo)
    return no_exceptions(at.run().button(key="enroll").click().run())


def test_face_enroll_identify_threshold_manage(demo, shared_data):
    lfw = shared_data / "lfw_10ids" / "images"
    at = no_exceptions(page("pages/1_Face_recognition.py"))
    assert str(demo) in at.caption[0].value
    enroll(at, "Tony Blair", lfw / "Tony_Blair" / "Tony_Blair_0001.jpg")
    enroll(at, "Colin Powell", lfw / "Colin_Powell" / "Colin_Powell_0001.jpg")
    saved = json.loads(demo.read_text())
    assert saved["format"] == "edgepipe-face-gallery" and sorted(saved["people"]) == ["Colin Powell", "Tony Blair"]

    # a fresh session reads the persisted gallery and names other photos of the same people
    at = page("pages/1_Face_recognition.py", identify_path=str(lfw / "Tony_Blair" / "Tony_Blair_0005.jpg"))
    table = result_table(no_exceptions(at), "distance")
    default = at.slider(key="threshold").value
    print(f"threshold default {default:.3f}; Tony_Blair_0005 -> {table.iloc[0].to_dict()}")
    assert table["name"].iloc[0] == "Tony Blair" and table["distance"].iloc[0] < default
    assert len(at.image) == 1
    at.session_state["identify_path"] = str(lfw / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg")
    assert result_table(no_exceptions(at.run()), "distance")["name"].iloc[0] == "unknown"

    # the threshold changes the result: below the measured distance the same person is unknown
    at.session_state["identify_path"] = str(lfw / "Tony_Blair" / "Tony_Blair_0005.jpg")
    at.slider(key="threshold").set_value(0.2)
    assert result_table(no_exceptions(at.run()), "distance")["name"].iloc[0] == "unknown"

    # rename and remove persist
    at.selectbox(key="manage_person").set_value("Tony Blair")
    at.text_input(key="manage_new_name").input("Tony")
    no_exceptions(at.run().button(key="rename").click().run())
    assert sorted(json.loads(demo.read_text())["people"]) == ["Colin Powell", "Tony"]
    at.selectbox(key="manage_person").set_value("Colin Powell")
    no_exceptions(at.run().button(key="remove").click().run())
    assert list(json.loads(demo.read_text())["people"]) == ["Tony"]


def test_face_page_says_no_face_found(demo, shared_data):
    at = page("pages/1_Face_recognition.py",
              identify_path=str(shared_data / "coco_val_mini" / "images" / "000000011813.jpg"))
    assert any("No face found" in w.value for w in no_exceptions(at).warning)


def test_detection_threshold_and_class_filter(demo, shared_data):
    image = shared_data / "coco_val_mini" / "images" / "000000000139.jpg"  # living room: people, tv, chairs
    at = no_exceptions(page("pages/2_Object_detection.py", detect_path=str(image)))
    table = result_table(at, "label")
    print(at.success[0].value)
    assert "person" in set(table["label"]) and len(at.image) == 1
    assert at.download_button(key="download").label == "Download annotated image"
    at.slider(key="score_thresh").set_value(0.8)
    strict = result_table(no_exceptions(at.run()), "label")
    assert len(strict) < len(table) and (strict["score"] >= 0.8).all()
    at.slider(key="score_thresh").set_value(0.35)
    at.multiselect(key="classes").set_value(["person"])
    people = result_table(no_exceptions(at.run()), "label")
    assert set(people["label"]) == {"person"} and len(people) < len(table)


def test_detection_through_the_file_uploader(demo, shared_data):
    image = shared_data / "coco_val_mini" / "images" / "000000000139.jpg"
    at = no_exceptions(page("pages/2_Object_detection.py"))
    at.file_uploader(key="detect_upload").upload(image.name, image.read_bytes(), "image/jpeg")
    assert "detections in" in no_exceptions(at.run()).success[0].value


def test_detection_on_a_video(demo, shared_data):
    at = no_exceptions(page("pages/2_Object_detection.py", detect_path=str(shared_data / "videos" / "face_carphone.mp4")))
    message = at.success[0].value
    table = result_table(at, "tracks")
    print(message, table.to_dict("records"))
    assert "frames per second" in message and len(at.get("video")) == 1
    assert at.download_button(key="download").label == "Download annotated video"
    # tracked: the man on the phone is a few tracks over the clip's 120 frames, not a new box every frame
    person = table.set_index("label").loc["person"]
    assert 1 <= person["tracks"] <= 5 < person["detections"] and (table["tracks"] <= table["detections"]).all()
    at.multiselect(key="classes").set_value(["person"])
    people = result_table(no_exceptions(at.run()), "tracks")
    assert people.to_dict("records") == [{"label": "person", **person.to_dict()}]  # labels never share a track


def test_face_video_is_tracked_and_named_per_track(demo, shared_data, tmp_path):
    import cv2

    video = shared_data / "videos" / "face_carphone.mp4"
    ok, first = cv2.VideoCapture(str(video)).read()
    assert ok and cv2.imwrite(str(tmp_path / "first.png"), first)
    lfw = shared_data / "lfw_10ids" / "images"
    at = enroll(page("pages/1_Face_recognition.py"), "Tony Blair", lfw / "Tony_Blair" / "Tony_Blair_0001.jpg")
    at.session_state["identify_path"] = str(video)
    assert set(result_table(no_exceptions(at.run()), "track")["name"]) == {"unknown"}
    at.slider(key="threshold").set_value(1.2)  # past any distance: the slider reaches the video's votes
    assert "Tony Blair" in set(result_table(no_exceptions(at.run()), "track")["name"])

    enroll(at, "Caller", tmp_path / "first.png")
    at = no_exceptions(page("pages/1_Face_recognition.py", identify_path=str(video)))
    table = result_table(at, "track")
    print(at.caption[-1].value, table.to_dict("records"))
    assert "frames per second" in at.caption[-1].value and len(at.get("video")) == 1
    assert list(table.columns) == ["track", "name", "frames"] and table["track"].is_unique
    assert table["frames"].sum() <= 120 and table["frames"].max() > 100  # one face, one track nearly throughout
    assert table.loc[table["frames"].idxmax(), "name"] == "Caller"


@pytest.mark.parametrize("name, body, message", [
    ("notes.txt", b"hello", "unsupported file type 'txt'"),
    ("broken.jpg", b"\xff\xd8 not really a jpeg", "could not be decoded as an image"),
    ("broken.mp4", b"not a video", "video"),
])
def test_bad_upload_shows_one_line(demo, tmp_path, name, body, message):
    bad = tmp_path / name
    bad.write_bytes(body)
    at = no_exceptions(page("pages/2_Object_detection.py", detect_path=str(bad)))
    assert len(at.error) == 1 and message in at.error[0].value and "\n" not in at.error[0].value


def test_upload_size_limit(demo, tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(26 * 10**6)
    at = no_exceptions(page("pages/2_Object_detection.py", detect_path=str(big)))
    assert "over the 25 MB limit" in at.error[0].value


def test_model_lab_latency_figures_and_bench_plots(artifacts, demo, tmp_path, monkeypatch, group_photos):
    folder = tmp_path / "lab"
    (folder / "report").mkdir(parents=True)
    for onnx in artifacts.values():
        for path in (onnx, onnx.with_suffix(".json")):
            if path.exists():
                os.symlink(path, folder / path.name)
    # a bench report in the shape `edgepipe build` writes (values illustrative, not measured)
    rows = [{"model": model, "precision": "fp32", "ep": ep, "threads": 1, "batch": 1, "status": "ok",
             "latency_ms_p50": ms, "latency_ms_p90": ms * 1.1} for model in artifacts for ep, ms in (("cpu", 5.0),
                                                                                                    ("torch", 9.0))]
    (folder / "report" / "bench.json").write_text(json.dumps(rows))
    monkeypatch.setenv("EDGEPIPE_ARTIFACTS", str(folder))
    at = no_exceptions(page("pages/3_Model_lab.py", lab_path=str(group_photos[0])))
    assert "p50" in at.success[0].value and "CPUExecutionProvider" in at.success[0].value
    at.selectbox(key="lab_model").set_value("nanodet_g.coco")
    assert "nanodet_g.coco fp32" in no_exceptions(at.run()).success[0].value
    recorded = {m.label: m.value for m in at.metric}
    assert recorded["Recorded p50"] == "5.0 ms"  # the bench report's cpu cell for this model, not "n/a"
    charts = at.get("vega_lite_chart")
    assert charts and "latency_ms_p50" in charts[0].proto.spec
