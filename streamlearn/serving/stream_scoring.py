"""Scoring Kafka messages: one prediction record per event, bad events to a dead-letter topic.

The scoring job (``flink_jobs/score.py``) reads events from Kafka and writes
predictions to another topic; everything it does per message lives here, so
it runs and is tested without Flink. A :class:`Scorer` follows a model in the
store with the prediction service's own hot swap
(:class:`~streamlearn.serving.ModelWatcher`: a cheap poll of the store's head,
loading off the hot path, one atomic swap; a delta version is written into a
spare copy of the model in time proportional to the slots it changed, then
swapped in, as the server does, so the job holds the model twice). Each
message is scored entirely by the version current when it arrives: an
envelope ``{"events": [...]}`` is one micro-batch, one call into the model.

For every valid event the output is one JSON record::

    {"id": "e-1", "key": "user-42", "partition": 0, "offset": 1812, "index": 0,
     "version": 3, "prediction": true, "classes": [false, true],
     "probabilities": [0.27, 0.73]}

``id`` and ``key`` appear when the event (or, for ``key``, the Kafka message)
has one, and ``label`` when the event carries one; ``index`` is the event's
position inside an envelope (0 for a single event), so ``(partition, offset,
index)`` names the event uniquely. A regressor's record has ``prediction``
alone. Every event that cannot be scored (not JSON, wrong types, unknown
fields...) becomes one dead-letter record naming the field and the reason, in
the bounded shape every job writes (:func:`streamlearn.events.dead_letter`,
``"stage": "score"``); scoring never stops for one.

>>> import tempfile
>>> from streamlearn.learners import LinearRegression
>>> from streamlearn.store import ModelStore
>>> store = ModelStore(tempfile.mkdtemp(), model="price")
>>> state = LinearRegression(bits=4).state()
>>> state.arrays["intercept"][:] = 2.5      # a model that always predicts 2.5
>>> store.commit(state)
1
>>> with Scorer.from_store(store, "price", topic="sales") as scorer:
...     out = scorer.score(b'{"events": [{"features": {"m2": 40}, "id": "a"}, {"features": 7}]}',
...                        partition=0, offset=41)
>>> out.predictions
['{"id":"a","partition":0,"offset":41,"index":0,"version":1,"prediction":2.5}']
>>> import json; json.loads(out.dead[0])["reason"]
'field `features` of event 1: expected an object of name → value, got 7'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streamlearn.contract import MAX_FEATURES
from streamlearn.errors import ConfigError, StoreError
from streamlearn.events import EventDecoder, Rejected, dead_letter
from streamlearn.serving.model import ModelSource, Predictions, Predictor
from streamlearn.serving.watcher import ModelWatcher

__all__ = ["Scorer", "Scored", "task_of", "load_predictor", "STAGE"]

log = logging.getLogger(__name__)

#: The ``stage`` of the scoring job's dead-letter records.
STAGE = "score"

_DUMPS = orjson.OPT_SERIALIZE_NUMPY
_BINARY_LABELS = (0, 1)


def task_of(predictor: Predictor) -> str:
    """The event task whose labels fit ``predictor``'s classes.

    Scoring needs no label, but one that is given is still checked: a
    regressor takes numbers, a classifier of 0/1 or false/true takes binary
    labels, any other classifier class names.

    >>> from types import SimpleNamespace
    >>> [task_of(SimpleNamespace(classes=c)) for c in (None, (False, True), ("cat", "dog"))]
    ['regression', 'binary', 'multiclass']
    """
    classes = getattr(predictor, "classes", None)
    if classes is None:
        return "regression"
    if len(classes) == 2 and all(c in _BINARY_LABELS for c in classes):
        return "binary"
    return "multiclass"


@dataclass
class Scored:
    """What one Kafka message turned into: JSON prediction and dead-letter records."""

    predictions: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    version: int | None = None


def _text(raw: bytes | bytearray | str | None) -> str | None:
    if not raw:  # no Kafka key arrives as empty bytes from the source
        return None
    if isinstance(raw, str):
        return raw
    return bytes(raw).decode("utf-8", errors="replace")


class Scorer:
    """Score Kafka messages with the version a :class:`ModelWatcher` keeps current.

    Parameters
    ----------
    source
        Where versions come from: a :class:`~streamlearn.serving.StoreSource`
        (see :meth:`from_store`) or any :class:`~streamlearn.serving.model.ModelSource`.
    topic
        The source topic's name, written into dead-letter records.
    wait_s
        How long :meth:`score` waits for a first version when none is
        committed yet before it raises :class:`~streamlearn.errors.StoreError`.
    interval_s
        Seconds between two polls of the store's head, in (0, 0.2].
    max_features
        Events with more features are dead-lettered (protects memory).
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        topic: str = "",
        wait_s: float = 60.0,
        interval_s: float = 0.05,
        max_features: int = MAX_FEATURES,
    ) -> None:
        if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or wait_s < 0:
            raise ConfigError("wait_s", "a number of seconds >= 0", repr(wait_s))
        if isinstance(max_features, bool) or not isinstance(max_features, int) or max_features < 1:
            raise ConfigError("max_features", "an integer >= 1", repr(max_features))
        self.source = source
        self.topic = topic
        self.wait_s = float(wait_s)
        self.max_features = max_features
        self.watcher = ModelWatcher(source, interval_s=interval_s, cache_size=2)
        self.messages = 0
        self.scored = 0
        self.rejected = 0
        self._decoders: dict[str, EventDecoder] = {}

    @classmethod
    def from_store(cls, store: Any, model: str, **options: Any) -> Scorer:
        """A scorer following ``model`` in a store (a URI, a path or an open ``ModelStore``)."""
        from streamlearn.serving.store_source import StoreSource

        return cls(StoreSource(store, model, loader=load_predictor), **options)

    def __repr__(self) -> str:
        current = self.watcher.current
        version = current.version if current is not None else None
        return f"Scorer(model={self.source.name!r}, version={version}, scored={self.scored})"

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Load the version to serve if there is one, and follow the store from a thread."""
        self.watcher.start()

    def close(self) -> None:
        """Stop following the store."""
        self.watcher.stop()

    def __enter__(self) -> Scorer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int | None:
        """The version scoring now; ``None`` before the first one is loaded."""
        current = self.watcher.current
        return current.version if current is not None else None

    def _predictor(self) -> Predictor:
        predictor = self.watcher.current
        if predictor is not None:
            return predictor
        deadline = time.monotonic() + self.wait_s
        log.info("waiting up to %.0f s for a first version of model %r", self.wait_s,
                 self.source.name)
        while True:
            self.watcher.poll_once()
            predictor = self.watcher.current
            if predictor is not None:
                return predictor
            if time.monotonic() >= deadline:
                error = self.watcher.last_error
                problem = f" (last error: {error})" if error else ""
                raise StoreError(
                    f"no version of model {self.source.name!r} to score with after "
                    f"{self.wait_s:.0f} s{problem}; commit one (a training job, or "
                    "ModelStore.commit) or wait longer (--wait-s)"
                )
            time.sleep(self.watcher.interval_s)

    def _decoder(self, predictor: Predictor) -> EventDecoder:
        task = task_of(predictor)
        decoder = self._decoders.get(task)
        if decoder is None:
            decoder = EventDecoder(task, require_label=False, max_features=self.max_features)
            self._decoders[task] = decoder
        return decoder

    # -- the hot path -------------------------------------------------------
    def score(
        self,
        value: bytes | bytearray | str,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | bytearray | str | None = None,
    ) -> Scored:
        """Score the events of one Kafka message (a single event or an envelope).

        Parameters
        ----------
        value
            The message's value: JSON bytes (or text).
        partition, offset
            Where the message was read from; copied into every output record.
        key
            The Kafka message key; an event without its own ``key`` gets it
            (an empty key counts as none).

        Returns
        -------
        Scored
            One prediction record per valid event, in message order, all from
            the same version, and one dead-letter record per bad event.
        """
        predictor = self._predictor()  # read once: the whole message sees one version
        raw = bytes(value) if isinstance(value, bytearray) else value  # what decode takes
        events, rejections = self._decoder(predictor).decode(raw)
        self.messages += 1
        out = Scored(version=predictor.version)
        if rejections:
            out.dead = [self._dead(r, partition, offset) for r in rejections]
        if events:
            try:
                result = predictor.predict_features([e["features"] for e in events])
            except Exception as exc:  # a model failing on these events must not stop the job
                log.warning("version %d could not score a message at %s/%s: %s",
                            predictor.version, partition, offset, exc)
                out.dead.extend(
                    self._dead_event(i, "features", f"the model failed: {exc}", partition,
                                     offset, orjson.dumps(e))
                    for i, e in zip(_indices(len(events), rejections), events, strict=True)
                )
            else:
                out.predictions = self._records(events, rejections, result, predictor.version,
                                                partition, offset, _text(key))
        self.scored += len(out.predictions)
        self.rejected += len(out.dead)
        return out

    def _records(
        self,
        events: list[dict],
        rejections: list[Rejected],
        result: Predictions,
        version: int,
        partition: int | None,
        offset: int | None,
        message_key: str | None,
    ) -> list[str]:
        values = result.values
        if isinstance(values, np.ndarray):
            values = values.tolist()
        classes = list(result.classes) if result.classes is not None else None
        proba = result.probabilities  # a list of lists for one event of a binary model
        if isinstance(proba, np.ndarray):
            proba = proba.tolist()
        records = []
        for n, (index, event) in enumerate(zip(_indices(len(events), rejections), events,
                                               strict=True)):
            doc: dict[str, Any] = {}
            if "id" in event:
                doc["id"] = event["id"]
            key = event.get("key", message_key)
            if key is not None:
                doc["key"] = key
            doc["partition"] = partition
            doc["offset"] = offset
            doc["index"] = index
            doc["version"] = version
            doc["prediction"] = values[n]
            if proba is not None:
                doc["classes"] = classes
                doc["probabilities"] = proba[n]
            if "label" in event:
                doc["label"] = event["label"]
            records.append(orjson.dumps(doc, option=_DUMPS).decode())
        return records

    def _dead(self, rejected: Rejected, partition: int | None, offset: int | None) -> str:
        return self._dead_event(rejected.index, rejected.field, rejected.reason, partition, offset,
                                rejected.raw, rejected.code)

    def _dead_event(
        self,
        index: int | None,
        field_name: str,
        reason: str,
        partition: int | None,
        offset: int | None,
        raw: bytes,
        code: str | None = None,
    ) -> str:
        return dead_letter(
            stage=STAGE, topic=self.topic, partition=partition, offset=offset, index=index,
            field=field_name, reason=reason, raw=raw, code=code,
        ).decode()


class _InArrowBytes:
    """A stored ``ModelVersion`` whose ``to_bytes`` stays inside Arrow's C++ buffers.

    Writing Arrow IPC into a Python ``io.BytesIO`` calls back into Python from
    C++, which never returns inside PyFlink's thread mode (the embedded
    interpreter); an Arrow ``BufferOutputStream`` needs no such call, and no copy.
    """

    def __init__(self, model_version: Any) -> None:
        self._version = model_version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._version, name)

    def to_bytes(self) -> Any:
        if self._version.payload_kind == "opaque":
            return self._version.to_bytes()
        import pyarrow as pa

        from streamlearn.store.version_file import strip_store_metadata

        table = strip_store_metadata(self._version.table)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()


def load_predictor(model_version: Any) -> Predictor:
    """Rebuild the learner of a stored version, safely inside PyFlink's thread mode.

    The loader :meth:`Scorer.from_store` gives its
    :class:`~streamlearn.serving.StoreSource`; otherwise the same as
    :func:`streamlearn.serving.learner_predictor.predictor_from_version`.
    """
    from streamlearn.serving.learner_predictor import predictor_from_version

    return predictor_from_version(_InArrowBytes(model_version))


def _indices(n_good: int, rejections: Sequence[Rejected]) -> list[int]:
    """Positions of the valid events inside their message (0 for a single event)."""
    skipped = {r.index for r in rejections if r.index is not None}
    if not skipped:
        return list(range(n_good))
    out: list[int] = []
    i = 0
    while len(out) < n_good:
        if i not in skipped:
            out.append(i)
        i += 1
    return out
