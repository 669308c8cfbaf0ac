"""The training job's library half, without Flink: config, workers, crash-restore bookkeeping."""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import time
from dataclasses import replace

import numpy as np
import orjson
import pytest

from streamlearn.errors import ConfigError, StoreError
from streamlearn.generators import clicks
from streamlearn.merge import Merger, ModelDelta, merge_rule
from streamlearn.store import ModelStore
from streamlearn.training.checkpoints import (
    KEEP_RUNS,
    latest_checkpoint,
    prune_runs,
    resolve_recovery,
)
from streamlearn.training.cli_args import config_from_args, job_arg_parser, parse_set
from streamlearn.training.config import TrainConfig
from streamlearn.training.workers import (
    LearnerWorker,
    MergerWorker,
    dlq_record,
    initial_key,
    resume_point,
)
from tests import jvm_tool


def _cfg(tmp_path, model=None, **job) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "store": {"uri": str(tmp_path / "models"), "model": "m"},
            "model": model or {},
            "features": {"bits": 16},
            "job": {"parallelism": 2, "flush_events": 500, **job},
        }
    )


BATCH = {"update": "batch", "optimizer": "adagrad"}  # mini-batch steps of job.step_events


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"job": {"parallelism": 0}}, "job.parallelism"),
        ({"job": {"parallelism": "2"}}, "job.parallelism"),
        ({"model": {"optimizer": "rmsprop"}}, "model.optimizer"),
        ({"model": {"task": "ranking"}}, "model.task"),
        ({"features": {"bits": 40}}, "features.bits"),
        ({"features": {"crosses": [["a", "a"]]}}, "features.crosses"),
        ({"features": {"crosses": [["a", "b"], ["a", "b"]]}}, "features.crosses"),
        ({"features": {"crosses": ["ab"]}}, "features.crosses"),
        ({"features": {"crosses": [["a", "b", "c"]]}}, "features.crosses"),
        ({"kafka": {"start": "beginning"}}, "kafka.start"),
        ({"kafka": {"topik": "x"}}, "kafka.topik"),
        ({"jobs": {}}, "jobs"),
        ({"job": {"flush_ms": 5000, "sync_ms": 1000}}, "job.flush_ms"),
        ({"job": {"step_events": 0}}, "job.step_events"),
        ({"model": {"update": "online"}}, "model.update"),
        ({"model": {"update": "batch"}}, "model.update"),  # the normalised steps are per event
        ({"model": {"learning_rate": 0}}, "model.learning_rate"),
        ({"job": {"merge": "sum"}}, "job.merge"),
        ({"model": {"factors": 4, "task": "multiclass"}}, "model.task"),
        ({"model": {"factors": 4, "update": "batch", "optimizer": "sgd"}}, "model.update"),
        ({"model": {"factors": 4, "optimizer": "adam"}}, "model.optimizer"),
        ({"model": {"factors": 4, "l1": 0.1}}, "model.l1"),
        ({"model": {"factors": 4}, "features": {"scale": True}}, "features.scale"),
        ({"model": {"factors": -1}}, "model.factors"),
        ({"job": {"merge": "ftrl"}}, "job.merge"),  # FTRL's own (z, n) rule: FTRL learners
        ({"model": {"classes": ["a", "b", "c"]}}, "model.classes"),
        ({"job": {"restart_multiplier": 1}}, "job.restart_multiplier"),  # Flink wants > 1
        ({"job": {"restart_jitter": 1.5}}, "job.restart_jitter"),
        ({"job": {"restart_attempts": -2}}, "job.restart_attempts"),
        ({"job": {"restart_initial_ms": 0}}, "job.restart_initial_ms"),
        ({"job": {"restart_initial_ms": 5000, "restart_max_ms": 1000}}, "job.restart_max_ms"),
        ({"job": {"store_retry_ms": -1}}, "job.store_retry_ms"),
        ({"store": {"snapshot_every_deltas": -1}}, "store.snapshot_every_deltas"),
        ({"store": {"snapshot_every_deltas": 2.5}}, "store.snapshot_every_deltas"),
        ({"store": {"snapshot_max_delta_ratio": -0.1}}, "store.snapshot_max_delta_ratio"),
        ({"store": {"snapshot_max_delta_ratio": float("nan")}}, "store.snapshot_max_delta_ratio"),
        ({"store": {"snapshot_max_age_s": "10m"}}, "store.snapshot_max_age_s"),
        ({"store": {"snapshot_max_age_s": float("inf")}}, "store.snapshot_max_age_s"),
        ({"job": {"warmup_events": -1}}, "job.warmup_events"),
        ({"job": {"warmup_events": 1.5}}, "job.warmup_events"),
    ],
)
def test_a_bad_config_names_the_key(data, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(data)
    assert info.value.field == field
    assert field in str(info.value)


def test_the_learning_rate_defaults_to_its_optimizers_and_batch_steps_stay_a_setting():
    rates = {o: TrainConfig.from_dict({"model": {"optimizer": o, "update": "batch"}})
             for o in ("sgd", "adagrad", "adam", "ftrl")}
    assert {o: c.model.learning_rate for o, c in rates.items()} == dict.fromkeys(rates, 0.1)
    assert TrainConfig.from_dict({}).model.learning_rate == 0.5
    assert TrainConfig.from_dict({"model": {"learning_rate": 0.2}}).make_learner().optimizer \
        .params()["lr"] == 0.2
    batch = rates["adagrad"].make_learner()
    assert (batch.update, batch.intercept_lr) == ("batch", 0.01)
    event = TrainConfig.from_dict({"model": {"optimizer": "ftrl"}}).make_learner()
    assert (event.update, event.intercept_lr, event.optimizer.params()["alpha"]) == (
        "event", None, 0.1)


def test_toml_file_flags_and_overrides(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('[kafka]\ntopic = "clicks"\n[job]\nparallelism = 3\n')
    args = job_arg_parser("t").parse_args(
        ["--config", str(path), "--set", "model.optimizer=ftrl", "--parallelism", "4"]
    )
    cfg = config_from_args(args)
    assert (cfg.kafka.topic, cfg.kafka.dlq_topic, cfg.job.parallelism) == (
        "clicks",
        "clicks.dlq",
        4,
    )
    assert cfg.model.optimizer == "ftrl" and type(cfg.make_learner()).__name__ == (
        "LogisticRegression"
    )
    assert parse_set("job.bounded=true") == ("job.bounded", True)
    with pytest.raises(ConfigError, match="--set"):
        parse_set("job.nope=1")
    path.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="valid TOML"):
        TrainConfig.from_toml(path)


def test_the_job_takes_the_whole_config_as_json_once_and_alone():
    """``streamlearn train`` hands the job its validated configuration as JSON (the text
    the operators read), not flags to parse again."""
    cfg = TrainConfig.from_dict({
        "kafka": {"topic": "clicks"}, "features": {"crosses": [["a", "b"]]},
        "job": {"parallelism": 3, "writer_id": "train-m-1"}, "flink": {"a.b": "c"},
    })
    text = json.dumps(cfg.to_dict())
    assert config_from_args(job_arg_parser("t").parse_args(["--config-json", text])) == cfg
    for extra in (["--parallelism", "4"], ["--set", "job.parallelism=4"], ["--bounded"]):
        args = job_arg_parser("t").parse_args(["--config-json", text, *extra])
        with pytest.raises(ConfigError, match="--config-json"):
            config_from_args(args)
    with pytest.raises(ConfigError, match="a JSON object"):
        config_from_args(job_arg_parser("t").parse_args(["--config-json", "{nope"]))


def test_every_task_builds_its_learner():
    kinds = {
        task: type(TrainConfig.from_dict({"model": {"task": task}}).make_learner()).__name__
        for task in ("regression", "binary", "multiclass")
    }
    assert kinds == {
        "regression": "LinearRegression",
        "binary": "LogisticRegression",
        "multiclass": "SoftmaxRegression",
    }


# -- workers ---------------------------------------------------------------------------------


def _feed(worker: LearnerWorker, events, partition: int, start: int = 0):
    for i, event in enumerate(events):
        worker.add(partition, start + i, orjson.dumps(event))


def test_learner_flush_reports_offsets_counts_and_metrics(tmp_path):
    cfg = _cfg(tmp_path)
    worker = LearnerWorker(cfg, 0)
    _feed(worker, clicks(300, seed=1), partition=3, start=100)
    assert worker.buffered == 300
    delta = worker.flush()
    assert delta.n_events == 300 and worker.offsets == {3: 400}
    assert delta.extra["offsets"] == {"3": 400}
    assert 0 < delta.extra["metrics"]["LogLoss"] < 5
    assert worker.buffered == 0 and worker.flush() is None


def test_rejections_are_returned_for_the_dlq_and_count_once(tmp_path):
    worker = LearnerWorker(_cfg(tmp_path), 0)
    bad = worker.add(0, 7, b'{"features": {"x": 1}, "label": "maybe"}')
    assert [r.field for r in bad] == ["label"]
    record = orjson.loads(dlq_record("events", 0, 7, bad[0]))
    assert record["field"] == "label" and record["offset"] == 7 and "label" in record["reason"]
    assert record["stage"] == "train" and record["truncated"] is False
    assert base64.b64decode(record["value_b64"]) == b'{"features": {"x": 1}, "label": "maybe"}'
    assert worker.n_rejected == 1
    delta = worker.flush()
    assert delta.n_events == 0 and worker.offsets == {0: 8}


def _bundles(cfg: TrainConfig, messages: list[bytes], size: int) -> list[tuple[bytes, int]]:
    """The JVM encoder's bundles of ``size`` consecutive messages, with their rejection counts."""
    chunks = [messages[i : i + size] for i in range(0, len(messages), size)]
    out = []
    for chunk in chunks:
        (batch,), rejected = jvm_tool.encode(
            chunk, cfg.model.task, cfg.features.bits, cfg.features.dense, each=False,
            crosses=cfg.features.crosses,
        )
        out.append((batch, len(rejected)))
    return out


@pytest.mark.parametrize("model", [None, {"rates": [1.0, 0.5]}], ids=["default", "mixture"])
def test_a_bundle_from_the_jvm_is_learned_as_the_python_path_learns_it(tmp_path, model):
    """The job's path (JVM encoder → learn_bundle) and the in-process one (decode and
    hash in Python → flush) learn the same model from the same messages."""
    cfg = _cfg(tmp_path, model)
    messages = [orjson.dumps(e) for e in clicks(900, seed=4)]
    messages[10] = b'{"features": {"x": 1}, "label": "maybe"}'
    messages[20] = b"not json"
    python, jvm = LearnerWorker(cfg, 0), LearnerWorker(cfg, 0)
    end = 0
    for i, (batch, rejected) in enumerate(_bundles(cfg, messages, 300)):
        for j, m in enumerate(messages[i * 300 : (i + 1) * 300]):
            python.add(2, i * 300 + j, m)
        a = python.flush()
        end = min((i + 1) * 300, len(messages))
        b = jvm.learn_bundle(2, end, rejected, batch)
        assert (a.n_events, a.extra, a.nnz) == (b.n_events, b.extra, b.nnz)
    assert jvm.offsets == python.offsets == {2: 900}
    assert jvm.n_rejected == python.n_rejected == 2 and jvm.n_learned == 898
    assert type(jvm.learner) is type(cfg.make_learner())
    for name, array in python.learner.state().arrays.items():
        np.testing.assert_array_equal(jvm.learner.state().arrays[name], array, err_msg=name)


def test_crosses_are_learned_the_same_from_the_jvms_bundles_and_the_python_path(tmp_path):
    """``features.crosses``: the JVM encoder crosses the features the Python hasher
    crosses (the corpus proves each entry; here, the job's two paths learn one model),
    and the learner and its committed state carry the crosses."""
    from streamlearn.generators import INTERACTION_PAIRS, interactions

    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m"},
        "features": {"bits": 14, "crosses": [list(p) for p in INTERACTION_PAIRS]},
    })
    assert cfg.make_learner().crosses == INTERACTION_PAIRS
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # as it travels to the job
    messages = [orjson.dumps(e) for e in interactions(600, seed=5)]
    python, jvm = LearnerWorker(cfg, 0), LearnerWorker(cfg, 0)
    plain = LearnerWorker(replace(cfg, features=replace(cfg.features, crosses=[])), 0)
    for i, (batch, rejected) in enumerate(_bundles(cfg, messages, 200)):
        for j, m in enumerate(messages[i * 200 : (i + 1) * 200]):
            python.add(0, i * 200 + j, m)
            plain.add(0, i * 200 + j, m)
        a = python.flush()
        b = jvm.learn_bundle(0, (i + 1) * 200, rejected, batch)
        assert (a.n_events, a.nnz) == (b.n_events, b.nnz)
        assert a.nnz > plain.flush().nnz + 300  # the crossed slots changed too
    for name, array in python.learner.state().arrays.items():
        np.testing.assert_array_equal(jvm.learner.state().arrays[name], array, err_msg=name)


