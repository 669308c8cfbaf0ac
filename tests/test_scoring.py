"""The scoring library without Flink: records, dead letters, hot swap, and the CLI's checks."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamlearn.cli import main as cli_main
from streamlearn.errors import ConfigError, StoreError
from streamlearn.events import (
    DEAD_LETTER_MAX_BYTES,
    DEAD_LETTER_VALUE_BYTES,
    dead_letter,
    encode_envelope,
    encode_event,
)
from streamlearn.learners import SoftmaxRegression
from streamlearn.serving.learner_predictor import predictor_from_version
from streamlearn.serving.model import Predictions
from streamlearn.serving.stream_scoring import Scorer, load_predictor, task_of
from streamlearn.store import Lineage, ModelStore
from tests.models import EVENTS, constant_model, trained_classifier

MODEL = "m"


@pytest.fixture()
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(str(tmp_path / "models"), MODEL)


@pytest.fixture()
def scorer(store: ModelStore):
    store.commit(constant_model(1.0), Lineage())
    with Scorer.from_store(store, MODEL, topic="events") as s:
        yield s


def records(out: Any) -> list[dict]:
    return [orjson.loads(r) for r in out.predictions]


def dead(out: Any) -> list[dict]:
    return [orjson.loads(r) for r in out.dead]


def test_a_single_event_becomes_one_record_naming_where_it_came_from(scorer: Scorer) -> None:
    out = scorer.score(encode_event({"features": {"x": 2}, "id": "e-1", "key": "u-7"}),
                       partition=3, offset=1812, key=b"kafka-key")
    assert records(out) == [{"id": "e-1", "key": "u-7", "partition": 3, "offset": 1812,
                             "index": 0, "version": 1, "prediction": 1.0}]
    assert out.dead == [] and out.version == 1
    assert (scorer.messages, scorer.scored, scorer.rejected) == (1, 1, 0)


def test_the_kafka_key_stands_in_for_a_missing_event_key(scorer: Scorer) -> None:
    event = encode_event({"features": {"x": 2}})
    assert records(scorer.score(event, 0, 1, key=b"user-9"))[0]["key"] == "user-9"
    # the source hands a missing Kafka key over as empty bytes: no key then
    assert "key" not in records(scorer.score(event, 0, 2, key=b""))[0]
    assert "id" not in records(scorer.score(event, 0, 3))[0]


def test_an_envelope_keeps_positions_and_dead_letters_its_bad_events(scorer: Scorer) -> None:
    message = encode_envelope([
        {"features": {"x": 1}, "id": "a"},
        {"features": {}, "id": "b"},
        {"features": {"x": 3}, "id": "c", "label": 2.5},
        {"features": {"x": [1, 2]}, "id": "d"},
        {"features": {"x": 5}, "id": "e", "colour": "red"},
        {"features": {"x": 6}, "id": "f"},
    ])
    out = scorer.score(message, partition=1, offset=40)
    got = records(out)
    assert [(r["id"], r["index"]) for r in got] == [("a", 0), ("c", 2), ("f", 5)]
    assert got[1]["label"] == 2.5 and "label" not in got[0]
    assert {(r["partition"], r["offset"], r["version"]) for r in got} == {(1, 40, 1)}
    bad = dead(out)
    assert [(d["index"], d["field"]) for d in bad] == [(1, "features"), (3, "features.x"),
                                                       (4, "colour")]
    assert all(d["stage"] == "score" and d["topic"] == "events" and d["offset"] == 40
               for d in bad)
    assert "expected a list of strings" in bad[1]["reason"]
    assert orjson.loads(base64.b64decode(bad[0]["value_b64"])) == {"features": {}, "id": "b"}
    assert (scorer.scored, scorer.rejected) == (3, 3)


def test_a_message_that_is_not_json_is_one_dead_letter_and_scoring_goes_on(
    scorer: Scorer,
) -> None:
    out = scorer.score(b"\xff{not json", partition=0, offset=7)
    assert out.predictions == []
    (letter,) = dead(out)
    assert (letter["index"], letter["field"], letter["offset"]) == (None, "message", 7)
    assert "bad JSON" in letter["reason"]
    assert base64.b64decode(letter["value_b64"]) == b"\xff{not json"
    assert records(scorer.score(encode_event({"features": {"x": 1}}), 0, 8))[0]["offset"] == 8


def test_a_huge_bad_message_is_cut_in_its_dead_letter(scorer: Scorer) -> None:
    """The scoring job's records are the bounded ones of every job (events.dead_letter)."""
    message = b'{"features": {"x": "' + b'\\"' * 450_000 + b'"}, "label": [1]}'
    (text,) = scorer.score(message, partition=2, offset=5).dead
    assert len(text.encode()) <= DEAD_LETTER_MAX_BYTES < len(message)
    letter = orjson.loads(text)
    assert (letter["stage"], letter["field"], letter["partition"], letter["offset"]) == (
        "score", "label", 2, 5)
    assert letter["truncated"] is True and letter["size"] == len(message)
    assert letter["sha256"] == hashlib.sha256(message).hexdigest()
    assert base64.b64decode(letter["value_b64"]) == message[:DEAD_LETTER_VALUE_BYTES]
    assert letter["code"] == "label.invalid"
    rebuilt = dead_letter(stage="score", topic="events", partition=2, offset=5, index=None,
                          field="label", reason=letter["reason"], raw=message,
                          at_ms=letter["at_ms"], code=letter["code"])
    assert text.encode() == rebuilt


