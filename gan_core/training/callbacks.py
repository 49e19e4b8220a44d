"""The trainer's observability interface: it calls these hooks and imports no tracking library.

Subclass TrainCallback and override what you need (gan_core.tracking.runs.MLflowCallback logs to MLflow).
All hooks run on rank 0 only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from gan_core.training.result import TrainResult


class TrainCallback:
    def on_train_start(self, info: dict[str, Any]) -> None:
        """Once, before the first step: device, parameter counts, dataset meta, resumed-from step."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Every train.log_every steps: losses, D(x), D(G(z)), gradient norms, images/s, diversity."""

    def on_samples(self, step: int, grid_png: Path) -> None:
        """Every train.sample_every steps and at the end: a PNG grid from the fixed latent batch (EMA G)."""

    def on_generator(self, step: int, generator: nn.Module) -> None:
        """Right after on_samples: the EMA generator in eval mode, for an intermediate evaluation (a sweep prunes
        hopeless trials from it). An exception raised here stops the training before that step's checkpoint."""

    def on_train_end(self, result: TrainResult) -> None:
        """Once, after the generator package and metrics JSON are written."""

    def package_metadata(self) -> dict[str, str]:
        """Strings to record in the generator package's metadata (e.g. the tracking run that produced it)."""
        return {}
