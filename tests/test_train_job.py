"""The training job end to end: real broker, real PyFlink job, real model store."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from connectors.kafka_io import consume_all, create_topics, describe_topic
from streamlearn.events import EventDecoder
from streamlearn.features import FeatureHasher
from streamlearn.generators import clicks
from streamlearn.publish import Publisher
from streamlearn.state import ModelState
from streamlearn.store import ModelStore
from streamlearn.training.checkpoints import KEEP_RUNS
from streamlearn.training.config import TrainConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "flink_jobs" / "train.py"
PARTITIONS = 4

# malformed messages of many kinds, each with the field its rejection must name
BAD = [
    (b'{"features": {"x": 1.0}, "label": 1', "message"),  # broken JSON
    (b'{"features": {"x": 1.0}}', "label"),  # no label
    (b'{"features": {"x": 1.0}, "label": "yes"}', "label"),  # wrong label
    (b'{"features": {"x": [1, 2]}, "label": 1}', "features.x"),  # list of numbers
    (b'{"features": {}, "label": 0}', "features"),  # empty
    (b'{"features": "x=1", "label": 0}', "features"),  # not an object
    (b'{"features": {"x": {"y": 1}}, "label": 1}', "features.x"),  # nested object
    (b'{"features": {"x": 1.0}, "label": 1, "colour": "red"}', "colour"),  # unknown field
    (b'{"features": {"x": 1.0}, "label": 1, "ts": -5}', "ts"),  # negative time
    (b"\xff\xfe not utf-8", "message"),  # not text
    (b"[1, 2, 3]", "event"),  # not an object
    (b'{"features": {"x": 1e999}, "label": 1}', "message"),  # infinity
]


def _config(tmp_path: Path, bootstrap: str, topic: str, **job) -> list[str]:
    args = [
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--store",
        str(tmp_path / "models"),
        "--model",
        "clicks",
        "--set",
        f"job.checkpoint_dir={json.dumps(str(tmp_path / 'checkpoints'))}",
        "--set",
        "features.bits=18",
        "--set",
        "model.learning_rate=0.05",
    ]
    if job.get("bounded"):  # a bounded run that breaks fails within seconds, not retries on
        job = {"restart_attempts": 2, "restart_max_ms": 2000, **job}
    for key, value in job.items():
        args += ["--set", f"job.{key}={json.dumps(value)}"]
    return args


def _run_job(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(JOB), *args], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _publish_plain(bootstrap: str, topic: str, events: list[dict], bad_every: int = 0) -> int:
    """Publish with a plain kafka-python producer (any standard client), one event per message,
    keyed by the event key; every ``bad_every``-th message is replaced by a malformed one."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    bad = 0
    for i, event in enumerate(events):
        if bad_every and i % bad_every == bad_every - 1:
            producer.send(topic, BAD[bad % len(BAD)][0], key=event["key"].encode())
            bad += 1
        producer.send(topic, orjson.dumps(event), key=event["key"].encode())
    producer.flush()
    producer.close()
    return bad


def _held_out_accuracy(state: ModelState, events: list[dict]) -> float:
    from streamlearn.learners import learner_from_state

    model = learner_from_state(state)
    preds = model.predict_many([e["features"] for e in events])
    return float(np.mean([int(p) == e["label"] for p, e in zip(preds, events, strict=True)]))


def _sequential(cfg: TrainConfig, events: list[dict]) -> ModelState:
    model = cfg.make_learner()
    for i in range(0, len(events), 1000):
        chunk = events[i : i + 1000]
        model.learn_many([e["features"] for e in chunk], [e["label"] for e in chunk])
    return model.state()


