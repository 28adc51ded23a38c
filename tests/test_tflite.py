"""TFLite target: request checks, the SignatureDef contract, and parity on the LiteRT interpreter (XNNPACK).

Default tests convert four times (256x144@0.5 NHWC and NCHW; 328x184@0.375 NCHW: odd low-res sizes and the
PyTorch-weight downsample; 241x135@1.0 NHWC: no refiner); every precision reuses its conversion (cached per
process). The GPU accelerator tests compile each 256x144 fp32/fp16 file onto LiteRT's GPU accelerator over
SwiftShader and roll 30 frames there (minutes each: a software rasteriser).
Full resolutions over 100 frames are marked slow.
"""
from __future__ import annotations

import collections
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

from rvm_export.core.errors import ExportFailedError, InputError, UsageError  # noqa: E402
from rvm_export.parity import compare_rollout  # noqa: E402
from rvm_export.core.rollout import TorchStream  # noqa: E402
from rvm_export.core.rollout import MovingScene  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.names import OUTPUT_NAMES, STATE_PAIRS  # noqa: E402
from rvm_export.core.spec import IOSpec, Layout, Precision  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import tflite  # noqa: E402
from targets.traced.rewrites import export_friendly  # noqa: E402
from rvm_export.core.request import ExportRequest, RuntimeOptions  # noqa: E402

pytestmark = pytest.mark.tflite

SMALL = Bucket(256, 144, 0.5)
ODD = Bucket(328, 184, 0.375)  # low-res 123x69: odd sizes in every pool; 1/0.375 is not a power of two
RATIO1 = Bucket(241, 135, 1.0)
FRAMES = 8
THREADS = RuntimeOptions(threads=2)
TRAINED = Path(__file__).resolve().parents[1] / "runs" / "smoke" / "checkpoint_last.pth"
# (id, precision, options) -- the matrix of what one bucket can be exported as
VARIANTS = [("fp32", "fp32", {}), ("fp16", "fp16", {}), ("int8-dynamic", "int8", {}),  # dynamic is the default
            ("int8-full", "int8", {"int8_mode": "full"}), ("int8-mixed", "int8", {"int8_mode": "mixed"}),
            ("int8-16x8", "int8", {"int8_mode": "16x8"})]


def _request(bucket=SMALL, precision="fp32", layout=Layout.NHWC, dynamic=False, options=None, frames=16):
    return ExportRequest("mobilenetv3", "deep_guided_filter", (bucket,) if bucket else (), dynamic,
                         Precision(precision), layout, options=tflite.TfliteOptions.parse("tflite", options),
                         calibration_frames=frames)


def _parity(model, artifact, bucket, frames=FRAMES):
    runner = tflite.load(artifact, THREADS)
    report = compare_rollout(TorchStream(model, bucket), runner.stream(bucket),
                             MovingScene(bucket.width, bucket.height, frames, seed=0), target="tflite",
                             artifact=artifact.name, precision=artifact.precision.value, bucket=bucket,
                             label=runner.label, tolerance=tolerance_for("tflite", artifact.precision.value))
    print(f"PARITY {artifact.name} {bucket.label} {report.frames} frames: max abs {report.max_abs:.2e}, "
          f"pha MAD {report.pha_mad:.2e}, fgr MAD {report.fgr_mad:.2e}")  # shown with pytest -rA
    return report


@pytest.fixture(scope="session")
def tflite_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tflite")


@pytest.fixture(scope="session")
def small_artifacts(golden_model, tflite_dir):
    """Every precision at 256x144@0.5 NHWC (one conversion, then AI Edge Quantizer per precision)."""
    return {name: tflite.export(golden_model, _request(precision=p, options=o), tflite_dir)[0]
            for name, p, o in VARIANTS}


@pytest.fixture(scope="session")
def odd_nchw(golden_model, tflite_dir):
    return tflite.export(golden_model, _request(ODD, layout=Layout.NCHW), tflite_dir)[0]


@pytest.fixture(scope="session")
def ratio1(golden_model, tflite_dir):
    return tflite.export(golden_model, _request(RATIO1), tflite_dir)[0]


# -- requests that cannot make a model are refused before any work, naming the problem -----------------------------
def test_dynamic_refused_naming_why():
    with pytest.raises(UsageError, match=r"static models only.*ratio.*--resolution WxH@RATIO"):
        tflite.check_request(_request(dynamic=True))


