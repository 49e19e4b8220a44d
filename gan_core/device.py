"""Where and how the networks run: device (CUDA > MPS > CPU), bf16 autocast, channels_last, torch.compile.

    runtime = choose_runtime(cfg.train, local_rank=0)
    with runtime.autocast():
        fake = G(z)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from gan_core.errors import UserError


class RuntimeSettings(Protocol):
    """The train.* settings choose_runtime reads (gan_core.config.TrainConfig has them). A protocol, so this shared
    module imports nothing of the config."""

    device: str
    precision: str
    channels_last: bool
    compile: bool


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool
    """Autocast matmuls/convs to bfloat16 (CUDA): no grad scaler needed, unlike fp16."""
    channels_last: bool
    """NHWC memory layout: tensor cores want it; applied on CUDA only, where it pays."""
    compile: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move a network to the device in the chosen memory layout."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def compiled(self, module: nn.Module) -> nn.Module:
        """torch.compile'd view of the module (shares its parameters), or the module itself."""
        return torch.compile(module) if self.compile else module

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A batch (B, C, H, W) in the chosen memory layout."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def describe(self) -> str:
        flags = [n for n, on in (("bf16", self.bf16), ("channels_last", self.channels_last),
                                 ("compile", self.compile)) if on]
        return f"{self.device}" + (f" ({', '.join(flags)})" if flags else "")


def pick_device(name: str, local_rank: int = 0, key: str = "train.device", auto_mps: bool = True) -> torch.device:
    """The one place a device name becomes a device, for training, evaluation, the classifier and serving.

    `auto` → CUDA (this rank's GPU) > MPS > CPU; `auto_mps=False` (evaluation, the classifier, serving) skips MPS,
    whose numbers differ from CPU/CUDA ones. An explicit name must be available here (UserError naming `key`, the
    name and the devices this machine has)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if auto_mps and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    here = f"available here: {', '.join(available_devices())}"
    kind, colon, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and (kind != "cuda" or not index.isdigit())):
        raise UserError(f"{key}={name!r}: unknown device; expected auto, cpu, cuda, cuda:N or mps ({here})")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}={name!r} but no CUDA device is available ({here}); use {key}=auto or cpu")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise UserError(f"{key}={name!r} but there are {torch.cuda.device_count()} CUDA devices ({here}); "
                        f"use {key}=cuda")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{key}='mps' but MPS is not available ({here}); use {key}=auto or cpu")
    if name == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def available_devices() -> list[str]:
    """The device names this machine can run on: cpu, then cuda:0..N-1, then mps."""
    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    return names + (["mps"] if torch.backends.mps.is_available() else [])


def choose_runtime(cfg: RuntimeSettings, local_rank: int = 0) -> Runtime:
    """The runtime for this config: GPU speed-ups switch on only where they help (CUDA)."""
    device = pick_device(cfg.device, local_rank)
    cuda = device.type == "cuda"
    if cfg.precision == "bf16" and not cuda:
        raise UserError(f"train.precision=bf16 needs CUDA, but training runs on {device}; use precision=auto or fp32")
    bf16 = cuda and cfg.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    return Runtime(device=device, bf16=bf16, channels_last=cuda and cfg.channels_last, compile=cuda and cfg.compile)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration (CPU runs: a killed-and-resumed run must match bit for bit)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled or before, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seeded RNG and, on CUDA, deterministic kernels for the duration; the caller's settings are restored (the
    trainings evaluation runs for itself: the domain classifier, the domain encoder).

    CPU kernels already give the same result run to run; forcing deterministic algorithms there only made the
    classifier's training 2x slower (measured), so the switch is CUDA-only, where atomics in backward passes vary.
    """
    cuda_devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices), deterministic(device.type == "cuda"):
        torch.manual_seed(seed)
        yield
