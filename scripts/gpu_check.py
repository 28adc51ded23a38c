#!/usr/bin/env python3
"""Every GPU measurement of the cuda target in one run, written as JSON after each step (docs/cuda.md).

    python3 scripts/gpu_check.py --out gpu.json            # NVIDIA GPU, full run (skips what would end after 300 s)
    python3 scripts/gpu_check.py --out gpu.json --quick    # fewer frames and iterations
    python3 scripts/gpu_check.py --device cpu --quick --out dry.json   # dry run of every code path on the CPU

Needs only torch, numpy and this repository (run from the repo root; no install). Per bucket it rolls the fp32
network out on the CPU once (the parity reference), then for each mode: setup (compile/capture) time, first-frame
latency, steady-state FPS (device tensors in and out, states on the device), synchronous per-frame latency
(median/p90) and parity of the same mode over the same frames against the CPU reference. Then a profiler breakdown,
a .pt2 artifact round trip, ResNet-50, and ONNX Runtime's CUDA/TensorRT providers if (and only if) installed.
Measurements run in priority order; one that would overrun --budget-s is recorded as skipped, never estimated.
"""
from __future__ import annotations

import time

T0 = time.perf_counter()  # before importing torch: the budget counts from process start

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model import load_checkpoint  # noqa: E402
from rvm_export.core.atomic import write_json_atomic  # noqa: E402
from rvm_export.default_model import seeded_default_model  # noqa: E402
from rvm_export.parity import ParityReport  # noqa: E402
from rvm_export.core.rollout import TorchStream  # noqa: E402
from rvm_export.core.rollout import MovingScene  # noqa: E402
from rvm_export.core.bucket import parse_bucket  # noqa: E402
from rvm_export.core.spec import IOSpec  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import cuda as tc  # noqa: E402
from targets.cuda import runtime as cuda_runtime  # noqa: E402
from targets.traced.contract import StaticContract  # noqa: E402

PUBLISHED = {"1920x1080@0.25": 172.0, "3840x2160@0.125": 154.0}  # RTX 3090 fp16 FPS, PyTorch batch 1 (paper)
GOAL = ("1920x1080@0.25", 1000.0)  # the goal: H100, fp16, CUDA graphs
# (name, precision, preset, BN folded): plain modules first (the published setup), then the .pt2 artifact's modes.
# Order of the run: the eager/graph rows of every bucket, then "max" (channels_last + torch.compile + CUDA graphs) per
# bucket, then "compile" (NCHW input, Inductor picks the layouts: a second compile for what is likely the same program).
MODES = (("eager_fp32", "fp32", "eager", False), ("eager_fp16", "fp16", "eager", False),
         ("channels_last_fp16", "fp16", "channels_last", False), ("cudagraphs_fp16", "fp16", "cudagraphs", True),
         ("max_fp16", "fp16", "max", True), ("compile_fp16", "fp16", "compile", True))
LAST = ("compile_fp16",)  # measured after the artifact round trip, if the budget allows
STAGES = ("backbone", "aspp", "decoder", "project_mat", "refiner")
PROFILED = ("eager_fp16", "cudagraphs_fp16", "compile_fp16", "max_fp16")  # at the first bucket


def log(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
class Run:
    """The JSON record, rewritten atomically after every change, and the time budget."""

    def __init__(self, args) -> None:
        self.args, self.path = args, Path(args.out)
        self.data = {"schema": "rvm-export/gpu_check/1", "status": "running", "started": _now(),
                     "args": vars(args), "machine": {}, "ort": {}, "results": [], "profiles": [], "extra": {}}

    def save(self, status: str | None = None) -> None:
        if status:
            self.data["status"] = status
        self.data["elapsed_s"] = round(time.perf_counter() - T0, 1)
        write_json_atomic(self.path, self.data)

    def affordable(self, cost_s: float) -> bool:
        return time.perf_counter() - T0 + cost_s <= self.args.budget_s


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine_info(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
            "numpy": np.__version__, "cuda_runtime": torch.version.cuda, "platform": platform.platform()}
    if device.type != "cuda":
        info["gpu"] = "none (CPU dry run: no number here is a GPU number)"
        return info
    props = torch.cuda.get_device_properties(device)
    info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    compiler = shutil.which(os.environ.get("CC", "")) or shutil.which("cc") or shutil.which("gcc")
    info["c_compiler"] = compiler or "none found: Triton needs one, so the compile modes will fail"
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = "not installed"
    try:
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        line = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=15).stdout.strip().splitlines()[device.index or 0]
        info["nvidia_smi"] = dict(zip(query.split(","), (v.strip() for v in line.split(","))))
        info["driver"] = info["nvidia_smi"]["driver_version"]
    except Exception as exc:  # no nvidia-smi: the driver version stays unknown, say why
        info["driver"] = f"unknown ({type(exc).__name__}: {exc})"
    return info