@pytest.mark.parametrize("model", [None, BATCH], ids=["per-event", "batch-steps"])
def test_an_events_weight_is_learned_with_on_both_paths(tmp_path, model):
    """``weight`` (the event contract's importance) multiplies the event's gradient,
    from the JVM's bundles as from the in-process path: both learn what the learner
    learns given the same weights, and not what it learns without them. The metrics
    count every event once. A bundle none of whose events weighs other than 1 is
    learned as events without weights are."""
    from streamlearn.events import EventDecoder

    cfg = _cfg(tmp_path, model, flush_events=600, step_events=150)
    events = list(clicks(1200, seed=6))
    for i, event in enumerate(events[:600]):  # the second bundle: no weight at all
        event["weight"] = [0, 0.5, 3, None, 1, 2.25][i % 6]
    messages = [orjson.dumps(e) for e in events]
    python, jvm = LearnerWorker(cfg, 0), LearnerWorker(cfg, 0)
    direct, unweighted = cfg.make_learner(), cfg.make_learner()
    from streamlearn.metrics import prequential

    for i, (batch, rejected) in enumerate(_bundles(cfg, messages, 600)):
        part = events[i * 600 : (i + 1) * 600]
        for j, m in enumerate(messages[i * 600 : (i + 1) * 600]):
            python.add(0, i * 600 + j, m)
        python.flush()
        jvm.learn_bundle(0, (i + 1) * 600, rejected, batch)
        weights = [1.0 if e.get("weight") is None else e["weight"] for e in part]
        xs, ys = [e["features"] for e in part], [e["label"] for e in part]
        for start in range(0, 600, 150 if model else 600):
            stop = start + (150 if model else 600)
            prequential(direct, direct.encode(xs[start:stop]), ys[start:stop], (),
                        weights[start:stop])
            prequential(unweighted, unweighted.encode(xs[start:stop]), ys[start:stop], ())
    assert jvm.n_learned == python.n_learned == 1200
    assert jvm.metric_values() == python.metric_values()
    for name, array in direct.state().arrays.items():
        np.testing.assert_array_equal(python.learner.state().arrays[name], array, err_msg=name)
        np.testing.assert_array_equal(jvm.learner.state().arrays[name], array, err_msg=name)
    assert not np.array_equal(direct.weights, unweighted.weights)
    assert EventDecoder("binary").decode(b'{"features": {"x": 1}, "label": 1, "weight": -1}')[
        1][0].code == "weight.invalid"


def test_a_bundle_is_learned_in_gradient_steps_of_step_events(tmp_path):
    """One bundle of 900 messages learned in steps of 250 events is the same model, with
    the same metrics, as steps of 250 events each flushed as a bundle of its own."""
    messages = [orjson.dumps(e) for e in clicks(900, seed=5)]
    messages[30] = b"not json"
    stepped = LearnerWorker(_cfg(tmp_path, BATCH, flush_events=900, step_events=250), 0)
    ((batch, rejected),) = _bundles(stepped.cfg, messages, 900)
    delta = stepped.learn_bundle(1, 900, rejected, batch)
    one_by_one = LearnerWorker(_cfg(tmp_path, BATCH, flush_events=900, step_events=900), 0)
    for offset, m in enumerate(messages):
        one_by_one.add(1, offset, m)
        if one_by_one.buffered == 250:
            one_by_one.flush()
    one_by_one.flush()
    assert stepped.n_learned == one_by_one.n_learned == delta.n_events == 899
    assert stepped.metric_values() == one_by_one.metric_values()
    for name, array in one_by_one.learner.state().arrays.items():
        np.testing.assert_array_equal(stepped.learner.state().arrays[name], array, err_msg=name)
    whole = LearnerWorker(_cfg(tmp_path, BATCH, flush_events=900, step_events=900), 0)
    whole.learn_bundle(1, 900, rejected, batch)
    assert not np.array_equal(whole.learner.state().arrays["weights"],
                              stepped.learner.state().arrays["weights"])


def test_by_default_every_event_is_predicted_then_learned_in_order(tmp_path):
    """The default (``model.update = "event"``, normalised steps): however the events are
    cut into bundles, and whatever ``job.step_events`` says, the learner ends with the
    same model, and each event is scored by the model that learned every event before
    it, as a learner predicting and learning one event at a time would."""
    from streamlearn.metrics import LogLoss

    events = list(clicks(900, seed=5))
    messages = [orjson.dumps(e) for e in events]
    whole = LearnerWorker(_cfg(tmp_path, flush_events=900, step_events=100), 0)
    assert (whole.cfg.model.update, whole.cfg.model.optimizer) == ("event", "normalized")
    assert whole.learner.intercept_lr is None  # the intercept learned as a feature, as VW
    ((batch, rejected),) = _bundles(whole.cfg, messages, 900)
    whole.learn_bundle(1, 900, rejected, batch)
    cut = LearnerWorker(_cfg(tmp_path, flush_events=900, step_events=900), 0)
    for offset, m in enumerate(messages):
        cut.add(1, offset, m)
        if cut.buffered == 250:
            cut.flush()
    cut.flush()
    one = whole.cfg.make_learner()
    loss = LogLoss()
    for e in events:
        loss.update(e["label"], one.predict_proba_one(e["features"]))
        one.learn_one(e["features"], e["label"])
    for name, array in one.state().arrays.items():
        np.testing.assert_array_equal(whole.learner.state().arrays[name], array, err_msg=name)
        np.testing.assert_array_equal(cut.learner.state().arrays[name], array, err_msg=name)
    for worker in (whole, cut):
        assert worker.metric_values()["LogLoss"] == pytest.approx(loss.get(), rel=1e-12)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_a_factorization_machine_is_trained_merged_and_committed_by_the_job(tmp_path, task):
    """``model.factors = k``: the job's learners are factorization machines, the same on
    the JVM's bundles as on the Python path; their deltas carry the factors, the merger
    folds them, and the committed version is a factorization machine to serve."""
    from streamlearn.generators import interactions
    from streamlearn.learners import learner_from_state
    from streamlearn.state import ModelState

    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m"},
        "model": {"task": task, "factors": 3},
        "features": {"bits": 12},
    })
    events = list(interactions(600, seed=2))
    if task == "regression":
        events = [{**e, "label": float(e["label"]) * 2 - 1} for e in events]
    messages = [orjson.dumps(e) for e in events]
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    python, jvm = LearnerWorker(cfg, 0), LearnerWorker(cfg, 1, store)
    for i, (batch, rejected) in enumerate(_bundles(cfg, messages, 200)):
        for j, m in enumerate(messages[i * 200 : (i + 1) * 200]):
            python.add(0, i * 200 + j, m)
        a = python.flush()
        b = jvm.learn_bundle(0, (i + 1) * 200, rejected, batch)
        assert "factors" in a.sparse and a.n_events == b.n_events == 200
        if i == 0:  # before any rebase, both are the same learner on the same events
            assert a.extra["metrics"] == b.extra["metrics"]
            np.testing.assert_array_equal(a.sparse["factors"], b.sparse["factors"])
        merger.add(b.to_bytes())
        assert merger.commit() == i + 1
    served = learner_from_state(ModelState.from_arrow(store.get().table))
    assert type(served).__name__ == ("FMRegressor" if task == "regression" else "FMClassifier")
    assert served.factors.shape == (2**12, 3) and served.n_learned == 600


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_regression_and_discovered_classes_learn_the_same_on_both_paths(tmp_path, task):
    rng = np.random.default_rng(3)
    labels = {"regression": lambda: float(rng.normal()),
              "multiclass": lambda: ["a", "b", 3][int(rng.integers(3))]}[task]
    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m"},
        "model": {"task": task, "optimizer": "sgd"},
        "features": {"bits": 10, "dense": ["d"]},
    })
    messages = [
        orjson.dumps({"features": {"x": f"v{int(rng.integers(5))}", "d": float(rng.normal())},
                      "label": labels()})
        for _ in range(400)
    ]
    python, jvm = LearnerWorker(cfg, 0), LearnerWorker(cfg, 0)
    for i, (batch, rejected) in enumerate(_bundles(cfg, messages, 200)):
        for j, m in enumerate(messages[i * 200 : (i + 1) * 200]):
            python.add(0, i * 200 + j, m)
        a, b = python.flush(), jvm.learn_bundle(0, (i + 1) * 200, rejected, batch)
        assert (a.n_events, a.extra) == (b.n_events, b.extra)
    assert jvm.learner.state().meta.get("classes") == python.learner.state().meta.get("classes")
    for name, array in python.learner.state().arrays.items():
        np.testing.assert_array_equal(jvm.learner.state().arrays[name], array, err_msg=name)


