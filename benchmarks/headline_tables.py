"""Turn a ``benchmarks/headline.sh`` run into the README's tables and a speed-up plot.

Reads ``OUT/*/manifest.json`` (parity of every artifact, as the export measured it) and ``OUT/bench.json`` (the
side-by-side timing, one frame of each artifact in turn after an idle pause), plus ``OUT/bench_back_to_back.json``
when ``BACK_TO_BACK=1`` made it (consecutive frames per artifact), prints two markdown tables (parity; throughput
with the speed-up against the original-style stand-in timed in the same run, and the TOOLCHAIN anchors for
reference) and writes ``OUT/headline.png`` and ``OUT/headline.json``.

    python benchmarks/headline_tables.py benchmarks/results/headline [--png docs/figures/headline_speed.png]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ANCHORS_MS = {"1920x1080@0.25": 108.0, "3840x2160@0.125": 203.0}  # original export, ORT fp32, ../shared/TOOLCHAIN.md
ORIGINAL = "foreign:original_style.onnx"


def parity_rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for manifest_path in sorted(out.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        for artifact in manifest["artifacts"]:
            for check in artifact.get("parity") or []:
                rows.append({"target": artifact["target"], "artifact": Path(artifact["path"]).name,
                             "precision": artifact["precision"], "flavour": artifact["flavour"],
                             "bucket": check["bucket"], "frames": check["frames"], "max_abs": check["max_abs"],
                             "pha_mad": check["pha_mad"], "fgr_mad": check["fgr_mad"], "passed": check["passed"],
                             "checked_with": check["checked_with"]})
        for failure in manifest.get("failures") or []:
            rows.append({"target": failure["target"], "artifact": "-", "precision": failure["precision"],
                         "flavour": "", "bucket": "", "frames": 0,
                         "max_abs": float("nan"), "pha_mad": float("nan"), "fgr_mad": float("nan"), "passed": False,
                         "checked_with": f"export failed: {failure['reason']}"})
    return rows


def parity_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | artifact | precision | bucket | frames | max abs | pha MAD | fgr MAD | pass |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['artifact']} | {r['precision']} | {r['bucket']} | {r['frames']} "
                     f"| {r['max_abs']:.1e} | {r['pha_mad']:.1e} | {r['fgr_mad']:.1e} "
                     f"| {'yes' if r['passed'] else 'NO'} |")
    return "\n".join(lines)


def _speedups(bench: dict[str, Any]) -> dict[tuple[str, str, int], tuple[float, float | None]]:
    """{(name, bucket, occurrence): (median ms, speed-up against the stand-in of the same run and bucket)}; the
    occurrence counts rows of the same name (two export folders can hold the same dynamic file name)."""
    base = {r["bucket"]: r["median_ms"] for r in bench["results"] if r["name"] == ORIGINAL}
    seen: dict[tuple[str, str], int] = {}
    out = {}
    for r in bench["results"]:
        key = (r["name"], r["bucket"])
        seen[key] = seen.get(key, -1) + 1
        out[(*key, seen[key])] = (r["median_ms"], base[r["bucket"]] / r["median_ms"] if r["bucket"] in base else None)
    return out


def speed_rows(bench: dict[str, Any], back_to_back: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    speed = _speedups(bench)
    other = _speedups(back_to_back) if back_to_back else {}
    rows, seen = [], {}
    for r in bench["results"]:
        key = (r["name"], r["bucket"])
        seen[key] = seen.get(key, -1) + 1
        b2b_ms, b2b_speedup = other.get((*key, seen[key]), (None, None))
        rows.append({"name": r["name"], "bucket": r["bucket"], "median_ms": r["median_ms"], "p90_ms": r["p90_ms"],
                     "fps": r["fps"], "speedup": speed[(*key, seen[key])][1],
                     "back_to_back_ms": b2b_ms, "back_to_back_speedup": b2b_speedup,
                     "vs_anchor": ANCHORS_MS[r["bucket"]] / r["median_ms"] if r["bucket"] in ANCHORS_MS else None,
                     "runtime": r["runtime"]})
    return rows


def speed_table(rows: list[dict[str, Any]]) -> str:
    b2b = any(r["back_to_back_speedup"] for r in rows)
    lines = ["| artifact | bucket | median ms | p90 ms | speed-up vs original-style (same run) | anchor ms / median |"
             + (" back-to-back median ms | back-to-back speed-up |" if b2b else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if b2b else "")]
    for r in rows:
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        anchor = f"{r['vs_anchor']:.2f}" if r["vs_anchor"] else "-"
        line = f"| {r['name']} | {r['bucket']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {speed} | {anchor} |"
        if b2b:
            line += (f" {r['back_to_back_ms']:.1f} | {r['back_to_back_speedup']:.2f}x |" if r["back_to_back_speedup"]
                     else " - | - |")
        lines.append(line)
    return "\n".join(lines)


def _short(name: str, bucket: str) -> str:
    """'openvino:rvm_mobilenetv3_1920x1080_r0.25_bf16_openvino' -> 'openvino bf16' (bucket and variant dropped)."""
    target, _, file = name.partition(":")
    if target == "foreign":
        return f"original-style ONNX ({file})"
    width_height, ratio = bucket.split("@")
    stem = file.replace("rvm_mobilenetv3_", "").replace(f"{width_height}_r{ratio}_", "")
    for suffix in (".onnx", ".tflite", "_openvino"):
        stem = stem.removesuffix(suffix)
    return f"{target} {stem.replace('_', ' ')}"


def plot(rows: list[dict[str, Any]], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = list(dict.fromkeys(r["bucket"] for r in rows))
    count = max(sum(1 for r in rows if r["bucket"] == b) for b in buckets)
    fig, axes = plt.subplots(len(buckets), 1, figsize=(9, (0.28 * count + 1.2) * len(buckets)), squeeze=False)
    for ax, bucket in zip(axes[:, 0], buckets):
        sub = sorted((r for r in rows if r["bucket"] == bucket and r["speedup"]), key=lambda r: r["speedup"])
        values = [r["speedup"] for r in sub]
        b2b = [r["back_to_back_speedup"] for r in sub]
        height = 0.4 if any(b2b) else 0.8
        colors = ["0.6" if r["name"] == ORIGINAL else "tab:blue" for r in sub]
        ax.barh([y + (height / 2 if any(b2b) else 0) for y in range(len(sub))], values, height=height, color=colors)
        for y, v in enumerate(values):
            ax.text(v, y + (height / 2 if any(b2b) else 0), f" {v:.2f}x", va="center", fontsize=7)
        if any(b2b):
            ax.barh([y - height / 2 for y in range(len(sub))], [v or 0 for v in b2b], height=height,
                    color="tab:orange")
            for y, v in enumerate(b2b):
                if v:
                    ax.text(v, y - height / 2, f" {v:.2f}x", va="center", fontsize=7)
            from matplotlib.patches import Patch

            ax.legend(handles=[Patch(color="tab:blue", label="one frame each in turn, 25 ms pause before each"),
                               Patch(color="tab:orange", label="back to back (consecutive frames per artifact)")],
                      fontsize=7, loc="lower right")
        ax.set_yticks(range(len(sub)), [_short(r["name"], bucket) for r in sub], fontsize=8)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlim(0, max(values + [v or 0 for v in b2b]) * 1.15)
        ax.set_title(f"{bucket}: speed-up vs the original-style ONNX on ONNX Runtime fp32 (same run)", fontsize=10)
        ax.set_xlabel("original-style median / artifact median (higher is faster)", fontsize=9)
    fig.suptitle(machine, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--png", type=Path, default=None, help="default: OUT/headline.png")
    args = parser.parse_args(argv)
    bench_path = args.out / "bench.json"
    if not bench_path.is_file():
        print(f"{bench_path} missing: run benchmarks/headline.sh first", file=sys.stderr)
        return 2
    bench = json.loads(bench_path.read_text(encoding="utf-8"))
    b2b_path = args.out / "bench_back_to_back.json"
    back_to_back = json.loads(b2b_path.read_text(encoding="utf-8")) if b2b_path.is_file() else None
    parity = parity_rows(args.out)
    speed = speed_rows(bench, back_to_back)
    machine = bench.get("machine", {})
    label = (f"{machine.get('cpu', '?')}, {bench.get('threads')} threads, load average "
             f"{machine.get('load_average', '?')}")
    print(parity_table(parity), "", speed_table(speed), "", f"machine: {label}", sep="\n")
    plot(speed, args.png or args.out / "headline.png", label)
    (args.out / "headline.json").write_text(json.dumps({"machine": machine, "parity": parity, "speed": speed},
                                                       indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