@pytest.mark.parametrize("bucket, suggestions", [
    (Bucket(1280, 720, 0.33), ["0.3375", "0.3125", "1200x700"]),  # 720*0.33 = 237.6; 0.325 is not offered: float32
    # gives floor(720*0.325) = 233, PyTorch 234
    (Bucket(241, 135, 0.5), ["1.0", "240x134"]),  # 241*0.5 = 120.5; gcd(241, 135) = 1: only 1.0 is exact
], ids=["720p@0.33", "241x135@0.5"])
def test_inexact_bucket_refused_with_nearest_values(bucket, suggestions):
    with pytest.raises(UsageError) as info:
        tflite.check_request(_request(bucket))
    message = str(info.value)
    assert bucket.label in message and "whole number of pixels" in message
    for text in suggestions:
        assert text in message
    # and every ratio it suggests really builds
    listed = message.split("valid ratios at ")[1].split(": ")[1].split(";")[0]
    for ratio in (float(text) for text in listed.split(", ")):
        tflite.check_bucket(Bucket(bucket.width, bucket.height, ratio))


@pytest.mark.parametrize("options, precision, pattern", [
    ({"int8_mode": "full"}, "fp32", r"int8_mode only applies to --precision int8"),
    ({"int8_mode": "weights"}, "int8", r"int8_mode must be one of dynamic, full.*'weights'"),
    ({"quantise": True}, "fp32", r"unknown tflite option\(s\) quantise; known: int8_mode.*exact_resize"),
    ({"exact_resize": 3}, "fp32", r"exact_resize must be true or false, got 3"),
], ids=["mode-without-int8", "bad-mode", "unknown-option", "bad-exact-resize"])
def test_options_refused(options, precision, pattern):
    with pytest.raises(UsageError, match=pattern):
        tflite.check_request(_request(precision=precision, options=options))


def test_precision_and_empty_buckets_refused():
    with pytest.raises(UsageError, match=r"cannot export precision bf16"):
        tflite.check_request(_request(precision="bf16"))
    with pytest.raises(UsageError, match=r"at least one --resolution"):
        tflite.check_request(_request(bucket=None))


def test_pool_rewrite_matches_ceil_mode_pool():
    """Both forms of the export-only pool (pooled then scaled; scaled then pooled, the TFLite one) equal
    nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) at odd and even sizes."""
    import torch

    from targets.traced.rewrites import ceil_mode_pool

    reference = torch.nn.AvgPool2d(2, 2, count_include_pad=False, ceil_mode=True)
    for scale_before_pool in (False, True):
        rewrite = ceil_mode_pool(scale_before_pool)
        for h, w in [(72, 128), (135, 241), (67, 120), (34, 61), (1, 1)]:
            x = torch.rand(1, 5, h, w, generator=torch.Generator().manual_seed(h))
            assert float((rewrite(x) - reference(x)).abs().max()) < 1e-6, (scale_before_pool, h, w)


