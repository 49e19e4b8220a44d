"""Metric names and which way is better. Names carry the feature extractor: FID values from different
feature spaces are not comparable, so thresholds are set per name (fid_lenet, fid_inception, ...)."""

from __future__ import annotations

from typing import Literal

EXTRACTORS = ("lenet", "inception")

# Per-extractor metrics: f"{base}_{extractor}".
FID = "fid"
KID = "kid"
PRECISION = "precision"
RECALL = "recall"
# Inception score exists only for the inception extractor: "isc_inception".
ISC = "isc"

# Classifier-based checks (the domain classifier).
CLASS_COVERAGE = "class_coverage"  # fraction of classes present among generated samples
CLASS_ENTROPY = "class_entropy"  # normalised entropy of the generated class histogram, 1 = uniform
CLASS_ACCURACY = "class_accuracy"  # conditional generators: accuracy on the requested class
CLASSIFIER_ACCURACY = "classifier_accuracy"  # the domain classifier's held-out accuracy (trust in the _lenet numbers)

# Spread over KID subsets / IS splits: "kid_lenet_std", "isc_inception_std".
STD_SUFFIX = "_std"
# Non-numeric facts returned beside an evaluation's metrics (extractors, data version, sample count); on disk they
# go to info.json, so metrics.json holds numbers only.
INFO_KEY = "info"

_LOWER_IS_BETTER = (FID, KID)


def metric_name(base: str, extractor: str) -> str:
    return f"{base}_{extractor}"


def metric_values(result: dict) -> dict[str, float]:
    """The numeric metrics of an evaluation result (what MLflow logs and the gate reads), without its info block."""
    return {k: float(v) for k, v in result.items() if k != INFO_KEY and isinstance(v, int | float)}


def better(name: str) -> Literal["lower", "higher"]:
    """Direction of a metric: FID and KID fall as quality rises; everything else here rises."""
    return "lower" if name.split("_", 1)[0] in _LOWER_IS_BETTER else "higher"
