"""A pyfunc request as rows, whatever form MLflow's scoring server handed it over in.

    request_rows(frame, key="n")                          # dataframe_records / dataframe_split: a DataFrame
    request_rows({"n": np.array(2)}, key="n")             # {"inputs": {"n": 2}}: one request
    request_rows({"n": np.array([2, 3])}, key="n")        # {"inputs": {"n": [2, 3]}} or "instances": columns
    request_rows([{"n": np.array(2)}, ...], key="n")      # {"inputs": [{"n": 2}, ...]}: a list of records
    → [{"n": 2}, ...]

With no input schema (the models declare none, so that nothing is cast before they check it), MLflow's server
passes `dataframe_*` bodies as a DataFrame and `inputs`/`instances` bodies through its TF-serving parser: a dict of
columns becomes a dict of NumPy arrays (0-d for a single value), a list of records a list of such dicts. Each row
comes back here with plain Python values (0-d arrays unwrapped, arrays as lists), so the models check every form
alike and `{"inputs": {"n": 2}}` asks for what `{"dataframe_records": [{"n": 2}]}` asks for. A bad request is a
BadRequest: HTTP 400 with one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class BadRequest(MlflowException):
    """A bad serving request: HTTP 400 (INVALID_PARAMETER_VALUE) with our one-line message.

    MLflow's scoring server rewrites a predict error's message to "Failed to predict data '<the whole input
    frame, many lines>'. \\nError: ..."; the message here stays as written, so the client gets one line naming
    the row and the value, and the request is not echoed back."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):  # set once, by MlflowException.__init__
            self._message = value


def checked_rows(model_input: Any, key: str, columns: Sequence[str], accepted: str, needs: str) -> list[dict]:
    """The request rows in any form MLflow hands over (request_rows), with no unknown column and
    `key` in every row; else BadRequest. `accepted` says which columns a request has, `needs` why `key` is needed."""
    try:
        rows = request_rows(model_input, key)
    except TypeError:
        raise BadRequest(f"expected rows of {{{', '.join(columns)}}} (dataframe_records, dataframe_split, or "
                         f"inputs as columns or records), got {type(model_input).__name__}") from None
    except ValueError as e:
        raise BadRequest(str(e)) from None
    unknown = list(dict.fromkeys(str(c) for row in rows for c in row if c not in columns))
    if unknown:
        raise BadRequest(f"unknown column(s) {unknown}; {accepted}")
    if any(key not in row for row in rows):
        raise BadRequest(needs)
    return rows


def request_rows(model_input: Any, key: str) -> list[dict[str, Any]]:
    """The requests in `model_input` as dicts (one per row). A dict whose `key` holds one value is one request;
    one whose `key` holds a list is columns (one request per element). Raises TypeError for anything else."""
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, Mapping):
        request = {str(k): _plain(v) for k, v in model_input.items()}
        if not isinstance(request.get(key), list):
            return [request]
        return _columns_to_rows(request, key)
    if isinstance(model_input, list) and all(isinstance(row, Mapping) for row in model_input):
        return [{str(k): _plain(v) for k, v in row.items()} for row in model_input]
    raise TypeError(type(model_input).__name__)


def _columns_to_rows(columns: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """{"n": [2, 3], "seed": [0, 1]} → [{"n": 2, "seed": 0}, {"n": 3, "seed": 1}]; every column as long as `key`'s."""
    count = len(columns[key])
    for name, values in columns.items():
        if not isinstance(values, list) or len(values) != count:
            raise ValueError(f"column {name!r} does not hold one value per request ({count} in {key!r}); as "
                             "columns, every input is a list of the same length")
    return [{name: values[i] for name, values in columns.items()} for i in range(count)]


def _plain(value: Any) -> Any:
    """NumPy from the server's JSON parser as plain Python: a 0-d array as its value, an array as a list."""
    if isinstance(value, np.ndarray):
        return value.item() if value.ndim == 0 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
