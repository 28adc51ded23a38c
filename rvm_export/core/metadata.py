"""Metadata every artifact carries (ONNX metadata_props, CoreML user metadata, OpenVINO rt_info, TFLite sidecar)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from . import __version__
from .spec import IOSpec

__all__ = ["artifact_metadata", "sha256_file", "sha256_path", "spec_from_metadata", "weights_sha256",
           "CONTRACT_KEY", "LICENSE_NOTE"]

CONTRACT_KEY = "rvm_export.io_contract"  # the metadata key holding the I/O contract as JSON

LICENSE_NOTE = ("Model weights: see the checkpoint's licence (the released RVM weights are GPL-3.0). "
                "Exporter: rvm-export, Apache-2.0.")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(state_dict: Mapping[str, Any]) -> str:
    """sha256 of a model's weights themselves (name, dtype, shape and bytes of every tensor, in name order), so the
    same weights saved as .pth or .safetensors, or re-saved, have the same digest."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a directory package (each file's relative path and bytes, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode())
        digest.update(sha256_file(item).encode())
    return digest.hexdigest()


def artifact_metadata(spec: IOSpec, precision: str, checkpoint_sha256: str | None, checkpoint_label: str,
                      **extra: Any) -> dict[str, str]:
    """String key/values: producer, version, checkpoint, precision and the whole I/O contract as JSON."""
    meta = {
        "producer": "rvm-export",
        "rvm_export.version": __version__,
        "rvm_export.variant": spec.variant,
        "rvm_export.refiner": spec.refiner,
        "rvm_export.precision": str(precision),
        "rvm_export.checkpoint": checkpoint_label,
        "rvm_export.checkpoint_sha256": checkpoint_sha256 or "none (seeded default weights)",
        CONTRACT_KEY: json.dumps(spec.to_dict(), separators=(",", ":")),
        "rvm_export.license": LICENSE_NOTE,
    }
    meta.update({f"rvm_export.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return meta


def spec_from_metadata(meta: Mapping[str, str]) -> IOSpec | None:
    """The :class:`IOSpec` embedded by :func:`artifact_metadata`, or None when ``meta`` has no contract (a file made
    elsewhere). Raises InputError for a contract that is not valid JSON or misses a field."""
    from .errors import InputError

    text = meta.get(CONTRACT_KEY)
    if text is None:
        return None
    try:
        contract = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"the embedded rvm-export contract is not valid JSON: {exc}") from None
    return IOSpec.from_dict(contract)
