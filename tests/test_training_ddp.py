"""Two-process DDP on CPU (gloo, CPUSyncBatchNorm) against one process with the same global batch.

Both runs see the same samples (positions split the global batch across ranks), the same crops (seeded by step)
and BatchNorm statistics over the same global batch (SyncBatchNorm); DDP averages the per-process gradients, which
is the gradient of the global-batch mean loss. What differs is float summation order (all-reduce, per-rank sums),
about 1e-8 relative on the first loss. Adam amplifies such differences on parameters whose gradients are near 0
(its update is about lr * sign(g) there), so later steps drift slowly: measured 2.6e-6 relative at step 2 and
1.2e-4 at step 3. Hence: step-1 loss within 1e-6 relative, steps 2-3 within 1e-3 relative.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from training.config import TrainConfig
from training.distributed import CPUSyncBatchNorm
from training.metrics_log import read_records
from training.train import train

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("training_single_thread")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, config: dict, data: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(TrainConfig.from_dict(config), data, out, device="cpu", progress=False)


def _train_losses(out) -> dict[int, float]:
    return {r["step"]: r["matting_total"] for r in read_records(out / "metrics.jsonl") if r["split"] == "train"}


def test_two_process_ddp_matches_one_process(tmp_path, training_synthetic_root, training_tiny_config):
    cfg = training_tiny_config.replace(max_steps=3, eval_every=3, checkpoint_every=3)
    train(cfg.replace(batch_size=2), training_synthetic_root, tmp_path / "single", progress=False)
    mp.spawn(_worker, args=(2, _free_port(), cfg.replace(batch_size=1).to_dict(), str(training_synthetic_root),
                            str(tmp_path / "ddp")), nprocs=2, join=True)
    single, ddp = _train_losses(tmp_path / "single"), _train_losses(tmp_path / "ddp")
    assert sorted(ddp) == [1, 2, 3]
    assert ddp[1] == pytest.approx(single[1], rel=1e-6)
    for step in (2, 3):
        assert ddp[step] == pytest.approx(single[step], rel=1e-3)
    state = torch.load(tmp_path / "ddp" / "checkpoint_last.pth", weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 3
    reference = torch.load(tmp_path / "single" / "checkpoint_last.pth", weights_only=True)
    assert state["model"].keys() == reference["model"].keys()  # SyncBatchNorm keeps the state-dict names


def _sync_bn_worker(rank: int, port: int, inputs: torch.Tensor, out: str) -> None:
    """One CPUSyncBatchNorm over half the batch per process: outputs and input gradients vs a plain BatchNorm."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        bn = CPUSyncBatchNorm(3, group=torch.distributed.new_group(backend="gloo"))
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        x = inputs[rank * 2:(rank + 1) * 2].clone().requires_grad_(True)
        y = bn(x)
        (y * torch.arange(y.numel()).view_as(y).float()).sum().backward()
        torch.save({"y": y.detach(), "grad": x.grad, "running_var": bn.running_var,
                    "weight_grad": bn.weight.grad}, f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_cpu_sync_batchnorm_equals_batchnorm_over_the_global_batch(tmp_path):
    torch.manual_seed(0)
    inputs = torch.randn(4, 3, 5, 5) * 2 + 1
    mp.spawn(_sync_bn_worker, args=(_free_port(), inputs, str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = inputs.clone().requires_grad_(True)
    y = bn(x)
    weights = torch.cat([torch.arange(2 * 3 * 5 * 5).view(2, 3, 5, 5)] * 2).float()  # each rank's own weighting
    (y * weights).sum().backward()
    assert torch.allclose(torch.cat([p["y"] for p in parts]), y, atol=1e-5)
    assert torch.allclose(torch.cat([p["grad"] for p in parts]), x.grad, atol=1e-4)
    assert torch.allclose(parts[0]["running_var"], bn.running_var, atol=1e-6)
    # Parameter gradients stay per-process sums (DDP averages them; the sum of both is the global gradient).
    assert torch.allclose(parts[0]["weight_grad"] + parts[1]["weight_grad"], bn.weight.grad, atol=1e-3)
