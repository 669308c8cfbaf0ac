"""Raw scores of a factorization machine straight from features, for serving.

A factorization machine (:class:`~streamlearn.learners.FMRegressor`,
:class:`~streamlearn.learners.FMClassifier`) scores an event's entries ``j``
(slot ``s_j``, signed value ``x_j``) as its learner does::

    z = b + Σ_j w[s_j] x_j + ½ Σ_f ((Σ_j v[s_j,f] x_j)² − Σ_j v[s_j,f]² x_j²)

JSON events are hashed by
:func:`~streamlearn.serving.linear_scorer.event_entries` (the hasher's own
remembered ``(slot, sign)``), Arrow columns by
:class:`~streamlearn.serving.columns.ColumnEncoder`, and the score is a few
numpy operations over the gathered weights and factor rows, O(k × entries).

When the optional C extension is built, the scorer also keeps a native table
(``FMScorer.native``, a ``_native.Shares`` made with ``k``) of each name's and
string's share ``w[slot] * sign`` *and* signed factors ``v[slot] * sign``: a
plain one-event body is then scored from its raw bytes in one call, the
pairwise term included, as for linear models (``False`` when a name or string
is not in the table yet: score the decoded event, then :meth:`remember` it).

**Known features.** A feature is known when the slot it hashes to has a
non-zero weight *or any non-zero factor* (a list of strings when any of its
strings' slots does). Factors start as random draws, so every slot of a
factorization machine starts with non-zero factors and every feature counts
as known unless its factors are exactly zero (``init_std`` is refused at 0;
FTRL's l1 can drive factors to 0). The count is therefore a weaker typo
check than for linear models; see ``docs/serving.md``.

>>> from streamlearn.learners import FMClassifier
>>> fm = FMClassifier(k=2, bits=8)
>>> fm.learn_many([{"age": 30.0, "city": "Lyon"}, {"age": 5.0}], [True, False])
>>> scorer = FMScorer.from_learner(fm)
>>> z, known = scorer.score_one_known({"age": 30.0, "city": "Lyon"})
>>> p = 1.0 / (1.0 + math.exp(-z))
>>> bool(abs(p - fm.predict_proba_one({"age": 30.0, "city": "Lyon"})[True]) < 1e-12), known
(True, 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamlearn.errors import ValidationError
from streamlearn.features import FeatureBatch, FeatureHasher
from streamlearn.serving import linear_scorer
from streamlearn.serving.linear_scorer import SlotKeys, event_entries

__all__ = ["FMScorer"]


class FMScorer:
    """Raw scores and known features of one immutable factorization machine.

    Parameters
    ----------
    weights
        ``(n_slots,)`` linear weights.
    intercept
        One value.
    factors
        ``(n_slots, k)`` factors.
    hasher
        The learner's hasher (its ``bits`` and ``dense`` names).

    The interface is :class:`~streamlearn.serving.linear_scorer.LinearScorer`'s
    for one output (``score_one_known``, ``score_many_known``,
    ``score_columns_known``, ``remember``, ``native``), so that
    :class:`~streamlearn.serving.learner_predictor.LearnerPredictor` serves
    both alike. ``events`` counts the events it has scored.
    """

    n_outputs = 1

    def __init__(
        self, weights: np.ndarray, intercept: np.ndarray, factors: np.ndarray,
        hasher: FeatureHasher,
    ) -> None:
        w = np.asarray(weights, dtype=np.float64)
        v = np.asarray(factors, dtype=np.float64)
        if w.ndim != 1 or w.shape[0] != hasher.n_slots:
            raise ValidationError(
                "weights", f"({hasher.n_slots},) (the hasher's slots)", str(w.shape)
            )
        if v.ndim != 2 or v.shape[0] != hasher.n_slots:
            raise ValidationError(
                "factors", f"({hasher.n_slots}, k) (the hasher's slots)", str(v.shape)
            )
        self.hasher = hasher
        self.k = v.shape[1]
        self._w = w
        self._v = v
        self._b0 = float(np.asarray(intercept, dtype=np.float64).reshape(-1)[0])
        self._known_slot = (w != 0.0) | np.any(v != 0.0, axis=1)
        self._columns: Any = None
        self.events = 0
        # the shares and signed factors in C, for raw one-event bodies
        # which native entries each slot went into (see refresh); the table's intercept
        # is 0 (the caller adds _b0), so that a new intercept keeps its entries
        self._keys = SlotKeys()
        native = linear_scorer._NativeShares
        self.native: Any = (
            None if native is None else native(0.0, linear_scorer._CACHE_LIMIT, k=self.k)
        )

    @classmethod
    def from_learner(cls, learner: Any) -> FMScorer | None:
        """The scorer of a streamlearn factorization machine; ``None`` for any
        other learner."""
        from streamlearn.learners import FMClassifier, FMRegressor

        if type(learner) not in (FMRegressor, FMClassifier) or learner.crosses:
            return None  # crosses: the learner's own path (its hasher crosses)
        arrays = learner.state(copy=False).arrays
        hasher = FeatureHasher(bits=learner.bits, dense=learner.dense)
        return cls(arrays["weights"], arrays["intercept"], arrays["factors"], hasher)

    def raw(self, batch: FeatureBatch) -> np.ndarray:
        """Raw scores of an encoded batch (the learner's formula); huge numbers
        give scores that are not finite, without a warning."""
        with np.errstate(over="ignore", invalid="ignore"):
            z = batch.row_sums(self._w[batch.indices] * batch.values) + self._b0
            if batch.n_rows == 0 or len(batch.indices) == 0:
                return z
            vx = self._v[batch.indices] * batch.values[:, None]
            s = batch.row_sums(vx)
            q = batch.row_sums(vx * vx)
            return z + 0.5 * (s * s - q).sum(axis=1)

    # -- JSON events ----------------------------------------------------------------

    def score_one_known(self, x: Mapping[str, Any]) -> tuple[float, int] | None:
        """The raw score and known features of one event, or ``None`` when it
        has anything but plain values under valid names, or no feature (the
        caller validates it the slow way, which names the problem).

        The score of one event's ``n`` entries, without a feature batch:
        ``w[idx] · x`` and, with ``vx = v[idx] * x``, ``½ Σ_f ((Σ vx)² − Σ vx²)``.
        """
        got = event_entries(self.hasher, (x,))
        if got is None:
            return None
        idx_list, val_list, _, _, feature_rows, entry_features = got
        if not idx_list:  # only empty lists: the intercept alone
            self.events += 1
            return self._b0, 0
        idx = np.array(idx_list, np.int64)
        values = np.array(val_list, np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # huge numbers: no finite score
            vx = self._v[idx] * values[:, None]
            s = vx.sum(axis=0)
            pair = float((s * s - (vx * vx).sum(axis=0)).sum())  # per factor, as the learner
            z = self._b0 + float(self._w[idx] @ values) + 0.5 * pair
        if not math.isfinite(z):
            return None
        hit = self._known_slot[idx]
        known = len(set(np.array(entry_features)[hit].tolist())) if not hit.all() else (
            len(set(entry_features))
        )
        self.events += 1
        return z, known

    def score_many_known(
        self, xs: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Raw scores ``(n,)`` and each event's known features; ``None`` as in
        :meth:`score_one_known`."""
        got = event_entries(self.hasher, xs)
        if got is None:
            return None
        idx_list, val_list, _, ends, feature_rows, entry_features = got
        values = np.array(val_list, np.float64)
        if not np.isfinite(values).all():
            return None
        idx = np.array(idx_list, np.int64)
        offsets = np.zeros(len(ends) + 1, np.int64)
        offsets[1:] = ends
        batch = FeatureBatch(idx, values, offsets, np.ones(len(idx), bool), self.hasher.n_slots)
        z = self.raw(batch)
        if not np.isfinite(z).all():
            return None
        feature_known = np.zeros(len(feature_rows), bool)
        feature_known[np.array(entry_features, np.int64)[self._known_slot[idx]]] = True
        known = np.bincount(
            np.array(feature_rows, np.int64), weights=feature_known, minlength=len(ends)
        ).astype(np.int64)
        self.events += len(ends)
        return z, known

    def remember(self, x: Mapping[str, Any]) -> None:
        """Put the shares and signed factors of event ``x``, which
        :meth:`score_one_known` has just scored, in the native table, so that
        the next body of these names and strings is scored there. Does nothing
        without a native table."""
        native = self.native
        if native is None:
            return
        slot_of = self.hasher.slot_of
        w, v = self._w, self._v
        note = self._note

        def share(name: str, value: str | None = None) -> tuple[float, bytes]:
            slot, sign = slot_of(name) if value is None else slot_of(name, value)
            note(slot, (name,) if value is None else (name, value))
            return float(w[slot]) * sign, (v[slot] * sign).tobytes()

        try:
            for k, value in x.items():
                name = k.encode()
                if type(value) is str:
                    native.add_string(name, value.encode(), *share(k, value))
                elif type(value) is list:
                    native.add_name(name)
                    for item in value:
                        native.add_string(name, item.encode(), *share(k, item))
                else:  # a number or a boolean
                    native.add_number(name, *share(k))
        except (UnicodeEncodeError, ValidationError, OverflowError, TypeError, AttributeError):
            return  # a name or string no plain body can carry: nothing to remember

    def _note(self, slot: int, key: tuple) -> None:
        keys = self._keys
        keys.note(slot, key)
        if keys.size > linear_scorer._KEYS_LIMIT:  # start afresh
            self._keys = SlotKeys()
            self.native = linear_scorer._NativeShares(0.0, linear_scorer._CACHE_LIMIT, k=self.k)

    def refresh(self, slots: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Follow new values of the learner's ``arrays`` at ``slots`` (ascending)
        and its new intercept, in time proportional to ``len(slots)``: the
        weights and factors there (copied when this scorer holds copies), their
        known flags, and the native entries of those slots, rewritten in place.
        Call it only while no request uses this scorer."""
        w, v = np.asarray(arrays["weights"]), np.asarray(arrays["factors"])
        if w.shape != self._w.shape or v.shape != self._v.shape:
            raise ValidationError(
                "factors", f"weights {self._w.shape} and factors {self._v.shape}",
                f"{w.shape} and {v.shape}",
            )
        self._b0 = float(np.asarray(arrays["intercept"], dtype=np.float64).reshape(-1)[0])
        if not len(slots):
            return
        if w is not self._w:
            self._w[slots] = w[slots]
        if v is not self._v:
            self._v[slots] = v[slots]
        self._known_slot[slots] = (self._w[slots] != 0.0) | np.any(self._v[slots] != 0.0, axis=1)
        native = self.native
        if native is None:
            return
        slot_of = self.hasher.slot_of
        for slot, keys in self._keys.take(slots):
            for key in keys:
                sign = slot_of(*key)[1]
                share, factors = float(self._w[slot]) * sign, (self._v[slot] * sign).tobytes()
                if len(key) == 1:
                    native.add_number(key[0].encode(), share, factors)
                else:
                    native.add_string(key[0].encode(), key[1].encode(), share, factors)
            self._keys.put_back(slot, list(keys))

    # -- Arrow columns ----------------------------------------------------------------

    def score_columns_known(
        self, columns: Mapping[str, Any], n_rows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores ``(n_rows,)`` of events given as feature name to pyarrow
        array (nulls: the feature is absent), and each row's known features.

        Each column is encoded on its own (its rows' known flags come from its
        entries alone), then all entries are scored as one batch.
        """
        if self._columns is None:
            from streamlearn.serving.columns import ColumnEncoder

            self._columns = ColumnEncoder(self.hasher)
        encode = self._columns.encode
        known = np.zeros(n_rows, np.int64)
        rows: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for name, column in columns.items():
            if type(name) is not str or not name:
                raise ValidationError("columns", "non-empty string feature names", repr(name))
            one = encode({name: column}, n_rows)
            at = one.rows()
            hit = np.zeros(n_rows, bool)
            hit[at[self._known_slot[one.indices]]] = True
            known += hit
            rows.append(at)
            slots.append(one.indices)
            values.append(one.values)
        if rows:
            row = np.concatenate(rows)
            order = np.argsort(row, kind="stable")
            idx = np.concatenate(slots)[order]
            val = np.concatenate(values)[order]
        else:
            idx, val = np.zeros(0, np.int64), np.zeros(0)
            row = np.zeros(0, np.int64)
        offsets = np.zeros(n_rows + 1, np.int64)
        np.cumsum(np.bincount(row, minlength=n_rows), out=offsets[1:])
        batch = FeatureBatch(idx, val, offsets, np.ones(len(idx), bool), self.hasher.n_slots)
        self.events += n_rows
        return self.raw(batch), known
