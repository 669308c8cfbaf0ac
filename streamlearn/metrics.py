"""Prequential metrics: predict each event first, score, then learn from it.

Each metric is a streaming object, cumulative or over a sliding ``window`` of
the last events, with ``update`` (one event), ``update_many`` (a batch, in
numpy), ``get`` and ``bigger_is_better``. A metric says which learners it
fits (:meth:`Metric.works_with`); :func:`check_compatible` refuses a
mismatch up front, naming both.

==========  =========================  ==================================
metric      fits                       reads
==========  =========================  ==================================
Accuracy    binary, multiclass         predicted labels
LogLoss     binary, multiclass         probabilities
ROCAUC      binary                     probability of ``pos_label``
MAE, RMSE   regression                 predicted values
==========  =========================  ==================================

:func:`prequential` runs one micro-batch (predict, score, learn — what the
training job calls per batch); :func:`progressive_score` runs a whole stream.

>>> acc = Accuracy(window=2)
>>> for y, p in [(True, True), (False, True), (True, True)]:
...     acc.update(y, p)
>>> acc.get()
0.5
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeGuard

import numpy as np

from streamlearn.errors import ConfigError, ValidationError
from streamlearn.learners.classes import columns_of

__all__ = [
    "Labels",
    "Metric",
    "Accuracy",
    "LogLoss",
    "ROCAUC",
    "MAE",
    "RMSE",
    "check_compatible",
    "prequential",
    "progressive_score",
]

#: labels, or predictions: a list, or a numpy array (rows of probabilities for
#: a probability metric)
Labels = Sequence[object] | np.ndarray


class _Mean:
    """Mean of contributions, cumulative or over the last ``window`` ones."""

    def __init__(self, window: int | None) -> None:
        self.window = window
        self.total = 0.0
        self.count = 0
        if window is not None:
            self.buffer = np.zeros(window)
            self.position = 0

    def add(self, values: np.ndarray) -> None:
        if self.window is None:
            self.total += float(values.sum())
            self.count += len(values)
            return
        w = self.window
        values = values[-w:]
        k = len(values)
        end = self.position + k
        if end <= w:
            self.buffer[self.position:end] = values
        else:
            first = w - self.position
            self.buffer[self.position:] = values[:first]
            self.buffer[: k - first] = values[first:]
        self.position = end % w
        self.count = min(w, self.count + k)

    def get(self) -> float:
        if self.count == 0:
            return 0.0
        if self.window is None:
            return self.total / self.count
        return float(self.buffer.sum() / self.count)  # slots not yet filled hold zeros


def _check_window(window: int | None) -> None:
    if window is not None and (type(window) is not int or window < 1):
        raise ConfigError("window", "a positive integer or None (cumulative)", repr(window))


class Metric:
    """Base of the streaming metrics."""

    bigger_is_better: ClassVar[bool] = True
    #: learner tasks this metric fits
    tasks: ClassVar[frozenset[str]] = frozenset()
    #: what it reads: "label", "proba" or "value"
    needs: ClassVar[str] = "label"

    def __init__(self, window: int | None = None) -> None:
        _check_window(window)
        self.window = window
        self._mean = _Mean(window)

    def __repr__(self) -> str:
        extra = f"window={self.window}" if self.window else ""
        return f"{type(self).__name__}({extra})"

    def works_with(self, learner: Any) -> bool:
        """Whether this metric can score ``learner``'s predictions."""
        return getattr(learner, "task", None) in self.tasks

    def update(self, y_true: object, y_pred: object) -> None:
        """Add one event: its label and the learner's prediction (for
        probability metrics, a ``{class: probability}`` mapping)."""
        if self.needs == "proba":
            if not isinstance(y_pred, Mapping):
                raise ValidationError(
                    "y_pred", "a {class: probability} mapping", type(y_pred).__name__
                )
            proba = dict(y_pred)
            self.update_many([y_true], np.array([list(proba.values())]), list(proba))
        else:
            self.update_many([y_true], [y_pred])

    def update_many(
        self, ys: Sequence[object] | np.ndarray, y_pred: Sequence[object] | np.ndarray,
        classes: Sequence[object] | None = None,
    ) -> None:
        """Add a batch: labels and predictions (for probability metrics a
        matrix ``(n, n_classes)`` whose columns follow ``classes``)."""
        raise NotImplementedError

    def get(self) -> float:
        """The current value."""
        return self._mean.get()


