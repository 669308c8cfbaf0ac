"""Scores of a mixture of logistic regressions straight from features, for serving.

A :class:`~streamlearn.learners.LogisticMixture` answers an event with its
components' probabilities ``σ(z_c)`` weighted by ``π_c`` (``e^(−L_c)``
normalised, ``L_c`` a component's summed log-loss: the version's
``mixture.loss``). Each component is a logistic regression, one column of the
weights: a :class:`MixtureScorer` keeps one one-output
:class:`~streamlearn.serving.linear_scorer.LinearScorer` per column (their
shares remembered, their native tables when the C extension is built) and
gives the mixture as one raw score, its log-odds
``log(Σ π_c σ(z_c)) − log(Σ π_c σ(−z_c))``, so that the prediction service
treats it as any binary model of one output: one event in plain Python or
from its raw bytes in C (each component's table in turn), many in numpy, a
delta version followed in place. Known features are the first component's
(the components learn the same slots).

>>> from streamlearn.learners import LogisticMixture
>>> model = LogisticMixture(bits=8)
>>> model.learn_many([{"age": 30.0, "city": "Lyon"}, {"age": 5.0}] * 20, [True, False] * 20)
>>> scorer = MixtureScorer.from_learner(model)
>>> z, known = scorer.score_one_known({"age": 30.0, "city": "Lyon"})
>>> p = 1.0 / (1.0 + math.exp(-z))
>>> bool(abs(p - model.predict_proba_one({"age": 30.0, "city": "Lyon"})[True]) < 1e-12), known
(True, 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamlearn.features import FeatureHasher
from streamlearn.serving.linear_scorer import LinearScorer

__all__ = ["MixtureScorer"]


def mixed_log_odds(z: Sequence[float], prior: Sequence[float]) -> float:
    """The log-odds of ``p = Σ π_c σ(z_c)``: ``log p − log(1 − p)``, the second
    summed as ``Σ π_c σ(−z_c)`` (no cancellation near 1); each ``z_c`` clipped to
    ±500, as the service does before its sigmoid.

    >>> round(1 / (1 + math.exp(-mixed_log_odds([0.0, 2.0], [0.5, 0.5]))), 6)
    0.690399
    """
    up = down = 0.0
    for zc, pc in zip(z, prior, strict=True):
        e = math.exp(-min(max(zc, -500.0), 500.0))
        up += pc / (1.0 + e)
        down += pc * e / (1.0 + e)
    return math.log(up) - math.log(down)


def _mixed_log_odds_many(z: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """:func:`mixed_log_odds` of each row of ``z`` (``(n, K)``)."""
    e = np.exp(-np.clip(z, -500.0, 500.0))
    up = (prior / (1.0 + e)).sum(axis=1)
    down = (prior * e / (1.0 + e)).sum(axis=1)
    return np.log(up) - np.log(down)


class _Tables:
    """The components' native tables as one: a body scored by each in turn."""

    def __init__(self, scorer: MixtureScorer, tables: list[Any]) -> None:
        self._scorer = scorer
        self.tables = tables

    def score_event(self, body: bytes) -> Any:
        z = []
        first: Any = None
        for table, part in zip(self.tables, self._scorer.parts, strict=True):
            got = table.score_event(body)
            if got is None or got is False:
                return got
            z.append(got[0] + part._b0)
            first = first or got
        if not all(map(math.isfinite, z)):
            return None
        return (mixed_log_odds(z, self._scorer.prior), *first[1:])

    @property
    def hits(self) -> int:
        return int(self.tables[0].hits)


