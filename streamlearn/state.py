"""``ModelState``: a learner's complete state as named numpy arrays + metadata.

It is the one representation of a model that crosses every boundary
(checkpoints, merging, the model store, serving), stored and sent as Arrow
IPC bytes — never pickle.

Arrays of a linear learner (``n_slots`` is ``2**bits`` plus the dense
features; ``K`` the number of classes of a softmax learner):

=====================  =====================  ========================================
name                   shape                  meaning
=====================  =====================  ========================================
``weights``            (n_slots,) / (n, K)    the model's weights
``intercept``          (1,) / (K,)            the intercept(s)
``adagrad.g2``         like ``weights``       AdaGrad: sum of squared gradients
``adam.m``/``adam.v``  like ``weights``       Adam: first and second moments
``ftrl.z``/``ftrl.n``  like ``weights``       FTRL-Proximal: ``z`` and ``n``
``normalized.g2``      like ``weights``       Normalized: sum of squared gradients
``normalized.scale``   (n_slots,)             ... largest ``|x|`` seen per slot
``normalized.n``       (2,)                   ... ``[N, T]``: sums over events
``intercept.<opt>``    like ``intercept``     the intercept's own accumulators
                                              (``intercept_lr=None``)
``factors``            (n_slots, k)           factorization machine: the factors
``factors.<opt>``      like ``factors``       ... their optimiser's accumulators
``l1.cum``             like ``weights``       L1 penalty applied so far, per weight
``l1.total``           (1,)                   L1 penalty owed to every weight so far
``scaler.mean``        (n_slots,)             online scaler: running mean per slot
``scaler.var``         (n_slots,)             ... population variance per slot
``scaler.count``       (n_slots,)             ... numeric values seen per slot
=====================  =====================  ========================================

Metadata (JSON-able ``dict``):

- ``kind``: the learner's class name (``"LogisticRegression"``...);
- ``params``: its constructor arguments, the optimiser as
  ``{"name": "Adam", "params": {...}}``;
- ``classes``: the class labels, in the column order of ``weights``;
- ``bits``, ``n_slots``: the hashing width;
- ``n_learned`` (events), ``n_steps`` (optimiser steps, i.e. batches):
  counts; merging code may sum ``n_learned`` and must keep ``n_steps``
  meaningful for Adam's bias correction and SGD's schedule;
- ``mergeable``: whether arrays may be averaged across learners.

Merging learners means averaging (or summing deltas of) arrays with the same
name and shape, each array by its rule in ``streamlearn.merge.MERGE_RULES``.
A learner rebuilt with :func:`streamlearn.learners.learner_from_state` from
the result predicts from it exactly.

>>> import numpy as np
>>> s = ModelState({"weights": np.arange(4.0)}, {"kind": "Demo"})
>>> t = ModelState.from_bytes(s.to_bytes())
>>> t.arrays["weights"].tolist(), t.meta["kind"]
([0.0, 1.0, 2.0, 3.0], 'Demo')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from streamlearn.arrow_ipc import ipc_stream_bytes
from streamlearn.errors import StateError

__all__ = ["ModelState", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META_KEY = b"streamlearn.meta"
_SHAPES_KEY = b"streamlearn.shapes"


@dataclass
class ModelState:
    """Named numpy arrays plus JSON-able metadata.

    Parameters
    ----------
    arrays
        Name → array (any shape, numeric or boolean dtype).
    meta
        JSON-able metadata (see the module docstring).
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.arrays.items())
        return f"ModelState(kind={self.meta.get('kind')!r}, arrays=[{shapes}])"

    def to_bytes(self) -> bytes:
        """Arrow IPC stream bytes of :meth:`to_arrow`: one row, one list column per
        array (zero-copy from numpy), the metadata and shapes as JSON in the schema."""
        return ipc_stream_bytes(self.to_arrow())

    def to_arrow(self) -> pa.RecordBatch:
        """The record batch :meth:`to_bytes` writes (its columns are views of the
        arrays): what a store can write as it is, without the bytes in between."""
        columns = []
        shapes = {}
        for name, array in self.arrays.items():
            a = np.ascontiguousarray(array)
            shapes[name] = {"shape": list(a.shape), "dtype": a.dtype.str}
            flat = pa.array(a.reshape(-1))
            bounds = pa.array([0, len(flat)], pa.int64())
            columns.append(pa.LargeListArray.from_arrays(bounds, flat))
        try:
            meta = json.dumps({"format": FORMAT_VERSION, **self.meta}).encode()
        except (TypeError, ValueError) as exc:
            raise StateError(f"model state metadata is not JSON-able: {exc}") from exc
        schema_meta = {_META_KEY: meta, _SHAPES_KEY: json.dumps(shapes).encode()}
        return pa.RecordBatch.from_arrays(columns, names=list(self.arrays), metadata=schema_meta)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview | pa.Buffer) -> ModelState:
        """Read :meth:`to_bytes` output. Arrays are read-only views of ``data``
        (copy before changing them)."""
        try:
            buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
            batch = pa.ipc.open_stream(buffer).read_next_batch()
        except (pa.ArrowInvalid, StopIteration) as exc:
            raise StateError(
                "not a streamlearn model state (expected Arrow IPC bytes from "
                f"ModelState.to_bytes): {exc}"
            ) from exc
        return cls.from_arrow(batch)

    @classmethod
    def from_arrow(cls, data: pa.RecordBatch | pa.Table) -> ModelState:
        """Read the record batch :meth:`to_bytes` writes, or a table of it, such as
        a store version's (whose own schema keys are ignored), without writing
        it out again. Arrays are read-only views of ``data``'s buffers.

        >>> s = ModelState({"weights": np.arange(3.0)}, {"kind": "Demo"})
        >>> batch = pa.ipc.open_stream(s.to_bytes()).read_next_batch()
        >>> ModelState.from_arrow(pa.Table.from_batches([batch])).arrays["weights"].tolist()
        [0.0, 1.0, 2.0]
        """
        try:
            schema_meta = data.schema.metadata or {}
            meta = json.loads(schema_meta[_META_KEY])
            shapes = json.loads(schema_meta[_SHAPES_KEY])
        except (KeyError, ValueError) as exc:
            raise StateError(
                "not a streamlearn model state (its schema lacks the metadata "
                f"ModelState.to_bytes writes): {exc}"
            ) from exc
        version = meta.pop("format", None)
        if version != FORMAT_VERSION:
            raise StateError(
                f"model state format {version!r} is not supported (expected {FORMAT_VERSION}); "
                "upgrade streamlearn or re-export the model"
            )
        arrays = {}
        for name, column in zip(data.schema.names, data.columns, strict=True):
            if isinstance(column, pa.ChunkedArray):
                column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
            info = shapes[name]
            flat = column.values.to_numpy(zero_copy_only=False)
            arrays[name] = flat.astype(np.dtype(info["dtype"]), copy=False).reshape(info["shape"])
        return cls(arrays, meta)

    def copy(self) -> ModelState:
        """A deep copy (writable arrays)."""
        arrays = {k: np.array(v) for k, v in self.arrays.items()}
        return ModelState(arrays, json.loads(json.dumps(self.meta)))
