"""Typed configuration: one pydantic tree loaded from params.yaml, with dotted overrides.

    cfg = load_config("params.yaml", ["train.steps=200", "data.source=digits"])

Every section forbids unknown keys, so a typo fails at load time with its key path
instead of being silently ignored. Override values are parsed as YAML scalars, so
`train.steps=200` is an int and `train.compile=true` a bool.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gan_core.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(UserError, ValueError):
    """A user error in params.yaml or an override; the message is one line, ready to print."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- data
class DataConfig(_Section):
    source: str = "mnist5k"
    """mnist5k | digits | torchvision:<Name> (e.g. torchvision:FashionMNIST) | folder:<path>"""
    resolution: int = Field(32, ge=8, le=1024)
    """Side of the square images written by `prepare`, in pixels."""
    channels: Literal[1, 3] = 1
    """1 = grayscale, 3 = RGB; sources are converted to this."""
    max_images: int | None = Field(None, ge=1)
    """Keep at most this many images (the first N in a deterministic order); None keeps all."""
    raw_dir: str = "data/raw"
    """Download cache for torchvision datasets."""
    prepared_dir: str = "data/prepared"
    """Where `prepare` writes the prepared dataset (tracked by DVC)."""

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v in ("mnist5k", "digits"):
            return v
        kind, sep, arg = v.partition(":")
        if sep and kind in ("torchvision", "folder") and arg:
            return v
        raise ValueError(
            f"unknown data source {v!r}; expected mnist5k, digits, torchvision:<Name> or folder:<path>"
        )


# ----------------------------------------------------------------------------- model
class ModelConfig(_Section):
    arch: Literal["mlp", "dcgan"] = "dcgan"
    """Network family: the vanilla MLP GAN or DCGAN."""
    conditional: bool = False
    """Condition G and D on class labels (needs a labelled dataset)."""
    cond_mode: Literal["projection", "concat"] = "projection"
    """How D sees the label: projection discriminator or label concatenation."""
    latent_dim: int = Field(64, ge=1, le=4096)
    g_width: int = Field(32, ge=4, le=4096)
    """DCGAN: feature maps of G's last conv (ngf). MLP: hidden units of G's first layer."""
    d_width: int = Field(32, ge=4, le=4096)
    """DCGAN: feature maps of D's first conv (ndf). MLP: hidden units of D's last layer."""
    spectral_norm: bool = False
    """Spectral normalisation on D's layers."""


# ----------------------------------------------------------------------------- train
class OptimizerConfig(_Section):
    lr: float = Field(2e-4, gt=0, le=1.0)
    betas: tuple[float, float] = (0.5, 0.999)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {list(v)}")
        return v


class TrainConfig(_Section):
    loss: Literal["nonsaturating", "minimax", "hinge", "wgan-gp", "lsgan"] = "nonsaturating"
    steps: int = Field(2000, ge=1)
    """Generator updates."""
    batch_size: int = Field(64, ge=1, le=65536)
    n_critic: int = Field(1, ge=1, le=100)
    """D updates per G update (5 is usual for wgan-gp)."""
    gp_weight: float = Field(10.0, ge=0)
    """Gradient-penalty weight for wgan-gp."""
    g_optimizer: OptimizerConfig = OptimizerConfig()
    d_optimizer: OptimizerConfig = OptimizerConfig()
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    """Decay of the EMA copy of G that samples and exports come from; 0 disables averaging."""
    diffaugment: str = ""
    """DiffAugment policy, comma-separated subset of color,translation,cutout; empty = off."""
    seed: int = 0
    device: str = "auto"
    """auto (CUDA > MPS > CPU) | cpu | cuda | cuda:N | mps"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto = bf16 autocast on CUDA, fp32 elsewhere."""
    channels_last: bool = True
    compile: bool = False
    """torch.compile the networks (CUDA only; ignored on CPU)."""
    log_every: int = Field(50, ge=1)
    sample_every: int = Field(250, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    out_dir: str = "outputs/train"
    """Checkpoints, generator package, sample grids and metrics JSON go here."""

    @field_validator("diffaugment")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        allowed = {"color", "translation", "cutout"}
        parts = [p.strip() for p in v.split(",") if p.strip()]
        bad = [p for p in parts if p not in allowed]
        if bad:
            raise ValueError(
                f"unknown DiffAugment policy {bad[0]!r}; expected a comma list of color,translation,cutout"
            )
        return ",".join(parts)

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"unknown device {v!r}; expected auto, cpu, cuda, cuda:N or mps")


# ----------------------------------------------------------------------------- eval
class ClassifierConfig(_Section):
    """The offline domain feature extractor: a small CNN trained on the prepared labelled data."""

    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate of the one-cycle schedule."""
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    min_accuracy: float = Field(0.97, ge=0, le=1)
    """Held-out accuracy below this makes the classifier's metrics untrusted (evaluation fails)."""
    resolution: int = Field(32, ge=8, le=256)
    """Side the classifier sees: real and generated images are resized to it (bilinear, antialiased)."""
    seed: int = 0
    out_dir: str = "outputs/classifier"