def test_merger_counts_every_event_once_across_a_restart(tmp_path):
    """The merger's snapshot and uncommitted deltas are all a checkpoint needs: learners
    learn each bundle as it comes, so nothing they read is lost with them. Versions
    committed after the checkpoint are continued from, and what they reflect is skipped."""
    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    parts = {p: [orjson.dumps(e) for e in clicks(2000, seed=5 + p)] for p in (0, 1)}
    bundles = {p: _bundles(cfg, msgs, 500) for p, msgs in parts.items()}  # 4 per partition

    def learn(workers, merger, k):  # bundle k of each partition, learner p owns partition p
        for p, w in enumerate(workers):
            batch, rejected = bundles[p][k]
            delta = w.learn_bundle(p, (k + 1) * 500, rejected, batch, k * 500)
            if delta is not None:
                merger.add(delta.to_bytes())

    learners = [LearnerWorker(cfg, i, store) for i in range(2)]
    merger = MergerWorker(cfg, store)
    merger.start()
    learn(learners, merger, 0)
    merger.commit()
    snapshot = merger.snapshot()  # the Flink merger keeps it in state at every commit
    learn(learners, merger, 1)
    # checkpoint: that snapshot and the deltas folded in since the commit
    uncommitted = merger.pending()
    # more work after the checkpoint, committed, then a crash
    learn(learners, merger, 2)
    newest = merger.commit()

    # restart from the checkpoint: the source re-reads from the checkpointed offsets (bundle
    # 2); the merger continues from the newest version, the learners skip what it reflects
    merger2 = MergerWorker(cfg, store)
    merger2.start(snapshot, uncommitted)
    assert merger2.adopted == newest
    learners2 = [LearnerWorker(cfg, i, store) for i in range(2)]
    assert [w.skip_below for w in learners2] == [{0: 1500, 1: 1500}] * 2
    for k in (2, 3):
        learn(learners2, merger2, k)
    assert [w.n_skipped for w in learners2] == [500, 500]
    final = merger2.commit()
    assert final == newest + 1
    lineage = store.get(final).lineage
    assert lineage.events == 4000
    assert lineage.offsets["events"] == {0: 2000, 1: 2000}
    assert lineage.parents == (newest,)
    _events_never_decrease(store)


def test_a_fresh_start_continues_from_the_newest_version(tmp_path):
    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    assert resume_point(cfg, store) == (0, None)
    worker, merger = LearnerWorker(cfg, 0, store), MergerWorker(cfg, store)
    merger.start()
    _feed(worker, clicks(600, seed=2), partition=1)
    merger.add(worker.flush().to_bytes())
    version = merger.commit()
    assert resume_point(cfg, store) == (version, {1: 600})
    again = MergerWorker(cfg, store)
    again.start(base_version=version)
    assert again.events == 600 and again.offsets == {1: 600}


def _one_version(tmp_path) -> tuple[TrainConfig, int]:
    """A model with one version: 300 clicks events learned from partition 0."""
    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    worker, merger = LearnerWorker(cfg, 0, store), MergerWorker(cfg, store)
    merger.start()
    _feed(worker, clicks(300, seed=3), partition=0)
    merger.add(worker.flush().to_bytes())
    return cfg, merger.commit()


def test_a_merger_starting_from_a_version_reads_its_weights_once(tmp_path, monkeypatch):
    """Its lineage comes from the version's record; the weights are read once, for the
    state (they were read twice: once only for the lineage)."""
    cfg, version = _one_version(tmp_path)
    fresh = ModelStore(cfg.store.uri, cfg.store.model)
    reads = []
    original = fresh._read_snapshot

    def counted(info, *args, **kwargs):
        reads.append(info.version)
        return original(info, *args, **kwargs)

    monkeypatch.setattr(fresh, "_read_snapshot", counted)
    again = MergerWorker(cfg, fresh)
    again.start(base_version=version)
    assert (again.version, again.events, again.offsets) == (version, 300, {0: 300})
    assert reads == [version]


def test_the_resume_point_reads_no_weights_yet_refuses_a_version_whose_file_is_gone(
    tmp_path, monkeypatch
):
    """The job's submission reads the newest version's record, not its weights (what it
    costs does not grow with the model); a version whose file is gone is refused there,
    in the store's words, before any operator starts."""
    import os

    cfg, version = _one_version(tmp_path)
    fresh = ModelStore(cfg.store.uri, cfg.store.model)

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(fresh, "_read_snapshot", no_weights)
    monkeypatch.setattr(fresh, "_materialise", no_weights)
    assert resume_point(cfg, fresh) == (version, {0: 300})
    monkeypatch.undo()
    os.remove(os.path.join(cfg.store.uri, cfg.store.model, fresh.info(version).file))
    with pytest.raises(StoreError, match=f"version {version}.*missing"):
        resume_point(cfg, ModelStore(cfg.store.uri, cfg.store.model))


def test_checkpoint_resolution(tmp_path):
    cfg = _cfg(tmp_path, checkpoint_dir=str(tmp_path / "ck"))
    assert latest_checkpoint(cfg) is None and resolve_recovery(cfg, "auto") is None
    for n in (3, 7):
        chk = tmp_path / "ck" / "m" / "job1" / f"chk-{n}"
        chk.mkdir(parents=True)
        (chk / "_metadata").write_bytes(b"x")
    assert resolve_recovery(cfg, "auto").endswith("chk-7")
    assert resolve_recovery(cfg, "none") is None
    with pytest.raises(ConfigError, match="--resume"):
        resolve_recovery(cfg, str(tmp_path / "nowhere"))


def test_earlier_runs_checkpoints_are_pruned_to_the_newest_and_the_resumed(tmp_path):
    cfg = _cfg(tmp_path, checkpoint_dir=str(tmp_path / "ck"))
    assert prune_runs(cfg, None) == []  # no directory yet
    model = tmp_path / "ck" / "m"
    runs = [model / f"{i:032x}" for i in range(6)]  # run 0 the oldest
    for age, run in zip(range(6, 0, -1), runs, strict=True):
        chk = run / "chk-4"
        chk.mkdir(parents=True)
        (chk / "_metadata").write_bytes(b"x")
        (run / "shared").mkdir()
        for path in (chk / "_metadata", chk, run / "shared", run):
            os.utime(path, (time.time() - age * 3600,) * 2)
    os.utime(runs[0] / "chk-4" / "_metadata")  # a run is as new as its newest file
    other = model / "notes"  # not a Flink job's directory: never touched
    other.mkdir()
    resumed = (runs[2] / "chk-4").as_uri()  # an old run resumed from (`--resume PATH`)
    gone = prune_runs(cfg, resumed)
    assert KEEP_RUNS == 3
    assert sorted(gone) == [runs[1].as_uri(), runs[3].as_uri()]  # kept: 0, 5, 4; 2 resumed
    assert sorted(model.iterdir()) == sorted([runs[0], runs[2], runs[4], runs[5], other])
    assert prune_runs(cfg, None) == [runs[2].as_uri()]  # not resumed any more
    assert sorted(model.iterdir()) == sorted([runs[0], runs[4], runs[5], other])
    assert prune_runs(_cfg(tmp_path, checkpoint_dir="hdfs://nn/ck"), None) == []


