"""Bad arguments refused by the command line before any work: one line, exit 2, nothing written or run.

Parse- and plan-level only (no export, no benchmark, no matting runs): each test proves "before any work" by
making the work itself fail the test if it is reached. docs/bad_inputs.md lists every case.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from rvm_export.cli import main
from rvm_export.core.errors import ExitCode, InputError, UsageError


def _one_error(err: str, *texts: str) -> str:
    """The single ``error:`` line of ``err`` (it must be the last line), checked to contain every text."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err, err
    for text in texts:
        assert text in errors[0], err
    return errors[0]


@pytest.fixture
def no_work(monkeypatch):
    """Every kind of work fails the test if it starts: loading a model, benchmarking, matting."""
    import rvm_export.cli.bench as bench_cli
    import rvm_export.matte.job as job
    import rvm_export.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the arguments were refused")

    monkeypatch.setattr(pipeline, "load_model", refuse)
    monkeypatch.setattr(bench_cli, "bench_side_by_side", refuse)
    monkeypatch.setattr(job, "prepare", refuse)


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "afile.txt"
    path.write_text("keep me\n")
    return path


@pytest.fixture
def foreign(tmp_path) -> Path:
    path = tmp_path / "foreign.onnx"  # never loaded: every case is refused before
    path.write_bytes(b"not read")
    return path


def _matte(*args: str) -> int:
    from rvm_export.matte.cli import main as matte_main

    return matte_main(list(args))


# -- items 1-3: output paths ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["bench-json", "bench-json-deeper", "export-out", "matte-alpha", "matte-summary",
                                   "matte-compare-plot"])
def test_an_output_under_a_file_is_refused_before_any_work(where, a_file, foreign, tmp_path, capsys, no_work):
    pytest.importorskip("av")
    under = str(a_file / "x.json")
    image = tmp_path / "in.png"
    image.write_bytes(b"")
    code = {
        "bench-json": lambda: main(["bench", "--foreign", str(foreign), "--json", under, "--quiet"]),
        "bench-json-deeper": lambda: main(["bench", "--foreign", str(foreign), "--json", str(a_file / "d/x.json")]),
        "export-out": lambda: main(["--target", "onnx", "--out", str(a_file / "sub"), "--quiet"]),
        "matte-alpha": lambda: _matte(str(image), "--model", str(foreign), "--alpha", str(a_file / "sub")),
        "matte-summary": lambda: _matte(str(image), "--model", str(foreign), "--alpha", str(tmp_path / "a"),
                                        "--summary-json", under),
        "matte-compare-plot": lambda: _matte(str(image), "--model", str(foreign), "--compare", str(foreign),
                                             "--compare-plot", str(a_file / "p.png")),
    }[where]()
    assert code == ExitCode.USAGE
    _one_error(capsys.readouterr().err, f"{a_file} is a file, not a folder")
    assert a_file.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["afile.txt", "foreign.onnx", "in.png"])


def test_matte_queue_is_bounded(tmp_path, capsys, no_work):
    pytest.importorskip("av")
    assert _matte("in.png", "--model", "m.onnx", "--alpha", str(tmp_path / "a"), "--queue", "100000") == 2
    _one_error(capsys.readouterr().err, "argument --queue: must be in 1 .. 64, got 100000")


def test_matte_request_checks_every_output_path_before_reading(a_file, tmp_path):
    """The Python API refuses it too (exit 2 class), in check_paths, the first step of a run."""
    pytest.importorskip("av")
    from rvm_export.matte.request import MatteRequest

    request = MatteRequest(tmp_path / "in.mp4", tmp_path / "m.onnx", alpha=a_file / "sub")
    with pytest.raises(InputError, match="is a file, not a folder") as info:
        request.check_paths()
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("command", ["export-out", "bench-json", "matte-alpha", "matte-composite", "api"])
def test_an_empty_output_path_is_refused(command, foreign, tmp_path, capsys, no_work, monkeypatch):
    pytest.importorskip("av")
    monkeypatch.chdir(tmp_path)  # "" used to mean the current folder: nothing may land here
    if command == "api":
        from rvm_export.matte.request import MatteRequest

        with pytest.raises(UsageError, match="empty path"):
            MatteRequest("in.mp4", "m.onnx", alpha="")
        return
    code = {"export-out": lambda: main(["--target", "onnx", "--out", "", "--quiet"]),
            "bench-json": lambda: main(["bench", "--foreign", str(foreign), "--json", ""]),
            "matte-alpha": lambda: _matte("in.png", "--model", str(foreign), "--alpha", ""),
            "matte-composite": lambda: _matte("in.png", "--model", str(foreign), "--composite", " ")}[command]()
    assert code == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "empty path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.onnx"]


