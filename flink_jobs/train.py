"""The training job: Kafka → validated events → P parallel learners → one merger → model store.

::

    [join: impressions + labels → Join (JVM, keyed by id) ──► <topic>, exactly once]
    KafkaSource (partition, offset, value)
      → EncodeBundler (JVM, chained)     decode + validate + hash per Kafka partition
          ├─ bad events ──► <topic>.dlq
          └─ a CSR micro-batch every N events / T ms
      → BundleLearner × P (Python) → a ModelDelta per bundle
          job.balance = "partitions": chained, one per source subtask (the partitions it
            reads are its keys);  "bundles": each partition's shared by bytes (DealBundles),
            so a hot partition is learned by every learner;  job.warmup_events: each
            subtask's first share to learner 0, the others start from its model
      → key_by(0) → MergeOperator × 1 → ModelStore.commit(version, lineage) ──► <topic>.models
                    (folds each partition's bundles in offset order)

Flink state holds only what the workers cannot rebuild: the merger's version,
counts, offsets and deltas folded in but not yet committed. The encoder sends
its bundles downstream before every checkpoint barrier and learners learn
each bundle at once, so neither holds anything across a checkpoint. Working
models live in memory; after a restart they are rebuilt from the store's
versions, so every event is learned exactly once. A restored merger continues
from the newest version when it is newer than the checkpoint, and learners skip
the records it reflects: no version ever knows less than one before it. The logic lives in
:mod:`streamlearn.training` and ``jvm/src``; this file wires it.

Run in the local MiniCluster::

    python flink_jobs/train.py --config job.toml [--set job.parallelism=4 ...]

or on a standalone cluster (``streamlearn train --cluster HOST:PORT``).
"""

from __future__ import annotations

import json
import sys

from pyflink.common import Types, WatermarkStrategy

from connectors.flink_join import (
    READ_COMMITTED,
    add_join,
    check_fresh_start,
    ensure_joined_topic,
)
from connectors.flink_kafka import (
    dead_letter_sink,
    kafka_sink,
    kafka_source,
    record_with_offsets_type,
    stream_env,
)
from connectors.flink_train import (
    DELTA_TYPE,
    BundleLearner,
    MergeOperator,
    encode_bundles,
    route_bundles,
    routes_bundles,
)
from streamlearn.training.cli_args import config_from_args, job_arg_parser
from streamlearn.training.config import TrainConfig
from streamlearn.training.warmup import with_remaining_warmup

MAX_PARALLELISM = 128


