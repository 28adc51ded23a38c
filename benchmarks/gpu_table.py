"""Render the Markdown table of one or more ``scripts/gpu_check.py`` JSON results (README / docs/cuda.md).

    python benchmarks/gpu_table.py docs/figures/gpu_check_h100.json docs/figures/gpu_check_h200.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    machine = data.get("machine", {})
    gpu = machine.get("gpu") or machine.get("name") or "?"
    out = []
    for r in data["results"]:
        if r.get("status") != "ok" or r.get("fps") is None:
            continue
        latency = r.get("latency_ms") or {}
        parity = r.get("parity") or {}
        p90 = f"{latency['p90']:.2f}" if latency.get("p90") is not None else "-"
        passed = "pass" if parity.get("passed") else "FAIL"
        max_abs = f"{parity['max_abs']:.1e} ({passed})" if parity.get("max_abs") is not None else "-"
        setup = f"{r['setup_s']:.1f}" if r.get("setup_s") else "0"
        first = f"{r['first_frame_ms']:.1f}" if r.get("first_frame_ms") is not None else "-"
        mode = r.get("label", r["mode"])
        if r["mode"].startswith("artifact"):
            mode = f"shipped .pt2 ({mode})"
        out.append(f"| {gpu} | {r['variant']} | {r['bucket']} | {mode} {r['precision']} | "
                   f"**{r['fps']:.0f}** | {p90} | {first} | {setup} | {max_abs} |")
    return out


def main(paths: list[str]) -> int:
    print("| GPU | variant | bucket | mode | FPS | p90 ms (sync) | first frame ms | compile/capture s | parity max abs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        for row in rows(Path(path)):
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
