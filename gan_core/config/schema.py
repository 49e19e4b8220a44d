"""The config tree: one pydantic section per params.yaml concern (data, model, train, eval, gate, registry,
notify), each field documented where it is declared. Every section forbids unknown keys, so a typo fails at load
time with its key path instead of being silently ignored. gan_core.config.loading builds a Config from files and
overrides."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gan_core.config import catalogue
from gan_core.config.labels import source_labelled
from gan_core.config.section import Section

# torch.manual_seed takes < 2**64, and seeds are multiplied by ~1e6 for derived streams: 32 bits leave room.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class DataConfig(Section):
    source: str = "mnist5k"
    """mnist5k | digits | torchvision:<Name> (e.g. torchvision:FashionMNIST) | folder:<path>; domain A when
    data.target is set"""
    target: str | None = None
    """Translation only (model.arch=cyclegan): domain B's source, any kind data.source takes; None = one image set."""
    resolution: int = Field(32, ge=8, le=1024)
    """Side of the square images written by `prepare`, in pixels."""
    channels: Literal[1, 3] = 1
    """1 = grayscale, 3 = RGB; sources are converted to this."""
    max_images: int | None = Field(None, ge=1)
    """Keep at most this many images (the first N of a seed-0 permutation of the source: a mix of all classes);
    None keeps all."""
    shard_images: int = Field(4096, ge=1, le=1_000_000)
    """Most images per shard of the prepared dataset (a shard also stays under 64 MiB of pixels). Shards already
    written keep their size; new images go to new shards, so a dataset grows by files that DVC stores and pushes
    once."""
    raw_dir: str = "data/raw"
    """Download cache for torchvision datasets."""
    prepared_dir: str = "data/prepared"
    """Where `prepare` writes the prepared dataset (tracked by DVC); `prepare` replaces this whole directory."""

    @field_validator("raw_dir", "prepared_dir")
    @classmethod
    def _non_empty_path(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("needs a directory path, got an empty one")
        return v

    @field_validator("source", "target")
    @classmethod
    def _known_source(cls, v: str | None) -> str | None:
        if v is None or v in ("mnist5k", "digits"):
            return v
        kind, sep, arg = v.partition(":")
        if sep and kind in ("torchvision", "folder") and arg:
            return v
        raise ValueError(
            f"unknown data source {v!r}; expected mnist5k, digits, torchvision:<Name> or folder:<path>"
        )


class SharedModelConfig(Section):
    """model.* keys every family reads (the generation ones: conditional, cond_mode, latent_dim, spectral_norm)."""

    arch: str = "dcgan"
    """Network family (gan_core.config.catalogue): the vanilla MLP GAN, DCGAN or StyleGAN2 generate images from
    noise; CycleGAN translates between two image domains (data.source ↔ data.target)."""
    conditional: bool = False
    """Condition G and D on class labels (needs a labelled dataset)."""
    cond_mode: Literal["projection", "concat"] = "projection"
    """How D sees the label: projection discriminator or label concatenation."""
    latent_dim: int = Field(64, ge=1, le=4096)
    g_width: int = Field(32, ge=4, le=4096)
    """DCGAN: feature maps of G's last conv (ngf). MLP: hidden units of G's first layer. StyleGAN2: feature maps
    at full resolution (×2 per halving, at most ×8)."""
    d_width: int = Field(32, ge=4, le=4096)
    """DCGAN: feature maps of D's first conv (ndf). MLP: hidden units of D's last layer. StyleGAN2: as g_width."""
    spectral_norm: bool = False
    """Spectral normalisation on D's layers (mlp, dcgan)."""

    @field_validator("arch")
    @classmethod
    def _known_family(cls, v: str) -> str:
        if v not in catalogue.FAMILIES:
            raise ValueError(f"Input should be {_one_of(catalogue.family_names())}")
        return v


def _one_of(names: list[str]) -> str:
    """"'a', 'b' or 'c'", as pydantic words a Literal's choices."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# Each family's own model.* keys (gan_core.config.catalogue) follow the shared ones: with the bases reversed, pydantic
# lists the fields shared first, then the families' in catalogue order (stylegan2's mapping_layers, cyclegan's
# res_blocks), the order params.yaml and every dumped config have them in.
class ModelConfig(*reversed(catalogue.model_sections()), SharedModelConfig):  # type: ignore[misc]
    """model.*: the shared settings and every family's own."""


class OptimizerConfig(Section):
    kind: Literal["adam", "rmsprop"] = "adam"
    """adam, or rmsprop as the original WGAN paper uses (betas then unused)."""
    lr: float = Field(2e-4, gt=0, le=1.0)
    betas: tuple[float, float] = (0.5, 0.999)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {list(v)}")
        return v


# Losses whose D output is not centred on 0, so ADA's r_t = E[sign(D(real))] means nothing there (TrainConfig.augment).
ADA_REFUSED_LOSSES = {
    "lsgan": "an lsgan D that cannot tell real from fake outputs 0.5",
    "wgan": "a wgan critic's offset is arbitrary",
    "wgan-gp": "a wgan-gp critic's offset is arbitrary",
}


class StepSettings(Section):
    """train.* keys every family's step reads (the loss and its regularisers) and the training's length: the first
    part of TrainConfig."""

    loss: Literal["nonsaturating", "minimax", "hinge", "wgan", "wgan-gp", "lsgan"] = "nonsaturating"
    steps: int = Field(2000, ge=1)
    """Generator updates."""
    max_seconds: float | None = Field(None, gt=0)
    """Wall-clock budget of the training in seconds, summed over resumes; it stops at train.steps or here, whichever
    comes first, and then writes its checkpoint, samples and package as at the last step (metrics.json's `steps`
    is the step reached, `stopped_by_time` 1). Part of the training identity, continuable like steps (a larger
    budget continues a checkpoint). None = no limit. Where it stops depends on the machine's speed: for
    reproducible weights leave it unset and fix train.steps (the recipes do)."""
    batch_size: int = Field(64, ge=1, le=65536)
    n_critic: int = Field(1, ge=1, le=100)
    """D updates per G update (5 is usual for wgan and wgan-gp)."""
    gp_weight: float = Field(10.0, ge=0)
    """Gradient-penalty weight for wgan-gp."""
    clip_value: float = Field(0.01, gt=0)
    """wgan: every critic weight is clipped to [-clip_value, clip_value] after each update."""
    r1_gamma: float | None = Field(None, ge=0)
    """R1 penalty weight γ on real images, applied lazily every r1_every steps; None = the family's default
    (stylegan2 0.1, others 0 = off)."""
    r1_every: int = Field(16, ge=1)


class LoopSettings(Section):
    """train.* keys of the loop (data split, augmentation, optimizers, EMA, seed, processes, device, outputs): the
    last part of TrainConfig."""

    holdout_fraction: float = Field(0.1, ge=0, lt=1)
    """Translation (cyclegan): the last fraction of each domain (prepare's fixed, shuffled order) is never trained
    on; evaluation translates these held-out images."""
    augment: Literal["none", "ada"] = "none"
    """ada: adaptive augmentation (Karras et al. 2020) of what D sees: each operation of the diffaugment policy (all
    of color, translation, cutout when that is empty) applied to each image with probability p, p steered so that
    r_t = E[sign(D(real))] stays near ada_target (gan_core.training.augment.AdaptiveAugment). r_t reads overfitting
    only where D's decision boundary is 0: nonsaturating and minimax (a logit; the paper's loss) and hinge (its
    optimal D is sign(p_data − p_G) too). Refused with lsgan (targets 0/1: an undecided D outputs 0.5, so r_t ≈ 1
    and p climbs whatever D does) and wgan/wgan-gp (a critic's offset is arbitrary): the reference has no r_t
    for them, and shifting or rescaling it would be a guess."""
    ada_target: float = Field(0.6, gt=0, lt=1)
    ada_kimg: float = Field(100.0, gt=0)
    """Thousands of real images over which p can move from 0 to 1 (the paper: 500; shorter suits short runs).
    Counted as the reference counts them: every real batch of a step, all n_critic of them, on every process."""
    ada_interval: int = Field(4, ge=1)
    """Steps between updates of p."""
    g_optimizer: OptimizerConfig = OptimizerConfig()
    d_optimizer: OptimizerConfig = OptimizerConfig()
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    """Decay of the EMA copy of G that samples and exports come from; 0 disables averaging. It is ramped in: the
    decay after n G steps is min(ema_decay, (1 + n)/(10 + n)), so 0.999 takes hold only after ~9,000 steps; a
    2,000-step run ends at 0.9955 (4,000 steps: 0.9978), whatever ema_decay ≥ those values says. metrics.json
    and the MLflow run log the decay in use as `ema_decay`."""
    diffaugment: str = ""
    """DiffAugment policy, comma-separated subset of color,translation,cutout; empty = off."""
    seed: Seed = 0
    nproc_per_node: int | Literal["auto"] = Field(1, ge=1, le=1024)
    """Training processes (data parallel, one per GPU) the retrain flow launches with torchrun; auto = this node's
    GPU count. 1 trains in the flow's own process. Each process takes train.batch_size, so it shapes the weights."""
    nnodes: int = Field(1, ge=1, le=4096)
    """Machines taking part in one training (each with nproc_per_node processes). The flow runs on node_rank 0;
    every other node runs the same config with its own node_rank (README, "From one machine to many")."""
    node_rank: int = Field(0, ge=0)
    """This machine's place among the nnodes (0: the one whose rank 0 logs to MLflow and writes the outputs)."""
    master_addr: str = "127.0.0.1"
    """Address of node 0, where the ranks meet (nnodes > 1)."""
    master_port: int = Field(29500, ge=1, le=65535)
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

    @model_validator(mode="after")
    def _node_in_range(self) -> LoopSettings:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} is not below nnodes {self.nnodes}")
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"unknown device {v!r}; expected auto, cpu, cuda, cuda:N or mps")


