"""Raw scores of a linear model straight from features: the serving fast path.

A served version never changes, so each feature's share of the score can be
worked out once and remembered: a number ``x`` of feature ``name`` adds
``w[slot] * sign * x`` (standardised first when the learner scales), a string
adds ``w[slot] * sign``. One event is then a loop of ``dict`` look-ups and
multiply-adds in plain Python, with no :class:`~streamlearn.features.FeatureBatch`
and no numpy call (whose fixed cost per call dominates at this size).

Columns (Arrow) are scored column by column in numpy: a numeric column is one
multiply-add over all its rows, a string column hashes each *distinct* value
once and gathers the weights by dictionary code, a list column sums its items
per row with ``bincount``. No Python loop runs over rows.

**Known features.** Besides the score, each path counts how many of an
event's features the model *knows*: a feature (one name of the event) is known
when the slot it hashes to has a non-zero weight (for any class); a list of
strings when any of its strings' slots has one. Training moves the weight of
every feature it sees with a non-zero gradient, so an unknown feature is one
training never saw (a misspelled name, a string value never met, such as
``"0.4"`` for a feature trained with numbers) or one whose weight is exactly 0
(it adds nothing to the score either way). A name that collides in the hash
table with a known one counts as known. The count comes from the shares the
paths already look up (a share is ``weight * sign``), so it costs a comparison
per feature.

The scores equal the learner's own (:meth:`raw`) up to the order of
floating-point additions; the tests check both paths against the learner.

When the optional C extension ``streamlearn.serving._native`` is built, a
scorer of one output without scaling also keeps the shares it has worked out
in a native table (``LinearScorer.native``, a ``_native.Shares``), whose
``score(body)`` scores the raw body of a plain one-event request in one call
with the same sums as :meth:`LinearScorer.score_one`: a float, ``False`` when
a name or string is not in the table yet (score the decoded event, then
:meth:`LinearScorer.remember` it), ``None`` for any other body. The table is
made with an intercept of 0 and the caller adds the scorer's (``_b0``), so
that a delta version, which changes the intercept, keeps the table.

**Delta versions.** A scorer reads the learner's arrays. When a delta version
writes new values at some slots of them (only while no request uses this
scorer: the watcher's double buffer), :meth:`LinearScorer.refresh` redoes
what the scorer derived at those slots alone: the spreads and known flags,
and every remembered share worked out from one of them (found through
:class:`SlotKeys`, which notes each share's slot when it is worked out):
dropped from the Python tables, rewritten in place in the native one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from operator import mul
from typing import Any

import numpy as np

from streamlearn.contract import MAX_FEATURES, RULES
from streamlearn.errors import ValidationError
from streamlearn.features import FeatureHasher

__all__ = ["LinearScorer", "SlotKeys", "event_entries", "native_available"]

_CACHE_LIMIT = 1 << 20  # remembered features per version before starting afresh
_KEYS_LIMIT = 4 * _CACHE_LIMIT  # shares noted by slot before forgetting every share

# what a remembered share is, in SlotKeys: (kind, name[, value])
_NUMBER = "number"  # LinearScorer._num[name] (or a _NameShares' own number share)
_STRING = "string"  # LinearScorer._str[(name, value)] and _NameShares._by_value[value]
_FLAG = "flag"  # LinearScorer._flag[name]
_NATIVE_NUMBER = "native number"  # the native table's share of name
_NATIVE_STRING = "native string"  # the native table's share of name=value

try:  # the optional C extension (built by `pip install`; absent without a compiler)
    from streamlearn.serving._native import Shares as _NativeShares
except ImportError:  # pragma: no cover - depends on the build
    _NativeShares = None
if os.environ.get("STREAMLEARN_SERVING_NATIVE", "1") == "0":  # switched off by the operator
    _NativeShares = None


def native_available() -> bool:
    """Whether scorers built from now on get a native table of shares (the
    extension is built and ``$STREAMLEARN_SERVING_NATIVE`` is not ``0``)."""
    return _NativeShares is not None


class LinearScorer:
    """Raw scores ``z = intercept + x · w`` of one immutable linear model.

    Parameters
    ----------
    weights
        ``(n_slots,)`` for one output, ``(n_slots, k)`` for ``k`` classes.
    intercept
        One value per output.
    hasher
        The learner's hasher (its ``bits`` and ``dense`` names).
    mean, var
        The learner's scaler statistics per slot, or ``None`` when it does
        not standardise numbers.

    Examples
    --------
    >>> from streamlearn.learners import LogisticRegression
    >>> model = LogisticRegression(bits=8)
    >>> model.learn_many([{"age": 30.0, "city": "Lyon"}, {"age": 5.0}], [True, False])
    >>> scorer = LinearScorer.from_learner(model)
    >>> x = {"age": 30.0, "city": "Lyon"}
    >>> z = scorer.score_one(x)
    >>> p = 1.0 / (1.0 + math.exp(-z))
    >>> bool(abs(p - model.predict_proba_one(x)[True]) < 1e-12)
    True
    >>> scorer.score_one({"age": [1]}) is None  # not a plain value: the caller validates
    True
    """

    def __init__(
        self,
        weights: np.ndarray,
        intercept: np.ndarray,
        hasher: FeatureHasher,
        mean: np.ndarray | None = None,
        var: np.ndarray | None = None,
    ) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim not in (1, 2) or w.shape[0] != hasher.n_slots:
            raise ValidationError(
                "weights", f"{hasher.n_slots} rows (the hasher's slots)", str(w.shape)
            )
        self.hasher = hasher
        self.n_outputs = 1 if w.ndim == 1 else w.shape[1]
        self._w = w
        self._w2 = w.reshape(w.shape[0], -1)
        self._b = np.asarray(intercept, dtype=np.float64).reshape(-1)
        self._b0 = float(self._b[0]) if len(self._b) else 0.0
        self._scaled = mean is not None
        self._mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self._sd = None if var is None else np.sqrt(np.asarray(var, dtype=np.float64))
        # one output: name -> share of a number (a float, or (w, sign, mean, sd) when scaled;
        # without scaling, a _NameShares for a name seen with strings, and booleans count as
        # the numbers 0 and 1); (name, value) -> share of a string; name -> share of true
        # (when scaled)
        self._num: dict[str, Any] = {}
        self._num_get = self._num.get
        self._by_value_size = 0  # strings remembered by all the _NameShares of _num
        self._str: dict[tuple[str, str], float] = {}
        self._flag: dict[str, float] = {}
        # features of the event being scored whose string shares were 0 (counted by
        # _NameShares, so that the one C-level pass of score_one stays as it is)
        self._unknown = 0
        # slots with a non-zero weight for some output: known features of columns and
        # of models of several outputs
        self._known_slot = np.any(self._w2 != 0.0, axis=1)
        # a number under scaling: also a spread (else it is standardised to 0, as in
        # score_one, whose share of it is then 0)
        self._known_number = (
            self._known_slot & (self._sd > 0) if self._sd is not None else self._known_slot
        )
        # which remembered shares (here and in the native table) each slot went into,
        # so that new values at some slots (a delta version) refresh those alone
        self._keys = SlotKeys()
        # the same shares in C, for raw one-event bodies: one output, no scaling. The
        # table's intercept is 0 (the caller adds _b0): a delta version changes the
        # intercept and the table keeps its shares.
        self.native: Any = None
        if _NativeShares is not None and self.n_outputs == 1 and not self._scaled:
            self.native = _NativeShares(0.0, _CACHE_LIMIT)

    @classmethod
    def from_learner(cls, learner: Any) -> LinearScorer | None:
        """The scorer of a streamlearn linear learner (linear, logistic or
        softmax regression); ``None`` for any other learner."""
        from streamlearn.learners import LinearRegression, LogisticRegression, SoftmaxRegression

        kinds = (LinearRegression, LogisticRegression, SoftmaxRegression)
        if type(learner) not in kinds or learner.crosses:
            return None  # crosses: the learner's own path (its hasher crosses)
        arrays = learner.state(copy=False).arrays
        hasher = FeatureHasher(bits=learner.bits, dense=learner.dense)
        if arrays["weights"].ndim == 2 and arrays["weights"].shape[1] == 0:
            return None  # a softmax that has seen no class yet
        return cls(
            arrays["weights"],
            arrays["intercept"],
            hasher,
            arrays.get("scaler.mean"),
            arrays.get("scaler.var"),
        )

    # -- one output, one event: plain Python ---------------------------------------

    def _share_of_number(self, name: str) -> Any:
        slot, sign = self.hasher.slot_of(name)
        w = float(self._w[slot])
        if self._scaled:
            sd = float(self._sd[slot])  # type: ignore[index]
            share: Any = (w, sign, float(self._mean[slot]), sd) if sd > 0 else (0.0, 1.0, 0.0, 1.0)  # type: ignore[index]
        else:
            share = w * sign
        self._remember(self._num)[name] = share
        self._note(slot, (_NUMBER, name))
        return share

    def _share_of_string(self, name: str, value: str) -> float:
        slot, sign = self.hasher.slot_of(name, value)
        share = self._remember(self._str)[(name, value)] = float(self._w[slot]) * sign
        self._note(slot, (_STRING, name, value))
        return share

    def _share_of_flag(self, name: str) -> float:
        slot, sign = self.hasher.slot_of(name)
        share = self._remember(self._flag)[name] = float(self._w[slot]) * sign
        self._note(slot, (_FLAG, name))
        return share

    def _note(self, slot: int, key: tuple) -> None:
        """Remember that the share ``key`` was worked out from ``slot``'s weight."""
        keys = self._keys
        keys.note(slot, key)
        if keys.size > _KEYS_LIMIT:  # every remembered share forgotten: start afresh
            self._start_afresh()

    def _start_afresh(self) -> None:
        self._num.clear()
        self._str.clear()
        self._flag.clear()
        self._by_value_size = 0
        self._keys = SlotKeys()
        if self.native is not None:
            self.native = _NativeShares(0.0, _CACHE_LIMIT)

    # -- a delta version: new values at some slots ---------------------------------

    def refresh(self, slots: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Follow new values of the learner's ``arrays`` at ``slots`` (ascending)
        and its new intercept, in time proportional to ``len(slots)``.

        ``arrays`` are the learner's arrays, already changed in place (this
        scorer reads the same ``weights`` and ``scaler.mean``; their values at
        ``slots`` are copied when it holds copies). What the scorer derives
        from them is redone at ``slots`` alone: the spreads, the known flags,
        and every remembered share whose slot is among them (dropped from the
        Python tables, rewritten in the native one). Call it only while no
        request uses this scorer.
        """
        w = np.asarray(arrays["weights"])
        if w.shape != self._w.shape:
            raise ValidationError("weights", f"shape {self._w.shape}", str(w.shape))
        if w is not self._w and len(slots):
            self._w[slots] = w[slots]
        self._b = np.array(arrays["intercept"], dtype=np.float64).reshape(-1)
        self._b0 = float(self._b[0]) if len(self._b) else 0.0
        if not len(slots):
            return
        rows = self._w2[slots]
        self._known_slot[slots] = np.any(rows != 0.0, axis=1)
        if self._scaled:
            mean = np.asarray(arrays["scaler.mean"])
            if mean is not self._mean:
                self._mean[slots] = mean[slots]  # type: ignore[index]
            self._sd[slots] = np.sqrt(np.asarray(arrays["scaler.var"], np.float64)[slots])  # type: ignore[index]
            self._known_number[slots] = self._known_slot[slots] & (self._sd[slots] > 0)  # type: ignore[index]
        num, strs, flags, native = self._num, self._str, self._flag, self.native
        slot_of = self.hasher.slot_of
        for slot, keys in self._keys.take(slots):
            kept = []
            for key in keys:
                kind = key[0]
                if kind is _NUMBER:
                    c = num.get(key[1])
                    if type(c) is _NameShares:
                        c._number = None
                    elif c is not None:
                        del num[key[1]]
                elif kind is _STRING:
                    strs.pop((key[1], key[2]), None)
                    c = num.get(key[1])
                    if type(c) is _NameShares:
                        c._by_value.pop(key[2], None)
                elif kind is _FLAG:
                    flags.pop(key[1], None)
                elif native is not None:  # the native table's entries: new shares in place
                    kept.append(key)
                    if kind is _NATIVE_NUMBER:
                        share = float(self._w[slot]) * slot_of(key[1])[1]
                        native.add_number(key[1].encode(), share)
                    else:
                        native.add_string(
                            key[1].encode(), key[2].encode(),
                            float(self._w[slot]) * slot_of(key[1], key[2])[1],
                        )
            self._keys.put_back(slot, kept)

    @staticmethod
    def _remember(cache: dict) -> dict:
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        return cache

    def score_one(self, x: Mapping[str, Any]) -> float | None:
        """The raw score of one event (see :meth:`score_one_known`), or ``None``."""
        got = self.score_one_known(x)
        return None if got is None else got[0]

    def score_one_known(self, x: Mapping[str, Any]) -> tuple[float, int] | None:
        """The raw score and the number of known features (see the module's
        docstring) of one event, or ``None``.

        The raw score of one event of a one-output model, or ``None`` when
        the event has anything but plain values (numbers, strings, booleans,
        lists of strings under valid names) or no feature: then the caller
        validates it the slow way, which names the problem.

        Without scaling, the score is one pass in C over the event,
        ``sum(map(mul, map(shares.get, x), x.values()))``: a name's share is a
        float for numbers and booleans (``share * True`` is a flag's share,
        ``share * False`` adds nothing) or, for a name seen with strings, a
        :class:`_NameShares` whose ``*`` looks the value up. An unknown name
        (``None * value``) or a value that is not plain fails that pass with
        ``TypeError``; then one loop in Python learns the names' shares or
        refuses the event.

        Raises ``TypeError`` for a model of several outputs.
        """
        if self.n_outputs != 1:
            raise TypeError("score_one is for models of one output; use score_many")
        if not 0 < len(x) <= MAX_FEATURES:  # no feature, or more than the contract allows
            return None
        if self._scaled:
            return self._score_one_scaled(x)
        self._unknown = 0
        known = 0
        try:
            shares = list(map(self._num_get, x))
            z = sum(map(mul, shares, x.values()))
            # a float share of 0.0 is a number name without weight; a _NameShares is
            # never equal to 0.0, and counts its own unknown strings in _unknown
            known = len(shares) - shares.count(0.0) - self._unknown
        except TypeError:  # a name not seen yet, or a value that is not plain
            z = None
        except (ValidationError, OverflowError):
            return None
        try:
            if z is None:
                got = self._learn_one(x)
                if got is None:
                    return None
                z, known = got
            z += self._b0
            return (z, known) if math.isfinite(z) else None
        except (ValidationError, OverflowError, TypeError):
            return None

    def remember(self, x: Mapping[str, Any]) -> None:
        """Put the shares of event ``x``, which :meth:`score_one` has just
        scored, in the native table, so that the next body of these names and
        strings is scored there. Does nothing without a native table."""
        native = self.native
        if native is None:
            return
        slot_of = self.hasher.slot_of
        w = self._w
        note = self._note
        try:
            for k, v in x.items():
                name = k.encode()
                if type(v) is str:
                    native.add_string(name, v.encode(), self._share_of_string(k, v))
                    note(slot_of(k, v)[0], (_NATIVE_STRING, k, v))
                elif type(v) is list:
                    native.add_name(name)
                    for item in v:
                        native.add_string(name, item.encode(), self._share_of_string(k, item))
                        note(slot_of(k, item)[0], (_NATIVE_STRING, k, item))
                else:  # a number or a boolean: the share _share_of_number works out
                    slot, sign = slot_of(k)
                    native.add_number(name, float(w[slot]) * sign)
                    note(slot, (_NATIVE_NUMBER, k))
        except (UnicodeEncodeError, ValidationError, OverflowError, TypeError, AttributeError):
            return  # a name or string no plain body can carry: nothing to remember

    def _learn_one(self, x: Mapping[str, Any]) -> tuple[float, int] | None:
        """:meth:`score_one_known` in a Python loop that remembers each new
        name's share; ``None`` for a value that is not plain."""
        num = self._num
        z = 0.0
        zeros = 0
        self._unknown = 0
        for k, v in x.items():
            if not k:
                return None  # no slot for an empty name: the validating path names it
            t = type(v)
            c = num.get(k)
            if t is str or t is list:
                if type(c) is not _NameShares:
                    c = self._remember(num)[k] = _NameShares(self, k)
            elif t is float or t is int or t is bool:
                if c is None:
                    c = self._share_of_number(k)
            else:
                return None
            if c == 0.0:  # a number name without weight (a _NameShares is never 0.0)
                zeros += 1
            z += c * v
        return z, len(x) - zeros - self._unknown

    def _score_one_scaled(self, x: Mapping[str, Any]) -> tuple[float, int] | None:
        """:meth:`score_one` of a learner that standardises numbers (not booleans)."""
        num, strs = self._num, self._str
        z = 0.0
        known = 0
        try:
            for k, v in x.items():
                t = type(v)
                if t is float or t is int:
                    c = num.get(k)
                    if c is None:
                        c = self._share_of_number(k)
                    w, s, m, sd = c
                    z += w * ((s * v - m) / sd)
                    known += w != 0.0
                elif t is str:
                    c = strs.get((k, v))
                    if c is None:
                        c = self._share_of_string(k, v)
                    z += c
                    known += c != 0.0
                elif t is bool:
                    c = self._flag.get(k)
                    if c is None:
                        c = self._share_of_flag(k)  # checks the name, too
                    if v:
                        z += c
                    known += c != 0.0
                elif t is list:
                    hit = False
                    for item in v:
                        if type(item) is not str:
                            return None
                        c = strs.get((k, item))
                        if c is None:
                            c = self._share_of_string(k, item)
                        z += c
                        hit = hit or c != 0.0
                    known += hit
                else:
                    return None
        except (ValidationError, OverflowError, TypeError):
            return None
        z += self._b0
        return (z, known) if math.isfinite(z) else None

    # -- any number of outputs and events: entries, then numpy ---------------------

    def _entries(
        self, xs: Sequence[Mapping[str, Any]]
    ) -> tuple[list[int], list[float], list[bool], list[int], list[int], list[int]] | None:
        return event_entries(self.hasher, xs)

    def score_many(self, xs: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
        """Raw scores of many events, ``(n,)`` or ``(n, k)``; ``None`` as in
        :meth:`score_one`."""
        got = self.score_many_known(xs)
        return None if got is None else got[0]

    def score_many_known(
        self, xs: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Raw scores of many events, ``(n,)`` or ``(n, k)``, and each event's
        number of known features; ``None`` as in :meth:`score_one`."""
        if self.n_outputs == 1:
            out = np.empty(len(xs))
            known = np.empty(len(xs), np.int64)
            score_one = self.score_one_known
            for i, x in enumerate(xs):
                one = score_one(x)
                if one is None:
                    return None
                out[i], known[i] = one
            return out, known
        got = self._entries(xs)
        if got is None:
            return None
        idx_list, val_list, num_list, ends, feature_rows, entry_features = got
        idx = np.array(idx_list, np.int64)
        values = np.array(val_list, np.float64)
        if not np.isfinite(values).all():
            return None
        if self._scaled and len(idx):
            numeric = np.array(num_list, bool)
            at = idx[numeric]
            sd = self._sd[at]  # type: ignore[index]
            values[numeric] = np.divide(
                values[numeric] - self._mean[at],  # type: ignore[index]
                sd,
                out=np.zeros(len(at)),
                where=sd > 0,
            )
        rows = np.repeat(np.arange(len(ends)), np.diff(np.array([0, *ends])))
        contrib = self._w2[idx] * values[:, None]
        z = np.zeros((len(ends), self.n_outputs))
        for j in range(self.n_outputs):
            z[:, j] = np.bincount(rows, weights=contrib[:, j], minlength=len(ends))
        z += self._b
        # a feature is known when any of its entries' slots is
        feature_known = np.zeros(len(feature_rows), bool)
        feature_known[np.array(entry_features, np.int64)[self._known_slot[idx]]] = True
        known = np.bincount(
            np.array(feature_rows, np.int64), weights=feature_known, minlength=len(ends)
        ).astype(np.int64)
        return (z[:, 0] if self._w.ndim == 1 else z), known

    # -- Arrow columns ------------------------------------------------------------

    def score_columns(self, columns: Mapping[str, Any], n_rows: int) -> np.ndarray:
        """Raw scores, ``(n_rows,)`` or ``(n_rows, k)``, of events given as
        feature name to pyarrow array (see :meth:`score_columns_known`)."""
        return self.score_columns_known(columns, n_rows)[0]

    def score_columns_known(
        self, columns: Mapping[str, Any], n_rows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores, ``(n_rows,)`` or ``(n_rows, k)``, of events given as
        feature name to pyarrow array (nulls: the feature is absent), and each
        row's number of known features.

        Numeric columns without nulls (the usual case) are stacked into one
        matrix and scored by one matrix product.

        Raises :class:`~streamlearn.errors.ValidationError` naming the column
        for strings under a dense name, an empty name, or a column of another type.
        """
        import pyarrow as pa

        from streamlearn.serving.arrow_kinds import arrow_kinds
        from streamlearn.serving.columns import list_items

        kinds = arrow_kinds()
        slot_of = self.hasher.slot_of
        z = np.zeros((n_rows, self.n_outputs))
        z += self._b
        known = np.zeros(n_rows, np.int64)
        known_columns = 0  # numeric columns without nulls whose slot is known
        stacked: list[np.ndarray] = []
        slots: list[int] = []
        signs: list[float] = []
        for name, column in columns.items():
            if isinstance(column, pa.ChunkedArray):
                column = (
                    column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
                )
            if type(name) is not str or not name:
                raise ValidationError("columns", RULES["features.empty_name"].expected, repr(name))
            kind = column.type
            tid = kind.id
            if tid in kinds.floats or tid in kinds.integers:
                if column.null_count == 0:
                    slot, sign = slot_of(name)
                    stacked.append(column.to_numpy(zero_copy_only=False))
                    slots.append(slot)
                    signs.append(sign)
                    known_columns += bool(self._known_number[slot])
                else:
                    self._add_numbers(z, known, name, column, False)
            elif tid == kinds.boolean:
                self._add_numbers(z, known, name, column, True)
            elif tid in kinds.strings or tid == kinds.dictionary:
                shares = self._string_shares(name, column)
                z += shares
                known += np.any(shares != 0.0, axis=1)
            elif tid in kinds.lists:
                parents, items = list_items(column)
                shares = self._string_shares(name, items)
                if len(parents):
                    for j in range(self.n_outputs):
                        z[:, j] += np.bincount(parents, weights=shares[:, j], minlength=n_rows)
                    item_known = np.any(shares != 0.0, axis=1)
                    known += np.bincount(parents, weights=item_known, minlength=n_rows) > 0
            else:
                raise ValidationError(
                    f"columns.{name}",
                    "numbers, booleans, strings or lists of strings",
                    str(kind),
                )
        if stacked:
            x = np.empty((n_rows, len(stacked)))
            for j, column_values in enumerate(stacked):
                x[:, j] = column_values
            x *= np.array(signs)
            at = np.array(slots, np.int64)
            if self._scaled:
                sd = self._sd[at]  # type: ignore[index]
                x = np.divide(
                    x - self._mean[at],  # type: ignore[index]
                    sd,
                    out=np.zeros_like(x),
                    where=sd > 0,
                )
            z += x @ self._w2[at]
        if known_columns:
            known += known_columns
        return (z[:, 0] if self._w.ndim == 1 else z), known

    def _add_numbers(
        self, z: np.ndarray, known: np.ndarray, name: str, column: Any, flag: bool
    ) -> None:
        slot, sign = self.hasher.slot_of(name)
        nulls = column.null_count
        if nulls == len(column):
            return
        if (self._known_slot if flag else self._known_number)[slot]:
            if nulls:
                known += np.asarray(column.is_valid().to_numpy(zero_copy_only=False), bool)
            else:
                known += 1
        if nulls:
            x = np.asarray(column.fill_null(False if flag else 0).to_numpy(zero_copy_only=False))
        else:
            x = np.asarray(column.to_numpy(zero_copy_only=False))
        x = x.astype(np.float64, copy=False) * sign
        w = self._w2[slot]
        if self._scaled and not flag:
            sd = float(self._sd[slot])  # type: ignore[index]
            if sd <= 0:
                return
            x = (x - float(self._mean[slot])) / sd  # type: ignore[index]
            if nulls:
                x *= np.asarray(column.is_valid().to_numpy(zero_copy_only=False), bool)
        if self.n_outputs == 1:
            z[:, 0] += x * w[0]
        else:
            z += x[:, None] * w[None, :]

    def _string_shares(self, name: str, column: Any) -> np.ndarray:
        """Each row's share of a string column: ``(len(column), k)``, zeros for nulls."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(column) == 0:
            return np.zeros((0, self.n_outputs))
        if not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column)
        elif not (
            pa.types.is_string(column.type.value_type)
            or pa.types.is_large_string(column.type.value_type)
        ):
            raise ValidationError(
                f"columns.{name}", "numbers, booleans, strings or lists of strings",
                str(column.type),
            )
        uniques = column.dictionary.to_pylist()
        table = np.zeros((len(uniques) + 1, self.n_outputs))
        try:
            if self.n_outputs == 1:  # the shares remembered for single events
                strs = self._str
                shares = list(map(strs.get, [(name, u) for u in uniques]))
                if None in shares:
                    shares = [
                        0.0 if u is None else c if c is not None else self._share_of_string(name, u)
                        for u, c in zip(uniques, shares, strict=True)
                    ]
                table[:-1, 0] = shares
            else:
                present = [j for j, u in enumerate(uniques) if u is not None]
                if present:
                    slots, signs = self.hasher.slots_of(name, [uniques[j] for j in present])
                    table[present] = self._w2[slots] * signs[:, None]
        except ValidationError as exc:
            raise ValidationError(f"columns.{name}", exc.expected, exc.got) from None
        codes = column.indices
        if codes.null_count:
            codes = codes.fill_null(len(uniques))
        return table[np.asarray(codes.to_numpy(zero_copy_only=False), np.int64)]


def event_entries(
    hasher: FeatureHasher, xs: Sequence[Mapping[str, Any]]
) -> tuple[list[int], list[float], list[bool], list[int], list[int], list[int]] | None:
    """Slots, signed values, numeric flags and row ends of events ``xs`` as
    ``hasher`` encodes them, the row of each feature and the feature of each
    entry; or ``None`` for an empty event or a value that is not plain."""
    slot_of = hasher.slot_of
    tokens = hasher._tokens  # the hasher's own remembered (slot, sign)
    idx: list[int] = []
    vals: list[float] = []
    num: list[bool] = []
    ends: list[int] = []
    feature_rows: list[int] = []
    entry_features: list[int] = []
    try:
        for row, x in enumerate(xs):
            if not x:
                return None
            for k, v in x.items():
                before = len(idx)
                t = type(v)
                if t is float or t is int:
                    e = tokens.get(k) or slot_of(k)
                    idx.append(e[0])
                    vals.append(e[1] * v)
                    num.append(True)
                elif t is str:
                    e = tokens.get((k, v)) or slot_of(k, v)
                    idx.append(e[0])
                    vals.append(e[1])
                    num.append(False)
                elif t is bool:
                    e = tokens.get(k) or slot_of(k)
                    idx.append(e[0])
                    vals.append(e[1] if v else e[1] * 0.0)
                    num.append(False)
                elif t is list:
                    for item in v:
                        if type(item) is not str:
                            return None
                        e = tokens.get((k, item)) or slot_of(k, item)
                        idx.append(e[0])
                        vals.append(e[1])
                        num.append(False)
                else:
                    return None
                entry_features += [len(feature_rows)] * (len(idx) - before)
                feature_rows.append(row)
            ends.append(len(idx))
    except (ValidationError, OverflowError, TypeError):
        return None
    return idx, vals, num, ends, feature_rows, entry_features


class SlotKeys:
    """Which remembered shares each slot's values went into: ``slot -> {key}``.

    A scorer notes a key when it works a share out (a cache miss, never on the
    hit path), and :meth:`take` hands back those of the slots a delta version
    changed, so that only their shares are redone. ``size`` counts the keys
    noted (the owner starts afresh past a budget).

    >>> keys = SlotKeys()
    >>> keys.note(7, ("number", "age")); keys.note(3, ("string", "city", "Lyon"))
    >>> keys.take(np.array([1, 3, 9]))
    [(3, {('string', 'city', 'Lyon')})]
    >>> keys.take(np.array([3])), keys.size
    ([], 1)
    """

    __slots__ = ("_at", "size")

    def __init__(self) -> None:
        self._at: dict[int, set] = {}
        self.size = 0

    def note(self, slot: int, key: tuple) -> None:
        keys = self._at.get(slot)
        if keys is None:
            self._at[slot] = {key}
            self.size += 1
        elif key not in keys:
            keys.add(key)
            self.size += 1

    def take(self, slots: np.ndarray) -> list[tuple[int, set]]:
        """Remove and return ``(slot, keys)`` of the ``slots`` (ascending) that
        have any: O(min(len(slots), slots noted)) look-ups."""
        at = self._at
        if not at or not len(slots):
            return []
        if len(at) < len(slots):  # look the noted slots up among the changed ones
            noted = np.fromiter(at, np.int64, len(at))
            pos = np.minimum(np.searchsorted(slots, noted), len(slots) - 1)
            hits = noted[slots[pos] == noted].tolist()
        else:
            hits = [s for s in slots.tolist() if s in at]
        out = [(s, at.pop(s)) for s in hits]
        self.size -= sum(len(keys) for _, keys in out)
        return out

    def put_back(self, slot: int, keys: list[tuple]) -> None:
        """Note ``keys`` of ``slot`` again (those :meth:`take` returned that still hold)."""
        for key in keys:
            self.note(slot, key)


class _NameShares:
    """Everything one feature name adds to a score, whatever its value:
    ``shares * value`` is the share of a string, the sum of a list of strings'
    shares, or ``share * x`` for a number or boolean ``x``; ``TypeError`` for
    any other value. A scorer keeps one per name it has seen with strings, so
    that one ``map(mul, ...)`` scores an event of numbers and strings alike.
    The strings' shares are remembered here by value (no ``(name, value)``
    key to build and hash per look-up), as well as in the scorer's own table.
    """

    __slots__ = ("_scorer", "_name", "_by_value", "_number")

    def __init__(self, scorer: LinearScorer, name: str) -> None:
        self._scorer = scorer
        self._name = name
        self._by_value: dict[str, float] = {}
        self._number: float | None = None

    def _of_string(self, value: str) -> float:
        scorer = self._scorer
        share = scorer._share_of_string(self._name, value)  # checks name and value
        # one budget for the strings of every name: past it, all names start afresh
        # (this object may then outlive its place in _num until the event is scored)
        scorer._by_value_size += 1
        if scorer._by_value_size > _CACHE_LIMIT:
            scorer._num.clear()
            scorer._by_value_size = 0
        self._by_value[value] = share
        return share

    def __mul__(self, value: Any) -> float:
        # a share of 0.0 (no weight) adds one to the scorer's count of unknown features
        t = type(value)
        if t is str:
            c = self._by_value.get(value)
            if c is None:
                c = self._of_string(value)
            if c == 0.0:
                self._scorer._unknown += 1
            return c
        if t is list:
            total = 0.0
            hit = False
            by_value = self._by_value
            for item in value:
                if type(item) is not str:
                    raise TypeError("a list of strings")
                c = by_value.get(item)
                if c is None:
                    c = self._of_string(item)
                total += c
                hit = hit or c != 0.0
            if not hit:
                self._scorer._unknown += 1
            return total
        if t is float or t is int or t is bool:
            if self._number is None:
                slot, sign = self._scorer.hasher.slot_of(self._name)
                self._number = float(self._scorer._w[slot]) * sign
                self._scorer._note(slot, (_NUMBER, self._name))
            if self._number == 0.0:
                self._scorer._unknown += 1
            return self._number * value
        raise TypeError("a number, a string, a boolean or a list of strings")
