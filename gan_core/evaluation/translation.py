"""Evaluate a translator (translation task: cyclegan) on the held-out images of both domains:
gan_core.evaluation.evaluate calls it for the families of the translation task. It writes metrics.json, info.json
and samples.png as a generator's evaluation does.

Per direction (a2b: A → B, b2a), named as in gan_core.config.metrics:
    fid_lenet_a2b, kid_lenet_a2b, precision_lenet_a2b, recall_lenet_a2b   G_AB(A held-out) against all of B, in the
                                                                          feature space of B's classifier
    content_lenet_a2b    B's classifier gives G_AB(a) the label of a: the check that catches CycleGAN's known failure
                         of translating a 3 into a well-drawn 8 (both domains labelled with the same classes)
    cycle_l1_a           mean |G_BA(G_AB(a)) − a| in [-1, 1] units
    classifier_accuracy_b  B's classifier's held-out accuracy (trust in the _a2b lenet numbers)
and the same in the inception space when eval.extractors holds it (fid_inception_a2b, ...).
"""

from __future__ import annotations

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
from gan_core.config.catalogue import TRANSLATION
from gan_core.data import PreparedDataset, holdout_split, load_domains
from gan_core.data.version import data_version_info as read_data_version
from gan_core.device import pick_device
from gan_core.errors import UserError
from gan_core.evaluation.classifier import require_trusted
from gan_core.evaluation.fidelity import (
    PRC_NEIGHBORHOOD,
    TORCH_FIDELITY_NAME,
    Extractor,
    ImagesDataset,
    fidelity_metrics,
    inception_weights,
    load_extractor,
    real_features,
)
from gan_core.evaluation.result import Evaluation, checked, write
from gan_core.packaging.classifier import stored_classifier
from gan_core.packaging.translator import DIRECTIONS, GRID_TRANSLATIONS, load_translator, translate_images
from gan_core.preflight import ensure_writable_dir


def evaluate_translator(cfg: Config, translator: nn.Module | str | Path | None = None, *,
                        data_version_info: Mapping[str, str] | None = None) -> Evaluation:
    """Evaluate `translator` (the two-direction module, a package directory / MLflow model URI, or None =
    {train.out_dir}/generator) on cfg.data.prepared_dir's held-out images; write metrics.json, info.json and
    samples.png to eval.out_dir."""
    device = pick_device(cfg.eval.device, key="eval.device", auto_mps=False)
    out = ensure_writable_dir(cfg.eval.out_dir, "eval.out_dir")
    cache_dir = ensure_writable_dir(cfg.eval.cache_dir, "eval.cache_dir")
    result, info = translation_metrics(cfg, translator, device, out, cache_dir, data_version_info=data_version_info)
    evaluation = checked(result, info)
    write(out, evaluation)
    return evaluation