def _pools_fed_by_pad(path: Path) -> tuple[int, int]:
    """(AVERAGE_POOL_2D ops, those whose input a PAD op writes) in a .tflite's main subgraph."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    graph = model.subgraphs[0]
    named = [(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex), op) for op in graph.operators]
    padded = {op.outputs[0] for name, op in named if name == "PAD"}
    pools = [op for name, op in named if name == "AVERAGE_POOL_2D"]
    return len(pools), sum(op.inputs[0] in padded for op in pools)


def test_no_pad_feeds_an_average_pool(odd_nchw, ratio1):
    """At odd low-res sizes (123x69 NCHW, 241x135 NHWC) the decoder's pools have padded inputs, yet no PAD writes a
    pool's input: LiteRT's GPU accelerator would merge it into the pool's padding and stop counting the zeros
    (docs/tflite.md)."""
    for artifact in (odd_nchw, ratio1):
        assert _pools_fed_by_pad(artifact.path) == (3, 0), artifact.name
        assert artifact.details["ops"]["PAD"] >= 3  # the odd sides were padded (a file without PADs proves nothing)


def test_export_rewrites_are_undone(golden_model):
    import torch

    pool = golden_model.decoder.avgpool
    with export_friendly(golden_model):
        assert golden_model.decoder.avgpool is not pool
    assert golden_model.decoder.avgpool is pool
    assert isinstance(pool, torch.nn.AvgPool2d)


# -- the contract: names, layout, metadata ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", [v[0] for v in VARIANTS])
def test_signature_carries_contract_names_and_float_io(small_artifacts, name):
    from ai_edge_litert.interpreter import Interpreter

    artifact = small_artifacts[name]
    runner = Interpreter(model_path=str(artifact.path)).get_signature_runner(tflite.SIGNATURE_KEY)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    assert set(inputs) == {"src", "r1i", "r2i", "r3i", "r4i"} and set(outputs) == set(OUTPUT_NAMES)
    spec = IOSpec("mobilenetv3", "deep_guided_filter", SMALL, layout=Layout.NHWC)
    assert tuple(inputs["src"]["shape"]) == (1, 144, 256, 3) and tuple(outputs["pha"]["shape"]) == (1, 144, 256, 1)
    for out, inp in STATE_PAIRS:  # rKo feeds rKi as is: same shape, same dtype, NHWC both sides
        assert tuple(outputs[out]["shape"]) == tuple(inputs[inp]["shape"]) == spec.concrete_state_shapes(SMALL)[inp]
        assert outputs[out]["dtype"] == inputs[inp]["dtype"] == np.float32
    assert tflite.read_contract(artifact.path) == json.loads(json.dumps(artifact.spec.to_dict()))
    meta = tflite.read_metadata(artifact.path)
    assert meta["rvm_export.precision"] == artifact.precision.value and meta["rvm_export.layout"] == "NHWC"


def test_nhwc_graph_is_builtin_ops_without_transposes(small_artifacts):
    details = small_artifacts["fp32"].details
    assert details["transposes"] == 0 and details["non_builtin_ops"] == {}
    assert details["ops"]["AVERAGE_POOL_2D"] == 3 and not any(k.startswith("STABLEHLO") for k in details["ops"])
    sizes = {name: a.path.stat().st_size for name, a in small_artifacts.items()}
    assert sizes["fp16"] < 0.55 * sizes["fp32"] and sizes["int8-full"] < 0.35 * sizes["fp32"]


def _integer_only_violations(path) -> tuple[list[str], collections.Counter]:
    """Ops of a .tflite that compute on float32 (other than the QUANTIZE of a graph input and the DEQUANTIZE
    writing a graph output), and the op types with 16-bit activations."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    graph = model.subgraphs[0]
    inputs, outputs = set(graph.inputs), set(graph.outputs)
    wrong, int16 = [], collections.Counter()
    for op in graph.operators:
        kind = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        tensors = [graph.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
        floats = [t for t in tensors if t.type == schema.TensorType.FLOAT32]
        if kind == "QUANTIZE" and not floats or kind == "QUANTIZE" and set(op.inputs) <= inputs:
            continue
        if kind == "DEQUANTIZE" and set(op.outputs) <= outputs:
            continue
        if floats:
            wrong.append(f"{kind} -> {graph.tensors[op.outputs[0]].name}")
        if any(t.type == schema.TensorType.INT16 for t in tensors):
            int16[kind] += 1
    return wrong, int16


def test_full_int8_is_integer_only(small_artifacts):
    """int8_mode=full: no float compute op; 16-bit activations only in the output head (project_mat and the split /
    add / clamp after it); project_mat exported as its split-precision pair of int8 convolutions."""
    from targets.tflite.quantize import FULL, WHY_TAIL16

    artifact = small_artifacts["int8-full"]
    details = artifact.details
    assert details["float_scopes"] == [] and details["calibration_frames"] == 16
    assert details["float_ops"] == {} and details["split_precision"] == ["project_mat.conv"]
    wrong, int16 = _integer_only_violations(artifact.path)
    assert wrong == []
    # the head, and (at ratio < 1) the refiner tail's FULLY_CONNECTED picks and the clamp after them
    assert int16["CONV_2D"] == 2 and set(int16) <= {"CONV_2D", "ADD", "SLICE", "MAXIMUM", "MINIMUM", "QUANTIZE",
                                                    "FULLY_CONNECTED", "TRANSPOSE", "RESHAPE"}
    entries = details["not_int8"]
    assert entries and all(e["kept_as"] == "int16" and e["reason"] in (FULL[0].reason, WHY_TAIL16) for e in entries)
    assert {e["layer"] for e in entries if e["op"] == "CONV_2D"} == {"project_mat.conv.hi", "project_mat.conv.lo"}
    assert "RELU_0_TO_1" not in details["ops"]


def test_16x8_is_integer_only_with_16bit_activations(golden_model, small_artifacts):
    """int8_mode=16x8: no float compute op and no int8 activation (int8 tensors are weights only, every other
    quantised tensor is int16); hardswish traced as ReLUs (no HARD_SWISH: it has no 16-bit recipe, so it would run
    8-bit); project_mat and the 12 conv + BN pairs of MobileNetV3's stem and blocks 1-4 as split-precision pairs."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from targets.tflite.quantize import WHY_16X8
    from targets.tflite.split_weights import early_backbone_convs

    artifact = small_artifacts["int8-16x8"]
    details = artifact.details
    assert details["float_ops"] == {} and _integer_only_violations(artifact.path)[0] == []
    assert details["split_precision"] == ["project_mat.conv", *early_backbone_convs(golden_model)]
    assert len(details["split_precision"]) == 13 and "HARD_SWISH" not in details["ops"]
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(artifact.path).read_bytes()))
    graph = model.subgraphs[0]
    constant = {i for i, t in enumerate(graph.tensors) if t.buffer > 0 and model.buffers[t.buffer].data is not None
                and len(model.buffers[t.buffer].data)}
    int8_activations = [graph.tensors[i].name for op in graph.operators for i in (*op.inputs, *op.outputs)
                        if i >= 0 and i not in constant and graph.tensors[i].type == schema.TensorType.INT8]
    assert int8_activations == []
    fp32 = small_artifacts["fp32"].details["ops"]
    convs = details["ops"]["CONV_2D"] + details["ops"]["DEPTHWISE_CONV_2D"]
    assert convs == fp32["CONV_2D"] + fp32["DEPTHWISE_CONV_2D"] + 13  # one more convolution per split
    assert details["not_int8"][0] == {"layer": "*", "op": "*", "kept_as": "int16 activations, int8 weights",
                                      "reason": WHY_16X8}


def test_full_int8_nchw_outputs_keep_the_16bit_head(golden_model, tmp_path):
    """NCHW integer-only: fgr and pha leave through the layout op (TRANSPOSE / RESHAPE) on the 16-bit head's grid,
    not requantised to int8 in front of it (which gave pha 256 levels: steps of 1/255)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    bucket = Bucket(128, 72, 1.0)
    (artifact,) = tflite.export(golden_model, _request(bucket, "int8", layout=Layout.NCHW,
                                                       options={"int8_mode": "full"}, frames=4), tmp_path)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(artifact.path).read_bytes()))
    graph = model.subgraphs[0]
    producer = {o: op for op in graph.operators for o in op.outputs}
    signature = next(s for s in model.signatureDefs if s.subgraphIndex == 0)
    for entry in signature.outputs:
        if entry.name.decode() not in ("fgr", "pha"):
            continue
        tail = producer[entry.tensorIndex]
        assert flatbuffer_utils.opcode_to_name(model, tail.opcodeIndex) == "DEQUANTIZE"
        assert graph.tensors[tail.inputs[0]].type == schema.TensorType.INT16, entry.name
    runner = tflite.load(artifact, THREADS)
    frame = next(iter(MovingScene(bucket.width, bucket.height, 2, seed=0)))
    pha = runner.stream(bucket).step(frame)["pha"]
    assert len(np.unique(pha)) > 256


