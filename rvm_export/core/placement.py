"""Where an artifact runs: what one accelerator, provider checker or platform rule makes of it, as a typed record.

Each target package's ``where_it_runs(artifact)`` returns a tuple of :class:`Placement` (each target knows its own
accelerators: LiteRT's GPU accelerator for TFLite, ONNX Runtime's mobile usability checker for ONNX, the deployment
target for CoreML). A record that can run the model on that accelerator offers a ``load`` callable; the orchestrator
then checks the rollout parity there, judged by ``tolerance_for(tolerance_key, precision)``. The report renders the
records under "Where it runs"; the manifest stores :meth:`Placement.to_dict`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .runner import Runner

__all__ = ["Placement"]


@dataclass(frozen=True)
class Placement:
    """One finding about one artifact. Counts are op/node counts as the named check counts them (TFLite operators
    of the main subgraph, ONNX nodes after ONNX Runtime's basic optimisation); None where the check has none."""

    check: str  # what was asked, in words: "LiteRT GPU accelerator (CompiledModel, no CPU fallback)"
    device: str  # what answered: "SwiftShader Vulkan (software) via WebGPU", "static op check (no device)"
    fully: bool | None  # True: the whole model is taken; None: not a placement question (e.g. a deployment target)
    nodes: int | None = None  # ops/nodes the check saw
    placed: int | None = None  # of which the accelerator/provider takes
    partitions: int | None = None  # how many pieces the taken nodes form (1 = one contiguous graph)
    refused: tuple[str, ...] = ()  # op types left out, each with the reason the check gave
    facts: Mapping[str, Any] = field(default_factory=dict)  # other findings (deployment target, spec version...)
    note: str = ""  # what this check does not prove, said plainly
    tolerance_key: str | None = None  # parity on this accelerator: tolerance_for(tolerance_key, precision)
    load: Callable[[], Runner] | None = field(default=None, compare=False, repr=False)  # the model on it, or None
    skipped: str | None = None  # why the check could not run here (nothing else is then meaningful)

    def __post_init__(self) -> None:
        if self.placed is not None and self.nodes is not None and not 0 <= self.placed <= self.nodes:
            raise ValueError(f"{self.check}: placed {self.placed} of {self.nodes} nodes")
        if self.load is not None and self.tolerance_key is None:
            raise ValueError(f"{self.check}: a runnable placement needs the tolerance key its parity is judged by")

    @property
    def share(self) -> float | None:
        """Fraction of the nodes taken (0..1), None without counts."""
        return None if self.nodes in (None, 0) or self.placed is None else self.placed / self.nodes

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "device": self.device, "fully": self.fully}
        for key in ("nodes", "placed", "partitions", "skipped", "tolerance_key"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.refused:
            out["refused"] = list(self.refused)
        if self.facts:
            out["facts"] = dict(self.facts)
        if self.note:
            out["note"] = self.note
        return out