class MixtureScorer:
    """Raw scores (log-odds) and known features of one mixture, from its components.

    Parameters
    ----------
    parts
        One one-output :class:`LinearScorer` per component, in column order.
    loss
        The components' summed log-losses (the learner's ``mixture.loss``; read
        again by :meth:`refresh`, when a delta version was written into it).
    """

    n_outputs = 1
    _b0 = 0.0  # the mixed score is whole: nothing to add

    def __init__(self, parts: list[LinearScorer], loss: np.ndarray) -> None:
        self.parts = parts
        self._native: _Tables | None = None
        #: each component's weight in the answers (``e^(−L_c)`` normalised)
        self.prior = self._prior_of(loss)

    @classmethod
    def from_learner(cls, learner: Any) -> MixtureScorer | None:
        """The scorer of a :class:`~streamlearn.learners.LogisticMixture`; ``None`` for
        any other learner (or one with crosses: the learner's own path crosses)."""
        from streamlearn.learners import LogisticMixture

        if type(learner) is not LogisticMixture or learner.crosses:
            return None
        arrays = learner.state(copy=False).arrays
        hasher = FeatureHasher(bits=learner.bits, dense=learner.dense)
        parts = []
        for c in range(arrays["weights"].shape[1]):
            column = cls._column(arrays, c)
            parts.append(LinearScorer(column["weights"], column["intercept"], hasher,
                                      column.get("scaler.mean"), column.get("scaler.var")))
        return cls(parts, arrays["mixture.loss"])

    @staticmethod
    def _column(arrays: Mapping[str, np.ndarray], c: int) -> dict[str, np.ndarray]:
        """Component ``c``'s arrays as a logistic regression's, by the same names
        (views, no copy)."""
        column = {"weights": arrays["weights"][:, c], "intercept": arrays["intercept"][c:c + 1]}
        for name in ("scaler.mean", "scaler.var"):
            if name in arrays:
                column[name] = arrays[name]
        return column

    @staticmethod
    def _prior_of(loss: np.ndarray) -> list[float]:
        from streamlearn.learners.mixture import mixture_weights

        return mixture_weights(np.asarray(loss, dtype=np.float64)).tolist()

    @property
    def native(self) -> _Tables | None:
        """The components' native tables as one (``None`` without them)."""
        held = self._native
        if held is not None:
            for table, part in zip(held.tables, self.parts, strict=True):
                if table is not part.native:
                    break  # a part started afresh: a new table
            else:
                return held
        tables = [part.native for part in self.parts]
        if any(t is None for t in tables):
            return None
        held = self._native = _Tables(self, tables)
        return held

    def score_one_known(self, x: Mapping[str, Any]) -> tuple[float, int] | None:
        """The mixture's log-odds for one event and its known features; ``None`` when a
        value is not plain (as :meth:`LinearScorer.score_one_known`)."""
        z = []
        known = 0
        for c, part in enumerate(self.parts):
            got = part.score_one_known(x)
            if got is None:
                return None
            z.append(got[0])
            if c == 0:
                known = got[1]
        return mixed_log_odds(z, self.prior), known

    def remember(self, x: Mapping[str, Any]) -> None:
        """Teach every component's native table the shares of ``x``."""
        for part in self.parts:
            part.remember(x)

    def score_many_known(
        self, xs: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        got = [part.score_many_known(xs) for part in self.parts]
        if any(g is None for g in got):
            return None
        z = np.column_stack([g[0] for g in got])  # type: ignore[index]
        return _mixed_log_odds_many(z, np.array(self.prior)), got[0][1]  # type: ignore[index]

    def score_columns_known(
        self, columns: Mapping[str, Any], n_rows: int
    ) -> tuple[np.ndarray, np.ndarray]:
        got = [part.score_columns_known(columns, n_rows) for part in self.parts]
        z = np.column_stack([g[0] for g in got])
        return _mixed_log_odds_many(z, np.array(self.prior)), got[0][1]

    def refresh(self, slots: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Follow a delta version written into the learner's ``arrays`` (see
        :meth:`LinearScorer.refresh`), component by component."""
        for c, part in enumerate(self.parts):
            part.refresh(slots, self._column(arrays, c))
        self.prior = self._prior_of(arrays["mixture.loss"])
