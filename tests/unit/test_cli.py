"""CLI parsing: every command's --help works, flags map to options, unknown flags fail with exit 2."""

import pytest

from edgepipe.cli import _parser, main

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
    assert main(["train", "nanodet_g.coco", "--data", str(tmp_path), "--val", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "edgepipe: error: --epochs is required (or --resume a run)"
    assert main(["train", "dlib_resnet29.facerec", "--data", str(tmp_path), "--val", str(tmp_path), "--epochs", "1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "training is available for box detectors (GFL head); this model's head is 'embedding'" in capsys.readouterr().err
    assert main(["split", str(tmp_path), "--out", str(tmp_path / "s"), "--val-fraction", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "edgepipe: error: val fraction must be in (0, 1), got 1.5"
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()