def test_restart_settings_become_flinks_exponential_delay_strategy(tmp_path):
    strategy = _cfg(
        tmp_path, restart_initial_ms=250, restart_max_ms=4000, restart_multiplier=3,
        restart_attempts=5,
    ).restart_strategy()
    assert strategy["restart-strategy.type"] == "exponential-delay"
    prefix = "restart-strategy.exponential-delay."
    assert strategy[prefix + "initial-backoff"] == "250 ms"
    assert strategy[prefix + "max-backoff"] == "4000 ms"
    assert strategy[prefix + "backoff-multiplier"] == "3.0"
    assert strategy[prefix + "attempts-before-reset-backoff"] == "5"
    unlimited = _cfg(tmp_path).restart_strategy()[prefix + "attempts-before-reset-backoff"]
    assert unlimited == str(2**31 - 1)
    # Flink's exponential-delay wants at least one attempt: 0 is no restart at all
    assert _cfg(tmp_path, restart_attempts=0).restart_strategy() == {
        "restart-strategy.type": "none"
    }


# -- a store that is away for a while ---------------------------------------------------------


class FlakyStore:
    """A real ModelStore whose writes (or reads) fail like a full disk ``fail`` times."""

    def __init__(self, store: ModelStore, fail_commit: int = 0, fail_reads: int = 0) -> None:
        self.store, self.fail_commit, self.fail_reads = store, fail_commit, fail_reads
        self.commit_calls: list[float] = []

    def commit(self, *args, **kwargs):
        self.commit_calls.append(time.monotonic())
        if self.fail_commit:
            self.fail_commit -= 1
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] ...")
        return self.store.commit(*args, **kwargs)

    def head(self):
        if self.fail_reads:
            self.fail_reads -= 1
            raise OSError(errno.EHOSTUNREACH, "s3: no route to host")
        return self.store.head()

    def __getattr__(self, name):  # everything else as the real store does it
        return getattr(self.store, name)


def _one_delta(cfg, store, seed=4):
    worker = LearnerWorker(cfg, 0, store)
    _feed(worker, clicks(400, seed=seed), partition=0)
    return worker.flush().to_bytes()


def test_the_merger_waits_out_a_full_store_in_place_logging_each_wait(tmp_path, caplog):
    cfg = _cfg(tmp_path, restart_initial_ms=40, restart_multiplier=2, store_retry_ms=5000)
    store = FlakyStore(ModelStore(cfg.store.uri, cfg.store.model), fail_commit=3)
    merger = MergerWorker(cfg, store)
    merger.start()
    merger.add(_one_delta(cfg, store))
    with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
        version = merger.commit()
    assert version == 1 and store.store.get(1).lineage.events == 400
    waits = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert waits == [
        f"model store unavailable (No space left on device); retrying in {s} s"
        for s in ("0.0", "0.1", "0.2")  # 40, 80, 160 ms: the restart back-off
    ]
    gaps = np.diff(store.commit_calls)
    assert gaps[0] >= 0.04 and gaps[1] >= 0.08 and gaps[2] >= 0.16, gaps
    assert "available again: committed version 1" in caplog.records[-1].getMessage()


def test_past_store_retry_ms_the_fault_fails_the_task_and_nothing_is_lost(tmp_path, caplog):
    """The merger gives up to Flink's restart (from its checkpoint) with its state intact."""
    cfg = _cfg(tmp_path, restart_initial_ms=50, store_retry_ms=300)
    store = FlakyStore(ModelStore(cfg.store.uri, cfg.store.model), fail_commit=10**6)
    merger = MergerWorker(cfg, store)
    merger.start()
    blob = _one_delta(cfg, store)
    merger.add(blob)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(OSError):
        merger.commit()
    assert 0.3 <= time.monotonic() - started < 2.0
    assert "giving up after" in caplog.records[-1].getMessage()
    assert merger.pending() == [blob] and merger.version == 0 and store.store.head().latest is None
    store.fail_commit = 0
    assert merger.commit() == 1 and store.store.get(1).lineage.events == 400


@pytest.mark.parametrize(
    "error", [TypeError("a bug"), StoreError("model 'm': this writer's lease was taken over")]
)
def test_a_bug_or_a_refusal_is_not_waited_out(tmp_path, error):
    cfg = _cfg(tmp_path, store_retry_ms=60_000)

    class Broken(FlakyStore):
        def commit(self, *args, **kwargs):
            self.commit_calls.append(time.monotonic())
            raise error

    store = Broken(ModelStore(cfg.store.uri, cfg.store.model))
    merger = MergerWorker(cfg, store)
    merger.start()
    merger.add(_one_delta(cfg, store))
    with pytest.raises(type(error)):
        merger.commit()
    assert len(store.commit_calls) == 1


def test_a_learner_learns_on_while_the_store_cannot_be_read(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    real = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, real)
    merger.start()
    merger.add(_one_delta(cfg, real))
    merger.commit()
    store = FlakyStore(real)
    worker = LearnerWorker(cfg, 1, store)
    assert worker.base_version == 1
    merger.add(_one_delta(cfg, real, seed=6))
    merger.commit()  # version 2, which the learner cannot see for two bundles
    store.fail_reads = 2
    with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
        for i in range(3):
            _feed(worker, clicks(100, seed=20 + i), partition=1, start=100 * i)
            delta = worker.flush()
            assert delta.n_events == 100
            assert worker.base_version == (1 if i < 2 else 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "learner-1: model store unreadable (No route to host); learning on from version 1 "
        "until it returns",
        "learner-1: model store readable again",
    ]
    assert worker.n_learned == 300 and worker.offsets == {1: 300}


# -- delta versions: the merger commits what changed, learners rebase on it ------------------


def _kinds(store: ModelStore) -> list[str]:
    return [i.kind for i in store.list()]


def _stored(store: ModelStore, version: int):
    from streamlearn.state import ModelState

    return ModelState.from_arrow(store.get(version).table)


def _pipeline(cfg: TrainConfig, rounds: int = 6) -> tuple[ModelStore, list[int]]:
    """Two learners (one partition each) and the merger, a version after every round."""
    store = ModelStore(cfg.store.uri, cfg.store.model)
    learners = [LearnerWorker(cfg, i, store) for i in range(2)]
    merger = MergerWorker(cfg, store)
    merger.start()
    versions = []
    for k in range(rounds):
        for p, w in enumerate(learners):
            _feed(w, clicks(150, seed=100 * k + p), partition=p, start=150 * k)
            merger.add(w.flush().to_bytes())
        versions.append(merger.commit())
    return store, versions


def test_the_job_with_delta_versions_stores_what_the_snapshot_design_stored(tmp_path):
    """The same events through learners and merger twice: every version a snapshot (the
    design before delta versions), and deltas with a snapshot every 3. Every version,
    materialised from its snapshot and deltas, equals the snapshot array for array; the
    learners, rebasing on the changes, learned exactly what they learned rebasing on the
    whole model."""
    whole, whole_versions = _pipeline(TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "whole"), "model": "m", "snapshot_every_deltas": 0},
        "features": {"bits": 16}, "job": {"flush_events": 500},
    }))
    deltas, delta_versions = _pipeline(TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "deltas"), "model": "m", "snapshot_every_deltas": 3},
        "features": {"bits": 16}, "job": {"flush_events": 500},
    }))
    assert _kinds(whole) == ["snapshot"] * 6 and whole_versions == [1, 2, 3, 4, 5, 6]
    # the snapshot due after 3 deltas is a compaction of the 4th: followers pass over it
    assert _kinds(deltas) == ["snapshot", "delta", "delta", "delta", "delta", "compact", "delta"]
    assert delta_versions == [1, 2, 3, 4, 6, 7]
    fresh = ModelStore(str(tmp_path / "deltas"), "m")
    for k, (v, w) in enumerate(zip(delta_versions, whole_versions, strict=True)):
        a, b = _stored(whole, w), _stored(fresh, v)
        assert a.meta == b.meta
        for name in a.arrays:
            np.testing.assert_array_equal(b.arrays[name], a.arrays[name], err_msg=f"{v} {name}")
        assert whole.info(w).lineage.events == fresh.info(v).lineage.events == 300 * (k + 1)
    _ = _stored(fresh, 5)  # the delta under the compaction materialises too
    # a delta holds the slots touched, far fewer bytes than the whole model
    assert fresh.info(2).size_bytes < fresh.info(1).size_bytes / 20


class SpyStore(FlakyStore):
    """A real store that counts whole-model reads and can refuse deltas like a full disk."""

    def __init__(self, store: ModelStore, fail_delta: int = 0) -> None:
        super().__init__(store)
        self.gets = 0
        self.fail_delta = fail_delta

    def get(self, *args, **kwargs):
        self.gets += 1
        return self.store.get(*args, **kwargs)

    def commit_delta(self, *args, **kwargs):
        if self.fail_delta:
            self.fail_delta -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.store.commit_delta(*args, **kwargs)


def _assert_version_and_in_flight(worker, version, delta):
    """The learner is ``version`` with ``delta`` (sent, not in it yet) on top, as taken,
    and running maxima (the normalised steps' scales) at the larger of its own and the
    version's."""
    expected = {k: v.copy() for k, v in version.arrays.items()}
    for name, rows in delta.sparse.items():
        if merge_rule(name) != "max":
            expected[name][delta.slots] += rows
    for name, value in delta.dense.items():
        expected[name] += value
    for name, array in worker.learner.state().arrays.items():
        if merge_rule(name) == "max":
            np.testing.assert_array_equal(array, np.maximum(array, version.arrays[name]))
            continue
        np.testing.assert_allclose(array, expected[name], rtol=0, atol=1e-12, err_msg=name)


