"""A sweep's search space: which settings `ganops sweep` varies, over what, toward which metric — read and checked.

    # configs/sweeps/dcgan.yaml
    objective: fid_lenet          # default gate.primary_metric; its direction comes from the metric table
    trials: 20                    # budget shared by every process on the study (--trials overrides)
    timeout_s: null               # wall-time budget of one `ganops sweep` process (--timeout overrides)
    pruning: {every_steps: 500, num_samples: 500, startup_trials: 3}
    params:                       # dotted keys, as in overrides
      train.g_optimizer.lr: {low: 0.0001, high: 0.002, log: true}     # float range (log scale)
      train.batch_size: {low: 32, high: 128, step: 32}                # int range (low/high/step are ints)
      train.loss: {choices: [nonsaturating, hinge]}                   # categorical (any YAML value, lists too)

    space = load_space("configs/sweeps/dcgan.yaml", cfg)    # SearchSpace, or a UserError naming the bad key
    overrides = suggest(trial, space)                      # {"train.g_optimizer.lr": 0.00042, ...} for an Optuna trial
    point_text(overrides)                                  # 'train.g_optimizer.lr=0.00042 ...' for logs and tables

Checked before any trial runs: every key is a training setting of `model.*` or `train.*` (data, evaluation, gate
and registry settings would make trials incomparable; runtime keys such as train.device change nothing a trial is
judged on), a range is non-empty (log scale above 0), and each bound and choice is a value the config accepts
together with the base config. The objective is a known metric that the evaluation computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gan_core.config import Config, ConfigError, load_config
from gan_core.errors import UserError
from gan_core.training.identity import RUNTIME_TRAIN_KEYS

if TYPE_CHECKING:
    import optuna

SEARCHABLE_SECTIONS = ("model", "train")
NOT_SEARCHABLE_TRAIN_KEYS = RUNTIME_TRAIN_KEYS | {"nproc_per_node", "nnodes"}
"""How and where a trial runs, not what it learns: varying them changes nothing the objective sees."""


class Dimension(BaseModel):
    """One searched setting: `choices`, or a range `low`..`high` (ints when both bounds are ints) with optional
    `step` and `log` scale."""

    model_config = ConfigDict(extra="forbid")
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.step is not None or self.log:
                raise ValueError("give either choices or a range (low, high, step, log), not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if not self.low < self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("step and log scale cannot be combined")
        if self.step is not None and not 0 < self.step <= self.high - self.low:
            raise ValueError(f"step {self.step} must be in (0, high - low]")
        return self

    @property
    def is_int(self) -> bool:
        bounds = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return self.choices is None and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)

    def extremes(self) -> list[Any]:
        """The values that must all be accepted for every value in between to be: bounds, or each choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def describe(self) -> str:
        """`log[0.0001, 0.002]`, `int[32, 128] step 32`, `{nonsaturating, hinge}` (the parent run's params)."""
        if self.choices is not None:
            return "{" + ", ".join(json.dumps(c) if not isinstance(c, str) else c for c in self.choices) + "}"
        kind = "log" if self.log else "int" if self.is_int else "float"
        return f"{kind}[{self.low}, {self.high}]" + (f" step {self.step}" if self.step is not None else "")


