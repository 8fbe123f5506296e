"""The Open Inference Protocol (v2) codec: KServe's InferRequest in, the model matrix out; the
answer back as an InferResponse. Kept apart from the model, as MLServer keeps its codecs.

Two request shapes are accepted:
- one input per column, named as in training (shape [rows] or [rows, 1]), numeric datatypes for
  numeric columns, BYTES for categorical ones; inputs not in the contract are ignored and counted;
- a single input of shape [rows, columns] in contract column order (BYTES allows mixed values).
KServe's stock decoding reads only the first tensor unless the request says "pd", and builds a
DataFrame per request; this reads the tensors' lists directly (a numpy round trip costs more than a row's work).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from churnflow.predictor.request_decoding import Aligned, Aligner, RequestError

NUMERIC_TYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)


def check_rows(rows: int, label: str, max_batch: int) -> None:
    """A request carries at least one row and at most `max_batch` (both protocols)."""
    if rows == 0:
        raise RequestError(f"{label}: expected at least one row, got none")
    if rows > max_batch:
        raise RequestError(f"{label}: {rows} rows exceed the batch limit of {max_batch}")


def decode(request: InferRequest, aligner: Aligner, max_batch: int) -> Aligned:
    """The request's tensors as the model matrix; RequestError (a 400) naming the input otherwise."""
    inputs = request.inputs or []
    if not inputs:
        raise RequestError("inputs: expected at least one input tensor")
    tensors = {tensor.name: _tensor_values(tensor) for tensor in inputs}
    if len(inputs) == 1 and inputs[0].name not in aligner.known:
        name = inputs[0].name
        shape, values = tensors[name]
        expected = len(aligner.input_columns)
        if len(shape) != 2 or shape[1] != expected:
            raise RequestError(
                f"inputs[{name!r}]: a single input must have shape [rows, {expected}] "
                f"(columns {', '.join(aligner.input_columns)}), got {shape}"
            )
        check_rows(shape[0], "inputs", max_batch)
        records = [values[i : i + expected] for i in range(0, len(values), expected)]
        return aligner.encode_records(records, "inputs", numeric_strings=inputs[0].datatype == "BYTES")
    for tensor in inputs:
        shape = tensors[tensor.name][0]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise RequestError(f"inputs[{tensor.name!r}]: expected shape [rows] or [rows, 1], got {shape}")
        if tensor.name in aligner.numeric and tensor.datatype == "BYTES":
            raise RequestError(f"inputs[{tensor.name!r}]: expected a numeric datatype (INT64 or FP64), got BYTES")
    counts = {len(values) for name, (_, values) in tensors.items() if name in aligner.known}
    if len(counts) > 1:
        raise RequestError(f"inputs: every input must have the same number of rows, got {sorted(counts)}")
    rows = counts.pop() if counts else 0
    check_rows(rows, "inputs", max_batch)
    return aligner.encode_columns({name: values for name, (_, values) in tensors.items()}, rows)


def encode(
    model_name: str, model_version: str | None, request_id: str | None, churn: list[int], probability: list[float]
) -> InferResponse:
    """The answer: outputs `churn` (INT64) and `probability` (FP64), one value per row."""
    rows = len(churn)
    return InferResponse(
        response_id=request_id or str(uuid.uuid4()),
        model_name=model_name,
        model_version=model_version,
        infer_outputs=[
            InferOutput(name="churn", shape=[rows], datatype="INT64", data=churn),
            InferOutput(name="probability", shape=[rows], datatype="FP64", data=probability),
        ],
    )


def _tensor_values(tensor: Any) -> tuple[list[int], list[Any]]:
    """A v2 input's shape and its values as one flat Python list (row-major), checked against each other.

    JSON tensors are read from their lists directly (a numpy round trip costs more than one row's work); binary
    tensors go through KServe's as_numpy.
    """
    datatype = tensor.datatype
    if datatype != "BYTES" and datatype not in NUMERIC_TYPES:
        raise RequestError(f"inputs[{tensor.name!r}]: unsupported datatype {datatype}")
    shape = [int(d) for d in tensor.shape]
    if any(d < 0 for d in shape):
        raise RequestError(f"inputs[{tensor.name!r}]: shape {shape} has a negative dimension")
    if getattr(tensor, "_raw_data", None) is not None:
        try:
            values = tensor.as_numpy().reshape(-1).tolist()
        except Exception as error:  # raw bytes that do not fit the shape or datatype
            raise RequestError(f"inputs[{tensor.name!r}]: {error}") from None
    else:
        values = _flatten(tensor.data)
    size = 1
    for dimension in shape:
        size *= dimension
    if len(values) != size:
        raise RequestError(f"inputs[{tensor.name!r}]: shape {shape} needs {size} values, got {len(values)}")
    if datatype == "BYTES":
        values = [_text(v) for v in values]
    return shape, values


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).tolist()
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative, so deeply nested input cannot exhaust the recursion limit
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _text(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("inputs: BYTES data is not valid UTF-8") from None
    return value
