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
values, cached) and the rest in numpy, so only the first sight of a name or a
string value costs Python time.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat

import numpy as np

from streamlearn.errors import ValidationError

__all__ = ["FeatureBatch", "FeatureHasher", "OnlineScaler", "feature_slot"]

MAX_BITS = 30
SMALL_BATCH = 4  # batches of at most this many events are encoded in plain Python
_HASH_BITS = 53  # exact in a float64, so look-ups can return floats and None -> NaN
_HASH_MASK = (1 << _HASH_BITS) - 1
_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NUMERIC_SALT = 0  # the "value" of a numeric or boolean feature
_NAN = float("nan")
_MAX_SCHEMAS = 4096
_VALUE_KINDS = "a number, a string, a list of strings or true/false"


def _hash53(text: str, person: bytes) -> int:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "little") & _HASH_MASK


def _hash_name(name: str) -> int:
    return _hash53(name, b"sl.name")


def _hash_value(value: str) -> int:
    # never 0: 0 is the salt of numeric features
    return _hash53(value, b"sl.value") or 1


def _mix(name_hash: np.ndarray, value_hash: np.ndarray) -> np.ndarray:
    """Mix two arrays of 53-bit hashes into 64-bit hashes (murmur3's finaliser)."""
    h = name_hash.astype(np.uint64) * _GOLDEN
    h ^= value_hash.astype(np.uint64)
    h ^= h >> np.uint64(33)
    h *= _MIX_1
    h ^= h >> np.uint64(33)
    h *= _MIX_2
    h ^= h >> np.uint64(33)
    return h


