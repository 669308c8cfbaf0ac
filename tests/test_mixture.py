"""The mixture of logistic regressions (``LogisticMixture``) against its definition:
``K`` logistic regressions, each the per-event reference of ``tests/test_kernel.py``
at its own rate, answering with their Bayes mixture; and the checks every learner
passes (state, clone, merging, serving, the job's configuration)."""

from __future__ import annotations

import copy
import math
import zlib

import numpy as np
import pytest

from streamlearn.errors import ConfigError
from streamlearn.learners import LogisticMixture, LogisticRegression, learner_from_state
from streamlearn.learners.mixture import MAX_COMPONENTS, mixture_weights
from streamlearn.merge import DeltaTracker, Merger
from streamlearn.optim import AdaGrad, Normalized
from streamlearn.state import ModelState
from tests.test_kernel import _compare, _entries, _events, reference_event

RATES = (1.0, 0.5, 0.2)


def _kwargs(variant):
    kwargs = {"bits": 4, "dense": ["d"], "intercept_lr": 0.05}
    if variant == "scaled":
        kwargs["scale"] = True
    elif variant == "own-intercept":
        kwargs["intercept_lr"] = None
    elif variant == "l2":
        kwargs["l2"] = 0.05
    elif variant == "clipped":
        kwargs["clip_gradient"] = 0.3
    return kwargs


def _reference(data, weights, variant, rates=RATES, lr=0.4, mutate=None):
    """The mixture by its definition: one reference learner per rate, each learning every
    event; the prediction their probabilities weighted by exp(-summed log-loss before).
    Returns the predictions and, after each event, the states as the mixture's arrays."""
    comps = [LogisticRegression(Normalized(lr * (r if mutate != "rates" else 1.0),
                                           invariant=False), update="event", **_kwargs(variant))
             for r in rates]
    states = [{k: v.copy() for k, v in c.state().arrays.items()} for c in comps]
    batch = comps[0].encode([x for x, _ in data])
    losses = [0.0] * len(rates)
    preds, after = [], []
    for i, (_, y) in enumerate(data):
        label = float(y)
        ps = [reference_event(c, s, _entries(batch, i), label, weights[i], i + 1, 1)
              for c, s in zip(comps, states, strict=True)]
        least = min(losses)
        prior = [1.0 if mutate == "prior" else math.exp(least - v) for v in losses]
        preds.append(sum(a * p for a, p in zip(prior, ps, strict=True)) / sum(prior))
        for c, p in enumerate(ps):
            losses[c] += weights[i] * -math.log(p if label else 1.0 - p)
        mixed = {}
        for name in states[0]:
            parts = [s[name] for s in states]
            if name in ("normalized.scale", "normalized.n") or name.startswith("scaler."):
                for other in parts[1:]:  # what the data alone sets: the same in all
                    np.testing.assert_array_equal(other, parts[0], err_msg=name)
                mixed[name] = parts[0].copy()
            elif parts[0].shape == (1,):
                mixed[name] = np.concatenate(parts)
            else:
                mixed[name] = np.stack(parts, axis=1)
        mixed["mixture.loss"] = np.array(losses)
        after.append(mixed)
    return preds, after


