"""Evaluate a trained network against the prepared dataset, with the evaluator of its family's task kind: a
generator (gan_core.evaluation.generation: FID/KID/precision/recall per feature extractor, plus class checks from the
domain classifier) or a translator (gan_core.evaluation.translation). The `evaluate` DVC stage.

    python -m gan_core evaluate                                   # {train.out_dir}/generator vs data.prepared_dir
    python -m gan_core evaluate eval.extractors=[lenet,inception] eval.inception_weights=/path/inception.pth
    result = evaluate(cfg)          # or evaluate(cfg, generator=module_or_path); result.metrics, result.info

Writes {eval.out_dir}/metrics.json (numbers only, so `dvc metrics`/`dvc exp show` can compare them),
{eval.out_dir}/info.json (the extractors, data version, sample count, seed and cache use) and
{eval.out_dir}/samples.png (the first 64 evaluation samples). Numbers are comparable
across runs with the same eval.num_samples, eval.seed, eval.batch_size and data: samples come from fixed seeds.
`result.context` (gan_core.evaluation.context) names all that the numbers depend on besides the generator; the gate
compares two versions' numbers only when their contexts are equal.
Real-data features are cached under eval.cache_dir (safetensors, keyed by the data version (gan_core.data.version),
the extractor and a digest of its weights), so a second evaluation on the same data skips the real pass, changed
data or weights never meet a stale entry, and a damaged entry is rebuilt. Nothing there is unpickled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from torch import nn

from gan_core.config import Config
from gan_core.config.catalogue import GENERATION, TRANSLATION, family_info
from gan_core.evaluation.generation import evaluate_generator
from gan_core.evaluation.result import INFO_FILE, METRICS_FILE, SAMPLES_FILE, Evaluation
from gan_core.evaluation.translation import evaluate_translator

Evaluator = Callable[..., Evaluation]  # (cfg, generator, *, data_version_info) -> Evaluation

EVALUATORS: dict[str, Evaluator] = {
    GENERATION: evaluate_generator,
    TRANSLATION: evaluate_translator,
}
"""The evaluator of each task kind (gan_core.config.catalogue.TASKS): a new task kind adds its module and one entry."""


def evaluate(cfg: Config, generator: nn.Module | str | Path | None = None, *,
             data_version_info: Mapping[str, str] | None = None) -> Evaluation:
    """Evaluate `generator` (a module, a package directory / MLflow model URI, or None = {train.out_dir}/generator)
    with the evaluator of cfg.model.arch's task kind, against cfg.data.prepared_dir. Writes the metrics to
    {eval.out_dir}/metrics.json, the info to info.json, and samples.png. `data_version_info`: the prepared data's
    version (gan_core.data.version) when the caller hashed it already."""
    return EVALUATORS[family_info(cfg.model.arch).task](cfg, generator, data_version_info=data_version_info)


__all__ = ["EVALUATORS", "INFO_FILE", "METRICS_FILE", "SAMPLES_FILE", "Evaluation", "evaluate"]