@pytest.mark.parametrize("args", [["--target", "onnx", "--checkpoint", ""], ["verify", ""], ["bench", ""],
                                  ["bench", "--foreign", ""], ["matte", "", "--model", "m.onnx", "--alpha", "a"],
                                  ["matte", "in.png", "--model", "", "--alpha", "a"]],
                         ids=["checkpoint", "verify", "bench", "foreign", "matte-input", "matte-model"])
def test_an_empty_input_path_is_refused(args, tmp_path, capsys, no_work, monkeypatch):
    """``Path("")`` is the current folder: "checkpoint not found: ." named the wrong problem."""
    pytest.importorskip("av")
    monkeypatch.chdir(tmp_path)
    assert main(args) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "an empty path")


def test_a_folder_where_the_json_goes_is_refused(foreign, tmp_path, capsys, no_work):
    assert main(["bench", "--foreign", str(foreign), "--json", str(tmp_path)]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "is a folder, not a file")


# -- item 4: bounds on frame counts --------------------------------------------------------------------------------
@pytest.mark.parametrize("args,text", [
    (["--frames", "10001"], "argument --frames: must be in 1 .. 10000, got 10001"),
    (["--bench-frames", "10001"], "argument --bench-frames: must be in 1 .. 10000"),
    (["--temporal", "20001"], "argument --temporal: must be in 8 .. 20000 (or 0: off), got 20001"),
    (["--temporal", "5"], "must be at least 8: 8 .. 20000 (or 0: off), got 5"),
    (["--temporal-window", "0"], "argument --temporal-window: must be at least 1: 1 .. 20000"),
    (["--golden-frames", "101"], "argument --golden-frames: must be in 1 .. 100 (or 0: none), got 101"),
    (["--frames", "\uff19"], "must be an integer (ASCII digits)"),
    (["--frames", "1_000"], "must be an integer (ASCII digits)"),
], ids=["frames", "bench-frames", "temporal-big", "temporal-small", "window", "golden", "fullwidth", "underscore"])
def test_export_frame_counts_are_bounded(args, text, tmp_path, capsys, no_work):
    assert main(["--target", "onnx", "--out", str(tmp_path / "o"), "--quiet", *args]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, text)
    assert not (tmp_path / "o").exists()


def test_verify_and_bench_frame_counts_are_bounded(foreign, tmp_path, capsys, no_work):
    assert main(["verify", str(tmp_path), "--frames", "10001"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "must be in 1 .. 10000")
    assert main(["bench", "--foreign", str(foreign), "--frames", "10001"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "must be in 1 .. 10000")


def test_the_python_api_takes_the_same_bounds():
    from rvm_export.core.bucket import Bucket
    from rvm_export.pipeline import RunConfig

    bucket = (Bucket(96, 54, 1.0),)
    for kwargs, text in (({"frames": 10_001}, "--frames must be in 1 .. 10000"),
                         ({"bench_frames": 0}, "--bench-frames must be in 1 .. 10000"),
                         ({"temporal": 20_001}, "--temporal must be 0 (off) or in 8 .. 20000"),
                         ({"golden_frames": 101}, "--golden-frames must be in 0 .. 100"),
                         ({"out_dir": ""}, "--out is an empty path")):
        with pytest.raises(UsageError, match=text.replace("(", r"\(").replace(")", r"\)")):
            RunConfig(**{"targets": ("onnx",), "out_dir": "o", "buckets": bucket, **kwargs})


# -- item 5: bench arguments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,text", [
    (["--baseline", "nosuchrow"], "--baseline 'nosuchrow' is not a row of this run; rows: foreign:foreign.onnx"),
    (["--settle-ms", "-5"], "argument --settle-ms: must be in 0 .. 10000, got '-5'"),
    (["--settle-ms", "nan"], "argument --settle-ms: must be in 0 .. 10000, got 'nan'"),
    (["--warmup", "-1"], "argument --warmup: must be at least 0: 0 .. 10000, got -1"),
    (["--rounds", "0"], "argument --rounds: must be at least 1: 1 .. 10000"),
    (["--resolution", "96x54@"], "ends with '@' but gives no ratio"),
], ids=["baseline", "settle-negative", "settle-nan", "warmup", "rounds", "resolution"])
def test_bench_arguments_are_refused_before_any_work(args, text, foreign, capsys, no_work):
    assert main(["bench", "--foreign", str(foreign), "--quiet", *args]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, text)


