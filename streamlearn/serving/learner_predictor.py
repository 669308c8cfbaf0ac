"""Serve a learner rebuilt from a stored :class:`~streamlearn.state.ModelState`.

Linear learners (linear, logistic, softmax regression) are scored by a
:class:`~streamlearn.serving.linear_scorer.LinearScorer` built once per
version: no feature batch, plain Python for one event, numpy column by column
for Arrow bodies. Factorization machines are scored by a
:class:`~streamlearn.serving.fm_scorer.FMScorer` (numpy over the event's
entries, no native table). A mixture of logistic regressions is scored by a
:class:`~streamlearn.serving.mixture_scorer.MixtureScorer` (one ``LinearScorer``
per component, the mixture given as one log-odds). Other learners go through their
own ``predict_many``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from streamlearn.errors import StateError
from streamlearn.serving.model import EventAnswer, OneAnswer, Predictions, Step

__all__ = ["LearnerPredictor", "predictor_from_version"]


class LearnerPredictor:
    """One model version, ready to predict; never changed while a request uses it.

    A :class:`~streamlearn.serving.model.FastPredictor` (the server's fast
    paths) and a :class:`~streamlearn.serving.model.Follower`.

    A predictor of a linear model or a factorization machine can also follow a
    delta version in place (:meth:`apply`, O(slots changed)), which the
    :class:`~streamlearn.serving.watcher.ModelWatcher` does only to a predictor
    no request holds (its double buffer).

    Parameters
    ----------
    learner
        A streamlearn learner (``predict_many``; classifiers also
        ``predict_proba_many``) that nothing else will train.
    version, created_at, lineage
        Which store version it is, when it was committed, and its lineage.
    classes
        Class labels in the column order of ``predict_proba_many``; ``None``
        for a regressor.
    meta
        The stored ``ModelState.meta`` of the version (what :meth:`apply`
        checks a delta's metadata against).
    """

    def __init__(
        self,
        learner: Any,
        version: int,
        created_at: float,
        lineage: Mapping[str, Any] | None = None,
        classes: Sequence[Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        from streamlearn.serving.fm_scorer import FMScorer
        from streamlearn.serving.linear_scorer import LinearScorer
        from streamlearn.serving.mixture_scorer import MixtureScorer

        self.learner = learner
        self.version = version
        self.created_at = created_at
        self.lineage = dict(lineage or {})
        self.classes = tuple(classes) if classes is not None else None
        self._task = getattr(learner, "task", "regression")
        self._scorer: Any = (LinearScorer.from_learner(learner) or FMScorer.from_learner(learner)
                             or MixtureScorer.from_learner(learner))
        if self._scorer is not None and (self.classes is None) != (self._task == "regression"):
            self._scorer = None  # classes that do not fit the task: the learner decides
        # one output (a regressor or a binary classifier): one event in plain Python
        one = self._scorer is not None and self._scorer.n_outputs == 1
        two = self.classes is None or len(self.classes) == 2
        self._one = self._scorer if one and two else None
        self._columns: Any = None
        self._native_on = True
        self._meta = json.loads(json.dumps(dict(meta or {})))

    def __repr__(self) -> str:
        return f"LearnerPredictor({type(self.learner).__name__}, version={self.version})"

    @property
    def _native(self) -> Any:
        """The native table of a one-output scorer without scaling, when built
        (read from the scorer each time: it makes a new one past its budget);
        set it to ``None`` to answer every body in Python."""
        one = self._one
        return None if one is None or not self._native_on else one.native

    @_native.setter
    def _native(self, value: None) -> None:
        if value is not None:
            raise ValueError("_native can only be switched off (None)")
        self._native_on = False

    # -- following delta versions in place ----------------------------------------

    @property
    def can_follow(self) -> bool:
        """Whether :meth:`apply` can bring this predictor to a delta version
        (a linear model or a factorization machine with its scorer)."""
        return self._scorer is not None and hasattr(self._scorer, "refresh")

    def clone(self) -> LearnerPredictor:
        """A predictor of the same version with its own copy of the learner's
        arrays (the second buffer a watcher applies deltas to). O(model)."""
        from streamlearn.learners import learner_from_state

        learner = learner_from_state(self.learner.state(copy=False))  # load_state copies
        return LearnerPredictor(
            learner, self.version, self.created_at, self.lineage, self.classes, self._meta
        )

    def apply(self, step: Step) -> None:
        """Become version ``step.version`` by writing ``step.changes`` (a
        :class:`~streamlearn.store.Changes` on this predictor's version) into
        the learner's arrays and the scorer's tables, in time proportional to
        the slots changed; ``created_at`` and ``lineage`` come from ``step``.

        Only for a predictor no request holds. Everything is checked before
        anything is written; :class:`~streamlearn.errors.StateError` names what
        does not fit (then load the version whole). A failure while writing
        leaves this predictor unusable: drop it.
        """
        changes = step.changes
        arrays = self.learner.state(copy=False).arrays
        slots = changes.slots
        where = f"version {step.version} on {self.version}"
        if step.since != self.version:
            raise StateError(f"{where}: the changes are on version {step.since}")
        if changes.meta is not None and _fixed(changes.meta) != _fixed(self._meta):
            differ = sorted(
                k for k in set(_fixed(changes.meta)) | set(_fixed(self._meta))
                if changes.meta.get(k) != self._meta.get(k)
            )
            raise StateError(f"{where}: the model's metadata changed in {differ}; load it whole")
        for name, values in changes.rows.items():
            a = arrays.get(name)
            if a is None or a.shape[1:] != values.shape[1:]:
                raise StateError(
                    f"{where}: rows of {name!r} of shape {values.shape[1:]} for an array "
                    f"{'the learner lacks' if a is None else f'of shape {a.shape}'}"
                )
            if len(slots) and slots[-1] >= a.shape[0]:
                raise StateError(f"{where}: slot {int(slots[-1])} past {name!r}'s {a.shape[0]}")
        for name, values in changes.small.items():
            a = arrays.get(name)
            if a is None or a.shape != values.shape:
                raise StateError(
                    f"{where}: small array {name!r} of shape {values.shape} for "
                    f"{'none' if a is None else a.shape}"
                )
        if len(slots) and not changes.rows:
            raise StateError(f"{where}: {len(slots)} slots without values")
        for name, values in changes.rows.items():
            arrays[name][slots] = values
        for name, values in changes.small.items():
            arrays[name][...] = values
        self._scorer.refresh(slots, arrays)
        if changes.meta is not None:
            self._meta = json.loads(json.dumps(changes.meta))
            for attribute, key in (("_n_learned", "n_learned"), ("_n_steps", "n_steps")):
                if hasattr(self.learner, attribute) and key in changes.meta:
                    setattr(self.learner, attribute, int(changes.meta[key]))
        self.version = step.version
        self.created_at = step.created_at
        self.lineage = dict(step.lineage or {})

    def _predict(self, batch: Any) -> Predictions:
        if self.classes is None:
            values = np.asarray(self.learner.predict_many(batch), dtype=np.float64)
            return Predictions(values=values)
        proba = np.ascontiguousarray(self.learner.predict_proba_many(batch), dtype=np.float64)
        if proba.ndim == 1:  # P(positive class) of a binary learner
            proba = np.column_stack([1.0 - proba, proba])
        return Predictions.from_probabilities(proba, self.classes)

    def _from_scores(self, z: np.ndarray, known: np.ndarray | None = None) -> Predictions:
        if self.classes is None:
            return Predictions(values=z, known=known)
        if self._task == "binary":
            p = 1.0 / (1.0 + np.exp(np.minimum(np.maximum(z, -500.0), 500.0) * -1.0))
            return Predictions.from_probabilities(
                np.column_stack([1.0 - p, p]), self.classes, known
            )
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return Predictions.from_probabilities(
            e / e.sum(axis=1, keepdims=True), self.classes, known
        )

    def predict_one(self, features: Mapping[str, Any]) -> OneAnswer | None:
        """The prediction, the class probabilities (``None`` for a regressor)
        and the number of features the model knows (see
        :mod:`streamlearn.serving.linear_scorer`) of one event whose features
        are all plain, in plain Python
        with no :class:`Predictions` built; ``None`` when a feature is not
        plain or this learner has no plain-Python path for one event (a
        softmax, or a learner without a scorer): then use :meth:`predict_fast`
        or :meth:`predict_features`.

        >>> from streamlearn.learners import LogisticRegression
        >>> model = LogisticRegression(bits=8)
        >>> model.learn_many([{"age": 30.0, "city": "Lyon"}, {"age": 5.0}], [True, False])
        >>> served = LearnerPredictor(model, 1, 0.0, classes=model.classes_)
        >>> label, (p_false, p_true), known = served.predict_one({"age": 30.0, "city": "Lyon"})
        >>> label == model.predict_one({"age": 30.0, "city": "Lyon"})
        True
        >>> bool(abs(p_true - model.predict_proba_one({"age": 30.0, "city": "Lyon"})[True]) < 1e-12)
        True
        >>> served.predict_one({"age": [1]}) is None  # not plain: validate, then predict_features
        True
        >>> served.predict_one({"agee": 30.0, "city": "Lyon"})[2]  # a misspelled name
        1
        """
        scorer = self._one
        if scorer is None:
            return None
        got = scorer.score_one_known(features)
        return None if got is None else self._answer(*got)

    def predict_event(self, body: bytes) -> EventAnswer | Literal[False] | None:
        """:meth:`predict_one` of a raw request body that is one plain event
        ``{"features": {...}}``, with its ``id``, ``key`` (each a plain string or
        an integer) and ``ts`` (an integer) if it has them, scored by the native
        table in one call (see :mod:`streamlearn.serving.linear_scorer`); the
        answer and those three fields (``None`` when absent).

        ``False`` when the table lacks a name or string of the body: answer with
        :meth:`predict_one` of the decoded features, then :meth:`remember` them.
        ``None`` for any other body, or without a native table: decode and
        validate it as usual.
        """
        one = self._one
        if one is None or one.native is None or not self._native_on:
            return None
        got = one.native.score_event(body)
        if got is None or got is False:
            return got
        z, known, event_id, key, ts = got
        z += one._b0  # the table's intercept is 0 (see LinearScorer)
        if not math.isfinite(z):
            return None
        return self._answer(z, known), event_id, key, ts

    def _answer(self, z: float, known: int) -> OneAnswer:
        """One event's answer from its raw score: the value, or the class and
        the two probabilities of a binary model; and its known features."""
        classes = self.classes
        if classes is None:
            return z, None, known
        p = 1.0 / (1.0 + math.exp(-min(max(z, -500.0), 500.0)))
        return (classes[1] if p > 0.5 else classes[0]), [1.0 - p, p], known

    def remember(self, features: Mapping[str, Any]) -> None:
        """Teach the native table the shares of ``features``, an event that
        :meth:`predict_one` has just answered (see :meth:`predict_event`)."""
        one = self._one
        if one is not None and one.native is not None and self._native_on:
            one.remember(features)

    @property
    def native_hits(self) -> int:
        """How many bodies the native table has scored (0 without one)."""
        return 0 if self._native is None else self._native.hits

    def predict_fast(self, features: Sequence[Mapping[str, Any]]) -> Predictions | None:
        """Predict for events whose features are all plain (numbers, strings,
        booleans, lists of strings) without validating them first; ``None``
        when any is not, or when this learner has no fast path: then validate
        and call :meth:`predict_features`, which names the problem.

        One event of a one-output model is answered in plain Python (its
        ``probabilities`` is then a list of lists, not an array).
        """
        scorer = self._scorer
        if scorer is None:
            return None
        if len(features) == 1 and self._one is not None:
            got = self.predict_one(features[0])
            return None if got is None else Predictions.of_one(got, self.classes)
        got_many = scorer.score_many_known(features)
        return None if got_many is None else self._from_scores(*got_many)

    def predict_features(self, features: Sequence[Mapping[str, Any]]) -> Predictions:
        """Predict for events given as feature mappings."""
        fast = self.predict_fast(features) if len(features) else None
        return fast if fast is not None else self._predict(self.learner.encode(features))

    def predict_columns(self, columns: Mapping[str, Any], n_rows: int) -> Predictions:
        """Predict for events given as Arrow feature columns, encoded in bulk."""
        if self._scorer is not None:
            return self._from_scores(*self._scorer.score_columns_known(columns, n_rows))
        if self._columns is None:
            from streamlearn.features import FeatureHasher
            from streamlearn.serving.columns import ColumnEncoder

            learner = self.learner
            self._columns = ColumnEncoder(FeatureHasher(
                bits=learner.bits, dense=learner.dense, crosses=getattr(learner, "crosses", ())
            ))
        return self._predict(self._columns.encode(columns, n_rows))


def predictor_from_version(model_version: Any) -> LearnerPredictor:
    """Rebuild the learner stored in a ``ModelVersion`` of the store."""
    from streamlearn.learners import learner_from_state
    from streamlearn.state import ModelState

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
        meta=state.meta,
    )


#: metadata a delta version may change without the served model changing its
#: shape or kind (counters); any other difference means loading it whole
_COUNTERS = frozenset({"n_learned", "n_steps"})


def _fixed(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in _COUNTERS}