# Each family's own train.* keys sit between the step's and the loop's, in catalogue order: the order params.yaml and
# dvc.yaml's train stage list them in (tests/test_identity.py holds dvc.yaml to it).
class TrainConfig(LoopSettings, *reversed(catalogue.train_sections()), StepSettings):  # type: ignore[misc]
    """train.*: the step's settings, every family's own, then the loop's."""

    @model_validator(mode="after")
    def _ada_reads_a_zero_centred_d(self) -> TrainConfig:
        if self.augment == "ada" and self.loss in ADA_REFUSED_LOSSES:
            raise ValueError(f"train.augment=ada cannot steer by train.loss={self.loss}: ADA reads "
                             "E[sign(D(real))] as overfitting, which needs D's decision boundary at 0 "
                             f"({ADA_REFUSED_LOSSES[self.loss]}); use train.loss=nonsaturating, minimax or hinge, "
                             "or a fixed train.diffaugment policy")
        return self


class ClassifierConfig(Section):
    """The offline domain feature extractor: a small CNN trained on the prepared labelled data."""

    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate of the one-cycle schedule."""
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    min_accuracy: float = Field(0.95, ge=0, le=1)
    """Held-out accuracy below this makes the classifier's metrics untrusted (evaluation fails)."""
    resolution: int = Field(32, ge=8, le=256)
    """Side the classifier sees: real and generated images are resized to it (bilinear, antialiased)."""
    seed: Seed = 0
    out_dir: str = "outputs/classifier"


