"""Process-group set-up for ``torchrun`` launches, and a CPU SyncBatchNorm.

``torchrun --nproc_per_node N -m training.cli ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; the group uses NCCL on CUDA and
gloo on CPU. ``torch.nn.SyncBatchNorm`` refuses CPU tensors, so on CPU every BatchNorm2d becomes
:class:`CPUSyncBatchNorm`: the same parameters and buffers (so the same state-dict keys), with batch statistics
all-reduced over the processes in training mode. Its gradient is that of one BatchNorm over the global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistEnv", "setup", "cleanup", "convert_sync_batchnorm", "all_reduce_mean", "barrier", "CPUSyncBatchNorm"]


@dataclass(frozen=True)
class DistEnv:
    rank: int  # global rank of this process
    world_size: int  # number of processes
    local_rank: int  # rank on this machine (selects the GPU)
    device: torch.device  # where the model and batches live

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistEnv:
    """Read torchrun's environment, pick the device and initialise the process group when there are several."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch.cuda.is_available() is False")
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistEnv(rank, world_size, local_rank, torch_device)


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_mean(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Average scalar values over the processes (each process's value is a mean over its equal-sized batch)."""
    if not env.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return {k: float(v) / env.world_size for k, v in zip(keys, tensor.tolist())}


def convert_sync_batchnorm(module: nn.Module, env: DistEnv) -> nn.Module:
    if not env.distributed:
        return module
    if env.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module, dist.new_group(backend="gloo"))


def _convert_cpu(module: nn.Module, group) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
        converted = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats, group=group)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child, group))
    return module


class _SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, group):
        channels = x.size(1)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, channels] + [1] * (x.dim() - 2)
        stats = torch.cat([x.sum(dims), x.new_tensor([x.numel() // channels])]).double()
        dist.all_reduce(stats, group=group)
        count = stats[-1]
        mean = (stats[:channels] / count).to(x.dtype)
        centred = x - mean.view(shape)
        square = centred.square().sum(dims).double()
        dist.all_reduce(square, group=group)
        var = (square / count).to(x.dtype)
        invstd = torch.rsqrt(var + eps)
        normalised = centred * invstd.view(shape)
        ctx.save_for_backward(normalised, weight, invstd)
        ctx.count, ctx.group, ctx.dims, ctx.shape = count, group, dims, shape
        ctx.mark_non_differentiable(mean, var)
        return normalised * weight.view(shape) + bias.view(shape), mean, var, count.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor, *_):
        normalised, weight, invstd = ctx.saved_tensors
        channels = normalised.size(1)
        sum_dy = grad_out.sum(ctx.dims)
        sum_dy_xhat = (grad_out * normalised).sum(ctx.dims)
        reduced = torch.cat([sum_dy, sum_dy_xhat]).double()
        dist.all_reduce(reduced, group=ctx.group)
        mean_dy = (reduced[:channels] / ctx.count).to(grad_out.dtype).view(ctx.shape)
        mean_dy_xhat = (reduced[channels:] / ctx.count).to(grad_out.dtype).view(ctx.shape)
        grad_in = (grad_out - mean_dy - normalised * mean_dy_xhat) * (invstd * weight).view(ctx.shape)
        # Parameter gradients stay local sums: DDP averages them over the processes like every other gradient.
        return grad_in, sum_dy_xhat, sum_dy, None, None


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics cover the whole process group (gloo, CPU)."""

    def __init__(self, *args, group=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size(self.group) > 1):
            return super().forward(x)
        if not self.affine:
            raise NotImplementedError("CPUSyncBatchNorm needs affine=True (every BatchNorm in RVM is affine)")
        y, mean, var, count = _SyncBatchNormFunction.apply(x, self.weight, self.bias, self.eps, self.group)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        return y
