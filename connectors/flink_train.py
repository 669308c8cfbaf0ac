"""PyFlink pieces of the training job: the JVM encoder's wiring and thin
adapters of :mod:`streamlearn.training.workers`.

They live in an importable module (not in the job file) so Flink ships them by
reference to the Python workers, which import them from the installed project.
The merger's adapter maps Flink's keyed state and timers onto the worker's
small, explicit state (see ``flink_jobs/train.py`` for the graph).
"""

from __future__ import annotations

import json
import time
from typing import Any

from pyflink.common import Types
from pyflink.datastream import FlatMapFunction, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from streamlearn.training.config import TrainConfig

__all__ = [
    "DELTA_TYPE", "BundleLearner", "KafkaRange", "MergeOperator", "encode_bundles", "route_bundles",
    "routes_bundles",
]

#: How a learner's delta (``ModelDelta.to_bytes()``) travels to the merger: raw
#: bytes, which thread mode hands to the JVM in one copy and Flink serialises
#: in one piece (a string goes character by character).
DELTA_TYPE = Types.PRIMITIVE_ARRAY(Types.BYTE())


def _as_state_text(blob: bytes) -> str:
    """``blob`` as the text PyFlink's state keeps whole: one character per byte
    (Latin-1). A byte-array state would cross into the JVM byte by byte, as a
    tuple of ints; base64 would cost ~1 ms a delta each way.

    >>> _from_state_text(_as_state_text(bytes(range(256)))) == bytes(range(256))
    True
    """
    return blob.decode("latin-1")


def _from_state_text(text: str) -> bytes:
    return text.encode("latin-1")


#: The watermark a bounded source sends when it ends (Long.MAX_VALUE).
END_OF_INPUT = 2**63 - 1


def _arm_end_of_input(ctx) -> None:
    """An event-time timer that fires only when a bounded source ends.

    The job assigns no watermarks, so event time stays at its minimum until a
    bounded source finishes and sends the final watermark. The timer's time is
    "now" (not a far-future sentinel) because it stamps what the timer emits,
    and Kafka refuses record timestamps far in the future.
    """
    ctx.timer_service().register_event_time_timer(ctx.timer_service().current_processing_time())


def encode_bundles(rows, cfg: TrainConfig):
    """Chain ``io.streamlearn.flink.EncodeBundler`` to the Kafka source's ``rows``.

    Returns ``(bundles, dead_letters)``: a stream of bundle rows (partition,
    first offset, end offset, messages, rejected, batch bytes, the join's outcomes, the end
    offset of the partition's previous bundle or -1, the learner it goes to or -1 for
    dealt, whether it is one of the warm-up's, where the warm-up of its
    subtask ended in each partition as ``"p:end,..."`` or ""), one per
    partition every ``job.flush_events`` events or ``job.flush_ms``; and the
    dead-letter records (JSON text, bounded: see ``streamlearn.events.dead_letter``)
    the encoder wrote for rejected events. Both stay in the JVM until a bundle
    reaches the Python learner. A dead-letter topic too small for a bounded record
    is refused first (:func:`~connectors.flink_kafka.check_dead_letter_topic`).
    """
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import load_java_class

    from connectors.flink_kafka import check_dead_letter_topic

    check_dead_letter_topic(cfg.kafka.bootstrap, cfg.kafka.dlq_topic)
    gateway = get_gateway()
    cls = load_java_class("io.streamlearn.flink.EncodeBundler")
    # the JVM reads the configuration the Python operators read: TrainConfig.to_dict()
    operator = cls.getConstructors()[0].newInstance(
        object_array(gateway, [json.dumps(cfg.to_dict())])
    )
    j_type = cls.getField("TYPE").get(None)
    j_bundles = rows._j_data_stream.transform("encode", j_type, operator)
    j_dlq = j_bundles.getSideOutput(cls.getField("DLQ").get(None))
    return DataStream(j_bundles), DataStream(j_dlq)


def routes_bundles(cfg: TrainConfig) -> bool:
    """Whether bundles leave the source subtask that read them (:func:`route_bundles`)."""
    return cfg.job.parallelism > 1 and (cfg.job.balance == "bundles" or cfg.job.warmup_events > 0)


def route_bundles(bundles):
    """``bundles`` sent to the learner the encoder's row names
    (``io.streamlearn.flink.DealBundles``): learner 0 for the warm-up's
    (``job.warmup_events``), the one of their source subtask under ``job.balance =
    "partitions"``, else each Kafka partition's next to the learner dealt the fewest bytes of
    it so far (Flink's ``rebalance`` would alias with the order the encoder emits them in)."""
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import load_java_class

    cls = load_java_class("io.streamlearn.flink.DealBundles")
    dealer = cls.getConstructors()[0].newInstance(object_array(get_gateway(), []))
    return DataStream(bundles._j_data_stream.partitionCustom(dealer, dealer))