def test_a_learner_rebases_on_the_changes_never_reading_the_whole_model(tmp_path):
    cfg = _cfg(tmp_path)
    real = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, real)
    merger.start()
    merger.add(_one_delta(cfg, real))
    merger.commit()  # version 1, a snapshot
    store = SpyStore(real)
    worker = LearnerWorker(cfg, 1, store)
    assert worker.base_version == 1 and store.gets == 1  # the first read is whole
    takes = []
    take = worker.tracker.take

    def spy(*args, **kwargs):
        takes.append(kwargs.get("touched"))
        return take(*args, **kwargs)

    worker.tracker.take = spy
    for i in range(3):
        merger.add(_one_delta(cfg, real, seed=30 + i))
        assert merger.commit() == 2 + i and real.info(2 + i).kind == "delta"
        _feed(worker, clicks(100, seed=20 + i), partition=1, start=100 * i)
        delta = worker.flush()
        merger.add(delta.to_bytes())
        assert worker.base_version == 2 + i
        # the version holds the learner's delta before this one (its lineage offsets
        # reach it) but not this one, taken just before the rebase: the learner now is
        # that version with this delta on top, as taken, and running maxima (the
        # normalised steps' scales) at the larger of its own and the version's
        latest = _stored(real, 2 + i)
        assert worker.tracker.pending_tags == [{1: 100 * (i + 1)}]
        _assert_version_and_in_flight(worker, latest, delta)
        assert worker.learner.n_learned == latest.meta["n_learned"] + delta.n_events
    assert store.gets == 1, "rebased on changes, never on the whole model"
    # each take compared only the slots of its batch, not the model's 65,536
    assert all(t is not None and 0 < len(t) < 3000 for t in takes), [
        None if t is None else len(t) for t in takes]


def test_a_learner_at_the_initial_state_takes_the_first_version_as_changes(tmp_path):
    """Learners that began before any version (base 0) rebase on the merger's first
    snapshot from the changes it stored beside it, never reading the model whole, and
    end exactly where a whole read leaves them; under another configuration's key (or
    without the changes) the first version is read whole."""
    from streamlearn.training.workers import initial_key

    cfg = _cfg(tmp_path)
    real = ModelStore(cfg.store.uri, cfg.store.model)
    store = SpyStore(real)
    worker = LearnerWorker(cfg, 1, store)
    other = LearnerWorker(cfg, 0, store)
    other._initial = "sha256:another"  # as if built by another configuration
    assert worker.base_version == other.base_version == 0 and store.gets == 0
    merger = MergerWorker(cfg, real)
    merger.start()
    merger.add(_one_delta(cfg, real))
    assert merger.commit() == 1
    assert real.info(1).from_initial["initial"] == initial_key(cfg)
    _feed(worker, clicks(100, seed=20), partition=1)
    delta = worker.flush()
    merger.add(delta.to_bytes())
    assert worker.base_version == 1 and store.gets == 0, "rebased on changes, not the model"
    first = _stored(real, 1)
    _assert_version_and_in_flight(worker, first, delta)
    assert worker.learner.n_learned == first.meta["n_learned"] + delta.n_events
    # a learner whose initial state is another (a key that does not match) reads it whole
    _feed(other, clicks(50, seed=21), partition=0)
    other.flush()
    assert other.base_version == 1 and store.gets == 1


def test_the_policys_snapshot_is_a_compaction_learners_pass_over(tmp_path):
    """The snapshot due after every delta is written as a compaction, which a learner
    passes over; a snapshot that changes the chain (here another writer's) is read whole."""
    from streamlearn.state import ModelState

    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m", "snapshot_every_deltas": 1},
        "features": {"bits": 12},
    })
    real = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, real)
    merger.start()
    merger.add(_one_delta(cfg, real))
    merger.commit()
    store = SpyStore(real)
    worker = LearnerWorker(cfg, 1, store)
    for i in range(2):  # a delta; then a delta and its compaction (one delta since the last)
        merger.add(_one_delta(cfg, real, seed=40 + i))
        merger.commit()
        _feed(worker, clicks(50, seed=50 + i), partition=1, start=50 * i)
        worker.flush()
    assert _kinds(real) == ["snapshot", "delta", "delta", "compact"]
    assert merger.last_kind == "compact" and "1 deltas since snapshot 1" in (
        merger.last_snapshot_reason)
    assert store.gets == 1 and worker.base_version == 4
    np.testing.assert_array_equal(_stored(real, 4).arrays["weights"],
                                  _stored(real, 3).arrays["weights"])
    other = ModelState.from_arrow(real.get(4).table).copy()
    other.arrays["weights"][:3] = 0.5
    real.commit(other)  # a snapshot not on the chain
    store.gets = 0
    _feed(worker, clicks(50, seed=60), partition=1, start=100)
    worker.flush()
    assert store.gets == 1 and worker.base_version == 5
    assert worker.learner.state().arrays["weights"][0] == 0.5