VARIANTS = ["raw", "scaled", "own-intercept", "l2", "clipped"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_mixture_follows_its_components_reference_event_by_event(variant):
    data = _events("binary", 60, seed=zlib.crc32(variant.encode()))
    weights = np.array([0.5 + (i % 4) * 0.5 for i in range(len(data))])
    want_p, want_states = _reference(data, weights, variant)
    model = LogisticMixture(Normalized(0.4, invariant=False), rates=RATES, **_kwargs(variant))
    _compare(model, data, weights, want_p, want_states)  # event by event, to 1e-9
    # the components learned apart: their weights differ, and so do their losses
    w = model.weights
    assert not np.allclose(w[:, 0], w[:, 1])
    assert len(set(model.state().arrays["mixture.loss"])) == 3

    # the whole stream as one bundle: the same answers and state
    whole = LogisticMixture(Normalized(0.4, invariant=False), rates=RATES, **_kwargs(variant))
    preds = whole.predict_learn_many([x for x, _ in data], [y for _, y in data], weights)
    np.testing.assert_allclose(preds[:, 1], want_p, rtol=1e-9, atol=1e-9)
    for name, want in want_states[-1].items():
        np.testing.assert_allclose(whole.state().arrays[name], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mutate", ["prior", "rates"])
def test_a_changed_rule_breaks_the_comparison(mutate):
    data = _events("binary", 60, seed=3)
    weights = np.ones(len(data))
    want_p, want_states = _reference(data, weights, "raw", mutate=mutate)
    model = LogisticMixture(Normalized(0.4, invariant=False), rates=RATES, **_kwargs("raw"))
    got = model.predict_learn_many([x for x, _ in data], [y for _, y in data], weights)[:, 1]
    differs = not np.allclose(got, want_p, rtol=1e-9, atol=1e-9) or not np.allclose(
        model.weights, want_states[-1]["weights"], rtol=1e-9, atol=1e-9)
    assert differs


def test_the_mixture_loses_at_most_log_k_more_than_its_best_component():
    """The Bayes mixture's bound, on a stream where the rates differ: its summed
    log-loss is at most the best component's plus log K (and below the worst's)."""
    from streamlearn.generators import clicks

    events = list(clicks(20_000, seed=1))
    ys = np.array([float(e["label"]) for e in events])
    model = LogisticMixture(rates=[1.0, 0.25, 0.05], bits=16, intercept_lr=None)
    p = model.predict_learn_many([e["features"] for e in events], ys)[:, 1]
    total = float(-(ys * np.log(p) + (1 - ys) * np.log(1 - p)).sum())
    losses = model.state().arrays["mixture.loss"]
    assert total <= losses.min() + math.log(3) + 1e-6
    assert total < losses.max() - 10  # it follows the better rates, not the average
    assert losses.max() - losses.min() > 10


def test_an_event_of_weight_zero_changes_nothing_but_counts():
    model = LogisticMixture(bits=6)
    model.learn_many([{"a": 1.0}], [True])
    before = model.state()
    model.learn_many([{"a": 0.5}], [False], weights=[0.0])  # within the slot's scale
    for name, arr in before.arrays.items():
        np.testing.assert_array_equal(model.state().arrays[name], arr, err_msg=name)
    assert model.n_learned == 2


def test_mixture_weights_are_exp_minus_loss_normalised():
    w = mixture_weights(np.array([1000.0, 1001.0, 1e6]))
    np.testing.assert_allclose(w, [1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1)),
                                   0.0], rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rates": [1.0]}, "rates"),
        ({"rates": []}, "rates"),
        ({"rates": [1.0] * (MAX_COMPONENTS + 1)}, "rates"),
        ({"rates": [1.0, 0.0]}, "rates"),
        ({"rates": [1.0, float("inf")]}, "rates"),
        ({"rates": [1.0, True]}, "rates"),
        ({"rates": "1,2"}, "rates"),
        ({"optimizer": Normalized(0.5)}, "optimizer"),
        ({"optimizer": AdaGrad(0.1)}, "optimizer"),
        ({"l1": 0.01}, "l1"),
        ({"update": "batch"}, "update"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        LogisticMixture(**kwargs)
    assert info.value.field == field


def _stream(n, seed):
    rng = np.random.default_rng(seed)
    xs = [{"user": f"u{int(rng.integers(300))}", "item": f"i{int(rng.integers(40))}",
           "n0": float(rng.normal())} for _ in range(n)]
    ys = [bool(rng.random() < 0.3 + 0.4 * (x["n0"] > 0)) for x in xs]
    return xs, ys


@pytest.mark.parametrize("variant", ["raw", "scaled", "own-intercept", "l2"])
def test_battery(variant):
    xs, ys = _stream(150, seed=1)
    kwargs = {k: v for k, v in _kwargs(variant).items() if k != "dense"}

    def make():
        return LogisticMixture(rates=[1.0, 0.5], **{**kwargs, "bits": 8})

    a, b, many = make(), make(), make()
    assert repr(a).startswith("LogisticMixture(optimizer=Normalized(lr=0.5, invariant=False)")
    answers = []
    for x, y in zip(xs[:40], ys[:40], strict=True):
        answers.append(a.predict_proba_many([x])[0])
        a.learn_one(x, y)
        b.learn_many(b.encode([x]), [y])
    before = many.predict_learn_many(xs[:40], ys[:40])
    for other in (b, many):
        np.testing.assert_allclose(other.weights, a.weights, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.array(answers), before, rtol=1e-12, atol=1e-15)
    assert a.predict_proba_one(xs[0]) == dict(zip(a.classes_, a.predict_proba_many(
        [xs[0]])[0].tolist(), strict=True))
    assert a.predict_one(xs[0]) == a.predict_many([xs[0]])[0]

    # state → Arrow bytes → a learner that predicts identically and goes on identically
    a.learn_many(xs[40:100], ys[40:100])
    again = learner_from_state(ModelState.from_bytes(a.state().to_bytes()))
    assert type(again) is LogisticMixture and again.params() == a.params()
    np.testing.assert_array_equal(again.predict_proba_many(xs[100:]),
                                  a.predict_proba_many(xs[100:]))
    again.learn_many(xs[100:], ys[100:])
    a.learn_many(xs[100:], ys[100:])
    for name, arr in a.state().arrays.items():
        np.testing.assert_array_equal(again.state().arrays[name], arr, err_msg=name)

    # clone: same parameters, nothing learned, learns identically
    c = a.clone()
    assert c.params() == a.params() and c.n_learned == 0 and not c.weights.any()
    fresh = make()
    c.learn_many(xs[:50], ys[:50])
    fresh.learn_many(xs[:50], ys[:50])
    np.testing.assert_array_equal(c.weights, fresh.weights)

    # a state of other rates does not load
    with pytest.raises(Exception, match="rates"):
        LogisticMixture(rates=[1.0, 0.25], **{**kwargs, "bits": 8}).load_state(a.state())

    # the input is never changed
    before_x, before_y = copy.deepcopy(xs), copy.deepcopy(ys)
    m = make()
    m.learn_many(xs, ys)
    m.predict_many(xs)
    assert xs == before_x and ys == before_y


def test_merged_learners_add_their_losses_and_their_weights_changes():
    """Two learners' deltas: the global model's summed losses are the sum of both
    learners' (each component's loss over all events), and the weights merge as a
    logistic regression's do, column by column."""
    base = LogisticMixture(rates=[1.0, 0.5], bits=8)
    merger = Merger(base.state(), version=0, n_learners=2)
    learners = [base.clone(), base.clone()]
    trackers = [DeltaTracker(lr, 0) for lr in learners]
    for i, (lr, tracker) in enumerate(zip(learners, trackers, strict=True)):
        xs, ys = _stream(200, seed=10 + i)
        lr.learn_many(xs, ys)
        merger.add(tracker.take(learner_id=str(i)))
    merger.commit(1)
    merged = merger.state()
    want = sum(lr.state().arrays["mixture.loss"] for lr in learners)
    np.testing.assert_allclose(merged.arrays["mixture.loss"], want, rtol=1e-12)
    assert merged.arrays["weights"].shape == (base.n_slots, 2)
    model = learner_from_state(merged)
    assert isinstance(model, LogisticMixture)
    np.testing.assert_allclose(model.mixture_weights(), mixture_weights(want), rtol=1e-12)


def _served_answers(served, xs):
    """Every way the service answers events: many, one decoded, one raw body (C)."""
    import orjson

    many = np.asarray(served.predict_features(xs).probabilities)[:, 1]
    one = [served.predict_one(x)[1][1] for x in xs]
    raw = []
    for x in xs:
        body = orjson.dumps({"features": x, "id": "e"})
        got = served.predict_event(body)
        if got is False:  # a name the native tables lack: decoded, then remembered
            served.remember(x)
            got = served.predict_event(body)
        raw.append(got[0][1][1] if got else served.predict_one(x)[1][1])
    return many, np.array(one), np.array(raw)


@pytest.mark.parametrize("scale", [False, True], ids=["native", "scaled"])
def test_served_answers_are_the_learners_and_follow_a_delta(scale):
    """The prediction service's scorer of a mixture (one logistic scorer per component,
    the mixture as one log-odds) answers as the learner does, in numpy, in plain Python
    and from raw bodies in C, and follows a delta version (rows of both columns, the
    summed losses) in place."""
    from streamlearn.serving.learner_predictor import LearnerPredictor
    from streamlearn.serving.mixture_scorer import MixtureScorer
    from streamlearn.serving.model import Step
    from streamlearn.store.delta import Changes

    xs, ys = _stream(300, seed=4)
    model = LogisticMixture(rates=[1.0, 0.3], bits=8, scale=scale)
    model.learn_many(xs[:200], ys[:200])
    assert 0.01 < model.mixture_weights().min()  # both components count
    served = LearnerPredictor(learner_from_state(model.state()), 1, 0.0,
                              classes=model.classes_, meta=model.state().meta)
    assert type(served._scorer) is MixtureScorer and served.can_follow
    assert (served._native is None) == scale  # the components' C tables, unscaled only
    for got in _served_answers(served, xs[200:]):
        np.testing.assert_allclose(got, model.predict_proba_many(xs[200:])[:, 1], rtol=1e-12)
    if not scale:
        assert served.native_hits > 0

    before = model.state()
    model.learn_many(xs[200:250], ys[200:250])
    after = model.state()
    changed = np.flatnonzero((after.arrays["weights"] != before.arrays["weights"]).any(axis=1))
    rows = {k: v[changed] for k, v in after.arrays.items()
            if v.ndim >= 1 and v.shape[0] == model.n_slots}
    small = {k: v for k, v in after.arrays.items() if k not in rows}
    assert not np.array_equal(small["mixture.loss"], before.arrays["mixture.loss"])
    served.apply(Step(since=1, version=2, changes=Changes(changed, rows, small, after.meta)))
    for got in _served_answers(served, xs[250:]):
        np.testing.assert_allclose(got, model.predict_proba_many(xs[250:])[:, 1], rtol=1e-12)


def test_the_mixed_log_odds_are_finite_and_exact_at_the_extremes():
    from streamlearn.serving.mixture_scorer import _mixed_log_odds_many, mixed_log_odds

    for z, prior in (([800.0, -800.0], [0.5, 0.5]), ([-40.0, -38.0], [1.0, 0.0]),
                     ([30.0, 35.0], [0.3, 0.7]), ([0.0, 0.0, 0.0], [0.2, 0.3, 0.5])):
        got = mixed_log_odds(z, prior)
        assert math.isfinite(got)
        zc = np.clip(z, -500, 500)
        p = float(np.dot(prior, 1 / (1 + np.exp(-zc))))
        q = float(np.dot(prior, 1 / (1 + np.exp(zc))))
        assert got == pytest.approx(math.log(p) - math.log(q), rel=1e-12, abs=1e-12)
        many = _mixed_log_odds_many(np.array([z]), np.array(prior))
        assert many[0] == pytest.approx(got, rel=1e-12, abs=1e-12)


def test_the_jobs_configuration_builds_a_mixture_and_refuses_what_does_not_fit():
    from streamlearn.training.config import TrainConfig

    learner = TrainConfig.from_dict({"model": {"rates": [1, 0.5]}}).make_learner()
    assert isinstance(learner, LogisticMixture) and learner.rates == (1.0, 0.5)
    assert learner.optimizer == Normalized(0.5, invariant=False)
    assert learner.intercept_lr is None and learner.update == "event"
    assert type(TrainConfig.from_dict({}).make_learner()) is LogisticRegression
    for model, field in (
        ({"rates": [1]}, "model.rates"),
        ({"rates": [1, -0.5]}, "model.rates"),
        ({"rates": [1.0] * (MAX_COMPONENTS + 1)}, "model.rates"),
        ({"rates": "1, 0.5"}, "model.rates"),
        ({"rates": [1, 0.5], "task": "regression"}, "model.task"),
        ({"rates": [1, 0.5], "optimizer": "adagrad"}, "model.optimizer"),
        ({"rates": [1, 0.5], "factors": 4}, "model.factors"),
        ({"rates": [1, 0.5], "l1": 0.1}, "model.l1"),
    ):
        with pytest.raises(ConfigError) as info:
            TrainConfig.from_dict({"model": model})
        assert info.value.field == field, model


def test_the_kernel_refuses_rates_or_losses_that_do_not_fit_the_components():
    model = LogisticMixture(rates=[1.0, 0.5], bits=6)
    model._rate_array = np.array([1.0, 0.5, 0.25])
    with pytest.raises(ValueError, match="mixture rates/loss"):
        model.learn_many([{"a": 1.0}], [True])
    model = LogisticMixture(rates=[1.0, 0.5], bits=6)
    model._arrays["mixture.loss"] = np.zeros(3)
    with pytest.raises(ValueError, match="mixture rates/loss"):
        model.learn_many([{"a": 1.0}], [True])
    assert not model.weights.any()


def test_reading_the_jobs_configuration_imports_no_learner():
    """``model.rates``' bound lives with the learner; the configuration reads it only when
    rates are set, so that reading a configuration (a CLI's --help) stays light."""
    import subprocess
    import sys

    code = ("import sys, streamlearn.training.config as c; "
            "print(sorted(m for m in ('numpy', 'streamlearn.learners') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