def object_array(gateway: Any, items: list[Any]) -> Any:
    """A Java ``Object[]`` of ``items`` (the arguments of a reflective constructor call)."""
    out = gateway.new_array(gateway.jvm.Object, len(items))
    for i, item in enumerate(items):
        out[i] = item
    return out


def _subtask_index(ctx: RuntimeContext) -> int:
    """This subtask's index. (PyFlink's thread-mode context still asks Flink 1.x's
    ``getIndexOfThisSubtask``, which Flink 2 moved to ``getTaskInfo()``.)"""
    try:
        return ctx.get_index_of_this_subtask()
    except AttributeError:
        return ctx._runtime_context.getTaskInfo().getIndexOfThisSubtask()


def _store(cfg: TrainConfig):
    from streamlearn.store import ModelStore

    return ModelStore(cfg.store.uri, cfg.store.model)


class KafkaRange:
    """Reads a partition's messages in an offset range again, for a learner whose
    bundle straddles the offsets of the version it started on
    (:meth:`~streamlearn.training.workers.LearnerWorker.learn_bundle`): once per
    partition after a restore. One consumer serves a learner's partitions (its
    start, ~0.2 s, is paid once) and is closed with :meth:`close`."""

    def __init__(self, cfg: TrainConfig, timeout_s: float = 60.0) -> None:
        self.bootstrap, self.topic, self.timeout_s = cfg.kafka.bootstrap, cfg.kafka.topic, timeout_s
        # as the job's source reads: only committed records when the join writes the topic
        self.isolation = "read_committed" if cfg.join.on else "read_uncommitted"
        self.consumer = None

    def __call__(self, partition: int, start: int, end: int):
        from kafka import KafkaConsumer, TopicPartition

        if self.consumer is None:
            self.consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_wait_ms=50,
                isolation_level=self.isolation,
            )
        consumer, tp = self.consumer, TopicPartition(self.topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + self.timeout_s
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading partition {partition} of {self.topic!r} from {start} to {end}: "
                    f"at {consumer.position(tp)} after {self.timeout_s:.0f} s"
                )
            for msg in consumer.poll(timeout_ms=500).get(tp, []):
                if msg.offset < end:
                    yield msg.offset, msg.value, _join_header(msg.headers)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


def _join_header(headers) -> str | None:
    """The value of a Kafka record's header :data:`streamlearn.joining.HEADER` (the join's
    outcome), or ``None``.

    >>> _join_header([("streamlearn.join", b"late")]), _join_header([])
    ('late', None)
    """
    from streamlearn.joining import HEADER

    for key, value in headers or ():
        if key == HEADER:
            return value.decode("utf-8", "replace") if value is not None else None
    return None


class BundleLearner(FlatMapFunction):
    """One parallel learner fed by :func:`encode_bundles`: learns each bundle at
    once (:meth:`~streamlearn.training.workers.LearnerWorker.learn_bundle`) and
    emits its delta. It buffers nothing, so it keeps no Flink state: a bundle
    before a checkpoint barrier is learned and handed to the merger before the
    barrier passes. It runs chained to the source, one per source subtask: the
    Kafka partitions a subtask reads are the keys its learner owns (unless the job
    deals bundles or warms up: :func:`route_bundles`).
    """

    def __init__(self, cfg_json: str) -> None:
        self.cfg_json = cfg_json

    def open(self, ctx: RuntimeContext) -> None:
        self.cfg = TrainConfig.from_dict(json.loads(self.cfg_json))
        self.store = _store(self.cfg)
        self.index = _subtask_index(ctx)
        self.worker = None
        self.fetch = KafkaRange(self.cfg)
        group = ctx.get_metrics_group()
        self.m_events = group.counter("eventsLearned")
        self.m_rejected = group.counter("eventsRejected")
        self.m_messages = group.counter("messagesIn")
        self.m_bundles = group.counter("bundlesIn")

    def flat_map(self, row):
        worker = self.worker
        if worker is None:
            from streamlearn.training.workers import LearnerWorker

            if row[10]:  # where its subtask's warm-up ended ("" without one, and on its bundles)
                # start from the model that learned it (streamlearn.training.warmup)
                from streamlearn.training.warmup import await_merged, warmed_ends

                await_merged(self.store, self.cfg.kafka.topic, warmed_ends(row[10]),
                             f"learner-{self.index}")
            worker = self.worker = LearnerWorker(
                self.cfg, self.index, self.store, fetch=self.fetch
            )
        n_before = worker.n_learned
        partition, first_offset, end_offset = row[0], row[1], row[2]
        messages, rejected = row[3], row[4]
        outcomes = json.loads(row[6]) if row[6] else None  # the join's, counted by the encoder
        delta = worker.learn_bundle(partition, end_offset, rejected, row[5], first_offset,
                                    outcomes, after=row[7], warmup=row[9])
        self.m_bundles.inc()
        self.m_messages.inc(messages)
        self.m_rejected.inc(rejected)
        self.m_events.inc(worker.n_learned - n_before)
        if self.fetch.consumer is not None and not worker.skip_below:
            self.fetch.close()  # every partition is past what it might read again
        if delta is not None:  # None: the bundle is in the merged model already
            yield delta.to_bytes()

    def close(self) -> None:
        self.fetch.close()


