"""Bad inputs and faults: each is refused before any work with one line and the README's exit code, and leaves the
output folder as it was. docs/bad_inputs.md lists every case and its outcome."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from rvm_export.cli import main  # noqa: E402
from rvm_export.core.errors import ExitCode  # noqa: E402

pytestmark = pytest.mark.onnx
ROOT = Path(__file__).resolve().parents[1]
FAST = ["--resolution", "128x72@0.5", "--frames", "2", "--skip-bench", "--quiet", "--threads", "2"]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (for "nothing changed" checks)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error(err: str, text: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("rvm-export: error:")]
    assert len(lines) == 1 and text in lines[0], err
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def fp32_folder(golden_pth, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad") / "out"
    assert main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(out), *FAST]) == 0
    return out


# -- 1. values refused before a model is written ------------------------------------------------------------------
@pytest.mark.parametrize("args,code,text", [
    (["--resolution", "100000x100000"], ExitCode.USAGE, "larger than 16384 px"),
    (["--resolution", "12000x12000@0.25"], ExitCode.USAGE, "GiB of memory"),
    (["--seed", "-1"], ExitCode.USAGE, "must be in 0 .. 2**32 - 1"),
    (["--seed", str(2**32)], ExitCode.USAGE, "must be in 0 .. 2**32 - 1"),
    (["--frames", "0"], ExitCode.USAGE, "must be at least 1"),
    (["--resolution", "640x360@0.35"], ExitCode.USAGE, "float32 runtimes (224x126) and PyTorch (224x125) round "
                                                       "differently; choose one of [0.375, 0.3]"),
    (["--downsample-ratio", "dynamic", "--resolution", "1280x720@0.45"], ExitCode.USAGE,
     "receives the ratio as the float32 0.44999998807907104, for which PyTorch computes a 575x323 low-res frame "
     "(576x324 at 0.45)"),
], ids=["huge", "memory", "seed-negative", "seed-too-big", "frames-0", "ratio-floors-differ", "dynamic-float32-ratio"])
def test_values_refused_before_any_work(args, code, text, tmp_path, capsys, monkeypatch):
    if "12000x12000@0.25" in args:  # make the estimate exceed what is "available" on any machine
        import rvm_export.preflight as preflight

        monkeypatch.setattr(preflight, "_available", lambda: 4 << 30)
    out = tmp_path / "out"
    assert main(["--target", "onnx", "--out", str(out), "--quiet", *args]) == code
    err = capsys.readouterr().err
    assert text in err
    assert not out.exists()


# -- 2. output paths ----------------------------------------------------------------------------------------------
def test_out_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "passwd"
    blocker.write_text("not a folder")
    assert main(["--target", "onnx", "--out", str(blocker / "x"), "--quiet"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "is a file, not a folder")
    assert blocker.read_text() == "not a folder"


def test_out_on_a_read_only_file_system(tmp_path, capsys, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", read_only)  # what a read-only mount answers to a write
    assert main(["--target", "onnx", "--out", str(tmp_path / "ro"), "--quiet"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "Read-only file system")


# -- 3. options and devices ---------------------------------------------------------------------------------------
def test_device_without_its_runtime_exits_3_before_any_work(tmp_path, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    out = tmp_path / "out"
    assert main(["--target", "onnx", "--device", "cuda", "--out", str(out), "--quiet"]) == ExitCode.MISSING_RUNTIME
    _one_error(capsys.readouterr().err, "pip install onnxruntime-gpu")
    assert not out.exists()


def test_opset_for_targets_without_onnx(tmp_path, capsys):
    assert main(["--target", "coreml", "--opset", "17", "--out", str(tmp_path / "o"), "--quiet"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "--opset applies to targets that convert through ONNX")


# -- 4. broken checkpoints ----------------------------------------------------------------------------------------
def test_checkpoint_with_a_nan_weight(golden_pth, tmp_path, capsys):
    state = torch.load(golden_pth, weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save(state, bad)
    out = tmp_path / "out"
    assert main(["--target", "onnx", "--checkpoint", str(bad), "--out", str(out), "--quiet"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, f"non-finite weights (NaN or inf) in 1 tensor(s): {name} (1 of")
    assert not out.exists()


# -- 5. the output folder -----------------------------------------------------------------------------------------
def test_a_new_export_replaces_the_previous_one_and_keeps_foreign_files(golden_pth, tmp_path):
    out = tmp_path / "out"
    assert main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(out), *FAST]) == 0
    (out / "notes.txt").write_text("mine")
    (out / "onnx" / "mine.onnx").write_bytes(b"user file")
    old = set(json.loads((out / "manifest.json").read_text())["artifacts"][0]["path"] for _ in [0])
    assert main(["--target", "onnx", "--precision", "fp16", "--checkpoint", str(golden_pth), "--out", str(out),
                 *FAST]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {a["path"] for a in manifest["artifacts"]}
    assert listed == {"onnx/rvm_mobilenetv3_dynamic_fp16.onnx"}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.onnx")}
    assert on_disk == listed | {"onnx/mine.onnx"}, "the fp32 model left outside the manifest"
    assert not any((out / p).exists() for p in old)
    assert (out / "notes.txt").read_text() == "mine" and (out / "onnx" / "mine.onnx").read_bytes() == b"user file"
    assert not [p for p in out.rglob("*") if ".rvm-export-stage" in str(p) or ".partial" in p.name]


def test_a_failed_reexport_leaves_no_model_of_the_previous_checkpoint(fp32_folder, tmp_path, monkeypatch):
    import shutil

    import importlib

    from rvm_export.core.errors import ExportFailedError

    onnx_export = importlib.import_module("targets.onnx.export")  # the package's export() shadows the attribute

    out = tmp_path / "out"
    shutil.copytree(fp32_folder, out)
    previous = json.loads((out / "manifest.json").read_text())["artifacts"][0]["path"]

    def broken(*args, **kwargs):
        raise ExportFailedError("torch.onnx.export failed for dynamic: simulated")

    monkeypatch.setattr(onnx_export, "export_graph", broken)
    assert main(["--target", "onnx", "--out", str(out), *FAST]) == ExitCode.EXPORT_FAILED
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"] == [] and manifest["failures"][0]["target"] == "onnx"
    assert not (out / previous).exists(), "the previous checkpoint's model is still under the requested name"


@pytest.mark.parametrize("name,content", [("manifest.json", '{"mine": true}'), ("report.md", "# my notes\n")])
def test_files_rvm_export_did_not_write_are_never_replaced(name, content, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text(content)
    assert main(["--target", "onnx", "--out", str(out), *FAST]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "was not written by rvm-export")
    assert _files(out) == {name: content.encode()}


def test_leftovers_of_killed_runs_are_cleaned(fp32_folder, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(fp32_folder, out)
    dead = out / ".rvm-export-stage-999999999-abc"  # no such pid
    (dead / "onnx").mkdir(parents=True)
    (dead / "onnx" / "half.onnx").write_bytes(b"half")
    old_style = out / "onnx" / ".stage.xyz"
    old_style.mkdir()
    assert main(["--target", "onnx", "--out", str(out), *FAST]) == 0
    assert not dead.exists() and not old_style.exists()


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A shell's background job ignores SIGINT, the child would
    inherit that and Python would then install no KeyboardInterrupt handler (the test would see exit 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_leaves_the_folder_as_it_was(fp32_folder, tmp_path, sig, code):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(fp32_folder, out)
    before = _files(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rvm_export.cli", "--target", "onnx", "--out", str(out),
                             "--resolution", "256x144@0.5", "--frames", "200", "--skip-bench", "--quiet"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 300
    while not list(out.glob(".rvm-export-stage-*/onnx/*.onnx")):  # wait until it is past export, into parity
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert ("terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted") in err
    assert _files(out) == before
    assert not list(out.glob(".rvm-export-stage-*"))


# -- 6. verify and bench on any file ------------------------------------------------------------------------------
def test_verify_a_manifest_entry_without_layout(fp32_folder, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(fp32_folder, out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["artifacts"][0]["layout"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(out), "--quiet"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "malformed I/O contract (KeyError: 'layout')")


def test_bench_random_bytes(tmp_path, capsys):
    junk = tmp_path / "random.onnx"
    junk.write_bytes(os.urandom(4096))
    assert main(["bench", str(junk), "--quiet"]) == ExitCode.USAGE
    _one_error(capsys.readouterr().err, "is not a readable ONNX model")


def test_verify_with_another_checkpoint_names_it(fp32_folder, tmp_path, capsys):
    other = tmp_path / "other.pth"
    from rvm_export.default_model import seeded_default_model

    torch.save(seeded_default_model(seed=3).state_dict(), other)
    assert main(["verify", str(fp32_folder), "--checkpoint", str(other), "--quiet"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    _one_error(err, f"{other} holds other weights than the folder was exported from")
    assert "pass --checkpoint\n" not in err


def test_verify_accepts_the_same_weights_as_safetensors(fp32_folder, golden_pth, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(golden_pth, weights_only=True)
    converted = tmp_path / "golden.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(converted))
    assert main(["verify", str(fp32_folder), "--checkpoint", str(converted), "--frames", "2", "--quiet"]) == 0


# -- 7. streams check each frame ----------------------------------------------------------------------------------
def test_a_stream_names_the_expected_frame_size(fp32_folder):
    import numpy as np

    from rvm_export.core.bucket import Bucket
    from rvm_export.core.errors import InputError
    from rvm_export.core.request import RuntimeOptions
    from rvm_export.folder import artifacts_from_manifest, read_manifest
    from targets import onnx

    (artifact,) = artifacts_from_manifest(fp32_folder, read_manifest(fp32_folder))
    stream = onnx.load(artifact, RuntimeOptions(threads=1)).stream(Bucket(640, 360, 0.25))
    with pytest.raises(InputError, match=r"frame has shape \[1, 3, 288, 512\] but this stream was opened for "
                                         r"640x360@0.25 .*open a new stream"):
        stream.step(np.zeros((1, 3, 288, 512), np.float32))
