"""``rvm-export verify``: re-check every artifact of an export folder against PyTorch (a CI parity gate)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rvm_export.core.errors import ExitCode, InputError, MissingRuntimeError, RvmExportError, UsageError
from rvm_export.core.metadata import sha256_path
from rvm_export.core.request import RuntimeOptions
from targets import get_target

from .folder import artifacts_from_manifest, read_manifest
from .parity import check_parity
from .pipeline import load_model
from .report import STATUS_UNCHECKED, ArtifactRecord

__all__ = ["VerifyResult", "verify_folder"]


@dataclass
class VerifyResult:
    """Exit code of a verify run and the record of every artifact it re-checked."""
    exit_code: int  # 0 every artifact matches, 1 at least one does not (or is missing / changed)
    records: list[ArtifactRecord]


def verify_folder(folder: Path, checkpoint: Path | None, frames: int = 30, seed: int = 0, threads: int | None = None,
                  device: str = "cpu", progress: bool = False, temporal: int = 0, temporal_clips: Sequence[Path] = (),
                  temporal_window: int = 60) -> VerifyResult:
    """Load the weights the folder was exported from, re-run each artifact's rollout and compare with PyTorch;
    with ``temporal`` > 0 also the temporal figures (rvm_export/temporal.py) over that many generated frames and
    ``temporal_clips``, judged by the TEMPORAL bounds.

    Raises InputError (exit 2) when the manifest is unreadable, ``checkpoint`` is not the folder's weights or a clip
    cannot be decoded; UsageError (exit 2) for ``temporal`` in 1..7."""
    import torch

    if temporal and temporal < 8:
        raise UsageError(f"--temporal must be 0 (off) or at least 8 frames, got {temporal}")
    if temporal_clips and not temporal:
        raise UsageError("--temporal-clip needs --temporal N (the generated rollout's length)")
    if temporal_window < 1:
        raise UsageError(f"--temporal-window must be at least 1, got {temporal_window}")
    if temporal_clips:
        from .matte.decode import probe

        for clip in temporal_clips:
            probe(clip)

    if threads:
        torch.set_num_threads(threads)
    manifest = read_manifest(folder)
    artifacts = artifacts_from_manifest(folder, manifest)
    model_info = manifest["model"]
    model, info = load_model(checkpoint, model_info.get("variant"), model_info.get("refiner"), seed)
    key = "weights_sha256" if "weights_sha256" in model_info else "checkpoint_sha256"  # older manifests: file bytes
    if model_info.get(key) != info.get(key):
        given = "no --checkpoint (the seeded default model)" if checkpoint is None else str(checkpoint)
        raise InputError(f"{given} holds other weights than the folder was exported from ({model_info.get('weights')}; "
                         f"{key} {str(model_info.get(key))[:16]}... vs {str(info.get(key))[:16]}...): pass the "
                         "checkpoint the folder was exported from")
    options = RuntimeOptions(threads=threads, device=device)
    records = []
    for artifact, entry in zip(artifacts, manifest["artifacts"]):
        record = ArtifactRecord(artifact)
        records.append(record)
        if not Path(artifact.path).exists():
            record.errors.append(f"{artifact.path} is missing")
        elif sha256_path(artifact.path) != entry.get("sha256"):
            record.errors.append(f"{artifact.path} changed since export (sha256 differs from the manifest)")
        else:
            try:
                record.runner = get_target(artifact.target).load(artifact, options)
            except MissingRuntimeError as exc:  # a valid file this machine cannot run: not a parity failure
                record.unchecked = str(exc)
            except RvmExportError as exc:
                record.errors.append(f"cannot load: {exc}")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    check_parity(model, records, frames, seed, progress, say)
    if temporal:
        from .temporal import check_temporal

        check_temporal(model, records, temporal, temporal_clips, seed, temporal_window, progress, say)
    failed = [r for r in records if r.status not in ("exported", STATUS_UNCHECKED)]
    unchecked = [r for r in records if r.status == STATUS_UNCHECKED]
    code = ExitCode.PARITY_FAILED if failed else ExitCode.MISSING_RUNTIME if unchecked else ExitCode.OK
    return VerifyResult(code, records)
