"""Streaming learners: linear, logistic and softmax regression, a mixture of
logistic regressions learned at several rates and factorization machines on
hashed sparse features, and an adapter for River estimators.

Every learner offers ``learn_one(x, y)``, ``predict_one(x)`` and the batch
twins ``learn_many(xs, ys)``, ``predict_many(xs)`` (plus
``predict_proba_one``/``predict_proba_many`` for classifiers); its complete
state is a :class:`~streamlearn.state.ModelState`.
"""

from __future__ import annotations

from streamlearn.errors import StateError
from streamlearn.learners.base import UPDATES, Learner, LinearModel, has_kernel
from streamlearn.learners.fm import FMClassifier, FMRegressor
from streamlearn.learners.linear import LinearRegression
from streamlearn.learners.logistic import LogisticRegression
from streamlearn.learners.mixture import LogisticMixture
from streamlearn.learners.river_adapter import RiverLearner
from streamlearn.learners.softmax import SoftmaxRegression
from streamlearn.state import ModelState

__all__ = [
    "Learner",
    "LinearModel",
    "LinearRegression",
    "LogisticRegression",
    "LogisticMixture",
    "SoftmaxRegression",
    "FMRegressor",
    "FMClassifier",
    "RiverLearner",
    "LEARNERS",
    "UPDATES",
    "has_kernel",
    "learner_from_state",
]

#: The learners that ``learner_from_state`` can rebuild, by kind.
LEARNERS: dict[str, type[Learner]] = {
    c.__name__: c
    for c in (LinearRegression, LogisticRegression, LogisticMixture, SoftmaxRegression,
              FMRegressor, FMClassifier, RiverLearner)
}


def learner_from_state(state: ModelState) -> Learner:
    """Rebuild the learner that produced ``state`` (never a :class:`RiverLearner`, which
    has no state: :meth:`RiverLearner.state`).

    >>> model = LogisticRegression(bits=8)
    >>> model.learn_one({"x": 1.0}, True)
    >>> again = learner_from_state(ModelState.from_bytes(model.state().to_bytes()))
    >>> again.predict_proba_one({"x": 1.0}) == model.predict_proba_one({"x": 1.0})
    True
    """
    kind = state.meta.get("kind")
    cls = LEARNERS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise StateError(f"model state of unknown kind {kind!r}; known: {sorted(LEARNERS)}")
    return cls.from_state(state)  # type: ignore[attr-defined]
