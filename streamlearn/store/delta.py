"""Delta versions: what changed between a version and its parent, and how to apply it.

A model in the store is a :class:`~streamlearn.state.ModelState` table (one
row, one list column per array). Its *per-slot* arrays are those whose first
dimension is the model's ``n_slots`` (``weights``, optimiser accumulators,
``l1.cum``, ``scaler.*``, ``factors``...), except ``intercept`` and
``intercept.*`` (one value per class); every other array is *small*.

A :class:`Changes` holds, for sorted distinct ``slots``, the **new values**
(not increments) of every per-slot array at those slots, every small array
whole, and the model's metadata. Applying it is an assignment, so applying
it twice is harmless.

>>> import numpy as np
>>> from streamlearn.state import ModelState
>>> old = ModelState({"weights": np.zeros(8), "intercept": np.zeros(1)}, {"n_slots": 8})
>>> new = old.copy(); new.arrays["weights"][[2, 5]] = [0.5, -1.0]; new.arrays["intercept"][0] = 0.1
>>> c = Changes.between(old, new)
>>> c.slots.tolist(), c.rows["weights"].tolist(), c.small["intercept"].tolist()
([2, 5], [0.5, -1.0], [0.1])
>>> c.apply_to(old.copy()).arrays["weights"].tolist()
[0.0, 0.0, 0.5, 0.0, 0.0, -1.0, 0.0, 0.0]
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from streamlearn.errors import StoreError, ValidationError
from streamlearn.state import FORMAT_VERSION, ModelState
from streamlearn.store.lineage import Lineage

__all__ = [
    "Changes",
    "Update",
    "Chain",
    "SnapshotPolicy",
    "BrokenChain",
    "StaleParent",
    "per_slot_names",
    "model_n_slots",
    "DELTA_KEY",
]

#: Schema key of a delta file describing it (JSON, see docs/store.md).
DELTA_KEY = b"streamlearn.delta"
DELTA_FORMAT = 1
_META_KEY = b"streamlearn.meta"
_SHAPES_KEY = b"streamlearn.shapes"


class BrokenChain(StoreError):
    """A version cannot be materialised: a file of its delta chain is missing or damaged.

    ``model`` and ``version`` name the version whose file is bad. A server
    keeps serving its last good version; the writer's next commit should be
    a snapshot (:meth:`SnapshotPolicy.request_snapshot`).
    """

    def __init__(self, message: str, model: str, version: int) -> None:
        super().__init__(message)
        self.model = model
        self.version = version


class StaleParent(StoreError):
    """A delta was refused: its parent is not the model's latest version."""


def _by_class(name: str) -> bool:
    return name == "intercept" or name.startswith("intercept.")


def per_slot_names(shapes: Mapping[str, Any], n_slots: int) -> list[str]:
    """Names of the per-slot arrays among ``shapes`` (``{name: {"shape": [...], ...}}``).

    >>> per_slot_names({"weights": {"shape": [8]}, "intercept": {"shape": [8]},
    ...                 "l1.total": {"shape": [1]}}, 8)
    ['weights']
    """
    out = []
    for name, info in shapes.items():
        shape = info["shape"]
        if len(shape) >= 1 and shape[0] == n_slots and not _by_class(name):
            out.append(name)
    return out


def model_n_slots(meta: Mapping[str, Any], shapes: Mapping[str, Any]) -> int | None:
    """The model's slot count: ``meta["n_slots"]``, else the length of ``weights``."""
    n = meta.get("n_slots")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return n
    w = shapes.get("weights")
    if w is not None and len(w["shape"]) >= 1:
        return int(w["shape"][0])
    return None


def _shapes(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()}


def _check_slots(slots: object, field_name: str = "slots") -> np.ndarray:
    a = np.asarray(slots)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValidationError(field_name, "a 1-d array of integer slot indices", repr(a.dtype))
    a = a.astype(np.int64, copy=False)
    if len(a) and (a[0] < 0 or (len(a) > 1 and (np.diff(a) <= 0).any())):
        raise ValidationError(
            field_name, "ascending distinct slot indices >= 0",
            f"{len(a)} slots from {a[:1].tolist()} to {a[-1:].tolist()}",
        )
    return a


