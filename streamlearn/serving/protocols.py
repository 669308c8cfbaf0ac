"""Other serving protocols beside the native ``/v1/predict``.

* The KServe **Open Inference Protocol** (v2, REST): a request carries one
  named tensor per feature (``shape [n]``, one element per event; ``BYTES``
  for strings, ``BOOL``, ``INT*``/``UINT*``/``FP*`` for numbers, ``null`` for
  an absent feature), which become the columns the Arrow path scores; the
  answer holds the tensors ``prediction``, ``probabilities`` (classifiers:
  ``[n, classes]``) and ``known_features``.
* **TF Serving**'s REST predict: ``{"instances": [{name: value, ...}, ...]}``,
  each instance the features of one event, answered ``{"predictions": [...]}``.

Both are validated at the edge like the native API: a refusal names the
field (``inputs[2].data``, ``instances[0].features.age``) in ``fields``
besides the protocol's own ``error`` string.
"""

from __future__ import annotations

import math
from typing import Any

from streamlearn.errors import ValidationError
from streamlearn.serving.model import Predictions
from streamlearn.serving.request_body import (
    EMPTY_NAME_EXPECTED,
    EMPTY_NAME_GOT,
    NO_FEATURE_EXPECTED,
    NO_FEATURE_GOT,
    BadRequest,
    ColumnBatch,
    EventBatch,
    _first_empty_row,
    _got,
    check_json,
)

__all__ = [
    "V2_NUMBER_TYPES",
    "v2_columns",
    "v2_model_metadata",
    "v2_response",
    "tf_events",
    "tf_response",
]

#: The numeric tensor datatypes of the protocol (``FP16`` values arrive as JSON numbers too).
V2_NUMBER_TYPES = frozenset(
    {
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FP16",
        "FP32",
        "FP64",
    }
)
_V2_TYPES = "BOOL, BYTES, INT8..INT64, UINT8..UINT64 or FP16..FP64"
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_OUTPUTS = ("prediction", "probabilities", "known_features")


def _bad(field: str, expected: str, got: str, status: int = 400) -> BadRequest:
    return BadRequest([ValidationError(field, expected, got)], status)