def test_a_classifier_record_has_classes_probabilities_and_its_best_class(
    store: ModelStore,
) -> None:
    model = trained_classifier()
    store.commit(model.state(), Lineage())
    sample = EVENTS[:12]
    with Scorer.from_store(store, MODEL) as scorer:
        out = scorer.score(encode_envelope([{"features": f, "label": i % 2}
                                            for i, f in enumerate(sample)]))
        # a label is checked against the model's classes even though scoring ignores it
        (bad,) = dead(scorer.score(encode_event({"features": {"age": 1.0}, "label": "yes"})))
    got = records(out)
    expected = np.asarray(model.predict_proba_many(sample))
    expected = expected[:, -1] if expected.ndim == 2 else expected  # P(True)
    assert [r["classes"] for r in got] == [[False, True]] * len(sample)
    np.testing.assert_allclose([r["probabilities"][1] for r in got], expected, rtol=1e-12)
    assert [r["prediction"] for r in got] == [bool(p > 0.5) for p in expected]
    assert [r["label"] for r in got] == [i % 2 for i in range(len(sample))]
    assert bad["field"] == "label"


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_a_factorization_machine_is_scored_as_its_learner_predicts(
    store: ModelStore, kind: str
) -> None:
    from streamlearn.learners import FMClassifier, FMRegressor
    from streamlearn.serving.fm_scorer import FMScorer

    cls = FMClassifier if kind == "binary" else FMRegressor
    model = cls(k=4, bits=10, init_std=0.1)
    ys = [(e["age"] > 4) != (e["country"] == "FR") for e in EVENTS]
    model.learn_many(EVENTS, ys if kind == "binary" else [float(y) for y in ys])
    store.commit(model.state(), Lineage())
    sample = EVENTS[:20]
    with Scorer.from_store(store, MODEL) as scorer:
        assert type(scorer.watcher.current._scorer) is FMScorer  # the factors are served
        out = scorer.score(encode_envelope([{"features": f, "id": i}
                                            for i, f in enumerate(sample)]))
        (one,) = records(scorer.score(encode_event({"features": sample[3], "id": "one"})))
    got = records(out)
    assert [r["id"] for r in got] == list(range(len(sample)))
    if kind == "binary":
        expected = np.asarray(model.predict_proba_many(sample))[:, 1]
        np.testing.assert_allclose([r["probabilities"][1] for r in got], expected,
                                   rtol=0, atol=1e-9)
        assert [r["prediction"] for r in got] == [bool(p > 0.5) for p in expected]
        assert abs(one["probabilities"][1] - expected[3]) < 1e-9
    else:
        expected = np.asarray(model.predict_many(sample))
        np.testing.assert_allclose([r["prediction"] for r in got], expected, rtol=0, atol=1e-9)
        assert abs(one["prediction"] - expected[3]) < 1e-9
        assert "probabilities" not in one
    # the pairwise term is in the records: the linear part alone answers otherwise
    state = model.state()
    state.arrays["factors"][:] = 0.0
    flat = type(model).from_state(state)
    flat_scores = (np.asarray(flat.predict_proba_many(sample))[:, 1] if kind == "binary"
                   else np.asarray(flat.predict_many(sample)))
    assert np.abs(flat_scores - expected).max() > 1e-3