def build(cfg: TrainConfig, recovery_path: str | None = None):
    """Wire the job graph for ``cfg``; returns the execution environment.

    Without a checkpoint to resume from, a model that already has versions
    continues from its newest one, reading Kafka from the offsets it reflects.
    """
    from connectors.kafka_io import describe_topic
    from streamlearn.store import ModelStore
    from streamlearn.training.checkpoints import checkpoint_uri
    from streamlearn.training.workers import resume_point

    base_version, start = 0, cfg.kafka.start
    if cfg.join.on:
        ensure_joined_topic(cfg)
        if not recovery_path:
            check_fresh_start(cfg)
    store = None if recovery_path else ModelStore(cfg.store.uri, cfg.store.model)
    if store is not None:
        base_version, offsets = resume_point(cfg, store)
        if offsets is not None:
            parts = describe_topic(cfg.kafka.bootstrap, cfg.kafka.topic).end_offsets
            start = {p: offsets.get(p, 0) for p in parts}
    # the warm-up still to learn: none once the newest version reflects it, nor when the job
    # resumes from a checkpoint (its encoder warms nothing up)
    cfg = with_remaining_warmup(cfg, store)

    config = {
        "python.execution-mode": cfg.job.execution_mode,
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
        "python.fn-execution.bundle.time": str(max(1, cfg.job.flush_ms // 2)),
        # a bundle or a delta waits in an output buffer at most this long (Flink's
        # default, 100 ms, was most of a version's freshness once versions got cheap)
        "execution.buffer-timeout.interval": f"{max(1, cfg.job.flush_ms // 5)} ms",
        # a passing fault (a lost TaskManager, the broker or the store away) is waited
        # out: exponential back-off between restarts from the last checkpoint, no small cap
        **cfg.restart_strategy(),
        # the user's own Flink settings ([flink], --flink-conf): a metrics reporter, memory...
        **cfg.flink,
    }
    if recovery_path:
        config["execution.state-recovery.path"] = recovery_path
    env = stream_env(
        parallelism=cfg.job.parallelism,
        checkpoint_ms=cfg.job.checkpoint_ms,
        checkpoint_dir=checkpoint_uri(cfg),
        config=config,
        log_name=f"train-{cfg.store.model}",
    )
    env.set_max_parallelism(MAX_PARALLELISM)
    cfg_json = json.dumps(cfg.to_dict())

    if cfg.join.on:  # delayed labels: the joined events are the training topic's (exactly once)
        add_join(env, cfg)
    source = kafka_source(
        cfg.kafka.bootstrap, cfg.kafka.topic, cfg.kafka.group, start=start,
        bounded=cfg.job.bounded, with_offsets=True,
        properties=READ_COMMITTED if cfg.join.on else None,
    )
    rows = env.from_source(
        source, WatermarkStrategy.no_watermarks(), "kafka-source",
        type_info=record_with_offsets_type(),
    ).uid("kafka-source")
    bundles, dead_letters = encode_bundles(rows, cfg)
    bundles.uid("encode").name("decode-validate-hash")
    dead_letters.sink_to(dead_letter_sink(cfg.kafka.bootstrap, cfg.kafka.dlq_topic)).name(
        "dead-letters"
    ).uid("dead-letters")
    if routes_bundles(cfg):
        bundles = route_bundles(bundles)
    deltas = (
        bundles.flat_map(BundleLearner(cfg_json), output_type=DELTA_TYPE)
        .name("learners").uid("learners")
    )
    versions = (
        deltas.key_by(lambda _: 0, key_type=Types.INT())
        .process(MergeOperator(cfg_json, base_version), output_type=Types.STRING())
        .set_parallelism(1).name("merger").uid("merger")
    )
    versions.sink_to(kafka_sink(cfg.kafka.bootstrap, cfg.models_topic)).set_parallelism(1).name(
        "versions"
    ).uid("versions")
    return env


def _end_with_parent() -> None:
    """Under ``streamlearn train`` (which runs this job in a session of its own, so that
    Ctrl-C reaches only the command): end the job's whole session if the command is gone,
    whatever ended it, rather than train on unseen."""
    import os
    import signal
    import threading
    import time

    parent = os.environ.get("STREAMLEARN_TRAIN_PARENT")
    if not parent or not parent.isdigit():
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    _end_with_parent()
    parser = job_arg_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    # one writer id per start, in the job's configuration: every restart is the same writer
    cfg = config_from_args(args).with_writer()
    from streamlearn.store import ModelStore
    from streamlearn.training.checkpoints import prune_runs, resolve_recovery
    from streamlearn.training.writer import HandOver

    # the model's writer lease, held from before the job reads where to resume until the
    # merger takes it over (WriterBusy, naming the other writer, if the model has one)
    HandOver(
        ModelStore(cfg.store.uri, cfg.store.model), cfg.job.writer_id, cfg.job.lease_ms
    ).keep_alive()
    recovery = resolve_recovery(cfg, args.resume)
    if recovery:
        print(f"resuming from checkpoint {recovery}", file=sys.stderr, flush=True)
    prune_runs(cfg, recovery)  # bounded disk: earlier runs' checkpoints, the newest kept
    build(cfg, recovery).execute(f"streamlearn-train-{cfg.store.model}")
    return 0


if __name__ == "__main__":
    from streamlearn.errors import StreamlearnError

    try:
        sys.exit(main())
    except StreamlearnError as exc:  # a refusal before the job starts: one line, no trace
        print(f"train: {exc}", file=sys.stderr)
        sys.exit(1)