def _flat(data: Any, field: str) -> list[Any]:
    """Tensor ``data``: flat, or nested row-major as the protocol allows."""
    if type(data) is not list:
        raise _bad(field, "a JSON array of the tensor's elements", _got(data))
    if not any(type(item) is list for item in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if type(item) is list:
                if len(stack) > 8:
                    raise _bad(field, "at most 8 levels of nesting", "deeper")
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def v2_columns(doc: Any, max_events: int) -> tuple[ColumnBatch, Any, list[str]]:
    """The feature columns of an inference request, its ``id`` and the
    outputs asked for (all when the request names none).

    Raises :class:`BadRequest` (400, as the protocol has it; 413 past
    ``max_events``) naming the field.

    >>> batch, rid, outputs = v2_columns({"id": "r1", "inputs": [
    ...     {"name": "age", "datatype": "FP32", "shape": [2], "data": [31, None]},
    ...     {"name": "country", "datatype": "BYTES", "shape": [2], "data": ["FR", "DE"]}]}, 10)
    >>> batch.n_rows, batch.columns["age"].to_pylist(), rid, outputs
    (2, [31.0, None], 'r1', ['prediction', 'probabilities', 'known_features'])
    """
    import pyarrow as pa

    if type(doc) is not dict:
        raise _bad("body", "an inference request object with `inputs`", _got(doc))
    for key in doc:
        if key not in _REQUEST_KEYS:
            raise _bad(key, "no such field (id, parameters, inputs, outputs)", _got(key))
    rid = doc.get("id")
    if rid is not None and type(rid) is not str:
        raise _bad("id", "a string", _got(rid))
    inputs = doc.get("inputs")
    if type(inputs) is not list or not inputs:
        raise _bad("inputs", "a non-empty list of input tensors", _got(inputs))
    columns: dict[str, Any] = {}
    n_rows: int | None = None
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        if type(tensor) is not dict:
            raise _bad(where, "a tensor object (name, shape, datatype, data)", _got(tensor))
        name = tensor.get("name")
        if type(name) is not str:
            raise _bad(f"{where}.name", "a feature name (a string)", _got(name))
        if not name:
            raise _bad(f"{where}.name", EMPTY_NAME_EXPECTED, EMPTY_NAME_GOT)
        if name in columns:
            raise _bad(f"{where}.name", "each feature once", repr(name)[:60])
        shape = tensor.get("shape")
        if (
            type(shape) is not list
            or not shape
            or any(type(d) is not int or d < 0 for d in shape)
            or any(d != 1 for d in shape[1:])
        ):
            raise _bad(f"{where}.shape", "[n] or [n, 1]: one element per event", _got(shape))
        n = shape[0]
        if n > max_events:
            raise _bad(f"{where}.shape", f"at most {max_events} events per request", str(n), 413)
        if n_rows is None:
            n_rows = n
        elif n != n_rows:
            raise _bad(f"{where}.shape", f"{n_rows} events, as the first input", str(n))
        datatype = tensor.get("datatype")
        data = _flat(tensor.get("data"), f"{where}.data")
        if len(data) != n:
            raise _bad(f"{where}.data", f"{n} elements (its shape)", f"{len(data)} elements")
        columns[name] = _column(pa, datatype, data, where)
    assert n_rows is not None
    empty = _first_empty_row(columns, n_rows)
    if empty is not None:
        raise _bad(
            f"events[{empty}].features",
            NO_FEATURE_EXPECTED,
            f"{NO_FEATURE_GOT} (every input null at index {empty})",
        )
    outputs = list(_OUTPUTS)
    wanted = doc.get("outputs")
    if wanted is not None:
        if type(wanted) is not list:
            raise _bad("outputs", "a list of output objects", _got(wanted))
        outputs = []
        for i, out in enumerate(wanted):
            name = out.get("name") if type(out) is dict else None
            if name not in _OUTPUTS:
                raise _bad(f"outputs[{i}].name", f"one of {', '.join(_OUTPUTS)}", _got(name))
            outputs.append(name)
    return ColumnBatch(columns, n_rows), rid, outputs


def _column(pa: Any, datatype: Any, data: list[Any], where: str) -> Any:
    """One input tensor as a pyarrow array, every element checked."""
    if datatype == "BYTES":
        for j, v in enumerate(data):
            if v is not None and type(v) is not str:
                raise _bad(f"{where}.data[{j}]", "a string (BYTES) or null", _got(v))
        return pa.array(data, pa.string())
    if datatype == "BOOL":
        for j, v in enumerate(data):
            if v is not None and type(v) is not bool:
                raise _bad(f"{where}.data[{j}]", "true, false or null (BOOL)", _got(v))
        return pa.array(data, pa.bool_())
    if datatype in V2_NUMBER_TYPES:
        integer = datatype[0] in "IU"
        for j, v in enumerate(data):
            t = type(v)
            if v is None or t is int or (t is float and not integer and math.isfinite(v)):
                continue
            kind = "an integer" if integer else "a finite number"
            raise _bad(f"{where}.data[{j}]", f"{kind} ({datatype}) or null", _got(v))
        if integer:
            try:
                return pa.array(data, pa.int64())
            except (OverflowError, pa.ArrowException):
                return pa.array([None if v is None else float(v) for v in data], pa.float64())
        return pa.array([None if v is None else float(v) for v in data], pa.float64())
    raise _bad(f"{where}.datatype", _V2_TYPES, _got(datatype))


def _datatype(values: Any) -> str:
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return "BOOL"
    if kinds <= {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def v2_response(
    model: str,
    version: int,
    result: Predictions,
    request_id: Any,
    outputs: list[str],
) -> dict[str, Any]:
    """The inference response of ``result`` with the ``outputs`` asked for."""
    n = len(result)
    values = list(result.values)
    tensors: list[dict[str, Any]] = []
    for name in outputs:
        if name == "prediction":
            datatype = _datatype(values)
            data = values if datatype != "BYTES" else [str(v) for v in values]
            tensors.append({"name": name, "datatype": datatype, "shape": [n], "data": data})
        elif name == "probabilities" and result.probabilities is not None:
            k = len(result.classes or ())
            tensors.append(
                {
                    "name": name,
                    "datatype": "FP64",
                    "shape": [n, k],
                    "data": result.probabilities,
                    "parameters": {"classes": ",".join(str(c) for c in result.classes or ())},
                }
            )
        elif name == "known_features" and result.known is not None:
            tensors.append(
                {"name": name, "datatype": "INT64", "shape": [n], "data": result.known}
            )
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": tensors}
    if request_id is not None:
        doc["id"] = request_id
    return doc


def v2_model_metadata(
    model: str, versions: list[int], classes: tuple[Any, ...] | None
) -> dict[str, Any]:
    """The model metadata of the protocol: a hashed-features model takes any
    feature name, so ``inputs`` lists the one input shape every feature has."""
    if classes is None:
        prediction = "FP64"
    else:
        prediction = _datatype(classes)
    outputs = [{"name": "prediction", "datatype": prediction, "shape": [-1]}]
    if classes is not None:
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)]})
    outputs.append({"name": "known_features", "datatype": "INT64", "shape": [-1]})
    return {
        "name": model,
        "versions": [str(v) for v in versions],
        "platform": "streamlearn",
        "inputs": [
            # any name: the model hashes feature names, so it has no fixed list of inputs
            {"name": "*", "datatype": "BYTES", "shape": [-1]},
            {"name": "*", "datatype": "FP64", "shape": [-1]},
            {"name": "*", "datatype": "BOOL", "shape": [-1]},
        ],
        "outputs": outputs,
    }


def tf_events(doc: Any, max_events: int) -> EventBatch:
    """The events of a TF Serving predict request ``{"instances": [...]}``,
    each instance the features of one event, validated as the native
    envelope is (fields named ``instances[i].features.NAME``)."""
    if type(doc) is not dict or "instances" not in doc:
        raise _bad("body", '{"instances": [{feature: value, ...}, ...]}', _got(doc))
    for key in doc:
        if key not in ("instances", "signature_name"):
            raise _bad(key, "no field besides `instances` (and `signature_name`)", _got(key))
    instances = doc["instances"]
    if type(instances) is not list:
        raise _bad("instances", "a list of instances", _got(instances))
    try:
        batch = check_json(
            {"events": [{"features": inst} for inst in instances]}, max_events
        )
    except BadRequest as exc:
        renamed = [
            ValidationError(p.field.replace("events", "instances", 1), p.expected, p.got)
            for p in exc.problems
        ]
        raise BadRequest(renamed, exc.status) from None
    return batch


def tf_response(result: Predictions, version: int) -> dict[str, Any]:
    """``{"predictions": [...]}``, with the classes and probabilities of a
    classifier and each event's known features beside it."""
    doc: dict[str, Any] = {"predictions": result.values, "model_version": str(version)}
    if result.probabilities is not None:
        doc["classes"] = result.classes
        doc["probabilities"] = result.probabilities
    if result.known is not None:
        doc["known_features"] = result.known
    return doc