def test_full_int8_state_path_spans_the_gru_bound(small_artifacts):
    """int8_mode=full: the recurrent states (the QUANTIZE of r1i..r4i, the ADD writing r1o..r4o) and the ConvGRUs'
    MUL/TANH outputs are quantised over [-1, 1], |h| <= 1's bound, not over calibration's narrower moving average
    (+-0.77 for the state inputs, which clipped the fed-back states). Tensors read by a CONCATENATION share the
    concatenation's (wider) scale and are not checked."""
    artifact = small_artifacts["int8-full"]
    assert artifact.details["state_ranges"].startswith("[-1, 1] on ")
    spans = _state_path_spans(artifact.path)
    assert sorted(collections.Counter(kind for kind, _ in spans).items()) == [
        ("ADD", 4), ("MUL", 8), ("QUANTIZE", 4), ("TANH", 4)]
    for kind, (low, high, step) in spans:
        assert low == pytest.approx(-1, abs=1.5 * step) and high == pytest.approx(1, abs=1.5 * step), kind


def _state_path_spans(path) -> list[tuple[str, tuple[float, float, float]]]:
    """(op, (lowest, highest representable value, step)) of the state path's quantised outputs in a .tflite."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from targets.tflite.integer_only import GRU_SCOPE

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(Path(path).read_bytes()))
    graph = model.subgraphs[0]
    kinds = [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in graph.operators]
    concat_inputs = {i for op, kind in zip(graph.operators, kinds) if kind == "CONCATENATION" for i in op.inputs}
    spans = []
    for op, kind in zip(graph.operators, kinds):
        out = graph.tensors[op.outputs[0]]
        name = out.name.decode() if isinstance(out.name, bytes) else out.name
        state_in = kind == "QUANTIZE" and set(op.inputs) <= set(graph.inputs[1:])
        state_out = kind == "ADD" and re.fullmatch(r"serving_default_r[1-4]o_output", name)
        if not (state_in or state_out or (kind in ("MUL", "TANH") and GRU_SCOPE in name)):
            continue
        if op.outputs[0] in concat_inputs or out.type not in (schema.TensorType.INT8, schema.TensorType.INT16):
            continue
        info = np.iinfo(np.int8 if out.type == schema.TensorType.INT8 else np.int16)
        scale, zero = float(out.quantization.scale[0]), int(out.quantization.zeroPoint[0])
        spans.append((kind, ((info.min - zero) * scale, (info.max - zero) * scale, scale)))
    return spans


def test_split_precision_conv_sums_to_the_original():
    import torch

    from targets.tflite.split_weights import SplitPrecisionConv

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 4, 1)
    conv.weight.data *= 30
    split = SplitPrecisionConv(conv)
    x = torch.randn(1, 16, 9, 7)
    assert torch.allclose(split(x), conv(x), atol=1e-5)
    w = split.hi.weight.detach()
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    assert torch.equal(torch.round(w / scale) * scale, w)  # hi is on its own per-channel int8 grid
    assert float(split.lo.weight.abs().max()) <= float(scale.max()) / 2 + 1e-6


def test_16x8_rewrites_keep_the_network_and_restore_it(golden_model):
    """The 16x8 tracing rewrites change no number PyTorch computes beyond float32 rounding (hardswish as ReLUs,
    BN folded into split-precision conv pairs in the stem and blocks 1-4), and the model is itself again after."""
    import torch

    from targets.tflite.split_weights import SPLIT_MODULES, early_backbone_convs, split_precision
    from targets.traced.rewrites import int16_friendly

    torch.manual_seed(0)
    x = torch.rand(1, 3, 72, 128) * 1.2 - 0.1
    before = {k: v.clone() for k, v in golden_model.state_dict().items()}
    with torch.no_grad():
        reference = golden_model(x, downsample_ratio=1.0)
        with split_precision(golden_model, SPLIT_MODULES + early_backbone_convs(golden_model)), int16_friendly():
            assert isinstance(golden_model.backbone.features[0][1], torch.nn.Identity)
            rewritten = golden_model(x, downsample_ratio=1.0)
        after = golden_model(x, downsample_ratio=1.0)
    for a, b, c in zip(reference, rewritten, after):
        assert float((a - b).abs().max()) < 2e-5 and torch.equal(a, c)
    assert all(torch.equal(before[k], v) for k, v in golden_model.state_dict().items())
    hs = torch.linspace(-50, 50, 100001)
    with int16_friendly():
        relus = torch.nn.functional.hardswish(hs)
    assert float((relus - torch.nn.functional.hardswish(hs)).abs().max()) < 1e-5


def test_int8_details_list_every_layer_not_in_int8_and_why(small_artifacts):
    from targets.tflite.quantize import BOUNDARY, MIXED, WHY_FLOAT, WHY_TAIL

    mixed_float = small_artifacts["int8-mixed"].details["not_int8"]
    assert {e["reason"] for e in mixed_float} <= {BOUNDARY, WHY_FLOAT["project_mat"], WHY_TAIL,
                                                *(r.reason for r in MIXED)}
    assert any(e["reason"] == WHY_FLOAT["project_mat"] and e["op"] == "CONV_2D" for e in mixed_float)
    mixed = small_artifacts["int8-mixed"].details["not_int8"]
    early = [e for e in mixed if e["reason"] == MIXED[0].reason]
    gru = [e for e in mixed if e["reason"] == MIXED[1].reason]
    assert {e["layer"].split(".")[1] for e in early} == {"0", "1", "2", "3", "4"}  # stem + blocks 1-4, no deeper one
    assert all(e["layer"].startswith("backbone.") and e["kept_as"] == "float32" for e in early)
    assert gru and all(re.search(r"\.gru(\.|$)", e["layer"]) and e["kept_as"] == "float32" for e in gru)
    # the stem's conv + blocks 1-4's 13: 2 + 3 + 3 + 5 (block 4's squeeze-excitation has two)
    assert sum(e["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D") for e in early) == 14
    dynamic = small_artifacts["int8-dynamic"].details["not_int8"]
    assert [e["layer"] for e in dynamic] == ["*"] and "per call" in dynamic[0]["reason"]


def test_float_scope_that_matches_nothing_is_an_error(golden_model, small_artifacts):
    from targets.tflite.quantize import quantize

    spec = IOSpec("mobilenetv3", "deep_guided_filter", SMALL, layout=Layout.NHWC)
    fp32, _ = tflite.convert_fp32(golden_model, spec)  # cached by the fixture's export
    with pytest.raises(ExportFailedError, match=r"\['no_such_module'\] match no op"):
        quantize(fp32, "int8", "dynamic", float_scopes=("no_such_module",))


# -- parity on the LiteRT interpreter (XNNPACK) ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [v[0] for v in VARIANTS])
def test_rollout_parity_small(golden_model, small_artifacts, name):
    report = _parity(golden_model, small_artifacts[name], SMALL)
    report.raise_if_failed()
    assert report.frames == FRAMES and set(report.errors) == set(OUTPUT_NAMES)
    # int8-full (integer-only) measured 5.2e-3 here (issue 17): held to the int8 recipe bound, 1e-2
    bound = {"fp32": 1e-4, "fp16": 5e-3, "int8-dynamic": 1e-2, "int8-full": 1e-2, "int8-mixed": 1.5e-2,
             "int8-16x8": 8e-3}[name]  # 16x8 measured 5.9e-3 here (golden at 0.5, 8 frames; its level, decision 62)
    measured = report.max_abs if name in ("fp32", "fp16") else report.pha_mad  # int8: judged by alpha quality
    assert measured <= bound, f"{name}: {measured:.3g} > {bound:g}"


def test_rollout_parity_odd_sizes_nchw_ratio_0375(golden_model, odd_nchw):
    """328x184 at 0.375: low-res 123x69 (odd at every pool), the downsample with PyTorch's weights, NCHW."""
    assert odd_nchw.spec.layout == Layout.NCHW and odd_nchw.details["downsample"].startswith("PyTorch's float32 taps")
    report = _parity(golden_model, odd_nchw, ODD)
    report.raise_if_failed()
    assert report.max_abs <= 1e-5


