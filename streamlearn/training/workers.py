"""The training job's two kinds of worker, free of Flink (``flink_jobs/train.py`` wires them).

- :class:`LearnerWorker`: one of P parallel learners. In the job it learns
  bundles the JVM encoder made (:meth:`LearnerWorker.learn_bundle`: Kafka
  messages already decoded, validated and hashed into a micro-batch, their
  rejections already dead-lettered); in-process it can also decode messages
  itself (:meth:`LearnerWorker.add`, :meth:`LearnerWorker.flush`). Either way
  it learns prequentially (predict, score, then learn) and hands out a
  :class:`~streamlearn.merge.ModelDelta` with the Kafka offsets it now covers,
  then rebases on the newest merged version it finds in the store, keeping
  its own unsent changes.
- :class:`MergerWorker`: the one merger. It folds deltas into the global model as
  they arrive and commits a version to the store with lineage (offsets per
  partition, events reflected, learners, metrics) at most every sync interval:
  a *delta* version (the slots its deltas touched since the last version) or,
  when the store's snapshot policy says so, a snapshot (the whole model).

Nothing per bundle or per version costs O(model slots): a learner's delta
compares only the slots its bundle touched, a delta version holds only the
slots that changed, and a learner rebases by applying the changes of the
versions since its base (``ModelStore.changes``), reading the whole model only
after a snapshot broke the chain.

What must survive a crash is small and explicit: the merger's
:meth:`MergerWorker.snapshot` at its last commit and the deltas folded in
since (:meth:`MergerWorker.pending`). The Flink job keeps exactly that in
Flink state; learners keep nothing, because the job hands them each bundle
whole and takes their delta at once, so a restored job learns every event once.
Versions committed after the checkpoint are not undone: the restored merger
adopts the newest (:meth:`MergerWorker.start`) and learners skip the records it
reflects (:attr:`LearnerWorker.skip_below`), so no version ever reflects fewer
events than one committed before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streamlearn.contract import event_weight
from streamlearn.errors import StoreError, ValidationError
from streamlearn.events import EventDecoder, Rejected, dead_letter
from streamlearn.joining import OUTCOMES, lineage_counts, lineage_metrics
from streamlearn.store.lease import LeaseError
from streamlearn.training.config import TrainConfig

__all__ = [
    "LearnerWorker", "MergerWorker", "dlq_record", "initial_key", "resume_point", "store_fault",
    "LOAD_PREFIX", "RETAIN_EVERY", "RETAIN_SPACING", "START_PREFIX", "UNBALANCED",
    "folded_offsets",
]

log = logging.getLogger(__name__)

#: What reads a partition's Kafka messages again: ``fetch(partition, start, end)``
#: yields ``(offset, value, join)`` for every message in ``[start, end)``, in offset order
#: (``join``: the value of its header :data:`streamlearn.joining.HEADER`, or ``None``).
Fetch = Callable[[int, int, int], Iterable[tuple[int, bytes, str | None]]]

#: Retention (``store.keep_versions``) runs after at least this many commits, and
#: no sooner than :data:`RETAIN_SPACING` times the last pass took: the store's
#: ``retain`` lists the model's whole index, which costs more as versions accumulate
#: (on a local disk, retention every 5 commits, measured: 1.3 ms a pass with 100
#: versions ever committed, 25 ms with 1,000, 91 ms with 5,000), so it is not paid
#: on every commit and never takes more than about a tenth of the merger's time.
RETAIN_EVERY = 5
RETAIN_SPACING = 10

#: What each learner's load is named by in a version's lineage metrics:
#: ``learned.<learner>``, the events it learned since it started, outside the warm-up
#: (``job.warmup_events``, which learner 0 learns alone at the start)
LOAD_PREFIX = "learned."

#: What names, in a version's lineage metrics, the events of the version each learner
#: started from (``started_on.<learner>``): after a warm-up, at least the warm-up of the
#: source subtask of its first bundle (:mod:`streamlearn.training.warmup`)
START_PREFIX = "started_on."

#: How uneven the learners' loads may grow (the busiest over their mean) before the
#: merger says so in the job's log, once, and ``streamlearn train`` on each version's line
UNBALANCED = 1.5

#: What the store raises when it cannot be written or read for now: a full disk, a
#: file system or object store away (OSError, or a StoreError raised from one).
STORE_FAULTS = (OSError, StoreError)


def _passing(exc: BaseException) -> bool:
    """An I/O fault worth waiting out; anything else (a refusal, a bug) fails at once.

    >>> _passing(OSError(28, "No space left on device")), _passing(StoreError("fenced"))
    (True, False)
    """
    return isinstance(exc, OSError) or isinstance(exc.__cause__, OSError) or bool(
        getattr(exc, "retriable", False)
    )


def store_fault(exc: BaseException) -> str:
    """A short reason for a store fault, for one log line.

    >>> store_fault(OSError(28, "No space left on device"))
    'No space left on device'
    >>> store_fault(OSError("[Errno 28] Error writing bytes to file.\\nDetail: more"))
    '[Errno 28] Error writing bytes to file.'
    """
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def dlq_record(topic: str, partition: int, offset: int, rejected: Rejected) -> bytes:
    """The dead-letter record of one rejection (:func:`streamlearn.events.dead_letter`, the
    one shape every job writes: bounded, with reason, field, origin and the bytes)."""
    return dead_letter(
        stage="train", topic=topic, partition=partition, offset=offset, index=rejected.index,
        field=rejected.field, reason=rejected.reason, raw=rejected.raw, code=rejected.code,
    )


def _advance(offsets: dict[int, int], partition: int, end: int) -> None:
    """Move ``partition``'s next offset to ``end`` unless it is already past it."""
    if offsets.get(partition, -1) < end:
        offsets[partition] = end


def _delta_offsets(delta: Any) -> dict[int, int]:
    """The offsets a delta advances the merged ones to: its bundle's end in its
    partition when it carries its bundle's span, else the learner's offsets."""
    extra = delta.extra or {}
    span = extra.get("bundle")
    if span is not None:
        return {int(span[0]): int(span[2])}
    return {int(p): int(o) for p, o in (extra.get("offsets") or {}).items()}


