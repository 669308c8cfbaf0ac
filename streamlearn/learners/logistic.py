"""Binary logistic regression on hashed sparse features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamlearn.errors import ConfigError
from streamlearn.learners.base import Batch, Features, LinearModel, check_labels_length
from streamlearn.learners.classes import ClassIndex
from streamlearn.optim import Optimizer

__all__ = ["LogisticRegression"]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.minimum(np.maximum(z, -500.0), 500.0) * -1.0))


class LogisticRegression(LinearModel):
    """Binary logistic regression, learned online.

    Parameters
    ----------
    classes
        The two class labels, the second being the positive one; default
        ``[False, True]`` (labels 0/1 and true/false).
    **kwargs
        See :class:`~streamlearn.learners.base.LinearModel`: ``optimizer``,
        ``l1``, ``l2``, ``intercept``, ``intercept_lr``, ``bits``, ``dense``,
        ``scale``, ``clip_gradient``.

    Examples
    --------
    >>> from streamlearn.learners import LogisticRegression
    >>> from streamlearn.metrics import Accuracy, progressive_score
    >>> from streamlearn.optim import SGD
    >>> from river import datasets
    >>> model = LogisticRegression(optimizer=SGD(0.1), scale=True, bits=10)
    >>> progressive_score(model, datasets.Phishing(), [Accuracy()])
    {'Accuracy': 0.8896}
    >>> model.predict_proba_one({"empty_server_form_handler": 1.0, "popup_window": 0.5})
    {False: 0.9..., True: 0.0...}
    """

    task = "binary"
    _kernel_model = 1

    def __init__(
        self,
        optimizer: Optimizer | None = None,
        *,
        classes: Sequence[object] | None = None,
        **kwargs: Any,
    ) -> None:
        self._classes = ClassIndex([False, True] if classes is None else classes, grow=False)
        if len(self._classes.classes) != 2:
            raise ConfigError("classes", "exactly two class labels", repr(classes))
        self._given_classes = None if classes is None else list(self._classes.classes)
        super().__init__(optimizer, **kwargs)

    def _own_params(self) -> dict[str, Any]:
        return {"classes": self._given_classes}

    def _meta_extra(self) -> dict[str, Any]:
        return {"classes": list(self._classes.classes)}

    @property
    def classes_(self) -> list[object]:
        """The class labels, negative then positive."""
        return list(self._classes.classes)

    def _as_predictions(self, preds: np.ndarray) -> np.ndarray:
        p = preds[:, 0]
        return np.column_stack([1.0 - p, p])

    def _labels(self, ys: Sequence[object] | np.ndarray, n: int) -> np.ndarray:
        check_labels_length(ys, n)
        codes, _ = self._classes.code(ys)
        return codes.astype(np.float64)

    def _loss_and_gradient(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.logaddexp(0.0, z) - y * z, sigmoid(z) - y

    def _dloss(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        g = sigmoid(z)
        g -= y
        return g

    def predict_proba_many(self, xs: Batch) -> np.ndarray:
        """Probabilities, shape ``(n, 2)``, columns in :attr:`classes_` order."""
        batch = self._batch(xs)
        p = sigmoid(self._raw(batch, self._values(batch)))
        return np.column_stack([1.0 - p, p])

    def predict_many(self, xs: Batch) -> np.ndarray:
        """The most probable class of each event."""
        p = self.predict_proba_many(xs)[:, 1]
        return np.array(self._classes.classes)[(p > 0.5).astype(np.int64)]

    def predict_proba_one(self, x: Features) -> dict[object, float]:
        p = self.predict_proba_many(self._one(x))[0]
        return dict(zip(self._classes.classes, p.tolist(), strict=True))

    def predict_one(self, x: Features) -> object:
        p = self.predict_proba_many(self._one(x))[0, 1]
        return self._classes.classes[int(p > 0.5)]
