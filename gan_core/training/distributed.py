"""Data parallelism under torchrun: process group (NCCL on GPUs, gloo on CPU), gradient all-reduce, rank info.

    torchrun --standalone --nproc_per_node 2 -m gan_core train

Gradients are averaged explicitly after each backward rather than through the DistributedDataParallel
wrapper: DDP does not support `torch.autograd.grad` (the wgan-gp penalty), and the G step's pass through D
would make a DDP-wrapped D all-reduce gradients that are thrown away. Same result, one code path for all losses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(backend_device: torch.device | None = None) -> DistInfo:
    """Join the process group when torchrun's env (WORLD_SIZE > 1) is set; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    if not dist.is_initialized():
        on_gpu = backend_device.type == "cuda" if backend_device is not None else torch.cuda.is_available()
        backend = "nccl" if on_gpu else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend=backend)
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (start of training; BatchNorm stats each step)."""
    if not info.enabled:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


def broadcast_buffers(module: nn.Module, info: DistInfo) -> None:
    """BatchNorm running statistics from rank 0 (what DDP's broadcast_buffers does), so ranks stay identical."""
    if info.enabled:
        for b in module.buffers():
            dist.broadcast(b.data, src=0)


def average_gradients(module: nn.Module, info: DistInfo) -> None:
    """All-reduce and average the gradients of `module` across ranks, in one flat buffer."""
    if not info.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_tensor(t: torch.Tensor, info: DistInfo) -> None:
    """Rank 0's value of `t`, in place, on every rank (a decision only rank 0 takes, e.g. out of time)."""
    if info.enabled:
        dist.broadcast(t, src=0)


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ranks (logged metrics)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= info.world_size
    return t


def all_reduce_min(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Minimum of a tensor over ranks (the earliest diverged step, so all ranks stop together)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t
