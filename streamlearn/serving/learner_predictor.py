"""Serve a learner rebuilt from a stored :class:`~streamlearn.state.ModelState`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamlearn.errors import StateError
from streamlearn.serving.model import Predictions

__all__ = ["LearnerPredictor", "predictor_from_version"]


class LearnerPredictor:
    """One model version, ready to predict; never changed after it is built.

    Parameters
    ----------
    learner
        A streamlearn learner (``predict_many``; classifiers also
        ``predict_proba_many``) that nothing else will train.
    version, created_at, lineage
        Which store version it is, when it was published, and its lineage.
    classes
        Class labels in the column order of ``predict_proba_many``; ``None``
        for a regressor.
    """

    def __init__(
        self,
        learner: Any,
        version: int,
        created_at: float,
        lineage: Mapping[str, Any] | None = None,
        classes: Sequence[Any] | None = None,
    ) -> None:
        from streamlearn.features import FeatureHasher
        from streamlearn.serving.columns import ColumnEncoder

        self.learner = learner
        self.version = version
        self.created_at = created_at
        self.lineage = dict(lineage or {})
        self.classes = tuple(classes) if classes is not None else None
        self._columns = ColumnEncoder(FeatureHasher(bits=learner.bits, dense=learner.dense))

    def __repr__(self) -> str:
        return f"LearnerPredictor({type(self.learner).__name__}, version={self.version})"

    def _predict(self, batch: Any) -> Predictions:
        if self.classes is None:
            values = np.asarray(self.learner.predict_many(batch), dtype=np.float64)
            return Predictions(values=values)
        proba = np.ascontiguousarray(self.learner.predict_proba_many(batch), dtype=np.float64)
        if proba.ndim == 1:  # P(positive class) of a binary learner
            proba = np.column_stack([1.0 - proba, proba])
        return Predictions.from_probabilities(proba, self.classes)

    def predict_features(self, features: Sequence[Mapping[str, Any]]) -> Predictions:
        """Predict for events given as feature mappings."""
        return self._predict(self.learner.encode(features))

    def predict_columns(self, columns: Mapping[str, Any], n_rows: int) -> Predictions:
        """Predict for events given as Arrow feature columns, encoded in bulk."""
        return self._predict(self._columns.encode(columns, n_rows))


def predictor_from_version(model_version: Any) -> LearnerPredictor:
    """Rebuild the learner stored in a ``ModelVersion`` of the store."""
    from streamlearn.state import ModelState, learner_from_state

    where = f"model {model_version.info.model!r} version {model_version.version}"
    try:
        state = ModelState.from_bytes(model_version.to_bytes())
    except StateError as exc:
        raise StateError(f"{where} is not a learner's ModelState: {exc}") from exc
    learner = learner_from_state(state)
    lineage = model_version.lineage
    classes = None
    if getattr(learner, "task", "regression") != "regression":
        classes = state.meta.get("classes")
        if classes is None:
            raise StateError(f"{where}: a classifier's state without `classes`")
    return LearnerPredictor(
        learner,
        version=model_version.version,
        created_at=float(lineage.created_at or 0.0),
        lineage=lineage.to_dict(),
        classes=classes,
    )