class EvalConfig(_Section):
    num_samples: int = Field(2000, ge=2)
    """Generated samples per evaluation (fixed, so numbers are comparable across runs)."""
    seed: int = 1234
    batch_size: int = Field(200, ge=1)
    extractors: list[Literal["lenet", "inception"]] = ["lenet"]
    """Feature spaces to compute FID/KID/PR in; metric names carry the extractor (fid_lenet, fid_inception)."""
    kid_subset_size: int = Field(1000, ge=2)
    """KID subset size; clamped to the smaller sample count (the value used is recorded in metrics.json)."""
    coverage_min_share: float = Field(0.2, gt=0, le=1)
    """class_coverage counts a class as present when it gets at least this fraction of a uniform share (n/K)."""
    device: str = "auto"
    """auto (CUDA when present, else CPU) | cpu | cuda | cuda:N: where generation and feature extraction run."""
    inception_weights: str | None = None
    """Local file of torch-fidelity's Inception weights, for air-gapped machines (or env GANOPS_INCEPTION_WEIGHTS)."""
    cache_dir: str = "outputs/cache"
    """Cached real-data features, keyed by data version."""
    classifier: ClassifierConfig = ClassifierConfig()
    out_dir: str = "outputs/eval"

    @field_validator("extractors")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one feature extractor is needed (lenet, inception)")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate feature extractor in {v}")
        return v

    @field_validator("device")
    @classmethod
    def _known_eval_device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"unknown eval device {v!r}; expected auto, cpu, cuda or cuda:N")


# ----------------------------------------------------------------------------- gate
class Threshold(_Section):
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if self.max is None and self.min is None:
            raise ValueError("a threshold needs max or min")
        return self


class GateConfig(_Section):
    thresholds: dict[str, Threshold] = {
        "fid_lenet": Threshold(max=100.0),
        "class_coverage": Threshold(min=0.9),
    }
    """Absolute limits per metric name; a missing or NaN metric fails the gate."""
    primary_metric: str = "fid_lenet"
    """The metric a challenger must improve on the champion."""
    min_improvement: float = Field(0.0, ge=0.0, lt=1.0)
    """Relative improvement over the champion's primary metric needed to take the alias (0.05 = 5%)."""
    max_drift: float = Field(0.1, ge=0.0)
    """Monitor: relative worsening of the champion's primary metric, re-measured on the latest data, that
    triggers a retrain (0.1 = 10% worse than recorded at registration)."""


# ----------------------------------------------------------------------------- registry
class RegistryConfig(_Section):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    """Overridden by MLFLOW_TRACKING_URI when set. sqlite:///<path> (relative to the working directory) or a
    tracking server's http(s):// URL; plain-file stores (file:./mlruns) are refused by MLflow 3.13+."""
    artifact_location: str = "mlruns/artifacts"
    """Artifact root of the experiment when ganops creates it: a local path (made absolute) or a URI (s3://...)."""
    experiment: str = "ganops"
    """MLflow experiment holding one run per training."""
    model_name: str = "ganops-generator"
    """Registered model that every evaluated candidate becomes a version of."""
    champion_alias: str = "champion"
    """Alias of the promoted generator: `models:/<model_name>@<champion_alias>`."""
    challenger_alias: str = "challenger"
    """Alias of the latest version that passed the gate."""

    @field_validator("champion_alias", "challenger_alias")
    @classmethod
    def _valid_alias(cls, v: str) -> str:
        # MLflow reserves v<number> and "latest" as version references.
        if not v or v.lower() == "latest" or (v[:1] in "vV" and v[1:].isdigit()):
            raise ValueError(f"alias {v!r} is reserved or empty; use a name such as champion")
        return v


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()

    def hash(self, *sections: str) -> str:
        """sha256 (16 hex) of the canonical JSON of the given sections (all when none)."""
        dump = self.model_dump(mode="json")
        picked = {k: dump[k] for k in (sections or dump.keys())}
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Dotted-key view, for MLflow params."""
        return _flatten(self.model_dump(mode="json"))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_overrides(overrides: Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """`["train.steps=200"]` or `{"train.steps": 200}` → `{"train.steps": 200}`."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad override {item!r}; expected key=value, e.g. train.steps=200")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict) and not raw.lstrip().startswith("{"):
            value = raw  # `data.source=folder:` is a string, not the YAML mapping {folder: null}
        parsed[key.strip()] = value
    return parsed


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: Mapping[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{path}: {msg} (got {err.get('input')!r})"


def load_config(
    params: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
) -> Config:
    """Load params.yaml (or `params`), apply dotted overrides, validate; raise ConfigError on any problem."""
    path = Path(params) if params is not None else DEFAULT_PARAMS
    tree: dict[str, Any] = {}
    if params is not None or path.exists():
        if not path.is_file():
            raise ConfigError(f"params file {str(path)!r} does not exist; pass --params PATH to an existing YAML file")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (data, model, train, ...)")
    for key, value in parse_overrides(overrides).items():
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise ConfigError(f"{path}: {problems}") from None
