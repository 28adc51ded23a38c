"""Several buckets in one .mlpackage: one function per bucket, weights shared (Core ML multifunction, iOS 18).

Each bucket is converted on its own (a fixed-shape program), then ``coremltools.utils.save_multifunction`` joins
them and de-duplicates identical constants, so the weights are stored once. An app loads one function by name
(``MLModelConfiguration.functionName``; ``ct.models.MLModel(path, function_name=...)``). Function names say the
bucket: ``w1280_h720_r0p375``. The first bucket is the default function.
``save_multifunction`` writes a bare description, so the model-level metadata is written again afterwards.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from rvm_export.core.atomic import atomic_path
from rvm_export.core.errors import ExportFailedError, InputError
from rvm_export.core.bucket import Bucket

__all__ = ["function_name", "combine", "package_model_file", "write_model_metadata"]


def function_name(bucket: Bucket) -> str:
    """``w1280_h720_r0p375``: a valid identifier that names the bucket."""
    return f"w{bucket.width}_h{bucket.height}_r{bucket.ratio:g}".replace(".", "p")


def package_model_file(package: Path) -> Path:
    """The model specification file inside an .mlpackage (found through its Manifest.json)."""
    manifest = Path(package) / "Manifest.json"
    try:
        info = json.loads(manifest.read_text())
        entry = info["itemInfoEntries"][info["rootModelIdentifier"]]
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{package} is not a readable .mlpackage (Manifest.json: {exc})") from exc
    return Path(package) / "Data" / entry["path"]


def write_model_metadata(package: Path, author: str, version: str, license_text: str, short_description: str,
                         user_defined: Mapping[str, str]) -> None:
    """Rewrite the model-level metadata of a saved package in place (its weights are untouched)."""
    from coremltools.proto import Model_pb2

    path = package_model_file(package)
    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    meta = spec.description.metadata
    meta.author, meta.versionString, meta.license, meta.shortDescription = (author, version, license_text,
                                                                            short_description)
    for key, value in user_defined.items():
        meta.userDefined[key] = value
    path.write_bytes(spec.SerializeToString())


def combine(parts: list[tuple[Bucket, Path]], destination: Path, metadata: Mapping[str, Any]) -> dict[str, str]:
    """Join single-function packages (one per bucket) into ``destination``; returns ``{function: bucket label}``."""
    import coremltools as ct

    names = [function_name(b) for b, _ in parts]
    if len(set(names)) != len(names):
        raise ExportFailedError(f"two buckets map to the same function name: {names}")
    descriptor = ct.utils.MultiFunctionDescriptor()
    for (bucket, path), name in zip(parts, names):
        descriptor.add_function(str(path), src_function_name="main", target_function_name=name)
    descriptor.default_function_name = names[0]
    functions = {name: bucket.label for (bucket, _), name in zip(parts, names)}
    user = dict(metadata["user_defined"])
    user["rvm_export.functions"] = json.dumps(functions)
    user["rvm_export.default_function"] = names[0]
    with atomic_path(destination) as tmp:
        try:
            ct.utils.save_multifunction(descriptor, str(tmp))
        except Exception as exc:
            raise ExportFailedError(f"coremltools.utils.save_multifunction failed: {exc}") from exc
        write_model_metadata(tmp, metadata["author"], metadata["version"], metadata["license"],
                             metadata["short_description"], user)
    return functions
