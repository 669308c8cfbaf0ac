"""Encode Arrow feature columns into a :class:`~streamlearn.features.FeatureBatch` in bulk.

The JSON path hands each event's mapping to the learner's hasher. For big
batches this module does the same encoding column by column: a numeric or
boolean column hashes its *name* once, a string column hashes each *distinct*
value once (dictionary encoding), and everything else is numpy. The slots and
signs are those of :func:`streamlearn.features.feature_slot`, so both paths
give the same batch (the tests check it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamlearn.contract import RULES
from streamlearn.errors import ValidationError
from streamlearn.features import FeatureBatch, FeatureHasher, cross_batch, feature_slot

__all__ = ["ColumnEncoder", "list_items"]


def list_items(column: Any) -> tuple[np.ndarray, Any]:
    """``(parents, items)`` of a list column: its items flattened, and for each
    the row it belongs to. A null row has no items even where its offsets span
    some (valid Arrow, which ``pc.list_parent_indices`` would count).

    >>> arr = pa.ListArray.from_arrays(pa.array([0, 2, 4], pa.int32()),
    ...                                pa.array(["a", "b", "c", "d"]),
    ...                                mask=pa.array([False, True]))
    >>> parents, items = list_items(arr)
    >>> parents.tolist(), items.to_pylist()
    ([0, 0], ['a', 'b'])
    """
    items = pc.list_flatten(column)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    parents = np.repeat(np.arange(len(column)), lengths)
    return parents, items


class ColumnEncoder:
    """Encode feature columns the way ``hasher`` encodes feature mappings.

    Parameters
    ----------
    hasher
        The learner's hasher (its ``bits`` and ``dense`` names).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from streamlearn.features import FeatureHasher
    >>> hasher = FeatureHasher(bits=8, dense=["age"])
    >>> table = pa.table({"age": [42.0, None], "city": ["Lyon", "Oslo"]})
    >>> batch = ColumnEncoder(hasher).encode(dict(zip(table.column_names, table.columns)), 2)
    >>> ref = hasher.encode([{"age": 42.0, "city": "Lyon"}, {"city": "Oslo"}])
    >>> batch.offsets.tolist() == ref.offsets.tolist()
    True
    >>> sorted(batch.indices.tolist()) == sorted(ref.indices.tolist())
    True
    """

    def __init__(self, hasher: FeatureHasher) -> None:
        self.hasher = hasher
        self._dense = {name: hasher.n_hashed + i for i, name in enumerate(hasher.dense)}
        self._slots: dict[tuple[str, str | None], tuple[int, float]] = {}

    def _slot(self, name: str, value: str | None) -> tuple[int, float]:
        key = (name, value)
        got = self._slots.get(key)
        if got is None:
            if value is None and name in self._dense:
                got = (self._dense[name], 1.0)
            else:
                slot, sign = feature_slot(name, value, bits=self.hasher.bits)
                got = (slot, float(sign))
            if len(self._slots) > 1 << 20:
                self._slots.clear()
            self._slots[key] = got
        return got

    def encode(self, columns: Mapping[str, Any], n_rows: int) -> FeatureBatch:
        """One batch of ``n_rows`` events from feature name to pyarrow array."""
        rows: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        values: list[np.ndarray] = []
        numeric: list[np.ndarray] = []
        groups: list[str] = []  # the column of each group of entries in ``rows``
        previous = ""
        for name, column in columns.items():
            groups.extend([previous] * (len(rows) - len(groups)))
            previous = name
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            kind = column.type
            if pa.types.is_dictionary(kind):
                column = column.cast(kind.value_type)
                kind = column.type
            if pa.types.is_list(kind) or pa.types.is_large_list(kind):
                parents, flat = list_items(column)
                present = ~np.asarray(flat.is_null().to_numpy(zero_copy_only=False), bool)
                self._strings(name, flat, parents, present, rows, slots, values, numeric)
                continue
            present = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), bool)
            row_ids = np.flatnonzero(present)
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                if name in self._dense:
                    raise ValidationError(
                        f"columns.{name}", "numbers (it is a dense feature)", "strings"
                    )
                self._strings(
                    name, column, np.arange(n_rows), present, rows, slots, values, numeric
                )
                continue
            if name == "":
                rule = RULES["features.empty_name"]
                raise ValidationError("columns", rule.expected, rule.got)
            slot, sign = self._slot(name, None)
            data = column.filter(pa.array(present)) if len(row_ids) < n_rows else column
            x = np.asarray(data.to_numpy(zero_copy_only=False), dtype=np.float64)
            rows.append(row_ids)
            slots.append(np.full(len(row_ids), slot, np.int64))
            values.append(x * sign)
            numeric.append(np.full(len(row_ids), not pa.types.is_boolean(kind)))
        groups.extend([previous] * (len(rows) - len(groups)))
        batch = _assemble(rows, slots, values, numeric, n_rows, self.hasher.n_slots)
        if not self.hasher.crosses:
            return batch
        return self._crossed(batch, groups, rows, n_rows)

    def _crossed(
        self, batch: FeatureBatch, groups: list[str], rows: list[np.ndarray], n_rows: int
    ) -> FeatureBatch:
        """The hasher's crosses: a column's entries in a row follow those of the
        columns before it (``_assemble`` sorts entries by row, stably)."""
        at = batch.offsets[:-1].copy()
        spans: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        crossed = {name for pair in self.hasher.crosses for name in pair}
        for name, row in zip(groups, rows, strict=True):
            counts = np.bincount(row, minlength=n_rows)
            if name in crossed:
                spans[name] = (at.copy(), counts)
            at += counts
        where = [
            {name: (int(start[i]), int(start[i] + n[i])) for name, (start, n) in spans.items()
             if n[i]}
            for i in range(n_rows)
        ]
        return cross_batch(batch, self.hasher.crosses, where, self.hasher.bits)

    def _strings(
        self,
        name: str,
        column: Any,
        parents: np.ndarray,
        present: np.ndarray,
        rows: list[np.ndarray],
        slots: list[np.ndarray],
        values: list[np.ndarray],
        numeric: list[np.ndarray],
    ) -> None:
        if not present.any():
            return
        encoded = pc.dictionary_encode(column)
        uniques = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        table = np.array([self._slot(name, u) for u in uniques], dtype=np.float64).reshape(-1, 2)
        codes = np.asarray(codes[present], dtype=np.int64)
        rows.append(parents[present])
        slots.append(table[codes, 0].astype(np.int64))
        values.append(table[codes, 1])
        numeric.append(np.zeros(len(codes), bool))


def _assemble(
    rows: list[np.ndarray],
    slots: list[np.ndarray],
    values: list[np.ndarray],
    numeric: list[np.ndarray],
    n_rows: int,
    n_slots: int,
) -> FeatureBatch:
    if not rows:
        empty = np.zeros(0, np.int64)
        return FeatureBatch(
            empty, np.zeros(0), np.zeros(n_rows + 1, np.int64), empty.astype(bool), n_slots
        )
    row = np.concatenate(rows)
    order = np.argsort(row, kind="stable")
    offsets = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=n_rows), out=offsets[1:])
    return FeatureBatch(
        np.concatenate(slots)[order],
        np.concatenate(values)[order],
        offsets,
        np.concatenate(numeric)[order],
        n_slots,
    )