def test_a_mixture_of_rates_is_scored_as_its_learner_predicts(store: ModelStore) -> None:
    """A ``LogisticMixture``: each component scored, mixed by the version's summed losses."""
    from streamlearn.learners import LogisticMixture
    from streamlearn.serving.mixture_scorer import MixtureScorer

    model = LogisticMixture(rates=[1.0, 0.7], bits=10)
    model.learn_many(EVENTS, [(e["age"] > 4) != (e["country"] == "FR") for e in EVENTS])
    weights = model.mixture_weights()
    assert 0.01 < weights.min()  # both components count in the answers
    store.commit(model.state(), Lineage())
    sample = EVENTS[:20]
    with Scorer.from_store(store, MODEL) as scorer:
        served = scorer.watcher.current._scorer
        assert type(served) is MixtureScorer and len(served.parts) == 2
        out = scorer.score(encode_envelope([{"features": f, "id": i}
                                            for i, f in enumerate(sample)]))
        (one,) = records(scorer.score(encode_event({"features": sample[3], "id": "one"})))
    got = records(out)
    expected = np.asarray(model.predict_proba_many(sample))[:, 1]
    np.testing.assert_allclose([r["probabilities"][1] for r in got], expected, rtol=0, atol=1e-9)
    assert [r["prediction"] for r in got] == [bool(p > 0.5) for p in expected]
    assert abs(one["probabilities"][1] - expected[3]) < 1e-9
    # either component alone answers otherwise
    arrays, batch = model.state().arrays, model.encode(sample)
    for c in range(2):
        z = batch.row_sums(arrays["weights"][batch.indices, c] * batch.values)
        alone = 1 / (1 + np.exp(-(z + arrays["intercept"][c])))
        assert np.abs(alone - expected).max() > 1e-4


def test_a_single_event_of_a_binary_classifier_gets_its_probabilities(
    store: ModelStore,
) -> None:
    # one event of a one-output model is answered in plain Python: probabilities as lists
    model = trained_classifier()
    store.commit(model.state(), Lineage())
    with Scorer.from_store(store, MODEL) as scorer:
        (rec,) = records(scorer.score(encode_event({"features": EVENTS[5], "id": "e"})))
    assert rec["classes"] == [False, True]
    assert abs(rec["probabilities"][1] - model.predict_proba_one(EVENTS[5])[True]) < 1e-12


def test_the_label_a_model_accepts_follows_its_classes(store: ModelStore) -> None:
    softmax = SoftmaxRegression(classes=["cat", "dog", "eel"], bits=6)
    store.commit(softmax.state(), Lineage())
    with Scorer.from_store(store, MODEL) as scorer:
        assert task_of(scorer.watcher.current) == "multiclass"
        (rec,) = records(scorer.score(encode_event({"features": {"w": 1}, "label": "dog"})))
    assert rec["classes"] == ["cat", "dog", "eel"] and rec["prediction"] in rec["classes"]
    assert sum(rec["probabilities"]) == pytest.approx(1.0)


def test_new_versions_and_pins_are_followed_without_a_restart(store: ModelStore) -> None:
    store.commit(constant_model(1.0), Lineage())
    scorer = Scorer.from_store(store, MODEL)  # not started: polls are driven by the test
    event = encode_event({"features": {"x": 1}})
    assert records(scorer.score(event))[0]["version"] == 1
    store.commit(constant_model(2.0), Lineage())
    assert records(scorer.score(event))[0]["version"] == 1  # not polled yet
    assert scorer.watcher.poll_once()
    assert records(scorer.score(event))[0]["prediction"] == 2.0
    store.pin(1)
    scorer.watcher.poll_once()
    assert records(scorer.score(event))[0] == {"partition": None, "offset": None, "index": 0,
                                                "version": 1, "prediction": 1.0}
    assert scorer.version == 1 and "version=1" in repr(scorer)


def test_every_message_is_scored_by_one_version_while_versions_race_in(
    store: ModelStore,
) -> None:
    store.commit(constant_model(1.0), Lineage())
    last = 15

    def publisher() -> None:
        for value in range(2, last + 1):
            store.commit(constant_model(float(value)), Lineage())

    envelope = encode_envelope([{"features": {"x": i}} for i in range(50)])
    seen: list[int] = []
    with Scorer.from_store(store, MODEL, interval_s=0.001) as scorer:
        thread = threading.Thread(target=publisher)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not seen or seen[-1] != last:
                assert time.monotonic() < deadline, f"stuck at version {seen[-1:]}"
                got = records(scorer.score(envelope, 0, len(seen)))
                assert {(r["version"], r["prediction"]) for r in got} == {
                    (got[0]["version"], float(got[0]["version"]))
                }, "one message, one version, and it is that version's model"
                seen.append(got[0]["version"])
        finally:
            thread.join()
    assert seen == sorted(seen), "versions only go up"
    assert len(set(seen)) > 2, "the scorer swapped while scoring"