def test_a_compaction_that_fails_leaves_the_delta_committed(tmp_path, caplog):
    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m", "snapshot_every_deltas": 1},
        "features": {"bits": 12},
    })
    real = ModelStore(cfg.store.uri, cfg.store.model)

    class NoCompaction(FlakyStore):
        def compact(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

    merger = MergerWorker(cfg, NoCompaction(real))
    merger.start()
    for seed in (1, 2, 3):
        merger.add(_one_delta(cfg, real, seed=seed))
        with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
            merger.commit()
    assert _kinds(real) == ["snapshot", "delta", "delta"]
    assert "version 3 committed, its compaction failed (No space left on device)" in caplog.text
    assert merger.version == 3 and not merger.pending()


def test_a_refused_delta_is_committed_as_a_snapshot_and_deltas_resume(tmp_path, caplog):
    """Another version on top of the merger's (a stale parent): the merger's commit is
    a snapshot of its own model at once, logged; the next version is a delta again."""
    from streamlearn.state import ModelState

    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    merger.add(_one_delta(cfg, store))
    merger.commit()
    merger.add(_one_delta(cfg, store, seed=5))
    assert merger.commit() == 2 and merger.last_kind == "delta"
    blobs = [_one_delta(cfg, store, seed=seed) for seed in (6, 7)]  # learners on version 2
    other = ModelState.from_arrow(store.get(2).table).copy()
    other.arrays["weights"][:] = 7.0
    store.commit(other)  # version 3, not the merger's
    merger.add(blobs[0])
    with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
        assert merger.commit() == 4
    assert merger.last_kind == "snapshot" and "refused" in merger.last_snapshot_reason
    assert "a delta on version 2 was refused" in caplog.text
    assert "committing a snapshot instead" in caplog.text
    assert _kinds(store) == ["snapshot", "delta", "snapshot", "snapshot"]
    assert (_stored(store, 4).arrays["weights"] != 7.0).any(), "the merger's own model"
    merger.add(blobs[1])
    assert merger.commit() == 5 and store.info(5).kind == "delta" and store.info(5).parent == 4


def test_a_broken_chain_under_the_merger_makes_its_next_version_a_snapshot(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    for seed in (1, 2):
        merger.add(_one_delta(cfg, store, seed=seed))
        merger.commit()
    info = store.info(2)
    assert info.kind == "delta"
    blob = _one_delta(cfg, store, seed=3)
    (tmp_path / "models" / "m" / info.file).unlink()  # the parent's delta file is lost
    merger.add(blob)
    with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
        assert merger.commit() == 3
    assert store.info(3).kind == "snapshot" and "version 2" in merger.last_snapshot_reason
    fresh = ModelStore(cfg.store.uri, cfg.store.model)
    assert _stored(fresh, 3).meta["n_learned"] == 1200, "the whole model again"


def test_a_delta_that_failed_is_retried_as_a_snapshot(tmp_path, caplog):
    """A commit that failed may have left anything behind; the retry starts a new chain."""
    cfg = _cfg(tmp_path, restart_initial_ms=10, store_retry_ms=5000)
    real = ModelStore(cfg.store.uri, cfg.store.model)
    store = SpyStore(real, fail_delta=1)
    merger = MergerWorker(cfg, store)
    merger.start()
    merger.add(_one_delta(cfg, real))
    merger.commit()
    merger.add(_one_delta(cfg, real, seed=8))
    with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
        assert merger.commit() == 2
    assert "retrying in" in caplog.text
    assert merger.last_kind == "snapshot" and "committing a delta failed" in (
        merger.last_snapshot_reason)
    merger.add(_one_delta(cfg, real, seed=9))
    merger.commit()
    assert _kinds(real) == ["snapshot", "snapshot", "delta"]


def _events_never_decrease(store: ModelStore) -> list[int]:
    """Every stored version's events, in version order; asserts they never decrease."""
    events = [store.get(i.version).lineage.events for i in store.list()]
    assert events == sorted(events), f"a version reflects fewer events than one before: {events}"
    return events


def test_a_restart_with_versions_after_its_checkpoint_adopts_the_newest(tmp_path):
    """The versions after the checkpoint reflect all it holds and more: the restarted
    merger continues from the newest (a delta on it), never committing one that knows less."""
    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    merger.add(_one_delta(cfg, store))
    merger.commit()
    snapshot = merger.snapshot()
    merger.add(_one_delta(cfg, store, seed=2))
    pending = merger.pending()  # the checkpoint: version 1 and one delta folded in since
    merger.add(_one_delta(cfg, store, seed=3))
    assert merger.commit() == 2  # a delta holding both, then a crash
    again = MergerWorker(cfg, store)
    again.start(snapshot, pending)
    assert again.adopted == 2 and again.version == 2 and again.events == 1200
    assert again.pending() == [] and again.snapshot()["version"] == 2
    new = _one_delta(cfg, store, seed=4)
    again.add(new)
    assert again.commit() == 3 and again.last_kind == "delta"
    assert store.get(3).lineage.parents == (2,) and store.get(3).lineage.events == 1600
    # version 2's content plus the new delta's: the checkpoint's pending delta not twice
    expected = Merger(_stored(store, 2), 2, cfg.job.merge, n_learners=cfg.job.parallelism)
    expected.add(ModelDelta.from_bytes(new))
    for name, array in expected.view().arrays.items():
        np.testing.assert_allclose(_stored(store, 3).arrays[name], array, atol=1e-12, err_msg=name)
    # restarted with nothing committed after its checkpoint: nothing to adopt, deltas go on
    third = MergerWorker(cfg, store)
    third.start(again.snapshot(), [])
    assert third.adopted is None
    third.add(_one_delta(cfg, store, seed=5))
    assert third.commit() == 4 and third.last_kind == "delta"
    assert _events_never_decrease(store) == [400, 1200, 1600, 2000]


def test_a_checkpoint_before_the_first_version_adopts_the_first_snapshot(tmp_path):
    """A checkpoint taken before anything was committed (version 0, one pending delta) and a
    first snapshot committed after it (carrying its changes on the initial state): the
    restored merger continues from that snapshot, with deltas. One taken before the merger
    began at all continues from the newest version."""
    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    snapshot = merger.snapshot()  # what the Flink merger keeps once it began
    merger.add(_one_delta(cfg, store))
    pending = merger.pending()
    assert snapshot["version"] == 0
    assert merger.commit() == 1 and merger.last_kind == "snapshot"
    assert store.changes(since=0, upto=1, initial=initial_key(cfg)).reload is None
    again = MergerWorker(cfg, store)
    again.start(snapshot, pending)
    assert again.adopted == 1 and again.events == 400 and again.pending() == []
    again.add(_one_delta(cfg, store, seed=2))
    assert again.commit() == 2 and again.last_kind == "delta"
    # a checkpoint taken before the merger began (no snapshot, nothing pending), restored
    # as a new job (no base version): it begins from the newest, which learners skip below
    third = MergerWorker(cfg, store)
    third.start(None, [], base_version=0)
    assert (third.version, third.events, third.offsets) == (2, 800, {0: 400})
    assert LearnerWorker(cfg, 0, store).skip_below == {0: 400}
    third.add(_one_delta(cfg, store, seed=3))
    assert third.commit() == 3 and third.last_kind == "delta"
    assert _events_never_decrease(store) == [400, 800, 1200]


def test_a_version_another_writer_committed_on_top_is_adopted_and_the_fenced_commits_nothing(
    tmp_path,
):
    """Another writer took the model over while the job was down (fencing it: its merger
    commits nothing more) and continued from the job's newest version, then let go. The
    restarted job takes the lease again and continues from that writer's version."""
    from streamlearn.store.lease import WriterFenced

    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store, lease=store.acquire_writer("job"))
    merger.start()
    merger.add(_one_delta(cfg, store))
    merger.commit()
    snapshot, pending = merger.snapshot(), merger.pending()
    merger.add(_one_delta(cfg, store, seed=3))  # learned on, not committed yet
    other = store.acquire_writer("other", force=True)
    theirs = MergerWorker(cfg, store, lease=other)
    theirs.start(base_version=resume_point(cfg, store)[0])
    theirs.add(_one_delta(cfg, store, seed=2))
    assert theirs.commit() == 2
    with pytest.raises(WriterFenced):
        merger.commit()
    assert store.head().latest == 2
    other.release()
    again = MergerWorker(cfg, store, lease=store.acquire_writer("job"))
    again.start(snapshot, pending)
    assert again.adopted == 2 and again.events == 800
    again.add(_one_delta(cfg, store, seed=4))
    assert again.commit() == 3 and store.get(3).lineage.parents == (2,)
    assert _events_never_decrease(store) == [400, 800, 1200]


def test_a_newer_version_that_reflects_less_is_left_behind_one_that_is_neither_refused(tmp_path):
    """A rollback committed while the job was down reflects less than the checkpoint: the
    learners skip nothing below it, so the checkpoint's content goes on (as before). A version
    ahead of the checkpoint in one partition and behind in another can be continued from by
    neither the merger nor the learners exactly once: refused, naming both partitions."""
    from streamlearn.store import Lineage

    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    merger.add(_one_delta(cfg, store))
    merger.commit()
    merger.add(_one_delta(cfg, store, seed=2))
    merger.commit()
    snapshot = merger.snapshot()  # version 2, 800 events, partition 0 at 400
    assert store.rollback(1) == 3  # an operator serves version 1 again (400 events)
    again = MergerWorker(cfg, store)
    again.start(snapshot, [])
    assert again.adopted is None and again.version == 2 and again.events == 800
    assert LearnerWorker(cfg, 0, store).skip_below == {0: 400}  # at the checkpoint: no skip
    again.add(_one_delta(cfg, store, seed=3))
    assert again.commit() == 4 and "left behind" in again.last_snapshot_reason
    assert store.get(4).lineage.events == 1200

    odd = Lineage(offsets={"events": {0: 10_000, 1: 5}}, events=99_999)
    store.commit(_stored(store, 4), odd)  # version 5: ahead in partition 0, not in 1
    snapshot = {**again.snapshot(), "offsets": {"0": 400, "1": 300}}
    with pytest.raises(StoreError, match=r"partition 0 .*10000 > 400.* partition 1 \(5 < 300\)"):
        MergerWorker(cfg, store).start(snapshot, [])


def _sle1(cfg: TrainConfig, messages: list[bytes]) -> tuple[bytes, int]:
    """A bundle of ``messages`` as the JVM encoder writes it (binary labels), encoded by
    the Python path (which encodes as the JVM does: the test above), with its rejections."""
    import struct

    from streamlearn.events import EventDecoder

    decoder, good, bad = EventDecoder(cfg.model.task), [], 0
    for m in messages:
        events, rejected = decoder.decode(m)
        good += events
        bad += len(rejected)
    fb = cfg.make_learner().encode([e["features"] for e in good])
    n, nnz = len(good), len(fb.indices)
    data = b"SLE1" + struct.pack("<3I", n, nnz, 0)
    data += np.asarray(fb.values, "<f8").tobytes()
    data += np.asarray([float(e["label"]) for e in good], "<f8").tobytes()
    data += np.asarray(fb.offsets, "<i4").tobytes() + np.asarray(fb.indices, "<i4").tobytes()
    data += np.asarray(fb.numeric, np.uint8).tobytes()
    return data, bad


def test_a_restore_behind_the_newest_version_ends_as_a_run_without_the_failure(tmp_path):
    """One learner reading two partitions; the job fails after committing a version newer
    than its checkpoint, and the source re-reads from the checkpoint in other bundles. The
    learner skips the bundles the adopted version reflects, learns a straddling bundle's
    messages from its offsets on (read again), and the final version equals, array for
    array, a run without the failure whose learner starts on the same version (where a
    learner starts is not what is counted); no version ever reflects fewer events."""
    msgs = {p: [orjson.dumps(e) for e in clicks(1000, seed=30 + p)] for p in (0, 1)}
    msgs[0][450] = b'{"features": {"x": 1}, "label": "maybe"}'  # in the straddle, skipped
    msgs[1][650] = b"not json"  # in the straddle, learned (rejected)

    def run(name: str, fail: bool) -> tuple[ModelStore, list]:
        cfg = _cfg(tmp_path / name, parallelism=1, step_events=100)
        store = ModelStore(cfg.store.uri, cfg.store.model)

        def feed(worker, merger, p, a, b):
            batch, rejected = _sle1(cfg, msgs[p][a:b])
            delta = worker.learn_bundle(p, b, rejected, batch, a)
            if delta is not None:
                merger.add(delta.to_bytes())

        learner, merger = LearnerWorker(cfg, 0, store), MergerWorker(cfg, store)
        merger.start()
        for k in range(3):
            for p in (0, 1):
                feed(learner, merger, p, 200 * k, 200 * (k + 1))
            if k == 0:
                merger.commit()
                snapshot = merger.snapshot()
            elif k == 1:
                pending = merger.pending()  # the checkpoint: sources at 400
        assert merger.commit() == 2  # reflects offsets up to 600; then (maybe) the crash
        fetched: list = []
        if not fail:
            learner = LearnerWorker(cfg, 0, store)
            for a in (600, 800):
                for p in (0, 1):
                    feed(learner, merger, p, a, a + 200)
        else:
            merger = MergerWorker(cfg, store)
            merger.start(snapshot, pending)

            def fetch(p, a, b):
                fetched.append((p, a, b))
                return [(o, msgs[p][o], None) for o in range(a, b)]

            learner = LearnerWorker(cfg, 0, store, fetch=fetch)
            assert learner.skip_below == {0: 600, 1: 600}
            for p, a, b in [(1, 400, 500), (0, 400, 700), (0, 700, 800), (1, 500, 800),
                            (0, 800, 1000), (1, 800, 1000)]:
                feed(learner, merger, p, a, b)
            assert learner.n_skipped == 100 + 199 + 100  # p1 [400, 500), p0 [400, 600)...
            # ... and p1 [500, 600)
        merger.commit()
        return store, fetched

    plain, _ = run("plain", fail=False)
    failed, fetched = run("failed", fail=True)
    assert fetched == [(0, 400, 700), (1, 500, 800)]  # once per partition, the straddles
    assert _events_never_decrease(failed) == [400, 1199, 1998]
    a, b = plain.get(), failed.get()
    assert (a.version, a.lineage.events) == (3, 1998)
    assert a.lineage.offsets == {"events": {0: 1000, 1: 1000}}
    assert (b.version, b.lineage.events, b.lineage.offsets) == (3, 1998, a.lineage.offsets)
    assert b.lineage.parents == (2,)
    ours, theirs = _stored(failed, 3).arrays, _stored(plain, 3).arrays
    assert set(ours) == set(theirs) >= {"weights", "intercept", "normalized.g2"}
    for name in ours:
        if not name.startswith("intercept"):  # summed (or maxima): equal within rounding
            np.testing.assert_allclose(ours[name], theirs[name], rtol=0, atol=1e-12,
                                       err_msg=name)
            continue
        # the intercept (and its accumulators) is averaged by event share, from the
        # merger's moving average of delta sizes, which no checkpoint keeps (the
        # restored merger starts it afresh): close only
        np.testing.assert_allclose(ours[name], theirs[name], rtol=0.01, err_msg=name)


def _dealt_bundles(n_bundles: int = 6, size: int = 200) -> list[tuple]:
    """Two partitions' bundles as the encoder emits them: ``(partition, first, end, after,
    messages)``, each partition's offsets leaving a gap of 2 after every bundle (a
    transaction's marker), ``after`` the end of the partition's bundle before (-1 first)."""
    out = []
    for p in (0, 1):
        msgs = [orjson.dumps(e) for e in clicks(n_bundles * size, seed=40 + p)]
        after, offset = -1, 0
        for k in range(n_bundles):
            out.append((p, offset, offset + size, after, msgs[k * size:(k + 1) * size]))
            after, offset = offset + size, offset + size + 2
    return out


def _below(bundles: list[tuple], offsets: dict) -> int:
    """Events in the bundles wholly below ``offsets``."""
    return sum(len(m) for p, _, end, _, m in bundles if end <= offsets.get(p, -1))


def test_bundles_dealt_in_turn_fold_in_each_partitions_order(tmp_path):
    """job.balance = "bundles": two partitions' bundles dealt in turn to two learners,
    whose deltas reach the merger in another order (all of one learner's first). The
    merger folds each partition's bundles in offset order, across Kafka's offset gaps, so
    after every delta its offsets mean "every record below them and none after" (the
    events it holds are exactly those below); a version committed while deltas wait says
    so too, and a merger restored from that commit with what waited (``held``) ends where
    one without the restart does."""
    cfg = _cfg(tmp_path, parallelism=2)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    bundles = _dealt_bundles()
    # the encoder's order, mixing the partitions; dealt in turn: each learner gets both
    mix = [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (1, 2), (0, 3), (0, 4), (1, 3), (0, 5),
           (1, 4), (1, 5)]
    learners = [LearnerWorker(cfg, i, store) for i in range(2)]
    sent: list[list[bytes]] = [[], []]
    for i, (p, k) in enumerate(mix):
        part, first, end, after, msgs = bundles[p * 6 + k]
        batch, rejected = _sle1(cfg, msgs)
        delta = learners[i % 2].learn_bundle(part, end, rejected, batch, first, after=after)
        assert delta.extra["bundle"] == [part, after, end]
        sent[i % 2].append(delta.to_bytes())
    merger = MergerWorker(cfg, store)
    merger.start()
    arrivals = sent[1] + sent[0]
    for j, blob in enumerate(arrivals):
        merger.add(blob)
        assert merger.events == _below(bundles, merger.offsets), j
        if j == 6:  # learner 1's six and one of learner 0's: p0 [0, 1, 2] are in
            assert merger.offsets == {0: 604}
            assert len(merger.held()) == 4  # p0 #4, #5 and p1 #2, #5 wait
            version = merger.commit()
            lineage = store.get(version).lineage
            assert lineage.events == _below(bundles, lineage.offsets["events"]) == 600
            snapshot, held = merger.snapshot(), merger.held()
    assert merger.offsets == {0: 1210, 1: 1210} and merger.held() == []
    assert merger.events == 2400
    # a restart from the commit, with what waited then: the rest arrives again
    restored = MergerWorker(cfg, store)
    restored.start(snapshot, held)
    for blob in arrivals[7:]:
        restored.add(blob)
        assert restored.events == _below(bundles, restored.offsets)
    assert (restored.offsets, restored.events) == (merger.offsets, merger.events)


def test_a_restored_learner_s_bundles_follow_the_adopted_offsets(tmp_path):
    """After a restore behind a newer version, a learner skips the bundles the adopted
    version holds (no delta) and learns a straddling one from the version's offsets on: the
    bundles after them name an ``after`` at or below the adopted offsets (the encoder
    re-read with other boundaries), and the merger folds them at once, with no gap."""
    cfg = _cfg(tmp_path, parallelism=1)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    msgs = [orjson.dumps(e) for e in clicks(800, seed=50)]

    def feed(learner, merger, first, end, after):
        batch, rejected = _sle1(cfg, msgs[first:end])
        delta = learner.learn_bundle(0, end, rejected, batch, first, after=after)
        if delta is not None:
            merger.add(delta.to_bytes())
        return delta

    learner, merger = LearnerWorker(cfg, 0, store), MergerWorker(cfg, store)
    merger.start()
    feed(learner, merger, 0, 200, -1)
    merger.commit()
    snapshot = merger.snapshot()  # the checkpoint: offset 200
    feed(learner, merger, 200, 400, 200)
    assert merger.commit() == 2  # offset 400, newer than the checkpoint

    restored = MergerWorker(cfg, store)
    restored.start(snapshot, [])
    assert restored.adopted == 2 and restored.offsets == {0: 400}

    def fetch(p, a, b):
        return [(o, msgs[o], None) for o in range(a, b)]

    learner = LearnerWorker(cfg, 0, store, fetch=fetch)
    assert feed(learner, restored, 200, 300, -1) is None  # in the version: skipped
    delta = feed(learner, restored, 300, 500, 300)  # straddles 400: learned from there
    assert delta.extra["bundle"] == [0, 300, 500] and delta.n_events == 100
    feed(learner, restored, 500, 800, 500)
    assert restored.held() == []
    assert (restored.offsets, restored.events) == ({0: 800}, 800)


@pytest.mark.parametrize("balance", ["partitions", "bundles"])
def test_learners_loads_are_in_the_lineage_and_a_hot_one_is_named_once(
    tmp_path, caplog, balance
):
    """Each version's lineage holds each learner's load (``learned.<learner>``); when the
    learners learn their sources' partitions and one learned 1.5 times their mean, the
    merger names it and job.balance, once; not when bundles are dealt in turn."""
    cfg = _cfg(tmp_path, parallelism=2, flush_events=50, balance=balance)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    msgs = [orjson.dumps(e) for e in clicks(100, seed=60)]
    batch, rejected = _sle1(cfg, msgs)
    learners = [LearnerWorker(cfg, i, store) for i in range(2)]
    merger = MergerWorker(cfg, store)
    merger.start()
    with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
        ends = [0, 0]  # learner p reads partition p
        for k in range(40):  # 30 bundles to learner 0, 10 to learner 1: 1.5 times the mean
            p = 0 if k % 4 else 1
            delta = learners[p].learn_bundle(p, ends[p] + 100, rejected, batch, ends[p])
            ends[p] += 100
            merger.add(delta.to_bytes())
            merger.commit()
    metrics = store.get().lineage.metrics
    assert (metrics["learned.learner-0"], metrics["learned.learner-1"]) == (3000, 1000)
    named = [r.getMessage() for r in caplog.records if "job.balance" in r.getMessage()]
    if balance == "bundles":
        assert named == []
    else:
        assert len(named) == 1 and named[0].startswith("learner-0 has learned 1.5 times"), named


def test_the_warm_up_defaults_to_the_factorization_machines_and_what_remains_of_it(tmp_path):
    """``job.warmup_events``: 50,000 per learner for a factorization machine, 0 for a
    linear model, unless given; the job is given what the newest version has not learned
    yet."""
    from streamlearn.store import Lineage
    from streamlearn.training.warmup import with_remaining_warmup

    assert _cfg(tmp_path).job.warmup_events == 0
    fm = _cfg(tmp_path, model={"factors": 4}, parallelism=4)
    assert fm.job.warmup_events == 200_000
    fm = replace(fm, job=replace(fm.job, warmup_events=50_000))
    assert _cfg(tmp_path, model={"factors": 4}, warmup_events=0).job.warmup_events == 0
    assert _cfg(tmp_path, warmup_events=7).job.warmup_events == 7
    store = ModelStore(fm.store.uri, fm.store.model)
    assert with_remaining_warmup(fm, store).job.warmup_events == 50_000
    store.commit(fm.make_learner().state(), Lineage(events=30_000))
    assert with_remaining_warmup(fm, store).job.warmup_events == 20_000
    store.commit(fm.make_learner().state(), Lineage(events=60_000))
    assert with_remaining_warmup(fm, store).job.warmup_events == 0
    assert with_remaining_warmup(fm, None).job.warmup_events == 0  # resumed from a checkpoint
    one = _cfg(tmp_path, model={"factors": 4}, parallelism=1)
    assert with_remaining_warmup(one, ModelStore(str(tmp_path / "b"), "m")).job.warmup_events == 0


def test_versions_and_bundles_default_to_their_intervals_and_a_factorization_machines():
    """A version every 100 ms (a bundle at least every 50), every 50 ms (25) for a
    factorization machine; a bundle at least twice per version whatever job.sync_ms says."""
    def intervals(data):
        job = TrainConfig.from_dict(data).job
        return job.sync_ms, job.flush_ms

    assert intervals({}) == (100, 50)
    assert intervals({"model": {"factors": 4}}) == (50, 25)
    assert intervals({"job": {"sync_ms": 30}}) == (30, 15)
    assert intervals({"model": {"factors": 4}, "job": {"sync_ms": 200}}) == (200, 100)
    assert intervals({"job": {"sync_ms": 1}}) == (1, 1)
    assert intervals({"job": {"flush_ms": 80}}) == (100, 80)


def test_the_warm_up_is_not_counted_in_the_loads_and_each_learners_start_is(tmp_path, caplog):
    """Learner 0 learns the warm-up for every learner: the loads in the lineage
    (``learned.<learner>``) and the unbalanced warning leave it out, and each version
    names the events of the version each learner started from (``started_on.<learner>``),
    across a restored merger too."""
    cfg = _cfg(tmp_path, parallelism=2, flush_events=50, warmup_events=2000)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    msgs = [orjson.dumps(e) for e in clicks(100, seed=61)]
    batch, rejected = _sle1(cfg, msgs)
    merger = MergerWorker(cfg, store)
    merger.start()
    warm = LearnerWorker(cfg, 0, store)
    ends = [0, 0]
    for p in (0, 1) * 10:  # the warm-up: each partition's first 1,000 events, to learner 0
        delta = warm.learn_bundle(p, ends[p] + 100, rejected, batch, ends[p],
                                  after=ends[p] or -1, warmup=True)
        ends[p] += 100
        merger.add(delta.to_bytes())
    merger.commit()
    assert warm.n_warmup == 2000 and store.get().lineage.metrics["started_on.learner-0"] == 0
    other = LearnerWorker(cfg, 1, store)  # starts from the warm-up's version
    assert other.started_on == 2000
    with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
        for k in range(20):  # then an even load: 1,000 events each
            p = k % 2
            learner = (warm, other)[p]
            delta = learner.learn_bundle(p, ends[p] + 100, rejected, batch, ends[p],
                                         after=ends[p])
            ends[p] += 100
            merger.add(delta.to_bytes())
            merger.commit()
    metrics = store.get().lineage.metrics
    assert (metrics["learned.learner-0"], metrics["learned.learner-1"]) == (1000, 1000)
    assert (metrics["started_on.learner-0"], metrics["started_on.learner-1"]) == (0, 2000)
    assert store.get().lineage.events == 4000
    assert not [r for r in caplog.records if "job.balance" in r.getMessage()]
    restored = MergerWorker(cfg, store)
    restored.start(json.loads(json.dumps(merger.snapshot())))
    assert restored._load_metrics() == merger._load_metrics()


def test_join_outcomes_reach_the_lineage_once_across_a_restore(tmp_path):
    """With a join, each record of the training topic names its outcome in a header and
    an outcome that is not learned is an empty tally record. The learners count them into
    their deltas and the merger into each version's lineage (``join.<outcome>``): after a
    restore behind the newest version, the straddling bundle read again counts only its
    messages from the version's offsets on, tallies included, and the final lineage counts
    every record's outcome once; and the rejected events as well, though the learner
    restarts (its own running totals start again)."""
    from streamlearn.joining import OUTCOMES, lineage_counts

    rng = np.random.default_rng(4)
    events = iter(clicks(1000, seed=40))
    msgs: list[tuple[bytes, str]] = []
    bad = b'{"features": {"x": 1}, "label": "maybe"}'  # counted, dead-lettered, not learned
    for i in range(1000):
        outcome = OUTCOMES[int(rng.integers(len(OUTCOMES)))]
        learned = outcome in ("joined", "expired")
        msgs.append(((bad if i % 37 == 0 else orjson.dumps(next(events))) if learned else b"",
                     outcome))
    n_bad = sum(v == bad for v, _ in msgs)
    want = dict.fromkeys(OUTCOMES, 0)
    for _, outcome in msgs:
        want[outcome] += 1
    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m"}, "features": {"bits": 12},
        "job": {"parallelism": 1},
        "join": {"impressions": "served", "labels": "clicked"},
    })
    store = ModelStore(cfg.store.uri, cfg.store.model)

    def feed(worker, merger, a, b):
        part = msgs[a:b]
        batch, rejected = _sle1(cfg, [v for v, _ in part if v])
        counts: dict[str, int] = {}
        for _, outcome in part:
            counts[outcome] = counts.get(outcome, 0) + 1
        delta = worker.learn_bundle(0, b, rejected, batch, a, counts)
        if delta is not None:
            merger.add(delta.to_bytes())

    learner, merger = LearnerWorker(cfg, 0, store), MergerWorker(cfg, store)
    merger.start()
    feed(learner, merger, 0, 200)
    merger.commit()
    snapshot = json.loads(json.dumps(merger.snapshot()))  # as Flink state keeps it
    feed(learner, merger, 200, 400)
    pending = merger.pending()  # the checkpoint: the source at 400
    feed(learner, merger, 400, 600)
    assert merger.commit() == 2  # reflects offsets up to 600; the job fails
    merger = MergerWorker(cfg, store)
    merger.start(snapshot, pending)
    assert merger.adopted == 2

    def fetch(p, a, b):
        return [(o, msgs[o][0], msgs[o][1]) for o in range(a, b)]

    learner = LearnerWorker(cfg, 0, store, fetch=fetch)
    for a, b in [(400, 500), (500, 700), (700, 1000)]:  # read again from the checkpoint
        feed(learner, merger, a, b)
    merger.commit()
    lineages = [store.get(i.version).lineage for i in store.list()]
    counted = [sum(lineage_counts(lin.metrics).values()) for lin in lineages]
    assert counted == sorted(counted) and counted[1] == 600, counted
    final = lineages[-1]
    assert lineage_counts(final.metrics) == want
    assert final.events == want["joined"] + want["expired"] - n_bad
    assert final.metrics["rejected"] == n_bad > 0
    assert [lin.metrics["rejected"] for lin in lineages] == sorted(
        lin.metrics["rejected"] for lin in lineages), "rejections never counted back"
    # a job without a join ignores the header and reports no join counts
    plain = LearnerWorker(_cfg(tmp_path / "plain"), 0, None)
    plain._count_outcomes({"joined": 3})
    assert plain.outcomes == {}


