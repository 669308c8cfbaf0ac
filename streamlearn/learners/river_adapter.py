"""Any River estimator behind the learner protocol.

For models that linear ones do not fit (trees, nearest neighbours...), learned
and scored in one process: such a learner is not mergeable (its state is not
a set of arrays to average), and it has no state to store or send, because a
River model is a Python object only pickle could write, and streamlearn stores
and sends no pickle (a pickle runs code when it is read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamlearn.errors import ConfigError, StateError
from streamlearn.features import FeatureBatch, FeatureHasher
from streamlearn.learners.base import Batch, Features, Learner, check_labels_length
from streamlearn.learners.classes import ClassIndex
from streamlearn.state import ModelState

__all__ = ["RiverLearner"]


class RiverLearner(Learner):
    """Run a River estimator (classifier or regressor) as a streamlearn learner.

    Parameters
    ----------
    model
        A River classifier or regressor (a pipeline is fine).

    Examples
    --------
    >>> from river import tree, datasets
    >>> from streamlearn.learners import RiverLearner
    >>> from streamlearn.metrics import Accuracy, progressive_score
    >>> model = RiverLearner(tree.HoeffdingTreeClassifier())
    >>> progressive_score(model, datasets.Phishing(), [Accuracy()])
    {'Accuracy': 0.8792}
    >>> model.mergeable
    False
    """

    mergeable = False

    def __init__(self, model: Any) -> None:
        from river import base

        if isinstance(model, base.Classifier):
            self.task = "multiclass" if model._multiclass else "binary"
        elif isinstance(model, base.Regressor):
            self.task = "regression"
        else:
            raise ConfigError("model", "a River classifier or regressor", type(model).__name__)
        self.model = model
        self._check = FeatureHasher(bits=1)  # validates features the way every learner does
        self._classes = ClassIndex(None, grow=True)
        self._n_learned = 0

    def __repr__(self) -> str:
        return f"RiverLearner({self.model!r})"

    @property
    def classes_(self) -> list[object]:
        """Class labels seen so far (classifiers)."""
        return list(self._classes.classes)

    @property
    def n_learned(self) -> int:
        return self._n_learned

    def clone(self) -> RiverLearner:
        return RiverLearner(self.model.clone())

    def _mappings(self, xs: Batch) -> list[Features]:
        if isinstance(xs, FeatureBatch):
            raise ConfigError(
                "xs", "feature mappings (a River model cannot read hashed batches)",
                "a FeatureBatch",
            )
        xs = list(xs)
        if xs:
            self._check.encode(xs)
        return xs

    def learn_many(self, xs: Batch, ys: Sequence[object] | np.ndarray) -> None:
        events = self._mappings(xs)
        check_labels_length(ys, len(events))
        if self.task != "regression":
            self._classes.code(ys)
        learn = self.model.learn_one
        for x, y in zip(events, ys, strict=True):
            learn(x, y.item() if isinstance(y, np.generic) else y)
        self._n_learned += len(events)

    def learn_one(self, x: Features, y: object) -> None:
        self.learn_many([x], [y])

    def predict_many(self, xs: Batch) -> np.ndarray:
        out = [self.model.predict_one(x) for x in self._mappings(xs)]
        return np.array(out, dtype=np.float64 if self.task == "regression" else object)

    def predict_one(self, x: Features) -> Any:
        return self.predict_many([x])[0]

    def predict_proba_many(self, xs: Batch) -> np.ndarray:
        """Probabilities, columns in :attr:`classes_` order."""
        if self.task == "regression":
            raise ConfigError("learner", "a classifier for probabilities", "a regressor")
        events = self._mappings(xs)
        classes = self._classes.classes
        out = np.zeros((len(events), len(classes)))
        for i, x in enumerate(events):
            proba = self.model.predict_proba_one(x)
            for k, c in enumerate(classes):
                out[i, k] = proba.get(c, 0.0)
        return out

    def predict_proba_one(self, x: Features) -> dict[object, float]:
        p = self.predict_proba_many([x])[0]
        return dict(zip(self._classes.classes, p.tolist(), strict=True))

    def state(self) -> ModelState:
        """Refused: a River model's state is a Python object that only pickle could write.

        >>> from river import tree
        >>> try:
        ...     RiverLearner(tree.HoeffdingTreeClassifier()).state()
        ... except StateError as exc:
        ...     print(str(exc)[:61])
        a RiverLearner has no state to store or send: its River model
        """
        raise StateError(_NO_STATE)

    @classmethod
    def from_state(cls, state: ModelState) -> RiverLearner:
        """Refused, for the reason :meth:`state` gives."""
        raise StateError(_NO_STATE)

    def load_state(self, state: ModelState) -> None:
        raise StateError(_NO_STATE)


_NO_STATE = (
    "a RiverLearner has no state to store or send: its River model could only be written with "
    "pickle, which streamlearn neither writes nor reads; keep it in one process (clone() gives "
    "a fresh copy) or pick a streamlearn learner"
)