def test_bench_foreign_that_does_not_exist(tmp_path, capsys, no_work):
    assert main(["bench", "--foreign", str(tmp_path / "nosuch.onnx")]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "nosuch.onnx: no such file")


def test_bench_api_refuses_bad_counts():
    from rvm_export.bench import bench_side_by_side
    from rvm_export.core.bucket import Bucket

    for kwargs in ({"frames": 0}, {"warmup": -1}, {"settle_ms": -5.0}, {"settle_ms": float("nan")}):
        with pytest.raises(UsageError, match="bench needs"):
            bench_side_by_side([], Bucket(96, 54, 1.0), **kwargs)


# -- item 6: the MIL executor is not timed -------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the Core ML runtime runs and is timed")
def test_bench_skips_coreml_off_macos_with_a_note(tmp_path, capsys, monkeypatch):
    import rvm_export.cli.bench as bench_cli
    from rvm_export.core.bucket import Bucket
    from rvm_export.core.request import Artifact
    from rvm_export.core.spec import IOSpec, Precision

    bucket = Bucket(96, 54, 1.0)
    spec = IOSpec("mobilenetv3", "deep_guided_filter", bucket)
    made = [Artifact("coreml", tmp_path / "m.mlpackage", Precision.FP16, spec, "static", (bucket,)),
            Artifact("onnx", tmp_path / "m.onnx", Precision.FP32, spec, "static", (bucket,))]
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": []}))
    monkeypatch.setattr(bench_cli, "read_manifest", lambda folder: {})
    monkeypatch.setattr(bench_cli, "artifacts_from_manifest", lambda folder, manifest: list(made))
    timed = []
    monkeypatch.setattr(bench_cli, "bench_side_by_side", lambda entries, *a, **k: timed.append(
        [e.name for e in entries]) or [])
    assert main(["bench", str(tmp_path), "--resolution", "96x54@1", "--quiet",
                 "--baseline", "coreml:m.mlpackage"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "coreml:m.mlpackage is not timed here", "MIL program check")
    assert timed == []
    assert main(["bench", str(tmp_path), "--resolution", "96x54@1", "--quiet"]) == ExitCode.OK
    assert timed == [["onnx:m.onnx"]]
    assert "coreml:m.mlpackage: skipped, not timed: the MIL program check runs NumPy" in capsys.readouterr().err


def test_bench_refuses_to_time_a_runner_that_is_a_numerics_check():
    from rvm_export.bench import BenchEntry, bench_side_by_side
    from rvm_export.core.bucket import Bucket

    class Check:
        untimed_reason = "a numerics check"

    with pytest.raises(UsageError, match="x is not timed here: a numerics check"):
        bench_side_by_side([BenchEntry("x", Check)], Bucket(96, 54, 1.0), frames=1)


# -- item 7: resolutions -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [
    ("96x54@", "ends with '@' but gives no ratio"),
    ("\uff19\uff16x54", "is not WxH or WxH@RATIO in ASCII digits"),
    ("96x54@\uff10.5", "not a number like 0.25 (ASCII digits after '@')"),
    ("96x54@0_5", "not a number like 0.25"),
    ("16385x16", "resolution 16385x16 is larger than 16384 px on a side"),
    ("16x16385", "larger than 16384 px on a side"),
    ("16384x16", "the recommended ratio 0.03125 (long side at most 512 px) shrinks it to 512x0; give a ratio"),
    ("-96x54", "not WxH"),
])
def test_resolution_parsing_refusals(text, message):
    from rvm_export.core.bucket import parse_bucket

    with pytest.raises(UsageError) as info:
        parse_bucket(text)
    assert message in str(info.value)


def test_downsample_ratio_in_ascii_digits_only(tmp_path, capsys, no_work):
    assert main(["--target", "onnx", "--downsample-ratio", "\uff10.5", "--out", str(tmp_path / "o")]) == 2
    _one_error(capsys.readouterr().err, "--downsample-ratio must be a number")