def test_job_learns_every_event_and_dead_letters_the_bad(kafka_broker, topic_name, tmp_path):
    """≥100k events from a standard client, 5% malformed: versions published, lineage accounts
    for every event, each bad one in the DLQ naming its field, accuracy as good as sequential
    (the model a mixture of rates, crossed in the JVM)."""
    bootstrap = kafka_broker.bootstrap
    create_topics(bootstrap, {topic_name: PARTITIONS, f"{topic_name}.dlq": 1})
    events = list(clicks(100_000, seed=7))
    n_bad = _publish_plain(bootstrap, topic_name, events, bad_every=20)
    assert n_bad >= 0.047 * len(events)

    args = _config(tmp_path, bootstrap, topic_name, parallelism=2, bounded=True)
    args += ["--set", f"features.crosses={json.dumps(CROSSES)}"]  # crossed in the JVM
    args += ["--set", "model.rates=[1.0, 0.5]"]  # a mixture: its losses merge as sums
    _run_job(args)

    store = ModelStore(str(tmp_path / "models"), "clicks")
    versions = store.list()
    assert len(versions) >= 2, "versions are published along the way, not only at the end"
    latest = store.get()
    lineage = latest.lineage
    assert lineage.events == len(events), "events reflected = published - dead-lettered"
    ends = describe_topic(bootstrap, topic_name).end_offsets
    assert {int(p): o for p, o in lineage.offsets[topic_name].items()} == ends
    assert len(lineage.learners) == 2
    assert 0.0 < lineage.metrics["LogLoss"] < 0.69, "prequential log-loss beats chance"
    # the one writer: every version published under the merger's lease, released at the end
    writer = store.writer()
    assert writer.writer_id.startswith("train-clicks-") and writer.state == "released"
    assert {(v.writer_id, v.writer_token) for v in versions[-1:]} == {
        (writer.writer_id, writer.token)
    }

    dlq = consume_all(bootstrap, f"{topic_name}.dlq", expected=n_bad, timeout_s=30)
    assert len(dlq) == n_bad
    records = [json.loads(r.value) for r in dlq]
    expected_fields = {raw: field for raw, field in BAD}
    for rec in records:
        original = base64.b64decode(rec["value_b64"])
        assert rec["field"] == expected_fields[original], rec
        assert rec["field"] in rec["reason"]
        (bad,) = EventDecoder("binary").decode(original)[1]  # the contract's code, as Python's
        assert rec["code"] == bad.code and rec["code"], rec
        assert rec["partition"] in ends and rec["offset"] >= 0

    _check_delta_versions(tmp_path / "models", store, versions, columns=2)

    cfg = TrainConfig.from_dict({"features": {"bits": 18, "crosses": CROSSES},
                                 "model": {"learning_rate": 0.05}})
    from streamlearn.learners import learner_from_state

    served = learner_from_state(ModelState.from_bytes(latest.to_bytes()))
    assert served.crosses == (("site", "device"),)
    assert type(served).__name__ == "LogisticMixture" and served.rates == (1.0, 0.5)
    # each component's summed log-loss over every event either learner learned
    losses = served.state().arrays["mixture.loss"]
    assert 0.2 * len(events) < losses.min() < 0.69 * len(events) and losses[0] != losses[1]
    crossed = FeatureHasher(bits=18, crosses=CROSSES).encode_one(events[0]["features"])
    assert len(crossed.indices) == len(events[0]["features"]) + 1
    assert served.state().arrays["weights"][crossed.indices[-1]].all(), "the JVM crossed it"
    held_out = list(clicks(5_000, seed=99))
    ours = _held_out_accuracy(ModelState.from_bytes(latest.to_bytes()), held_out)
    sequential = _held_out_accuracy(_sequential(cfg, events), held_out)
    assert ours >= sequential - 0.01, (ours, sequential)


CROSSES = [["site", "device"]]


