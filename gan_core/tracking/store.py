"""The MLflow store: where it is, whether it answers, a client on it, and the experiment ganops logs into.

    client = open_store(cfg.registry)               # a client; sets no global state, creates no store
    client = configure(cfg.registry, create=True)   # the same, and MLflow's fluent API pointed at it
    client = open_uri(uri, create=True)             # a client on a URI decided once (a flow's registry handle)
    ready_sqlite_store(uri)                         # open_uri's first step: migrate SQLite, one process at a time
    check_tracking(cfg.registry, "config")          # fail fast: bad URI, unreachable server (one line)

The tracking URI is `MLFLOW_TRACKING_URI` when set, else `cfg.registry.tracking_uri`. Stores are created only
where ganops writes (a training run, a registration); reads and alias moves need an existing store and create
nothing. An http(s) tracking server is probed once at the start of a command (check_tracking_server), and MLflow's
own HTTP retries, the one retry layer for it, are bounded by GANOPS_SERVICE_TIMEOUT (mlflow_http_env) unless the
user set MLflow's variables. What goes into runs is gan_core.tracking.runs.

A SQLite store is created and migrated by MLflow itself (Alembic) the first time a process opens it; two processes
doing that at once (two first `ganops retrain`s on a fresh machine) break each other's migration ("table ... already
exists", "Online migration expected to match one row"). So every process opens a SQLite store first under a file
lock beside it (`mlflow.db.migrate.lock`): the first migrates, the others wait, then find it ready.

Each registered model has an experiment of its own (registry.experiment, default: the model's name), carrying
`mlflow.experimentKind` = custom_model_development and a description of what its runs train (MLflow 3.17's UI still
starts in its GenAI mode: the links ganops prints add MODEL_TRAINING_VIEW).

Links and credentials. A tracking URI may carry credentials (`http://user:password@host`); MLflow's own "View run at"
lines would print them, so they are turned off (MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT) and ganops prints its own
link: run_url, on the UI that mlflow_ui_url names, cleaned by gan_core.redact.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

from gan_core.config import RegistryConfig
from gan_core.config.catalogue import GENERATION, TASKS
from gan_core.errors import ServiceUnavailable, UserError, first_line
from gan_core.preflight import ensure_writable_dir
from gan_core.redact import clean_url

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""The kind MLflow records for a model-training experiment (the UI's mode itself follows `?workflowType=`)."""
NOTE_TAG = "mlflow.note.content"
"""MLflow's description tag (experiments and runs)."""



# ----------------------------------------------------------------------------- store
SERVICE_TIMEOUT_ENV = "GANOPS_SERVICE_TIMEOUT"
"""Seconds within which a command gives up on an unreachable service (MLflow, a DVC remote, the Prefect API)."""
DEFAULT_SERVICE_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 10.0
"""Longest wait for the reachability probe at the start of a command (a refused connection fails at once)."""
MLFLOW_HTTP_RETRIES = 5
"""Retries of one MLflow HTTP request (MLflow's own retry layer: the only one, Prefect does not retry on top):
backing off 0, 2, 4, 8 and 16 s, they carry a run over a tracking server restart of up to about 30 s."""
_HTTP_SCHEMES = ("http://", "https://")