class MergeOperator(KeyedProcessFunction):
    """Adapts :class:`~streamlearn.training.workers.MergerWorker` to Flink state and timers."""

    def __init__(self, cfg_json: str, base_version: int) -> None:
        self.cfg_json = cfg_json
        self.base_version = base_version

    def open(self, ctx: RuntimeContext) -> None:
        self.cfg = TrainConfig.from_dict(json.loads(self.cfg_json))
        self.store = _store(self.cfg)
        # the model's one writer: the same id at every restart of this job (it is in the
        # job's configuration), so a restart takes the lease over from its own last run;
        # another writer's live lease refuses it (WriterBusy), and a writer that took over
        # fences this one out (WriterFenced at the next commit), never waited out
        self.lease = self.store.acquire_writer(self.cfg.job.writer_id, self.cfg.job.lease_ms)
        self.lease.keep_alive()
        self.snap = ctx.get_state(ValueStateDescriptor("merger", Types.STRING()))
        self.unpublished = ctx.get_list_state(ListStateDescriptor("unpublished", Types.STRING()))
        self.worker = None
        self.timer_armed = False
        group = ctx.get_metrics_group()
        # counters, not gauges: a Python gauge is called by Flink's metrics thread (a
        # reporter, the REST API), which in thread mode enters the interpreter from outside
        # the task and crashed the TaskManager (SIGSEGV in pemja), also after a cancel.
        # A counter's count is pushed from the task: publishedVersion counts up to the
        # newest version, mergeTimeMs is the merge time so far, as the gauges read.
        self.m_version, self.m_merge_ms = group.counter("publishedVersion"), group.counter(
            "mergeTimeMs"
        )
        self.m_deltas = group.counter("deltasMerged")

    def _ensure(self, ctx):
        if self.worker is None:
            from streamlearn.training.workers import MergerWorker

            self.worker = MergerWorker(self.cfg, self.store, lease=self.lease)
            snap = self.snap.value()
            pending = [_from_state_text(t) for t in (self.unpublished.get() or [])]
            self.worker.start(json.loads(snap) if snap else None, pending, self.base_version)
            if not self.worker.pending():  # nothing folded in: its snapshot is the whole state
                # (it began from, or adopted, a newer version than the state says)
                self.snap.update(json.dumps(self.worker.snapshot()))
                self._keep_held()
            _arm_end_of_input(ctx)
        return self.worker

    def process_element(self, blob, ctx: KeyedProcessFunction.Context):
        worker = self._ensure(ctx)
        worker.add(blob)
        self.unpublished.add(_as_state_text(blob))
        self.m_deltas.inc()
        if worker.due():
            yield from self._commit(worker)
        elif not self.timer_armed:
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now + self.cfg.job.sync_ms)
            self.timer_armed = True

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        self.timer_armed = False
        yield from self._commit(self._ensure(ctx))
        if ctx.timer_service().current_watermark() >= END_OF_INPUT:
            # a bounded source ended and the last version is out: the writer stops cleanly
            self.lease.release()

    def _keep_held(self) -> None:
        """The state's deltas since the snapshot: those still waiting for an earlier bundle
        of their partition (:meth:`~streamlearn.training.workers.MergerWorker.held`)."""
        self.unpublished.clear()
        for blob in self.worker.held():
            self.unpublished.add(_as_state_text(blob))

    def _commit(self, worker):
        version = worker.commit()
        self.snap.update(json.dumps(worker.snapshot()))
        self._keep_held()
        if version is not None:
            self.m_version.inc(version - self.m_version.get_count())
            self.m_merge_ms.inc(int(worker.merge_time_s * 1000) - self.m_merge_ms.get_count())
            yield json.dumps(
                {
                    "version": version,
                    "events": worker.events,
                    "offsets": worker.offsets,
                    "published_at_ms": int(time.time() * 1000),
                }
            )