def test_a_factorization_machine_warms_up_on_one_learner(kafka_broker, topic_name, tmp_path):
    """``job.warmup_events``, P=2, a factorization machine: each source subtask sends its
    first share of the warm-up (whole bundles) to learner 0, the other learner starts from
    a version that reflects its subtask's warm-up, and the merger, folding each
    partition's bundles in offset order whoever learned them, reflects every event once."""
    from streamlearn.generators import interactions

    bootstrap = kafka_broker.bootstrap
    create_topics(bootstrap, {topic_name: PARTITIONS})
    events = list(interactions(40_000, seed=5))
    _publish_plain(bootstrap, topic_name, events)
    warmup, flush = 10_000, 1000
    args = _config(tmp_path, bootstrap, topic_name, parallelism=2, bounded=True,
                   flush_events=flush, warmup_events=warmup)
    args += ["--set", "model.factors=4", "--set", "store.keep_versions=0"]
    _run_job(args)

    store = ModelStore(str(tmp_path / "models"), "clicks")
    lineage = store.get().lineage
    assert lineage.events == len(events)
    ends = describe_topic(bootstrap, topic_name).end_offsets
    assert {int(p): o for p, o in lineage.offsets[topic_name].items()} == ends
    metrics = lineage.metrics
    loads = {i: metrics[f"learned.learner-{i}"] for i in range(2)}
    # the loads leave out the warm-up: each subtask's share rounded up to whole bundles
    assert warmup <= len(events) - sum(loads.values()) < warmup + 2 * flush, loads
    assert metrics["started_on.learner-0"] == 0
    # learner 1 started from a version with its subtask's warm-up in it (not the initial
    # state), and that version came from learner 0 alone
    started = metrics["started_on.learner-1"]
    assert started >= warmup // 2, metrics  # at least its subtask's share, all reflected
    first = next(v for v in store.list() if v.lineage.events >= started)
    assert first.lineage.learners == ("learner-0",), first.lineage
    assert 0.0 < metrics["LogLoss"] < 0.69


def _check_delta_versions(root: Path, store: ModelStore, versions: list, columns: int = 1) -> None:
    """The job publishes delta versions: files that hold the slots that changed (one
    row each, read with pyarrow alone), and that materialise, from a fresh handle, to
    the model a follower holds by applying each version's changes to the snapshot.
    ``columns``: the weights' (a mixture's components; so its ``normalized.g2``'s)."""
    import pyarrow as pa

    assert versions[0].kind == "snapshot"
    deltas = [v for v in versions if v.kind == "delta"]
    assert deltas, [v.kind for v in versions]
    n_slots = 2**18
    snapshot_bytes = versions[0].size_bytes
    per_slot = (2 * columns + 1) * 8  # weights, the normalised steps' g2 and scale
    assert snapshot_bytes > n_slots * per_slot, "weights, g2 and scale, whole"
    for info in deltas:
        table = pa.ipc.open_file(str(root / "clicks" / info.file)).read_all()
        rows = table.num_rows
        assert table.column_names == ["slot", "weights", "normalized.g2", "normalized.scale"]
        assert 0 < rows < n_slots
        # 4 bytes of slot index and 8 per value of a slot, plus the schema and footer
        assert info.size_bytes <= rows * (4 + per_slot) + 16_384, (info.size_bytes, rows)
        assert info.size_bytes < snapshot_bytes / 2
    fresh = ModelStore(str(root), "clicks")
    follower = ModelState.from_bytes(fresh.get(versions[0].version).to_bytes()).copy()
    held = versions[0].version
    for info in versions[1:]:
        update = store.changes(since=held, upto=info.version)
        if update.reload is not None:
            follower = ModelState.from_bytes(store.get(info.version).to_bytes()).copy()
        else:
            update.changes.apply_to(follower)
        held = info.version
        materialised = ModelState.from_bytes(fresh.get(info.version).to_bytes())
        assert materialised.meta == follower.meta
        for name, array in materialised.arrays.items():
            np.testing.assert_array_equal(array, follower.arrays[name], err_msg=name)


def _start_job(args: list[str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, str(JOB), *args], stdout=log, stderr=log, start_new_session=True
        )


def _kill(job: subprocess.Popen) -> None:
    """kill -9 the job's whole process group: the client, the MiniCluster JVM, Python workers."""
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()


def _wait_for(predicate, job: subprocess.Popen, log_path: Path, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert job.poll() is None, log_path.read_text()[-3000:]
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} within {timeout_s:.0f} s; log: {log_path.read_text()[-2000:]}")


