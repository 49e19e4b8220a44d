"""Credentials never leave the environment: every URL ganops writes goes through here first.

    clean_url("http://alice:s3cret@mlflow:5000/api?token=abc&view=1")   # 'http://mlflow:5000/api?view=1'
    redact("no model in http://alice:s3cret@mlflow:5000 (step 'x')")    # the same, for every URL inside a text
    logger.addFilter(RedactCredentials())                               # log records, tracebacks included

MLflow, SQLAlchemy, requests and libpq accept credentials in a URL (`http://user:password@host`,
`postgresql://user:password@db/name`, `...?token=...`), so a tracking URI, a study storage URL or a Prefect API URL
may carry them. ganops writes URLs into Prefect artifacts and logs, MLflow tags, run and model descriptions, the
CLI's output and error messages: each of those goes through `clean_url` (one URL) or `redact` (a text), which drop
the userinfo (`user:password@`) and every query parameter whose name looks like a secret (token, password, key,
signature, credential, ...). Everything else of the URL stays, so a link still opens the page it names.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

SECRET_QUERY_NAME = re.compile(r"token|secret|passw|pwd|key|signature|^sig$|credential|auth|session", re.IGNORECASE)
"""Query parameter names whose values are secrets: access_token, password, api_key, X-Amz-Signature, AWSAccessKeyId,
X-Amz-Credential, sig (Azure SAS), ..."""
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`()\[\]{}|\\^]+")
"""A URL inside a text: scheme://, then up to whitespace, a quote or a bracket (markdown's `(url)` and `[text]`)."""
_USERINFO = re.compile(r"(?<=://)[^/?#\s@]*@")


def clean_url(url: str) -> str:
    """`url` without its userinfo and without query parameters that carry secrets; other strings unchanged."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a malformed IPv6 host: still drop what looks like userinfo
        return _USERINFO.sub("", url)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if not SECRET_QUERY_NAME.search(k)]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to remove: keep the URL byte for byte (no re-encoding)
    # Not urlunsplit: it drops the `//` of an empty authority (postgresql:///db?host=/socket).
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def redact(text: str) -> str:
    """`text` with every URL in it cleaned (clean_url)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: _clean_match(m.group(0)), text)


def _clean_match(url: str) -> str:
    # Sentence punctuation after a URL is not part of it ("... at http://host:5000.").
    stripped = url.rstrip(".,;:!?")
    return clean_url(stripped) + url[len(stripped):]


class RedactCredentials(logging.Filter):
    """Cleans every URL in a log record: its message (with its arguments) and its traceback's text.

    On a handler it sees every record the handler writes (a logger's own filters see only the records logged to
    that logger, not its children's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Formatters write exc_text when it is set: the traceback's messages (a chained error quoting a URL)
            # are cleaned once here, before any handler prints or ships them.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