def test_rollout_parity_ratio1(golden_model, ratio1):
    """241x135 at ratio 1: no downsample and no refiner, like PyTorch's forward."""
    assert ratio1.details["downsample"] == "none (ratio 1)"
    report = _parity(golden_model, ratio1, RATIO1, frames=4)
    report.raise_if_failed()
    assert report.max_abs <= 1e-4


# -- running: bad feeds are refused by name ----------------------------------------------------------------------------
def test_runner_refuses_wrong_shapes_and_devices(small_artifacts):
    artifact = small_artifacts["fp32"]
    runner = tflite.load(artifact, THREADS)
    feeds = {"src": np.zeros((1, 3, 144, 256), np.float32), **artifact.spec.zero_states(SMALL)}
    with pytest.raises(InputError, match=r"src has shape \[1, 3, 144, 256\].*fixed at \[1, 144, 256, 3\].*NHWC"):
        runner.run(feeds)
    with pytest.raises(UsageError, match=r"CPU here"):
        tflite.load(artifact, RuntimeOptions(device="GPU"))
    with pytest.raises(UsageError, match=r"fixed at 256x144@0.5"):
        runner.stream(Bucket(512, 288, 0.5))


def test_load_path_reads_contract_and_matches(small_artifacts):
    artifact = small_artifacts["fp32"]
    by_path = tflite.load_path(artifact.path, THREADS)
    assert by_path.spec.bucket == SMALL and by_path.spec.layout == Layout.NHWC
    frame = MovingScene(256, 144, 1, seed=3).frame(0)
    a = tflite.load(artifact, THREADS).stream(SMALL).step(frame)
    b = by_path.stream(SMALL).step(frame)
    assert all(np.array_equal(a[k], b[k]) for k in OUTPUT_NAMES)
    with pytest.raises(InputError, match="not found"):
        tflite.load_path(artifact.path.with_name("missing.tflite"), THREADS)


