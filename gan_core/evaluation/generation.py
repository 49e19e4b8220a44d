"""Evaluate a generator (generation task) against the prepared dataset: FID/KID/precision/recall per feature
extractor, plus class checks from the domain classifier (class_coverage, class_entropy, class_accuracy for
conditional generators) and, in the label-free simclr space, cluster_coverage_simclr from the domain encoder's
clusters. gan_core.evaluation.evaluate calls it for the families of the generation task.

Samples come from fixed seeds (eval.seed), so numbers are comparable across runs with the same eval.num_samples,
eval.seed, eval.batch_size and data. samples.png holds the first GRID_SAMPLES evaluation samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from gan_core.atomic import atomic_file
from gan_core.config import Config
from gan_core.config import metrics as m
from gan_core.data import PreparedDataset, load_prepared
from gan_core.data.version import data_version_info as read_data_version
from gan_core.device import pick_device
from gan_core.errors import UserError
from gan_core.evaluation.classifier import require_trusted
from gan_core.evaluation.encoder import Encoder, cluster_coverage, stored_encoder
from gan_core.evaluation.fidelity import (
    ISC_SPLITS,
    PRC_NEIGHBORHOOD,
    REAL_SAMPLE,
    TORCH_FIDELITY_NAME,
    Extractor,
    GeneratedImages,
    fidelity_metrics,
    inception_weights,
    load_extractor,
    real_features,
)
from gan_core.evaluation.result import SAMPLES_FILE, Evaluation, checked, write
from gan_core.models.lenet import LeNet
from gan_core.packaging.classifier import stored_classifier
from gan_core.packaging.generator import GRID_SAMPLES, load_generator
from gan_core.preflight import ensure_writable_dir


def evaluate_generator(cfg: Config, generator: nn.Module | str | Path | None = None, *,
                       data_version_info: Mapping[str, str] | None = None) -> Evaluation:
    """Evaluate `generator` (a module, a package directory / MLflow model URI, or None = {train.out_dir}/generator)
    on cfg.eval.num_samples samples against cfg.data.prepared_dir, in every feature space of cfg.eval.extractors.
    Writes the metrics to {eval.out_dir}/metrics.json, the info to info.json, and samples.png."""
    ecfg = cfg.eval
    # Inputs first (the generator named on the command line, then the data), then the output directories, then
    # sampling: a bad input fails before any directory is created, a bad output before any work.
    _check_sample_count(ecfg.num_samples, ecfg.extractors)
    device = pick_device(ecfg.device, key="eval.device", auto_mps=False)
    cuda = device.type == "cuda"
    G = _generator(generator, cfg, device)
    real = load_prepared(cfg.data.prepared_dir)
    _check_real_count(real)
    version = dict(data_version_info or read_data_version(cfg.data.prepared_dir))
    out = ensure_writable_dir(ecfg.out_dir, "eval.out_dir")
    cache_dir = ensure_writable_dir(ecfg.cache_dir, "eval.cache_dir")
    fake = GeneratedImages(G, ecfg.num_samples, seed=ecfg.seed, batch_size=ecfg.batch_size)
    _check_shape(fake.chunk(0), real)

    info: dict[str, Any] = {
        **version,
        "data_source": real.meta.get("source"),
        "num_samples": ecfg.num_samples,
        "num_real": len(real),
        "seed": ecfg.seed,
        "batch_size": ecfg.batch_size,
        "coverage_min_share": ecfg.coverage_min_share,
        "generator": str(generator) if isinstance(generator, str | Path) else None,
        "device": str(device),
        "extractors": {},
    }
    result: dict[str, float] = {}

    # Every extractor is loaded before any feature pass: a bad weights file fails in seconds, not after the
    # lenet pass.
    extractors: dict[str, Extractor] = {}
    extractor_info: dict[str, dict[str, Any]] = {}
    if "inception" in ecfg.extractors:
        weights = inception_weights(ecfg.inception_weights)
        extractors["inception"] = load_extractor("inception", weights, cuda)
        extractor_info["inception"] = {"weights": weights}
    tally: ClassTally | None = None
    if "lenet" in ecfg.extractors:
        # Trained by its own step; evaluation never trains it.
        classifier_info = stored_classifier(cfg, data_version=version["data_version"])
        require_trusted(classifier_info, ecfg.classifier.min_accuracy)
        extractors["lenet"] = load_extractor("lenet", classifier_info["model_dir"], cuda)
        extractor_info["lenet"] = {"holdout_accuracy": classifier_info["holdout_accuracy"],
                                   "training_key": classifier_info.get("training_key"),
                                   "model_dir": classifier_info["model_dir"]}
        result[m.CLASSIFIER_ACCURACY] = float(classifier_info["holdout_accuracy"])
        tally = ClassTally(extractors["lenet"].module.net, fake)
        fake.observers.append(tally)  # class checks ride on the lenet pass: no extra sampling
    clusters: ClusterTally | None = None
    if "simclr" in ecfg.extractors:
        # Trained by its own step, like the classifier.
        encoder_info = stored_encoder(cfg, data_version=version["data_version"])
        extractors["simclr"] = load_extractor("simclr", encoder_info["model_dir"], cuda)
        extractor_info["simclr"] = {"training_key": encoder_info.get("training_key"),
                                    "real_halves_fid": encoder_info.get("real_halves_fid"),
                                    "model_dir": encoder_info["model_dir"]}
        clusters = ClusterTally(extractors["simclr"].module.net, fake)
        fake.observers.append(clusters)

    kid_subset_size = min(ecfg.kid_subset_size, ecfg.num_samples, len(real), REAL_SAMPLE)
    info["kid_subset_size"] = kid_subset_size  # clamped: KID cannot draw subsets larger than either set
    for name in ecfg.extractors:
        extractor = extractors[name]
        real_set = real_features(real, extractor, data_version=version["data_version"], cache_dir=cache_dir,
                                 batch_size=ecfg.batch_size)  # streamed from the shards, cached per data version
        result.update(fidelity_metrics(fake, real_set.features, extractor, batch_size=ecfg.batch_size,
                                       kid_subset_size=kid_subset_size, seed=ecfg.seed,
                                       real_fid_statistics=real_set.fid_statistics))
        info["extractors"][name] = {
            "torch_fidelity_name": TORCH_FIDELITY_NAME[name],
            "feature_layer_fid": extractor.layer("fid"),
            "weights_sha256": extractor.weights_sha256,
            "real_cache_file": real_set.cache_file.name,
            "real_pass": "cached" if real_set.cached else "computed",
            **extractor_info[name],
        }

    if tally is not None:
        result.update(tally.metrics(ecfg.coverage_min_share))
    if clusters is not None:
        result.update(clusters.metrics(ecfg.coverage_min_share))
    evaluation = checked(result, info)
    _write_grid(fake, out / SAMPLES_FILE)
    write(out, evaluation)
    return evaluation


def _check_sample_count(num_samples: int, extractors: list[str]) -> None:
    """Fail before sampling when the metrics cannot be computed from eval.num_samples samples."""
    need = PRC_NEIGHBORHOOD + 1
    why = f"precision/recall compare each sample with its {PRC_NEIGHBORHOOD}-th nearest neighbour"
    if "inception" in extractors and ISC_SPLITS > need:
        need, why = ISC_SPLITS, f"the Inception score averages over {ISC_SPLITS} groups of samples"
    if num_samples < need:
        raise UserError(f"eval.num_samples={num_samples} is too small: {why}; set eval.num_samples>={need} "
                        "(thousands for stable numbers)")


def _check_real_count(real: PreparedDataset) -> None:
    need = PRC_NEIGHBORHOOD + 1
    if len(real) < need:
        raise UserError(f"{real.path} holds {len(real)} images but precision/recall need at least {need} real "
                        "images; prepare more data (data.source, data.max_images)")


# ----------------------------------------------------------------------------- class checks
class ClassTally:
    """Observes GeneratedImages chunks and keeps the classifier's predictions per chunk (idempotent per chunk,
    so a second pass over the samples changes nothing)."""

    def __init__(self, classifier: LeNet, fake: GeneratedImages):
        self.classifier, self.fake = classifier, fake
        self.num_classes = classifier.num_classes
        self.per_chunk: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def __call__(self, k: int, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        if k not in self.per_chunk:
            self.per_chunk[k] = (self.classifier.predict(images), labels)

    def metrics(self, min_share: float) -> dict[str, float]:
        """class_coverage, class_entropy (normalised to [0, 1]) and, for conditional generators, class_accuracy."""
        for k in range(self.fake.num_chunks):  # chunks made before this observer was attached (the shape check)
            self(k, self.fake.chunk(k), self.fake.labels_for(k))  # no-op for chunks already seen
        predicted = torch.cat([self.per_chunk[k][0] for k in range(self.fake.num_chunks)])  # (n,)
        counts = torch.bincount(predicted, minlength=self.num_classes).double()  # (K,)
        share = counts / counts.sum()
        fair = 1.0 / self.num_classes
        nonzero = share[share > 0]
        out = {
            m.CLASS_COVERAGE: float((share >= min_share * fair).double().mean()),
            # + 0.0 turns the -0.0 of a single-class histogram into 0.0
            m.CLASS_ENTROPY: float(-(nonzero * nonzero.log()).sum() / math.log(self.num_classes)) + 0.0,
        }
        if self.fake.num_classes:
            requested = torch.cat([self.per_chunk[k][1] for k in range(self.fake.num_chunks)])  # (n,)
            out[m.CLASS_ACCURACY] = float((predicted == requested).double().mean())
        return out


class ClusterTally:
    """Observes GeneratedImages chunks and keeps the encoder's nearest real-feature cluster per sample (idempotent
    per chunk, like ClassTally): the label-free mode-collapse signal."""

    def __init__(self, encoder: Encoder, fake: GeneratedImages):
        self.encoder, self.fake = encoder, fake
        self.per_chunk: dict[int, torch.Tensor] = {}

    def __call__(self, k: int, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        if k not in self.per_chunk:
            self.per_chunk[k] = self.encoder.nearest_cluster(self.encoder.features(images))

    def metrics(self, min_share: float) -> dict[str, float]:
        """cluster_coverage_simclr: the share of the real features' clusters whose share of the samples is at least
        `min_share` times their share of the real images."""
        for k in range(self.fake.num_chunks):  # chunks made before this observer was attached (the shape check)
            self(k, self.fake.chunk(k), self.fake.labels_for(k))  # no-op for chunks already seen
        assigned = torch.cat([self.per_chunk[k] for k in range(self.fake.num_chunks)])  # (n,)
        coverage = cluster_coverage(assigned, self.encoder.cluster_shares, min_share)
        return {m.metric_name(m.CLUSTER_COVERAGE, "simclr"): coverage}


# ----------------------------------------------------------------------------- helpers
def _generator(generator: nn.Module | str | Path | None, cfg: Config, device: torch.device) -> nn.Module:
    if generator is None:
        generator = Path(cfg.train.out_dir) / "generator"
        if not generator.exists():
            raise UserError(
                f"no trained generator at {str(generator)!r}; run `python -m gan_core train` first "
                "or pass a package directory / models:/<name>@<alias>"
            )
    if isinstance(generator, nn.Module):
        return generator.to(device).eval()
    return load_generator(generator, device)


def _check_shape(first: torch.Tensor, real: PreparedDataset) -> None:
    fake_shape, real_shape = list(first.shape[1:]), list(real.shape)
    if fake_shape != real_shape:
        raise UserError(
            f"the generator makes {fake_shape} images but {real.path} holds {real_shape}; "
            "evaluate against the dataset the generator was trained on (data.prepared_dir)"
        )


def _write_grid(fake: GeneratedImages, path: Path) -> None:
    images = fake.chunk(0)[:GRID_SAMPLES]  # (b, C, H, W) uint8, the evaluation's own first samples
    grid = make_grid(images, nrow=int(math.ceil(math.sqrt(len(images)))), padding=2)  # (3, H', W')
    with atomic_file(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="png")