class EncoderConfig(Section):
    """The label-free domain feature extractor (simclr): a small CNN trained contrastively (SimCLR) on the prepared
    images, no labels needed (gan_core.evaluation.encoder)."""

    epochs: int = Field(6, ge=1, le=1000)
    batch_size: int = Field(256, ge=2, le=65536)
    """Images per step; each is seen as two augmented views, and the other 2·(batch_size − 1) views of the batch
    are its negatives."""
    lr: float = Field(2e-3, gt=0)
    """Peak learning rate of the one-cycle schedule."""
    temperature: float = Field(0.2, gt=0, le=10)
    """Temperature of the contrastive (NT-Xent) loss."""
    width: int = Field(16, ge=4, le=512)
    """Feature maps of the first convolution (×2, ×4, ×4 after each halving)."""
    feature_dim: int = Field(128, ge=2, le=2048)
    """Dimension of the feature space FID, KID and precision/recall are measured in."""
    resolution: int = Field(32, ge=16, le=256)
    """Side the encoder sees: real and generated images are resized to it (bilinear, antialiased)."""
    clusters: int = Field(20, ge=2, le=1000)
    """k of the k-means clustering of the real features behind cluster_coverage_simclr."""
    seed: Seed = 0
    out_dir: str = "outputs/encoder"