def _numeric(ys: object) -> TypeGuard[np.ndarray]:
    """Whether ``ys`` is a numpy array of numbers (or booleans)."""
    return isinstance(ys, np.ndarray) and ys.dtype.kind in "biuf"


def _numeric_labels(classes: Sequence[object] | None) -> bool:
    return classes is not None and bool(classes) and all(type(c) in (bool, int) for c in classes)


def _hits(ys: Labels, y_pred: Labels, classes: Sequence[object] | None) -> np.ndarray:
    """1.0 where a label equals its prediction (Python's ==), else 0.0."""
    if isinstance(y_pred, np.ndarray) and len(y_pred) == len(ys):
        if _numeric(ys) and _numeric_labels(classes):
            # numbers against booleans/integers: Python's == is numeric equality
            try:
                return (ys == y_pred.astype(np.float64)).astype(np.float64)
            except (TypeError, ValueError):  # a prediction that is no number: as below
                pass
        if y_pred.dtype == object:
            # element by element in C, with Python's == (as the map below)
            return (np.asarray(ys, dtype=object) == y_pred).astype(np.float64)
    return np.fromiter(map(operator.eq, ys, y_pred), np.float64, len(ys))


class Accuracy(Metric):
    """Share of correctly predicted labels."""

    tasks = frozenset({"binary", "multiclass"})

    def update_many(
        self, ys: Labels, y_pred: Labels, classes: Sequence[object] | None = None
    ) -> None:
        self._mean.add(_hits(ys, y_pred, classes))


def _proba_of_truth(ys: Labels, proba: Labels, classes: Sequence[object] | None) -> np.ndarray:
    if classes is None:
        raise ConfigError("classes", "the class of each probability column", None)
    cols = columns_of(ys, {c: i for i, c in enumerate(classes)})
    proba = np.asarray(proba, dtype=np.float64).reshape(len(cols), -1)
    out = np.zeros(len(cols))
    known = cols >= 0
    out[known] = proba[np.flatnonzero(known), cols[known]]
    return out


class LogLoss(Metric):
    """Mean negative log-probability given to the true class (clipped at 1e-15)."""

    bigger_is_better = False
    tasks = frozenset({"binary", "multiclass"})
    needs = "proba"

    def update_many(
        self, ys: Labels, y_pred: Labels, classes: Sequence[object] | None = None
    ) -> None:
        p = np.clip(_proba_of_truth(ys, y_pred, classes), 1e-15, 1.0)
        self._mean.add(-np.log(p))


