"""The training job's writer lease, retention and Flink settings, without Flink."""

from __future__ import annotations

import errno
import time

import orjson
import pytest

from streamlearn.errors import ConfigError
from streamlearn.generators import clicks
from streamlearn.store import ModelStore
from streamlearn.store.lease import WriterBusy, WriterFenced
from streamlearn.training.cli_args import config_from_args, job_arg_parser
from streamlearn.training.config import TrainConfig
from streamlearn.training.failures import diagnose
from streamlearn.training.workers import RETAIN_EVERY, LearnerWorker, MergerWorker
from streamlearn.training.writer import HandOver


def _cfg(tmp_path, store=None, **job) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "store": {"uri": str(tmp_path / "models"), "model": "m", **(store or {})},
            "features": {"bits": 10},
            "job": {"parallelism": 1, "flush_events": 500, **job},
        }
    )


def _delta(cfg, store, n=200, seed=1, start=0):
    worker = LearnerWorker(cfg, 0, store)
    for i, event in enumerate(clicks(n, seed=seed)):
        worker.add(0, start + i, orjson.dumps(event))
    return worker.flush().to_bytes()


# -- the merger publishes under the lease ------------------------------------------------------


def test_versions_carry_the_writers_token_and_a_fenced_merger_fails_at_once(tmp_path):
    cfg = _cfg(tmp_path, store_retry_ms=60_000, writer_id="train-m-aaaa0001")
    store = ModelStore(cfg.store.uri, cfg.store.model)
    lease = store.acquire_writer(cfg.job.writer_id, cfg.job.lease_ms)
    merger = MergerWorker(cfg, store, lease=lease)
    merger.start()
    merger.add(_delta(cfg, store))
    assert merger.commit() == 1
    info = store.info(1)
    assert (info.writer_id, info.writer_token) == (cfg.job.writer_id, lease.token)

    store.acquire_writer("train-m-other", force=True)  # another trainer took the model over
    merger.add(_delta(cfg, store, seed=2, start=200))
    started = time.monotonic()
    with pytest.raises(WriterFenced):
        merger.commit()
    assert time.monotonic() - started < 2, "a fence is not waited out like a full disk"
    assert store.head().latest == 1 and merger.pending(), "nothing published, nothing lost"


def test_without_a_lease_the_merger_is_refused_while_another_writer_is_live(tmp_path):
    cfg = _cfg(tmp_path)
    store = ModelStore(cfg.store.uri, cfg.store.model)
    store.acquire_writer("train-m-first")
    merger = MergerWorker(cfg, store)
    merger.start()
    merger.add(_delta(cfg, store))
    with pytest.raises(WriterBusy, match="train-m-first"):
        merger.commit()


def test_a_second_trainer_is_refused_naming_the_first_and_a_hand_over_is_no_release(tmp_path):
    store = ModelStore(str(tmp_path / "models"), "m")
    first = HandOver(store, "train-m-11111111", 30_000)
    with pytest.raises(WriterBusy, match="'train-m-11111111' on host"):
        HandOver(store, "train-m-22222222", 30_000)
    merger = store.acquire_writer("train-m-11111111", 30_000)  # the job takes over
    assert first.poll() == "handed over"
    assert store.writer().token == merger.token and store.writer().live()
    with pytest.raises(WriterBusy):  # still refused: the hand-over released nothing
        HandOver(store, "train-m-22222222", 30_000)


# -- retention -----------------------------------------------------------------------------------


def _publish_n(cfg, store, n):
    merger = MergerWorker(cfg, store)
    merger.start()
    for i in range(n):
        merger.add(_delta(cfg, store, n=50, seed=i, start=50 * i))
        merger.commit()
    return merger


def _stored(store):
    return [i.version for i in store.list() if i.available]


