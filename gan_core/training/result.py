"""What a training produced and how it went: TrainResult, returned by gan_core.training.loop.train and handed to
the callbacks' on_train_end."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    """What a training produced and how it went. `summary()` is what metrics.json holds (numbers only)."""

    steps: int  # the step the weights are at: train.steps, or where max_seconds stopped it
    trained_steps: int  # steps this call ran (0 when a checkpoint was already there)
    resumed_from: int
    wall_time_s: float  # this call's
    train_seconds: float  # training time summed over resumes: what train.max_seconds limits
    stopped_by_time: bool  # train.max_seconds ran out before train.steps
    images_per_s: float
    final: dict[str, float]  # the last logging window: losses, D logits, gradient norms, diversity, EMA decay
    package_dir: str
    metrics_path: str
    samples_dir: str
    last_samples: str | None
    checkpoint: str
    device: str
    world_size: int

    def summary(self) -> dict[str, float | None]:
        """Numbers for metrics.json and MLflow; NaN/inf become None (JSON has neither)."""
        numbers = {"steps": self.steps, "trained_steps": self.trained_steps, "resumed_from": self.resumed_from,
                   "wall_time_s": round(self.wall_time_s, 3), "train_seconds": round(self.train_seconds, 3),
                   "stopped_by_time": int(self.stopped_by_time), "images_per_s": self.images_per_s,
                   **{k: v for k, v in self.final.items() if k != "images_per_s"}}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in numbers.items()}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
