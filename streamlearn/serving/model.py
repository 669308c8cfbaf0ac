"""The seam between the service and the models it serves.

The service never touches learners or the store directly: it asks a
:class:`ModelSource` which version to serve and to load a version, and gets
back a :class:`Predictor`, one immutable loaded version that turns events into
:class:`Predictions`. :mod:`streamlearn.serving.store_source` adapts the model
store and the learners to this seam; tests may pass any object that fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Predictions", "Predictor", "ModelSource", "Step"]


@dataclass(frozen=True)
class Predictions:
    """What one version predicted for a batch of events, in request order.

    Parameters
    ----------
    values
        One prediction per event: a number for a regressor, a class label
        (``classes[i]``) for a classifier.
    classes
        The class labels of a classifier, in the order of the columns of
        ``probabilities``; ``None`` for a regressor.
    probabilities
        ``(n_events, n_classes)`` array of class probabilities; ``None`` for a
        regressor.
    known
        How many of each event's features the model knows (has a non-zero
        weight for); ``None`` when the predictor cannot tell.

    Examples
    --------
    >>> import numpy as np
    >>> p = Predictions.from_probabilities(np.array([[0.2, 0.8], [0.9, 0.1]]), (False, True))
    >>> p.values
    [True, False]
    >>> len(p)
    2
    """

    values: Sequence[Any]
    classes: tuple[Any, ...] | None = None
    probabilities: np.ndarray | None = None
    known: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def from_probabilities(
        cls,
        probabilities: np.ndarray,
        classes: Sequence[Any],
        known: Sequence[int] | None = None,
    ) -> Predictions:
        """Predict the most probable class of each row of ``probabilities``."""
        labels = np.empty(len(classes), dtype=object)
        labels[:] = list(classes)
        best = labels[np.argmax(probabilities, axis=1)].tolist() if len(probabilities) else []
        return cls(values=best, classes=tuple(classes), probabilities=probabilities, known=known)


@runtime_checkable
class Predictor(Protocol):
    """One loaded model version; immutable once built, shared by requests."""

    @property
    def version(self) -> int:
        """The store version this predictor was loaded from."""

    @property
    def created_at(self) -> float:
        """When the version was published, in seconds since the epoch."""

    @property
    def lineage(self) -> Mapping[str, Any]:
        """The version's lineage record (parent, offsets, counts, metrics), JSON-ready."""

    def predict_features(self, features: Sequence[Mapping[str, Any]]) -> Predictions:
        """Predict for events given as ``features`` mappings (already validated)."""

    def predict_columns(self, columns: Mapping[str, Any], n_rows: int) -> Predictions:
        """Predict for events given column-wise: feature name to a pyarrow array.

        Missing values (nulls) mean the feature is absent from that event.
        """


@runtime_checkable
class ModelSource(Protocol):
    """Where versions come from (the model store, or a fake in tests)."""

    @property
    def name(self) -> str:
        """The model's name."""

    def serving_version(self) -> int | None:
        """The version to serve now (a pin, or else the latest); cheap, polled often."""

    def load(self, version: int) -> Predictor:
        """Load one version; raises :class:`~streamlearn.errors.VersionNotFound`."""

    def versions(self) -> list[dict[str, Any]]:
        """Every version with its lineage, JSON-ready, oldest first."""


@dataclass(frozen=True)
class Step:
    """What a source that can follow deltas (``source.advance(since, upto)``)
    says about going from version ``since`` to ``version``.

    Either ``changes`` (a :class:`~streamlearn.store.Changes`: apply it to a
    predictor holding ``since`` and it holds ``version``, published at
    ``created_at`` with ``lineage``), or ``reload`` says why ``version`` must be
    loaded whole (a snapshot, a rollback, a pin going backwards...).

    A :class:`ModelSource` may have this optional method
    ``advance(since: int, upto: int) -> Step``; a predictor that can follow
    has ``can_follow``, ``clone()`` and ``apply(step)`` (see
    :class:`~streamlearn.serving.learner_predictor.LearnerPredictor`). The
    :class:`~streamlearn.serving.watcher.ModelWatcher` uses them when both
    sides have them and loads whole otherwise.
    """

    since: int
    version: int
    changes: Any = None
    reload: str | None = None
    created_at: float = 0.0
    lineage: Mapping[str, Any] | None = None
