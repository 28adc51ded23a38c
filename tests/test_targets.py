"""Every registered target, from its typed description: conformance of the surface, refusals before any work, and the
target x precision matrix (export + rollout parity against PyTorch wherever the runtime is installed).

Adding a target to the registry adds its rows here without editing this file.
"""
from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest

from rvm_export.cli import main
from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import ExitCode, MissingRuntimeError, UsageError
from rvm_export.core.options import TargetOptions
from rvm_export.core.request import ExportRequest, RuntimeOptions
from rvm_export.core.rollout import MovingScene, TorchStream
from rvm_export.core.runner import Runner
from rvm_export.core.spec import Precision
from rvm_export.core.target import TargetDescription, TargetModule
from rvm_export.parity import compare_rollout
from rvm_export.tolerances import tolerance_for
from targets import REGISTRY, all_targets, get_target

ROOT = Path(__file__).resolve().parents[1]
TINY = Bucket(64, 48, 0.5)  # exact (32x24 low-res), every state at least 2x2: the cheapest bucket every target takes
MATRIX = [(name, precision) for name in REGISTRY for precision in get_target(name).DESCRIPTION.precisions]


def _ids(cell):
    return f"{cell[0]}-{cell[1]}"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_surface(name):
    module = get_target(name)
    package = ROOT / "targets" / name
    assert (package / "__init__.py").is_file(), f"targets/{name}/ must be a package"
    assert module.__name__ == f"targets.{name}"
    assert isinstance(module, TargetModule), "DESCRIPTION, missing, check_request, export, load"
    for role in ("export", "runtime"):  # importing a role's submodule must not replace the surface function
        importlib.import_module(f"targets.{name}.{role}")
    assert inspect.isfunction(module.export) and inspect.isfunction(module.load)
    description = module.DESCRIPTION
    assert isinstance(description, TargetDescription) and description.name == name
    assert issubclass(description.options, TargetOptions)
    assert description.default_precision in description.precisions
    for role in ("export.py", "runtime.py"):
        assert (package / role).is_file(), f"targets/{name}/{role}"
    assert (ROOT / "docs" / f"{name}.md").is_file(), f"docs/{name}.md"
    assert module.__doc__ and len(module.__doc__) > 200


def test_all_means_the_descriptions_in_all():
    assert all_targets() == tuple(n for n in REGISTRY if get_target(n).DESCRIPTION.in_all)
    assert "cuda" not in all_targets() and "onnx" in all_targets()


@pytest.mark.parametrize("cell", MATRIX, ids=_ids)
def test_every_cell_has_a_tolerance_and_a_request_rule(cell):
    name, precision = cell
    module = get_target(name)
    description = module.DESCRIPTION
    assert tolerance_for(name, str(precision)).why
    options = description.options.parse(name, {})
    static = ExportRequest("mobilenetv3", "deep_guided_filter", (TINY,), False, precision, options=options)
    module.check_request(static)  # every target takes a static model at an exact bucket
    dynamic = ExportRequest("mobilenetv3", "deep_guided_filter", (TINY,), True, precision, options=options)
    if description.can_be_dynamic(precision):
        module.check_request(dynamic)
    else:
        with pytest.raises(UsageError):
            module.check_request(dynamic)


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("kind", ["option", "device", "opset"])
def test_bad_option_device_or_opset_exits_2_before_any_work(name, kind, tmp_path, capsys):
    description = get_target(name).DESCRIPTION
    args = {"option": ["--option", f"{name}.no_such_option=1"],
            "device": ["--device", "no-such-device"],
            "opset": ["--opset", "99" if description.takes_opset else "17"]}[kind]
    out = tmp_path / "out"
    code = main(["--target", name, "--resolution", "64x48@0.5", "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE, err
    assert err.count("rvm-export: error:") == 1
    assert not out.exists() or not any(out.iterdir()), "nothing may be written before the refusal"


def test_unknown_precision_is_refused_by_every_target():
    for name in REGISTRY:
        module = get_target(name)
        missing = [p for p in Precision if p not in module.DESCRIPTION.precisions]
        for precision in missing:
            request = ExportRequest("mobilenetv3", "deep_guided_filter", (TINY,), False, precision,
                                    options=module.DESCRIPTION.options.parse(name, {}))
            with pytest.raises(UsageError, match=str(precision)):
                module.check_request(request)


@pytest.mark.parametrize("cell", MATRIX, ids=_ids)
def test_matrix_export_and_parity(cell, golden_model, tmp_path):
    """Export the cell at a tiny bucket and compare a 3-frame rollout (states fed back) with PyTorch."""
    name, precision = cell
    module = get_target(name)
    if module.missing():
        pytest.skip(f"{name}: {module.missing()}")
    description = module.DESCRIPTION
    request = ExportRequest(golden_model.variant, golden_model.refiner_name, (TINY,), False, precision,
                            options=description.options.parse(name, {}), calibration_frames=4)
    artifacts = module.export(golden_model, request, tmp_path)
    assert artifacts and all(a.target == name and a.precision == precision for a in artifacts)
    for artifact in artifacts:
        assert Path(artifact.path).exists()
        json.dumps(artifact.spec.to_dict())  # the contract serialises for the manifest
        try:
            runner = module.load(artifact, RuntimeOptions(threads=2))
        except MissingRuntimeError as exc:  # e.g. OpenVINO bf16 on a CPU without AVX512-BF16/AMX
            pytest.skip(f"{name} {precision} cannot run here: {exc}")
        assert isinstance(runner, Runner) and runner.label
        report = compare_rollout(TorchStream(golden_model, TINY), runner.stream(TINY), MovingScene(64, 48, 3),
                                 target=name, artifact=artifact.name, precision=str(precision), bucket=TINY,
                                 label=runner.label, tolerance=tolerance_for(name, str(precision)))
        assert report.frames == 3
        report.raise_if_failed()