class EvalConfig(Section):
    num_samples: int = Field(2000, ge=2)
    """Generated samples per evaluation (fixed, so numbers are comparable across runs)."""
    seed: Seed = 1234
    batch_size: int = Field(200, ge=1, le=65536)
    extractors: list[Literal["lenet", "inception", "simclr"]] = ["lenet"]
    """Feature spaces to compute FID/KID/PR in; metric names carry the extractor (fid_lenet, fid_simclr,
    fid_inception). lenet needs labelled data; on a flat folder (no labels) the default [lenet] becomes [simclr]
    (Config._label_free_defaults)."""
    kid_subset_size: int = Field(1000, ge=2)
    """KID subset size; clamped to the smaller sample count (the value used is recorded in metrics.json)."""
    coverage_min_share: float = Field(0.2, gt=0, le=1)
    """class_coverage counts a class as present when it gets at least this fraction of a uniform share (n/K);
    cluster_coverage_simclr a cluster when it gets at least this fraction of the real images' share in it."""
    device: str = "auto"
    """auto (CUDA when present, else CPU) | cpu | cuda | cuda:N: where generation and feature extraction run."""
    inception_weights: str | None = None
    """Local file of torch-fidelity's Inception weights, for air-gapped machines (or env GANOPS_INCEPTION_WEIGHTS)."""
    cache_dir: str = "outputs/cache"
    """Cached real-data features, keyed by data version."""
    classifier: ClassifierConfig = ClassifierConfig()
    encoder: EncoderConfig = EncoderConfig()
    out_dir: str = "outputs/eval"

    @field_validator("extractors")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one feature extractor is needed (lenet, simclr, inception)")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate feature extractor in {v}")
        return v

    @field_validator("device")
    @classmethod
    def _known_eval_device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"unknown eval device {v!r}; expected auto, cpu, cuda or cuda:N")


class Threshold(Section):
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if self.max is None and self.min is None:
            raise ValueError("a threshold needs max or min")
        # NaN compares false with everything, so the gate would pass or fail regardless of the metric.
        if any(b is not None and b != b for b in (self.max, self.min)):
            raise ValueError("a threshold cannot be NaN; use a number, or leave the bound out")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}, so no value could pass")
        return self


LABELLED_GATE: dict[str, Any] = {
    "thresholds": {"fid_lenet": {"max": 100.0}, "class_coverage": {"min": 0.9}},
    "primary_metric": "fid_lenet",
}
"""The default gate: in the lenet space (the domain classifier), for labelled data."""
LABEL_FREE_GATE: dict[str, Any] = {
    "thresholds": {"fid_simclr": {"max": 10.0}, "cluster_coverage_simclr": {"min": 0.9}},
    "primary_metric": "fid_simclr",
}
"""The default gate without labels, in the simclr space: what the default gate becomes when lenet is not measured
(Config._label_free_defaults). fid_simclr is in units of 1 % of the real features' spread (README, Evaluation)."""


