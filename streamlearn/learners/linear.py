"""Linear regression (squared loss) on hashed sparse features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamlearn.errors import ValidationError
from streamlearn.learners.base import Batch, Features, LinearModel, check_labels_length

__all__ = ["LinearRegression"]


class LinearRegression(LinearModel):
    """Linear regression with the squared loss ``(y - z)² / 2``, learned online.

    Parameters: see :class:`~streamlearn.learners.base.LinearModel`.

    Examples
    --------
    >>> from streamlearn.learners import LinearRegression
    >>> from streamlearn.metrics import MAE, progressive_score
    >>> from river import datasets
    >>> model = LinearRegression(scale=True, bits=10, intercept_lr=0.1)
    >>> progressive_score(model, datasets.TrumpApproval(), [MAE()])
    {'MAE': 0.8349}
    """

    task = "regression"
    _kernel_model = 0

    def _as_predictions(self, preds: np.ndarray) -> np.ndarray:
        return preds[:, 0].copy()

    def _labels(self, ys: Sequence[object] | np.ndarray, n: int) -> np.ndarray:
        check_labels_length(ys, n)
        if isinstance(ys, np.ndarray) and ys.dtype.kind in "fiu":
            y = ys.astype(np.float64)
        else:
            if not set(map(type, ys)) <= {float, int}:
                for j, v in enumerate(ys):
                    if isinstance(v, str | bytes) or not isinstance(v, int | float | np.number):
                        raise ValidationError("label", "a number", repr(v), f"event {j}")
            y = np.array(ys, dtype=np.float64)
        if not np.isfinite(y).all():
            j = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ValidationError("label", "a finite number", repr(ys[j]), f"event {j}")
        return y

    def _loss_and_gradient(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = z - y
        return 0.5 * d * d, d

    def _dloss(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return z - y

    def predict_many(self, xs: Batch) -> np.ndarray:
        """The prediction for each event."""
        batch = self._batch(xs)
        return self._raw(batch, self._values(batch))

    def predict_one(self, x: Features) -> float:
        return float(self.predict_many(self._one(x))[0])
