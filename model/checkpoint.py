"""Safe, strict checkpoint loading.

``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``: a pickle that would import or call anything
other than tensors and plain containers is refused. ``.safetensors`` files are read with safetensors. Loading is
strict; a mismatch names every missing, unexpected and mis-shaped key and says which network the file looks like.
Foreign layouts are handled by pure remap functions ``filter_fn(state_dict) -> state_dict`` listed below.
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor

from .errors import CheckpointError, UnsafeCheckpointError
from .matting import VARIANTS, MattingNetwork

__all__ = ["load_checkpoint", "read_state_dict", "describe_state_dict", "load_backbone_weights",
           "unwrap_training_checkpoint", "drop_deep_refiner_keys"]

log = logging.getLogger(__name__)
StateDict = dict[str, Tensor]

# Containers that training scripts commonly wrap a state dict in; ours writes {"model": ...}.
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")


def read_state_dict(path: str | Path) -> StateDict:
    """Read a flat ``{name: tensor}`` dict from ``path`` without executing code; floats come back as float32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        raw = _read_safetensors(path)
    else:
        raw = _read_pickle(path)
    state = unwrap_training_checkpoint(raw, path)
    state = {name: (t.float() if t.is_floating_point() else t) for name, t in state.items()}
    _refuse_non_finite(state, path)
    return state


def _refuse_non_finite(state: Mapping[str, Tensor], path: Path) -> None:
    """Raise CheckpointError naming the tensors that hold NaN or inf: such weights make every output NaN, and a
    parity check against them would blame the exported file for a broken checkpoint."""
    bad = [(name, int((~torch.isfinite(t)).sum()), t.numel()) for name, t in state.items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        listed = ", ".join(f"{name} ({count} of {total})" for name, count, total in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(f"{path} has non-finite weights (NaN or inf) in {len(bad)} tensor(s): {listed}{more}; "
                              "the checkpoint is broken (a diverged training run?)")


def _read_safetensors(path: Path) -> Mapping[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def _read_pickle(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        code = _foreign_globals(path)
        if code:
            raise UnsafeCheckpointError(
                f"{path} refused: it is a pickle that would import or call {', '.join(code[:4])} when loaded, "
                f"not only tensors. Only plain state dicts are accepted; re-save trusted files with "
                f"torch.save(model.state_dict(), ...) or use .safetensors") from exc
        lines = [line for line in str(exc).splitlines() if "Unsupported" in line] or str(exc).splitlines()[:1]
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt, or not a state dict of "
                              f"tensors): {lines[0].strip() if lines else type(exc).__name__}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from exc


# Globals a plain state dict pickle legitimately names (tensor rebuilding, dtypes, ordered dicts).
_SAFE_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "numpy.core.multiarray._reconstruct")


def _foreign_globals(path: Path) -> list[str]:
    """Names the pickle would import (GLOBAL / STACK_GLOBAL) other than tensor machinery; [] if none or unreadable."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return []
                data = archive.read(member)
        else:
            data = path.read_bytes()
        found: list[str] = []
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif opcode.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a parseable pickle: corrupt rather than malicious
        return []
    return sorted({name for name in found if not name.startswith(_SAFE_GLOBAL_PREFIXES)})


def unwrap_training_checkpoint(raw: object, path: Path | str = "<memory>") -> StateDict:
    """Accept a plain state dict, or a dict holding one under ``model``/``state_dict`` (training checkpoints)."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(raw).__name__})")
    if raw and all(isinstance(v, Tensor) for v in raw.values()):
        return dict(raw)
    for key in _WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            return dict(inner)
    raise CheckpointError(f"{path} holds a dict but no tensor state dict (top-level keys: {sorted(raw)[:8]})")


def describe_state_dict(state: Mapping[str, Tensor]) -> str:
    """Best guess at which network a state dict belongs to, e.g. 'mobilenetv3 + deep_guided_filter'."""
    if "backbone.features.0.0.weight" in state:
        variant = "mobilenetv3"
    elif "backbone.conv1.weight" in state:
        variant = "resnet50"
    elif "features.0.0.weight" in state or "conv1.weight" in state:
        return "a bare torchvision backbone (use load_backbone_weights for ImageNet weights)"
    else:
        return "no RVM network (no backbone keys found)"
    refiner = "deep_guided_filter" if "refiner.box_filter.weight" in state else "fast_guided_filter"
    return f"{variant} + {refiner}"


def drop_deep_refiner_keys(state: StateDict) -> StateDict:
    """Remap for a fast-guided-filter network: the released checkpoints carry deep-guided-filter weights,
    which the parameter-free fast guided filter does not use."""
    return {k: v for k, v in state.items() if not k.startswith("refiner.")}


def _mismatch_report(model_state: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> list[str]:
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    misshaped = [f"{k}: file {list(state[k].shape)} vs model {list(model_state[k].shape)}"
                 for k in model_state if k in state and state[k].shape != model_state[k].shape]
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            lines.append(f"{len(items)} {title} key(s):")
            lines += [f"  {item}" for item in items]
    return lines


def load_checkpoint(path: str | Path, variant: str | None = None, refiner: str | None = None,
                    filter_fn: Callable[[StateDict], StateDict] | None = None) -> MattingNetwork:
    """Load an RVM checkpoint into a new :class:`MattingNetwork` in eval mode.

    ``variant``/``refiner`` default to what the file looks like. Asking for ``fast_guided_filter`` with a
    checkpoint that carries deep-guided-filter weights drops those (unused) weights with a log message.
    """
    state = read_state_dict(path)
    looks_like = describe_state_dict(state)
    if variant is None or refiner is None:
        guess = looks_like.split(" + ")
        if len(guess) != 2:
            raise CheckpointError(f"{path}: cannot tell which network this is: it looks like {looks_like}")
        variant = variant or guess[0]
        refiner = refiner or guess[1]
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
    model = MattingNetwork(variant, refiner)  # type: ignore[arg-type]
    if filter_fn is not None:
        state = filter_fn(state)
    elif refiner == "fast_guided_filter" and looks_like == f"{variant} + deep_guided_filter":
        log.info("%s: dropping the deep-guided-filter refiner weights; the fast guided filter has none", path)
        state = drop_deep_refiner_keys(state)
    model_state = model.state_dict()
    problems = _mismatch_report(model_state, state)
    if problems:
        raise CheckpointError("\n".join([
            f"{path} does not fit MattingNetwork(variant={variant!r}, refiner={refiner!r}); "
            f"the file looks like {looks_like}.", *problems]))
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_backbone_weights(model: MattingNetwork, path: str | Path) -> MattingNetwork:
    """Load torchvision-format ImageNet weights (``mobilenet_v3_large`` or ``resnet50``) into ``model.backbone``.

    The classifier (``classifier.*``/``fc.*``) is dropped; every other key must match exactly.
    """
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc."))}
    if all(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items()}
    problems = _mismatch_report(model.backbone.state_dict(), state)
    if problems:
        raise CheckpointError("\n".join([f"{path} does not fit the {model.variant} backbone "
                                         f"(torchvision key names expected).", *problems]))
    model.backbone.load_state_dict(state, strict=True)
    return model
