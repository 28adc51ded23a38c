#!/usr/bin/env bash
# The README's figures in one run: export every CPU target at the anchor settings with the product command
# (parity over a rollout is part of each export), then time every artifact side by side with the original-style
# ONNX stand-in on the same 2 threads, in interleaved rounds (rvm-export bench). Prints tables, writes JSON.
#
#   benchmarks/headline.sh [OUT]        (default OUT: benchmarks/results/headline)
#   CKPT=runs/smoke/checkpoint_last.pth benchmarks/headline.sh   # another checkpoint (default: the golden weights)
#   BENCH=0 benchmarks/headline.sh      # exports only; run again later (exports are kept) to time them on a quiet machine
#   BACK_TO_BACK=1 benchmarks/headline.sh   # also time consecutive frames per artifact (block interleave, no pause)
#
# Export logs and reports land under OUT/<target>-<bucket>/; OUT/bench.json has the timings and OUT/bench.md the
# table. Run it on a quiet machine: the speed-up column is a ratio within one run; absolute numbers move with load.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/benchmarks/results/headline}"
CKPT="${CKPT:-$ROOT/../shared/golden/golden_mobilenetv3.pth}"
BIN="${BIN:-$ROOT/.venv/bin}"
THREADS="${THREADS:-2}"
FRAMES="${FRAMES:-100}"        # parity rollout at 1080p
FRAMES_4K="${FRAMES_4K:-30}"   # parity rollout at 4K (PyTorch takes ~1 s a frame there on 2 cores)
mkdir -p "$OUT"
status=0

export_one() {  # name resolution ratio frames rvm-export-args...
  local name="$1" res="$2" ratio="$3" frames="$4"; shift 4
  if [ -f "$OUT/$name/manifest.json" ] && [ -z "${FORCE:-}" ]; then  # resumable: FORCE=1 redoes finished exports
    echo "== $name: done earlier (FORCE=1 to redo)"; return
  fi
  rm -rf "$OUT/$name"
  echo "== export $name ($res @ $ratio, $frames frames)"
  if ! "$BIN/rvm-export" --checkpoint "$CKPT" --resolution "$res" --downsample-ratio "$ratio" --frames "$frames" \
      --threads "$THREADS" --skip-bench --quiet --out "$OUT/$name" "$@" >"$OUT/$name.log" 2>&1; then
    echo "   FAILED (exit $?): see $OUT/$name.log"; status=1
  fi
  grep -E "max abs|rror" "$OUT/$name.log" || true
}

for setting in "1920x1080 0.25 $FRAMES" "3840x2160 0.125 $FRAMES_4K"; do
  set -- $setting
  res="$1" ratio="$2" frames="$3"
  export_one "onnx-dynamic-$res" "$res@$ratio" dynamic "$frames" --target onnx --precision fp32
  export_one "onnx-$res" "$res" "$ratio" "$frames" --target onnx --precision fp32 --precision fp16 --precision int8
  export_one "openvino-$res" "$res" "$ratio" "$frames" --target openvino \
    --precision fp32 --precision bf16 --precision int8
  export_one "tflite-$res" "$res" "$ratio" "$frames" --target tflite --precision fp32 --precision fp16 --precision int8
  export_one "tflite-nhwc-$res" "$res" "$ratio" "$frames" --target tflite --layout NHWC --precision fp32 --precision int8
  export_one "tflite-nhwc-full-$res" "$res" "$ratio" "$frames" --target tflite --layout NHWC --precision int8 \
    --option tflite.int8_mode=full
done

echo "== original-style ONNX stand-in (benchmarks/original_style_onnx.py)"
"$BIN/python" "$ROOT/benchmarks/original_style_onnx.py" --checkpoint "$CKPT" --out "$OUT/original_style.onnx" \
  >"$OUT/original_style.log" 2>&1 || { echo "   FAILED: see $OUT/original_style.log"; exit 1; }

if [ "${BENCH:-1}" = 0 ]; then echo "== BENCH=0: exports only"; exit $status; fi
echo "== side-by-side timing ($THREADS threads)"
dirs=()
for d in "$OUT"/*/; do [ -f "$d/manifest.json" ] && dirs+=("$d"); done
"$BIN/rvm-export" bench "${dirs[@]}" --foreign "$OUT/original_style.onnx" --threads "$THREADS" --quiet \
  --resolution 1920x1080@0.25 --resolution 3840x2160@0.125 --frames "${BENCH_FRAMES:-20}" --rounds "${ROUNDS:-3}" \
  --json "$OUT/bench.json" | tee "$OUT/bench.md" || status=1
if [ "${BACK_TO_BACK:-0}" = 1 ]; then  # the same artifacts timed on consecutive frames (a video's pattern)
  echo "== back-to-back timing: --interleave block, no settle pause ($THREADS threads)"
  "$BIN/rvm-export" bench "${dirs[@]}" --foreign "$OUT/original_style.onnx" --threads "$THREADS" --quiet \
    --resolution 1920x1080@0.25 --resolution 3840x2160@0.125 --frames "${BENCH_FRAMES:-20}" --rounds "${ROUNDS:-3}" \
    --interleave block --settle-ms 0 --json "$OUT/bench_back_to_back.json" | tee "$OUT/bench_back_to_back.md" || status=1
fi
exit $status
