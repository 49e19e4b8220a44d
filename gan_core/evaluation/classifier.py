"""The domain classifier: a small LeNet trained on the prepared labelled dataset.

    python -m gan_core classifier                      # trains, or reuses {eval.classifier.out_dir}/model
    info = train_classifier(cfg)                        # {"holdout_accuracy": 0.98, "trained": True, ...}
    net = load_classifier("outputs/classifier/model")   # eval-mode LeNet, net.info = classifier.json

It is the offline feature extractor behind fid_lenet/kid_lenet/precision_lenet/recall_lenet (its penultimate
layer, registered with torch-fidelity in gan_core.evaluation.fidelity) and the judge of the class checks (its logits).
Training is deterministic (seeded init, seeded shuffles, deterministic algorithms) and cached: a model whose
classifier.json records the same data version (gan_core.data.version) and classifier settings is reused, not retrained.
Its held-out accuracy must reach eval.classifier.min_accuracy before evaluation trusts its numbers.
A translation dataset (data.target set) gets one classifier per domain, under model/a and model/b: each judges
translations *into* its domain (their FID features, and whether they kept their source image's class).
Weights are safetensors + JSON; nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from gan_core.atomic import atomic_dir, write_json
from gan_core.config import ClassifierConfig, Config
from gan_core.data import PreparedDataset, load_domains, load_prepared
from gan_core.data.version import data_version as read_data_version
from gan_core.device import deterministic, pick_device
from gan_core.errors import UserError
from gan_core.preflight import ensure_writable_dir

FORMAT = "ganops-classifier/1"
MODEL_DIR = "model"
WEIGHTS_FILE = "weights.safetensors"
SPEC_FILE = "classifier.json"
METRICS_FILE = "metrics.json"
# Settings that change the trained weights; min_accuracy and out_dir do not, so they are not in the cache key.
_TRAINING_FIELDS = ("epochs", "batch_size", "lr", "holdout_fraction", "seed", "resolution")


class LeNet(nn.Module):
    """LeNet-5 with batch norm: (B, C, R, R) floats in [-1, 1] → penultimate features (B, 128) and logits (B, K).

    R is `resolution` (32 by default); `prepare_input` brings any uint8 image to it.
    """

    feature_dim = 128

    def __init__(self, in_channels: int, num_classes: int, resolution: int = 32, widths: tuple[int, int] = (16, 32)):
        super().__init__()
        self.in_channels, self.num_classes, self.resolution = in_channels, num_classes, resolution
        w1, w2 = widths
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w1, 5, padding=2), nn.BatchNorm2d(w1), nn.ReLU(),  # (B, w1, R, R)
            nn.MaxPool2d(2),  # (B, w1, R/2, R/2)
            nn.Conv2d(w1, w2, 5), nn.BatchNorm2d(w2), nn.ReLU(), nn.MaxPool2d(2),  # (B, w2, R/4 - 2, R/4 - 2)
            nn.AdaptiveAvgPool2d(6), nn.Flatten(),  # (B, w2*36); identity pooling at R = 32, any R works
            nn.Linear(w2 * 36, self.feature_dim), nn.ReLU(),  # (B, 128): the FID feature space
        )
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, R, R) in [-1, 1] → (penultimate (B, 128), logits (B, K))."""
        penultimate = self.body(x)
        return penultimate, self.head(penultimate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C', H, W), any C' in {1, 3} and size → float (B, C, R, R) in [-1, 1] on the model's device."""
        x = images.to(next(self.parameters()).device, torch.float32)
        if x.shape[1] != self.in_channels:
            # 3 → 1: channel mean (exact for torch-fidelity's repeated grayscale); 1 → 3: repeat.
            x = x.mean(1, keepdim=True) if self.in_channels == 1 else x.expand(-1, self.in_channels, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return x / 127.5 - 1.0

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) → predicted class (B,) on the CPU."""
        return self(self.prepare_input(images)).argmax(1).cpu()


def training_key(cfg: ClassifierConfig, data_version: str) -> str:
    """What makes two trainings identical: the data version (an md5 of the files) and the settings that shape the
    weights."""
    settings = {k: getattr(cfg, k) for k in _TRAINING_FIELDS}
    blob = json.dumps({"data": data_version, "settings": settings, "format": FORMAT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_dir(cfg: Config, domain: str = "") -> Path:
    """Where the classifier lives; a translation dataset's domain "a" or "b" gets its own subdirectory."""
    return Path(cfg.eval.classifier.out_dir) / MODEL_DIR / domain


def _domains(cfg: Config) -> dict[str, PreparedDataset]:
    """The labelled image sets to train on: {"": the dataset}, or a translation dataset's {"a": ..., "b": ...}."""
    if cfg.data.target is not None:
        return load_domains(cfg.data.prepared_dir)
    return {"": load_prepared(cfg.data.prepared_dir)}


def _version(cfg: Config, domain: str, data_version: str | None = None) -> str:
    version = data_version or read_data_version(cfg.data.prepared_dir)
    return f"{version}:{domain}" if domain else version


def stored_classifier(cfg: Config, domain: str = "", *, data_version: str | None = None) -> dict[str, Any]:
    """The stored domain classifier's info (as train_classifier returns it) when it was trained on this data with
    these settings; else a UserError naming the directory and the command that trains it. Evaluation reads the
    classifier through here and never trains one: that is the classifier's own step (DVC stage, flow task)."""
    out = model_dir(cfg, domain)
    existing = _reusable_spec(out, training_key(cfg.eval.classifier, _version(cfg, domain, data_version)))
    if existing is None:
        raise UserError(f"no domain classifier for this data and eval.classifier settings in {str(out)!r}; train "
                        "it first: `python -m gan_core classifier` (the DVC stage `classifier`)")
    return {**existing, "model_dir": str(out), "trained": False}


def train_classifier(cfg: Config, *, data_version: str | None = None) -> dict[str, Any]:
    """Train the domain classifier on cfg.data.prepared_dir, or reuse the stored one trained on the same data and
    settings. Writes {out_dir}/model/ (weights.safetensors + classifier.json) and {out_dir}/metrics.json.
    `data_version`: the prepared data's version (gan_core.data.version) when the caller hashed it already.

    Returns the model info: holdout_accuracy, data content hash, training key, model_dir, trained (False = reused).
    For a translation dataset: {"holdout_accuracy": the lower of the two, "domains": {"a": info, "b": info}}.
    """
    ccfg = cfg.eval.classifier
    infos = {domain: _train_one(cfg, domain, prepared, data_version) for domain, prepared in _domains(cfg).items()}
    if "" in infos:
        metrics = _metrics(infos[""])
        result = infos[""]
    else:
        metrics = {f"{k}_{domain}": v for domain, info in infos.items() for k, v in _metrics(info).items()}
        result = {"holdout_accuracy": min(info["holdout_accuracy"] for info in infos.values()), "domains": infos}
    metrics_path = Path(ccfg.out_dir) / METRICS_FILE
    if _read_json_or_none(metrics_path) != metrics:
        write_json(metrics_path, metrics)  # untouched otherwise: the DVC stage's output stays as is
    return result


def _train_one(cfg: Config, domain: str, prepared: PreparedDataset, data_version: str | None) -> dict[str, Any]:
    ccfg = cfg.eval.classifier
    if prepared.labels is None:
        where = f"domain {domain.upper()} of " if domain else ""
        raise UserError(
            f"the domain classifier needs labels, but {where}{cfg.data.prepared_dir!r} "
            f"(source {prepared.meta.get('source')!r}) has none; use a labelled source "
            "(mnist5k, digits, class subfolders) or eval.extractors=[inception]"
        )
    version = _version(cfg, domain, data_version)
    key = training_key(ccfg, version)
    out = model_dir(cfg, domain)
    existing = _reusable_spec(out, key)
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
        "settings": {k: getattr(ccfg, k) for k in _TRAINING_FIELDS},
        "trained_on": str(device),
        "torch_version": torch.__version__,
    }
    _save_model(net, spec, out)
    return {**spec, "model_dir": str(out), "trained": True}


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> LeNet:
    """An eval-mode LeNet from a model directory written by train_classifier; `.info` holds classifier.json.

    Nothing is unpickled (JSON + safetensors); a missing or damaged file is a UserError naming it."""
    path = Path(path)
    spec = _read_spec(path)
    if spec is None:
        raise UserError(
            f"no domain classifier at {str(path)!r} (no {SPEC_FILE}); run `python -m gan_core classifier` first"
        )
    weights = path / WEIGHTS_FILE
    redo = f"delete {path} and run `python -m gan_core classifier` to retrain it"
    try:
        net = LeNet(**spec["kwargs"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path / SPEC_FILE}: bad classifier kwargs ({type(e).__name__}: {_why(e)}); {redo}") from None
    try:
        state = load_file(weights)
    except FileNotFoundError:
        raise UserError(f"{weights}: missing; {redo}") from None
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights}: not a readable safetensors file ({_why(e)}); {redo}") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as e:  # missing/unexpected keys or shapes: weights and classifier.json disagree
        raise UserError(f"{weights}: does not match {SPEC_FILE} ({_why(e)}); {redo}") from None
    net.info = spec  # type: ignore[attr-defined]
    return net.to(device).eval()


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

    with _deterministic(ccfg.seed, device):
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


