"""CLI parsing: every command's --help works, flags map to options, unknown flags fail with exit 2."""

import json
import math
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgepipe.cli import _parser, main
from tests.support.tiny import png_claiming, tiny_embedder

COMMANDS = [["zoo", "list"], ["export"], ["build"], ["eval"], ["quantize"], ["bench"], ["report"], ["env", "create"],
            ["demo"], ["run"], ["faces", "enroll"], ["faces", "identify"], ["train"], ["split"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0 and "usage: edgepipe" in capsys.readouterr().out


def test_demo_passes_streamlit_flags_through():
    args, extra = _parser().parse_known_args(["demo", "--server.port", "8601", "--server.headless", "true"])
    assert args.command == "demo" and extra == ["--server.port", "8601", "--server.headless", "true"]


def test_unknown_flags_and_values_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["zoo", "list", "--bogus"])
    assert exit_info.value.code == 2 and "--bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "x.onnx", "--threads", "one", "--json", "o.json"])
    assert exit_info.value.code == 2


def test_library_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.onnx"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgepipe: error:") and len(err.splitlines()) == 1


def test_train_and_build_option_errors_are_one_line(tmp_path, capsys):
    assert main(["build", "nanodet_g.coco", "blazeface_back.mediapipe", "--weights", str(tmp_path / "w"),
                 "--no-bench"]) == 2
    assert capsys.readouterr().err.strip() == ("edgepipe: error: --weights belongs to one model; name exactly one "
                                                "MODEL (got 2)")
    assert main(["build", "sface.opencv", "--detector", "nanodet_g.coco", "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip() == ("edgepipe: error: nanodet_g.coco is not a face detector; the "
                                                "embedders need one to align faces")
    assert main(["train", "nanodet_g.coco", "--data", str(tmp_path), "--val", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "edgepipe: error: --epochs is required (or --resume a run)"
    assert main(["train", "dlib_resnet29.facerec", "--data", str(tmp_path), "--val", str(tmp_path), "--epochs", "1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "training is available for box detectors (GFL head); this model's head is 'embedding'" in capsys.readouterr().err
    assert main(["split", str(tmp_path), "--out", str(tmp_path / "s"), "--val-fraction", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "edgepipe: error: val fraction must be in (0, 1), got 1.5"
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)))
def test_score_and_distance_flags_accept_exactly_their_ranges(value):
    """--score-thresh takes [0, 1], --threshold a finite distance > 0; nan, inf, negatives and words exit 2."""
    text = repr(value) if isinstance(value, float) else value
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    run = ["run", "a.onnx", "in.jpg", "--out", "o.jpg", "--score-thresh", text]
    identify = ["faces", "identify", "g.json", "in.jpg", "--threshold", text]
    for flags, ok in ((run, 0.0 <= number <= 1.0), (identify, 0.0 < number < math.inf)):
        if ok:
            assert _parser().parse_args(flags)
        else:
            with pytest.raises(SystemExit) as exit_info:
                _parser().parse_args(flags)
            assert exit_info.value.code == 2


def test_demo_listens_on_this_machine_only_unless_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    monkeypatch.delenv("STREAMLIT_SERVER_ADDRESS", raising=False)
    assert main(["demo", "--server.headless", "true"]) == 0
    command, env = calls[0]
    assert env["STREAMLIT_SERVER_ADDRESS"] == "127.0.0.1" and env["STREAMLIT_CLIENT_TOOLBAR_MODE"] == "minimal"
    assert command[-2:] == ["--server.headless", "true"]  # a --server.address flag would still win: it is passed on


@pytest.mark.parametrize("argv, message", [
    (["faces", "identify", "g.json", "in.jpg", "--out", "named.txt"], "cannot write an image as '.txt'"),
])
def test_an_output_name_that_cannot_be_written_is_refused_before_any_work(argv, message, tmp_path, capsys):
    assert main(["--cache-dir", str(tmp_path), *argv]) == 2  # the gallery and models do not even exist
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _one_error_line(capsys, code: int, expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("edgepipe: error:"), err
    assert expected in err, err


def test_destinations_are_checked_before_any_work(tmp_path, capsys):
    artifact = tiny_embedder(tmp_path / "tiny.onnx")
    taken = tmp_path / "taken"
    taken.write_text("x")
    _one_error_line(capsys, main(["export", "blazeface_front.mediapipe", "--out", str(taken)]), "is a file; expected")
    _one_error_line(capsys, main(["quantize", str(artifact), "--precision", "fp16", "--out", str(taken)]),
                    "is a file; expected a folder")
    _one_error_line(capsys, main(["eval", str(artifact), "--data", str(tmp_path), "--json", "/proc/x/e.json"]),
                    "/proc/x/e.json: cannot be written")
    _one_error_line(capsys, main(["bench", str(artifact), "--json", str(tmp_path)]), "is a directory")
    _one_error_line(capsys, main(["report", str(taken), "--out", str(taken)]), "is a file; expected a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "tiny.onnx"]


def test_bench_refuses_an_input_that_is_no_image_before_timing_anything(tmp_path, capsys):
    text = tmp_path / "text.jpg"
    text.write_text("not a photo")
    artifact = tiny_embedder(tmp_path / "tiny.onnx")
    _one_error_line(capsys, main(["bench", str(artifact), "--image", str(text), "--json", str(tmp_path / "b.json")]),
                    "text.jpg: could not be decoded as a .jpg image")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(20_000, 20_000))
    _one_error_line(capsys, main(["bench", str(artifact), "--image", str(bomb), "--json", str(tmp_path / "b.json")]),
                    "20000x20000 is 400 megapixels, over the 100 MP limit")
    _one_error_line(capsys, main(["--max-pixels", "500000000", "bench", str(artifact), "--image", str(bomb), "--json",
                                  str(tmp_path / "b.json")]), "bomb.png: could not be decoded")
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("rows, expected", [
    ([], "found an empty list"),
    ({"model": "x"}, "found dict"),
    ([{"model": "m", "precision": "fp32", "ep": "cpu", "threads": "1", "batch": 1, "status": "ok", "machine": {}}],
     "row 0 field 'threads' should be int, found '1'"),
])
def test_report_refuses_what_bench_did_not_write(tmp_path, capsys, rows, expected):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(rows))
    _one_error_line(capsys, main(["report", str(path), "--out", str(tmp_path / "report")]), expected)
    assert not (tmp_path / "report").exists()


def test_main_runs_off_the_main_thread(capsys):
    """A host (a notebook, a UI) may call main() from a worker thread: no signal handler is installed there."""
    import threading

    codes = []
    worker = threading.Thread(target=lambda: codes.append(main(["zoo", "list", "yunet*"])))
    worker.start()
    worker.join()
    assert codes == [0] and "3x(/32, <=1920)" in capsys.readouterr().out