def service_timeout_s() -> float:
    """GANOPS_SERVICE_TIMEOUT in seconds (default 120)."""
    raw = os.environ.get(SERVICE_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_SERVICE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{SERVICE_TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0, e.g. 120")
    return value


def mlflow_http_env(budget_s: float) -> dict[str, str]:
    """MLflow's HTTP retry settings that keep one request to a dead server within `budget_s`.

    6 attempts of at most budget/9 s each (connect or read), 0, 2, 4, 8 and 16 s apart plus up to 1 s jitter each:
    at most 6 * 13 + 35 = 113 s at the default 120 s. A refused connection is retried for 30-35 s, long enough for a
    server restart; a tracking server that is down from the start is caught in seconds by the config step's probe."""
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(MLFLOW_HTTP_RETRIES),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(budget_s // 9))),
    }


_ours: dict[str, str] = {}
"""The MLflow variables this process set itself: updated when the budget changes; a user's own value is kept."""


def bound_mlflow_http_retries() -> None:
    """Set MLflow's HTTP retry variables from GANOPS_SERVICE_TIMEOUT unless the user set them (MLflow's defaults
    retry one request for about 4 minutes, 7 times)."""
    for key, value in mlflow_http_env(service_timeout_s()).items():
        if key not in os.environ or os.environ[key] == _ours.get(key):
            os.environ[key] = _ours[key] = value


def quiet_mlflow_links() -> None:
    """Stop MLflow's "🏃 View run ... at: <tracking URI>/..." lines: they print the tracking URI as given,
    credentials included. ganops prints its own link (run_url), cleaned."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


# ----------------------------------------------------------------------------- links into the MLflow UI
MLFLOW_UI_ENV = "GANOPS_MLFLOW_UI"
"""Where the MLflow UI of the store is served, for the links ganops writes (e.g. http://127.0.0.1:5000 where
`ganops ui` runs); an http(s) tracking server is its own UI."""
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
"""Query that opens an MLflow UI page in its model-training mode (runs table, charts) instead of GenAI."""


def mlflow_ui_url(registry: RegistryConfig) -> str | None:
    """The MLflow UI to link to: GANOPS_MLFLOW_UI, else an http(s) tracking server itself, cleaned of credentials;
    None for a SQLite or database store, whose UI is wherever someone starts one (`ganops ui --port N`): a link to
    a guessed address would open nothing, or another project's UI."""
    if os.environ.get(MLFLOW_UI_ENV):
        return clean_url(os.environ[MLFLOW_UI_ENV].strip().rstrip("/"))
    uri = tracking_uri(registry)
    return clean_url(uri).rstrip("/") if is_http_uri(uri) else None


def run_url(registry: RegistryConfig, experiment_id: str | None, run_id: str | None) -> str | None:
    """Link to an MLflow run in the UI (mlflow_ui_url), e.g. http://mlflow:5000/#/experiments/1/runs/<id>?workflowType=
    machine_learning; None when no UI is known or the run is not.

    MLflow 3.17's UI opens every page in its GenAI mode unless the link (or the browser's last choice) asks for the
    model-training mode; the experiment's kind tag does not switch it."""
    base = mlflow_ui_url(registry)
    if not (base and experiment_id and run_id):
        return None
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"


def run_reference(registry: RegistryConfig, name: str | None, experiment_id: str | None, run_id: str | None) -> str:
    """A run for a log line or a report: `name (link)`, or, without a known UI, its name, id and store."""
    url = run_url(registry, experiment_id, run_id)
    if url:
        return f"{name or run_id} ({url})"
    return f"{name or run_id} (run {run_id} in {clean_url(tracking_uri(registry))}; `ganops ui` serves it)"


def _origin() -> str:
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "registry.tracking_uri"


def tracking_uri(registry: RegistryConfig) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the configured URI; relative SQLite paths become absolute.

    Pure: creates nothing (read-only commands must leave no store behind; see configure(create=True))."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or registry.tracking_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        # sqlite:////abs/path keeps its leading slash after the prefix; relative paths resolve against cwd.
        db = db if db.is_absolute() else Path.cwd() / db
        return f"sqlite:///{db}"
    if uri.startswith("file:") or "://" not in uri:
        raise UserError(
            f"{_origin()}={clean_url(uri)!r} is a plain-file store, which MLflow 3.13+ refuses; "
            "use sqlite:///mlflow.db or an http(s):// tracking server"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_location(registry: RegistryConfig) -> str:
    """The experiment's artifact root as a URI: local paths are resolved to absolute `file://` URIs."""
    loc = registry.artifact_location
    if "://" in loc:  # s3://, gs://, file:///..., mlflow-artifacts://
        return loc
    path = Path(loc).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    return path.as_uri()


def experiment_artifact_location(registry: RegistryConfig) -> str | None:
    """The artifact root ganops gives an experiment it creates: registry.artifact_location, except that a local path
    is left out against a tracking server. The server then decides (its `--artifacts-destination`, e.g. S3, served
    through it); a path on the training host would strand every artifact, the generator included, on that host."""
    if is_http_uri(tracking_uri(registry)) and "://" not in registry.artifact_location:
        return None
    return artifact_location(registry)


def is_http_uri(uri: str) -> bool:
    """True for a tracking server (http/https), whose client retries requests itself."""
    return uri.startswith(_HTTP_SCHEMES)


def store_exists(registry: RegistryConfig) -> bool:
    """False only for a SQLite store whose file is missing (a server or database URI is assumed to exist)."""
    db = sqlite_path(tracking_uri(registry))
    return db is None or db.is_file()


def require_store(registry: RegistryConfig) -> str:
    """The tracking URI, after checking that a SQLite store exists there (read-only commands must not create one)."""
    uri = tracking_uri(registry)
    _require_sqlite_file(uri)
    return uri


def _require_sqlite_file(uri: str) -> None:
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UserError(
            f"no MLflow store at {db}: run `ganops demo` (or `ganops retrain`) first, or set MLFLOW_TRACKING_URI"
        )


def check_tracking(registry: RegistryConfig, step: str, write: bool = False) -> str:
    """Fail fast, naming `step`, on a tracking setup that cannot work; return the URI. Creates no store.

    A bad GANOPS_SERVICE_TIMEOUT, a plain-file URI or an unsupported scheme is a UserError; an http(s) server that
    does not answer the probe is ServiceUnavailable. A missing SQLite store: `write=True` (a retrain will create
    it) proves its directory writable now, not after training; reads leave it to configure(), which refuses."""
    service_timeout_s()
    uri = tracking_uri(registry)
    db = sqlite_path(uri)
    if is_http_uri(uri):
        check_tracking_server(uri, step)
    elif db is None:
        open_store(registry)  # a database or plugin URI: MLflow itself says whether it supports the scheme
    elif write and not db.is_file():
        ensure_writable_dir(db.parent, f"the directory of {_origin()}")
    return uri


def check_tracking_server(uri: str, step: str) -> None:
    """A cheap reachability probe of an http(s) tracking server: ServiceUnavailable in seconds, not minutes.

    Any HTTP answer proves the server is there (auth and API errors are MLflow's to report); no-op for other URIs."""
    if is_http_uri(uri):
        probe_http("MLflow tracking server", clean_url(uri), f"{uri.rstrip('/')}/health", step,
                   "start it or set MLFLOW_TRACKING_URI")


def probe_http(service: str, target: str, url: str, step: str, hint: str) -> None:
    """GET `url` once with a short timeout; raise ServiceUnavailable(service, target, step) when nothing answers."""
    import requests

    timeout = min(PROBE_TIMEOUT_S, service_timeout_s())
    try:
        requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.exceptions.SSLError:
        return  # something answered; certificate problems are the client's to report, with their own message
    except requests.exceptions.Timeout:
        raise ServiceUnavailable(service, target, step, f"no answer within {timeout:g} s", hint) from None
    except requests.exceptions.RequestException as e:
        raise ServiceUnavailable(service, target, step, connection_problem(e), hint) from None


def connection_problem(error: BaseException) -> str:
    """A short reason for a failed connection: refused, unknown host, or the library's first line."""
    text = str(error)
    # requests says "Connection refused", aiohttp (DVC's http remotes) "Connect call failed ... [Errno 111]",
    # botocore (DVC's S3 remotes) "Could not connect to the endpoint URL" once its own retries are spent.
    if "refused" in text.lower() or "Errno 111" in text or "Could not connect to the endpoint URL" in text:
        return "connection refused"
    if any(s in text for s in ("Name or service not known", "NameResolution", "nodename nor servname",
                               "Temporary failure in name resolution", "getaddrinfo failed")):
        return "host name not found"
    return first_line(text)[:200]


def open_store(registry: RegistryConfig, create: bool = False) -> MlflowClient:
    """A client on the configured store (tracking and registry); sets no global MLflow state.

    `create=False` (reads, alias moves): a missing SQLite store is a UserError and nothing is created.
    `create=True` (training runs, registration): its directory is created and proven writable first.
    """
    return open_uri(tracking_uri(registry), create)


def open_uri(uri: str, create: bool = False) -> MlflowClient:
    """open_store on a tracking URI decided already (tracking_uri): what a command's registry handle opens, once."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        if not create:
            _require_sqlite_file(uri)
        # SQLite creates the file but not its directory.
        ensure_writable_dir(db.parent, f"the directory of {_origin()}")
    bound_mlflow_http_retries()
    if db is not None:
        ready_sqlite_store(uri)
    quiet_mlflow_links()
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except UnsupportedModelRegistryStoreURIException:
        raise UserError(
            f"{_origin()}={clean_url(uri)!r}: not a tracking URI MLflow supports; use sqlite:///path/mlflow.db, "
            "http(s)://host:port of a tracking server, or a database URI (postgresql://, mysql://)"
        ) from None


MIGRATION_LOCK_SUFFIX = ".migrate.lock"
MIGRATION_WAIT_S = 600.0
"""Longest wait for another process's migration of the same store (a fresh store migrates in seconds; the lock
is the kernel's, so a process that dies mid-migration releases it at once)."""


@functools.cache
def ready_sqlite_store(uri: str) -> None:
    """Open the SQLite store at `uri` once per process, under a file lock beside it: MLflow creates and migrates it
    on first open (its tracking store, then its registry store), and two processes migrating one file at once fail.
    Later opens in this process reuse MLflow's store objects. A store in a directory this user may not write (read
    only, e.g. a shared copy) is opened without the lock: nobody can be migrating it from here."""
    from filelock import FileLock, Timeout

    db = sqlite_path(uri)
    assert db is not None, uri
    lock = FileLock(f"{db}{MIGRATION_LOCK_SUFFIX}", timeout=MIGRATION_WAIT_S)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{db}: another process has been creating or migrating this MLflow store for "
                        f"{MIGRATION_WAIT_S:.0f} s; wait for it, or stop it and run again") from None
    except OSError:  # the lock file cannot be created here
        if not db.is_file():
            raise
        lock = None
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # the tracking store: creates the tables, runs the migrations
        client.search_registered_models(max_results=1)  # the registry store on the same file: checks them
    finally:
        if lock is not None:
            lock.release()


def configure(registry: RegistryConfig, create: bool = False) -> MlflowClient:
    """open_store, and point MLflow's fluent API at the same store: only for code that uses it (mlflow.start_run,
    mlflow.register_model, pyfunc logging, load_generator("models:/...")); everything else takes the client."""
    client = open_store(registry, create=create)
    use_store(client.tracking_uri)
    return client


def use_store(uri: str) -> None:
    """Point MLflow's fluent API (and the flows' outage and retry checks, which read it) at `uri`, creating nothing.
    A flow does this once, in its config step."""
    quiet_mlflow_links()
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # MLflow also exports the URI to the environment; undo that, or the next configure() with another config
    # would read it back as the user's MLFLOW_TRACKING_URI.
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported


def experiment_tags(registry: RegistryConfig, task: str = GENERATION) -> dict[str, str]:
    """Tags that mark the experiment as model training, with a description of what its runs train (`task`: the
    family's task kind, gan_core.config.catalogue.TASKS).

    `mlflow.experimentKind` records the kind (MLflow 3.17's UI mode still follows `?workflowType=`, see
    MODEL_TRAINING_VIEW); `mlflow.note.content` is the description the experiment page shows."""
    kind = TASKS[task]
    return {
        EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
        NOTE_TAG: (
            # A plain first sentence: the experiments list shows the description's start as raw text.
            f"Trainings of {registry.model_name} by ganops: each run trains one {kind.package} (a model that "
            f"{kind.does}), is named `<arch>-<loss>-<steps>steps-<data version>` and says in its description what "
            "it trained, what the gate decided and which Prefect flow run ran it. Params: the settings runs are "
            "compared by (the whole config is the run's config.yaml); tags: the lineage (data version, git "
            "commit, config hash); metrics: the losses per step and the evaluation (`fid_<extractor>`, ...); the "
            "`samples` image chart: the sample grids by step. The Datasets column names the prepared data and its "
            "DVC md5.\n\n"
            f"Every evaluated {kind.package} becomes a version of `{registry.model_name}`; the gate's decision is "
            f"on each version's page and the promoted one is `{registry.model_uri()}`."
        ),
    }


def experiment_id(registry: RegistryConfig, client: MlflowClient | None = None, task: str = GENERATION) -> str:
    """The id of the model's experiment (registry.experiment_name), created (with its artifact location and
    experiment_tags for `task`) when absent.

    An existing experiment gets the tags it lacks; values already there (a description edited in the UI) stay."""
    client = client or open_store(registry)
    return ensure_experiment(client, registry.experiment_name, experiment_artifact_location(registry),
                             experiment_tags(registry, task))


def ensure_experiment(client: MlflowClient, name: str, location: str | None, tags: Mapping[str, str]) -> str:
    """The id of experiment `name`, created with `location` and `tags` when absent; an existing one gets the tags
    it lacks (values already there stay)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=location, tags=dict(tags))
        except mlflow.exceptions.MlflowException:
            # Another process created it between our lookup and our create.
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in tags.items():
        if key not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id