class Pruning(BaseModel):
    """Intermediate evaluations that stop hopeless trials (Optuna's median rule)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    every_steps: int = Field(500, ge=1, description="training steps between intermediate evaluations (taken at "
                                                    "the first train.sample_every step past each interval)")
    num_samples: int = Field(500, ge=11, description="samples per intermediate evaluation (the final one uses "
                                                     "eval.num_samples)")
    startup_trials: int = Field(3, ge=0, description="trials that finish unpruned before any is pruned")
    warmup_steps: int = Field(0, ge=0, description="steps before which a trial is never pruned")


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    objective: str | None = None
    trials: int | None = Field(10, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    pruning: Pruning = Pruning()
    params: dict[str, Dimension]

    @field_validator("params")
    @classmethod
    def _not_empty(cls, params: dict[str, Dimension]) -> dict[str, Dimension]:
        if not params:
            raise ValueError("no settings to search: add at least one, e.g. train.g_optimizer.lr: {low: 1e-4, "
                             "high: 1e-3, log: true}")
        return params

    def objective_for(self, cfg: Config) -> str:
        return self.objective or cfg.gate.primary_metric


def load_space(path: str | Path, cfg: Config, params: str | Path | None = None,
               overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read and check a search space file against the base config (`params` + `overrides`, loaded as `cfg`).
    Raises a one-line UserError naming the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"search space {str(path)!r}: no such file; see configs/sweeps/dcgan.yaml for the format")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"search space {path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"search space {path}: expected a mapping with `params:` (and optionally objective, "
                        "trials, timeout_s, pruning)")
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UserError(f"search space {path}: {where}: {err['msg'].removeprefix('Value error, ')}") from None
    flat = cfg.flat()
    for key, dim in space.params.items():
        _check_key(path, key, flat)
        for value in dim.extremes():
            try:
                load_config(params, {**(overrides or {}), key: value})
            except ConfigError as e:
                problem = str(e).split(": ", 1)[-1]
                raise UserError(f"search space {path}: params.{key}: {value!r} is not accepted: {problem}") from None
    _check_objective(path, space.objective_for(cfg), cfg)
    return space


def _check_key(path: Path, key: str, flat: dict[str, Any]) -> None:
    section, _, rest = key.partition(".")
    if key not in flat:
        near = [k for k in flat if k.startswith(section + ".")][:6]
        hint = f"; settings of {section}: {', '.join(near)}, ..." if near else ""
        raise UserError(f"search space {path}: params.{key}: unknown setting{hint}")
    if section not in SEARCHABLE_SECTIONS:
        raise UserError(f"search space {path}: params.{key}: only model.* and train.* settings can be searched "
                        f"({section}.* must be the same for every trial, or their objectives are not comparable)")
    if section == "train" and rest.split(".")[0] in NOT_SEARCHABLE_TRAIN_KEYS:
        raise UserError(f"search space {path}: params.{key}: says how or where a trial runs, not what it learns; "
                        "set it as an override instead")


def _check_objective(path: Path, objective: str, cfg: Config) -> None:
    from gan_core.config.catalogue import TRANSLATION, family_info
    from gan_core.config.metrics import is_translation_metric, spec

    try:
        metric = spec(objective)
    except UserError as e:
        raise UserError(f"search space {path}: objective: {e}") from None
    if is_translation_metric(objective) != (family_info(cfg.model.arch).task == TRANSLATION):
        raise UserError(f"search space {path}: objective {objective!r} is not computed for model.arch="
                        f"{cfg.model.arch}")
    if metric.space is not None and metric.space not in cfg.eval.extractors:
        raise UserError(f"search space {path}: objective {objective!r} needs eval.extractors to include "
                        f"{metric.space!r} (it is {cfg.eval.extractors})")


def direction(objective: str) -> str:
    """Optuna's direction for a metric: FID/KID fall as quality rises, coverage and accuracy rise."""
    from gan_core.config.metrics import better

    return "minimize" if better(objective) == "lower" else "maximize"


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """One point of the space, drawn by the trial's sampler, as dotted overrides."""
    point: dict[str, Any] = {}
    for key, dim in space.params.items():
        if dim.choices is not None:
            # Optuna's categorical values must be None/bool/int/float/str: other YAML values (lists such as Adam's
            # betas) travel as their JSON text.
            options = [c if _primitive(c) else json.dumps(c) for c in dim.choices]
            picked = trial.suggest_categorical(key, options)
            point[key] = dim.choices[options.index(picked)]
        elif dim.is_int:
            point[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        else:
            point[key] = trial.suggest_float(key, float(dim.low), float(dim.high), step=dim.step, log=dim.log)
    return point


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def point_text(point: dict[str, Any]) -> str:
    """A point as one line: `train.g_optimizer.lr=0.00042 train.loss=hinge`."""
    return " ".join(f"{k}={_short(v)}" for k, v in point.items())


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if not isinstance(v, str) else v