# -- items 8-9: --option -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["yes", "no", "on", "off", "1", "0"])
def test_boolean_options_take_true_or_false_only(value):
    from targets.onnx import DESCRIPTION

    with pytest.raises(UsageError, match=f"onnx option ort must be true or false, got '{value}'"):
        DESCRIPTION.options.parse("onnx", {"ort": value})
    assert DESCRIPTION.options.parse("onnx", {"ort": "TRUE"}).ort is True
    assert DESCRIPTION.options.parse("onnx", {"ort": "false"}).ort is False


def test_a_bad_option_value_is_refused_before_the_model_loads(tmp_path, capsys, no_work):
    assert main(["--target", "onnx", "--option", "onnx.ort=yes", "--out", str(tmp_path / "o")]) == 2
    _one_error(capsys.readouterr().err, "must be true or false, got 'yes'")


@pytest.mark.parametrize("items,text", [
    (["onnx.ort=true", "onnx.ort=false"], "--option onnx.ort is given twice with different values ('true' and "
                                          "'false'): give it once"),
    (["ONNX.ort"], "--option 'ONNX.ort' is not TARGET.KEY=VALUE (e.g. onnx.ort=true); targets are written in "
                   "lower case: onnx; onnx option keys: ort"),
    (["onnx.ort"], "the =VALUE is missing; onnx option keys: ort"),
    (["onnx"], "the .KEY is missing; onnx option keys: ort"),
    (["nope.x=1"], "TARGET is one of onnx, "),
])
def test_option_repeats_and_forms(items, text, tmp_path, capsys, no_work):
    args = [x for item in items for x in ("--option", item)]
    assert main(["--target", "onnx", *args, "--out", str(tmp_path / "o")]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, text)


def test_the_same_option_twice_with_the_same_value_is_accepted():
    from rvm_export.cli.export import parse_options

    assert parse_options(["onnx.ort=true", "onnx.ort=true"]) == {"onnx": {"ort": "true"}}


# -- item 10: one final line, runtimes' chatter under --quiet ------------------------------------------------------
def test_one_line_joins_a_runtime_s_multi_line_message():
    from rvm_export.core.args import one_line

    openvino = ("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'is_valid_weights_range(...)' failed at "
                "src/core/xml_util/src/xml_deserialize_util.cpp:900:\n\nIncorrect weights in bin file!\n")
    assert one_line(openvino) == ("Exception from src/inference/src/cpp/core.cpp:84: | Check "
                                  "'is_valid_weights_range(...)' failed at src/core/xml_util/src/"
                                  "xml_deserialize_util.cpp:900: | Incorrect weights in bin file!")
    assert len(one_line("x" * 5000)) == 600 and one_line("x" * 5000).endswith("...")


def test_matte_error_is_one_line_and_last(tmp_path, capfd, monkeypatch):
    """A runtime's multi-line exception and its INFO chatter on fd 2: --quiet drops the chatter, the error is one
    line and the last one."""
    pytest.importorskip("av")
    import rvm_export.matte.job as job

    def failing_run(request):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        print("WARNING a warning we keep", file=sys.stderr, flush=True)
        raise InputError("OpenVINO cannot read m.xml: Exception from core.cpp:84:\nCheck failed\nIncorrect weights")

    monkeypatch.setattr(job, "run", failing_run)
    for name in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel"):
        monkeypatch.delenv(name, raising=False)
    levels = {name: logging.getLogger(name).level for name in ("coremltools", "openvino")}
    try:
        assert _matte(str(tmp_path / "in.png"), "--model", str(tmp_path / "m.xml"), "--alpha",
                      str(tmp_path / "a"), "--quiet") == ExitCode.USAGE
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        assert logging.getLogger("coremltools").level == logging.ERROR
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    err = capfd.readouterr().err
    assert "INFO:" not in err and "WARNING a warning we keep" in err
    _one_error(err, "OpenVINO cannot read m.xml: Exception from core.cpp:84: | Check failed | Incorrect weights")


def test_without_quiet_nothing_is_filtered(capfd):
    from rvm_export.quiet import native_output_filtered

    with native_output_filtered(False):
        os.write(2, b"INFO: kept without --quiet\n")
    with native_output_filtered(True):
        os.write(2, b"INFO: dropped\nI0000 00:00:1 absl line\nkept\npartial")
    err = capfd.readouterr().err
    assert err == "INFO: kept without --quiet\nkept\npartial"