_U64 = (1 << 64) - 1


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

    Examples
    --------
    >>> hasher = FeatureHasher(bits=8, dense=["age"])
    >>> hasher.n_slots
    257
    >>> b = hasher.encode_one({"age": 42, "city": "Lyon"})
    >>> b.indices.tolist(), b.values.tolist(), b.numeric.tolist()
    ([256, 15], [42.0, 1.0], [True, False])
    """

    def __init__(
        self, bits: int = 20, dense: Sequence[str] = (), cache_size: int = 1 << 20
    ) -> None:
        if type(bits) is not int or not 1 <= bits <= MAX_BITS:
            raise ValidationError("bits", f"an integer from 1 to {MAX_BITS}", repr(bits))
        if isinstance(dense, str) or not all(type(d) is str for d in dense):
            raise ValidationError("dense", "a list of feature names", repr(dense))
        if len(set(dense)) != len(dense):
            raise ValidationError("dense", "distinct feature names", repr(list(dense)))
        self.bits = bits
        self.dense = tuple(dense)
        self.cache_size = cache_size
        self.n_hashed = 1 << bits
        self.n_slots = self.n_hashed + len(self.dense)
        self._names: dict[str, float] = {}
        self._strings: dict[str, float] = {}
        self._tokens: dict[object, tuple[int, float]] = {}  # for small batches
        self._schemas: dict[tuple, np.ndarray] = {}
        self._dense_slot = {name: self.n_hashed + i for i, name in enumerate(self.dense)}
        self._reset_names()

    def __repr__(self) -> str:
        return f"FeatureHasher(bits={self.bits}, dense={list(self.dense)!r})"

    def _reset_names(self) -> None:
        self._names.clear()
        # dense names carry a negative code: -(position + 1)
        for i, name in enumerate(self.dense):
            self._names[name] = float(-(i + 1))

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
        xs = xs if isinstance(xs, list) else list(xs)
        if not all(type(x) is dict for x in xs):
            xs = [self._as_dict(x, i) for i, x in enumerate(xs)]
        if len(xs) <= SMALL_BATCH:
            return self._encode_small(xs)
        lens = list(map(len, xs))
        if 0 in lens:
            raise ValidationError(
                "features", "a non-empty mapping of name to value", "{}", f"event {lens.index(0)}"
            )
        vals = list(chain.from_iterable(map(dict.values, xs)))
        keys: list | None = None  # built only when needed
        strings = self._strings
        try:
            value_codes = np.fromiter(map(strings.get, vals, repeat(_NAN)), np.float64, len(vals))
        except TypeError:  # an unhashable value (a list): flatten it, then go on
            keys, vals, lens = self._flatten(xs)
            value_codes = np.fromiter(map(strings.get, vals, repeat(_NAN)), np.float64, len(vals))
        offsets = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        if keys is None:
            name_codes = self._schema_codes(xs)
            keys = _LazyKeys(xs)
        else:
            name_codes = np.fromiter(
                map(self._names.get, keys, repeat(_NAN)), np.float64, len(keys)
            )
            if np.isnan(name_codes).any():
                self._learn_names(keys, name_codes, offsets)
        values = np.ones(len(vals), np.float64)
        numeric = np.isnan(value_codes)
        if numeric.any():
            numeric = self._numbers(keys, vals, value_codes, values, numeric, offsets)
        return self._assemble(keys, name_codes, value_codes, values, numeric, offsets)

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
                raise ValidationError("features", "a non-empty mapping of name to value", "{}",
                                      f"event {i}")
            for k, v in x.items():
                t = type(v)
                if t is float or t is int:
                    e = tokens.get(k) or self._token(k, None, i)
                    try:
                        finite = math.isfinite(v)
                    except OverflowError:
                        finite = False
                    if not finite:
                        raise ValidationError(f"features.{k}", "a finite number", repr(v),
                                              f"event {i}")
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
                            raise ValidationError(f"features.{k}", "a list of strings", repr(v),
                                                  f"event {i}")
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
                        raise ValidationError(f"features.{k}", "a finite number", repr(v),
                                              f"event {i}")
                    idx.append(e[0])
                    vals.append(e[1] * f)
                    num.append(True)
                else:
                    raise ValidationError(f"features.{k}", _VALUE_KINDS, repr(v), f"event {i}")
            offsets.append(len(idx))
        return FeatureBatch(
            np.array(idx, np.int64), np.array(vals, np.float64), np.array(offsets, np.int64),
            np.array(num, bool), self.n_slots,
        )

    def _token(self, name: object, value: str | None, i: int | None) -> tuple[int, float]:
        where = "" if i is None else f"event {i}"
        if type(name) is not str or not name:
            raise ValidationError("features", "non-empty string feature names", repr(name), where)
        dense = self._dense_slot.get(name)
        if dense is not None:
            if value is not None:
                raise ValidationError(f"features.{name}", "a number (it is a dense feature)",
                                      repr(value), where)
            entry = (dense, 1.0)
        else:
            value_hash = _NUMERIC_SALT if value is None else _hash_value(value)
            h = _mix_one(_hash_name(name), value_hash)
            entry = (h & (self.n_hashed - 1), -1.0 if h >> 63 else 1.0)
        self._tokens[name if value is None else (name, value)] = entry
        return entry

    def slot_of(self, name: str, value: str | None = None) -> tuple[int, float]:
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
        return self._token(name, value, None)

    def slots_of(self, name: str, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
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
        if type(name) is not str or not name:
            raise ValidationError("features", "non-empty string feature names", repr(name))
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
        self, keys: list, name_codes: np.ndarray, value_codes: np.ndarray, values: np.ndarray,
        numeric: np.ndarray, offsets: np.ndarray,
    ) -> FeatureBatch:
        is_number = np.isnan(value_codes)
        dense = name_codes < 0
        if dense.any() and not is_number[dense].all():
            j = int(np.flatnonzero(dense & ~is_number)[0])
            raise ValidationError(
                f"features.{keys[j]}", "a number (it is a dense feature)", "a string",
                _where(offsets, j),
            )
        value_codes[is_number] = _NUMERIC_SALT
        h = _mix(name_codes.astype(np.int64), value_codes.astype(np.int64))
        indices = (h & np.uint64(self.n_hashed - 1)).astype(np.int64)
        negative = (h >> np.uint64(63)).astype(bool)
        if dense.any():
            indices[dense] = self.n_hashed - 1 - name_codes[dense].astype(np.int64)
            negative &= ~dense
        np.negative(values, out=values, where=negative)
        return FeatureBatch(indices, values, offsets, numeric, self.n_slots)

    def _schema_codes(self, xs: list[dict]) -> np.ndarray:
        """Name codes of every entry, looked up once per distinct tuple of names
        (events of a stream mostly share one schema)."""
        schemas = self._schemas
        names = list(map(tuple, xs))
        first = schemas.get(names[0])
        if first is not None and names.count(names[0]) == len(names):
            return np.tile(first, len(names))  # one schema for the whole batch
        parts = list(map(schemas.get, names))
        missing = [i for i, p in enumerate(parts) if p is None]
        if missing:
            if len(schemas) > _MAX_SCHEMAS:
                schemas.clear()
            for i in missing:
                names = tuple(xs[i])
                codes = schemas.get(names)
                if codes is None:
                    codes = np.fromiter(
                        map(self._names.get, names, repeat(_NAN)), np.float64, len(names)
                    )
                    if np.isnan(codes).any():
                        self._learn_names(list(names), codes, np.array([0, len(names)]), i)
                    schemas[names] = codes
                parts[i] = codes
        return np.concatenate(parts)

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
                            raise ValidationError(
                                f"features.{k}", "a list of strings", repr(v), f"event {i}"
                            )
                        keys.append(k)
                        vals.append(item)
                else:
                    if getattr(v, "__hash__", None) is None:
                        raise ValidationError(f"features.{k}", _VALUE_KINDS, repr(v), f"event {i}")
                    keys.append(k)
                    vals.append(v)
            lens.append(len(keys) - start)
        return keys, vals, lens

    def _learn_names(
        self, keys: list, codes: np.ndarray, offsets: np.ndarray, first_event: int = 0
    ) -> None:
        if len(self._names) > self.cache_size:
            self._reset_names()
            self._schemas.clear()
        for j in np.flatnonzero(np.isnan(codes)).tolist():
            name = keys[j]
            code = self._names.get(name) if type(name) is str else None
            if code is None:
                if type(name) is not str or not name:
                    raise ValidationError(
                        "features", "non-empty string feature names", repr(name),
                        _where(offsets, j, first_event),
                    )
                code = self._names[name] = float(_hash_name(name))
            codes[j] = code

    def _numbers(
        self, keys: list, vals: list, value_codes: np.ndarray, values: np.ndarray,
        numeric: np.ndarray, offsets: np.ndarray,
    ) -> np.ndarray:
        """Fill ``values`` at the entries that are not known strings; return the
        numeric mask (numbers only: booleans and new strings are not numeric)."""
        pos = np.flatnonzero(numeric)
        picked = operator.itemgetter(*pos.tolist())(vals) if len(pos) > 1 else (vals[pos[0]],)
        kinds = set(map(type, picked))
        if kinds <= {float, int}:
            try:
                values[pos] = np.fromiter(picked, np.float64, len(pos))
            except OverflowError:
                pass  # found and named below
            else:
                if np.isfinite(values[pos]).all():
                    return numeric
        # the careful path: new strings, booleans, other number types, bad values
        strings = self._strings
        if len(strings) > self.cache_size:
            strings.clear()
        for j, v in zip(pos.tolist(), picked, strict=True):
            t = type(v)
            if t is str:
                code = strings.get(v)
                if code is None:
                    code = strings[v] = float(_hash_value(v))
                value_codes[j] = code
                values[j] = 1.0
                numeric[j] = False
                if self._names[keys[j]] < 0:
                    raise ValidationError(
                        f"features.{keys[j]}", "a number (it is a dense feature)", repr(v),
                        _where(offsets, j),
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
                    raise ValidationError(
                        f"features.{keys[j]}", "a finite number", repr(v), _where(offsets, j)
                    )
                values[j] = f
            else:
                raise ValidationError(
                    f"features.{keys[j]}", _VALUE_KINDS, repr(v), _where(offsets, j)
                )
        return numeric


def _where(offsets: np.ndarray, entry: int, first_event: int = 0) -> str:
    return f"event {first_event + int(np.searchsorted(offsets, entry, side='right')) - 1}"


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
