"""Streaming metrics against scikit-learn, windows, compatibility, prequential order."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from streamlearn.errors import ConfigError, ValidationError
from streamlearn.learners import LinearRegression, LogisticRegression, SoftmaxRegression
from streamlearn.metrics import (
    MAE,
    RMSE,
    ROCAUC,
    Accuracy,
    LogLoss,
    check_compatible,
    prequential,
    progressive_score,
)

rng = np.random.default_rng(0)
Y = rng.random(500) < 0.4
P = np.clip(Y * 0.3 + rng.random(500) * 0.7, 0, 1)
PROBA = np.column_stack([1 - P, P])
CLASSES = [False, True]


def _feed(metric, ys, preds, sizes=(1, 7, 50, 442)):
    start = 0
    for s in sizes:
        metric.update_many(list(ys[start : start + s]), preds[start : start + s], CLASSES)
        start += s
    return metric.get()


def test_accuracy_logloss_mae_rmse_match_sklearn_in_any_batching():
    labels = PROBA.argmax(axis=1).astype(bool)
    assert _feed(Accuracy(), Y, labels) == pytest.approx(skm.accuracy_score(Y, labels))
    assert _feed(LogLoss(), Y, PROBA) == pytest.approx(skm.log_loss(Y, PROBA), rel=1e-9)
    t, p = rng.normal(size=500), rng.normal(size=500)
    assert _feed(MAE(), t, p) == pytest.approx(skm.mean_absolute_error(t, p))
    assert _feed(RMSE(), t, p) == pytest.approx(np.sqrt(skm.mean_squared_error(t, p)))


def test_rocauc_is_close_to_exact_and_exact_on_distinct_bins():
    assert _feed(ROCAUC(), Y, PROBA) == pytest.approx(skm.roc_auc_score(Y, P), abs=2e-3)
    coarse = np.round(P, 2) - 0.005 * (np.round(P, 2) > 0)  # scores at bin centres
    exact = skm.roc_auc_score(Y, coarse)
    assert _feed(ROCAUC(n_bins=100), Y, np.column_stack([1 - coarse, coarse])) == pytest.approx(
        exact, abs=1e-12
    )


@pytest.mark.parametrize("window", [1, 13, 100])
def test_windows_equal_the_metric_over_the_last_events(window):
    labels = PROBA.argmax(axis=1).astype(bool)
    cases = [
        (Accuracy, labels, lambda y, p: skm.accuracy_score(y, p)),
        (LogLoss, PROBA, lambda y, p: skm.log_loss(y, p, labels=CLASSES)),
        (ROCAUC, PROBA, lambda y, p: skm.roc_auc_score(y, p[:, 1])),
    ]
    for cls, preds, reference in cases:
        m = cls(window=window)
        _feed(m, Y, preds)
        tail_y, tail_p = Y[-window:], preds[-window:]
        if cls is ROCAUC and len(set(tail_y.tolist())) < 2:
            assert m.get() == 0.0
            continue
        tol = 2e-3 if cls is ROCAUC else 1e-9
        assert m.get() == pytest.approx(reference(tail_y, tail_p), abs=tol), cls


def test_single_updates_equal_batch_updates():
    one, many = LogLoss(window=50), LogLoss(window=50)
    for y, p in zip(Y[:120], P[:120], strict=True):
        one.update(y, {False: 1 - p, True: p})
    many.update_many(list(Y[:120]), PROBA[:120], CLASSES)
    assert one.get() == pytest.approx(many.get())
    assert MAE().bigger_is_better is False and Accuracy().bigger_is_better is True
    with pytest.raises(ValidationError) as info:  # a probability metric reads a mapping
        one.update(True, 0.7)
    assert info.value.field == "y_pred" and info.value.got == "float"


def test_metrics_refuse_learners_they_do_not_fit():
    with pytest.raises(ConfigError) as info:
        check_compatible(MAE(), LogisticRegression(bits=4))
    assert "MAE" in str(info.value) and "LogisticRegression" in str(info.value)
    with pytest.raises(ConfigError):
        check_compatible(ROCAUC(), SoftmaxRegression(bits=4))
    with pytest.raises(ConfigError):
        progressive_score(LinearRegression(bits=4), [({"a": 1.0}, 1.0)], [Accuracy()])
    for bad in (0, -3, 2.5, "10"):
        with pytest.raises(ConfigError) as info:
            Accuracy(window=bad)
        assert info.value.field == "window"


def test_prequential_predicts_before_learning():
    model = LogisticRegression(bits=6)
    xs, ys = [{"a": 1.0}] * 10, [True] * 10
    acc, loss = Accuracy(), LogLoss()
    preds = prequential(model, xs, ys, [acc, loss])
    assert preds.tolist() == [False] * 10  # untrained: p = 0.5 ties to the first class
    assert acc.get() == 0.0 and loss.get() == pytest.approx(np.log(2))
    assert model.n_learned == 10 and model.predict_proba_one({"a": 1.0})[True] > 0.5


def test_progressive_score_batching_changes_only_the_update_schedule():
    data = [({"x": float(i % 10), "c": "ab"[i % 2]}, (i % 10) > 4) for i in range(2000)]
    one = progressive_score(LogisticRegression(bits=6, scale=True), data, [Accuracy()])
    ten = progressive_score(LogisticRegression(bits=6, scale=True), data, [Accuracy()], 10)
    assert one["Accuracy"] > 0.9 and ten["Accuracy"] > 0.8


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.bool_])
def test_numeric_label_arrays_score_and_learn_as_label_lists(dtype):
    # the training job hands 0/1 labels as a numpy array: the same metrics and
    # the same model as the labels given one Python value at a time
    rng = np.random.default_rng(5)
    numbers, keys = rng.normal(size=300), rng.integers(0, 9, 300)
    xs = [{"a": float(v), "c": f"k{int(k)}"} for v, k in zip(numbers, keys, strict=True)]
    ys = (rng.random(300) < 0.4).astype(dtype)
    as_array = (LogisticRegression(bits=8), [Accuracy(), LogLoss()])
    as_list = (LogisticRegression(bits=8), [Accuracy(), LogLoss()])
    for i in range(0, 300, 100):
        prequential(as_array[0], xs[i:i + 100], ys[i:i + 100], as_array[1])
        prequential(as_list[0], xs[i:i + 100], ys[i:i + 100].tolist(), as_list[1])
    assert 0 < as_array[1][0].get() < 1
    assert [m.get() for m in as_array[1]] == pytest.approx([m.get() for m in as_list[1]],
                                                          rel=1e-12)
    np.testing.assert_array_equal(as_array[0].weights, as_list[0].weights)


def test_numeric_label_arrays_other_than_0_1_are_refused_naming_the_label():
    with pytest.raises(ValidationError) as err:
        LogisticRegression(bits=4).learn_many([{"a": 1.0}, {"a": 2.0}], np.array([1.0, 0.5]))
    assert err.value.field == "label"
    # and a label that is no class scores as a miss, as in a list
    for labels in (np.array([2.0, 1.0]), [2.0, 1.0]):
        acc, loss = Accuracy(), LogLoss()
        acc.update_many(labels, np.array([True, True], dtype=object), [False, True])
        loss.update_many(labels, np.array([[0.5, 0.5], [0.2, 0.8]]), [False, True])
        assert acc.get() == 0.5
        assert loss.get() == pytest.approx((-np.log(1e-15) - np.log(0.8)) / 2)


def test_accuracy_of_numeric_labels_against_predictions_that_are_no_numbers():
    acc = Accuracy()
    acc.update_many(np.array([1, 0, 1]), np.array(["a", 0, 1], dtype=object), [0, 1])
    assert acc.get() == pytest.approx(2 / 3)