def test_retention_keeps_every_retained_version_materialisable(tmp_path):
    """Retention keeps the newest versions and the snapshot and deltas they are built
    from; everything before that chain goes."""
    from streamlearn.training.workers import RETAIN_EVERY

    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m", "keep_versions": 2,
                  "snapshot_every_deltas": 4, "snapshot_max_delta_ratio": 0},
        "features": {"bits": 12},
    })
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    expected = {}
    for i in range(2 * RETAIN_EVERY):
        merger.add(_one_delta(cfg, store, seed=60 + i))
        version = merger.commit()
        expected[version] = merger.merger.state()
    # a snapshot (1), 4 deltas, a 5th and its compaction (7), 4 deltas (retained: the
    # newest 2, 10 and 11, and the chain from 7 they need); the chain from 1 is gone
    assert [i.version for i in store.list() if i.kind in ("snapshot", "compact")] == [1, 7]
    available = [i.version for i in store.list() if i.available]
    assert available == [7, 8, 9, 10, 11]
    fresh = ModelStore(cfg.store.uri, cfg.store.model)
    for v in available:
        got = _stored(fresh, v)
        for name, array in expected[v].arrays.items():
            np.testing.assert_array_equal(got.arrays[name], array, err_msg=name)


def test_retention_keeps_the_snapshot_a_retained_delta_needs(tmp_path):
    from streamlearn.training.workers import RETAIN_EVERY

    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m", "keep_versions": 2,
                  "snapshot_max_delta_ratio": 0},
        "features": {"bits": 12},
    })
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    for i in range(RETAIN_EVERY):
        merger.add(_one_delta(cfg, store, seed=70 + i))
        merger.commit()
    # the newest two are deltas on a chain from version 1: all of it stays
    assert [i.version for i in store.list() if i.available] == list(range(1, RETAIN_EVERY + 1))
    fresh = ModelStore(cfg.store.uri, cfg.store.model)
    assert _stored(fresh, RETAIN_EVERY).meta["n_learned"] == 400 * RETAIN_EVERY