def ort_providers() -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"onnxruntime": "not installed", "CUDAExecutionProvider": "not available",
                "TensorrtExecutionProvider": "not available"}
    available = ort.get_available_providers()
    out = {"onnxruntime": ort.__version__, "providers": available}
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        out[provider] = "available" if provider in available else "not available"
    return out


# ---------------------------------------------------------------------------------------------------------------
class References:
    """The CPU fp32 rollout per (variant, bucket, frames), computed once and kept (10 frames of 4K: ~1.3 GB)."""

    def __init__(self, run: Run) -> None:
        self.run, self.cache = run, {}

    def get(self, model, bucket, count: int) -> tuple[list[np.ndarray], list[dict]]:
        key = (model.variant, bucket.label, count)
        if key not in self.cache:
            frames = list(MovingScene(bucket.width, bucket.height, count, seed=7))
            start = time.perf_counter()
            stream = TorchStream(model, bucket)
            self.cache[key] = (frames, [stream.step(frame) for frame in frames])
            self.run.data["extra"][f"reference {model.variant} {bucket.label} x{count}"] = {
                "seconds": round(time.perf_counter() - start, 2), "cpu_threads": torch.get_num_threads()}
        return self.cache[key]


def _stage_hooks(contract) -> list:
    """record_function ranges around the network's stages (eager modules only)."""
    handles = []
    for name in STAGES:
        module, ranges = getattr(contract.model, name), []

        def enter(_m, _a, name=name, ranges=ranges):
            ranges.append(torch.profiler.record_function(f"stage:{name}"))
            ranges[-1].__enter__()

        def leave(_m, _a, _o, ranges=ranges):
            ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _time(event, *names) -> float:
    for name in names:
        value = getattr(event, name, None)
        if value is not None:
            return float(value)
    return 0.0


def profile(stream, srcs, frames: int, direct: bool = False) -> dict:
    """Top kernels (or CPU ops in a dry run) by self time per frame, kernel count, and per-stage time."""
    from torch.profiler import ProfilerActivity

    cuda = stream.runner.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad(), torch.profiler.profile(activities=activities) as prof:
        for i in range(frames):
            if direct:  # the same kernels as the graph, launched one by one
                stream.src_buf.copy_(srcs[i % len(srcs)])
                stream._frame()
            else:
                stream.step_tensor(srcs[i % len(srcs)])
        tc.synchronize(stream.runner.device)
    rows = []
    for e in prof.key_averages():
        on_device = "CUDA" in str(getattr(e, "device_type", ""))
        if cuda and not on_device or not cuda and on_device or e.key.startswith("stage:"):
            continue
        us = _time(e, "self_device_time_total", "self_cuda_time_total") if cuda else _time(e, "self_cpu_time_total")
        rows.append({"name": e.key[:140], "calls_per_frame": e.count / frames, "us_per_frame": us / frames})
    rows.sort(key=lambda r: -r["us_per_frame"])
    stages: dict[str, float] = {}
    for e in prof.events():  # the CPU-side range: its device time sums the kernels launched inside it
        if e.name.startswith("stage:") and "CPU" in str(getattr(e, "device_type", "CPU")):
            us = _time(e, "device_time_total", "cuda_time_total") if cuda else _time(e, "cpu_time_total")
            stages[e.name[6:]] = stages.get(e.name[6:], 0.0) + us / frames / 1000.0
    return {"what": "CUDA kernels" if cuda else "CPU ops (dry run)", "frames": frames,
            "graph_replay": stream.graph is not None and not direct,
            "total_ms_per_frame": sum(r["us_per_frame"] for r in rows) / 1000.0 if cuda else None,
            "kernels_per_frame": sum(r["calls_per_frame"] for r in rows) if cuda else None,
            "stages_ms_per_frame": stages or None, "top": rows[:15]}


