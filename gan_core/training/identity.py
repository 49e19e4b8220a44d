"""What makes two trainings the same: the settings that shape the weights, the data, and the code that trains.

    identity = training_identity(cfg.model_dump(mode="json"), data_version, code_hash())
    identity_key(identity)               # '3f0c...' (16 hex): the flow's skip key and the `training_hash` run tag
    resumable(identity, checkpointed)    # equal but for train.steps/max_seconds: a checkpoint continues (same run)
    trained_past(train, checkpointed_train, step, seconds)   # ...unless it trained further than asked: why, or None

A training that reads judges (frozen domain classifiers: cyclegan's semantic-consistency term,
train.semantic_weight > 0) is also defined by them: its identity then holds each judge's training key
(gan_core.packaging.classifier: its domain's data version and the eval.classifier settings that shape its weights,
the key its classifier.json records), so a different judge is a different training.

Runtime settings (where and how fast it runs: device, precision, channels_last, compile) and reporting settings
(log_every, sample_every, checkpoint_every, out_dir) are not part of it: changing them never retrains, in the flow,
in `dvc repro` or on resume. Evaluation settings are not part of it either (they change the metrics, not the
weights). A recipe (configs/recipes) is hashed as the model/train settings it resolves to, not by its name, so
the same settings are the same training whichever way they were written. dvc.yaml's `train` stage lists exactly
training_params and depends on gan_core/ as a whole, as the code hash does; tests/test_identity.py keeps the
three in step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gan_core.config.catalogue import family_info

RUNTIME_TRAIN_KEYS = frozenset(
    {"log_every", "sample_every", "checkpoint_every", "out_dir", "device", "precision", "channels_last", "compile",
     "node_rank", "master_addr", "master_port"}
)
"""train.* keys that say where, how fast and how visibly a training runs, not what it learns."""
CONTINUABLE_KEYS = frozenset({"steps", "max_seconds"})
"""train.* keys a checkpoint may differ in and still be resumed: more steps (or a larger time budget, counted over
resumes) continue the same training."""
EVAL_RUNTIME_KEYS = frozenset({"device", "out_dir", "cache_dir"})
"""eval.* (and eval.classifier.*, eval.encoder.*) keys that do not change an evaluation's numbers."""


JUDGED_DOMAINS = ("a", "b")
"""The domains whose judges a semantic-consistency term reads (translation's two)."""


def training_identity(config: dict[str, Any], data_version: str, code: str) -> dict[str, Any]:
    """The settings that shape the weights (all of `model`, `train` minus runtime keys), the data version (the
    DVC md5 of the prepared data) and the code hash, from a config as dumped to JSON (a checkpoint stores that);
    plus the training keys of the judges when the training reads them."""
    train = {k: v for k, v in config["train"].items() if k not in RUNTIME_TRAIN_KEYS}
    identity = {"model": config["model"], "train": train, "data_version": data_version, "code": code}
    if judged_by(config):
        # Imported here: the identity stays torch-free (the gate and evaluation contexts read this module).
        from gan_core.packaging.classifier import domain_version, judge_settings, training_key

        settings = judge_settings(config["eval"]["classifier"])
        identity["judges"] = {d: training_key(settings, domain_version(data_version, d)) for d in JUDGED_DOMAINS}
    return identity


def judged_by(config: dict[str, Any]) -> str | None:
    """The setting that makes a training read judges ("train.semantic_weight=1.0": the family owns a
    semantic-consistency term and it is on), or None."""
    options = family_info(config["model"]["arch"]).train_options
    weight = float(config["train"].get("semantic_weight", 0.0))
    owned = options is not None and "semantic_weight" in options.model_fields
    return f"train.semantic_weight={weight}" if owned and weight > 0 else None


def training_params(config: dict[str, Any]) -> list[str]:
    """The dotted param keys of the identity's settings, as dvc.yaml's `train` stage lists them. `recipe` leads:
    DVC compares params.yaml's values, not the settings a recipe resolves to, so it needs the recipe's name (and
    configs/recipes in the stage's deps) to see a recipe change; the identity itself hashes the resolved settings.
    `eval.classifier` joins them when training reads judges."""
    params = ["recipe", "model"] + [f"train.{k}" for k in config["train"] if k not in RUNTIME_TRAIN_KEYS]
    return params + (["eval.classifier"] if judged_by(config) else [])


def identity_key(identity: dict[str, Any]) -> str:
    """sha256 (16 hex) of the identity's canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def resumable(mine: dict[str, Any], checkpointed: dict[str, Any]) -> bool:
    """True when a checkpoint of `checkpointed` can continue into `mine`: the same identity but for train.steps."""
    return _continuable(mine) == _continuable(checkpointed)


def trained_past(
    train: dict[str, Any], checkpointed_train: dict[str, Any], step: int, seconds: float
) -> str | None:
    """Why a checkpoint at `step`, after `seconds` of training under `checkpointed_train`, has trained further than
    `train` asks (train.steps, train.max_seconds), or None when it has not.

    More steps or a larger budget continue a checkpoint; fewer must not, or a model trained for 2,000 steps would be
    finished, packaged and registered as a 200-step one. Such a checkpoint is not a resume point: training starts
    from scratch. A checkpoint stopped by this same budget (it overshoots by at most one step) is the finished run."""
    if step > train["steps"]:
        return f"it is at step {step}, past train.steps={train['steps']}"
    budget, theirs = train.get("max_seconds"), checkpointed_train.get("max_seconds")
    if budget is not None and seconds > budget and (theirs is None or theirs > budget):
        return f"it has trained for {seconds:.3g} s, past train.max_seconds={budget:g}"
    return None


def evaluation_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The eval.* settings that change an evaluation's numbers (sample count, seed, extractors, ..., and the
    domain classifier's and encoder's settings: they make the lenet and simclr feature spaces, and the classifier's
    accuracy bar decides if metrics count)."""
    settings = {k: v for k, v in config["eval"].items() if k not in EVAL_RUNTIME_KEYS}
    for extractor in ("classifier", "encoder"):  # the trained extractors' own sections
        settings[extractor] = {k: v for k, v in settings[extractor].items() if k not in EVAL_RUNTIME_KEYS}
    return settings


def evaluation_key(config: dict[str, Any]) -> str:
    """sha256 (16 hex) of evaluation_settings: part of the flow's skip key beside the training identity."""
    return identity_key(evaluation_settings(config))


def first_difference(old: Any, new: Any, path: str = "") -> str:
    """'train.loss: 'hinge' → now 'nonsaturating'' for the first setting that differs between two trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    return f"{path}: {old!r} → now {new!r}"


def _continuable(identity: dict[str, Any]) -> dict[str, Any]:
    train = {k: v for k, v in identity["train"].items() if k not in CONTINUABLE_KEYS}
    return {**identity, "train": train}


def code_hash() -> str:
    """sha256 (16 hex) of gan_core's source files: uncommitted edits to the code count as a change, which the
    git commit alone would miss."""
    root = Path(__file__).resolve().parents[1]  # gan_core/
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
