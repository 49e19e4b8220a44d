"""Metric names, which way each is better and in which feature space it lives (METRICS). Names carry the feature
extractor: FID values from different feature spaces are not comparable, so thresholds are set per name
(fid_lenet, fid_simclr, fid_inception, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gan_core.errors import UserError

EXTRACTORS = ("lenet", "inception", "simclr")
"""The feature spaces: lenet (the domain classifier, needs labels), inception (ImageNet's InceptionV3, needs its
weights file) and simclr (the label-free domain encoder, gan_core.evaluation.encoder)."""
LABEL_FREE_EXTRACTOR = "simclr"
"""The offline space of unlabelled data: what eval.extractors and the default gate turn to without labels."""
TRANSLATION_EXTRACTORS = ("lenet", "inception")
"""The spaces a translation evaluation measures in (one classifier per domain; no encoder per domain yet)."""

# Per-extractor metrics: f"{base}_{extractor}".
FID = "fid"
KID = "kid"
PRECISION = "precision"
RECALL = "recall"
# Inception score exists only for the inception extractor: "isc_inception".
ISC = "isc"
# The label-free mode-collapse signal, only in the simclr space: "cluster_coverage_simclr" = the share of the real
# features' k-means clusters that the samples reach (gan_core.evaluation.encoder).
CLUSTER_COVERAGE = "cluster_coverage"

# Classifier-based checks (the domain classifier).
CLASS_COVERAGE = "class_coverage"  # fraction of classes present among generated samples
CLASS_ENTROPY = "class_entropy"  # normalised entropy of the generated class histogram, 1 = uniform
CLASS_ACCURACY = "class_accuracy"  # conditional generators: accuracy on the requested class
CLASSIFIER_ACCURACY = "classifier_accuracy"  # the domain classifier's held-out accuracy (trust in the _lenet numbers)

# Translation (cyclegan): per direction, "a2b" (domain A → B) and "b2a". FID/KID of the translations against the
# target domain ("fid_lenet_a2b"), content preservation (the target domain's classifier, on G_AB(a), agrees with
# a's label: "content_lenet_a2b") and cycle reconstruction ("cycle_l1_a" = mean |G_BA(G_AB(a)) − a| in [-1, 1]).
DIRECTIONS = ("a2b", "b2a")
CONTENT = "content"
CYCLE_L1 = "cycle_l1"

# Spread over KID subsets / IS splits: "kid_lenet_std", "isc_inception_std".
STD_SUFFIX = "_std"


def metric_name(base: str, extractor: str) -> str:
    return f"{base}_{extractor}"


@dataclass(frozen=True)
class MetricSpec:
    better: Literal["lower", "higher"]
    space: str | None  # the feature extractor it is computed in; None for facts about the run itself
    description: str


def _per_extractor(extractor: str) -> dict[str, MetricSpec]:
    specs = {
        metric_name(FID, extractor): MetricSpec("lower", extractor, f"Fréchet distance of {extractor} features"),
        metric_name(KID, extractor): MetricSpec("lower", extractor, f"kernel distance of {extractor} features"),
        metric_name(KID, extractor) + STD_SUFFIX: MetricSpec("lower", extractor, "spread of KID over its subsets"),
        metric_name(PRECISION, extractor): MetricSpec("higher", extractor, "share of samples inside the real manifold"),
        metric_name(RECALL, extractor): MetricSpec("higher", extractor, "share of real images the samples cover"),
    }
    if extractor == "inception":
        specs[metric_name(ISC, extractor)] = MetricSpec("higher", extractor, "Inception score")
        specs[metric_name(ISC, extractor) + STD_SUFFIX] = MetricSpec("lower", extractor, "spread of IS over splits")
    if extractor == LABEL_FREE_EXTRACTOR:
        specs[metric_name(CLUSTER_COVERAGE, extractor)] = MetricSpec(
            "higher", extractor, "share of the real features' k-means clusters the samples reach (mode collapse, "
                                 "no labels needed)")
    return specs


# The only place that says which metrics exist and which way is better: the gate, the monitor and the reports read
# it, and config validation refuses a threshold on a name that is not here. The class checks use the domain
# classifier, which is the lenet extractor.
METRICS: dict[str, MetricSpec] = {
    **{name: spec for extractor in EXTRACTORS for name, spec in _per_extractor(extractor).items()},
    CLASS_COVERAGE: MetricSpec("higher", "lenet", "share of classes present among the samples (mode collapse)"),
    CLASS_ENTROPY: MetricSpec("higher", "lenet", "normalised entropy of the samples' class histogram, 1 = uniform"),
    CLASS_ACCURACY: MetricSpec("higher", "lenet", "conditional generators: samples classified as the label asked"),
    CLASSIFIER_ACCURACY: MetricSpec("higher", "lenet", "the domain classifier's held-out accuracy"),
}


def _translation() -> dict[str, MetricSpec]:
    specs: dict[str, MetricSpec] = {}
    for direction in DIRECTIONS:
        source, target = direction[0].upper(), direction[2].upper()
        for extractor in TRANSLATION_EXTRACTORS:
            for name, base in _per_extractor(extractor).items():
                what = f"{base.description}: {source}→{target} translations vs {target}"
                specs[f"{name}_{direction}"] = MetricSpec(base.better, extractor, what)
        specs[f"{CONTENT}_lenet_{direction}"] = MetricSpec(
            "higher", "lenet", f"content preservation: {target}'s classifier gives G({source.lower()}) the label of "
                               f"{source.lower()}")
        specs[f"{CLASSIFIER_ACCURACY}_{direction[2]}"] = MetricSpec(
            "higher", "lenet", f"domain {target}'s classifier: held-out accuracy")
        specs[f"{CYCLE_L1}_{direction[0]}"] = MetricSpec(
            "lower", None, f"cycle reconstruction: mean |{source}→{target}→{source} − {source.lower()}| in [-1, 1]")
    return specs


METRICS.update(_translation())

TRANSLATION_METRICS = frozenset(_translation())


def is_translation_metric(name: str) -> bool:
    """Computed by a translation (cyclegan) evaluation rather than a generation one."""
    return name in TRANSLATION_METRICS


def spec(name: str) -> MetricSpec:
    """The declared spec of a metric; an unknown name is a UserError naming the known ones (never a guess)."""
    try:
        return METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None


def better(name: str) -> Literal["lower", "higher"]:
    """Which way a metric improves: FID, KID and spreads fall as quality rises; the rest rise."""
    return spec(name).better
