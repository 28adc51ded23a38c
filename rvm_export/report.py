"""What a run leaves beside the artifacts: ``manifest.json`` (for apps and CI), ``report.md`` (for people) and a
parity plot per artifact (error per frame over the rollout)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rvm_export.core import __version__
from rvm_export.core.atomic import atomic_path, write_json_atomic, write_text_atomic
from rvm_export.core.metadata import sha256_path
from rvm_export.core.request import Artifact
from rvm_export.core.runner import Runner
from rvm_export.core.spec import STATE_RULE

from .bench import BenchResult, machine_info
from .parity import ParityReport

__all__ = ["ArtifactRecord", "Failure", "write_outputs", "STATUS_OK", "STATUS_PARITY_FAILED", "STATUS_FAILED"]

STATUS_OK = "exported"
STATUS_PARITY_FAILED = "exported, parity failed"
STATUS_FAILED = "failed"


@dataclass
class ArtifactRecord:
    """One artifact through a run: its runner (not serialised), parity reports, benchmark results and errors."""

    artifact: Artifact
    runner: Runner | None = field(default=None, repr=False, compare=False)  # None: not loaded (see errors)
    parity: list[ParityReport] = field(default_factory=list)
    bench: list[BenchResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # runtime errors while loading or checking parity
    bench_errors: list[str] = field(default_factory=list)  # a failed benchmark does not fail the artifact

    @property
    def status(self) -> str:
        if self.errors:
            return STATUS_PARITY_FAILED
        return STATUS_OK if all(p.passed for p in self.parity) else STATUS_PARITY_FAILED

    def to_dict(self, root: Path) -> dict[str, Any]:
        a = self.artifact
        spec = a.spec.to_dict()
        record = {
            "target": a.target,
            "path": str(Path(a.path).relative_to(root)),
            "status": self.status,
            "precision": str(a.precision),
            "flavour": a.flavour,
            "resolution": spec["resolution"],
            "downsample_ratio": spec["downsample_ratio"],
            "buckets": [b.label for b in a.buckets],
            "layout": spec["layout"],
            "inputs": spec["inputs"],
            "outputs": spec["outputs"],
            "sha256": sha256_path(a.path),
            "size_bytes": sum(p.stat().st_size for p in Path(a.path).rglob("*")) if Path(a.path).is_dir()
            else Path(a.path).stat().st_size,
            "details": a.details,
            "companions": [str(Path(c).relative_to(root)) for c in a.companions],
            "parity": [p.to_dict() for p in self.parity],
            "benchmark": [b.to_dict() for b in self.bench],
            "errors": self.errors,
            "benchmark_errors": self.bench_errors,
        }
        # Target-specific contract details (per-function contracts, in-model states, I/O notes) travel as given.
        record.update({k: v for k, v in spec.items() if k not in record and k not in ("variant", "refiner")})
        return record


@dataclass
class Failure:
    """A (target, precision) whose converter failed: no file was left."""
    target: str
    precision: str
    reason: str


def _backend_tag(artifact: Artifact) -> str:
    """``.wasm2`` / ``.webgpu`` for one file listed once per backend (the web target), else ``""``: keeps their
    plots apart."""
    backend = artifact.details.get("backend")
    return f".{backend}{artifact.details.get('threads', '')}" if backend else ""


def _plot_parity(record: ArtifactRecord, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    reports = [p for p in record.parity if p.errors]
    if not reports:
        return False
    fig, axes = plt.subplots(1, len(reports), figsize=(5.5 * len(reports), 3.6), squeeze=False)
    for ax, report in zip(axes[0], reports):
        for name, entry in report.errors.items():
            ax.semilogy(range(len(entry.max_abs)), [max(v, 1e-9) for v in entry.max_abs], label=name,
                        lw=1.4 if name in ("fgr", "pha") else 0.9, ls="-" if name in ("fgr", "pha") else "--")
        bound = report.tolerance.frame_max
        if bound is not None:
            ax.axhline(bound, color="red", lw=0.8, label=f"tolerance {bound:g}")
        ax.set_title(f"{report.bucket.label} ({'pass' if report.passed else 'FAIL'})", fontsize=9)
        ax.set_xlabel("frame")
        ax.set_ylabel("max abs error vs PyTorch")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{record.artifact.name}: {reports[0].label}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True


def _markdown(manifest: dict[str, Any], plots: dict[str, str]) -> str:
    model = manifest["model"]
    lines = ["# rvm-export report", "",
             f"- rvm-export {manifest['rvm_export_version']}, {manifest['created']}",
             f"- model: {model['variant']} + {model['refiner']}, weights: {model['weights']}",
             f"- machine: {manifest['machine'].get('cpu', manifest['machine'].get('processor'))}, "
             f"{manifest['machine'].get('cpu_count')} CPUs; threads {manifest['settings'].get('threads')}",
             f"- rollout: {manifest['settings']['frames']} frames of a generated moving scene, each side feeding "
             f"back its own states", ""]
    if model.get("untrained"):
        lines += ["> **Untrained seeded default model.** The numbers check the exporter, not matting quality.", ""]
    lines += ["| artifact | target | precision | status | bucket | max abs err | pha MAD | checked with |",
              "|---|---|---|---|---|---|---|---|"]
    for art in manifest["artifacts"]:
        if not art["parity"]:
            lines.append(f"| {art['path']} | {art['target']} | {art['precision']} | {art['status']} | - | - | - "
                         f"| {'; '.join(art['errors']) or '-'} |")
        for p in art["parity"]:
            lines.append(f"| {art['path']} | {art['target']} | {art['precision']} | "
                         f"{'exported' if p['passed'] else '**exported, parity failed**'} | {p['bucket']} | "
                         f"{p['max_abs']:.2e} | {p['pha_mad']:.2e} | {p['checked_with']} |")
    for failure in manifest["failures"]:
        lines.append(f"| - | {failure['target']} | {failure['precision']} | **failed** | - | - | - | "
                     f"{failure['reason']} |")
    failing = [(a["path"], f) for a in manifest["artifacts"] for p in a["parity"] for f in p["failures"]]
    if failing:
        lines += ["", "## Parity failures", ""] + [f"- `{path}`: {text}" for path, text in failing]
    benches = [(a["path"], b) for a in manifest["artifacts"] for b in a["benchmark"]]
    if benches:
        lines += ["", "## Throughput", "",
                  "| artifact | bucket | median ms | p90 ms | FPS | first frame ms | load s | runtime |",
                  "|---|---|---|---|---|---|---|---|"]
        for path, b in benches:
            lines.append(f"| {path} | {b['bucket']} | {b['median_ms']:.1f} | {b['p90_ms']:.1f} | {b['fps']:.1f} | "
                         f"{b['first_frame_ms']:.0f} | {b['load_s']:.2f} | {b['runtime']} |")
    untimed = [(a["path"], e) for a in manifest["artifacts"] for e in a["benchmark_errors"]]
    if untimed:
        lines += ["", "Not timed:", ""] + [f"- `{path}`: {text}" for path, text in untimed]
    lines += _not_int8_section(manifest["artifacts"])
    if plots:
        lines += ["", "## Error over the rollout", ""]
        lines += [f"![{name}]({png})" for name, png in plots.items()]
    lines += ["", "## Driving the model", "", STATE_RULE, ""]
    own_rules = [(a["path"], a["state_rule"]) for a in manifest["artifacts"]
                 if a.get("state_rule") not in (None, STATE_RULE)]
    lines += [f"- `{path}`: {rule}" for path, rule in own_rules] + ([""] if own_rules else [])
    return "\n".join(lines)


def _not_int8_section(artifacts: list[dict[str, Any]]) -> list[str]:
    """Per int8 artifact, the layers its quantiser left in another precision (``details.not_int8``: a list of
    ``{layer, kept_as, reason}``), grouped by (kept_as, reason) so a recipe's exceptions read as a few lines."""
    lines: list[str] = []
    for art in artifacts:
        entries = art["details"].get("not_int8")
        if art["precision"] != "int8" or entries is None:
            continue
        if not lines:
            lines += ["", "## Layers not in int8", ""]
        recipe = art["details"].get("recipe", "")
        lines.append(f"- `{art['path']}`{f' ({recipe})' if recipe else ''}: "
                     f"{len(entries)} layer(s) not int8{'' if entries else ' (every quantisable layer is int8)'}")
        groups: dict[tuple[str, str], list[str]] = {}
        for entry in entries:
            groups.setdefault((entry["kept_as"], entry["reason"]), []).append(entry["layer"])
        for (kept_as, reason), layers in groups.items():
            shown = ", ".join(f"`{name}`" for name in layers[:6]) + (f" and {len(layers) - 6} more"
                                                                     if len(layers) > 6 else "")
            lines.append(f"  - {kept_as}: {shown} ({reason})")
    return lines