def measure(run: Run, refs: References, model, bucket, name, precision, preset, fold, count, profile_it) -> dict:
    """Build one mode, time it, check its parity against the CPU rollout; returns the result fields."""
    args, device = run.args, torch.device(run.args.device)
    frames, reference = refs.get(model, bucket, count)
    if device.type == "cpu" and precision == "fp16" and not args.cpu_fp16:
        precision = "fp32"  # CPU fp16 convolutions take PyTorch's slow reference path (seconds per frame)
    mode = tc.parse_mode({"mode": preset, **({"compile_backend": args.compile_backend}
                                             if args.compile_backend and tc.PRESETS[preset].compile else {})})
    if mode.compile:
        torch._dynamo.reset()
    spec = IOSpec(model.variant, model.refiner_name, bucket, io_dtype="float16" if precision == "fp16" else "float32")
    contract = StaticContract(tc.prepare_model(model, precision, fold), spec)
    runner = tc.CudaRunner(contract, spec, mode, str(device), precision=precision, allow_cpu=device.type != "cuda")
    record = {"computed_in": precision, "preset": preset, "label": mode.label, "bn_folded": fold,
              "runner": runner.label}
    if precision == "fp32":
        record["tf32"] = tc.tf32_status()
    stream = runner.stream(bucket)
    srcs = [stream.stage(f) for f in frames[:8]]
    record["setup_s"] = stream.prepare()  # compile + warm-up + capture; ~0 for eager
    record["first_call_s"] = stream.first_call_s  # the compile itself (eager: cuDNN algorithm search)
    tc.synchronize(device)
    start = time.perf_counter()
    stream.step_tensor(srcs[0])
    tc.synchronize(device)
    record["first_frame_ms"] = (time.perf_counter() - start) * 1000.0
    for i in range(args.warmup):
        stream.step_tensor(srcs[i % len(srcs)])
    tc.synchronize(device)
    done, start = 0, time.perf_counter()
    while done < args.iters and (done < min(20, args.iters) or time.perf_counter() - start < args.max_loop_s):
        stream.step_tensor(srcs[done % len(srcs)])
        done += 1
    tc.synchronize(device)
    elapsed = time.perf_counter() - start
    record.update(fps=done / elapsed, iterations=done, ms_per_frame=elapsed * 1000.0 / done)
    latencies = []
    for i in range(max(min(10, args.iters), min(100, done // 2))):
        tc.synchronize(device)
        start = time.perf_counter()
        stream.step_tensor(srcs[i % len(srcs)])
        tc.synchronize(device)
        latencies.append((time.perf_counter() - start) * 1000.0)
    record["latency_ms"] = {"median": float(np.median(latencies)), "p90": float(np.percentile(latencies, 90)),
                            "min": float(np.min(latencies)), "samples": len(latencies),
                            "what": "synchronous: sync, one step, sync (wall clock)"}
    report = ParityReport("cuda", name, precision, bucket, runner.label, tolerance_for("cuda", precision))
    stream.reset()
    for frame, ref in zip(frames, reference):
        report.add_frame(ref, stream.step(frame))
    record.update(parity=report.to_dict(), status="ok")
    if profile_it:  # last, and on its own: a profiler failure must not cost the numbers above
        handles = _stage_hooks(contract) if not mode.compile and not mode.cudagraphs else []
        try:
            record["profile"] = profile(stream, srcs, args.profile_frames)
            if mode.cudagraphs:
                record["profile_direct"] = profile(stream, srcs, args.profile_frames, direct=True)
        except Exception as exc:
            record["profile_error"] = f"{type(exc).__name__}: {exc}"[:2000]
        for handle in handles:
            handle.remove()
    return record


def guarded(run: Run, record: dict, cost_s: float, fn, *args) -> dict:
    """Run one measurement unless it would overrun the budget; a failure is recorded, never fatal."""
    run.data["results"].append(record)
    what = f"{record['variant']} {record['bucket']} {record['mode']}"
    if not run.affordable(cost_s):
        record.update(status="skipped", reason=f"time budget {run.args.budget_s:.0f}s: needs about {cost_s:.0f}s")
        log(f"skip  {what}: time budget")
        run.save()
        return record
    log(f"start {what}")
    record["status"] = "running"
    run.save()
    start = time.perf_counter()
    try:
        record.update(fn(*args))
        p = record.get("parity", {})
        log(f"done  {what}: {record.get('fps', 0):.1f} FPS, setup {record.get('setup_s', 0):.1f}s, "
            f"parity max abs {p.get('max_abs', float('nan')):.3g} passed={p.get('passed')}")
    except Exception as exc:  # keep going: one failing mode must not lose the others
        record.update(status="error", error=f"{type(exc).__name__}: {exc}"[:2000],
                      traceback=traceback.format_exc(limit=8)[-4000:])
        log(f"ERROR {what}: {type(exc).__name__}: {str(exc)[:500]}")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    record["wall_s"] = round(time.perf_counter() - start, 1)
    run.save()
    return record


def artifact_round_trip(run: Run, refs: References, model, bucket) -> dict:
    """Export the .pt2 the CLI ships, load it with torch.export.load, run its default mode, check parity."""
    from rvm_export.core.spec import Precision
    from rvm_export.core.request import ExportRequest, RuntimeOptions

    device = run.args.device
    frames, reference = refs.get(model, bucket, min(5, run.args.frames[1]))
    precision = "fp32" if device == "cpu" and not run.args.cpu_fp16 else "fp16"  # see measure()
    request = ExportRequest(model.variant, model.refiner_name, (bucket,), False, Precision(precision),
                            options=tc.CudaOptions())
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        (artifact,) = tc.export(model, request, Path(out))
        record = {"export_s": time.perf_counter() - start, "artifact": artifact.name,
                  "bytes": artifact.path.stat().st_size, "computed_in": precision}
        runner = cuda_runtime.load(artifact, RuntimeOptions(device=device), device="cpu" if device == "cpu" else None)
    stream = runner.stream(bucket)
    record.update(runner=runner.label, label=runner.mode.label, setup_s=stream.prepare())
    report = ParityReport("cuda", artifact.name, precision, bucket, runner.label, tolerance_for("cuda", precision))
    for frame, ref in zip(frames, reference):
        report.add_frame(ref, stream.step(frame))
    srcs = [stream.stage(f) for f in frames]
    tc.synchronize(runner.device)
    start, count = time.perf_counter(), max(min(20, run.args.iters), run.args.iters // 2)
    for i in range(count):
        stream.step_tensor(srcs[i % len(srcs)])
    tc.synchronize(runner.device)
    record.update(fps=count / (time.perf_counter() - start), iterations=count, parity=report.to_dict(), status="ok")
    return record


def ort_measure(run: Run, refs: References, model, bucket, provider: str) -> dict:
    """ONNX Runtime with a GPU provider, only where it is installed: static fp32 ONNX, host arrays in and out."""
    from targets import onnx as onnx_target
    from rvm_export.core.request import RuntimeOptions

    problem = onnx_target.missing()
    if problem:
        raise RuntimeError(f"{provider} is installed but the ONNX export toolchain is not: {problem}")
    frames, reference = refs.get(model, bucket, min(5, run.args.frames[1]))
    spec = IOSpec(model.variant, model.refiner_name, bucket)
    device = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}[provider]
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / "rvm.onnx"
        onnx_target.export_graph(model, spec, path)
        runner = onnx_target.OnnxRunner(path, spec, RuntimeOptions(device=device))
        stream = runner.stream(bucket)
        report = ParityReport("onnx", path.name, "fp32", bucket, runner.label, tolerance_for("onnx", "fp32"))
        for frame, ref in zip(frames, reference):
            report.add_frame(ref, stream.step(frame))
        start, count = time.perf_counter(), max(min(20, run.args.iters), run.args.iters // 4)
        for i in range(count):
            stream.step(frames[i % len(frames)])
        fps = count / (time.perf_counter() - start)
    return {"precision": "fp32", "runner": runner.label, "fps": fps, "iterations": count, "status": "ok",
            "what": "host numpy in and out per frame (includes transfers), states stay OrtValues on the device",
            "parity": report.to_dict()}


def summarise(run: Run) -> None:
    summary = {}
    for bucket in run.args.buckets:
        ok = [r for r in run.data["results"] if r["bucket"] == bucket and r.get("status") == "ok"
              and r["variant"] == "mobilenetv3" and r["mode"] in {m[0] for m in MODES}]
        if not ok:
            continue
        best = max(ok, key=lambda r: r["fps"])
        eager16 = next((r["fps"] for r in ok if r["mode"] == "eager_fp16"), None)
        entry = {"best_mode": best["mode"], "best_fps": best["fps"], "best_parity_passed": best["parity"]["passed"],
                 "speedup_vs_eager_fp16": best["fps"] / eager16 if eager16 else None,
                 "published_rtx3090_fp16_fps": PUBLISHED.get(bucket),
                 "fps_by_mode": {r["mode"]: round(r["fps"], 1) for r in ok},
                 "parity_passed_by_mode": {r["mode"]: r["parity"]["passed"] for r in ok}}
        if bucket == GOAL[0] and run.args.device != "cpu":
            entry["goal_1000fps"] = "met" if best["fps"] >= GOAL[1] else "missed"
        replay, direct = best.get("profile"), best.get("profile_direct")
        prof = replay if replay and (replay["kernels_per_frame"] or 0) > 10 else (direct or replay)
        if prof:
            entry["where_the_time_goes"] = {
                "wall_ms_per_frame": best["ms_per_frame"], "kernel_ms_per_frame": prof["total_ms_per_frame"],
                "kernels_per_frame": prof["kernels_per_frame"], "from": "graph replay" if prof is replay
                else "the same kernels launched one by one (the profiler saw no kernels inside the graph)",
                "top5": prof["top"][:5],
                "note": "kernel time is the GPU-busy floor of a frame; wall minus kernel time is launch/idle gaps"}
        summary[bucket] = entry
    run.data["summary"] = summary


# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json", help="JSON result path (rewritten after every measurement)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run of the code paths")
    p.add_argument("--quick", action="store_true", help="fewer parity frames and iterations")
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip measurements that would end after this many seconds (default 300; CPU dry run 3600)")
    p.add_argument("--buckets", default=None, help="comma-separated WxH@R (default 1920x1080@0.25,3840x2160@0.125; "
                                                    "CPU dry run 192x108@0.25,256x144@0.125)")
    p.add_argument("--checkpoint", default=None, help="MobileNetV3 weights (.pth/.safetensors); default: seeded")
    p.add_argument("--modes", default=",".join(m[0] for m in MODES), help="subset of the mode names")
    p.add_argument("--compile-backend", default=None, help="default inductor on cuda, aot_eager on cpu")
    p.add_argument("--no-resnet", action="store_true", help="skip the ResNet-50 rows")
    p.add_argument("--cpu-fp16", action="store_true",
                   help="CPU dry run: compute fp16 rows in fp16 (slow); by default they compute in fp32 there")
    args = p.parse_args(argv)
    cpu = args.device == "cpu"
    if not cpu and args.device != "cuda" and not args.device.startswith("cuda:"):
        p.error(f"--device must be cuda, cuda:N or cpu, not {args.device!r}")
    default_buckets = "192x108@0.25,256x144@0.125" if cpu else "1920x1080@0.25,3840x2160@0.125"
    args.budget_s = args.budget_s or (3600.0 if cpu else 300.0)
    try:
        args.buckets = [parse_bucket(b).label for b in (args.buckets or default_buckets).split(",")]
    except Exception as exc:
        p.error(str(exc))
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(args.modes) - {m[0] for m in MODES})
    if unknown:
        p.error(f"unknown mode(s) {unknown}; choose from {[m[0] for m in MODES]}")
    args.compile_backend = args.compile_backend or ("aot_eager" if cpu else None)
    # (full, quick, CPU dry run): parity frames at the first bucket and the others, timed steps, warm-up steps,
    # seconds a timing loop may take beyond its first 20 steps, profiled frames
    pick = 2 if cpu else int(args.quick)
    args.frames = ((30, 10), (6, 3), (3, 2))[pick]
    args.iters = (300, 30, 4)[pick]
    args.warmup = (20, 5, 1)[pick]
    args.max_loop_s = (3.0, 1.0, 0.0)[pick]
    args.profile_frames = (20, 5, 2)[pick]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    run = Run(args)
    signal.signal(signal.SIGTERM, lambda *_: (run.save("terminated (timeout?)"), os._exit(124)))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        run.data["machine"] = {"error": tc.missing()}
        run.save("failed: no CUDA device")
        log(f"no CUDA device: {tc.missing()}")
        return 3
    torch._dynamo.config.cache_size_limit = 64  # several modules and shapes compile in one process
    run.data["machine"] = machine_info(device)
    run.data["ort"] = ort_providers()
    log(f"machine: {run.data['machine'].get('gpu')}, torch {torch.__version__}, ORT: {run.data['ort']}")
    model = load_checkpoint(args.checkpoint, "mobilenetv3") if args.checkpoint else seeded_default_model()
    run.data["weights"] = args.checkpoint or "seeded default (seed 0), UNTRAINED: the CLI's default model"
    run.save()
    refs, buckets = References(run), [parse_bucket(b) for b in args.buckets]
    compile_cost = [150.0]  # the first compile's guess; later ones use the measured setup time

    def mode_job(net, bucket, index, name, precision, preset, fold):
        count = args.frames[0] if index == 0 else args.frames[1]
        compiled = tc.PRESETS[preset].compile
        profile_it = index == 0 and name in PROFILED and net.variant == "mobilenetv3"
        record = guarded(run, {"variant": net.variant, "bucket": bucket.label, "mode": name, "precision": precision},
                         compile_cost[0] if compiled else 20.0, measure, run, refs, net, bucket, name, precision,
                         preset, fold, count, profile_it)
        if compiled and record.get("status") == "ok":
            compile_cost[0] = record["setup_s"] * 1.3 + 15.0

    plan = [m for m in MODES if m[0] in args.modes]
    eager = [m for m in plan if not tc.PRESETS[m[2]].compile]
    compiled = [m for m in plan if tc.PRESETS[m[2]].compile and m[0] not in LAST]
    for group in (eager, compiled):  # a slow compile must not cost the other bucket its eager rows
        for index, bucket in enumerate(buckets):
            for mode in group:
                mode_job(model, bucket, index, *mode)
    summarise(run)
    guarded(run, {"variant": "mobilenetv3", "bucket": buckets[0].label, "mode": "artifact_pt2_default",
                  "precision": "fp16"}, 40.0, artifact_round_trip, run, refs, model, buckets[0])
    for index, bucket in enumerate(buckets):
        for mode in plan:
            if mode[0] in LAST:
                mode_job(model, bucket, index, *mode)
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if run.data["ort"].get(provider) == "available":
            guarded(run, {"variant": "mobilenetv3", "bucket": buckets[0].label, "mode": f"ort_{provider}",
                          "precision": "fp32"}, 90.0,
                    ort_measure, run, refs, model, buckets[0], provider)
    if not args.no_resnet:
        resnet = seeded_default_model("resnet50")
        for index, bucket in enumerate(buckets):
            for mode in MODES:
                if mode[0] in ("eager_fp16", "cudagraphs_fp16"):
                    mode_job(resnet, bucket, 1, *mode)
    summarise(run)
    run.data["finished"] = _now()
    run.save("done")
    log(f"wrote {run.path} ({run.data['elapsed_s']}s); summary: {run.data['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
