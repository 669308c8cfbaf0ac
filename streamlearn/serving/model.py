"""The seam between the service and the models it serves.

The service never touches learners or the store directly: it asks a
:class:`ModelSource` which version to serve and to load a version, and gets
back a :class:`Predictor`, one immutable loaded version that turns events into
:class:`Predictions`. :mod:`streamlearn.serving.store_source` adapts the model
store and the learners to this seam; tests may pass any object that fits.

Two optional extensions of a predictor, each a protocol of its own so that
the server's use of them is type-checked: :class:`FastPredictor` (the fast
paths of the usual request) and :class:`Follower` (following delta versions
in place). The server finds out once per loaded version whether a predictor
has them (:class:`~streamlearn.serving.watcher.Served`), never per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import numpy as np

__all__ = [
    "EventAnswer",
    "FastPredictor",
    "Follower",
    "ModelSource",
    "OneAnswer",
    "Predictions",
    "Predictor",
    "Step",
]

#: One event's answer on a fast path: the prediction (a number, or a class
#: label), the class probabilities in the order of ``classes`` (``None`` for a
#: regressor), and how many of the event's features the model knows.
OneAnswer: TypeAlias = tuple[Any, list[float] | None, int]
#: One event's answer from its raw body: the :data:`OneAnswer`, and the event's
#: ``id``, ``key`` and ``ts`` as the body holds them (``None`` when absent).
EventAnswer: TypeAlias = tuple[OneAnswer, Any, Any, Any]


@dataclass(frozen=True)
class Predictions:
    """What one version predicted for a batch of events, in request order.

    Parameters
    ----------
    values
        One prediction per event: a number for a regressor, a class label
        (``classes[i]``) for a classifier (a list, or a numpy array of numbers).
    classes
        The class labels of a classifier, in the order of the columns of
        ``probabilities``; ``None`` for a regressor.
    probabilities
        ``(n_events, n_classes)`` array of class probabilities (or, for one
        event answered in plain Python, a list of one list); ``None`` for a
        regressor.
    known
        How many of each event's features the model knows (has a non-zero
        weight for), a list or an integer array; ``None`` when the predictor
        cannot tell.

    Examples
    --------
    >>> import numpy as np
    >>> p = Predictions.from_probabilities(np.array([[0.2, 0.8], [0.9, 0.1]]), (False, True))
    >>> p.values
    [True, False]
    >>> len(p)
    2
    """

    values: Sequence[Any] | np.ndarray
    classes: tuple[Any, ...] | None = None
    probabilities: np.ndarray | Sequence[Sequence[float]] | None = None
    known: Sequence[int] | np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def of_one(cls, answer: OneAnswer, classes: tuple[Any, ...] | None) -> Predictions:
        """The predictions of one event from its :data:`OneAnswer` (``classes``: the
        predictor's, used when the answer has probabilities).

        >>> Predictions.of_one((True, [0.25, 0.75], 2), (False, True)).probabilities
        [[0.25, 0.75]]
        """
        value, proba, known = answer
        if proba is None:
            return cls(values=[value], known=[known])
        return cls(values=[value], classes=classes, probabilities=[proba], known=[known])

    @classmethod
    def from_probabilities(
        cls,
        probabilities: np.ndarray,
        classes: Sequence[Any],
        known: Sequence[int] | np.ndarray | None = None,
    ) -> Predictions:
        """Predict the most probable class of each row of ``probabilities``."""
        labels = np.empty(len(classes), dtype=object)
        labels[:] = list(classes)
        best = labels[np.argmax(probabilities, axis=1)].tolist() if len(probabilities) else []
        return cls(values=best, classes=tuple(classes), probabilities=probabilities, known=known)


@runtime_checkable
class Predictor(Protocol):
    """One loaded model version; immutable once built, shared by requests.

    This is all a predictor must have. One that also has the members of
    :class:`FastPredictor` gets the usual request answered by its fast paths;
    one that also has those of :class:`Follower` follows delta versions in
    place.
    """

    @property
    def version(self) -> int:
        """The store version this predictor was loaded from."""

    @property
    def created_at(self) -> float:
        """When the version was committed, in seconds since the epoch."""

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
class FastPredictor(Predictor, Protocol):
    """A :class:`Predictor` with the fast paths of the usual request.

    The server answers a ``/v1/predict`` request by the first of these that
    gives an answer, and by :meth:`~Predictor.predict_features` (after
    validating the request, so that a refusal names each bad field) when none
    does: :meth:`predict_event` with the raw body, then :meth:`predict_one`
    with the decoded event, then :meth:`predict_fast` with every event.
    Returning ``None`` means "not on this path": never an error, only the next
    path. A predictor without all of these members is not a
    ``FastPredictor``: each request then takes the validating path. The
    server checks this once per loaded version, never per request.
    """

    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The class labels in the order of :data:`OneAnswer`'s
        probabilities; ``None`` for a regressor."""

    def predict_event(self, body: bytes) -> EventAnswer | Literal[False] | None:
        """One event from the request's raw body ``{"features": {...}}`` (the
        usual request; an ``id``, ``key`` and ``ts`` of the event may be there
        too, before or after ``features``), scored without decoding it into
        Python objects.

        ``False`` when the body is one plain event but the predictor lacks a
        name or string of it (the server then answers with
        :meth:`predict_one` or :meth:`predict_fast` and calls :meth:`remember`,
        so that the next such body is scored here); ``None`` for any other
        body, or when the predictor has no such path.
        """

    def predict_one(self, features: Mapping[str, Any]) -> OneAnswer | None:
        """One event from its decoded, not yet validated ``features``, with
        no :class:`Predictions` built; ``None`` when a feature is not plain
        (number, string, boolean, list of strings) or the predictor has no
        one-event path."""

    def remember(self, features: Mapping[str, Any]) -> None:
        """Learn what :meth:`predict_event` lacked of ``features``, an event
        just answered on another path after ``predict_event`` said
        ``False``; nothing when there is nothing to learn."""

    def predict_fast(self, features: Sequence[Mapping[str, Any]]) -> Predictions | None:
        """Events from their decoded, not yet validated ``features``; ``None``
        when any feature is not plain or the predictor has no fast path."""


@runtime_checkable
class Follower(Predictor, Protocol):
    """A :class:`Predictor` that can follow delta versions in place.

    The :class:`~streamlearn.serving.watcher.ModelWatcher` keeps a spare copy
    (:meth:`clone`) that no request holds and writes each delta into it
    (:meth:`apply`) when its source can say what changed (``advance``, see
    :class:`Step`); without these members every version is loaded whole.
    """

    @property
    def can_follow(self) -> bool:
        """Whether :meth:`apply` can bring this predictor to a delta version."""

    def clone(self) -> Follower:
        """A predictor of the same version sharing no array with this one."""

    def apply(self, step: Step) -> None:
        """Become version ``step.version`` by writing ``step.changes`` (only
        ever called on a predictor no request holds); raises when the changes
        do not fit, leaving this predictor unusable."""


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
    predictor holding ``since`` and it holds ``version``, committed at
    ``created_at`` with ``lineage``), or ``reload`` says why ``version`` must be
    loaded whole (a snapshot, a rollback, a pin going backwards...).

    A :class:`ModelSource` may have this optional method
    ``advance(since: int, upto: int) -> Step``; a predictor that can follow
    is a :class:`Follower` (see
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
