"""Training the domain classifier: a small LeNet (gan_core.models.lenet) trained on the prepared labelled dataset.

    python -m gan_core classifier                      # trains, or reuses {eval.classifier.out_dir}/model
    info = train_classifier(cfg)                        # {"holdout_accuracy": 0.98, "trained": True, ...}
    net = load_classifier("outputs/classifier/model")   # gan_core.packaging.classifier: eval-mode LeNet

It is the offline feature extractor behind fid_lenet/kid_lenet/precision_lenet/recall_lenet (its penultimate
layer, registered with torch-fidelity in gan_core.evaluation.fidelity) and the judge of the class checks (its logits).
Training is deterministic (seeded init, seeded shuffles, deterministic algorithms) and cached: a model whose
classifier.json records the same data version (gan_core.data.version) and classifier settings is reused, not retrained.
Its held-out accuracy must reach eval.classifier.min_accuracy before evaluation trusts its numbers.
A translation dataset (data.target set) gets one classifier per domain, under model/a and model/b: each judges
translations *into* its domain (their FID features, and whether they kept their source image's class), and, frozen,
cyclegan's semantic-consistency term judges translations *out of* its domain with it (train.semantic_weight).
Its package (safetensors + JSON, nothing unpickled) is gan_core.packaging.classifier's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gan_core.atomic import write_json
from gan_core.config import ClassifierConfig, Config
from gan_core.data import PreparedDataset, load_domains, load_prepared, read_meta
from gan_core.data.version import data_version as read_data_version
from gan_core.device import pick_device, seeded
from gan_core.errors import UserError
from gan_core.models.lenet import LeNet
from gan_core.packaging.classifier import (
    FORMAT,
    JUDGE_SEED_OFFSET,
    TRAINING_FIELDS,
    domain_version,
    judge_dir,
    model_dir,
    require_shared_classes,
    reusable_spec,
    save_classifier,
    training_key,
)
from gan_core.preflight import ensure_writable_dir
from gan_core.training.identity import judged_by

METRICS_FILE = "metrics.json"


def _domains(cfg: Config) -> dict[str, PreparedDataset]:
    """The labelled image sets to train on: {"": the dataset}, or a translation dataset's {"a": ..., "b": ...}."""
    if cfg.data.target is not None:
        return load_domains(cfg.data.prepared_dir)
    return {"": load_prepared(cfg.data.prepared_dir)}


def train_classifier(cfg: Config, *, data_version: str | None = None) -> dict[str, Any]:
    """Train the domain classifier on cfg.data.prepared_dir, or reuse the stored one trained on the same data and
    settings. Writes {out_dir}/model/ (weights.safetensors + classifier.json) and {out_dir}/metrics.json; when a
    training reads judges (cyclegan's train.semantic_weight > 0), also each domain's judge under {out_dir}/judge/.
    `data_version`: the prepared data's version (gan_core.data.version) when the caller hashed it already.

    Returns the model info: holdout_accuracy, data content hash, training key, model_dir, trained (False = reused).
    For a translation dataset: {"holdout_accuracy": the lower of the two, "domains": {"a": info, "b": info}}, and
    "judges": {"a": info, "b": info} when judges were asked for.
    """
    ccfg = cfg.eval.classifier
    reason = judged_by(cfg.model_dump(mode="json"))
    if reason is not None:  # before any training: the data may not allow judges at all
        require_shared_classes(read_meta(cfg.data.prepared_dir).get("domains", {}), reason)
    domains = _domains(cfg)
    version = data_version or read_data_version(cfg.data.prepared_dir)
    infos = {domain: _train_one(cfg, ccfg, model_dir(cfg, domain), domain, prepared, version)
             for domain, prepared in domains.items()}
    if "" in infos:
        metrics = _metrics(infos[""])
        result = infos[""]
    else:
        metrics = {f"{k}_{domain}": v for domain, info in infos.items() for k, v in _metrics(info).items()}
        result = {"holdout_accuracy": min(info["holdout_accuracy"] for info in infos.values()), "domains": infos}
    if reason is not None:
        judge = ccfg.model_copy(update={"seed": ccfg.seed + JUDGE_SEED_OFFSET})
        judges = {domain: _train_one(cfg, judge, judge_dir(cfg, domain), domain, prepared, version)
                  for domain, prepared in domains.items()}
        metrics.update({f"judge_{k}_{domain}": v for domain, info in judges.items() for k, v in _metrics(info).items()})
        result["judges"] = judges
    metrics_path = Path(ccfg.out_dir) / METRICS_FILE
    if _read_json_or_none(metrics_path) != metrics:
        write_json(metrics_path, metrics)  # untouched otherwise: the DVC stage's output stays as is
    return result


