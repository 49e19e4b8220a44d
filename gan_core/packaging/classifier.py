"""The domain classifier's package: weights.safetensors + classifier.json in {eval.classifier.out_dir}/model (a
translation dataset's domains under model/a and model/b), loaded without unpickling anything.

    info = stored_classifier(cfg, "b")          # classifier.json of the stored classifier of this data and settings
    net = load_classifier(info["model_dir"])    # an eval-mode LeNet (gan_core.models.lenet), net.info = the JSON
    training_key(settings, data_version)        # what makes two trainings of it the same: its identity
    stored_judge(cfg, "b")                      # the judge of domain B: the same, trained for training losses

gan_core.evaluation.classifier trains them (the `classifier` step). Evaluation reads the classifier as its lenet
extractor and class judge. A training loss that needs a classifier (cyclegan's semantic-consistency term) reads a
*judge* instead: a second classifier per domain under {eval.classifier.out_dir}/judge/<domain>, with the same
settings but its own seed (eval.classifier.seed + JUDGE_SEED_OFFSET), so that no generator is trained against the
very network that then scores its content_lenet_* (a generator can learn a classifier's quirks; measured: the
judge itself scores its own generator's translations ~3 points higher than an independent classifier does).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gan_core.config import Config
from gan_core.data.version import data_version
from gan_core.errors import UserError
from gan_core.models.lenet import LeNet
from gan_core.packaging.network import WEIGHTS_FILE as WEIGHTS_FILE  # tests and readers name it here
from gan_core.packaging.network import NetworkFiles

FORMAT = "ganops-classifier/1"
MODEL_DIR = "model"
JUDGE_DIR = "judge"
JUDGE_SEED_OFFSET = 1
"""A judge is trained with eval.classifier.seed + this: another initialisation and order than evaluation's."""
SPEC_FILE = "classifier.json"
TRAINING_FIELDS = ("epochs", "batch_size", "lr", "holdout_fraction", "seed", "resolution")
"""eval.classifier settings that change the trained weights; min_accuracy and out_dir do not, so they are not in
its training key."""
CLASSIFIER = NetworkFiles("classifier", SPEC_FILE, FORMAT, LeNet)
"""Its model directory: saved whole, loaded without unpickling, reused when whole (gan_core.packaging.network)."""


def training_key(settings: Mapping[str, Any], domain_version: str) -> str:
    """What makes two trainings identical (training is deterministic): the data version of its domain (an md5 of
    the files) and the settings that shape the weights (`settings`: eval.classifier as JSON values)."""
    chosen = {k: settings[k] for k in TRAINING_FIELDS}
    blob = json.dumps({"data": domain_version, "settings": chosen, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def domain_version(version: str, domain: str = "") -> str:
    """The data version a domain's classifier is trained on: the prepared data's, with ":a" / ":b" for a domain."""
    return f"{version}:{domain}" if domain else version


def model_dir(cfg: Config, domain: str = "") -> Path:
    """Where the classifier lives; a translation dataset's domain "a" or "b" gets its own subdirectory."""
    return Path(cfg.eval.classifier.out_dir) / MODEL_DIR / domain


def judge_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A judge's training settings: eval.classifier's (JSON values) with its own seed."""
    return {**settings, "seed": settings["seed"] + JUDGE_SEED_OFFSET}


def judge_dir(cfg: Config, domain: str) -> Path:
    """Where the judge of `domain` ("a", "b") lives."""
    return Path(cfg.eval.classifier.out_dir) / JUDGE_DIR / domain


def stored_classifier(cfg: Config, domain: str = "", *, data_version: str | None = None) -> dict[str, Any]:
    """The stored domain classifier's info (as train_classifier returns it) when it was trained on this data with
    these settings; else a UserError naming the directory and the command that trains it. Evaluation reads the
    classifier through here and never trains one: that is the classifier's own step (DVC stage, flow task).
    `data_version`: the prepared data's version (gan_core.data.version) when the caller hashed it already."""
    return _stored(model_dir(cfg, domain), cfg.eval.classifier.model_dump(mode="json"), cfg, domain,
                   "domain classifier", data_version)


def stored_judge(cfg: Config, domain: str, *, data_version: str | None = None) -> dict[str, Any]:
    """The stored judge of `domain`, as stored_classifier gives the classifier (training reads it through here)."""
    return _stored(judge_dir(cfg, domain), judge_settings(cfg.eval.classifier.model_dump(mode="json")), cfg, domain,
                   f"judge of domain {domain.upper()}", data_version)


def _stored(out: Path, settings: Mapping[str, Any], cfg: Config, domain: str, what: str,
            version: str | None) -> dict[str, Any]:
    key = training_key(settings, domain_version(version or data_version(cfg.data.prepared_dir), domain))
    existing = reusable_spec(out, key)
    if existing is None:
        raise UserError(f"no {what} for this data and eval.classifier settings in {str(out)!r}; train it first: "
                        "`python -m gan_core classifier` (the DVC stage `classifier`)")
    return {**existing, "model_dir": str(out), "trained": False}


def require_shared_classes(domains: Mapping[str, Mapping[str, Any]], reason: str) -> None:
    """Judges label each domain's images with the other domain's classes, so both domains must be labelled, with
    the same class names. `domains`: a translation dataset's meta.json "domains"; `reason`: the setting that reads
    the judges ("train.semantic_weight=1.0"), named in the one-line UserError."""
    keys = {"a": "data.source", "b": "data.target"}
    for domain, key in keys.items():
        meta = domains.get(domain, {})
        if not meta.get("classes"):
            raise UserError(f"{reason} needs class labels in both domains, but domain {domain.upper()} "
                            f"({key}={meta.get('source')!r}) has none; use a labelled source (mnist5k, digits, a "
                            f"folder of class subfolders) or set {reason.split('=')[0]}=0")
    a, b = domains["a"]["classes"], domains["b"]["classes"]
    if a != b:
        raise UserError(f"{reason} needs the same classes in both domains, but domain A has {a[:5]} and B has "
                        f"{b[:5]}; set {reason.split('=')[0]}=0")


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> LeNet:
    """An eval-mode LeNet from a model directory written by train_classifier; `.info` holds classifier.json.

    Nothing is unpickled (JSON + safetensors); a missing or damaged file is a UserError naming it."""
    return CLASSIFIER.load(path, device)  # type: ignore[return-value]


def reusable_spec(out: Path, key: str) -> dict[str, Any] | None:
    """The stored model's classifier.json when it was trained with `key`, loads whole and records its held-out
    accuracy; else None (retrain)."""
    return CLASSIFIER.reusable_spec(out, key, check=_holdout_recorded, stacklevel=3)


def save_classifier(net: LeNet, spec: dict[str, Any], out: Path) -> None:
    """Build the model directory beside `out`, then swap it in (never half-written)."""
    CLASSIFIER.save(net, spec, out)


def _holdout_recorded(spec: dict[str, Any]) -> None:
    float(spec["holdout_accuracy"]), int(spec["holdout_count"])
