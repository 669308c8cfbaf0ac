"""One check battery over every learner × optimiser (× plain / penalised / scaled) ×
update mode (mini-batch steps in numpy, per-event steps in the compiled kernel)."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

import streamlearn.learners as learners_pkg
import streamlearn.optim as optim_pkg
from streamlearn.errors import ValidationError
from streamlearn.learners import UPDATES, LinearModel, has_kernel, learner_from_state
from streamlearn.state import ModelState

LINEAR = [
    getattr(learners_pkg, name)
    for name in learners_pkg.__all__
    if isinstance(getattr(learners_pkg, name), type)
    and issubclass(getattr(learners_pkg, name), LinearModel)
    and getattr(learners_pkg, name) is not LinearModel
    and not name.startswith("FM")
    and name != "LogisticMixture"  # its own battery: tests/test_mixture.py
]
FMS = [learners_pkg.FMRegressor, learners_pkg.FMClassifier]
OPTIMIZERS = list(optim_pkg.OPTIMIZERS.values())


def _make(cls, opt_cls, variant, update="batch"):
    if variant == "plain":
        return cls(opt_cls(), bits=8, update=update)
    if variant == "scaled":
        return cls(opt_cls(), bits=8, scale=True, update=update)
    if variant == "own-intercept":  # the intercept learned by the optimiser's rule
        return cls(opt_cls(), bits=8, intercept_lr=None, update=update)
    if opt_cls is optim_pkg.FTRL:
        return cls(optim_pkg.FTRL(l1=0.01, l2=0.1), bits=8, dense=["n0"], update=update)
    return cls(opt_cls(), bits=8, dense=["n0"], l1=0.001, l2=0.01, update=update)


CASES = [
    pytest.param(cls, opt, variant, update,
                 id=f"{cls.__name__}-{opt.__name__}-{variant}-{update}")
    for cls in LINEAR
    for opt in OPTIMIZERS
    for variant in ("plain", "penalised", "scaled", "own-intercept")
    for update in UPDATES
    if update == "event" or not opt.per_event_only
]


def test_battery_covers_every_learner_optimizer_and_update_mode():
    names = {c.__name__ for c in LINEAR}
    assert names == {"LinearRegression", "LogisticRegression", "SoftmaxRegression"}
    assert {o.__name__ for o in OPTIMIZERS} == {"SGD", "AdaGrad", "Adam", "FTRL", "Normalized"}
    assert UPDATES == ("batch", "event")
    # the kernel is built wherever a compiler is (this machine has one)
    assert has_kernel()
    covered = {(c.values[1], c.values[3]) for c in CASES}
    assert {(o, "event") for o in OPTIMIZERS} <= covered


def _stream(task, n, seed=0, extra=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {
            "n0": rng.gauss(0, 1),
            "n1": rng.uniform(-2, 2),
            "color": rng.choice(["red", "green", "blue"]),
            "tags": rng.sample(["a", "b", "c", "d"], rng.randint(0, 2)),
            "vip": rng.random() < 0.3,
        }
        if extra and i % 2:
            x[f"new{i % extra}"] = 1.5  # features that appear and vanish
        score = 2 * x["n0"] - x["n1"] + (x["color"] == "red") + 0.5 * x["vip"]
        if task == "regression":
            y = score + rng.gauss(0, 0.1)
        elif task == "binary":
            y = score > 0.3
        else:
            y = "low" if score < -0.5 else ("mid" if score < 1.0 else "high")
        out.append((x, y))
    return out


def _task(cls):
    return cls.task


def _predict(model, xs):
    if model.task == "regression":
        return np.asarray(model.predict_many(xs), dtype=float)
    return model.predict_proba_many(xs)


@pytest.mark.parametrize("cls, opt, variant, update", CASES)
def test_battery(cls, opt, variant, update):
    data = _stream(_task(cls), 120, seed=1, extra=5)
    xs = [x for x, _ in data]
    ys = [y for _, y in data]
    make = lambda: _make(cls, opt, variant, update)  # noqa: E731

    # repr names the learner and its optimiser
    model = make()
    assert repr(model).startswith(f"{cls.__name__}(optimizer={opt.__name__}(")
    assert f"update={update!r}" in repr(model)

    # one by one equals batches of one, through both entry points
    a, b = make(), make()
    for x, y in data[:40]:
        a.learn_one(x, y)
        b.learn_many(b.encode([x]), [y])
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-12, atol=1e-15)
    assert a.weights.any()

    if update == "event":
        # a batch learns its events one by one, in order, as learn_one does;
        # predict_learn_many answers each event before learning it
        one, many = make(), make()
        answers = []
        for x, y in data[:40]:
            answers.append(_predict(one, [x])[0])
            one.learn_one(x, y)
        before = many.predict_learn_many(xs[:40], ys[:40])
        np.testing.assert_allclose(many.weights, one.weights, rtol=1e-12, atol=1e-15)
        assert many.n_learned == one.n_learned == 40
        if cls.task == "multiclass":  # classes unseen at an event get probability 0
            width = before.shape[1]
            answers = [np.pad(p, (0, width - len(p))) for p in answers]
        np.testing.assert_allclose(np.array(answers), before, rtol=1e-12, atol=1e-15)

    # a batch of n copies of one event is one learn_one step (mean gradient);
    # not with a scaler, whose statistics count every copy; not per event
    for x, y in data[40:45] if not a.scale and update == "batch" else ():
        single, batched = a.clone(), a.clone()
        single.load_state(a.state())
        batched.load_state(a.state())
        single.learn_one(x, y)
        batched.learn_many([x] * 7, [y] * 7)
        np.testing.assert_allclose(batched.weights, single.weights, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            batched.state().arrays["intercept"], single.state().arrays["intercept"], rtol=1e-9
        )

    # the batch gradient is the mean of the events' gradients
    slots, g, gi = a.gradient(xs[:30], ys[:30])
    total, seen = {}, {}
    total_i = 0.0
    for x, y in data[:30]:
        s1, g1, gi1 = a.gradient([x], [y])
        for s, v in zip(s1.tolist(), g1, strict=True):
            total[s] = total.get(s, 0.0) + v / 30
            seen[s] = seen.get(s, 0) + 1
        total_i = total_i + gi1 / 30
    for s in total:  # the L2 term is added once per slot, not once per event
        total[s] = total[s] + a.l2 * a.weights[s] * (1 - seen[s] / 30)
    np.testing.assert_allclose(np.array([total[s] for s in slots.tolist()]), g, atol=1e-10)
    np.testing.assert_allclose(total_i, gi, atol=1e-12)

    # finite differences agree with the gradient
    a.learn_many(xs[:60], ys[:60])
    slots, g, gi = a.gradient(xs[60:90], ys[60:90])
    state = a.state()
    eps = 1e-6
    flat_g = g.reshape(len(slots), -1)
    for j in range(min(len(slots), 6)):
        for k in range(flat_g.shape[1]):
            numeric = []
            for sign in (1, -1):
                st = state.copy()
                w = st.arrays["weights"]
                if w.ndim == 1:
                    w[slots[j]] += sign * eps
                else:
                    w[slots[j], k] += sign * eps
                numeric.append(learner_from_state(st).objective(xs[60:90], ys[60:90]))
            assert (numeric[0] - numeric[1]) / (2 * eps) == pytest.approx(
                flat_g[j, k], rel=1e-4, abs=1e-7
            )
    st = state.copy()
    st.arrays["intercept"][0] += eps
    up = learner_from_state(st).objective(xs[60:90], ys[60:90])
    st.arrays["intercept"][0] -= 2 * eps
    down = learner_from_state(st).objective(xs[60:90], ys[60:90])
    assert (up - down) / (2 * eps) == pytest.approx(np.atleast_1d(gi)[0], rel=1e-4, abs=1e-7)

    # state → Arrow bytes → a learner that predicts identically and goes on identically
    again = learner_from_state(ModelState.from_bytes(a.state().to_bytes()))
    assert type(again) is cls and again.params() == a.params()
    np.testing.assert_array_equal(_predict(again, xs[90:]), _predict(a, xs[90:]))
    again.learn_many(xs[90:], ys[90:])
    a.learn_many(xs[90:], ys[90:])
    np.testing.assert_array_equal(again.weights, a.weights)
    assert again.n_learned == a.n_learned

    # clone: same parameters, nothing learned, learns identically
    c = a.clone()
    assert c.params() == a.params() and c.n_learned == 0 and not c.weights.any()
    fresh = make()
    c.learn_many(xs[:50], ys[:50])
    fresh.learn_many(xs[:50], ys[:50])
    np.testing.assert_array_equal(c.weights, fresh.weights)

    # feature order does not matter
    shuffled = [dict(reversed(list(x.items()))) for x in xs]
    np.testing.assert_allclose(_predict(a, shuffled), _predict(a, xs), rtol=1e-12, atol=1e-12)
    o1, o2 = make(), make()
    o1.learn_many(xs[:60], ys[:60])
    o2.learn_many(shuffled[:60], ys[:60])
    np.testing.assert_allclose(o1.weights, o2.weights, rtol=1e-12, atol=1e-14)

    # unseen and vanishing features
    unseen = {"never_seen": 3.0, "other": "value"}
    p = _predict(a, [unseen])
    assert np.isfinite(p).all()
    a.learn_one({"n1": 0.5}, ys[0])  # most features vanish
    a.learn_one(unseen, ys[1])
    assert np.isfinite(a.weights).all()

    # the input is never changed
    before_x, before_y = copy.deepcopy(xs), copy.deepcopy(ys)
    m = make()
    m.learn_many(xs, ys)
    m.predict_many(xs)
    m.learn_one(xs[0], ys[0])
    m.predict_one(xs[0])
    assert xs == before_x and ys == before_y


@pytest.mark.parametrize(
    "cls", [c for c in LINEAR if c.task != "multiclass"], ids=lambda c: c.__name__
)
@pytest.mark.parametrize(
    "sgd", [optim_pkg.SGD(0.05), optim_pkg.SGD(0.5, schedule="invscaling")],
    ids=["constant", "invscaling"],
)
@pytest.mark.parametrize("scale", [False, True], ids=["raw", "scaled"])
def test_sgd_scatter_add_step_equals_the_grouped_step(cls, sgd, scale):
    # SGD without penalties adds each entry's share straight into the weights;
    # the general path sums each slot's entries first. 2**6 slots: many entries
    # of a batch share a slot.
    data = _stream(cls.task, 300, seed=3, extra=5)
    fast = cls(sgd, bits=6, scale=scale, dense=["n0"])
    grouped = fast.clone()
    grouped._additive = False
    assert fast._additive
    for i in range(0, 300, 50):
        xs, ys = [x for x, _ in data[i:i + 50]], [y for _, y in data[i:i + 50]]
        fast.learn_many(xs, ys)
        grouped.learn_many(xs, ys)
    assert fast.weights.any()
    np.testing.assert_allclose(fast.weights, grouped.weights, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(
        fast.state().arrays["intercept"], grouped.state().arrays["intercept"], rtol=1e-12
    )


def test_only_penalty_free_sgd_takes_the_scatter_add_step():
    LR = learners_pkg.LogisticRegression
    assert LR(optim_pkg.SGD())._additive
    assert not LR(optim_pkg.SGD(), l2=0.01)._additive
    assert not LR(optim_pkg.SGD(), l1=0.01)._additive
    assert not any(LR(o())._additive for o in OPTIMIZERS
                   if o is not optim_pkg.SGD and not o.per_event_only)


@pytest.mark.parametrize("cls", LINEAR, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "features, field",
    [
        ({"a": float("nan")}, "features.a"),
        ({"a": float("inf"), "b": 1.0}, "features.a"),
        ({"a": None}, "features.a"),
        ({"a": {"nested": 1}}, "features.a"),
        ({"a": [1, 2]}, "features.a"),
        ({}, "features"),
        ({3.5: 1.0}, "features"),  # an integer name is its decimal text: see test_contract
    ],
    ids=["nan", "inf", "none", "dict", "list-of-numbers", "empty", "non-string-name"],
)
def test_bad_features_name_the_field(cls, features, field):
    model = cls(bits=6)
    label = {"regression": 1.0, "binary": True, "multiclass": "x"}[cls.task]
    good = {"ok": 1.0}
    for call in (
        lambda: model.learn_one(features, label),
        lambda: model.learn_many([good, features], [label, label]),
        lambda: model.predict_one(features),
    ):
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.field == field
    with pytest.raises(ValidationError) as info:
        model.learn_many([good, features], [label, label])
    if field != "features" or features:
        assert "event 1" in str(info.value)
    assert model.n_learned == 0


@pytest.mark.parametrize("cls", LINEAR, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "bad, field",
    [
        ({"n": float("nan")}, "features.n"),
        ({"n": None}, "features.n"),
        ({"n": "word"}, "features.n"),  # a string for a dense feature
        ({"c": 2.5j}, "features.c"),
        ({"c": ["a", 1]}, "features.c"),
        ({"flag": {"x": 1}}, "features.flag"),
    ],
    ids=["nan", "none", "string-for-dense", "complex", "list-of-mixed", "dict"],
)
def test_bad_features_in_a_known_schema_name_the_field(cls, bad, field):
    """Once batches of one schema are known (encoded by position), a bad value
    is still named, with its event, and nothing is learned from the batch."""
    label = {"regression": 1.5, "binary": True, "multiclass": "x"}[cls.task]
    model = cls(bits=8, dense=["n"])
    good = [{"c": f"v{i % 4}", "n": i / 10, "flag": i % 2 == 0, "m": i} for i in range(30)]
    for _ in range(3):
        model.learn_many(good, [label] * 30)
    before, learned = model.weights.copy(), model.n_learned
    for at in (0, 29):
        events = [dict(x) for x in good]
        events[at].update(bad)
        with pytest.raises(ValidationError) as info:
            model.learn_many(events, [label] * 30)
        assert info.value.field == field and f"event {at}" in str(info.value)
    np.testing.assert_array_equal(model.weights, before)
    assert model.n_learned == learned
    model.learn_many(good, [label] * 30)  # and the next good batch learns
    assert model.n_learned == learned + 30


@pytest.mark.parametrize(
    "model, good, bad",
    [
        (learners_pkg.LogisticRegression(bits=6), True, 2),
        (learners_pkg.LogisticRegression(bits=6), 0, "yes"),
        (learners_pkg.LogisticRegression(bits=6, classes=["ham", "spam"]), "ham", "eggs"),
        (learners_pkg.SoftmaxRegression(bits=6, classes=["a", "b", "c"]), "a", "d"),
        (learners_pkg.SoftmaxRegression(bits=6), "a", 1.5),
        (learners_pkg.SoftmaxRegression(bits=6), "a", None),
        (learners_pkg.LinearRegression(bits=6), 1.0, "3.0"),
        (learners_pkg.LinearRegression(bits=6), 1.0, float("nan")),
        (learners_pkg.LinearRegression(bits=6), 1.0, None),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_bad_labels_name_the_field(model, good, bad):
    with pytest.raises(ValidationError) as info:
        model.learn_many([{"a": 1.0}, {"a": 2.0}], [good, bad])
    assert info.value.field == "label" and "event 1" in str(info.value)
    assert not model.weights.any() and model.n_learned == 0
    if model.task == "multiclass":  # a refused batch adds no class
        assert model.classes_ == model.params()["classes"] or model.classes_ == []
        model.learn_one({"a": 1.0}, good)
        assert np.isfinite(model.predict_proba_many([{"a": 1.0}])).all()


def test_labels_must_match_events_in_number():
    model = learners_pkg.LogisticRegression(bits=6)
    with pytest.raises(ValidationError) as info:
        model.learn_many([{"a": 1.0}], [True, False])
    assert info.value.field == "ys"


def test_classes_given_up_front_and_discovered():
    fixed = learners_pkg.LogisticRegression(bits=6, classes=["ham", "spam"])
    fixed.learn_one({"w": "offer"}, "spam")
    assert set(fixed.predict_proba_one({"w": "offer"})) == {"ham", "spam"}
    assert fixed.predict_one({"w": "offer"}) == "spam"
    grown = learners_pkg.SoftmaxRegression(bits=6)
    assert grown.predict_one({"a": 1.0}) is None and grown.predict_proba_one({"a": 1.0}) == {}
    grown.learn_many([{"a": 1.0}, {"a": -1.0}], ["x", "y"])
    grown.learn_one({"a": 0.0}, "z")
    assert grown.classes_ == ["x", "y", "z"] and grown.weights.shape == (64, 3)
    again = learner_from_state(ModelState.from_bytes(grown.state().to_bytes()))
    assert again.classes_ == ["x", "y", "z"]
    np.testing.assert_array_equal(
        again.predict_proba_many([{"a": 1.0}]), grown.predict_proba_many([{"a": 1.0}])
    )


def test_ftrl_refuses_the_learners_own_penalties():
    from streamlearn.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        learners_pkg.LogisticRegression(optim_pkg.FTRL(), l1=0.1)
    assert info.value.field == "l1/l2"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"l2": -1.0}, "l2"),
        ({"bits": 40}, "bits"),
        ({"scale": "yes"}, "scale"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"dense": "age"}, "dense"),
    ],
)
def test_bad_settings_name_the_field(kwargs, field):
    from streamlearn.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        learners_pkg.LogisticRegression(**kwargs)
    assert info.value.field == field


def test_l1_makes_weights_exactly_zero():
    data = _stream("binary", 300, seed=3)
    noisy = [({**x, "noise": random.Random(i).random()}, y) for i, (x, y) in enumerate(data)]
    strong = learners_pkg.LogisticRegression(optim_pkg.SGD(0.05), bits=8, l1=0.05)
    for x, y in noisy:
        strong.learn_one(x, y)
    weak = learners_pkg.LogisticRegression(optim_pkg.SGD(0.05), bits=8)
    for x, y in noisy:
        weak.learn_one(x, y)
    assert (strong.weights != 0).sum() < (weak.weights != 0).sum()


@pytest.mark.parametrize(
    "module",
    ["streamlearn.features", "streamlearn.optim", "streamlearn.state", "streamlearn.metrics",
     "streamlearn.learners"],
)
def test_public_surface_is_what_all_says(module):
    import importlib

    mod = importlib.import_module(module)
    assert mod.__all__ and len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), name
    public = {n for n, v in vars(mod).items() if not n.startswith("_") and getattr(
        v, "__module__", None) == module}
    assert public <= set(mod.__all__), public - set(mod.__all__)


# -- the factorization machines: the same checks, per event ----------------------------------

FM_LINEAR = {
    "SGD": lambda: optim_pkg.SGD(0.05),
    "AdaGrad": lambda: optim_pkg.AdaGrad(0.1),
    "FTRL": lambda: optim_pkg.FTRL(l1=0.01, l2=0.1),
    "Normalized": lambda: optim_pkg.Normalized(0.5, invariant=False),
}
FM_FACTORS = {
    "SGD": lambda: optim_pkg.SGD(0.02),
    "AdaGrad": lambda: optim_pkg.AdaGrad(0.05),
    "FTRL": lambda: optim_pkg.FTRL(alpha=0.05, l2=0.01),
}
FM_CASES = [
    pytest.param(cls, lin, fac, variant, id=f"{cls.__name__}-{lin}-{fac}-{variant}")
    for cls in FMS
    for lin in FM_LINEAR
    for fac in FM_FACTORS
    for variant in ("plain", "penalised", "own-intercept")
]


def _make_fm(cls, lin, fac, variant):
    kwargs = {"k": 3, "bits": 8, "init_std": 0.1, "factor_optimizer": FM_FACTORS[fac]()}
    if variant == "penalised":
        kwargs.update(dense=["n0"], factor_l2=0.01, l2=0.0 if lin == "FTRL" else 0.01)
    if variant == "own-intercept":
        kwargs["intercept_lr"] = None
    return cls(FM_LINEAR[lin](), **kwargs)


def test_fm_battery_covers_both_tasks_and_every_allowed_optimizer():
    assert {c.task for c in FMS} == {"regression", "binary"}
    assert set(FM_LINEAR) == {"SGD", "AdaGrad", "FTRL", "Normalized"}
    assert set(FM_FACTORS) == {"SGD", "AdaGrad", "FTRL"}
    assert all(c.__name__ in learners_pkg.LEARNERS for c in FMS)


@pytest.mark.parametrize("cls, lin, fac, variant", FM_CASES)
def test_fm_battery(cls, lin, fac, variant):
    data = _stream(cls.task, 120, seed=1, extra=5)
    xs = [x for x, _ in data]
    ys = [y for _, y in data]
    make = lambda: _make_fm(cls, lin, fac, variant)  # noqa: E731

    model = make()
    assert repr(model).startswith(f"{cls.__name__}(optimizer={lin}(")
    assert "k=3" in repr(model) and f"factor_optimizer={{'name': '{fac}'" in repr(model)

    # one by one equals batches of one; a batch learns its events in order and
    # answers each as predict_many would just before it
    a, b, many = make(), make(), make()
    answers = []
    for x, y in data[:40]:
        answers.append(_predict(a, [x])[0])
        a.learn_one(x, y)
        b.learn_many(b.encode([x]), [y])
    before = many.predict_learn_many(xs[:40], ys[:40])
    for other in (b, many):
        np.testing.assert_allclose(other.weights, a.weights, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(other.factors, a.factors, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.array(answers), before, rtol=1e-9, atol=1e-12)
    assert a.weights.any() and (a.factors != make().factors).any()

    # state → Arrow bytes → a learner that predicts identically and goes on identically
    a.learn_many(xs[40:90], ys[40:90])
    again = learner_from_state(ModelState.from_bytes(a.state().to_bytes()))
    assert type(again) is cls and again.params() == a.params()
    np.testing.assert_array_equal(_predict(again, xs[90:]), _predict(a, xs[90:]))
    again.learn_many(xs[90:], ys[90:])
    a.learn_many(xs[90:], ys[90:])
    np.testing.assert_array_equal(again.factors, a.factors)
    assert again.n_learned == a.n_learned == 120

    # clone: same parameters and initial factors, nothing learned, learns identically
    c = a.clone()
    assert c.params() == a.params() and c.n_learned == 0 and not c.weights.any()
    np.testing.assert_array_equal(c.factors, make().factors)
    fresh = make()
    c.learn_many(xs[:50], ys[:50])
    fresh.learn_many(xs[:50], ys[:50])
    np.testing.assert_array_equal(c.factors, fresh.factors)

    # feature order does not matter
    shuffled = [dict(reversed(list(x.items()))) for x in xs]
    np.testing.assert_allclose(_predict(a, shuffled), _predict(a, xs), rtol=1e-12, atol=1e-12)
    o1, o2 = make(), make()
    o1.learn_many(xs[:60], ys[:60])
    o2.learn_many(shuffled[:60], ys[:60])
    np.testing.assert_allclose(o1.factors, o2.factors, rtol=1e-10, atol=1e-13)

    # unseen and vanishing features
    unseen = {"never_seen": 3.0, "other": "value"}
    assert np.isfinite(_predict(a, [unseen])).all()
    a.learn_one({"n1": 0.5}, ys[0])
    a.learn_one(unseen, ys[1])
    assert np.isfinite(a.weights).all() and np.isfinite(a.factors).all()

    # the input is never changed
    before_x, before_y = copy.deepcopy(xs), copy.deepcopy(ys)
    m = make()
    m.learn_many(xs, ys)
    m.predict_many(xs)
    m.learn_one(xs[0], ys[0])
    m.predict_one(xs[0])
    assert xs == before_x and ys == before_y
