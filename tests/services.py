"""Shared services for the `scale` tests, started on loopback by the tests themselves: PostgreSQL (pgserver ships
its binaries), an S3 endpoint (moto) and an MLflow tracking server on both, serving artifacts through itself."""

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


@contextmanager
def postgres(root: Path) -> Iterator[str]:
    """A PostgreSQL 16 in `root` (unix socket only): its SQLAlchemy URI for MLflow."""
    import pgserver

    server = pgserver.get_server(root, cleanup_mode="stop")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
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


@contextmanager
def mlflow_server(backend_uri: str, store: S3, log: Path, port: int | None = None) -> Iterator[str]:
    """`mlflow server` on the database with artifacts in S3, proxied (clients never talk to S3): its URL."""
    port = port or free_port()
    proc = start_mlflow_server(backend_uri, store, log, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc)


def start_mlflow_server(backend_uri: str, store: S3, log: Path, port: int) -> subprocess.Popen:
    """The server process, answering /health (stop it with processes.stop_process_group)."""
    env = {**os.environ, **S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": store.endpoint}
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
    its API URL."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(root), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": "", "PREFECT_UI_ENABLED": "false"}
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