def _follows(offsets: Mapping[int, int], partition: int, after: int) -> bool:
    """Whether a bundle whose predecessor in ``partition`` ended at ``after`` comes next
    after ``offsets`` (see :meth:`MergerWorker.add`).

    >>> _follows({0: 500}, 0, 500), _follows({0: 500}, 0, 900), _follows({}, 0, -1)
    (True, False, True)
    """
    return after < 0 or after <= offsets.get(partition, -1)


def folded_offsets(offsets: Mapping[int, int], deltas: list[Any]) -> dict[int, int]:
    """``offsets`` advanced by the ``deltas`` that :meth:`MergerWorker.add` would fold
    in, in the order it would: a bundle's delta only once its predecessor is.

    >>> from types import SimpleNamespace as D
    >>> folded_offsets({0: 100}, [D(extra={"bundle": [0, 300, 400]}),
    ...                          D(extra={"bundle": [0, 100, 300]})])
    {0: 400}
    >>> folded_offsets({0: 100}, [D(extra={"bundle": [0, 300, 400]})])
    {0: 100}
    """
    out = dict(offsets)
    spans = []
    for delta in deltas:
        span = (delta.extra or {}).get("bundle")
        if span is not None:
            spans.append((int(span[0]), int(span[1]), int(span[2])))
            continue
        for p, o in _delta_offsets(delta).items():
            _advance(out, p, o)
    # per partition: the encoder's first since it started (-1), then by ``after``
    for partition, after, end in sorted(spans, key=lambda s: (s[0], s[1] >= 0, s[1])):
        if _follows(out, partition, after):
            _advance(out, partition, end)
    return out


def _stored_state(store: Any, version: int) -> Any:
    """Version ``version``'s model state, read from the store's table as it is
    (no second serialisation; the arrays are read-only views of it)."""
    from streamlearn.state import ModelState

    return ModelState.from_arrow(store.get(version).table)


def _forget_cache(store: Any) -> None:
    """Drop the store handle's copy of the model it materialised (the caller copied
    what it needs): a handle otherwise keeps a second model in memory."""
    drop = getattr(store, "drop_cache", None)
    if drop is not None:
        drop()


