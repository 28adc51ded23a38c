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
from rvm_export.core.placement import Placement
from rvm_export.core.request import Artifact
from rvm_export.core.runner import Runner
from rvm_export.core.spec import STATE_RULE

from .bench import BenchResult, machine_info
from .parity import ParityReport
from .tolerances import tolerance_for

__all__ = ["ArtifactRecord", "Failure", "write_outputs", "plot_temporal", "STATUS_OK", "STATUS_PARITY_FAILED",
           "STATUS_FAILED", "STATUS_UNCHECKED"]

STATUS_OK = "exported"
STATUS_PARITY_FAILED = "exported, parity failed"
STATUS_FAILED = "failed"
STATUS_UNCHECKED = "exported, not checked here"  # this machine cannot run it (e.g. OpenVINO bf16 without AMX)


@dataclass
class ArtifactRecord:
    """One artifact through a run: its runner (not serialised), parity reports, benchmark results and errors."""

    artifact: Artifact
    runner: Runner | None = field(default=None, repr=False, compare=False)  # None: not loaded (see errors)
    parity: list[ParityReport] = field(default_factory=list)
    bench: list[BenchResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # runtime errors while loading or checking parity
    unchecked: str | None = None  # why this machine cannot run the artifact (a missing runtime or capability)
    bench_errors: list[str] = field(default_factory=list)  # a failed benchmark does not fail the artifact
    placements: list[Placement] = field(default_factory=list)  # where it runs (the target's accelerator checks)
    temporal: list = field(default_factory=list)  # rvm_export.temporal.TemporalReport, when asked for (--temporal)

    @property
    def status(self) -> str:
        if self.errors:
            return STATUS_PARITY_FAILED
        if self.unchecked:
            return STATUS_UNCHECKED
        passed = all(p.passed for p in self.parity) and all(t.passed for t in self.temporal)
        return STATUS_OK if passed else STATUS_PARITY_FAILED

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
            "errors": self.errors + ([f"not checked here: {self.unchecked}"] if self.unchecked else []),
            "benchmark_errors": self.bench_errors,
            "where_it_runs": [p.to_dict() for p in self.placements],
        }
        if self.temporal:
            record["temporal"] = [t.to_dict() for t in self.temporal]
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