def _last_checkpoint_s(checkpoints: Path) -> float:
    """When the newest complete checkpoint completed (its ``_metadata`` written), or 0."""
    return max((m.stat().st_mtime for m in checkpoints.glob("*/chk-*/_metadata")), default=0.0)


def _hot_partition_keys(events: list[dict]) -> list[dict]:
    """``events`` keyed so that partition 0 (of :data:`PARTITIONS`, by murmur2 as every Kafka
    client places keys) gets 85% of them and each other partition 5%."""
    from kafka.partitioner.default import murmur2

    keys: dict[int, str] = {}
    for i in range(1000):
        keys.setdefault((murmur2(f"k{i}".encode()) & 0x7FFFFFFF) % PARTITIONS, f"k{i}")
    cold = [keys[p] for p in range(1, PARTITIONS)]
    return [{**e, "key": keys[0] if i % 20 < 17 else cold[i % len(cold)]}
            for i, e in enumerate(events)]


@pytest.mark.parametrize("balance", ["partitions", "bundles"])
def test_kill_minus_9_and_resume_learns_every_event_exactly_once(
    kafka_broker, topic_name, tmp_path, balance
):
    """kill -9 the job (the MiniCluster's JVM and Python) mid-stream, just after it published
    a version its last checkpoint does not cover, and restart it: it resumes from the
    checkpoint, continues from that newer version (no version ever reflects fewer events
    than one before it) and the versions that follow reflect every event exactly once.

    With ``job.balance = "bundles"`` the stream has a hot partition (85% of the events):
    the learners are dealt its bundles (by bytes) and share it, and the merger puts each
    partition's deltas back in offset order, across the restart too."""
    bootstrap = kafka_broker.bootstrap
    create_topics(bootstrap, {topic_name: PARTITIONS})
    events = list(clicks(60_000, seed=3))
    if balance == "bundles":
        events = _hot_partition_keys(events)
    with Publisher(bootstrap, topic_name, envelope=True, envelope_size=50) as pub:
        pub.publish_many(events[:30_000])

    # the same writer id in both runs: the second is this job restarted, which takes over
    # the model's writer lease the killed run left (another writer would wait for it to expire)
    args = _config(
        tmp_path, bootstrap, topic_name, parallelism=2, checkpoint_ms=1000, flush_ms=50,
        sync_ms=200, writer_id="train-clicks-kill9", balance=balance,
    ) + ["--set", "store.keep_versions=0"]  # every version kept, to check them all
    store = ModelStore(str(tmp_path / "models"), "clicks")
    checkpoints = tmp_path / "checkpoints" / "clicks"
    job = _start_job(args, tmp_path / "run1.log")
    job_gone = threading.Event()

    def second_half() -> None:
        """The second half at a steady pace (over ~6 s) while the job runs, its last
        envelopes once the job is killed: a loaded machine may stretch the wait for the
        kill, never let the job learn the whole stream before it."""
        rest, step = events[30_000:], 500
        with Publisher(bootstrap, topic_name, envelope=True, envelope_size=50) as pub:
            start, sent = time.monotonic(), 0
            while sent < len(rest) - step and not job_gone.is_set():
                pub.publish_many(rest[sent : sent + step])
                pub.flush()
                sent += step
                time.sleep(max(0.0, sent / len(rest) * 6.0 - (time.monotonic() - start)))
            job_gone.wait()
            pub.publish_many(rest[sent:])  # while the job is away and restarts

    producer = threading.Thread(target=second_half)

    def newer_than_the_checkpoint() -> bool:  # a version published after the last checkpoint
        latest = store.head().latest
        return bool(latest) and store.get(latest).lineage.created_at > _last_checkpoint_s(
            checkpoints
        ) + 0.05

    try:
        _wait_for(
            lambda: store.head().latest and len(list(checkpoints.glob("*/chk-*/_metadata"))) >= 2,
            job,
            tmp_path / "run1.log",
            180,
            "no version and checkpoints",
        )
        producer.start()
        time.sleep(1.0)
        _wait_for(newer_than_the_checkpoint, job, tmp_path / "run1.log", 30, "no version")
    finally:
        _kill(job)
        job_gone.set()
    killed_at = store.head().latest
    killed = store.get(killed_at).lineage
    assert killed.events < len(events), "killed mid-stream"
    assert killed.created_at > _last_checkpoint_s(checkpoints), "a version after the checkpoint"

    # three earlier runs' checkpoints, older than this run's: the restart keeps the newest
    # KEEP_RUNS runs (this one, resumed from, among them) and deletes the rest
    earlier = [checkpoints / f"{i:032x}" for i in range(3)]
    for days, run in zip((3, 2, 1), earlier, strict=True):
        (run / "chk-1").mkdir(parents=True)
        (run / "chk-1" / "_metadata").write_bytes(b"x")
        for path in (run / "chk-1" / "_metadata", run / "chk-1", run):
            os.utime(path, (time.time() - days * 86400,) * 2)

    restarted = time.time()
    job = _start_job([*args, "--resume", "auto"], tmp_path / "run2.log")
    try:
        latest = _wait_for(
            lambda: (
                (v := store.head().latest)
                and store.get(v).lineage.events >= len(events)
                and store.get(v)
            ),
            job,
            tmp_path / "run2.log",
            180,
            "the resumed job did not learn every event",
        )
        time.sleep(1.5)  # a few more sync intervals: nothing more may be counted
        final = store.get()
    finally:
        _kill(job)
        if producer.ident is not None:
            producer.join()
    assert "resuming from checkpoint" in (tmp_path / "run2.log").read_text()
    assert [run.exists() for run in earlier] == [False, True, True]
    assert KEEP_RUNS == 3
    assert latest.version > killed_at
    assert latest.lineage.events == len(events), "every event learned, none twice"
    assert final.lineage.events == len(events)
    # the kill left a valid chain: every version still stored materialises; the restarted
    # merger went on from the newest version with a delta; no version knows less than before
    fresh = ModelStore(str(tmp_path / "models"), "clicks")
    versions = [fresh.get(v.version) for v in fresh.list()]
    assert [v.version for v in versions] == list(range(1, final.version + 1))
    counts = [v.lineage.events for v in versions]
    assert counts == sorted(counts), f"a version reflects fewer events than one before: {counts}"
    after_kill = [v for v in fresh.list() if v.version > killed_at]
    assert after_kill[0].kind == "delta" and after_kill[0].parent == killed_at
    assert store.get(killed_at + 1).lineage.parents == (killed_at,)
    ends = describe_topic(bootstrap, topic_name).end_offsets
    assert {int(p): o for p, o in final.lineage.offsets[topic_name].items()} == ends
    # each learner's load since the restart (its latest delta's count, in the lineage)
    loads = [final.lineage.metrics.get(f"learned.learner-{i}", 0.0) for i in range(2)]
    assert sum(loads) > 0
    if balance == "bundles":  # dealt by bytes: no learner holds the hot partition alone
        assert max(loads) <= 0.7 * sum(loads), loads
    first_new = next(v for v in versions if v.version > killed_at)
    print(
        f"\nversion {killed_at} ({killed.events} events) before the kill; the first after the "
        f"restart ({first_new.lineage.events} events) "
        f"{first_new.lineage.created_at - restarted:.1f} s after the restart"
    )


def test_same_job_file_on_the_standalone_cluster(kafka_broker, flink_cluster, topic_name, tmp_path):
    bootstrap = kafka_broker.bootstrap
    create_topics(bootstrap, {topic_name: PARTITIONS})
    events = list(clicks(20_000, seed=11))
    with Publisher(bootstrap, topic_name, envelope=True) as pub:
        pub.publish_many(events)
    args = _config(tmp_path, bootstrap, topic_name, parallelism=2, bounded=True)
    flink_cluster.submit(JOB, args, timeout_s=300)
    latest = ModelStore(str(tmp_path / "models"), "clicks").get()
    assert latest.lineage.events == len(events)
    assert any(
        j["name"] == "streamlearn-train-clicks" and j["state"] == "FINISHED"
        for j in flink_cluster.jobs()
    )