class GateConfig(Section):
    thresholds: dict[str, Threshold] = {name: Threshold(**bound) for name, bound in
                                        LABELLED_GATE["thresholds"].items()}
    """Absolute limits per metric name; a missing or NaN metric fails the gate. The default (fid_lenet ≤ 100,
    class_coverage ≥ 0.9) becomes LABEL_FREE_GATE's when eval.extractors holds simclr and not lenet (so does the
    default primary metric, fid_lenet → fid_simclr)."""
    primary_metric: str = LABELLED_GATE["primary_metric"]
    """The metric a challenger must improve on the champion."""
    min_improvement: float = Field(0.0, ge=0.0, lt=1.0)
    """Relative improvement over the champion's primary metric needed to take the alias (0.05 = 5%)."""
    max_drift: float = Field(0.1, ge=0.0)
    """Monitor: relative worsening of the champion's primary metric, re-measured on the latest data, that
    triggers a retrain (0.1 = 10% worse than recorded at registration)."""

    @field_validator("thresholds")
    @classmethod
    def _known_threshold_metrics(cls, v: dict[str, Threshold]) -> dict[str, Threshold]:
        for name in v:
            _require_metric(name)
        return v

    @field_validator("primary_metric")
    @classmethod
    def _known_primary_metric(cls, v: str) -> str:
        _require_metric(v)
        return v


ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class NotifyConfig(Section):
    webhook_env: list[str] = []
    """Environment variables that each hold a webhook URL (Slack, Teams, a chat bot, ...): every retrain outcome
    (promoted, rejected, waiting for approval, failed) is POSTed to each as JSON {"text": ...}. Names, not URLs: a
    webhook URL is a secret and never belongs in params.yaml."""
    blocks: list[Annotated[str, Field(pattern=r"^[a-z0-9-]+/[^/]+$")]] = []
    """Prefect notification blocks, as `<block-type-slug>/<name>` (e.g. `slack-webhook/ganops-alerts`), that get
    the same messages through the block's own notify(); the secret lives in the block."""
    timeout: float = Field(5.0, gt=0, le=60)
    """Seconds a target is given to accept a message; a slow or unreachable one costs a warning, never the run."""

    @field_validator("webhook_env")
    @classmethod
    def _variable_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(ENV_NAME, name):
                raise ValueError("expected names of environment variables that hold webhook URLs, e.g. "
                                 "[GANOPS_WEBHOOK_URL]: a URL is a secret and stays out of params.yaml")
        return v


def _require_metric(name: str) -> None:
    """A gate setting naming a metric nobody computes would fail every candidate (or sort the wrong way)."""
    from gan_core.config.metrics import METRICS

    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}")


