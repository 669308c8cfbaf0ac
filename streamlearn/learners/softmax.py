"""Multiclass softmax regression on hashed sparse features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamlearn.errors import StateError
from streamlearn.learners.base import Batch, Features, LinearModel, check_labels_length
from streamlearn.learners.classes import ClassIndex
from streamlearn.optim import Optimizer

__all__ = ["SoftmaxRegression"]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class SoftmaxRegression(LinearModel):
    """Multiclass (softmax) regression, learned online.

    Weights have one column per class. Classes are given up front
    (``classes=[...]``; other labels are refused) or discovered as they
    appear (a new class adds a column of zeros — the one moment when work
    grows with the number of slots).

    Parameters
    ----------
    classes
        The class labels, or ``None`` to discover them.
    **kwargs
        See :class:`~streamlearn.learners.base.LinearModel`.

    Examples
    --------
    >>> from streamlearn.learners import SoftmaxRegression
    >>> from streamlearn.metrics import Accuracy, progressive_score
    >>> from river import datasets
    >>> stream = (({f"x{k}": v for k, v in x.items()}, y)  # names are strings
    ...           for x, y in datasets.synth.Waveform(seed=42).take(2000))
    >>> model = SoftmaxRegression(scale=True, bits=10)
    >>> progressive_score(model, stream, [Accuracy()])
    {'Accuracy': 0.864}
    >>> model.classes_
    [2, 0, 1]
    """

    task = "multiclass"
    _kernel_model = 2

    def __init__(
        self,
        optimizer: Optimizer | None = None,
        *,
        classes: Sequence[object] | None = None,
        **kwargs: Any,
    ) -> None:
        self._classes = ClassIndex(classes, grow=classes is None)
        self._given_classes = None if classes is None else list(self._classes.classes)
        super().__init__(optimizer, **kwargs)

    def _own_params(self) -> dict[str, Any]:
        return {"classes": self._given_classes}

    def _meta_extra(self) -> dict[str, Any]:
        return {"classes": list(self._classes.classes)}

    def _load_extra(self, meta: dict[str, Any]) -> None:
        classes = meta.get("classes")
        if not isinstance(classes, list):
            raise StateError("model state lacks its list of classes (meta 'classes')")
        if self._given_classes is None:
            self._classes = ClassIndex(classes, grow=True)
            self._allocate()
        elif classes != self._given_classes:
            raise StateError(f"model state classes {classes} differ from {self._given_classes}")

    @property
    def classes_(self) -> list[object]:
        """The class labels, in the column order of the weights."""
        return list(self._classes.classes)

    def _n_outputs(self) -> int:
        return len(self._classes.classes)

    def _weights_shape(self) -> tuple[int, ...]:
        return (self.n_slots, len(self._classes.classes))

    def _grow(self, added: int) -> None:
        for name, array in list(self._arrays.items()):
            if name == "intercept" or name.startswith("intercept."):
                self._arrays[name] = np.concatenate([array, np.zeros(added)])
            elif array.ndim == 2:
                self._arrays[name] = np.hstack([array, np.zeros((array.shape[0], added))])

    def _as_predictions(self, preds: np.ndarray) -> np.ndarray:
        return preds

    def _labels(self, ys: Sequence[object] | np.ndarray, n: int) -> np.ndarray:
        check_labels_length(ys, n)
        codes, added = self._classes.code(ys)
        if added:
            self._grow(len(added))
        return codes

    def _loss_and_gradient(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(y)
        p = softmax(z)
        top = z.max(axis=1)
        log_norm = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
        loss = log_norm - z[np.arange(n), y]
        p[np.arange(n), y] -= 1.0
        return loss, p

    def _dloss(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        p = softmax(z)
        p[np.arange(len(y)), y] -= 1.0
        return p

    def predict_proba_many(self, xs: Batch) -> np.ndarray:
        """Probabilities, shape ``(n, n_classes)``, columns in :attr:`classes_` order."""
        batch = self._batch(xs)
        if not self._classes.classes:
            return np.zeros((batch.n_rows, 0))
        return softmax(self._raw(batch, self._values(batch)))

    def predict_many(self, xs: Batch) -> np.ndarray:
        """The most probable class of each event (``None`` before any class is known)."""
        p = self.predict_proba_many(xs)
        if p.shape[1] == 0:
            return np.full(len(p), None, dtype=object)
        return np.array(self._classes.classes, dtype=object)[p.argmax(axis=1)]

    def predict_proba_one(self, x: Features) -> dict[object, float]:
        p = self.predict_proba_many(self._one(x))[0]
        return dict(zip(self._classes.classes, p.tolist(), strict=True))

    def predict_one(self, x: Features) -> object:
        p = self.predict_proba_many(self._one(x))[0]
        return self._classes.classes[int(p.argmax())] if len(p) else None
