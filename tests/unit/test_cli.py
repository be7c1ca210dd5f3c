"""CLI parsing: every command's --help works, flags map to options, unknown flags fail with exit 2."""

import pytest

from pipeline.cli import _parser, main

COMMANDS = [["zoo", "list"], ["export"], ["build"], ["eval"], ["quantize"], ["bench"], ["report"], ["env", "create"],
            ["demo"], ["run"], ["faces", "enroll"], ["faces", "identify"]]


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
