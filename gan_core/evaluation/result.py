"""What an evaluation measured and the files it writes in eval.out_dir, the same for every task kind's evaluator:
metrics.json (numbers only, so `dvc metrics`/`dvc exp show` can compare them), info.json (the context the numbers
hold in) and samples.png."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_core.atomic import write_json
from gan_core.evaluation.context import evaluation_context

METRICS_FILE = "metrics.json"
INFO_FILE = "info.json"
SAMPLES_FILE = "samples.png"


@dataclass(frozen=True)
class Evaluation:
    """What evaluate() measured and how.

    metrics: name → number, named as in gan_core.config.metrics (fid_lenet, kid_lenet, precision_lenet, recall_lenet,
        class_coverage, class_entropy, class_accuracy for conditional generators, fid_simclr,
        cluster_coverage_simclr, fid_inception, isc_inception, ...): what metrics.json holds, MLflow logs and the
        gate reads.
    info: the context the numbers hold in (data version, sample count, seed, extractors and their weights' digests,
        cache use): what info.json holds.
    """

    metrics: dict[str, float]
    info: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "info": self.info}

    @property
    def context(self) -> dict[str, Any]:
        """The evaluation context the metrics hold in (gan_core.evaluation.context.evaluation_context of the info)."""
        return evaluation_context(self.info)


def checked(metrics: dict[str, float], info: dict[str, Any]) -> Evaluation:
    """The evaluation of these numbers; a non-finite metric stops the pipeline here, not past the gate."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise RuntimeError(f"evaluation produced non-finite metrics {bad}")
    return Evaluation(metrics={k: float(v) for k, v in metrics.items()}, info=info)


def write(out: Path, evaluation: Evaluation) -> None:
    """info.json, then metrics.json (what `dvc metrics` reads), in `out`."""
    write_json(out / INFO_FILE, evaluation.info)
    write_json(out / METRICS_FILE, evaluation.metrics)