def test_failed_export_leaves_no_file(golden_model, tmp_path, monkeypatch):
    import targets.tflite.quantize as quant

    def broken(*args, **kwargs):
        raise ExportFailedError("simulated quantizer failure")

    monkeypatch.setattr(quant, "quantize", broken)
    with pytest.raises(ExportFailedError, match="simulated"):
        tflite.export(golden_model, _request(precision="fp16"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_and_checks_parity(golden_pth, tmp_path):
    """``rvm-export --target tflite`` end to end (reuses this session's conversion: same weights and bucket)."""
    from rvm_export.cli import main

    code = main(["--target", "tflite", "--checkpoint", str(golden_pth), "--resolution", "256x144@0.5",
                 "--layout", "NHWC", "--frames", "3", "--skip-bench", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    manifest = (tmp_path / "manifest.json").read_text()
    assert "rvm_mobilenetv3_256x144_r0.5_nhwc_fp32.tflite" in manifest and '"NHWC"' in manifest
    [entry] = json.loads(manifest)["artifacts"]
    [gpu] = entry["where_it_runs"]
    report = (tmp_path / "report.md").read_text()
    assert "## Where it runs" in report and f"| {entry['path']} | {gpu['check']} |" in report
    if not gpu.get("skipped"):  # with a Vulkan device: placed whole, and the rollout ran on it too
        assert gpu["fully"] and [p["accelerator"] for p in entry["parity"] if "accelerator" in p] == [gpu["check"]]


# -- full resolutions, 100 frames (the bounds) ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("layout", [Layout.NHWC, Layout.NCHW], ids=["NHWC", "NCHW"])
@pytest.mark.parametrize("bucket", [Bucket(1280, 720, 0.375), Bucket(1920, 1080, 0.25)], ids=["720p", "1080p"])
def test_full_resolution_fp32_100_frames(golden_model, tmp_path, bucket, layout):
    (artifact,) = tflite.export(golden_model, _request(bucket, layout=layout), tmp_path)
    report = _parity(golden_model, artifact, bucket, frames=100)
    report.raise_if_failed()
    assert report.max_abs <= 1e-4


@pytest.mark.slow  # not 16x8: LiteRT's 16-bit reference kernels take seconds a frame at 720p (its figures: temporal.py)
@pytest.mark.parametrize("name, precision, options", VARIANTS[1:5], ids=[v[0] for v in VARIANTS[1:5]])
def test_full_resolution_reduced_precision_100_frames(golden_model, tmp_path, name, precision, options):
    bucket = Bucket(1280, 720, 0.375)
    (artifact,) = tflite.export(golden_model, _request(bucket, precision, options=options, frames=32), tmp_path)
    _parity(golden_model, artifact, bucket, frames=100).raise_if_failed()


@pytest.mark.slow
@pytest.mark.skipif(not TRAINED.is_file(), reason=f"no trained checkpoint at {TRAINED} yet")
@pytest.mark.parametrize("mode", ["dynamic", "16x8", pytest.param("full", marks=pytest.mark.xfail(
    reason="full int8 of the smoke-trained model: pha MAD 4.3e-2 > 2e-2 (docs/tflite.md)", strict=False))])
def test_trained_model_int8_alpha_quality(tmp_path, mode):
    from model import load_checkpoint

    model = load_checkpoint(TRAINED)
    bucket = Bucket(512, 288, 1.0)
    (artifact,) = tflite.export(model, _request(bucket, "int8", options={"int8_mode": mode}, frames=32), tmp_path)
    _parity(model, artifact, bucket, frames=30).raise_if_failed()


@pytest.mark.slow
@pytest.mark.skipif(not TRAINED.is_file(), reason=f"no trained checkpoint at {TRAINED} yet")
def test_trained_model_fp32_at_0375_needs_pytorch_weights(tmp_path):
    """A trained model turns the resize's coordinate rounding into 4e-4 on the states (RESIZE_BILINEAR); with
    PyTorch's weights it stays at float rounding."""
    from model import load_checkpoint

    model = load_checkpoint(TRAINED)
    bucket = Bucket(1280, 720, 0.375)
    (artifact,) = tflite.export(model, _request(bucket), tmp_path)
    report = _parity(model, artifact, bucket, frames=30)
    report.raise_if_failed()
    assert report.max_abs <= 2e-5


# -- LiteRT's GPU accelerator on a software Vulkan device (targets/tflite/accelerator.py) ----------------------------
# Chromium's SwiftShader ICD comes with Debian's chromium package (.ci/run and `make browser` install it). Without it
# these tests skip, except under RVM_EXPORT_REQUIRE_BROWSER=1 (CI), where a missing device is a failure.
GPU_FRAMES = 30


@pytest.fixture(scope="module")
def gpu_device():
    from targets.tflite.accelerator import vulkan_device

    device = vulkan_device()
    if isinstance(device, str):
        if os.environ.get("RVM_EXPORT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RVM_EXPORT_REQUIRE_BROWSER=1 but LiteRT's GPU accelerator has no device: {device}")
        pytest.skip(f"no Vulkan device for LiteRT's GPU accelerator: {device}")
    return device


@pytest.fixture(scope="session")
def small_nchw(golden_model, tflite_dir):
    """fp32 and fp16 at 256x144@0.5 NCHW (one conversion)."""
    return {p: tflite.export(golden_model, _request(layout=Layout.NCHW, precision=p), tflite_dir)[0]
            for p in ("fp32", "fp16")}


def _gpu_files(small_artifacts, small_nchw):
    return {"nhwc-fp32": small_artifacts["fp32"], "nhwc-fp16": small_artifacts["fp16"],
            "nchw-fp32": small_nchw["fp32"], "nchw-fp16": small_nchw["fp16"]}


# NCHW gives the same figures as NHWC on the accelerator (measured): those two run with the slow tests
@pytest.mark.parametrize("name", ["nhwc-fp32", "nhwc-fp16", pytest.param("nchw-fp32", marks=pytest.mark.slow),
                                  pytest.param("nchw-fp16", marks=pytest.mark.slow)])
def test_gpu_accelerator_takes_every_op_and_matches_pytorch(golden_model, gpu_device, small_artifacts, small_nchw,
                                                            name):
    """Compiled with the GPU alone (no CPU fallback), then 30 frames against PyTorch within the tflite-gpu bound."""
    artifact = _gpu_files(small_artifacts, small_nchw)[name]
    [placement] = tflite.where_it_runs(artifact, THREADS)
    assert placement.skipped is None and placement.fully, placement.to_dict()
    assert placement.placed == placement.nodes and placement.facts["ops_on_cpu_with_fallback"] == 0
    assert "software" in placement.device and "no phone GPU" in placement.note
    assert not {"RELU_0_TO_1", "RELU_N1_TO_1"} & set(artifact.details["ops"])
    runner = placement.load()
    report = compare_rollout(TorchStream(golden_model, SMALL), runner.stream(SMALL),
                             MovingScene(SMALL.width, SMALL.height, GPU_FRAMES, seed=0), target="tflite",
                             artifact=artifact.name, precision=artifact.precision.value, bucket=SMALL,
                             label=runner.label, tolerance=tolerance_for("tflite-gpu", artifact.precision.value))
    print(f"GPU PARITY {name}: max abs {report.max_abs:.2e}, pha MAD {report.pha_mad:.2e} [{runner.label}]")
    report.raise_if_failed()
    assert report.frames == GPU_FRAMES and "GPU accelerator" in runner.label and "SwiftShader" in runner.label


@pytest.mark.parametrize("bucket,check", [(Bucket(96, 54, 0.5), "parity"), (Bucket(200, 136, 0.375), "parity"),
                                          (SMALL, "parity"), (ODD, "compile"), (Bucket(1920, 1080, 0.25), "compile")],
                         ids=str)
def test_gpu_check_auto_runs_parity_up_to_320x180(bucket, check):
    """Odd low-res sides (48x27, 75x51) get the GPU parity like even ones; only the frame size decides."""
    assert tflite.auto_gpu_check(bucket) == check


@pytest.mark.slow
def test_gpu_accelerator_odd_low_res_sizes(golden_model, gpu_device, odd_nchw):
    """123x69 low-res: odd sides in every decoder pool. Before the pools were written as PAD, MUL,
    AVERAGE_POOL_2D the accelerator was off by 2e-2 here (5e-2 at 96x54) while XNNPACK matched (docs/tflite.md)."""
    parity_there = RuntimeOptions(threads=2, overrides=tflite.TfliteOptions(gpu_check="parity"))  # 328x184 > auto's
    [placement] = tflite.where_it_runs(odd_nchw, parity_there)
    assert placement.fully
    runner = placement.load()
    report = compare_rollout(TorchStream(golden_model, ODD), runner.stream(ODD),
                             MovingScene(ODD.width, ODD.height, GPU_FRAMES, seed=0), target="tflite",
                             artifact=odd_nchw.name, precision="fp32", bucket=ODD, label=runner.label,
                             tolerance=tolerance_for("tflite-gpu", "fp32"))
    print(f"GPU PARITY odd: max abs {report.max_abs:.2e}, pha MAD {report.pha_mad:.2e} [{runner.label}]")
    report.raise_if_failed()
    assert report.frames == GPU_FRAMES