class MAE(Metric):
    """Mean absolute error."""

    bigger_is_better = False
    tasks = frozenset({"regression"})
    needs = "value"

    def update_many(
        self, ys: Labels, y_pred: Labels, classes: Sequence[object] | None = None
    ) -> None:
        d = np.asarray(ys, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
        self._mean.add(np.abs(d))


class RMSE(Metric):
    """Root mean squared error."""

    bigger_is_better = False
    tasks = frozenset({"regression"})
    needs = "value"

    def update_many(
        self, ys: Labels, y_pred: Labels, classes: Sequence[object] | None = None
    ) -> None:
        d = np.asarray(ys, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
        self._mean.add(d * d)

    def get(self) -> float:
        return math.sqrt(self._mean.get())


class ROCAUC(Metric):
    """Area under the ROC curve, streaming, from scores binned into ``n_bins``
    equal bins of [0, 1] (ties within a bin count half).

    >>> auc = ROCAUC()
    >>> proba = [[0.1, 0.9], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]]
    >>> auc.update_many([True, False, True, False], proba, classes=[False, True])
    >>> auc.get()
    0.75
    """

    tasks = frozenset({"binary"})
    needs = "proba"

    def __init__(self, window: int | None = None, n_bins: int = 1000, pos_label: object = True):
        super().__init__(window)
        if type(n_bins) is not int or n_bins < 2:
            raise ConfigError("n_bins", "an integer ≥ 2", repr(n_bins))
        self.n_bins = n_bins
        self.pos_label = pos_label
        self._hist = np.zeros((2, n_bins))  # negatives, positives
        if window is not None:
            self._ring_bin = np.zeros(window, np.int64)
            self._ring_pos = np.zeros(window, np.int64)
            self._ring_at = 0
            self._ring_n = 0

    def update_many(
        self, ys: Labels, y_pred: Labels, classes: Sequence[object] | None = None
    ) -> None:
        if classes is None:
            raise ConfigError("classes", "the class of each probability column", None)
        classes = list(classes)
        col = classes.index(self.pos_label) if self.pos_label in classes else len(classes) - 1
        score = np.asarray(y_pred, dtype=np.float64).reshape(len(ys), -1)[:, col]
        bins = np.clip((score * self.n_bins).astype(np.int64), 0, self.n_bins - 1)
        positive = np.fromiter((y == self.pos_label for y in ys), bool, len(ys)).astype(np.int64)
        if self.window is not None:
            bins, positive = bins[-self.window:], positive[-self.window:]
            for b, p in zip(bins.tolist(), positive.tolist(), strict=True):
                if self._ring_n == self.window:
                    self._hist[self._ring_pos[self._ring_at], self._ring_bin[self._ring_at]] -= 1
                else:
                    self._ring_n += 1
                self._ring_bin[self._ring_at] = b
                self._ring_pos[self._ring_at] = p
                self._ring_at = (self._ring_at + 1) % self.window
        np.add.at(self._hist, (positive, bins), 1.0)

    def get(self) -> float:
        neg, pos = self._hist
        n_neg, n_pos = neg.sum(), pos.sum()
        if n_neg == 0 or n_pos == 0:
            return 0.0
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (n_neg * n_pos))


def check_compatible(metric: Metric, learner: Any) -> None:
    """Refuse a metric that cannot score ``learner``, naming both."""
    if not metric.works_with(learner):
        raise ConfigError(
            "metrics",
            f"metrics for {sorted(metric.tasks)} learners with {metric!r}",
            f"{type(learner).__name__} (a {getattr(learner, 'task', '?')} learner)",
        )


def prequential(
    learner: Any,
    xs: Any,
    ys: Sequence[object] | np.ndarray,
    metrics: Sequence[Metric] = (),
    weights: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """One prequential step over a micro-batch: predict every event with the
    current model, update ``metrics``, then learn from the batch, each event
    with its importance ``weights`` (None: all 1). The metrics count every
    event once, whatever its weight: they say how the model did on the stream
    as it came.

    ``xs`` is a sequence of feature mappings or an encoded batch (encoded
    once here otherwise). Returns the predictions (labels or values) made
    before learning. A learner with ``predict_learn_many`` (the linear ones)
    does both in one call: learned per event (``update="event"``), each event
    is predicted by the model that learned every event before it.
    """
    for m in metrics:
        check_compatible(m, learner)
    if hasattr(learner, "encode") and not hasattr(xs, "indices"):
        xs = learner.encode(xs)
    together = getattr(learner, "predict_learn_many", None)
    learn_with = {} if weights is None else {"weights": weights}
    if learner.task == "regression":
        preds = (together(xs, ys, **learn_with) if together is not None
                 else learner.predict_many(xs))
        for m in metrics:
            m.update_many(ys, preds)
    else:
        if together is not None:  # a per-event learner predicts each event just before it
            proba = together(xs, ys, **learn_with)  # learns it; classes_ then the batch's
        else:
            proba = learner.predict_proba_many(xs)
        classes = learner.classes_
        preds = np.full(len(proba), None, dtype=object)
        if proba.shape[1]:
            labels = np.empty(len(classes), dtype=object)
            labels[:] = classes
            # no class known before the event (every probability 0): no prediction,
            # not the first column (the class this very event brought)
            known = proba.any(axis=1)
            preds[known] = labels[proba[known].argmax(axis=1)]
        for m in metrics:
            m.update_many(ys, proba if m.needs == "proba" else preds, classes)
    if together is None:
        learner.learn_many(xs, ys, **learn_with)
    return preds


def progressive_score(
    learner: Any,
    stream: Iterable[tuple[Mapping[str, object], object]],
    metrics: Sequence[Metric],
    batch_size: int = 1,
) -> dict[str, float]:
    """Run :func:`prequential` over a stream of ``(features, label)`` pairs in
    batches of ``batch_size``; return each metric's final value (4 decimals)."""
    if type(batch_size) is not int or batch_size < 1:
        raise ConfigError("batch_size", "a positive integer", repr(batch_size))
    for m in metrics:
        check_compatible(m, learner)
    xs: list = []
    ys: list = []
    for x, y in stream:
        xs.append(x)
        ys.append(y)
        if len(xs) == batch_size:
            prequential(learner, xs, ys, metrics)
            xs, ys = [], []
    if xs:
        prequential(learner, xs, ys, metrics)
    return {type(m).__name__: round(m.get(), 4) for m in metrics}
