"""The registry handle: built once per command or flow, it holds what every registry operation shares — the
tracking URI, the client on that store, the model's names, its champion and versions, the promotion lock, and the
prepared data's version for re-measuring a champion. Operations take the handle; none opens a store of its own.

    registry = Registry(cfg)                # the tracking URI is decided here; the client is opened on first use
    registry.client()                       # reads and alias moves: a missing SQLite store is a UserError
    registry.client(create=True)            # writes (a training run, a registration) create it
    registry.version("3"), registry.champion_version()     # a checked ModelVersion; '3' or None
    with registry.lock(): ...               # the promotion lock (flows.registry.lock)
    registry.hand_data_version(data)        # the flow versioned the data: nothing below hashes it again

Opening the client lazily keeps read-only paths from creating a store (MlflowClient creates a SQLite file on
construction). A Config is accepted where a handle is expected (Registry.of): scripts and tests may pass one, and
get a handle for that one call; commands and flows build one and pass it on.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from gan_core.config import Config
from gan_core.errors import UserError
from gan_core.redact import clean_url
from gan_core.tracking.store import open_uri, sqlite_path, tracking_uri, use_store

METRICS_TAG = "metrics"
"""Version tag: the evaluation metrics it was registered with, as JSON (full precision: the gate reads them)."""
METRIC_PREFIX = "metric."
"""Versions registered before METRICS_TAG carry one `metric.<name>` tag per metric; still read."""
VERSIONS_EXPERIMENT_SUFFIX = "-versions"
"""The experiment holding one run per registered model with its versions' metrics (flows.registry.versions)."""


class Registry:
    """One registered model (cfg.registry.model_name) in one store, for one command or flow."""

    def __init__(self, cfg: Config, uri: str | None = None) -> None:
        """`uri`: the tracking URI when the caller decided it already (a flow's config step), else tracking_uri()."""
        self.cfg = cfg
        self.uri = uri if uri is not None else tracking_uri(cfg.registry)
        self.name = cfg.registry.model_name
        self.champion_alias = cfg.registry.champion_alias
        self.challenger_alias = cfg.registry.challenger_alias
        self.versions_experiment = f"{cfg.registry.experiment_name}{VERSIONS_EXPERIMENT_SUFFIX}"
        self._client: MlflowClient | None = None
        self._data_version: dict[str, str] | None = None
        self._data_version_read = False

    @classmethod
    def of(cls, target: Registry | Config) -> Registry:
        """`target` when it is a handle; a new handle on a Config (a script's or a test's single call)."""
        return target if isinstance(target, Registry) else cls(target)

    def __repr__(self) -> str:
        return f"Registry({self.name!r} in {clean_url(self.uri)})"

    # ------------------------------------------------------------------------- the store
    def client(self, create: bool = False) -> MlflowClient:
        """The client on the store, opened once. `create=False`: a missing SQLite store is a UserError and nothing
        is created; `create=True` (a training run, a registration) creates it."""
        if self._client is None:
            self._client = open_uri(self.uri, create)
        return self._client

    def store_exists(self) -> bool:
        """False only for a SQLite store whose file is missing (a server or database URI is assumed to exist)."""
        db = sqlite_path(self.uri)
        return db is None or db.is_file()

    def point_fluent_api(self) -> None:
        """Point MLflow's fluent API at this store, for the calls that read it (mlflow.register_model, pyfunc
        logging, load_generator("models:/...")): set from the handle, never inherited from whatever set it last."""
        use_store(self.uri)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The promotion lock of this store (flows.registry.lock.promotion_lock): every alias move holds it."""
        from flows.registry.lock import promotion_lock

        with promotion_lock(self.uri):
            yield

    # ------------------------------------------------------------------------- the model and its versions
    def model_exists(self) -> bool:
        try:
            self.client().get_registered_model(self.name)
        except MlflowException as e:
            if is_missing(e):
                return False
            raise
        return True

    def require_model(self) -> None:
        if not self.model_exists():
            raise UserError(f"no registered model {self.name!r} in {clean_url(self.uri)}; run `ganops retrain` to "
                            "register one")

    def version(self, version: str | int) -> ModelVersion:
        """Version `version` of the model; a UserError naming what is missing (the model, or that version)."""
        check_version_number(version)
        try:
            return self.client().get_model_version(self.name, str(version))
        except MlflowException as e:
            if not is_missing(e):
                raise
        self.require_model()
        raise UserError(f"{self.name!r} has no version {version}; `ganops models` lists the versions")

    def aliases(self) -> dict[str, str]:
        """alias → version, from the registered model (search_model_versions may leave aliases out)."""
        aliases = self.client().get_registered_model(self.name).aliases or {}
        return {str(k): str(v) for k, v in aliases.items()}

    def champion_version(self) -> str | None:
        """The version holding the champion alias now, or None."""
        return self.aliases().get(self.champion_alias)

    # ------------------------------------------------------------------------- the prepared data
    def hand_data_version(self, info: Mapping[str, Any]) -> None:
        """The prepared data's version as the flow computed it (the "data_version" and "data_version_source" of
        gan_core.data.version.data_version_info, e.g. the version_data step's result): re-measuring a champion
        reads it from here, not from disk."""
        self._data_version = {k: str(info[k]) for k in ("data_version", "data_version_source")}
        self._data_version_read = True

    def data_version(self) -> dict[str, str] | None:
        """The prepared data's version: as handed over, else read from data.prepared_dir once; None when there is
        no prepared data there (nothing can be re-evaluated then)."""
        if not self._data_version_read:
            from gan_core.data.version import data_version_info

            try:
                self._data_version = data_version_info(self.cfg.data.prepared_dir)
            except UserError:
                self._data_version = None
            self._data_version_read = True
        return self._data_version


# ----------------------------------------------------------------------------- what a version records
def is_missing(e: MlflowException) -> bool:
    return e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


def check_version_number(version: str | int) -> None:
    if not str(version).isdigit():
        raise UserError(f"model version {version!r} is not a version number; expected e.g. 3 (see `ganops models`)")


def run_id_of(mv: ModelVersion) -> str | None:
    """The training run behind a version (the tag covers versions registered from a non-run source)."""
    return mv.run_id or mv.tags.get("run_id")


def version_metrics(mv: ModelVersion) -> dict[str, float]:
    """The evaluation metrics recorded on a version (its METRICS_TAG; older versions' `metric.<name>` tags)."""
    return tags_metrics(mv.tags)


def tags_metrics(tags: Mapping[str, str]) -> dict[str, float]:
    """The metrics recorded in a version's tags (METRICS_TAG, else the older `metric.<name>` tags); a value that is
    not a number reads as NaN, which fails every threshold."""
    if METRICS_TAG in tags:
        try:
            recorded = json.loads(tags[METRICS_TAG])
        except ValueError:
            recorded = None
        if not isinstance(recorded, dict):
            return {}
        return {str(k): _number(v) for k, v in recorded.items()}
    return {key.removeprefix(METRIC_PREFIX): _number(value) for key, value in tags.items()
            if key.startswith(METRIC_PREFIX) and "." not in key.removeprefix(METRIC_PREFIX)}


def metrics_tag(metrics: Mapping[str, float]) -> str:
    """METRICS_TAG's value: the metrics as JSON, sorted, every float's digits kept (repr)."""
    return json.dumps({k: float(v) for k, v in sorted(metrics.items())})


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