def _train_one(cfg: Config, ccfg: ClassifierConfig, out: Path, domain: str, prepared: PreparedDataset,
               data_version: str) -> dict[str, Any]:
    """Train one classifier of `domain` with the settings `ccfg` into `out`, or reuse the one stored there.
    `data_version`: the prepared data's."""
    if prepared.labels is None:
        where = f"domain {domain.upper()} of " if domain else ""
        raise UserError(
            f"the domain classifier needs labels, but {where}{cfg.data.prepared_dir!r} "
            f"(source {prepared.meta.get('source')!r}) has none; use a labelled source "
            "(mnist5k, digits, class subfolders) or eval.extractors=[inception]"
        )
    version = domain_version(data_version, domain)
    key = training_key(ccfg.model_dump(mode="json"), version)
    existing = reusable_spec(out, key)
    if existing is not None:
        return {**existing, "model_dir": str(out), "trained": False}

    ensure_writable_dir(ccfg.out_dir, "eval.classifier.out_dir")  # before training, not after it
    device = pick_device(cfg.eval.device, key="eval.device", auto_mps=False)
    net, accuracy, counts = _fit(prepared, ccfg, device)
    spec = {
        "format": FORMAT,
        "arch": "lenet",
        "kwargs": {"in_channels": net.in_channels, "num_classes": net.num_classes, "resolution": net.resolution},
        "class_names": prepared.classes,
        "holdout_accuracy": accuracy,
        "holdout_count": counts["holdout"],
        "train_count": counts["train"],
        "data_version": version,
        "data_source": prepared.meta.get("source"),
        "training_key": key,
        "settings": {k: getattr(ccfg, k) for k in TRAINING_FIELDS},
        "trained_on": str(device),
        "torch_version": torch.__version__,
    }
    save_classifier(net, spec, out)
    return {**spec, "model_dir": str(out), "trained": True}


def require_trusted(info: dict[str, Any], min_accuracy: float, domain: str = "") -> None:
    """Raise UserError when the classifier's held-out accuracy is below min_accuracy: its metrics mean little."""
    accuracy = float(info["holdout_accuracy"])
    if accuracy < min_accuracy:
        which = f"domain {domain.upper()}'s classifier" if domain else "domain classifier"
        raise UserError(
            f"{which} held-out accuracy {accuracy:.4f} < eval.classifier.min_accuracy={min_accuracy}; "
            "its fid_lenet and class checks are not trusted. Train it longer (eval.classifier.epochs) or on more "
            "data (data.max_images), or evaluate with eval.extractors=[inception]"
        )


# ----------------------------------------------------------------------------- training
def _fit(prepared: PreparedDataset, ccfg: ClassifierConfig, device: torch.device) -> tuple[LeNet, float, dict]:
    """Deterministic training: seeded split, init and shuffles; returns (net, holdout accuracy, split sizes)."""
    assert prepared.labels is not None
    n = len(prepared)
    num_classes = prepared.num_classes or int(prepared.labels.max()) + 1
    split = torch.Generator().manual_seed(ccfg.seed)
    order = torch.randperm(n, generator=split)
    n_holdout = max(1, round(n * ccfg.holdout_fraction))
    if n - n_holdout < 1:
        raise UserError(f"{n} labelled images are too few to hold out {ccfg.holdout_fraction:.0%} and still train")
    holdout, train = order[:n_holdout], order[n_holdout:]

    with seeded(ccfg.seed, device):
        net = LeNet(prepared.shape[0], num_classes, ccfg.resolution).to(device)
        # Batches are read as they are needed (prepared.take: from memory for small sets, else from the shards).
        def inputs(rows: torch.Tensor) -> torch.Tensor:  # (B, C, R, R) floats on device
            return net.prepare_input(prepared.take(rows))
        y = prepared.labels.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=ccfg.lr)
        steps_per_epoch = -(-len(train) // ccfg.batch_size)
        # One-cycle schedule: reaches ~98% on mnist5k in 5 epochs where a constant rate wobbles around 97%.
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ccfg.lr, total_steps=ccfg.epochs * steps_per_epoch)
        shuffle = torch.Generator().manual_seed(ccfg.seed + 1)
        net.train()
        for _ in range(ccfg.epochs):
            for batch in train[torch.randperm(len(train), generator=shuffle)].split(ccfg.batch_size):
                batch = batch.to(device)
                loss = F.cross_entropy(net(inputs(batch)), y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(inputs(b)).argmax(1) == y[b.to(device)]).sum()) for b in holdout.split(1024))
    return net.cpu(), correct / len(holdout), {"holdout": len(holdout), "train": len(train)}


# ----------------------------------------------------------------------------- files
def _metrics(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "holdout_accuracy": spec["holdout_accuracy"],
        "holdout_count": spec["holdout_count"],
    }  # numbers only: the data version is in classifier.json (strings would be columns of `dvc exp show`)


def _read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
