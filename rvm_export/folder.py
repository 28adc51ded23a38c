"""Export folders an earlier run left: read ``manifest.json`` and rebuild the artifact records from it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rvm_export.core.bucket import parse_bucket
from rvm_export.core.errors import InputError
from rvm_export.core.request import Artifact
from rvm_export.core.spec import IOSpec, Precision

__all__ = ["read_manifest", "artifacts_from_manifest"]


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest as a dict; InputError when it is absent or not JSON."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{folder} has no manifest.json (is it an rvm-export output folder?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list) \
            or not isinstance(manifest.get("model"), dict):
        raise InputError(f"{path} is not an rvm-export manifest (no 'model' section or 'artifacts' list)")
    return manifest


def artifacts_from_manifest(folder: Path, manifest: dict[str, Any]) -> list[Artifact]:
    """Rebuild :class:`~rvm_export.core.request.Artifact` records from a manifest.

    Raises InputError naming the entry when a field is missing or malformed."""
    model = manifest["model"]
    artifacts = []
    for index, entry in enumerate(manifest["artifacts"]):
        where = f"manifest.json artifact {index} ({entry.get('path', '?') if isinstance(entry, dict) else entry!r})"
        try:
            spec = IOSpec.from_dict(entry, variant=model["variant"], refiner=model["refiner"])
            artifacts.append(Artifact(entry["target"], Path(folder) / entry["path"],
                                      Precision.parse(entry["precision"]), spec, entry["flavour"],
                                      tuple(parse_bucket(b) for b in entry["buckets"]),
                                      dict(entry.get("details", {}))))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{where}: missing or malformed field ({type(exc).__name__}: {exc})") from None
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    return artifacts