def test_retention_is_on_by_default_and_keeps_the_pinned_version(tmp_path, monkeypatch):
    # snapshots only: a delta chain's retention (which keeps the chain whole) is
    # tested in test_merge_deltas.py. The spacing after a slow pass (RETAIN_SPACING
    # times its duration) is off here: on a loaded machine it let a pass wait past
    # RETAIN_EVERY publishes, and the bound below is that of the count alone
    import streamlearn.training.workers as workers

    monkeypatch.setattr(workers, "RETAIN_SPACING", 0)
    cfg = _cfg(tmp_path, store={"keep_versions": 3, "snapshot_every_deltas": 0})
    assert TrainConfig.from_dict({}).store.keep_versions == 10
    store = ModelStore(cfg.store.uri, cfg.store.model)
    merger = _publish_n(cfg, store, 2)
    store.pin(1)
    for i in range(2, 24):
        merger.add(_delta(cfg, store, n=50, seed=i, start=50 * i))
        merger.commit()
        stored = _stored(store)
        assert len(stored) <= 3 + RETAIN_EVERY - 1 + 1, stored  # the bound, the pin
        assert 1 in stored and stored[-1] == i + 1
    assert len(_stored(store)) < 24


def test_keep_versions_0_keeps_every_version(tmp_path):
    cfg = _cfg(tmp_path, store={"keep_versions": 0, "snapshot_every_deltas": 0})
    store = ModelStore(cfg.store.uri, cfg.store.model)
    _publish_n(cfg, store, 2 * RETAIN_EVERY + 1)
    assert _stored(store) == list(range(1, 2 * RETAIN_EVERY + 2))


def test_a_store_fault_in_retention_is_logged_not_raised(tmp_path, caplog):
    cfg = _cfg(tmp_path, store={"keep_versions": 1})
    store = ModelStore(cfg.store.uri, cfg.store.model)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    store.retain = full
    _publish_n(cfg, store, RETAIN_EVERY)
    assert "retention skipped, the model store failed: No space left on device" in caplog.text


# -- configuration -----------------------------------------------------------------------------


def test_writer_id_is_generated_once_and_kept(tmp_path):
    cfg = _cfg(tmp_path)
    assert cfg.job.writer_id == "" and cfg.job.lease_ms == 30_000
    once = cfg.with_writer()
    assert once.job.writer_id.startswith("train-m-") and once.with_writer() == once
    again = TrainConfig.from_dict(once.to_dict())  # the job's config JSON, after a restart
    assert again.job.writer_id == once.job.writer_id


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"job": {"writer_id": "has space"}}, "job.writer_id"),
        ({"job": {"lease_ms": 50}}, "job.lease_ms"),
        ({"store": {"keep_versions": -1}}, "store.keep_versions"),
        ({"flink": {"parallelism.default": 4}}, "flink.parallelism.default"),
        ({"flink": {"restart-strategy.type": "none"}}, "flink.restart-strategy.type"),
        ({"flink": {"metrics.reporters": ["a"]}}, "flink.metrics.reporters"),
        ({"flink": "x"}, "flink"),
    ],
)
def test_a_bad_key_names_itself(data, field):
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_dict(data)
    assert exc.value.field == field


def test_flink_settings_from_the_file_set_and_flink_conf(tmp_path):
    toml = tmp_path / "job.toml"
    toml.write_text(
        '[flink]\n"metrics.reporter.prom.port" = 9249\n"pipeline.object-reuse" = true\n'
    )
    args = job_arg_parser("t").parse_args(
        [
            "--config", str(toml),
            "--set", "flink.taskmanager.memory.process.size=2g",
            "--flink-conf", "metrics.reporter.prom.factory.class=a.b.C",
        ]
    )
    assert config_from_args(args).flink == {
        "metrics.reporter.prom.port": "9249",
        "pipeline.object-reuse": "true",
        "taskmanager.memory.process.size": "2g",
        "metrics.reporter.prom.factory.class": "a.b.C",
    }
    with pytest.raises(ConfigError, match="--flink-conf"):
        config_from_args(job_arg_parser("t").parse_args(["--flink-conf", "no-equals"]))


# -- one line for a Java failure ---------------------------------------------------------------


def test_the_job_files_own_refusal_and_a_writer_refusal_are_told_as_they_are():
    assert diagnose("noise\ntrain: field `x`: expected y, got z\n", topic="t", bootstrap="b:1") == (
        "field `x`: expected y, got z"
    )
    trace = (
        "Caused by: java.lang.RuntimeException: Error received from SDK harness\n"
        "streamlearn.store.lease.WriterBusy: model 'm' has a live writer: 'w1' on host h\n"
        "\tat org.apache.beam.Foo(Foo.java:1)\n"
        "Caused by: java.lang.IllegalStateException: more\n"
    )
    assert diagnose(trace, topic="t", bootstrap="b:1") == (
        "model 'm' has a live writer: 'w1' on host h"
    )