@dataclass
class Changes:
    """The slots that changed, the new values of every per-slot array there,
    the small arrays whole and the model's metadata.

    Parameters
    ----------
    slots
        Ascending distinct slot indices (any integer dtype; kept as ``int64``).
    rows
        Per-slot array name -> its new values at ``slots``: shape
        ``(len(slots),) + array.shape[1:]``, the array's own dtype.
    small
        Small array name -> the whole array (``intercept``, ``l1.total``...).
    meta
        The model's metadata (:attr:`ModelState.meta`) at this version;
        ``None`` only in a follower :class:`Update` with nothing new.
    """

    slots: np.ndarray
    rows: dict[str, np.ndarray]
    small: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.slots = _check_slots(self.slots)
        if not isinstance(self.rows, Mapping):
            raise ValidationError(
                "rows", "a mapping {array name: values}", type(self.rows).__name__
            )
        if not isinstance(self.small, Mapping):
            raise ValidationError(
                "small", "a mapping {array name: array}", type(self.small).__name__
            )
        k = len(self.slots)
        rows = {}
        for name, values in self.rows.items():
            v = np.asarray(values)
            if v.ndim < 1 or v.shape[0] != k:
                raise ValidationError(
                    f"rows[{name!r}]", f"{k} rows (one per slot)", f"shape {tuple(v.shape)}"
                )
            rows[name] = v
        self.rows = rows
        self.small = {name: np.asarray(v) for name, v in self.small.items()}
        both = sorted(set(self.rows) & set(self.small))
        if both:
            raise ValidationError("small", "names not also in rows", repr(both[0]))
        if self.meta is not None and not isinstance(self.meta, dict):
            raise ValidationError("meta", "a dict (ModelState.meta)", type(self.meta).__name__)

    def __repr__(self) -> str:
        return (
            f"Changes(slots={len(self.slots)}, rows={sorted(self.rows)}, "
            f"small={sorted(self.small)})"
        )

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays it carries."""
        return int(self.slots.nbytes + sum(v.nbytes for v in self.rows.values())
                   + sum(v.nbytes for v in self.small.values()))

    @classmethod
    def gather(cls, state: ModelState, slots: object) -> Changes:
        """The changes a version equal to ``state`` makes at ``slots`` (O(len(slots))).

        For a writer that knows which slots it touched since the parent
        (the union of the merged deltas' slots): the values of every per-slot
        array of ``state`` at those slots, its small arrays and metadata.
        """
        slots = _check_slots(slots)
        n = model_n_slots(state.meta, _shapes(state.arrays))
        if n is None:
            raise ValidationError("state", "a model with per-slot arrays (weights)", repr(state))
        if len(slots) and slots[-1] >= n:
            raise ValidationError("slots", f"slot indices < {n}", int(slots[-1]))
        per_slot = set(per_slot_names(_shapes(state.arrays), n))
        rows = {k: np.asarray(v)[slots] for k, v in state.arrays.items() if k in per_slot}
        small = {k: np.array(v) for k, v in state.arrays.items() if k not in per_slot}
        return cls(slots, rows, small, json.loads(json.dumps(state.meta)))

    @classmethod
    def between(cls, old: ModelState, new: ModelState) -> Changes:
        """The changes from ``old`` to ``new``, found by comparing every slot (O(model)).

        Both must have the same arrays with the same shapes and dtypes.
        """
        if _shapes(old.arrays) != _shapes(new.arrays):
            raise ValidationError(
                "new", f"the arrays of `old` {_shapes(old.arrays)}", repr(_shapes(new.arrays))
            )
        n = model_n_slots(new.meta, _shapes(new.arrays))
        if n is None:
            raise ValidationError("new", "a model with per-slot arrays (weights)", repr(new))
        changed = np.zeros(n, dtype=bool)
        for name in per_slot_names(_shapes(new.arrays), n):
            a, b = np.asarray(old.arrays[name]), np.asarray(new.arrays[name])
            diff = (a != b) & ~(_isnan(a) & _isnan(b))
            changed |= diff.reshape(n, -1).any(axis=1)
        return cls.gather(new, np.flatnonzero(changed))

    def apply_to(self, state: ModelState) -> ModelState:
        """Write these changes into ``state`` in place (its arrays must be writable);
        returns it. Cost O(slots changed) plus the small arrays."""
        for name, values in self.rows.items():
            state.arrays[name][self.slots] = values
        for name, values in self.small.items():
            state.arrays[name] = np.array(values)
        if self.meta is not None:
            state.meta = json.loads(json.dumps(self.meta))
        return state

    # -- the delta file ------------------------------------------------------------

    def to_table(self, n_slots: int, describe: Mapping[str, Any]) -> pa.Table:
        """The delta file's table: one row per changed slot (``slot`` and one
        column per per-slot array, a fixed-size list for arrays of more than
        one dimension); small arrays and the metadata in the schema."""
        slot_type = pa.uint32() if n_slots <= 2**32 else pa.int64()
        columns = [pa.array(self.slots, type=slot_type)]
        names = ["slot"]
        for name, v in self.rows.items():
            v = np.ascontiguousarray(v)
            if v.ndim == 1:
                columns.append(pa.array(v))
            else:
                width = int(np.prod(v.shape[1:]))
                columns.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), width))
            names.append(name)
        small = {
            k: {"shape": list(v.shape), "dtype": v.dtype.str, "values": v.reshape(-1).tolist()}
            for k, v in self.small.items()
        }
        header = {
            "format": DELTA_FORMAT,
            **describe,
            "n_slots": n_slots,
            "rows": {k: {"shape": list(v.shape[1:]), "dtype": v.dtype.str}
                     for k, v in self.rows.items()},
            "small": small,
        }
        meta = {
            DELTA_KEY: json.dumps(header).encode(),
            _META_KEY: json.dumps({"format": FORMAT_VERSION, **(self.meta or {})}).encode(),
        }
        return pa.Table.from_arrays(columns, names=names).replace_schema_metadata(meta)

    @classmethod
    def from_table(cls, table: pa.Table) -> tuple[Changes, dict[str, Any]]:
        """Read :meth:`to_table` output: ``(changes, header)``; ``ValueError`` if malformed."""
        schema_meta = table.schema.metadata or {}
        header = json.loads(schema_meta[DELTA_KEY])
        meta = json.loads(schema_meta[_META_KEY])
        meta.pop("format", None)
        if header.get("format") != DELTA_FORMAT:
            raise ValueError(f"delta format {header.get('format')!r}, expected {DELTA_FORMAT}")
        slots = table.column("slot").to_numpy().astype(np.int64)
        rows = {}
        for name, info in header["rows"].items():
            column = table.column(name).combine_chunks()
            dtype = np.dtype(info["dtype"])
            if pa.types.is_fixed_size_list(column.type):
                flat = column.flatten().to_numpy(zero_copy_only=False)
                rows[name] = flat.astype(dtype, copy=False).reshape([len(column), *info["shape"]])
            else:
                rows[name] = column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        small = {
            k: np.array(v["values"], dtype=np.dtype(v["dtype"])).reshape(v["shape"])
            for k, v in header["small"].items()
        }
        return cls(slots, rows, small, meta), header

    @classmethod
    def union(cls, newest_first: list[Changes]) -> Changes:
        """The changes of several consecutive deltas as one: every slot any of
        them touched, with the newest value; small arrays and metadata of the newest."""
        if len(newest_first) == 1:
            return newest_first[0]
        newest = newest_first[0]
        slots = np.concatenate([c.slots for c in newest_first])
        slots, first = np.unique(slots, return_index=True)  # first = newest occurrence
        rows = {
            name: np.concatenate([c.rows[name] for c in newest_first])[first]
            for name in newest.rows
        }
        return cls(slots, rows, dict(newest.small), newest.meta)


def _isnan(a: np.ndarray) -> np.ndarray:
    return np.isnan(a) if a.dtype.kind in "fc" else np.zeros(a.shape, dtype=bool)


@dataclass(frozen=True)
class Update:
    """What :meth:`ModelStore.changes` hands a follower holding version ``since``.

    Either ``changes`` (apply them to the held copy, with
    :meth:`Changes.apply_to`, and you hold ``version``), or ``reload`` says why
    the follower must load ``version`` whole (``store.get(version)``): a
    snapshot, a rollback, a version that went backwards (a pin), or a held
    version not on the chain. ``lineage`` is ``version`` 's, from the record
    the store read to answer (None where it read none: ``version`` at or
    below ``since``), so a follower need not read it again.
    """

    since: int
    version: int
    changes: Changes | None
    reload: str | None = None
    lineage: Lineage | None = None

    @property
    def up_to_date(self) -> bool:
        return self.version == self.since and self.reload is None


def shared(arrays: dict[str, np.ndarray], name: str) -> bool:
    """Whether anything besides ``arrays`` holds array ``name`` (or a view of it).

    An array the store owns is referenced by its dict alone; a table handed
    out by ``get`` keeps a view of it (and so a reference) alive. CPython's
    reference count tells the two apart: 2 is the dict plus the argument.
    """
    return sys.getrefcount(arrays[name]) > 2


@dataclass(frozen=True)
class Chain:
    """Where the newest version stands relative to its snapshot (:meth:`ModelStore.chain`)."""

    version: int
    base: int
    deltas: int
    delta_bytes: int
    snapshot_bytes: int
    snapshot_created_at: float | None


class SnapshotPolicy:
    """When a writer should commit a snapshot instead of a delta.

    A snapshot is due when any of these holds since the last snapshot:
    ``max_deltas`` deltas were committed, their bytes reach
    ``max_delta_bytes_ratio`` times the snapshot's, or the snapshot is
    ``max_age_s`` old; or a snapshot was requested (:meth:`request_snapshot`,
    e.g. after a reader found a broken chain or a delta was refused). ``None``
    disables a criterion.

    >>> p = SnapshotPolicy(max_deltas=3)
    >>> p.due(Chain(7, 5, 2, 100, 10_000, None)), p.due(Chain(8, 5, 3, 150, 10_000, None))
    (None, '3 deltas since snapshot 5 (max_deltas=3)')
    >>> p.request_snapshot("version 6 unreadable"); p.due(Chain(7, 5, 2, 100, 10_000, None))
    'requested: version 6 unreadable'
    """

    def __init__(
        self,
        max_deltas: int | None = 500,
        max_delta_bytes_ratio: float | None = 0.5,
        max_age_s: float | None = 600.0,
    ) -> None:
        if max_deltas is not None and (
            isinstance(max_deltas, bool) or not isinstance(max_deltas, int) or max_deltas < 1
        ):
            raise ValidationError("max_deltas", "an integer >= 1 or None", repr(max_deltas))
        for name, value in (("max_delta_bytes_ratio", max_delta_bytes_ratio),
                            ("max_age_s", max_age_s)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value <= 0
            ):
                raise ValidationError(name, "a number > 0 or None", repr(value))
        self.max_deltas = max_deltas
        self.max_delta_bytes_ratio = max_delta_bytes_ratio
        self.max_age_s = max_age_s
        self._requested: str | None = None

    def __repr__(self) -> str:
        return (
            f"SnapshotPolicy(max_deltas={self.max_deltas}, max_delta_bytes_ratio="
            f"{self.max_delta_bytes_ratio}, max_age_s={self.max_age_s})"
        )

    def request_snapshot(self, reason: str) -> None:
        """Make the next :meth:`due` say a snapshot is due (once)."""
        self._requested = reason

    def due(self, chain: Chain | None, now: float | None = None) -> str | None:
        """The reason a snapshot is due now, or ``None`` if a delta will do.

        ``chain`` is :meth:`ModelStore.chain` (``None`` when nothing is
        committed: a snapshot is due). A requested snapshot is reported once.
        """
        if self._requested is not None:
            reason, self._requested = self._requested, None
            return f"requested: {reason}"
        if chain is None:
            return "no version yet"
        if self.max_deltas is not None and chain.deltas >= self.max_deltas:
            return (
                f"{chain.deltas} deltas since snapshot {chain.base} "
                f"(max_deltas={self.max_deltas})"
            )
        if (
            self.max_delta_bytes_ratio is not None
            and chain.snapshot_bytes
            and chain.delta_bytes >= self.max_delta_bytes_ratio * chain.snapshot_bytes
        ):
            return (
                f"{chain.delta_bytes} delta bytes since snapshot {chain.base} "
                f"({chain.delta_bytes / chain.snapshot_bytes:.2f} of its {chain.snapshot_bytes}; "
                f"max_delta_bytes_ratio={self.max_delta_bytes_ratio})"
            )
        if self.max_age_s is not None and chain.snapshot_created_at is not None:
            age = (time.time() if now is None else now) - chain.snapshot_created_at
            if age >= self.max_age_s and chain.deltas:
                return f"snapshot {chain.base} is {age:.0f} s old (max_age_s={self.max_age_s})"
        return None