def test_a_version_that_changed_half_the_slots_or_more_is_a_snapshot(tmp_path):
    """Such a delta would cost about what the whole model costs, and lengthen the chain."""
    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m"}, "features": {"bits": 4},
    })
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    merger.add(_one_delta(cfg, store))
    merger.commit()
    merger.add(_one_delta(cfg, store, seed=2))  # 400 events on 16 slots: most of them
    merger.commit()
    assert _kinds(store) == ["snapshot", "snapshot"]
    assert "slots changed: a delta would be as big" in merger.last_snapshot_reason


def test_a_damaged_delta_under_the_chain_makes_the_next_version_a_snapshot(tmp_path, caplog):
    """The policy's compaction reads the chain; a delta file under it that is damaged
    fails it, and the merger starts a new chain from its own arrays at the next commit,
    so that learners and servers stuck on the broken chain get a whole version again."""
    cfg = TrainConfig.from_dict({
        "store": {"uri": str(tmp_path / "models"), "model": "m", "snapshot_every_deltas": 2},
        "features": {"bits": 12},
    })
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = MergerWorker(cfg, store)
    merger.start()
    blobs = [_one_delta(cfg, store, seed=seed) for seed in range(4)]
    for blob in blobs[:3]:
        merger.add(blob)
        merger.commit()
    assert _kinds(store) == ["snapshot", "delta", "delta"]
    (tmp_path / "models" / "m" / store.info(2).file).write_bytes(b"not an arrow file")
    merger.add(blobs[3])
    with caplog.at_level(logging.WARNING, logger="streamlearn.training.workers"):
        assert merger.commit() == 4  # the delta; its compaction fails on version 2
    assert "version 4 committed, its compaction failed" in caplog.text
    assert "the next version is a snapshot" in caplog.text
    merger.add(blobs[0])
    assert merger.commit() == 5 and store.info(5).kind == "snapshot"
    assert "broken" in merger.last_snapshot_reason