def _pyplot():
    """matplotlib's pyplot on the Agg backend (files only), or None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save_png(plt, fig, path: Path, dpi: int) -> bool:
    """Lay out ``fig``, write it to ``path`` as PNG atomically, close it; True (the plot functions' result)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return True


def _plot_parity(record: ArtifactRecord, path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
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
    return _save_png(plt, fig, path, dpi=110)


def plot_temporal(record: ArtifactRecord, path: Path) -> bool:
    """One PNG of ``record.temporal``: per source, the per-frame alpha MAD against PyTorch (log scale) with its trend
    line, settled level, parity bound, events and PyTorch's own settling after each event; below, the alpha flicker
    in static regions, artifact and PyTorch. False when matplotlib is absent or there is nothing to plot."""
    import numpy as np

    plt = _pyplot()
    if plt is None:
        return False
    reports = [t for t in record.temporal if t.pha_mad]
    if not reports:
        return False
    fig, axes = plt.subplots(2, len(reports), figsize=(5.2 * len(reports), 6.0), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for column, t in enumerate(reports):
        ax, bx = axes[0][column], axes[1][column]
        mad = np.maximum(np.asarray(t.pha_mad, np.float64), 1e-9)
        ax.semilogy(mad, lw=0.8, color="C0", label="pha MAD vs PyTorch")
        drift = t.drift
        n = t.drift_frames
        if n >= 4:
            fit = np.polyfit(np.arange(n), np.asarray(t.pha_mad[:n], np.float64), 1)
            ax.semilogy(np.arange(n), np.maximum(np.polyval(fit, np.arange(n)), 1e-9), color="k", lw=1.0,
                        label=f"trend {drift['slope_per_1000']:+.1e}/1000 fr")
        ax.axhline(t.level, color="orange", lw=0.8, ls=":", label=f"settled level {t.level:.1e}")
        a = record.artifact
        bound = tolerance_for(a.target, str(a.precision), a.spec.refiner).pha_mad
        if bound is not None:
            ax.axhline(bound, color="red", lw=0.8, label=f"parity pha MAD bound {bound:g}")
        for key, curve in t.settle_curves.items():
            kind, frame = key.split("@")
            start = int(frame)
            ax.axvline(start, color="grey", lw=0.8, ls="--")
            ax.semilogy(range(start, start + len(curve)), np.maximum(curve, 1e-9), color="C2", lw=0.8, ls="--",
                        label="PyTorch settling" if key == next(iter(t.settle_curves)) else None)
        ax.set_title(f"{t.source} ({'pass' if t.passed else 'FAIL'})", fontsize=8)
        ax.set_xlabel("frame")
        ax.set_ylabel("alpha MAD vs PyTorch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
        flick = np.asarray(t.flicker, np.float64)
        ref = np.asarray(t.flicker_reference, np.float64)
        bx.plot(ref, lw=0.8, color="C2", label=f"PyTorch {t.mean_flicker_reference:.2e}")
        bx.plot(flick, lw=0.8, color="C0", alpha=0.8, label=f"artifact {t.mean_flicker:.2e}")
        bx.set_xlabel("frame")
        bx.set_ylabel("static-region |pha_t - pha_t-1|")
        bx.grid(True, alpha=0.3)
        bx.legend(fontsize=6)
    fig.suptitle(f"{record.artifact.name} ({record.artifact.precision}): {reports[0].label}, temporal figures",
                 fontsize=9)
    return _save_png(plt, fig, path, dpi=100)


def _temporal_markdown(manifest: dict[str, Any], plots: dict[str, str]) -> list[str]:
    """The Temporal section (rvm_export/temporal.py): one table row per artifact and source, then the plots."""
    from .temporal import recovery_text

    rows = [(a, t) for a in manifest["artifacts"] for t in a.get("temporal", [])]
    if not rows:
        return []
    rules = rows[0][1]["rules"]
    lines = ["", "## Temporal", "",
             "Against PyTorch fp32, each side feeding back its own states (no ground truth). pha MAD and slope over "
             "the drift segment (the generated scene before its cut; a clip whole); slope: least-squares, alpha MAD "
             f"per 1000 frames; grows: slope > 0 and last-quarter mean > {rules['growth_ratio']} x first. Flicker: "
             "mean |pha_t - pha_t-1| over pixels whose input moved <= "
             f"{rules['static_threshold'] * 255:.0f}/255 in every channel. Recovery: frames after a cut or a reset "
             f"until the alpha MAD is at or below the settled level ({rules['settle_factor']:g} x the drift median, "
             f"at least the precision's floor) for {rules['hold']} frames; in brackets PyTorch's own settling "
             f"(a copy reset at the cut, or not reset at the reset, until within {rules['pytorch_settle']:g}). "
             "Bounds: rvm_export/tolerances.py (TEMPORAL).", "",
             "| artifact | source | pha MAD | max abs | slope /1000 fr | last/first quarter | flicker (PyTorch) | "
             "recovery cut (PyTorch) | recovery reset (PyTorch) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def num(value) -> str:
        return "-" if value is None else f"{value:.2e}"

    for art, t in rows:
        d = t["drift"]
        lines.append(f"| {art['path']} | {t['source']} | {num(t['pha_mad'])} | {num(t['pha_max'])} | "
                     f"{d['slope_per_1000']:+.1e}{' (grows)' if d['grows'] else ''} | {d['last_over_first']:.2f} | "
                     f"{num(t['flicker'])} ({num(t['flicker_pytorch'])}) | {recovery_text(t['events'], 'cut')} | "
                     f"{recovery_text(t['events'], 'reset')} | {'pass' if t['passed'] else '**FAIL**'} |")
    failing = [(art["path"], f) for art, t in rows for f in t["failures"]]
    if failing:
        lines += [""] + [f"- `{path}`: {text}" for path, text in failing]
    if plots:
        lines += [""] + [f"![{name} temporal]({png})" for name, png in plots.items()]
    return lines


def _markdown(manifest: dict[str, Any], plots: dict[str, str], temporal_plots: dict[str, str] | None = None) -> str:
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
    lines += _where_it_runs(manifest["artifacts"])
    lines += _not_int8_section(manifest["artifacts"])
    if plots:
        lines += ["", "## Error over the rollout", ""]
        lines += [f"![{name}]({png})" for name, png in plots.items()]
    lines += _temporal_markdown(manifest, temporal_plots or {})
    lines += ["", "## Driving the model", "", STATE_RULE, ""]
    own_rules = [(a["path"], a["state_rule"]) for a in manifest["artifacts"]
                 if a.get("state_rule") not in (None, STATE_RULE)]
    lines += [f"- `{path}`: {rule}" for path, rule in own_rules] + ([""] if own_rules else [])
    return "\n".join(lines)


def _taken(entry: dict[str, Any]) -> str:
    if entry.get("skipped"):
        return "not checked here"
    if entry.get("nodes") is None:
        return "-"
    taken = f"{entry.get('placed', '?')}/{entry['nodes']}"
    if entry.get("placed") is not None and entry["nodes"]:
        taken += f" ({entry['placed'] / entry['nodes']:.0%})"
    if entry.get("partitions") is not None:
        taken += f", {entry['partitions']} partition{'s' if entry['partitions'] != 1 else ''}"
    return taken


def _where_it_runs(artifacts: list[dict[str, Any]]) -> list[str]:
    """The "Where it runs" section: one row per accelerator check of each artifact, with the parity run there."""
    rows = [(a, e) for a in artifacts for e in a.get("where_it_runs", [])]
    if not rows:
        return []
    lines = ["", "## Where it runs", "",
             "What each target's accelerator checks found on this machine (a software device or a static check is "
             "named as such; none of this is a phone, a real GPU or the Apple runtime).", "",
             "| artifact | check | answered by | whole model | taken | refused / findings | parity there |",
             "|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    for art, e in rows:
        whole = {True: "yes", False: "**no**", None: "-"}[e.get("fully")]
        if e.get("skipped"):
            whole = f"skipped: {e['skipped']}"
        findings = list(e.get("refused", [])) + [f"{k}: {v}" for k, v in e.get("facts", {}).items()
                                                 if k != "provider" and v is not None]
        runs = [p for p in art["parity"] if p.get("accelerator") == e["check"]]
        parity = "; ".join(f"{p['bucket']}: max abs {p['max_abs']:.2e}, pha MAD {p['pha_mad']:.2e} "
                           f"(bound {p['tolerance'].get('frame_max')}) {'pass' if p['passed'] else '**FAIL**'}"
                           for p in runs) or "-"
        lines.append(f"| {art['path']} | {e['check']} | {e['device']} | {whole} | {_taken(e)} | "
                     f"{'; '.join(findings) or '-'} | {parity} |")
        if e.get("note") and f"- {e['check']}: {e['note']}" not in notes:
            notes.append(f"- {e['check']}: {e['note']}")
    return lines + ([""] + notes if notes else [])


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
    """Write the parity plots (temporal plots where measured), ``manifest.json`` and ``report.md`` (each atomically);
    return the manifest.

    The manifest's ``files`` lists every file the run left in ``out_dir`` (artifacts, plots, companions, golden
    frames, the report), so the next run into the folder removes exactly those (rvm_export/outdir.py)."""
    plots: dict[str, str] = {}
    for record in records:
        png = Path(record.artifact.path).parent / f"{record.artifact.name}{_backend_tag(record.artifact)}.parity.png"
        if _plot_parity(record, png):
            plots[record.artifact.name + _backend_tag(record.artifact)] = str(png.relative_to(out_dir))
    temporal_plots: dict[str, str] = {}
    for record in records:
        png = Path(record.artifact.path).parent / f"{record.artifact.name}{_backend_tag(record.artifact)}.temporal.png"
        if plot_temporal(record, png):
            temporal_plots[record.artifact.name + _backend_tag(record.artifact)] = str(png.relative_to(out_dir))
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
    write_text_atomic(out_dir / "report.md", _markdown(manifest, plots, temporal_plots))
    return manifest