def test_scoring_waits_for_a_first_version_then_names_the_way_out(store: ModelStore) -> None:
    scorer = Scorer.from_store(store, MODEL, wait_s=0.05)
    with pytest.raises(StoreError, match=r"no version of model 'm'.*commit one"):
        scorer.score(encode_event({"features": {"x": 1}}))
    store.commit(constant_model(4.0), Lineage())
    assert records(scorer.score(encode_event({"features": {"x": 1}})))[0]["prediction"] == 4.0


class _Failing:
    version = 5
    created_at = 0.0
    lineage: dict = {}
    classes = None

    def predict_features(self, features: Any) -> Predictions:
        raise FloatingPointError("weights overflowed")

    def predict_columns(self, columns: Any, n_rows: int) -> Predictions:
        raise NotImplementedError


class _OneVersion:
    name = "fake"

    def serving_version(self) -> int:
        return 5

    def load(self, version: int) -> _Failing:
        return _Failing()

    def versions(self) -> list[dict]:
        return []


def test_a_model_that_fails_dead_letters_the_message_instead_of_stopping() -> None:
    scorer = Scorer(_OneVersion(), topic="t")
    out = scorer.score(encode_envelope([{"features": {"x": 1}}, {"features": {}},
                                        {"features": {"x": 2}}]), 0, 9)
    assert out.predictions == []
    assert sorted((d["index"], d["field"]) for d in dead(out)) == [
        (0, "features"), (1, "features"), (2, "features")]
    assert any("the model failed: weights overflowed" in d["reason"] for d in dead(out))


@pytest.mark.parametrize(
    ("options", "field"),
    [({"wait_s": -1}, "wait_s"), ({"max_features": 0}, "max_features"),
     ({"interval_s": 5.0}, "interval_s")],
)
def test_scorer_settings_are_checked(store: ModelStore, options: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        Scorer.from_store(store, MODEL, **options)
    assert err.value.field == field


def test_load_predictor_predicts_like_the_serving_loader(store: ModelStore) -> None:
    store.commit(trained_classifier().state(), Lineage(events=200))
    version = store.get()
    ours, theirs = load_predictor(version), predictor_from_version(version)
    a, b = ours.predict_features(EVENTS), theirs.predict_features(EVENTS)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert (ours.version, ours.classes, ours.lineage) == (theirs.version, theirs.classes,
                                                          theirs.lineage)


# -- streamlearn score: the flags are checked before any JVM starts ------------------
BASE = ["score", "--source", "ev", "--sink", "pred", "--model", MODEL]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--parallelism", "0"], "--parallelism"),
        (["--exactly-once"], "--checkpoint-ms too"),
        (["--checkpoint-ms", "5"], "at least 100 ms"),
        (["--detached"], "--cluster HOST:PORT too"),
        (["--cluster", "localhost"], "HOST:PORT of a Flink REST API"),
        (["--cluster", "h:99999"], "HOST:PORT of a Flink REST API"),
        (["--sink", "ev"], "a topic other than --source"),
        (["--wait-s", "-2"], "--wait-s"),
    ],
)
def test_score_cli_rejects_bad_flags_by_name(extra: list[str], message: str, capsys) -> None:
    assert cli_main([*BASE, *extra]) == 1
    assert message in capsys.readouterr().err


def test_score_cli_passes_an_absolute_store_to_the_job(tmp_path: Path, monkeypatch) -> None:
    import argparse

    from streamlearn.cli import build_parser
    from streamlearn.cli.score import JOB_FILE, job_arguments

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args([*BASE, "--store", "rel/models", "--bounded",
                                      "--checkpoint-ms", "1000", "--exactly-once"])
    assert isinstance(args, argparse.Namespace)
    job = job_arguments(args)
    assert job[job.index("--store") + 1] == str(tmp_path / "rel" / "models")
    assert {"--bounded", "--exactly-once"} <= set(job)
    args = build_parser().parse_args([*BASE, "--store", "s3://b/p?region=x"])
    assert "s3://b/p?region=x" in job_arguments(args)
    assert JOB_FILE.is_file()


def test_score_help_shows_examples(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["score", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--cluster 127.0.0.1:8081" in text
