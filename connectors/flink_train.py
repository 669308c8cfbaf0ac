"""PyFlink functions of the training job: thin adapters of :mod:`streamlearn.training.workers`.

They live in an importable module (not in the job file) so Flink ships them by
reference to the Python workers, which import them from the installed project.
Each adapter maps Flink's keyed state and timers onto a worker's small,
explicit state (see ``flink_jobs/train.py`` for the graph).
"""

from __future__ import annotations

import base64
import json
import time

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from streamlearn.training.config import TrainConfig

__all__ = ["Learner", "Merger", "DLQ", "BYTES"]

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())
PENDING_TYPE = Types.ROW([Types.INT(), Types.LONG(), BYTES])
DLQ = OutputTag("dlq", Types.STRING())


def _arm_end_of_input(ctx) -> None:
    """An event-time timer that fires only when a bounded source ends.

    The job assigns no watermarks, so event time stays at its minimum until a
    bounded source finishes and sends the final watermark. The timer's time is
    "now" (not a far-future sentinel) because it stamps what the timer emits,
    and Kafka refuses record timestamps far in the future.
    """
    ctx.timer_service().register_event_time_timer(ctx.timer_service().current_processing_time())


def _store(cfg: TrainConfig):
    from streamlearn.store import ModelStore

    return ModelStore(cfg.store.uri, cfg.store.model)


class Learner(KeyedProcessFunction):
    """Adapts :class:`~streamlearn.training.workers.LearnerWorker` to Flink state and timers."""

    def __init__(self, cfg_json: str, keys: list[int]) -> None:
        self.cfg_json = cfg_json
        self.keys = keys

    def open(self, ctx: RuntimeContext) -> None:
        self.cfg = TrainConfig.from_dict(json.loads(self.cfg_json))
        self.store = _store(self.cfg)
        self.pending = ctx.get_list_state(ListStateDescriptor("pending", PENDING_TYPE))
        self.armed: set[int] = set()  # keys whose end-of-input timer is set (in memory: no
        # per-record state read; after a restore a second timer is harmless)
        self.workers: dict[int, object] = {}
        group = ctx.get_metrics_group()
        self.m_events = group.counter("eventsLearned")
        self.m_rejected = group.counter("eventsRejected")
        self.m_messages = group.counter("messagesIn")

    def _worker(self, key: int, ctx):
        worker = self.workers.get(key)
        if worker is None:
            from streamlearn.training.workers import LearnerWorker, PendingMessage

            worker = LearnerWorker(self.cfg, self.keys.index(key), self.store)
            restored = [PendingMessage(r[0], r[1], bytes(r[2])) for r in self.pending.get() or []]
            worker.restore(restored)
            self.workers[key] = worker
        if key not in self.armed:
            # once per key: the flush at the end of a bounded input
            _arm_end_of_input(ctx)
            self.armed.add(key)
        return worker

    def process_element(self, row, ctx: KeyedProcessFunction.Context):
        key = ctx.get_current_key()
        worker = self._worker(key, ctx)
        partition, offset, value = row[0], row[1], bytes(row[4])
        first = worker.buffered == 0 and not worker.pending()
        self.m_messages.inc()
        from streamlearn.training.workers import dlq_record

        for rejected in worker.add(partition, offset, value):
            self.m_rejected.inc()
            yield DLQ, dlq_record(self.cfg.kafka.topic, partition, offset, rejected).decode()
        self.pending.add(Row(partition, offset, value))
        if worker.should_flush():
            yield from self._flush(worker)
        elif first:
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now + self.cfg.job.flush_ms)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        worker = self._worker(ctx.get_current_key(), ctx)
        yield from self._flush(worker)

    def _flush(self, worker):
        n_before = worker.n_learned
        delta = worker.flush()
        self.pending.clear()
        if delta is not None:
            self.m_events.inc(worker.n_learned - n_before)
            # as base64 text: thread mode hands a str across in one copy, bytes element-wise
            yield base64.b64encode(delta.to_bytes()).decode("ascii")


class Merger(KeyedProcessFunction):
    """Adapts :class:`~streamlearn.training.workers.MergerWorker` to Flink state and timers."""

    def __init__(self, cfg_json: str, base_version: int) -> None:
        self.cfg_json = cfg_json
        self.base_version = base_version

    def open(self, ctx: RuntimeContext) -> None:
        self.cfg = TrainConfig.from_dict(json.loads(self.cfg_json))
        self.store = _store(self.cfg)
        self.snap = ctx.get_state(ValueStateDescriptor("merger", Types.STRING()))
        self.unpublished = ctx.get_list_state(ListStateDescriptor("unpublished", Types.STRING()))
        self.worker = None
        self.timer_armed = False
        group = ctx.get_metrics_group()
        self.m_version = 0
        group.gauge("publishedVersion", lambda: int(self.m_version))
        self.m_merge_ms = 0
        group.gauge("mergeTimeMs", lambda: int(self.m_merge_ms))
        self.m_deltas = group.counter("deltasMerged")

    def _ensure(self, ctx):
        if self.worker is None:
            from streamlearn.training.workers import MergerWorker

            self.worker = MergerWorker(self.cfg, self.store)
            snap = self.snap.value()
            pending = [base64.b64decode(t) for t in (self.unpublished.get() or [])]
            self.worker.start(json.loads(snap) if snap else None, pending, self.base_version)
            _arm_end_of_input(ctx)
        return self.worker

    def process_element(self, text, ctx: KeyedProcessFunction.Context):
        worker = self._ensure(ctx)
        blob = base64.b64decode(text)
        worker.add(blob)
        self.unpublished.add(text)
        self.m_deltas.inc()
        if worker.due():
            yield from self._publish(worker)
        elif not self.timer_armed:
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now + self.cfg.job.sync_ms)
            self.timer_armed = True

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        self.timer_armed = False
        yield from self._publish(self._ensure(ctx))

    def _publish(self, worker):
        version = worker.publish()
        self.snap.update(json.dumps(worker.snapshot()))
        self.unpublished.clear()
        if version is not None:
            self.m_version = version
            self.m_merge_ms = worker.merge_time_s * 1000
            yield json.dumps(
                {
                    "version": version,
                    "events": worker.events,
                    "offsets": worker.offsets,
                    "published_at_ms": int(time.time() * 1000),
                }
            )
