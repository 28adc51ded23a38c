"""ONNX Runtime Mobile: what its providers can take (the usability checker's counts), graphs made for them, and the
ORT format.

- :func:`usability` runs ONNX Runtime's own checker (``python -m onnxruntime.tools.check_onnx_model_mobile_usability``,
  the same functions in-process: basic optimisation, shape inference, partitioning per provider) and returns one
  :class:`~rvm_export.core.placement.Placement` per provider (NNAPI, CoreML NeuralNetwork, CoreML MLProgram): nodes,
  nodes taken, partitions, op types refused. The checker compares op types with each provider's list and requires
  fixed input shapes; the per-op caveats it prints (e.g. which Resize modes a provider takes) are not checked, and no
  provider is run here (NNAPI and CoreML exist on Android and Apple devices only).
- :func:`fill_optional_inputs`: a Resize whose optional ``roi``/``scales`` inputs are empty names counts as a node
  with a dynamic-shape input (the checker finds no shape for ""); an empty float32 initializer is the same input,
  with a shape. The other mobile rewrites happen while tracing (targets/traced/rewrites.py ``mobile_friendly``).
- :func:`write_ort`: the ORT format beside an ``.onnx``, ``convert_onnx_models_to_ort`` with the "Runtime"
  optimisation style (basic optimisations applied, the CPU-only fusions saved for the CPU provider to replay), as
  ONNX Runtime advises for NNAPI and CoreML: a "Fixed" file would have fused nodes into CPU-only kernels.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.placement import Placement

__all__ = ["PROVIDERS", "usability", "fill_optional_inputs", "write_ort", "EMPTY_INPUT"]

EMPTY_INPUT = "rvm_export_empty_f32"  # a float32 initializer of shape [0]: "not given", with a known shape
# provider -> the checker's list of supported ops (a file in onnxruntime/tools/mobile_helpers); None = NNAPI's checker
PROVIDERS = {"NNAPI": None, "CoreML NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
             "CoreML MLProgram": "coreml_supported_mlprogram_ops.md"}
CHECK = "ONNX Runtime mobile usability checker"
NOTE = ("static check of op types and fixed shapes (the providers' per-op caveats are not checked); no Android or "
        "Apple device ran it")


def fill_optional_inputs(graph) -> int:
    """Give every Resize an explicit empty ``roi``/``scales`` where the name was empty; returns how many inputs
    were filled. Same semantics (an empty tensor means "not given"), but every input now has a shape."""
    import onnx

    filled = 0
    for node in graph.graph.node:
        if node.op_type != "Resize":
            continue
        for index in (1, 2):  # roi, scales: an empty name before the last input given (scales or sizes)
            if index < len(node.input) - 1 and not node.input[index]:
                node.input[index] = EMPTY_INPUT
                filled += 1
    if filled and EMPTY_INPUT not in {i.name for i in graph.graph.initializer}:
        graph.graph.initializer.append(onnx.helper.make_tensor(EMPTY_INPUT, onnx.TensorProto.FLOAT, [0], []))
    return filled


def usability(path: Path) -> tuple[Placement, ...]:
    """One Placement per provider for the ONNX model at ``path`` (fully = one partition holding every node).
    Raises ExportFailedError when the checker cannot read the model."""
    import onnxruntime
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / Path(path).name
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                optimize_model(Path(path), optimized, use_external_initializers=True)
                model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        except Exception as exc:  # onnxruntime/onnx raise many types for a model they cannot take
            raise ExportFailedError(f"the mobile usability checker cannot read {Path(path).name}: {exc}") from exc
        results = []
        for provider, ops_file in PROVIDERS.items():
            info = (checker.check_nnapi_partitions(model, True) if ops_file is None
                    else checker.check_coreml_partitions(model, True, ops_file))
            refused = [f"{op.split(':')[-1]}: not in {provider}'s op list" for op in sorted(info.unsupported_ops)]
            if info.nodes_unsupported_due_to_dynamic_input:
                refused.append(f"{info.nodes_unsupported_due_to_dynamic_input} node(s): an input without a fixed shape")
            results.append(Placement(
                f"{CHECK} (onnxruntime {onnxruntime.__version__}): {provider}", "static op check (no device)",
                info.num_nodes == info.num_supported_nodes and info.num_partitions == 1, nodes=info.num_nodes,
                placed=info.num_supported_nodes, partitions=info.num_partitions, refused=tuple(refused),
                facts={"provider": provider}, note=NOTE))
    return tuple(results)


def write_ort(onnx_path: Path, ort_path: Path) -> None:
    """Convert ``onnx_path`` to the ORT format at ``ort_path`` (Runtime optimisation style, ARM target platform:
    no x86-only NCHWc layouts). Raises ExportFailedError when ONNX Runtime cannot convert it."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(dir=Path(ort_path).parent) as tmp:
        source = Path(tmp) / "model.onnx"
        shutil.copyfile(onnx_path, source)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(source, output_dir=Path(tmp) / "out",
                                           optimization_styles=[OptimizationStyle.Runtime], target_platform="arm")
        except Exception as exc:  # the converter raises what ONNX Runtime raised while loading the model
            raise ExportFailedError(f"convert_onnx_models_to_ort failed for {Path(onnx_path).name}: {exc}") from exc
        [converted] = (Path(tmp) / "out").glob("*.ort")
        shutil.move(str(converted), str(ort_path))