@contextlib.contextmanager
def _deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seeded RNG and, on CUDA, deterministic kernels for the duration; the caller's settings are restored.

    CPU kernels already give the same result run to run; forcing deterministic algorithms there only made this
    training 2x slower (measured), so the switch is CUDA-only, where atomics in backward passes vary.
    """
    cuda_devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices), deterministic(device.type == "cuda"):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------- files
def _metrics(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "holdout_accuracy": spec["holdout_accuracy"],
        "holdout_count": spec["holdout_count"],
    }  # numbers only: the data version is in classifier.json (strings would be columns of `dvc exp show`)


def _read_spec(path: Path) -> dict[str, Any] | None:
    """classifier.json in `path`, or None when there is none; UserError when it is damaged or of another format."""
    file = path / SPEC_FILE
    if not file.is_file():
        return None
    try:
        spec = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{file}: not readable JSON ({_why(e)}); delete {path} and retrain the classifier "
                        "(`python -m gan_core classifier`)") from None
    if not isinstance(spec, dict):
        raise UserError(f"{file}: a JSON {type(spec).__name__}, not the object train_classifier writes; delete {path} "
                        "and retrain the classifier (`python -m gan_core classifier`)")
    if spec.get("format") != FORMAT:
        raise UserError(f"{file}: unknown format {spec.get('format')!r}; expected {FORMAT!r}")
    return spec


def _reusable_spec(out: Path, key: str) -> dict[str, Any] | None:
    """The stored model's classifier.json when it was trained with `key` and loads whole; else None (retrain).

    The stored model is a cache of a deterministic training: a damaged one is rebuilt, not reported."""
    try:
        spec = _read_spec(out)
        if spec is None or spec.get("training_key") != key:
            return None
        load_classifier(out)  # a few hundred kB: proves the weights are whole and fit the spec
        float(spec["holdout_accuracy"]), _metrics(spec)
        return spec
    except (UserError, KeyError, TypeError, ValueError) as e:
        warnings.warn(f"retraining the domain classifier: the stored one is damaged ({e})", stacklevel=3)
        return None


def _why(e: BaseException, limit: int = 200) -> str:
    """A library's message on one line (torch's state-dict errors put the useful part on their second line)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _save_model(net: LeNet, spec: dict[str, Any], out: Path) -> None:
    """Build the model directory beside `out`, then swap it in (never half-written)."""
    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp / WEIGHTS_FILE)
        write_json(tmp / SPEC_FILE, spec)