def write_outputs(out_dir: Path, records: list[ArtifactRecord], failures: list[Failure], model_info: dict[str, Any],
                  settings: dict[str, Any]) -> dict[str, Any]:
    """Write the parity plots, ``manifest.json`` and ``report.md`` (each atomically); return the manifest.

    The manifest's ``files`` lists every file the run left in ``out_dir`` (artifacts, plots, companions, golden
    frames, the report), so the next run into the folder removes exactly those (rvm_export/outdir.py)."""
    plots: dict[str, str] = {}
    for record in records:
        png = Path(record.artifact.path).parent / f"{record.artifact.name}{_backend_tag(record.artifact)}.parity.png"
        if _plot_parity(record, png):
            plots[record.artifact.name + _backend_tag(record.artifact)] = str(png.relative_to(out_dir))
    manifest = {
        "rvm_export_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": model_info,
        "settings": settings,
        "state_rule": STATE_RULE,
        "artifacts": [r.to_dict(out_dir) for r in records],
        "failures": [vars(f) for f in failures],
        "files": sorted({str(p.relative_to(out_dir)) for p in Path(out_dir).rglob("*") if p.is_file()
                         and p.name != "manifest.json"} | {"report.md"}),
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    write_text_atomic(out_dir / "report.md", _markdown(manifest, plots))
    return manifest