class RegistryConfig(Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    """Overridden by MLFLOW_TRACKING_URI when set. sqlite:///<path> (relative to the working directory) or a
    tracking server's http(s):// URL; plain-file stores (file:./mlruns) are refused by MLflow 3.13+."""
    artifact_location: str = "mlruns/artifacts"
    """Artifact root of the experiment when ganops creates it: a local path (made absolute) or a URI (s3://...)."""
    experiment: str | None = None
    """MLflow experiment holding one run per training; None: named after model_name, so each registered model
    (generator, conditional generator, translator) has its runs apart (experiment_name)."""
    model_name: str = "ganops-generator"
    """Registered model that every evaluated candidate becomes a version of."""
    champion_alias: str = "champion"
    """Alias of the promoted generator: `models:/<model_name>@<champion_alias>`."""
    challenger_alias: str = "challenger"
    """Alias of the latest version that passed the gate."""
    study_storage: str | None = None
    """Database of `ganops sweep`'s Optuna studies. None: optuna.db beside a SQLite tracking store (its own file:
    Optuna and MLflow both keep an alembic_version table). With a tracking server or database store, set a
    database URL that every sweep host reaches, e.g. postgresql://user@db-host/optuna (password from PGPASSWORD)."""
    stages: dict[Literal["champion", "challenger"], Literal["Production", "Staging"]] = {}
    """Opt-in, for teams still on MLflow's (deprecated) stages: e.g. {champion: Production, challenger: Staging}
    also moves the version's stage with each alias, archiving the previous holder, so models:/<name>/Production
    and @champion name the same version. Empty (the default): no stage ever changes."""
    approval: Literal["none", "manual"] = "none"
    """manual: a candidate that passes the gate waits for a person (the Prefect UI's form, or `ganops approve N` /
    `ganops reject N --reason TEXT`) before it takes the champion alias; none: the gate alone decides."""
    approval_timeout: float = Field(86400.0, gt=0)
    """Seconds a candidate waits for that answer (approval: manual); none by then rejects it, with that reason."""

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment of this model's trainings: `experiment`, else the model's name."""
        return self.experiment or self.model_name

    def model_uri(self, alias: str | None = None) -> str:
        """`models:/<model_name>@<alias>` (the champion's when no alias is given)."""
        return f"models:/{self.model_name}@{alias or self.champion_alias}"

    def version_uri(self, version: str | int) -> str:
        """`models:/<model_name>/<version>`."""
        return f"models:/{self.model_name}/{version}"

    @field_validator("stages")
    @classmethod
    def _one_role_per_stage(cls, v: dict[str, str]) -> dict[str, str]:
        if len(set(v.values())) < len(v):
            raise ValueError(f"stages {v}: champion and challenger need different stages")
        return v

    @field_validator("champion_alias", "challenger_alias")
    @classmethod
    def _valid_alias(cls, v: str) -> str:
        # MLflow reserves v<number> and "latest" as version references.
        if not v or v.lower() == "latest" or (v[:1] in "vV" and v[1:].isdigit()):
            raise ValueError(f"alias {v!r} is reserved or empty; use a name such as champion")
        return v


class Config(Section):
    recipe: str | None = None
    """The named recipe applied (configs/recipes/<name>.yaml; see load_config), or None. Only a label here: its
    settings are already in model/train, which is what the training identity hashes."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    notify: NotifyConfig = NotifyConfig()

    @model_validator(mode="after")
    def _task_consistent(self) -> Config:
        """Translation (cyclegan) needs two domains, a gate on translation metrics and a registered model of its
        own, so a translator never competes with a generator for one alias (configs/cyclegan-digits.yaml has all
        three); generation families take none of these. Then what the family does not support (its catalogue
        entry) and a whole config shows: class labels, several D updates per G update."""
        from gan_core.config.metrics import CLASS_ACCURACY, is_translation_metric

        family = catalogue.family_info(self.model.arch)
        kind = catalogue.TASKS[family.task]
        translation = family.task == catalogue.TRANSLATION
        if translation and self.data.target is None:
            raise ValueError(f"model.arch={family.name} translates between two image domains: set data.target "
                             "(domain B; data.source is domain A), e.g. --params configs/cyclegan-digits.yaml")
        if not translation and self.data.target is not None:
            translators = " or ".join(f"model.arch={info.name}" for info in catalogue.FAMILIES.values()
                                      if info.task == catalogue.TRANSLATION)
            raise ValueError(f"data.target={self.data.target!r} makes a two-domain (translation) dataset, which only "
                             f"{translators} trains; model.arch={self.model.arch!r} needs data.target=null")
        for name in [*self.gate.thresholds, self.gate.primary_metric]:
            if is_translation_metric(name) != translation:
                raise ValueError(f"gate metric {name!r} is not computed for {family.task} (model.arch={family.name}); "
                                 + ("gate on fid_lenet_a2b, content_lenet_a2b, ... (configs/cyclegan-digits.yaml)"
                                    if translation else "gate on fid_lenet, class_coverage, ..."))
        if CLASS_ACCURACY in [*self.gate.thresholds, self.gate.primary_metric] and not self.model.conditional:
            raise ValueError(f"gate metric {CLASS_ACCURACY!r} is computed for conditional generators only; set "
                             "model.conditional=true (recipe=conditional) or gate on fid_lenet, class_coverage, ...")
        if family.task != catalogue.GENERATION and self.registry.model_name == RegistryConfig().model_name:
            raise ValueError(f"registry.model_name={self.registry.model_name!r} holds generators; register "
                             f"{kind.package}s under a name of their own, e.g. "
                             f"registry.model_name=ganops-{kind.package}")
        if self.model.conditional and not family.supports.conditional:
            raise ValueError(f"model.conditional=true: {family.name} {kind.does} and takes no class labels")
        if self.train.n_critic != 1 and not family.supports.n_critic:
            raise ValueError(f"train.n_critic={self.train.n_critic}: {family.name} updates G and D once per step")
        return self

    @model_validator(mode="after")
    def _label_free_defaults(self) -> Config:
        """Without labels, the defaults measure and gate in the label-free space: decided here, at load time, from
        what the source says of itself (gan_core.config.labels: a folder's top level is listed, nothing is read).

        A flat folder (no class subfolders) turns the default eval.extractors [lenet] into [simclr]; the gate's
        thresholds and primary metric, each where left at its default (LABELLED_GATE), turn into LABEL_FREE_GATE's
        whenever simclr is measured and lenet is not.
        Settings that need labels and were set on purpose are refused, naming the key: lenet among several
        extractors, a gate metric of the lenet space, model.conditional, translation."""
        from gan_core.config.metrics import LABEL_FREE_EXTRACTOR, METRICS

        family = catalogue.family_info(self.model.arch)
        translation = family.task == catalogue.TRANSLATION
        for key, source in (("data.source", self.data.source), ("data.target", self.data.target)):
            if source is None or source_labelled(source) is not False:
                continue
            flat = f"{key}={source!r} is a folder without class subfolders, so its images have no labels"
            if translation:
                semantic = getattr(self.train, "semantic_weight", 0.0)
                if semantic > 0:  # the judges are classifiers: the same words as the data-time check (packaging)
                    domain = "A" if key == "data.source" else "B"
                    raise ValueError(f"train.semantic_weight={semantic} needs class labels in both domains, but "
                                     f"domain {domain} ({key}={source!r}) has none; use a labelled source (mnist5k, "
                                     "digits, a folder of class subfolders) or set train.semantic_weight=0")
                if "lenet" in self.eval.extractors:
                    raise ValueError(f"{flat}; translation ({family.name}) judges content with each domain's "
                                     f"classifier (eval.extractors={self.eval.extractors}): put each domain's images "
                                     "in one subfolder per class, or measure eval.extractors=[inception] alone")
                continue
            if self.model.conditional:
                raise ValueError(f"{flat}; model.conditional=true needs them: set model.conditional=false, or put "
                                 "the images in one subfolder per class")
            if self.eval.extractors == ["lenet"]:  # the default: routed
                self.eval.extractors = [LABEL_FREE_EXTRACTOR]
            elif "lenet" in self.eval.extractors:
                raise ValueError(f"{flat}; eval.extractors={self.eval.extractors} holds lenet, a classifier trained "
                                 f"on the labels: use {LABEL_FREE_EXTRACTOR} (the label-free encoder) instead")
        if translation and LABEL_FREE_EXTRACTOR in self.eval.extractors:
            raise ValueError(f"eval.extractors: {LABEL_FREE_EXTRACTOR} is not measured for translation "
                             f"({family.name}): use lenet (and inception)")
        if "lenet" not in self.eval.extractors and LABEL_FREE_EXTRACTOR in self.eval.extractors:
            # Each gate setting left at its default follows the space: thresholds set for simclr alone keep
            # fid_simclr as the primary metric, and a primary metric set alone keeps the label-free thresholds.
            thresholds = {name: bound.model_dump(exclude_none=True) for name, bound in self.gate.thresholds.items()}
            if thresholds == LABELLED_GATE["thresholds"]:
                self.gate.thresholds = {name: Threshold(**bound)
                                        for name, bound in LABEL_FREE_GATE["thresholds"].items()}
            if self.gate.primary_metric == LABELLED_GATE["primary_metric"]:
                self.gate.primary_metric = LABEL_FREE_GATE["primary_metric"]
            lenet = list(dict.fromkeys(name for name in [self.gate.primary_metric, *self.gate.thresholds]
                                       if METRICS[name].space == "lenet"))
            if lenet:
                raise ValueError(f"gate metric {', '.join(map(repr, lenet))} is measured by the lenet classifier, "
                                 f"which eval.extractors={self.eval.extractors} leaves out (it needs labels): gate on "
                                 f"{', '.join(LABEL_FREE_GATE['thresholds'])}, ...")
        return self

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
