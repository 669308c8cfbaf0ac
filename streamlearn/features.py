"""Events' feature mappings to a sparse micro-batch, and an online scaler.

An event's ``features`` maps names to values:

==================  ==========================================  ===========
value               becomes                                     entry value
==================  ==========================================  ===========
number              one slot for ``name``                       the number
string              one slot for ``name=value`` (one-hot)       1.0
list of strings     one slot per ``name=item`` (multi-hot)      1.0 each
true / false        the slot of ``name``                        1.0 / 0.0
==================  ==========================================  ===========

Slots come from signed feature hashing into ``2**bits`` slots. The hash is
BLAKE2b of the UTF-8 name and value, mixed in numpy: the same feature lands in
the same slot with the same sign in every process, on every machine (Python's
``hash()`` is salted per process and is never used). Names listed in
``dense`` are not hashed: each gets its own slot after the hashed ones, so
important numeric features never collide.

A micro-batch is a :class:`FeatureBatch` in CSR form (``indices``, ``values``,
``offsets``): encode it once, then predict and learn on it. Encoding a batch
does the per-item work at C level (``dict`` look-ups of names and string
values, cached, joined into one byte string that numpy reads as an array) and
the rest in numpy, so only the first sight of a name or a string value costs
Python time. When all events of a batch have the same names in the same order
and the same kinds of value as before (the usual case in a stream), only the
strings are looked up: numbers and booleans are picked by position and take
slots remembered for their names. Any value that does not fit sends the batch
the general way, which names any bad value; the output is the same either way.

>>> hasher = FeatureHasher(bits=4)
>>> batch = hasher.encode([{"age": 31.0, "country": "FR"}, {"tags": ["a", "b"], "vip": True}])
>>> batch.n_rows, batch.offsets.tolist(), batch.n_slots
(2, [0, 2, 5], 16)
>>> batch.values.tolist()  # signed by the hash
[-31.0, -1.0, -1.0, 1.0, -1.0]
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from typing import NoReturn, cast

import numpy as np

from streamlearn.contract import (
    HASH,
    MAX_BITS,
    MAX_FEATURES,
    Rejection,
    check_crosses,
    cross_entry,
    feature_name,
)
from streamlearn.errors import ValidationError

__all__ = ["FeatureBatch", "FeatureHasher", "OnlineScaler", "cross_batch", "feature_slot"]

SMALL_BATCH = 4  # batches of at most this many events are encoded in plain Python
# the hashing of streamlearn.contract.HASH
_HASH_BITS = HASH.bits  # 53: exact in a float64, so look-ups can return floats and None -> NaN
_HASH_MASK = (1 << _HASH_BITS) - 1
_MIX_1 = np.uint64(HASH.mix_1)
_MIX_2 = np.uint64(HASH.mix_2)
_GOLDEN = np.uint64(HASH.golden)
_NUMERIC_SALT = 0  # the "value" of a numeric or boolean feature
# The batch path keeps codes as 8 little-endian bytes, so that one ``bytes.join``
# over dict look-ups gives a whole array (no conversion of Python objects per entry).
_U64LE = np.dtype("<u8")
_NOT_A_STRING = bytes(8)  # the value code of a number or boolean: 0, the numeric salt
_DENSE = 1 << 63  # dense names' codes are _DENSE + position (hashes stay below 2**53)
_DENSE_U64 = np.uint64(_DENSE)
_NO_NAME = b"\xff" * 8  # the code of a name not seen yet: neither a hash nor dense
_NO_NAME_U64 = np.uint64((1 << 64) - 1)
_PLAIN_NUMBERS = frozenset((float, int))
_ONLY_DICTS = {dict}
_ONLY_STRS = {str}
_STRING, _NUMBER, _BOOLEAN = "string", "number", "boolean"  # kinds of values
_MAX_LAYOUTS = 4  # schemas whose layout over a batch is remembered
_MAX_MISFITS = 8  # batches in a row whose values do not fit a schema's kinds, then a pause
_PAUSE = 64  # batches a schema is encoded the general way before its kinds are learned again
_MAX_SCHEMAS = 4096


def _hash53(text: str, person: bytes) -> int:
    digest = hashlib.blake2b(
        text.encode("utf-8"), digest_size=HASH.digest_size, person=person
    ).digest()
    return int.from_bytes(digest, "little") & _HASH_MASK


def _hash_name(name: str) -> int:
    return _hash53(name, HASH.name_person)


def _hash_value(value: str) -> int:
    # never 0: 0 is the salt of numeric features
    return _hash53(value, HASH.value_person) or 1


def _mix(name_hash: np.ndarray, value_hash: np.ndarray) -> np.ndarray:
    """Mix two arrays of 53-bit hashes into 64-bit hashes (murmur3's finaliser)."""
    h = name_hash.astype(np.uint64) * _GOLDEN
    h ^= value_hash.astype(np.uint64)
    _finalise(h)
    return h


def _finalise(h: np.ndarray) -> np.ndarray:
    """murmur3's finaliser, on the uint64 array ``h`` in place; returns the
    scratch array it used (``h``'s shape, free for the caller to reuse)."""
    t = h >> np.uint64(33)
    h ^= t
    h *= _MIX_1
    np.right_shift(h, np.uint64(33), out=t)
    h ^= t
    h *= _MIX_2
    np.right_shift(h, np.uint64(33), out=t)
    h ^= t
    return t


_U64 = (1 << 64) - 1


def _code(n: int) -> bytes:
    return n.to_bytes(8, "little")


def _mix_one(name_hash: int, value_hash: int) -> int:
    """:func:`_mix` of one pair in plain integers (no numpy call: ~10x faster
    for a single feature; tested equal to :func:`_mix`)."""
    h = (name_hash * 0x9E3779B97F4A7C15) & _U64
    h ^= value_hash
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _U64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _U64
    return h ^ (h >> 33)


def feature_slot(name: str, value: str | None = None, bits: int = 20) -> tuple[int, int]:
    """The ``(slot, sign)`` of one hashed feature: ``name`` alone for numbers
    and booleans, ``name=value`` for strings.

    The answer is the same in every process and on every machine.

    >>> feature_slot("country", "FR", bits=20)
    (188638, -1)
    >>> feature_slot("age", bits=20)
    (648457, -1)
    """
    value_hash = _NUMERIC_SALT if value is None else _hash_value(value)
    h = _mix_one(_hash_name(name), value_hash)
    return h & ((1 << bits) - 1), -1 if h >> 63 else 1


@dataclass(eq=False)
class FeatureBatch:
    """A micro-batch of encoded events, in CSR form.

    Row ``i``'s entries are ``indices[offsets[i]:offsets[i+1]]`` (slots) and
    ``values[offsets[i]:offsets[i+1]]``. ``numeric`` flags the entries that
    came from numbers (the ones an online scaler standardises). A slot may
    appear more than once in a row (hash collisions add up).

    >>> b = FeatureBatch.from_arrays([3, 0, 3], [1.0, 2.0, 0.5], [0, 2, 3], n_slots=4)
    >>> b.n_rows, b.rows().tolist()
    (2, [0, 0, 1])
    """

    indices: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    numeric: np.ndarray
    n_slots: int
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_arrays(
        cls,
        indices: Sequence[int] | np.ndarray,
        values: Sequence[float] | np.ndarray,
        offsets: Sequence[int] | np.ndarray,
        n_slots: int,
        numeric: Sequence[bool] | np.ndarray | None = None,
    ) -> FeatureBatch:
        """Build a batch from CSR arrays, checking that they fit together."""
        idx = np.asarray(indices, dtype=np.int64)
        val = np.asarray(values, dtype=np.float64)
        off = np.asarray(offsets, dtype=np.int64)
        num = np.ones(len(idx), bool) if numeric is None else np.asarray(numeric, dtype=bool)
        if idx.ndim != 1 or val.shape != idx.shape or num.shape != idx.shape:
            raise ValidationError(
                "values", f"1-d indices, values and numeric of one length {idx.shape}",
                f"shapes {idx.shape}, {val.shape}, {num.shape}",
            )
        if off.ndim != 1 or len(off) < 1 or off[0] != 0 or off[-1] != len(idx) or (
            np.diff(off) < 0
        ).any():
            raise ValidationError(
                "offsets", f"non-decreasing offsets from 0 to {len(idx)}", off.tolist()[:10]
            )
        if len(idx) and (idx.min() < 0 or idx.max() >= n_slots):
            raise ValidationError(
                "indices", f"slots in [0, {n_slots})", f"[{idx.min()}, {idx.max()}]"
            )
        if not np.isfinite(val).all():
            raise ValidationError("values", "finite numbers", "NaN or infinity")
        return cls(idx, val, off, num, int(n_slots))

    @property
    def n_rows(self) -> int:
        """Number of events in the batch."""
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return self.n_rows

    def row_range(self, start: int, stop: int) -> FeatureBatch:
        """Rows ``start`` to ``stop`` (exclusive) as a batch of their own, whose
        arrays are views of this one's.

        >>> b = FeatureBatch.from_arrays([3, 0, 3, 1], [1.0, 2.0, 0.5, 4.0], [0, 2, 3, 4], 4)
        >>> part = b.row_range(1, 3)
        >>> part.indices.tolist(), part.values.tolist(), part.offsets.tolist()
        ([3, 1], [0.5, 4.0], [0, 1, 2])
        """
        lo, hi = self.offsets[start], self.offsets[stop]
        return FeatureBatch(
            self.indices[lo:hi], self.values[lo:hi], self.offsets[start : stop + 1] - lo,
            self.numeric[lo:hi], self.n_slots,
        )

    def rows(self) -> np.ndarray:
        """The row of every entry (computed once, then cached)."""
        rows = self._cache.get("rows")
        if rows is None:
            if self.n_rows == 1:
                rows = np.zeros(len(self.indices), np.int64)
            else:
                rows = np.repeat(np.arange(self.n_rows), self.offsets[1:] - self.offsets[:-1])
            self._cache["rows"] = rows
        return rows

    def row_sums(self, contrib: np.ndarray) -> np.ndarray:
        """Sum ``contrib`` (one row per entry, 1-d or 2-d) over each event's
        entries: ``reduceat`` over the CSR segments, ``bincount`` if a row is empty."""
        nonempty = self._cache.get("nonempty")
        if nonempty is None:
            nonempty = self._cache["nonempty"] = bool(
                len(self.indices) and (self.offsets[1:] > self.offsets[:-1]).all()
            )
        if nonempty:
            return np.add.reduceat(contrib, self.offsets[:-1], axis=0)
        rows = self.rows()
        if contrib.ndim == 1:
            return np.bincount(rows, weights=contrib, minlength=self.n_rows)
        out = np.zeros((self.n_rows, contrib.shape[1]))
        for k in range(contrib.shape[1]):
            out[:, k] = np.bincount(rows, weights=contrib[:, k], minlength=self.n_rows)
        return out

    def groups(
        self, scratch: np.ndarray, small: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Group equal slots without sorting: ``(representative, firsts)``.

        ``representative[j]`` is, for entry ``j``, the index of one entry of the
        same slot (the same for all of them); ``firsts`` lists one entry per
        distinct slot. ``scratch`` is any int64 array of ``n_slots`` elements
        whose contents do not matter; the work is O(entries), never O(slots).

        With ``small`` (an int64 array whose length is a power of two), slots
        are first grouped by ``slot & (len(small) - 1)`` in that cache-sized
        table; only the slots whose bucket another slot won go through
        ``scratch``. The answer is the same, faster.
        """
        got = self._cache.get("groups")
        if got is None:
            idx = self.indices
            order = np.arange(len(idx))
            if small is not None:
                bucket = idx & (len(small) - 1)
                small[bucket] = order
                representative = small[bucket]
                lost = (idx[representative] != idx).nonzero()[0]
                if len(lost):
                    scratch[idx[lost]] = lost
                    representative[lost] = scratch[idx[lost]]
            else:
                scratch[idx] = order
                representative = scratch[idx]
            firsts = (representative == order).nonzero()[0]
            got = self._cache["groups"] = (representative, firsts)
        return got


class FeatureHasher:
    """Encode feature mappings into :class:`FeatureBatch` es.

    Parameters
    ----------
    bits
        Hashed features go to ``2**bits`` slots (1 to 30).
    dense
        Names of numeric features that get their own slot (never hashed,
        never colliding), placed after the hashed slots.
    cache_size
        How many distinct names and string values to remember before the
        cache is emptied (it only saves hashing time; results never change).
    crosses
        Pairs of feature names to cross, like Vowpal Wabbit's ``-q``: an
        event with both features gets one more entry per pair of their
        entries, after its own (``streamlearn.contract.cross_entry``).

    Examples
    --------
    >>> hasher = FeatureHasher(bits=8, dense=["age"])
    >>> hasher.n_slots
    257
    >>> b = hasher.encode_one({"age": 42, "city": "Lyon"})
    >>> b.indices.tolist(), b.values.tolist(), b.numeric.tolist()
    ([256, 15], [42.0, 1.0], [True, False])
    >>> crossed = FeatureHasher(bits=8, crosses=[("user", "item")])
    >>> len(crossed.encode_one({"user": "u1", "item": "i7"}).indices)
    3
    """

    def __init__(
        self, bits: int = 20, dense: Sequence[str] = (), cache_size: int = 1 << 20,
        crosses: Sequence[Sequence[str]] = (),
    ) -> None:
        if type(bits) is not int or not 1 <= bits <= MAX_BITS:
            raise ValidationError("bits", f"an integer from 1 to {MAX_BITS}", repr(bits))
        if isinstance(dense, str) or not all(type(d) is str for d in dense):
            raise ValidationError("dense", "a list of feature names", repr(dense))
        if len(set(dense)) != len(dense):
            raise ValidationError("dense", "distinct feature names", repr(list(dense)))
        pairs = check_crosses(crosses)
        if isinstance(pairs, str):
            raise ValidationError("crosses", pairs, repr(crosses))
        self.crosses = pairs
        self._crossed_names = frozenset(name for pair in pairs for name in pair)
        self.bits = bits
        self.dense = tuple(dense)
        self.cache_size = cache_size
        self.n_hashed = 1 << bits
        self.n_slots = self.n_hashed + len(self.dense)
        self._names: dict[str, bytes] = {}  # name -> its hash, or _DENSE + position
        self._strings: dict[str, bytes] = {}  # string value -> its hash
        self._tokens: dict[object, tuple[int, float]] = {}  # for small batches
        self._schemas: dict[tuple, _Schema] = {}
        self._layouts: dict[tuple, _Layout] = {}
        self._dense_slot = {name: self.n_hashed + i for i, name in enumerate(self.dense)}
        self._reset_names()

    def __repr__(self) -> str:
        crosses = f", crosses={[list(p) for p in self.crosses]!r}" if self.crosses else ""
        return f"FeatureHasher(bits={self.bits}, dense={list(self.dense)!r}{crosses})"

    def _reset_names(self) -> None:
        self._names.clear()
        for i, name in enumerate(self.dense):
            self._names[name] = _code(_DENSE + i)

    # -- encoding ---------------------------------------------------------------

    def encode_one(self, x: Mapping[str, object]) -> FeatureBatch:
        """Encode one event's features (a batch of one row)."""
        if not isinstance(x, Mapping):
            raise ValidationError("features", "a mapping of name to value", type(x).__name__)
        return self.encode([x])

    def encode(self, xs: Sequence[Mapping[str, object]]) -> FeatureBatch:
        """Encode a sequence of feature mappings into one batch.

        Raises :class:`~streamlearn.errors.ValidationError` naming the field
        (``features.<name>``) and the event's position on any value that is
        not a finite number, a string, a list of strings or a boolean, and on
        an empty mapping.
        """
        if isinstance(xs, Mapping) or isinstance(xs, str | bytes):
            raise ValidationError(
                "xs", "a sequence of feature mappings", type(xs).__name__, "encode (use encode_one)"
            )
        given = xs if isinstance(xs, list) else list(xs)
        if set(map(type, given)) == _ONLY_DICTS:
            dicts = cast("list[dict]", given)  # checked just above: each one a dict
        else:
            dicts = [self._as_dict(x, i) for i, x in enumerate(given)]
        try:
            batch = self._encode(dicts)
        except _IntegerName:  # River's streams name features by integers: their decimal text
            dicts = [_string_names(x) for x in dicts]
            batch = self._encode(dicts)
        return self._crossed(batch, dicts) if self.crosses else batch

    def _crossed(self, batch: FeatureBatch, xs: list[dict]) -> FeatureBatch:
        """``batch`` with each event's crossed entries after its own. A feature's
        entries are consecutive, in the order of the event's names."""
        names = self._crossed_names
        where: list[dict[str, tuple[int, int]]] = []
        offsets = batch.offsets.tolist()
        for i, x in enumerate(xs):
            spans: dict[str, tuple[int, int]] = {}
            if not names.isdisjoint(x):
                at = offsets[i]
                for name, value in x.items():
                    n = len(value) if type(value) is list or type(value) is tuple else 1
                    if name in names:
                        spans[name] = (at, at + n)
                    at += n
            where.append(spans)
        return cross_batch(batch, self.crosses, where, self.bits)

    def _encode(self, xs: list[dict]) -> FeatureBatch:
        if len(xs) <= SMALL_BATCH:
            return self._encode_small(xs)
        lens = list(map(len, xs))
        if 0 in lens:
            raise Rejection("features.empty", lens.index(0))
        shared = self._shared_schema(xs, lens)
        if shared is None:
            return self._encode_any(xs, lens, None)
        names, schema = shared
        if schema.kinds:
            batch = self._encode_laid_out(xs, names, schema)
            if batch is not None:
                schema.misfits = 0
                return batch
            schema.misfits += 1  # a value did not fit its kind: a bad value, or new kinds
            if schema.misfits > _MAX_MISFITS:  # kinds that keep changing: stop guessing a while
                schema.pause()
        elif schema.kinds is False:
            schema.wait -= 1
            if schema.wait <= 0:
                schema.kinds, schema.misfits = None, 0
        return self._encode_any(xs, lens, schema)

    def _encode_any(self, xs: list[dict], lens: list[int], schema: _Schema | None) -> FeatureBatch:
        """Encode any batch: one look-up per value, then what is not a known
        string is looked at again. With the batch's shared ``schema``, its
        name codes are used and, when not known or no longer fitting, the
        kinds of its values are remembered for :meth:`_encode_laid_out`."""
        vals = list(chain.from_iterable(map(dict.values, xs)))
        keys: list | _LazyKeys | None = None
        strings = self._strings
        try:
            codes = b"".join(map(strings.get, vals, repeat(_NOT_A_STRING)))
        except TypeError:  # an unhashable value (a list): flatten it, then go on
            keys, vals, lens = self._flatten(xs)
            codes = b"".join(map(strings.get, vals, repeat(_NOT_A_STRING)))
            if schema is not None:
                schema.pause()  # lists change the number of entries per event
                schema = None
        value_codes = np.frombuffer(codes, _U64LE)
        offsets = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        if keys is not None:
            name_codes = self._name_codes(cast(list, keys), offsets)  # _flatten's list
        else:
            keys = _LazyKeys(xs)
            if schema is not None:
                name_codes = np.tile(schema.codes, len(xs))
            else:
                name_codes = self._name_codes(list(chain.from_iterable(xs)), offsets)
        values = np.ones(len(vals), np.float64)
        numeric = value_codes == 0  # numbers, booleans and strings not seen yet
        if numeric.any():
            value_codes = self._numbers(keys, vals, value_codes, values, numeric, offsets)
        batch = self._assemble(keys, name_codes, value_codes, values, numeric, offsets)
        if schema is not None and schema.kinds is not False and (
            schema.kinds is None or schema.misfits
        ):
            width = len(schema.codes)  # the first event's entries tell the kinds
            schema.kinds = tuple(
                _STRING if c else _NUMBER if num else _BOOLEAN
                for c, num in zip(value_codes[:width].tolist(), numeric[:width].tolist(),
                                  strict=True)
            )
        return batch

    def _shared_schema(self, xs: list[dict], lens: list[int]) -> tuple[tuple, _Schema] | None:
        """The names of the batch's events and what is known of them, if every
        event has the same names in the same order (the usual case in a stream)."""
        n = len(xs)
        if lens.count(lens[0]) != n:
            return None
        names = tuple(xs[0])
        if n > 1 and list(chain.from_iterable(xs)) != [*names] * n:
            return None
        schema = self._schemas.get(names)
        if schema is None:
            codes = self._name_codes(list(names), np.array([0, len(names)]))
            if len(self._schemas) > _MAX_SCHEMAS:
                self._schemas.clear()
                self._layouts.clear()
            schema = self._schemas[names] = _Schema(codes)
        return names, schema

    def _encode_laid_out(
        self, xs: list[dict], names: tuple, schema: _Schema
    ) -> FeatureBatch | None:
        """Encode a batch of one schema whose kinds of values are known: only
        the strings are looked up and mixed; numbers and booleans are picked by
        position and take their schema's slots and signs. ``None`` if a value
        does not fit its kind (then :meth:`_encode_any` encodes the batch and
        names any bad value)."""
        n = len(xs)
        layout = self._layouts.get(names)
        if layout is None or layout.kinds != schema.kinds or layout.capacity < n:
            if len(self._layouts) >= _MAX_LAYOUTS:
                self._layouts.clear()
            capacity = n
            if layout is not None and layout.capacity < n:  # batches that grow: room ahead
                capacity = max(n, 2 * layout.capacity)
            layout = self._layouts[names] = _Layout(schema, capacity, self.n_hashed)
        tile = layout.over(n)
        vals = list(chain.from_iterable(map(dict.values, xs)))
        try:
            codes = b"".join(
                map(self._strings.get, compress(vals, layout.is_string), repeat(_NOT_A_STRING))
            )
        except TypeError:  # a list
            return None
        values = np.empty(len(vals), np.float64)
        if tile.numbers is not None and tile.pick_numbers is not None:
            picked = tile.pick_numbers(vals)
            types = list(map(type, picked))
            if types != tile.number_types:
                if not set(types) <= _PLAIN_NUMBERS:
                    return None
                tile.number_types = types
            try:
                got = np.fromiter(picked, np.float64, len(picked))
            except OverflowError:
                return None
            if not np.isfinite(got).all():
                return None
            values[tile.numbers] = got * tile.number_signs
        if tile.booleans is not None and tile.pick_booleans is not None:
            picked = tile.pick_booleans(vals)
            if list(map(type, picked)) != tile.boolean_types:
                return None
            flags = np.fromiter(picked, np.float64, len(picked))
            values[tile.booleans] = flags * tile.boolean_signs
        indices = tile.indices.copy()
        if tile.strings is not None:
            string_codes = np.frombuffer(codes, _U64LE)
            new = np.flatnonzero(string_codes == 0)
            if len(new):
                string_codes = string_codes.copy()
                if not self._new_strings(vals, tile.strings, new, string_codes):
                    return None
            h = tile.string_names ^ string_codes  # the rest of _mix, in place
            t = _finalise(h)
            indices[tile.strings] = np.bitwise_and(h, np.uint64(self.n_hashed - 1), out=t)
            values[tile.strings] = np.where(h >= _DENSE_U64, -1.0, 1.0)
        offsets, numeric = tile.offsets.copy(), tile.numeric.copy()
        batch = FeatureBatch(indices, values, offsets, numeric, self.n_slots)
        batch._cache["rows"] = tile.rows  # read-only: shared by the batches of this layout
        batch._cache["nonempty"] = layout.width > 0
        return batch

    def _new_strings(
        self, vals: list, strings: np.ndarray, new: np.ndarray, string_codes: np.ndarray
    ) -> bool:
        """Hash and remember the strings not seen yet (``new`` among the
        batch's ``strings``); false if one is not a string."""
        picked = [vals[j] for j in strings[new].tolist()]
        if set(map(type, picked)) != _ONLY_STRS:
            return False
        cache = self._strings
        if len(cache) > self.cache_size:
            cache.clear()
        for k, v in zip(new.tolist(), picked, strict=True):
            code = cache.get(v)
            if code is None:
                code = cache[v] = _code(_hash_value(v))
            string_codes[k] = int.from_bytes(code, "little")
        return True

    def _encode_small(self, xs: list[dict]) -> FeatureBatch:
        """The same encoding for a few events, in plain Python (numpy's fixed
        cost per call dominates there); tested equal to the batch path."""
        tokens = self._tokens
        if len(tokens) > self.cache_size:
            tokens.clear()
        idx: list[int] = []
        vals: list[float] = []
        num: list[bool] = []
        offsets = [0]
        for i, x in enumerate(xs):
            if not x:
                raise Rejection("features.empty", i)
            for k, v in x.items():
                t = type(v)
                if t is float or t is int:
                    e = tokens.get(k) or self._token(k, None, i)
                    try:
                        finite = math.isfinite(v)
                    except OverflowError:
                        finite = False
                    if not finite:
                        raise Rejection("features.not_finite", i, name=k, value=v)
                    idx.append(e[0])
                    vals.append(e[1] * v)
                    num.append(True)
                elif t is str:
                    e = tokens.get((k, v)) or self._token(k, v, i)
                    idx.append(e[0])
                    vals.append(e[1])
                    num.append(False)
                elif t is bool:
                    e = tokens.get(k) or self._token(k, None, i)
                    idx.append(e[0])
                    vals.append(e[1] * (1.0 if v else 0.0))
                    num.append(False)
                elif t is list or t is tuple:
                    for item in v:
                        if type(item) is not str:
                            raise Rejection("features.bad_list_item", i, name=k, value=item)
                        e = tokens.get((k, item)) or self._token(k, item, i)
                        idx.append(e[0])
                        vals.append(e[1])
                        num.append(False)
                elif isinstance(v, int | float | np.integer | np.floating) and not isinstance(
                    v, np.bool_
                ):
                    e = tokens.get(k) or self._token(k, None, i)
                    f = float(v)
                    if not math.isfinite(f):
                        raise Rejection("features.not_finite", i, name=k, value=v)
                    idx.append(e[0])
                    vals.append(e[1] * f)
                    num.append(True)
                else:
                    raise Rejection("features.bad_value", i, name=k, value=v)
            offsets.append(len(idx))
        return FeatureBatch(
            np.array(idx, np.int64), np.array(vals, np.float64), np.array(offsets, np.int64),
            np.array(num, bool), self.n_slots,
        )

    def _token(self, name: object, value: str | None, i: int | None) -> tuple[int, float]:
        if type(name) is not str or not name:
            _refuse_name(name, i)
        dense = self._dense_slot.get(name)
        if dense is not None:
            if value is not None:
                raise Rejection("features.dense_not_number", i, name=name, value=value)
            entry = (dense, 1.0)
        else:
            value_hash = _NUMERIC_SALT if value is None else _hash_value(value)
            h = _mix_one(_hash_name(name), value_hash)
            entry = (h & (self.n_hashed - 1), -1.0 if h >> 63 else 1.0)
        self._tokens[name if value is None else (name, value)] = entry
        return entry

    def slot_of(self, name: str | int, value: str | None = None) -> tuple[int, float]:
        """The ``(slot, sign)`` this hasher gives the number or boolean ``name``
        (``value=None``) or the string ``name=value``; dense names get their
        own slot and sign 1. Remembered, so a repeated question is one
        ``dict`` look-up.

        Raises :class:`~streamlearn.errors.ValidationError` for an empty or
        non-string name, a non-string value, and a string value of a dense name.

        >>> hasher = FeatureHasher(bits=20, dense=["age"])
        >>> hasher.slot_of("country", "FR") == (188638, -1.0)  # as feature_slot
        True
        >>> hasher.slot_of("age")
        (1048576, 1.0)
        """
        tokens = self._tokens
        got = tokens.get(name if value is None else (name, value))
        if got is not None:
            return got
        if value is not None and type(value) is not str:
            raise ValidationError(f"features.{name}", "a string value", repr(value))
        if len(tokens) > self.cache_size:
            tokens.clear()
        if type(name) is int:  # its decimal text (streamlearn.contract.feature_name)
            return self.slot_of(str(name), value)
        return self._token(name, value, None)

    def slots_of(self, name: str | int, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`slot_of` for many string values of one name, in bulk: the
        ``(slots, signs)`` arrays (int64, float64), one entry per value.

        New values are hashed once each, mixed in one numpy pass and remembered.

        >>> hasher = FeatureHasher(bits=20)
        >>> slots, signs = hasher.slots_of("country", ["FR", "DE", "FR"])
        >>> slots.tolist()[0], signs.tolist()[0]
        (188638, -1.0)
        >>> bool(slots[0] == slots[2])
        True
        """
        if type(name) is int:  # its decimal text (streamlearn.contract.feature_name)
            name = str(name)
        if type(name) is not str or not name:
            _refuse_name(name, None)
        if name in self._dense_slot:
            raise ValidationError(
                f"features.{name}", "a number (it is a dense feature)", "strings"
            )
        tokens = self._tokens
        if len(tokens) > self.cache_size:
            tokens.clear()
        keys = [(name, v) for v in values]
        found = list(map(tokens.get, keys))
        missing = [j for j, e in enumerate(found) if e is None]
        if missing:
            new = [values[j] for j in missing]
            if not all(type(v) is str for v in new):
                bad = next(v for v in new if type(v) is not str)
                raise ValidationError(f"features.{name}", "string values", repr(bad))
            value_hashes = np.fromiter(map(_hash_value, new), np.uint64, len(new))
            name_hash = np.full(len(new), _hash_name(name), np.uint64)
            h = _mix(name_hash, value_hashes)
            slots = (h & np.uint64(self.n_hashed - 1)).astype(np.int64).tolist()
            signs = np.where(h >> np.uint64(63), -1.0, 1.0).tolist()
            for j, v, slot, sign in zip(missing, new, slots, signs, strict=True):
                found[j] = tokens[(name, v)] = (slot, sign)
        if not found:
            return np.zeros(0, np.int64), np.zeros(0)
        slots_signs = np.array(found, dtype=np.float64).reshape(-1, 2)
        return slots_signs[:, 0].astype(np.int64), slots_signs[:, 1].copy()

    def _assemble(
        self, keys: list | _LazyKeys, name_codes: np.ndarray, value_codes: np.ndarray,
        values: np.ndarray, numeric: np.ndarray, offsets: np.ndarray,
    ) -> FeatureBatch:
        """Mix name and value codes into slots and signs (:func:`_mix`, in place)."""
        h = name_codes * _GOLDEN
        h ^= value_codes
        t = _finalise(h)
        negative = h >= _DENSE_U64  # the top bit
        indices = np.bitwise_and(h, np.uint64(self.n_hashed - 1), out=t).view(np.int64)
        if self.dense:
            dense = name_codes >= _DENSE_U64
            if dense.any():
                strings = dense & (value_codes != 0)
                if strings.any():
                    j = int(np.flatnonzero(strings)[0])
                    raise Rejection(
                        "features.dense_not_number", _index(offsets, j), name=keys[j],
                        shown="a string",
                    )
                indices[dense] = (name_codes[dense] - _DENSE_U64).view(np.int64) + self.n_hashed
                negative[dense] = False
        np.negative(values, out=values, where=negative)
        return FeatureBatch(indices, values, offsets, numeric, self.n_slots)

    def _name_codes(self, keys: list, offsets: np.ndarray) -> np.ndarray:
        """Name codes of ``keys``, one dict look-up each; new names are hashed
        and remembered."""
        codes = np.frombuffer(b"".join(map(self._names.get, keys, repeat(_NO_NAME))), _U64LE)
        if (codes == _NO_NAME_U64).any():
            codes = codes.copy()
            self._learn_names(keys, codes, offsets)
        return codes

    def _as_dict(self, x: object, i: int) -> dict:
        if not isinstance(x, Mapping):
            raise ValidationError(
                "features", "a mapping of name to value", type(x).__name__, f"event {i}"
            )
        return dict(x)

    def _flatten(self, xs: list[dict]) -> tuple[list, list, list[int]]:
        keys: list = []
        vals: list = []
        lens: list[int] = []
        for i, x in enumerate(xs):
            start = len(keys)
            for k, v in x.items():
                if type(v) is list or type(v) is tuple:
                    for item in v:
                        if type(item) is not str:
                            raise Rejection("features.bad_list_item", i, name=k, value=item)
                        keys.append(k)
                        vals.append(item)
                else:
                    if getattr(v, "__hash__", None) is None:
                        raise Rejection("features.bad_value", i, name=k, value=v)
                    keys.append(k)
                    vals.append(v)
            lens.append(len(keys) - start)
        return keys, vals, lens

    def _learn_names(self, keys: list, codes: np.ndarray, offsets: np.ndarray) -> None:
        names = self._names
        if len(names) > self.cache_size:
            self._reset_names()
            self._schemas.clear()
            self._layouts.clear()
        for j in np.flatnonzero(codes == _NO_NAME_U64).tolist():
            name = keys[j]
            code = names.get(name) if type(name) is str else None
            if code is None:
                if type(name) is not str or not name:
                    _refuse_name(name, _index(offsets, j))
                code = names[name] = _code(_hash_name(name))
            codes[j] = int.from_bytes(code, "little")

    def _numbers(
        self, keys: list | _LazyKeys, vals: list, value_codes: np.ndarray, values: np.ndarray,
        numeric: np.ndarray, offsets: np.ndarray,
    ) -> np.ndarray:
        """Fill ``values`` at the entries that are not known strings and return
        the value codes; ``numeric`` is left true for numbers only (booleans and
        new strings are not numeric)."""
        pos = np.flatnonzero(numeric)
        picked = operator.itemgetter(*pos.tolist())(vals) if len(pos) > 1 else (vals[pos[0]],)
        if set(map(type, picked)) <= _PLAIN_NUMBERS:
            try:
                got = np.fromiter(picked, np.float64, len(pos))
            except OverflowError:
                pass  # found and named below
            else:
                if np.isfinite(got).all():
                    values[pos] = got
                    return value_codes
        # the careful path: new strings, booleans, other number types, bad values
        value_codes = value_codes.copy()
        strings = self._strings
        if len(strings) > self.cache_size:
            strings.clear()
        for j, v in zip(pos.tolist(), picked, strict=True):
            t = type(v)
            if t is str:
                code = strings.get(v)
                if code is None:
                    code = strings[v] = _code(_hash_value(v))
                value_codes[j] = int.from_bytes(code, "little")
                values[j] = 1.0
                numeric[j] = False
                if keys[j] in self._dense_slot:
                    raise Rejection(
                        "features.dense_not_number", _index(offsets, j), name=keys[j], value=v
                    )
            elif t is bool:
                values[j] = 1.0 if v else 0.0
                numeric[j] = False
            elif isinstance(v, int | float | np.integer | np.floating) and not isinstance(
                v, np.bool_
            ):
                try:
                    f = float(v)
                except OverflowError:
                    f = float("inf")
                if f != f or f in (float("inf"), float("-inf")):
                    raise Rejection(
                        "features.not_finite", _index(offsets, j), name=keys[j], value=v
                    )
                values[j] = f
            else:
                raise Rejection("features.bad_value", _index(offsets, j), name=keys[j], value=v)
        return value_codes


def cross_batch(
    batch: FeatureBatch, crosses: Sequence[tuple[str, str]],
    where: Sequence[Mapping[str, tuple[int, int]]], bits: int,
) -> FeatureBatch:
    """``batch`` with each row's crossed entries (``streamlearn.contract.cross_entry``)
    after its own, for the ``crosses`` whose two features ``where[row]`` locates (the
    ``[start, end)`` of each feature's entries in ``batch``; an absent name: none).

    Raises :class:`~streamlearn.contract.Rejection` (``features.too_many_crossed``) for
    a row whose crosses add more than ``MAX_FEATURES`` entries.

    >>> b = FeatureBatch.from_arrays([1, 2], [1.0, 3.0], [0, 2], n_slots=16)
    >>> crossed = cross_batch(b, [("a", "b")], [{"a": (0, 1), "b": (1, 2)}], bits=4)
    >>> crossed.offsets.tolist(), crossed.indices.tolist()[:2], crossed.values.tolist()[:2]
    ([0, 3], [1, 2], [1.0, 3.0])
    """
    idx, vals = batch.indices.tolist(), batch.values.tolist()
    extra: list[list[tuple[int, float]]] = []
    for i, spans in enumerate(where):
        if not spans:
            extra.append([])
            continue
        pairs = [(spans[a], spans[b]) for a, b in crosses if a in spans and b in spans]
        count = sum((a[1] - a[0]) * (b[1] - b[0]) for a, b in pairs)
        if count > MAX_FEATURES:  # counted first: two long lists cross to their product
            raise Rejection("features.too_many_crossed", i, count=count)
        extra.append([
            cross_entry(idx[p], vals[p], idx[q], vals[q], bits)
            for span_a, span_b in pairs for p in range(*span_a) for q in range(*span_b)
        ])
    if not any(extra):
        return batch
    if len(extra) <= SMALL_BATCH:  # numpy's fixed costs would dominate: plain lists
        offsets_in = batch.offsets.tolist()
        numeric_in = batch.numeric.tolist()
        out_idx: list[int] = []
        out_val: list[float] = []
        out_num: list[bool] = []
        out_off = [0]
        for i, row in enumerate(extra):
            lo, hi = offsets_in[i], offsets_in[i + 1]
            out_idx += idx[lo:hi]
            out_val += vals[lo:hi]
            out_num += numeric_in[lo:hi]
            for slot, value in row:
                out_idx.append(slot)
                out_val.append(value)
                out_num.append(False)
            out_off.append(len(out_idx))
        return FeatureBatch(
            np.array(out_idx, np.int64), np.array(out_val, np.float64),
            np.array(out_off, np.int64), np.array(out_num, bool), batch.n_slots,
        )
    counts = np.fromiter(map(len, extra), np.int64, len(extra))
    own = np.diff(batch.offsets)
    offsets = np.zeros(len(own) + 1, np.int64)
    np.cumsum(own + counts, out=offsets[1:])
    total = int(offsets[-1])
    mine = np.ones(total, bool)  # True: an entry of the batch, False: a crossed one
    mine[np.repeat(offsets[:-1] + own, counts) + _ranks(counts)] = False
    indices = np.empty(total, np.int64)
    values = np.empty(total, np.float64)
    numeric = np.zeros(total, bool)
    indices[mine], values[mine], numeric[mine] = batch.indices, batch.values, batch.numeric
    flat = np.array([e for row in extra for e in row], np.float64).reshape(-1, 2)
    indices[~mine] = flat[:, 0].astype(np.int64)
    values[~mine] = flat[:, 1]
    return FeatureBatch(indices, values, offsets, numeric, batch.n_slots)


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., counts[0]-1, 0, 1, ..., counts[1]-1, ...: each item's rank in its group."""
    ends = np.cumsum(counts)
    return np.arange(int(ends[-1])) - np.repeat(ends - counts, counts)


def _index(offsets: np.ndarray, entry: int) -> int:
    """The event (row) of entry ``entry``."""
    return int(np.searchsorted(offsets, entry, side="right")) - 1


class _IntegerName(Exception):
    """A feature named by an integer: the batch is encoded again with names as text."""


def _refuse_name(name: object, index: int | None) -> NoReturn:
    """Raise for a name the hasher cannot take (an integer: :class:`_IntegerName`)."""
    if type(name) is int:
        raise _IntegerName
    if name == "":
        raise Rejection("features.empty_name", index)
    raise Rejection("features.name_not_string", index, value=name)


def _string_names(x: dict) -> dict:
    """``x`` with integer names as their decimal text (:func:`streamlearn.contract.feature_name`);
    other names are kept, for the encoder to refuse."""
    return {
        (text if (text := feature_name(k)) is not None and type(k) is int else k): v
        for k, v in x.items()
    }


class _Schema:
    """What the batch path remembers of one tuple of names: their codes and
    the kinds of value (string, number, boolean) seen at each position."""

    __slots__ = ("codes", "kinds", "misfits", "wait")

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes
        self.kinds: tuple[str, ...] | None | bool = None  # None: to learn; False: paused
        self.misfits = 0  # batches in a row whose values did not fit the kinds
        self.wait = 0  # batches to encode the general way before learning kinds again

    def pause(self) -> None:
        self.kinds, self.wait = False, _PAUSE


def _picker(positions: np.ndarray) -> Callable[[list], tuple]:
    """A function that picks the items at ``positions`` of a list, as a tuple."""
    if len(positions) == 1:
        p = int(positions[0])
        return lambda vals: (vals[p],)
    return operator.itemgetter(*positions.tolist())


class _Layout:
    """A schema's kinds of values repeated over up to ``capacity`` events:
    where the strings, numbers and booleans are among a batch's entries, and
    the slots and signs of its numbers and booleans (whose value code is
    always 0). The entries of ``n`` events are the first ``n * width``, so a
    shorter batch takes prefixes (:meth:`over`)."""

    def __init__(self, schema: _Schema, capacity: int, n_hashed: int) -> None:
        kinds = schema.kinds
        assert isinstance(kinds, tuple)
        self.kinds = kinds
        self.capacity = capacity
        self.width = len(kinds)
        codes = schema.codes
        h = _mix(codes, np.zeros(self.width, np.uint64))
        slots = (h & np.uint64(n_hashed - 1)).astype(np.int64)
        signs = np.where(h >> np.uint64(63), -1.0, 1.0)
        dense = codes >= _DENSE_U64
        slots[dense] = (codes[dense] - _DENSE_U64).astype(np.int64) + n_hashed
        signs[dense] = 1.0
        kind = np.array(kinds)
        every = np.tile(kind, capacity)
        self.indices = np.tile(slots, capacity)  # string entries are overwritten per batch
        self.offsets = np.arange(0, self.width * capacity + 1, self.width, dtype=np.int64)
        self.rows = np.repeat(np.arange(capacity), self.width)
        self.rows.flags.writeable = False
        self.numeric = every == _NUMBER
        self.is_string = (every == _STRING).tolist()  # for compress: stops where the batch does
        self.per_event = {k: int((kind == k).sum()) for k in (_STRING, _NUMBER, _BOOLEAN)}
        self.positions = {k: np.flatnonzero(every == k) for k in (_STRING, _NUMBER, _BOOLEAN)}
        self.signs = {k: np.tile(signs[kind == k], capacity) for k in (_NUMBER, _BOOLEAN)}
        self.string_names = np.tile(codes[kind == _STRING] * _GOLDEN, capacity)
        self._last: _Tile | None = None

    def over(self, n: int) -> _Tile:
        """The layout of a batch of ``n`` events (remembered for the last ``n``)."""
        if self._last is None or self._last.n != n:
            self._last = _Tile(self, n)
        return self._last


class _Tile:
    """A :class:`_Layout` cut to a batch of ``n`` events."""

    def __init__(self, layout: _Layout, n: int) -> None:
        self.n = n
        entries = n * layout.width
        self.indices = layout.indices[:entries]
        self.offsets = layout.offsets[: n + 1]
        self.rows = layout.rows[:entries]
        self.numeric = layout.numeric[:entries]
        self.strings: np.ndarray | None = None
        self.numbers: np.ndarray | None = None
        self.booleans: np.ndarray | None = None
        self.pick_numbers: Callable[[list], tuple] | None = None
        self.pick_booleans: Callable[[list], tuple] | None = None
        self.number_types: list[type] | None = None
        self.boolean_types: list[type] | None = None
        count = layout.per_event
        if count[_STRING]:
            self.strings = layout.positions[_STRING][: n * count[_STRING]]
            self.string_names = layout.string_names[: n * count[_STRING]]
        if count[_NUMBER]:
            self.numbers = layout.positions[_NUMBER][: n * count[_NUMBER]]
            self.number_signs = layout.signs[_NUMBER][: n * count[_NUMBER]]
            self.pick_numbers = _picker(self.numbers)
            self.number_types = [float] * len(self.numbers)
        if count[_BOOLEAN]:
            self.booleans = layout.positions[_BOOLEAN][: n * count[_BOOLEAN]]
            self.boolean_signs = layout.signs[_BOOLEAN][: n * count[_BOOLEAN]]
            self.pick_booleans = _picker(self.booleans)
            self.boolean_types = [bool] * len(self.booleans)


class _LazyKeys:
    """The batch's names in entry order, listed on first use (error paths)."""

    def __init__(self, xs: list[dict]) -> None:
        self._xs = xs
        self._keys: list | None = None

    def __getitem__(self, j: int) -> object:
        if self._keys is None:
            self._keys = list(chain.from_iterable(self._xs))
        return self._keys[j]


class OnlineScaler:
    """Running mean and variance per slot, to standardise numeric entries.

    Only entries flagged ``numeric`` (numbers, not one-hot strings nor
    booleans) are counted and scaled, each with the statistics of its slot.
    A batch updates the statistics in one step (Chan's parallel formula), so
    one batch of one event equals one step of Welford's method. Statistics
    live in three arrays of ``n_slots`` (``mean``, ``var`` — the population
    variance —, ``count``); the work per batch is O(entries).

    >>> hasher = FeatureHasher(bits=4, dense=["x"])
    >>> scaler = OnlineScaler(hasher.n_slots)
    >>> for x in (1.0, 2.0, 3.0):
    ...     scaler.update(hasher.encode_one({"x": x}))
    >>> scaler.transform(hasher.encode_one({"x": 3.0})).round(4).tolist()
    [1.2247]
    """

    def __init__(self, n_slots: int) -> None:
        self.n_slots = n_slots
        self.mean = np.zeros(n_slots)
        self.var = np.zeros(n_slots)
        self.count = np.zeros(n_slots)
        self._scratch = np.empty(n_slots, np.int64)

    def update(self, batch: FeatureBatch) -> None:
        """Add the batch's numeric entries to the statistics."""
        m = batch.numeric
        if not m.any():
            return
        idx = batch.indices[m]
        x = batch.values[m]
        order = np.arange(len(idx))
        self._scratch[idx] = order
        rep = self._scratch[idx]
        if (rep == order).all():  # no slot twice (the usual case for small batches)
            n_a = self.count[idx]
            mean_a = self.mean[idx]
            n = n_a + 1.0
            delta = x - mean_a
            self.mean[idx] = mean_a + delta / n
            self.var[idx] = (self.var[idx] * n_a + delta * delta * n_a / n) / n
            self.count[idx] = n
            return
        n_b = np.bincount(rep, minlength=len(idx))[rep].astype(np.float64)
        mean_b = np.bincount(rep, weights=x, minlength=len(idx))[rep] / n_b
        m2_b = np.bincount(rep, weights=(x - mean_b) ** 2, minlength=len(idx))[rep]
        firsts = (rep == order).nonzero()[0]
        slots = idx[firsts]
        n_b, mean_b, m2_b = n_b[firsts], mean_b[firsts], m2_b[firsts]
        n_a = self.count[slots]
        mean_a = self.mean[slots]
        n = n_a + n_b
        delta = mean_b - mean_a
        self.mean[slots] = mean_a + delta * n_b / n
        self.var[slots] = (self.var[slots] * n_a + m2_b + delta * delta * n_a * n_b / n) / n
        self.count[slots] = n

    def transform(self, batch: FeatureBatch) -> np.ndarray:
        """The batch's values with numeric entries standardised (a new array);
        a slot of zero variance gives 0."""
        out = batch.values.copy()
        m = batch.numeric
        if m.any():
            idx = batch.indices[m]
            sd = np.sqrt(self.var[idx])
            out[m] = np.divide(
                batch.values[m] - self.mean[idx], sd, out=np.zeros(len(idx)), where=sd > 0
            )
        return out