def translation_metrics(cfg: Config, translator: nn.Module | str | Path | None, device: torch.device,
                        out: Path, cache_dir: Path, *, data_version_info: Mapping[str, str] | None = None
                        ) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, info) of the translator (the two-direction module, a package directory / MLflow URI, or None =
    {train.out_dir}/generator) on cfg.data.prepared_dir's held-out images; writes {out}/samples.png."""
    ecfg = cfg.eval
    nets = _directions(translator, cfg, device)
    domains = load_domains(cfg.data.prepared_dir)
    held = {k: holdout_split(d, cfg.train.holdout_fraction)[1] for k, d in domains.items()}
    for name, part in held.items():
        if len(part) < PRC_NEIGHBORHOOD + 1:
            raise UserError(f"domain {name.upper()} holds out {len(part)} images (train.holdout_fraction="
                            f"{cfg.train.holdout_fraction}); precision/recall need at least {PRC_NEIGHBORHOOD + 1}: "
                            "raise train.holdout_fraction or prepare more data")
    version = dict(data_version_info or read_data_version(cfg.data.prepared_dir))
    translated = {d: translate_images(nets[d], held[d[0]].images, ecfg.batch_size) for d in DIRECTIONS}
    result: dict[str, float] = {}
    for d in DIRECTIONS:  # cycle reconstruction in float, from the float translation (no uint8 rounding between)
        source = _unit(held[d[0]].images).to(device)
        with torch.no_grad():
            back = nets[_reverse(d)](nets[d](source)).float()
        result[f"{m.CYCLE_L1}_{d[0]}"] = float((back - source).abs().mean())

    info: dict[str, Any] = {
        **version, "task": TRANSLATION,
        "domains": {k: {"source": d.meta.get("source"), "num_real": len(d), "num_held_out": len(held[k])}
                    for k, d in domains.items()},
        "holdout_fraction": cfg.train.holdout_fraction, "seed": ecfg.seed, "batch_size": ecfg.batch_size,
        "translator": str(translator) if isinstance(translator, str | Path) else None, "device": str(device),
        "extractors": {},
    }
    # The extractors of each target domain, loaded before any feature pass (a bad weights file fails in seconds).
    extractors: dict[tuple[str, str], Extractor] = {}
    classifiers: dict[str, Any] = {}
    if "lenet" in ecfg.extractors:
        for k in domains:
            classifier_info = stored_classifier(cfg, k, data_version=version["data_version"])
            require_trusted(classifier_info, ecfg.classifier.min_accuracy, k)
            extractors[("lenet", k)] = load_extractor("lenet", classifier_info["model_dir"], device.type == "cuda")
            classifiers[k] = classifier_info
            result[f"{m.CLASSIFIER_ACCURACY}_{k}"] = float(classifier_info["holdout_accuracy"])
    if "inception" in ecfg.extractors:
        weights = inception_weights(ecfg.inception_weights)
        shared = load_extractor("inception", weights, device.type == "cuda")
        extractors.update({("inception", k): shared for k in domains})

    for (name, target), extractor in extractors.items():
        d = "a2b" if target == "b" else "b2a"
        real = real_features(domains[target], extractor, data_version=f"{version['data_version']}-{target}",
                             cache_dir=cache_dir, batch_size=ecfg.batch_size)
        kid_subset = min(ecfg.kid_subset_size, len(translated[d]), real.count)
        numbers = fidelity_metrics(ImagesDataset(translated[d]), real.features, extractor, batch_size=ecfg.batch_size,
                                   kid_subset_size=kid_subset, seed=ecfg.seed,
                                   real_fid_statistics=real.fid_statistics)
        result.update({f"{k}_{d}": v for k, v in numbers.items()})
        info["extractors"][f"{name}_{target}"] = {
            "torch_fidelity_name": TORCH_FIDELITY_NAME[name], "weights_sha256": extractor.weights_sha256,
            "real_cache_file": real.cache_file.name, "real_pass": "cached" if real.cached else "computed",
            "kid_subset_size": kid_subset,
        }
        if name == "lenet":
            # The classifier's identity beside its weights' digest: part of the evaluation context.
            info["extractors"][f"{name}_{target}"]["training_key"] = classifiers[target].get("training_key")
            content = _content(classifiers[target], extractor, translated[d], held[d[0]], domains[target])
            if content is not None:
                result[f"{m.CONTENT}_lenet_{d}"] = content
    _write_grid(held, translated, out / "samples.png")
    return result, info


def _directions(translator: nn.Module | str | Path | None, cfg: Config, device: torch.device) -> dict[str, nn.Module]:
    if translator is None:
        translator = Path(cfg.train.out_dir) / "generator"
        if not translator.exists():
            raise UserError(f"no trained translator at {str(translator)!r}; run `python -m gan_core train` first "
                            "or pass a package directory / models:/<name>@<alias>")
    if isinstance(translator, nn.Module):
        pair = translator.to(device).eval()
        nets = {d: pair.direction(d) for d in DIRECTIONS}
        for net in nets.values():
            net.image_shape = (pair.channels, pair.resolution, pair.resolution)
        return nets
    return {d: load_translator(translator, d, device) for d in DIRECTIONS}


def _content(classifier_info: dict[str, Any], extractor: Extractor, translated: torch.Tensor,
             source: PreparedDataset, target: PreparedDataset) -> float | None:
    """Share of translations the target domain's classifier labels as their source image was labelled; None when
    the domains are not labelled with the same classes (then content cannot be judged by label)."""
    if source.labels is None or target.classes is None or source.classes != target.classes:
        return None
    predicted = extractor.module.net.predict(translated)
    return float((predicted == source.labels).double().mean())


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)


def _reverse(direction: str) -> str:
    return "b2a" if direction == "a2b" else "a2b"


def _write_grid(held: dict[str, PreparedDataset], translated: dict[str, torch.Tensor], path: Path) -> None:
    """Rows of (a, G_AB(a), b, G_BA(b)) for the first held-out images."""
    n = min(GRID_TRANSLATIONS, *(len(t) for t in translated.values()))
    columns = [held["a"].images[:n], translated["a2b"][:n], held["b"].images[:n], translated["b2a"][:n]]
    images = torch.stack(columns, dim=1).flatten(0, 1)  # (n·4, C, H, W) uint8
    grid = make_grid(images, nrow=len(columns), padding=2)
    with atomic_file(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="png")
