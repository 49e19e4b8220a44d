"""The offline feature extractors' own step: train each one the evaluation will read — the lenet domain classifier
(gan_core.evaluation.classifier), the simclr domain encoder (gan_core.evaluation.encoder) — or reuse it, or, when it
cannot or need not be trained for this config, write a model directory that says so.

    python -m gan_core classifier          # train_extractor(cfg, "lenet"): the DVC stage `classifier`
    python -m gan_core encoder             # train_extractor(cfg, "simclr"): the DVC stage `encoder`
    train_extractors(cfg, data_version=v)  # both: the flows' train_extractors task

Why the "unused" directory: the DVC stages `classifier` and `encoder` both run in `dvc repro`, and evaluate depends
on both model directories, whatever the data. The classifier cannot be trained without labels, and the encoder is
not needed where eval.extractors leaves simclr out (labelled data, by default), so each writes
{out_dir}/model/unused.json saying why, in a moment, instead of failing or spending minutes. Evaluation never reads
an unused directory as a model: it asks for one trained on this data (stored_classifier / stored_encoder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gan_core.atomic import atomic_dir, write_json
from gan_core.config import Config
from gan_core.config.metrics import LABEL_FREE_EXTRACTOR
from gan_core.data import read_meta
from gan_core.evaluation import classifier, encoder
from gan_core.packaging import classifier as classifier_package
from gan_core.preflight import ensure_writable_dir

UNUSED_FILE = "unused.json"
UNUSED_FORMAT = "ganops-unused-extractor/1"
TRAINED = ("lenet", LABEL_FREE_EXTRACTOR)
"""The extractors ganops trains itself (inception's weights are ImageNet's)."""


def train_extractors(cfg: Config, *, data_version: str | None = None) -> dict[str, dict[str, Any]]:
    """Each trained extractor's info (train_extractor), by name: what the flows' train_extractors task runs."""
    return {name: train_extractor(cfg, name, data_version=data_version) for name in TRAINED}


def train_extractor(cfg: Config, name: str, *, data_version: str | None = None) -> dict[str, Any]:
    """Train (or reuse) extractor `name` ("lenet" | "simclr") on cfg.data.prepared_dir, or record that it is unused
    here. Returns its info; {"used": False, "reason": ...} when unused."""
    reason = unused_reason(cfg, name)
    if reason is not None:
        return _mark_unused(cfg, name, reason)
    if name == "lenet":
        info = classifier.train_classifier(cfg, data_version=data_version)
    else:
        info = encoder.train_encoder(cfg, data_version=data_version)
    return {"used": True, **info}


def unused_reason(cfg: Config, name: str) -> str | None:
    """Why extractor `name` is not trained for this config, or None when it is. The classifier trains whenever
    the data is labelled (as it always has) or lenet is measured (then missing labels are an error it reports);
    the encoder trains when simclr is measured."""
    if name == "lenet":
        if "lenet" in cfg.eval.extractors or cfg.data.target is not None:
            return None
        if read_meta(cfg.data.prepared_dir).get("classes") is not None:
            return None
        return f"{cfg.data.prepared_dir} has no labels, and eval.extractors={cfg.eval.extractors} leaves lenet out"
    if name == LABEL_FREE_EXTRACTOR:
        if LABEL_FREE_EXTRACTOR in cfg.eval.extractors:
            return None
        return f"eval.extractors={cfg.eval.extractors} leaves {LABEL_FREE_EXTRACTOR} out"
    raise ValueError(f"ganops trains the extractors {', '.join(TRAINED)}, not {name!r}")


def _mark_unused(cfg: Config, name: str, reason: str) -> dict[str, Any]:
    """Replace {out_dir}/model with a directory holding only unused.json (atomically; untouched when it says the
    same already); the classifier's stage also gets its metrics file, numbers only, as DVC expects."""
    if name == "lenet":
        out = ensure_writable_dir(cfg.eval.classifier.out_dir, "eval.classifier.out_dir")
        model = Path(out) / classifier_package.MODEL_DIR
    else:
        out = ensure_writable_dir(cfg.eval.encoder.out_dir, "eval.encoder.out_dir")
        model = Path(out) / encoder.MODEL_DIR
    entry = {"format": UNUSED_FORMAT, "extractor": name, "reason": reason}
    if _read_json(model / UNUSED_FILE) != entry or len(list(model.iterdir())) != 1:
        with atomic_dir(model) as tmp:
            write_json(tmp / UNUSED_FILE, entry)
    if name == "lenet" and _read_json(Path(out) / classifier.METRICS_FILE) != {"used": 0}:
        write_json(Path(out) / classifier.METRICS_FILE, {"used": 0})
    return {"used": False, "reason": reason, "model_dir": str(model)}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
