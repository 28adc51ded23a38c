"""The rvm-export command, in-process: exit codes, what it leaves on disk, refusals, bench and verify."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from rvm_export.cli import main  # noqa: E402
from rvm_export.core.errors import ExitCode  # noqa: E402
from rvm_export.core.metadata import sha256_file  # noqa: E402

pytestmark = pytest.mark.onnx
SMALL = ["--resolution", "256x144@0.5", "--frames", "4", "--bench-frames", "3", "--threads", "2", "--quiet"]


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial" in p.name or p.name.startswith(".stage")]


@pytest.fixture(scope="session")
def exported(golden_pth, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "out"
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(out), *SMALL])
    return code, out


def test_export_succeeds_and_leaves_a_complete_folder(exported, golden_pth):
    code, out = exported
    assert code == ExitCode.OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["checkpoint_sha256"] == sha256_file(golden_pth)
    [entry] = manifest["artifacts"]
    for key in ("target", "path", "precision", "resolution", "downsample_ratio", "layout", "inputs", "outputs",
                "sha256", "parity", "benchmark"):
        assert key in entry, key
    assert entry["target"] == "onnx" and entry["resolution"] is None and entry["downsample_ratio"] == "dynamic"
    assert entry["sha256"] == sha256_file(out / entry["path"])
    assert [i["name"] for i in entry["inputs"]] == ["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"]
    [parity] = entry["parity"]
    assert parity["passed"] and parity["frames"] == 4 and parity["max_abs"] <= 1e-4
    assert set(parity["outputs"]) == {"fgr", "pha", "r1o", "r2o", "r3o", "r4o"}
    [bench] = entry["benchmark"]
    assert bench["median_ms"] > 0 and bench["p90_ms"] >= bench["median_ms"] and bench["fps"] > 0
    report = (out / "report.md").read_text()
    assert "| exported |" in report and "256x144@0.5" in report
    assert not _leftovers(out)


def test_static_flavour_per_bucket(golden_pth, tmp_path):
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(tmp_path), "--downsample-ratio",
                 "0.5", "--resolution", "256x144", "--resolution", "160x96", "--skip-bench", *SMALL[2:4], "--quiet"])
    assert code == ExitCode.OK
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(tuple(a["resolution"]) for a in manifest["artifacts"]) == [(160, 96), (256, 144)]
    assert all(a["downsample_ratio"] == 0.5 and a["flavour"] == "static" for a in manifest["artifacts"])


@pytest.mark.parametrize("args,message", [
    (["--target", "nope"], "unknown target 'nope'"),
    (["--target", "onnx", "--downsample-ratio", "2"], "must be in (0, 1], got 2.0"),
    (["--target", "onnx", "--downsample-ratio", "fast"], "must be a number"),
    (["--target", "onnx", "--resolution", "1920"], "not WxH"),
    (["--target", "onnx", "--option", "coreml"], "not TARGET.KEY=VALUE"),
    (["--target", "onnx", "--option", "coreml.x=1"], "not among the targets"),
    (["--target", "onnx", "--layout", "NHWC"], "NCHW only"),
    (["--target", "onnx", "--precision", "bf16"], "cannot export precision bf16"),
    (["--target", "onnx", "--checkpoint", "/nonexistent.pth"], "checkpoint not found"),
], ids=["target", "ratio>1", "ratio-word", "resolution", "option-format", "option-target", "layout", "precision",
        "checkpoint"])
def test_usage_errors_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--quiet"]) == ExitCode.USAGE
    assert message in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("*.onnx"))


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "rvm.pth"
    bad.write_bytes(b"\x80\x02garbage")
    assert main(["--target", "onnx", "--checkpoint", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "not a readable PyTorch checkpoint" in capsys.readouterr().err


def test_checkpoint_of_another_variant(golden_pth, tmp_path, capsys):
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--variant", "resnet50",
                 "--out", str(tmp_path / "o"), "--quiet"])
    assert code == ExitCode.USAGE
    assert "looks like mobilenetv3 + deep_guided_filter" in capsys.readouterr().err


def test_missing_runtime_exits_3(monkeypatch, tmp_path, capsys):
    import targets.onnx

    monkeypatch.setattr(targets.onnx, "missing", lambda device="cpu": "onnxruntime: pip install 'rvm-export[onnx]'")
    assert main(["--target", "onnx", "--out", str(tmp_path), "--quiet"]) == ExitCode.MISSING_RUNTIME
    assert "rvm-export[onnx]" in capsys.readouterr().err


def test_parity_failure_exits_1_and_is_reported(golden_pth, tmp_path, monkeypatch):
    from rvm_export import tolerances

    strict = tolerances.Tolerance(1e-12, 1e-12, why="test: impossible bound")
    monkeypatch.setitem(tolerances.TOLERANCES, ("onnx", "fp32"), strict)
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(tmp_path), "--skip-bench",
                 *SMALL[:4], "--quiet"])
    assert code == ExitCode.PARITY_FAILED
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifacts"][0]["status"] == "exported, parity failed"
    assert "exceeds 1e-12" in " ".join(manifest["artifacts"][0]["parity"][0]["failures"])
    assert "parity failed" in (tmp_path / "report.md").read_text()


def test_a_runtime_this_machine_lacks_is_not_a_parity_failure(golden_pth, tmp_path, monkeypatch, capsys):
    """An artifact written for a capability this machine lacks (OpenVINO bf16 without AMX or AVX512-BF16 raises
    MissingRuntimeError at load) is kept and marked "not checked here", with exit 3, in export and in verify."""
    import targets.onnx
    from rvm_export.core.errors import MissingRuntimeError

    def lacking(artifact, options):
        raise MissingRuntimeError("CPU (test) cannot run inference precision bf16")

    monkeypatch.setattr(targets.onnx, "load", lacking)
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(tmp_path), "--skip-bench",
                 *SMALL[:4], "--quiet"])
    assert code == ExitCode.MISSING_RUNTIME
    err = capsys.readouterr().err
    assert "not checked against PyTorch here" in err and "do not match PyTorch" not in err
    entry = json.loads((tmp_path / "manifest.json").read_text())["artifacts"][0]
    assert entry["status"] == "exported, not checked here" and (tmp_path / entry["path"]).is_file()
    assert "cannot run inference precision bf16" in " ".join(entry["errors"])
    assert main(["verify", str(tmp_path), "--checkpoint", str(golden_pth), "--frames", "2", "--quiet"]) == \
        ExitCode.MISSING_RUNTIME
    assert "not checked here: CPU (test)" in capsys.readouterr().out


def test_converter_failure_leaves_no_model_file(golden_pth, tmp_path, monkeypatch):
    import torch

    def broken_export(module, args, path, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise RuntimeError("simulated converter crash")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(tmp_path), *SMALL])
    assert code == ExitCode.EXPORT_FAILED
    assert not list(tmp_path.rglob("*.onnx")) and not _leftovers(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifacts"] == [] and "simulated converter crash" in manifest["failures"][0]["reason"]


def test_bench_side_by_side_with_a_foreign_file(exported, golden_model, tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.original_style_onnx import build

    _, out = exported
    foreign = build(tmp_path / "rvm_mobilenetv3_fp32.onnx", golden_model)
    result = tmp_path / "bench.json"
    code = main(["bench", str(out), "--foreign", str(foreign), "--resolution", "256x144@0.5", "--frames", "3",
                 "--rounds", "1", "--warmup", "1", "--threads", "2", "--json", str(result), "--quiet"])
    assert code == ExitCode.OK
    data = json.loads(result.read_text())
    names = [r["name"] for r in data["results"]]
    assert names[0] == "foreign:rvm_mobilenetv3_fp32.onnx" and len(names) == 2
    assert "speed-up vs foreign:rvm_mobilenetv3_fp32.onnx" in capsys.readouterr().out


def test_verify_passes_then_catches_a_changed_file(exported, golden_pth, tmp_path):
    import shutil

    _, out = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert main(["verify", str(copy), "--checkpoint", str(golden_pth), "--frames", "3", "--quiet"]) == ExitCode.OK
    model_file = next(copy.rglob("*.onnx"))
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    assert main(["verify", str(copy), "--checkpoint", str(golden_pth), "--frames", "2", "--quiet"]) == \
        ExitCode.PARITY_FAILED


def test_verify_refuses_other_weights(exported, capsys):
    _, out = exported
    assert main(["verify", str(out), "--frames", "2", "--quiet"]) == ExitCode.USAGE
    assert "pass --checkpoint" in capsys.readouterr().err


def test_default_model_is_announced_loudly(tmp_path, capsys):
    code = main(["--target", "onnx", "--out", str(tmp_path), "--skip-bench", "--resolution", "160x96@0.5",
                 "--frames", "2", "--quiet"])
    assert code == ExitCode.OK
    assert "UNTRAINED" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"]["untrained"] is True
    assert "Untrained seeded default model" in (tmp_path / "report.md").read_text()


def test_mil_program_check_is_not_timed(golden_pth, tmp_path):
    """The CoreML check on Linux runs NumPy, not Core ML: the report says so instead of quoting its speed."""
    pytest.importorskip("coremltools")
    code = main(["--target", "coreml", "--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(tmp_path),
                 "--precision", "fp32", "--resolution", "160x96@0.5", "--frames", "2", "--bench-frames", "2",
                 "--threads", "2", "--quiet"])
    assert code == ExitCode.OK
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    by_target = {a["target"]: a for a in manifest["artifacts"]}
    assert by_target["coreml"]["benchmark"] == []
    assert "not timed" in by_target["coreml"]["benchmark_errors"][0]
    assert len(by_target["onnx"]["benchmark"]) == 1  # the real runtime beside it is still timed
    assert "not Core ML" in (tmp_path / "report.md").read_text()


def test_bench_with_nothing_this_machine_can_run_exits_3_and_writes_no_results(exported, tmp_path, monkeypatch,
                                                                                 capsys):
    import targets.onnx
    from rvm_export.core.errors import MissingRuntimeError

    def lacking(artifact, options):
        raise MissingRuntimeError("CPU (test) cannot run inference precision bf16")

    monkeypatch.setattr(targets.onnx, "load", lacking)
    _, out = exported
    results = tmp_path / "bench.json"
    code = main(["bench", str(out), "--resolution", "256x144@0.5", "--frames", "2", "--json", str(results),
                 "--quiet"])
    assert code == ExitCode.MISSING_RUNTIME and not results.exists()
    assert "nothing was timed: this machine cannot run" in capsys.readouterr().err
