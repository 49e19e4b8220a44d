"""Credentials in URLs (gan_core.redact): removed from every URL ganops writes, the rest of the URL kept."""

from __future__ import annotations

import logging
import sys

import pytest

from gan_core.errors import ServiceUnavailable, UserError
from gan_core.redact import RedactCredentials, clean_url, redact


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("http://alice:s3cret@mlflow.example.org:5000/", "http://mlflow.example.org:5000/"),
        ("https://token@host/api/2.0/mlflow", "https://host/api/2.0/mlflow"),
        ("http://alice:p%40ss@127.0.0.1:5000", "http://127.0.0.1:5000"),  # an encoded @ in the password
        ("postgresql+psycopg2://mlflow:s3cret@db/mlflow", "postgresql+psycopg2://db/mlflow"),
        ("postgresql://postgres:@/postgres?host=/tmp/pg", "postgresql:///postgres?host=/tmp/pg"),
        ("https://host/x?token=abc&view=1", "https://host/x?view=1"),
        ("https://bucket.s3.amazonaws.com/k?X-Amz-Credential=a&X-Amz-Signature=b&X-Amz-Expires=60",
         "https://bucket.s3.amazonaws.com/k?X-Amz-Expires=60"),
        ("https://acct.blob.core.windows.net/c?sv=2020&sig=abc", "https://acct.blob.core.windows.net/c?sv=2020"),
        ("postgresql://db/optuna?user=u&password=p", "postgresql://db/optuna?user=u"),
        ("http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning",
         "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning"),  # untouched, byte for byte
        ("sqlite:////tmp/x/mlflow.db", "sqlite:////tmp/x/mlflow.db"),
        ("models:/ganops-generator@champion", "models:/ganops-generator@champion"),  # no authority: no userinfo
        ("not a url", "not a url"),
    ],
)
def test_clean_url_drops_userinfo_and_secret_query_parameters(url: str, clean: str) -> None:
    assert clean_url(url) == clean


def test_redact_cleans_every_url_in_a_text_and_leaves_the_rest() -> None:
    text = ("MLflow run [tiny](http://alice:s3cret@h:5000/#/x?workflowType=machine_learning), "
            "storage `postgresql://u:pw@db/optuna`; see http://bob:hunter2@h2/api.")
    assert redact(text) == ("MLflow run [tiny](http://h:5000/#/x?workflowType=machine_learning), "
                            "storage `postgresql://db/optuna`; see http://h2/api.")
    assert redact("![samples](data:image/png;base64,AAAA)") == "![samples](data:image/png;base64,AAAA)"


def test_user_errors_and_service_outages_never_quote_credentials() -> None:
    assert "s3cret" not in str(UserError("no registered model 'g' in http://alice:s3cret@h:5000"))
    outage = ServiceUnavailable("MLflow tracking server", "http://alice:s3cret@h:5000", "config", "refused", "start it")
    assert "s3cret" not in str(outage) and "http://h:5000" in str(outage)


def test_log_records_are_cleaned_message_arguments_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("ganops.test.redact")
    logger.addFilter(RedactCredentials())
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("tracking %s", "http://alice:s3cret@h:5000")
            try:
                raise RuntimeError("request to http://alice:s3cret@h:5000/api failed")
            except RuntimeError:
                logger.exception("failed")
    finally:
        logger.filters.clear()
    assert caplog.records[0].getMessage() == "tracking http://h:5000"
    formatted = logging.Formatter().format(caplog.records[1])
    assert "request to http://h:5000/api failed" in formatted and "s3cret" not in formatted


def test_the_cli_prints_errors_and_tracebacks_without_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    from gan_core.cli import print_error, print_internal_error

    print_error("no store at http://alice:s3cret@h:5000")
    try:
        raise ValueError("bad answer from http://alice:s3cret@h:5000")
    except ValueError as e:
        print_internal_error("ValueError", e)
    sys.stderr.flush()
    err = capsys.readouterr().err
    assert "s3cret" not in err and "http://h:5000" in err and "Traceback" in err
