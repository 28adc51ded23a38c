"""Export for the cuda target: BatchNorm folded, weights in the target precision, one ``torch.export`` program of the
static contract per bucket, metadata inside the ``.pt2``."""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict
from pathlib import Path

from rvm_export.core.atomic import atomic_path
from rvm_export.core.errors import ExportFailedError
from rvm_export.core.metadata import artifact_metadata
from rvm_export.core.names import artifact_name, shape_label
from rvm_export.core.request import Artifact, ExportRequest
from rvm_export.core.spec import IOSpec, Precision

from .modes import parse_mode
from .runtime import DTYPES

__all__ = ["export", "fold_batchnorm", "prepare_model", "read_metadata", "METADATA_FILE"]

NAME = "cuda"
METADATA_FILE = "rvm_export.json"  # extra file inside the .pt2 holding the artifact metadata


def _fold_pair(conv, bn):
    import torch

    from targets.traced.batchnorm import folded_conv_bn

    weight, bias = folded_conv_bn(conv, bn)
    conv.weight = torch.nn.Parameter(weight, requires_grad=False)
    conv.bias = torch.nn.Parameter(bias, requires_grad=False)


def fold_batchnorm(model):
    """A copy of ``model`` with every eval-mode BatchNorm2d folded into the Conv2d before it (in float64).

    Covers ``Sequential(conv, bn, ...)`` and ``convK``/``bnK`` attribute pairs (ResNet); raises if any BN is left.
    """
    from torch import nn

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (_, conv), (bn_name, bn) in zip(items, items[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    _fold_pair(conv, bn)
                    module._modules[bn_name] = nn.Identity()
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = module._modules.get("conv" + name[2:])
                if isinstance(conv, nn.Conv2d):
                    _fold_pair(conv, child)
                    module._modules[name] = nn.Identity()
    left = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ExportFailedError(f"cannot fold BatchNorm {left} into a preceding convolution")
    return model


def prepare_model(model, precision: str | Precision, fold: bool = True):
    """The network as the artifact holds it: eval, BN folded (optional), weights in the target precision."""
    precision = Precision.parse(precision).value
    model = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    return model.half() if precision == "fp16" else model.float()


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """One ``.pt2`` per bucket, traced on the CPU (a GPU is needed to run it, not to build it). Raises
    ExportFailedError when torch.export fails."""
    import torch

    from targets.traced.contract import StaticContract, example_inputs

    precision = str(request.precision)
    fold = request.options.fold_batchnorm
    mode = parse_mode(request.options)
    net = prepare_model(model, precision, fold).cpu()
    dtype = getattr(torch, DTYPES[precision])
    artifacts = []
    for bucket in request.buckets:
        spec = IOSpec(request.variant, request.refiner, bucket, io_dtype=DTYPES[precision])
        inputs = tuple(t.to(dtype) for t in example_inputs(spec, bucket))
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(StaticContract(net, spec).eval(), inputs)
        except Exception as exc:  # torch.export raises many types; keep the message, name the stage
            raise ExportFailedError(f"torch.export failed for {bucket.label} {precision}: {exc}") from exc
        compute = f"{DTYPES[precision]}" + (", BatchNorm folded" if fold else "")
        details = {"format": "torch.export ExportedProgram (.pt2)", "torch": torch.__version__,
                   "fold_batchnorm": fold, "io_dtype": DTYPES[precision], "compute": compute,
                   "runtime_options": asdict(mode), "load": "torch.export.load(path).module().to('cuda')"}
        meta = artifact_metadata(spec, precision, request.checkpoint_sha256, request.checkpoint_label,
                                 io_dtype=DTYPES[precision], compute=compute, runtime=details["load"])
        path = Path(out_dir) / artifact_name(spec.variant, spec.refiner, shape_label(bucket), precision, suffix=".pt2")
        with atomic_path(path) as tmp:
            torch.export.save(program, str(tmp), extra_files={METADATA_FILE: json.dumps(meta)})
        artifacts.append(Artifact(NAME, path, request.precision, spec, "static", (bucket,), details))
    return artifacts


def read_metadata(path: Path) -> dict[str, str]:
    """The artifact metadata stored inside a ``.pt2`` (empty for a program made elsewhere)."""
    import torch

    extra = {METADATA_FILE: ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}