def initial_key(cfg: TrainConfig) -> str:
    """What names the model's initial state: a digest of the configuration
    sections that build it (``model``, ``features``). The merger's first
    snapshot carries its changes on that state under this key
    (``ModelStore.commit``'s ``from_initial``), and a learner still at that
    state asks for them by it, so it never applies them to another one.

    >>> from streamlearn.training.config import TrainConfig
    >>> a = TrainConfig.from_dict({"features": {"bits": 10}})
    >>> initial_key(a) == initial_key(TrainConfig.from_dict({"features": {"bits": 10}}))
    True
    >>> initial_key(a) == initial_key(TrainConfig.from_dict({"features": {"bits": 12}}))
    False
    """
    d = cfg.to_dict()
    blob = json.dumps({"model": d["model"], "features": d["features"]}, sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def _metrics_for(task: str) -> list:
    from streamlearn.metrics import MAE, RMSE, Accuracy, LogLoss

    if task == "regression":
        return [MAE(), RMSE()]
    return [Accuracy(), LogLoss()]


class LearnerWorker:
    """One parallel learner (see the module docstring).

    >>> cfg = TrainConfig.from_dict({"store": {"uri": "memory"}, "features": {"bits": 8}})
    >>> w = LearnerWorker(cfg, learner_id=0, store=None)
    >>> rejected = w.add(0, 7, b'{"features": {"x": 1.0}, "label": 1}')
    >>> rejected, w.buffered
    ([], 1)
    >>> delta = w.flush()
    >>> delta.n_events, w.offsets
    (1, {0: 8})
    """

    def __init__(
        self, cfg: TrainConfig, learner_id: int, store: Any = None, fetch: Fetch | None = None
    ) -> None:
        from streamlearn.merge import DeltaTracker

        self.cfg = cfg
        self.learner_id = learner_id
        self.name = f"learner-{learner_id}"
        self.decoder = EventDecoder(cfg.model.task)
        self.store = store
        #: reads the Kafka messages of a partition's offset range again, for a bundle
        #: that straddles :attr:`skip_below` (see :meth:`learn_bundle`)
        self.fetch = fetch
        self.learner = cfg.make_learner()
        self.base_version = 0
        self._initial = initial_key(cfg)
        self._store_down = False
        #: partition -> the next offset the version this learner started on reflects
        #: (its lineage offsets): every record below it is in the merged model already,
        #: so the learner skips it (a restored job re-reads from its checkpoint, which
        #: may be older than that version; see :meth:`MergerWorker.start`)
        self.skip_below: dict[int, int] = {}
        #: the events the version this learner started from reflects (0: the initial state)
        self.started_on = 0
        #: events and messages skipped that way
        self.n_skipped = 0
        #: the span of the bundle being learned (see :meth:`learn_bundle`), for its delta
        self._span: list[int] | None = None
        self._rebase_to_latest(initial=True)
        self.tracker = DeltaTracker(self.learner, base_version=self.base_version)
        self.metrics = _metrics_for(cfg.model.task)
        self._xs: list[dict] = []
        self._ys: list[Any] = []
        #: the buffered events' weights, from the first one that gives a weight (before it,
        #: every event weighed 1; None: none has given one)
        self._ws: list[float] | None = None
        self._read: dict[int, int] = {}  # partition -> next offset, for what is buffered
        #: partition -> next offset to read, for everything learned (or rejected) so far
        self.offsets: dict[int, int] = {}
        self.n_learned = 0
        #: of them, events of the warm-up's bundles (``job.warmup_events``)
        self.n_warmup = 0
        self.n_rejected = 0
        #: events rejected since the last delta, which carries them to the merger
        self._rejected_since = 0
        #: the join's outcomes (``streamlearn.joining.OUTCOMES``) read since the last delta,
        #: which carries them to the merger (``extra["join"]``), when the job joins
        self.outcomes: dict[str, int] = {}

    def _outcome(self, join: str | None) -> str | None:
        """The join outcome a record's header names, when this job joins (else ignored)."""
        return join if self.cfg.join.on and join in OUTCOMES else None

    def _count_outcomes(self, counts: Mapping[str, int]) -> None:
        for name, n in counts.items():
            if self._outcome(name) is not None:
                self.outcomes[name] = self.outcomes.get(name, 0) + int(n)

    # -- input ---------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._xs)

    def add(self, partition: int, offset: int, value: bytes) -> list[Rejected]:
        """Decode one Kafka message into the buffer; returns its rejected events."""
        good, bad = self.decoder.decode(value)
        for event in good:
            weight = event.get("weight")
            if weight is not None and self._ws is None:
                self._ws = [1.0] * len(self._xs)
            if self._ws is not None:
                self._ws.append(event_weight(event))
            self._xs.append(event["features"])
            self._ys.append(event["label"])
        _advance(self._read, partition, offset + 1)
        self.n_rejected += len(bad)
        self._rejected_since += len(bad)
        return bad

    def learn_bundle(
        self, partition: int, end_offset: int, n_rejected: int, batch: bytes,
        first_offset: int | None = None, outcomes: Mapping[str, int] | None = None,
        after: int | None = None, warmup: bool = False,
    ) -> Any:
        """Learn one micro-batch the JVM encoder made from consecutive messages of
        ``partition`` from ``first_offset`` up to ``end_offset`` (exclusive), and
        return the delta.

        The training job's fast path: ``io.streamlearn.flink.EncodeBundler``
        decodes, validates and hashes the messages next to the Kafka source and
        sends their rejections to the dead-letter topic itself; ``batch`` is its
        :func:`~streamlearn.training.encoded_batch.read_encoded_batch` bytes.
        Nothing is buffered here, so nothing needs Flink state: a bundle is
        learned and handed on as a delta before the checkpoint barrier behind it.

        Records below :attr:`skip_below` are in the merged model already: a bundle
        wholly below it is skipped (``None``: no delta), and of a bundle that
        straddles it only the messages from it on are learned. A bundle does not
        say which of its rows came from which message, so those messages are read
        again (:attr:`fetch`) and decoded here, once per partition after a restore;
        their rejections were dead-lettered by the encoder already.

        ``outcomes``: the delayed-label join's outcomes among the bundle's messages
        (the encoder counts their headers, :data:`streamlearn.joining.HEADER`), carried
        by the delta to the lineage; those of skipped messages are in the version already.

        ``after``: the end offset of the partition's previous bundle (-1 for the encoder's
        first since it started). Given, the delta carries the bundle's span
        (``extra["bundle"]``: partition, after, end), which the merger folds in the
        partition's order whichever learner sends it (:meth:`MergerWorker.add`), and the
        merger advances its offsets by that span alone.

        ``warmup``: the bundle is one of the warm-up's (:mod:`streamlearn.training.warmup`),
        counted apart (:attr:`n_warmup`) so that the learners' loads compare their own work.
        """
        from streamlearn.training.encoded_batch import read_encoded_batch

        self._span = None if after is None else [partition, after, end_offset]
        below = self.skip_below.get(partition)
        if below is not None:
            if first_offset is None:
                raise ValidationError(
                    "first_offset", f"the bundle's first offset (partition {partition} skips "
                    f"records below {below})", None,
                )
            if end_offset <= below:  # all of it is in the merged model
                self.n_skipped += read_encoded_batch(batch, self.learner.n_slots)[0].n_rows
                _advance(self.offsets, partition, end_offset)
                if end_offset == below:
                    del self.skip_below[partition]
                self._span = None  # no delta
                return None
            del self.skip_below[partition]  # the source is past it now
            if first_offset < below:
                return self._learn_from(partition, below, first_offset, end_offset, batch,
                                        n_rejected)
        xs, ys, weights = read_encoded_batch(batch, self.learner.n_slots)
        n = xs.n_rows
        self._learn(xs, ys, n, weights)
        _advance(self.offsets, partition, end_offset)
        self.n_learned += n
        if warmup:
            self.n_warmup += n
        self.n_rejected += n_rejected
        self._rejected_since += n_rejected
        self._count_outcomes(outcomes or {})
        return self._take_delta(xs.indices)

    def _learn_from(
        self, partition: int, start: int, first: int, end: int, batch: bytes, n_rejected: int
    ) -> Any:
        """Learn the messages of ``partition`` in ``[start, end)`` of the bundle
        ``[first, end)``, read again with :attr:`fetch` and decoded here (the
        in-process path, which learns what the encoder's path learns). All of the
        bundle's messages are read, to check they decode to the bundle's rows and
        rejections: the messages seen now are the ones the encoder saw."""
        from streamlearn.training.encoded_batch import read_encoded_batch

        if self.fetch is None:
            raise ValidationError(
                "fetch", f"a reader of Kafka messages (partition {partition}'s bundle "
                f"[{first}, {end}) straddles offset {start}, already in the merged model)", None,
            )
        n_rows = read_encoded_batch(batch, self.learner.n_slots)[0].n_rows
        rows = bad = 0
        for offset, value, join in self.fetch(partition, first, end):
            if not first <= offset < end:
                raise ValidationError(
                    "fetched offset", f"in [{first}, {end}) of partition {partition}", offset
                )
            outcome = self._outcome(join)
            if outcome is not None and offset >= start:
                self._count_outcomes({outcome: 1})
            if outcome is not None and not value:  # a tally: counted, nothing to learn
                continue
            if offset < start:
                good, rejected = self.decoder.decode(value)
                rows += len(good)
                bad += len(rejected)
                self.n_skipped += len(good)
            else:
                n_before = len(self._xs)
                rejected = self.add(partition, offset, value)
                rows += len(self._xs) - n_before
                bad += len(rejected)
        if (rows, bad) != (n_rows, n_rejected):
            raise ValidationError(
                f"partition {partition}'s messages [{first}, {end}) read again",
                f"{n_rows} events and {n_rejected} rejections, as the encoder's bundle",
                f"{rows} events and {bad} rejections",
            )
        _advance(self._read, partition, end)
        log.info(
            "%s: partition %d's bundle [%d, %d) straddles offset %d, already in the merged "
            "model: learned its %d events from there", self.name, partition, first, end, start,
            len(self._xs),
        )
        return self.flush()

    def should_flush(self) -> bool:
        return len(self._xs) >= self.cfg.job.flush_events

    # -- learning --------------------------------------------------------------
    def flush(self) -> Any:
        """Learn the buffer (predict, score, learn); return the delta since the last flush.

        Returns ``None`` when nothing was read since the last flush.
        """
        if not self._read:
            return None
        n = len(self._xs)
        encode = getattr(self.learner, "encode", None)
        xs = encode(self._xs) if encode is not None else self._xs
        self._learn(xs, self._ys, n, self._ws)
        for partition, end in self._read.items():
            _advance(self.offsets, partition, end)
        self._xs, self._ys, self._ws, self._read = [], [], None, {}
        self.n_learned += n
        return self._take_delta(getattr(xs, "indices", None))

    def _learn(self, xs: Any, ys: Any, n: int, weights: Any = None) -> None:
        """Predict, score and learn ``n`` events (a feature batch or mappings), each with
        its importance ``weights`` (None: every one 1; the metrics count each event once).

        With ``model.update = "event"`` (the default) every event is predicted,
        scored and learned in order, in the compiled kernel. With ``"batch"``, in
        consecutive gradient steps of ``job.step_events``: a bundle is the unit
        of transfer and of deltas, a step the unit of learning, so bundles can
        grow for throughput without the learner taking fewer steps."""
        from streamlearn.features import FeatureBatch
        from streamlearn.metrics import prequential

        step = self.cfg.job.step_events
        if n <= step or self.cfg.model.update == "event":
            if n:
                prequential(self.learner, xs, ys, self.metrics, weights)
            return
        for start in range(0, n, step):
            stop = min(start + step, n)
            part = xs.row_range(start, stop) if isinstance(xs, FeatureBatch) else xs[start:stop]
            prequential(self.learner, part, ys[start:stop], self.metrics,
                        None if weights is None else weights[start:stop])

    def _take_delta(self, touched: Any = None) -> Any:
        """The delta since the last one; ``touched``: the slots of the events learned
        since (a feature batch's entries), so that only they are compared."""
        span, self._span = self._span, None
        delta = self.tracker.take(
            learner_id=self.name,
            extra={
                "offsets": {str(p): o for p, o in self.offsets.items()},
                **({"bundle": span} if span is not None else {}),
                "metrics": self.metric_values(),
                "n_learned_total": self.n_learned,
                **({"n_warmup_total": self.n_warmup} if self.n_warmup else {}),
                **({"started_on": self.started_on} if self.cfg.job.warmup_events else {}),
                "n_rejected": self._rejected_since,
                **({"join": self.outcomes} if self.outcomes else {}),
            },
            touched=touched,
            tag=dict(self.offsets),  # in a version once its offsets reach these
        )
        self.outcomes, self._rejected_since = {}, 0
        self._rebase_to_latest()
        return delta

    def metric_values(self) -> dict[str, float]:
        out = {}
        for m in self.metrics:
            value = m.get()
            out[type(m).__name__] = float(value)
        return out

    def _rebase_to_latest(self, initial: bool = False) -> None:
        """Adopt the newest merged version, if the store has a newer one.

        The changes of the versions since the learner's base are applied to its
        working copy and reference (``DeltaTracker.rebase_changes``: the slots
        they touched and the slots the learner sent since, never the whole
        model); after a snapshot on the way (the store answers "reload") or
        what a sparse rebase cannot do (a class this learner found first), the
        whole version is read and rebased on.

        A learner that began before any version (at the initial state, base 0)
        takes the first snapshot the same way, from the changes on that state
        the merger stored beside it (``ModelStore.changes(since=0, initial=...)``).

        After the first, a rebase is only where the next steps start, never what
        is counted: while the store cannot be read the learner learns on from
        its own copy (logging the outage once) instead of failing the job.
        """
        if self.store is None:
            return
        state = update = None
        reflected: int | None = None
        try:
            latest = self.store.head().latest
            if latest is None or latest <= self.base_version:
                pass
            elif initial:  # nothing held yet: the whole version, and what it reflects
                from streamlearn.state import ModelState

                held = self.store.get(latest)
                state = ModelState.from_arrow(held.table)
                offsets = held.lineage.offsets.get(self.cfg.kafka.topic, {})
                self.skip_below = {int(p): int(o) for p, o in offsets.items()}
                self.started_on = int(held.lineage.events)
                del held
            else:  # at the initial state (base 0), the first snapshot's changes on it
                update = self.store.changes(
                    since=self.base_version, upto=latest,
                    initial=None if self.base_version else self._initial,
                )
                # the version's lineage, from the record changes() read to answer
                lineage = update.lineage or self.store.info(latest).lineage
                reflected = self._reflected(lineage)
                if update.reload is not None or not self.tracker.rebase_changes(
                    self.learner, update.changes, latest, reflected
                ):
                    update, state = None, _stored_state(self.store, latest)
        except STORE_FAULTS as exc:
            if initial:
                raise
            if not self._store_down:
                log.warning(
                    "%s: model store unreadable (%s); learning on from version %d until it returns",
                    self.name, store_fault(exc), self.base_version,
                )
            self._store_down = True
            return
        if self._store_down:
            log.warning("%s: model store readable again", self.name)
            self._store_down = False
        if update is not None:  # rebased on the changes
            self.base_version = latest
            return
        if state is None:
            return
        if initial:
            self.learner.load_state(state)
        else:
            self.tracker.rebase(self.learner, state, latest, reflected)
        del state
        _forget_cache(self.store)
        self.base_version = latest


    def _reflected(self, lineage: Any) -> int:
        """How many of the deltas this learner sent and has not rebased past the
        version of ``lineage`` holds: those whose offsets it reaches on every
        partition (this learner alone reads its partitions, and the merger folds
        its deltas in order). The others stay on the learner as it rebases,
        instead of being learned again until the merger's next version."""
        reached = lineage.offsets.get(self.cfg.kafka.topic, {})
        reached = {int(p): int(o) for p, o in reached.items()}
        n = 0
        for tag in self.tracker.pending_tags:
            if not all(reached.get(p, -1) >= o for p, o in tag.items()):
                break
            n += 1
        return n


class MergerWorker:
    """The one merger: folds learners' deltas and commits versions (see the module docstring)."""

    def __init__(
        self, cfg: TrainConfig, store: Any, strategy: str | None = None, lease: Any = None
    ) -> None:
        self.cfg = cfg
        self.store = store
        #: how deltas merge (``streamlearn.merge.STRATEGIES``; default ``job.merge``)
        self.strategy = strategy or cfg.job.merge
        #: the model's writer lease (``ModelStore.acquire_writer``): every version is
        #: committed under it, and a fenced writer's commit fails at once
        self.lease = lease
        self._since_retain = 0
        self._initial: str | None = None
        self._next_retain_s = 0.0
        self.version = 0
        self.events = 0
        self.offsets: dict[int, int] = {}
        self.learner_metrics: dict[str, dict[str, float]] = {}
        self.learner_counts: dict[str, int] = {}
        #: of ``learner_counts``, the warm-up's events, and the events of the version each
        #: learner started from (its delta's ``n_warmup_total``, ``started_on``)
        self.learner_warmup: dict[str, int] = {}
        self.learner_starts: dict[str, int] = {}
        #: events rejected that the merged model's records hold (the lineage's ``rejected``),
        #: summed from the deltas as the events are: exact across restarts, as they are
        self.rejected = 0
        #: the delayed-label join's outcomes the merged model reflects (``join.<outcome>`` in
        #: each version's lineage metrics), summed from the deltas as the events are
        self.join_counts: dict[str, int] = {}
        self.learners: set[str] = set()
        self._dirty = False
        self._pending_blobs: list[bytes] = []
        #: partition -> deltas of bundles that came before an earlier bundle of theirs had
        #: been folded in, as ``(after, blob)`` (see :meth:`add`)
        self._held: dict[int, list[tuple[int, bytes]]] = {}
        self.merger: Any = None
        self.last_commit_s = 0.0
        self.merge_time_s = 0.0
        #: when a version is a snapshot rather than a delta (``store.snapshot_*``);
        #: ``None``: every version is one
        self.policy = cfg.store.snapshot_policy()
        # the version the merger's arrays equal, outside the slots it changed since
        # (what a delta is committed on), or None and why the next version is whole
        self._delta_base: int | None = None
        self._whole_why = "the first version of this merger"
        #: "delta" or "snapshot": what the last commit wrote, and why a snapshot
        self.last_kind: str | None = None
        self.last_snapshot_reason: str | None = None
        #: the version :meth:`start` adopted (newer than the checkpoint), if any
        self.adopted: int | None = None
        self._warned_unbalanced = False

    # -- state ------------------------------------------------------------------
    def start(
        self, snapshot: dict | None = None, pending: Iterable[bytes] = (), base_version: int = 0
    ) -> None:
        """Begin from a Flink snapshot (after a restart), else from ``base_version``.

        ``base_version`` is the version the job was started from (its source
        starts at that version's offsets, see :func:`resume_point`).

        After a restart, versions committed after the checkpoint (newer than the
        snapshot's) already reflect everything the checkpoint holds and more: the
        merger *adopts* the newest (its state, offsets and event count; the pending
        deltas are in it) rather than committing versions that know less, and the
        learners skip the records below its offsets (``LearnerWorker.skip_below``),
        so every event is still reflected once (:meth:`_adopt`). The same holds
        without a snapshot (a checkpoint taken before the merger began, restored as
        a new job: ``base_version`` 0), where the newest version is adopted whole.
        A caller keeping :meth:`snapshot` and
        :meth:`pending` in state writes them again whenever :meth:`pending` is
        empty after this (nothing folded in yet: the snapshot is the whole state).
        """
        from streamlearn.merge import Merger

        pending = list(pending)
        newest = self.store.head().latest or 0
        if snapshot is not None:
            self.version = int(snapshot["version"])
            self.events = int(snapshot["events"])
            self.offsets = {int(p): int(o) for p, o in snapshot["offsets"].items()}
            self.learner_metrics = snapshot.get("learner_metrics", {})
            self.learner_counts = snapshot.get("learner_counts", {})
            self.learner_warmup = snapshot.get("learner_warmup", {})
            self.learner_starts = snapshot.get("learner_starts", {})
            rejected = snapshot.get("rejected", 0)  # per learner in earlier jobs' snapshots
            self.rejected = sum(rejected.values()) if isinstance(rejected, dict) else rejected
            self.join_counts = dict(snapshot.get("join", {}))
            self.learners = set(snapshot.get("learners", []))
        elif base_version:  # its record: the weights are read once, below
            self._count_from(base_version, self.store.info(base_version).lineage)
        if newest > self.version and self._adopt(newest, pending):
            pending = []
        if self.version:
            state = _stored_state(self.store, self.version)
        else:
            state = self.cfg.make_learner().state()
        # the store may hold versions newer than the one resumed from (left behind, see
        # _adopt): learners may be based on them, so this merger counts from the newest
        newest = max(self.version, newest)
        self.merger = Merger(
            state, newest, strategy=self.strategy, n_learners=self.cfg.job.parallelism
        )
        del state
        _forget_cache(self.store)
        #: the initial state's key while the merger holds it plus what it folded in since
        #: (nothing committed yet): its first snapshot then carries those changes
        self._initial = initial_key(self.cfg) if not newest else None
        if self.version and newest == self.version:
            self._delta_base = self.version  # the merger holds that version exactly
        else:
            self._delta_base = None
            self._whole_why = (
                f"versions after {self.version} are left behind" if self.version
                else "the model's first version"
            )
        for blob in pending:
            self.add(blob)

    def _adopt(self, newest: int, pending: list[bytes]) -> bool:
        """Continue from version ``newest``, committed after the checkpoint resumed
        from, if it reflects all the checkpoint does; returns whether it did.

        The version reflects every record below its lineage offsets exactly once
        (what every version of this model guarantees, whichever writer committed it).
        When those offsets are at or past the checkpoint's (its snapshot's advanced
        by the pending deltas) in every partition, the merger takes its state,
        offsets and event count, and the learners, which start on the newest version
        too, skip what it reflects. When they are at or below them in every partition
        (a rollback committed while the job was down), the checkpoint's content goes
        on and the newer versions are left behind, as the learners skip nothing
        (equal offsets: the one reflecting more events goes on). Any other version
        could be continued from neither: refused.
        """
        from streamlearn.merge import ModelDelta

        topic = self.cfg.kafka.topic
        deltas = [ModelDelta.from_bytes(blob) for blob in pending]
        covered, events = folded_offsets(self.offsets, deltas), self.events
        for delta in deltas:
            events += delta.n_events
        lineage = self.store.info(newest).lineage  # its record: start reads the weights
        theirs = {int(p): int(o) for p, o in lineage.offsets.get(topic, {}).items()}
        parts = sorted(set(covered) | set(theirs))
        ahead = [p for p in parts if theirs.get(p, 0) > covered.get(p, 0)]
        behind = [p for p in parts if theirs.get(p, 0) < covered.get(p, 0)]
        if ahead and behind:
            p, q = ahead[0], behind[0]
            raise StoreError(
                f"version {newest}, newer than the checkpoint's version {self.version}, is "
                f"ahead of it in partition {p} of {topic!r} ({theirs.get(p, 0)} > "
                f"{covered.get(p, 0)}) but behind in partition {q} ({theirs.get(q, 0)} < "
                f"{covered.get(q, 0)}): neither can be continued exactly once; start the job "
                "afresh (--resume none) to continue from the newest version"
            )
        # learners skip below the version's offsets, so they decide: ahead in a partition,
        # the version is adopted; the event count only decides between equals
        if behind or (not ahead and lineage.events < events):
            log.warning(
                "version %d, newer than the checkpoint's version %d, reflects less than the "
                "checkpoint (its offsets at or behind the checkpoint's; %d events, the "
                "checkpoint %d): it is left behind", newest, self.version, lineage.events, events,
            )
            return False
        log.warning(
            "adopting version %d (%d events), newer than the checkpoint's version %d (%d "
            "events with its %d pending deltas): learners skip what it reflects",
            newest, lineage.events, self.version, events, len(deltas),
        )
        for delta in deltas:  # their content is in the version; the learners' totals are not
            self._count(delta)
        self._count_from(newest, lineage)
        self.adopted = newest
        return True

    def _count_from(self, version: int, lineage: Any) -> None:
        """Count on from ``version`` as its ``lineage`` says: its events, its offsets in the
        job's topic, its rejected events and its join's outcomes."""
        topic = self.cfg.kafka.topic
        self.version, self.events = version, lineage.events
        self.offsets = {int(p): int(o) for p, o in lineage.offsets.get(topic, {}).items()}
        self.rejected = int(lineage.metrics.get("rejected", 0))
        self.join_counts = lineage_counts(lineage.metrics)

    def snapshot(self) -> dict:
        """What Flink state must hold (with :meth:`pending`) to resume exactly here."""
        return {
            "version": self.version,
            "events": self.events,
            "offsets": {str(p): o for p, o in self.offsets.items()},
            "learner_metrics": self.learner_metrics,
            "learner_counts": self.learner_counts,
            "learner_warmup": self.learner_warmup,
            "learner_starts": self.learner_starts,
            "rejected": self.rejected,
            "join": dict(self.join_counts),
            "learners": sorted(self.learners),
        }

    def pending(self) -> list[bytes]:
        """Deltas folded in but not yet committed."""
        return list(self._pending_blobs)

    def held(self) -> list[bytes]:
        """Deltas received but not folded in yet: each waits for an earlier bundle of its
        partition (see :meth:`add`). A caller keeping :meth:`pending` in state keeps these
        too; :meth:`start` sorts them out again."""
        return [blob for waiting in self._held.values() for _, blob in waiting]

    # -- merging ----------------------------------------------------------------
    def add(self, blob: bytes) -> None:
        """Fold a learner's delta in, in its partition's order.

        A delta of one bundle (``extra["bundle"]``: partition, after, end; see
        :meth:`LearnerWorker.learn_bundle`) is folded in once the merged offsets of its
        partition reach ``after``, the end of the bundle before it (``-1``: the
        encoder's first since it started, which follows the offsets restored or
        started from), and advances them to its ``end``. One that comes earlier (the
        learners are dealt a partition's bundles, ``job.balance = "bundles"``,
        and one finished before another) waits for it. So a version's offsets always
        mean "every record below them, and none after": what a restored job skips and
        re-reads by. A bundle a learner skipped (it was in the adopted version already)
        sends no delta; the one after it has an ``after`` at or below the adopted
        offsets and is folded at once. A delta without a span (learned in-process from
        messages) advances the offsets to the learner's own, as it says.
        """
        from streamlearn.merge import ModelDelta

        delta = ModelDelta.from_bytes(blob)
        span = (delta.extra or {}).get("bundle")
        if span is None:
            self._fold(blob, delta)
            return
        partition, after = int(span[0]), int(span[1])
        waiting = self._held.get(partition)
        if not _follows(self.offsets, partition, after):
            waiting = self._held.setdefault(partition, [])
            waiting.append((after, blob))
            if len(waiting) % 1000 == 0:
                log.warning(
                    "the merger holds %d deltas of partition %d waiting for the bundle that "
                    "ends at offset %d (folded up to %s)", len(waiting), partition,
                    min(a for a, _ in waiting), self.offsets.get(partition),
                )
            return
        self._fold(blob, delta)
        if waiting:  # those that waited for this one, and for each other, in order
            waiting.sort(key=lambda held: held[0])
        while waiting:
            if not _follows(self.offsets, partition, waiting[0][0]):
                break
            held_blob = waiting.pop(0)[1]
            self._fold(held_blob, ModelDelta.from_bytes(held_blob))
        if waiting is not None and not waiting:
            del self._held[partition]

    def _fold(self, blob: bytes, delta: Any) -> None:
        t0 = time.perf_counter()
        self.merger.add(delta)
        self.merge_time_s += time.perf_counter() - t0
        extra = delta.extra or {}
        self.events += delta.n_events
        for p, o in _delta_offsets(delta).items():
            _advance(self.offsets, p, o)
        self.rejected += int(extra.get("n_rejected", 0))
        for name, n in (extra.get("join") or {}).items():
            self.join_counts[name] = self.join_counts.get(name, 0) + int(n)
        self._count(delta)
        self._pending_blobs.append(blob)
        self._dirty = True

    def _count(self, delta: Any) -> None:
        """The learner's running totals and metrics a delta carries."""
        extra = delta.extra or {}
        who = delta.learner_id
        self.learners.add(who)
        if extra.get("metrics"):
            self.learner_metrics[who] = extra["metrics"]
            self.learner_counts[who] = int(extra.get("n_learned_total", 0))
            self.learner_warmup[who] = int(extra.get("n_warmup_total", 0))
            if "started_on" in extra:
                self.learner_starts[who] = int(extra["started_on"])

    def metrics(self) -> dict[str, float]:
        """Prequential metrics over all learners, weighted by the events each learned."""
        total = sum(self.learner_counts.values())
        if not total:
            return {}
        names = {n for m in self.learner_metrics.values() for n in m}
        return {
            name: sum(
                self.learner_metrics[w].get(name, 0.0) * self.learner_counts.get(w, 0)
                for w in self.learner_metrics
            )
            / total
            for name in sorted(names)
        }

    def due(self, now_s: float | None = None) -> bool:
        now = time.monotonic() if now_s is None else now_s
        return self._dirty and (now - self.last_commit_s) * 1000 >= self.cfg.job.sync_ms

    def commit(self) -> int | None:
        """Commit the merged model as a new version; ``None`` when nothing changed."""
        from streamlearn.store import Lineage

        if not self._dirty:
            return None
        lineage = Lineage(
            offsets={self.cfg.kafka.topic: dict(sorted(self.offsets.items()))},
            events=self.events,
            parents=(self.version,) if self.version else (),
            learners=tuple(sorted(self.learners)),
            metrics={**self.metrics(), "rejected": float(self.rejected),
                     **self._join_metrics(), **self._load_metrics()},
        )
        self.version = self._commit_waiting(lineage)
        self.merger.commit(self.version)
        self._pending_blobs = []
        self._dirty = False
        self.last_commit_s = time.monotonic()
        self._warn_unbalanced()
        self._since_retain += 1
        if (
            self.cfg.store.keep_versions
            and self._since_retain >= RETAIN_EVERY
            and time.monotonic() >= self._next_retain_s
        ):
            self.retain()
        return self.version

    def _warn_unbalanced(self) -> None:
        """Say once, when the learners learn the partitions their sources read and one has
        learned :data:`UNBALANCED` times their mean (a hot partition: it sets the job's pace
        when each learner has a core), how to deal bundles in turn instead."""
        counts, p = self._loads(), self.cfg.job.parallelism
        if (self._warned_unbalanced or self.cfg.job.balance != "partitions" or p < 2
                or len(counts) < p):
            return
        total = sum(counts.values())
        if total < 20 * p * self.cfg.job.flush_events:
            return
        who, most = max(counts.items(), key=lambda item: item[1])
        if most >= UNBALANCED * total / len(counts):
            self._warned_unbalanced = True
            log.warning(
                "%s has learned %.1f times the learners' mean (%d of %d events): the partitions "
                "its Kafka source reads hold more than their share (hot keys), and it sets the "
                "job's pace when each learner has a core; job.balance = \"bundles\" deals "
                "bundles to the learners in turn (docs/performance.md#hot-keys-uniform-against-"
                "zipf-distributed-keys)", who, most / (total / len(counts)), most, total,
            )

    def _loads(self) -> dict[str, int]:
        """Each learner's load: the events it learned since it (re)started, as its latest
        delta says, outside the warm-up (which learner 0 learns for all)."""
        return {who: n - self.learner_warmup.get(who, 0) for who, n in self.learner_counts.items()}

    def _load_metrics(self) -> dict[str, float]:
        """Each learner's load (``learned.<learner>``), so hot keys show in every version,
        and the events of the version it started from (``started_on.<learner>``)."""
        return {
            **{f"{LOAD_PREFIX}{who}": float(n) for who, n in sorted(self._loads().items())},
            **{f"{START_PREFIX}{who}": float(n) for who, n in sorted(self.learner_starts.items())},
        }

    def _join_metrics(self) -> dict[str, float]:
        """Every join outcome the version reflects, as lineage metrics, when the job joins."""
        if not self.cfg.join.on:
            return {}
        return lineage_metrics(self.join_counts)

    def retain(self) -> list[int]:
        """Delete stored versions but the newest ``store.keep_versions`` and the pinned one.

        A store fault here is logged, not raised: retention waits for the next pass,
        the versions themselves are safe.
        """
        self._since_retain = 0
        started = time.monotonic()
        try:
            return self.store.retain(self.cfg.store.keep_versions, keep_pinned=True)
        except STORE_FAULTS as exc:
            log.warning("retention skipped, the model store failed: %s", store_fault(exc))
            return []
        finally:
            now = time.monotonic()
            self._next_retain_s = now + RETAIN_SPACING * (now - started)


    def _snapshot_reason(self) -> str | None:
        """Why the next version must be a snapshot, or ``None`` for a delta."""
        if self._delta_base is None:
            return self._whole_why
        if self.policy is None:
            return "store.snapshot_every_deltas = 0"
        changed, n_slots = len(self.merger.changed_slots()), self.merger.n_slots
        if 2 * changed >= n_slots:
            return f"{changed} of the model's {n_slots} slots changed: a delta would be as big"
        return self.merger.whole_reason()

    def _compact(self, delta_version: int, why: str) -> int:
        """Write delta version ``delta_version`` whole as well, as a compaction
        (``ModelStore.compact``): the snapshot the policy asked for, which
        followers holding the delta pass over instead of reading the model again.
        Returns the compaction's number, or the delta's if the store failed (logged;
        the policy asks again at the next commit)."""
        from streamlearn.store import BrokenChain

        try:
            version = self.store.compact(lease=self.lease)
        except LeaseError:
            raise
        except BrokenChain as exc:  # a file under the chain is damaged: start a new one
            self._delta_base = None
            self._whole_why = f"the chain under version {delta_version} is broken"
            log.warning(
                "version %d committed, its compaction failed (%s); the next version is a "
                "snapshot", delta_version, store_fault(exc),
            )
            return delta_version
        except STORE_FAULTS as exc:
            log.warning(
                "version %d committed, its compaction failed (%s); trying again at the next "
                "commit", delta_version, store_fault(exc),
            )
            return delta_version
        finally:
            _forget_cache(self.store)
        self.last_kind, self.last_snapshot_reason = "compact", why
        self._delta_base = version
        return version

    def _commit_once(self, lineage: Any) -> int:
        """One try: a delta on the last version, or a snapshot when one is due.

        A snapshot the policy asks for (``store.snapshot_*``) is a compaction
        of the delta just committed: the same model, which followers pass over.
        The other snapshots (:meth:`_snapshot_reason`) change the chain's
        content and are written from the merger's arrays.

        A delta the store refuses (its parent is not the latest version, or the
        chain under it is broken) is committed as a snapshot at once; any other
        failure of a delta makes the next try a snapshot, which starts a whole
        chain again whatever the failure left behind.
        """
        from streamlearn.store import BrokenChain, StaleParent

        why = self._snapshot_reason()
        if why is None:
            assert self._delta_base is not None
            due = self.policy.due(self.store.chain()) if self.policy is not None else None
            try:
                version = self.store.commit_delta(
                    self.merger.changes(), lineage, parent=self._delta_base, lease=self.lease
                )
            except (StaleParent, BrokenChain) as exc:
                why = f"a delta on version {self._delta_base} was refused: {store_fault(exc)}"
                self._delta_base, self._whole_why = None, why
                log.warning("%s; committing a snapshot instead", why)
            except BaseException as exc:
                self._delta_base = None
                self._whole_why = f"committing a delta failed: {store_fault(exc)}"
                raise
            else:
                self.last_kind, self.last_snapshot_reason = "delta", None
                self._delta_base = version
                return version if due is None else self._compact(version, due)
        from_initial = None
        if self._initial is not None and self.merger.whole_reason() is None:
            changes = self.merger.changes()
            if 2 * len(changes.slots) < self.merger.n_slots:
                from_initial = (self._initial, changes)
        version = self.store.commit(
            self.merger.view().to_arrow(), lineage, lease=self.lease, from_initial=from_initial
        )
        self._initial = None
        self.last_kind, self.last_snapshot_reason = "snapshot", why
        self._delta_base = version
        return version

    def _commit_waiting(self, lineage: Any) -> int:
        """:meth:`_commit_once`, retried in place while the store is away (a full disk,
        an object store not answering) for up to ``job.store_retry_ms``, with the
        job's restart back-off between tries and one log line per wait.

        Past that the fault propagates: Flink restarts the job from its last
        checkpoint after its own back-off (``job.restart_*``), and the merger tries
        again then. Waiting here blocks the merger's task (and so checkpoints and,
        by back-pressure, the source), never anything that was counted.
        """
        job = self.cfg.job
        started = time.monotonic()
        deadline = started + job.store_retry_ms / 1000
        wait = job.restart_initial_ms / 1000
        failed = 0
        while True:
            try:
                version = self._commit_once(lineage)
            except LeaseError:
                raise  # fenced or released: another writer owns the model; never waited out
            except STORE_FAULTS as exc:
                if not _passing(exc):
                    raise
                failed += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "model store unavailable (%s); giving up after %.1f s, the job restarts "
                        "from its last checkpoint",
                        store_fault(exc), time.monotonic() - started,
                    )
                    raise
                pause = min(wait, left)
                log.warning(
                    "model store unavailable (%s); retrying in %.1f s", store_fault(exc), pause
                )
                time.sleep(pause)
                wait = min(wait * job.restart_multiplier, job.restart_max_ms / 1000)
                continue
            if failed:
                log.warning(
                    "model store available again: committed version %d after %d failed tries "
                    "in %.1f s",
                    version, failed, time.monotonic() - started,
                )
            return version


def resume_point(cfg: TrainConfig, store: Any) -> tuple[int, dict[int, int] | None]:
    """Where a job started without a checkpoint begins: ``(base_version, offsets)``.

    A model with versions continues from its newest one and from the Kafka
    offsets that version's lineage records, so no event is learned twice; a
    new model starts from version 0 at ``kafka.start``. It reads the version's
    record, not its weights (the merger loads those when it starts): what the
    job's submission costs does not grow with the model. A version whose file
    is gone is refused here, in the store's words.
    """
    latest = store.head().latest
    if latest is None:
        return 0, None
    info = store.info(latest)
    if info.available is False:
        store.get(latest)  # raises the store's error naming what is missing
    offsets = info.lineage.offsets.get(cfg.kafka.topic) or {}
    return latest, {int(p): int(o) for p, o in offsets.items()}
