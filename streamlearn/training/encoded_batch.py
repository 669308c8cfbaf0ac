"""Read the micro-batches the JVM encoder hands to Python.

The training job decodes, validates and hashes events in the JVM
(``io.streamlearn.flink.EventEncoder``, next to the Kafka source) and passes
Python one ``bytes`` object per micro-batch, already in CSR form. This module
turns those bytes into a :class:`~streamlearn.features.FeatureBatch` and the
labels (and weights), without copying the float64 arrays. The layout (little-endian)::

    bytes 0-3   magic b"SLE1"
    u32 n_rows, u32 nnz, u32 kind (bit 0, the label kind: 0 float64 per row, 1 JSON array;
                                   bit 1 (2): the rows' weights follow the labels)
    f64 values[nnz]
    f64 labels[n_rows]            (label kind 0 only)
    f64 weights[n_rows]           (kind bit 1 only: some event of the batch gave a weight)
    i32 offsets[n_rows + 1]
    i32 indices[nnz]
    u8  numeric[nnz]
    UTF-8 JSON array of labels    (label kind 1 only; runs to the end)

Labels of kind 0 are binary 0.0/1.0 or regression targets; kind 1 holds
multiclass classes as sent (strings or integers). A weight is the event's
``weight`` field (1.0 where it gave none); a batch whose events all weigh 1
carries none (``weights`` is None).

A batch of two events with two and one entries, binary labels, built by hand:

>>> import struct
>>> head = b"SLE1" + struct.pack("<3I", 2, 3, 0)
>>> body = struct.pack("<3d", -1.5, 1.0, 1.0) + struct.pack("<2d", 1.0, 0.0)
>>> body += struct.pack("<3i", 0, 2, 3) + struct.pack("<3i", 7, 3, 16) + bytes([1, 0, 0])
>>> batch, labels, weights = read_encoded_batch(head + body, n_slots=17)
>>> batch.n_rows, batch.indices.tolist(), batch.values.tolist(), batch.numeric.tolist()
(2, [7, 3, 16], [-1.5, 1.0, 1.0], [True, False, False])
>>> labels.tolist(), weights
([1.0, 0.0], None)

The same batch with weights 2.5 and 1 (kind 0 | 2):

>>> head = b"SLE1" + struct.pack("<3I", 2, 3, 2)
>>> body = struct.pack("<3d", -1.5, 1.0, 1.0) + struct.pack("<2d", 1.0, 0.0)
>>> body += struct.pack("<2d", 2.5, 1.0)
>>> body += struct.pack("<3i", 0, 2, 3) + struct.pack("<3i", 7, 3, 16) + bytes([1, 0, 0])
>>> read_encoded_batch(head + body, n_slots=17).weights.tolist()
[2.5, 1.0]

The same entries with multiclass labels (kind 1):

>>> head = b"SLE1" + struct.pack("<3I", 2, 3, 1)
>>> body = struct.pack("<3d", -1.5, 1.0, 1.0) + struct.pack("<3i", 0, 2, 3)
>>> body += struct.pack("<3i", 7, 3, 16) + bytes([1, 0, 0]) + b'["cat",3]'
>>> read_encoded_batch(head + body, n_slots=17)[1]
['cat', 3]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import orjson

from streamlearn.errors import ValidationError
from streamlearn.features import FeatureBatch

__all__ = ["MAGIC", "EncodedRows", "read_encoded_batch"]

MAGIC = b"SLE1"
_HEADER = 16
_JSON_LABELS, _WEIGHTS = 1, 2  # the bits of the header's kind


class EncodedRows(NamedTuple):
    """One encoded micro-batch: its features, its labels and its weights (None: all 1)."""

    features: FeatureBatch
    labels: np.ndarray | list
    weights: np.ndarray | None


def read_encoded_batch(data: bytes | bytearray | memoryview, n_slots: int) -> EncodedRows:
    """The :class:`FeatureBatch`, labels and weights in one encoded micro-batch.

    ``values`` (and float labels, and weights) are views of ``data``, not
    copies: they are read-only when ``data`` is ``bytes``. ``indices`` and
    ``offsets`` are widened to int64, as :class:`FeatureBatch` holds them.

    Raises :class:`~streamlearn.errors.ValidationError` naming what does not
    fit: the magic, the header, the length, the offsets, the slots, the
    numeric flags, the labels, the weights.
    """
    buf = memoryview(data).cast("B")
    size = len(buf)
    if size < _HEADER:
        raise ValidationError(
            "encoded batch", f"at least {_HEADER} bytes (the header)", f"{size} bytes"
        )
    if bytes(buf[:4]) != MAGIC:
        raise ValidationError("magic", repr(MAGIC), repr(bytes(buf[:4])))
    n_rows, nnz, kind = np.frombuffer(buf, "<u4", 3, 4).tolist()
    if kind > (_JSON_LABELS | _WEIGHTS):
        raise ValidationError(
            "kind", "0 to 3 (bit 0: JSON labels, bit 1: weights follow)", kind
        )
    json_labels, weighted = bool(kind & _JSON_LABELS), bool(kind & _WEIGHTS)
    fixed = _HEADER + 8 * nnz + (0 if json_labels else 8 * n_rows)
    fixed += (8 * n_rows if weighted else 0) + 4 * (n_rows + 1) + 4 * nnz + nnz
    if size < fixed or (not json_labels and size != fixed):
        expected = f"at least {fixed} bytes" if json_labels else f"{fixed} bytes"
        raise ValidationError(
            "encoded batch",
            f"{expected} for {n_rows} rows and {nnz} entries",
            f"{size} bytes (cut short or padded)",
        )
    at = _HEADER
    values = np.frombuffer(buf, "<f8", nnz, at)
    at += 8 * nnz
    labels: np.ndarray | list
    if not json_labels:
        labels = np.frombuffer(buf, "<f8", n_rows, at)
        at += 8 * n_rows
    weights = None
    if weighted:
        weights = np.frombuffer(buf, "<f8", n_rows, at)
        at += 8 * n_rows
        if n_rows and not (np.isfinite(weights).all() and weights.min() >= 0.0):
            raise ValidationError("weights", "finite numbers >= 0", "a weight out of range")
    offsets = np.frombuffer(buf, "<i4", n_rows + 1, at).astype(np.int64)
    at += 4 * (n_rows + 1)
    indices = np.frombuffer(buf, "<i4", nnz, at).astype(np.int64)
    at += 4 * nnz
    flags = np.frombuffer(buf, np.uint8, nnz, at)
    at += nnz
    if nnz and flags.max() > 1:
        raise ValidationError("numeric", "flags of 0 or 1", f"a flag {int(flags.max())}")
    if json_labels:
        try:
            labels = orjson.loads(buf[at:])
        except orjson.JSONDecodeError as exc:
            raise ValidationError("labels", "a JSON array of labels", f"bad JSON ({exc})") from None
        if type(labels) is not list or len(labels) != n_rows:
            got = f"{len(labels)} labels" if type(labels) is list else type(labels).__name__
            raise ValidationError("labels", f"a JSON array of {n_rows} labels", got)
    batch = FeatureBatch.from_arrays(indices, values, offsets, n_slots, flags.view(bool))
    return EncodedRows(batch, labels, weights)
