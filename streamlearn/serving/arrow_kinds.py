"""Arrow type ids grouped the way the service treats columns, for quick checks.

Comparing a column's ``type.id`` with these sets is one attribute read and a
set look-up, where ``pyarrow.types.is_*`` is a Python call per question: it
matters with dozens of columns per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

__all__ = ["ArrowKinds", "arrow_kinds"]


@dataclass(frozen=True)
class ArrowKinds:
    """Type ids of the column kinds a prediction request may carry."""

    integers: frozenset[int]
    floats: frozenset[int]
    half_float: int
    boolean: int
    strings: frozenset[int]
    lists: frozenset[int]
    dictionary: int


@cache
def arrow_kinds() -> ArrowKinds:
    """The type ids, worked out once from pyarrow itself.

    >>> import pyarrow as pa
    >>> kinds = arrow_kinds()
    >>> pa.float64().id in kinds.floats, pa.large_string().id in kinds.strings
    (True, True)
    """
    import pyarrow as pa

    ints = (pa.int8(), pa.int16(), pa.int32(), pa.int64())
    uints = (pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64())
    return ArrowKinds(
        integers=frozenset(t.id for t in ints + uints),
        floats=frozenset(t.id for t in (pa.float16(), pa.float32(), pa.float64())),
        half_float=pa.float16().id,
        boolean=pa.bool_().id,
        strings=frozenset((pa.string().id, pa.large_string().id)),
        lists=frozenset((pa.list_(pa.string()).id, pa.large_list(pa.string()).id)),
        dictionary=pa.dictionary(pa.int32(), pa.string()).id,
    )
