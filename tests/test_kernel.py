"""The per-event kernel against a plain Python reference of each update rule.

``reference_event`` below is the specification of one per-event step, written
as plainly as possible (Python floats, one weight at a time); the compiled
kernel (``streamlearn/learners/_kernel.c``) must follow it event by event to
1e-9 for every model × optimiser × penalty, with and without the scaler,
importance weights and gradient clipping. Each rule also has a mutation: the
reference with that one rule changed must disagree with the kernel, so the
comparison has the power to catch a change in any rule.
"""

from __future__ import annotations

import math
import random
import zlib

import numpy as np
import pytest

from streamlearn.errors import ConfigError, ValidationError
from streamlearn.features import FeatureBatch
from streamlearn.learners import LinearRegression, LogisticRegression, SoftmaxRegression
from streamlearn.optim import FTRL, SGD, AdaGrad, Adam, Normalized

MODELS = [LinearRegression, LogisticRegression, SoftmaxRegression]
OPTIMIZERS = {
    "sgd": lambda: SGD(0.02),
    "sgd-invscaling": lambda: SGD(0.2, schedule="invscaling", power_t=0.4),
    "adagrad": lambda: AdaGrad(0.1),
    "adam": lambda: Adam(0.02),
    "ftrl": lambda: FTRL(alpha=0.2, beta=0.5),
    "normalized": lambda: Normalized(0.4),
    "normalized-plain": lambda: Normalized(0.4, invariant=False),
}
PENALTIES = ["none", "l1", "l2", "l1+l2"]


def _penalties(opt_name, penalty):
    """Learner kwargs, or an FTRL with its own penalties."""
    l1 = 0.01 if "l1" in penalty else 0.0
    l2 = 0.05 if "l2" in penalty else 0.0
    if opt_name == "ftrl":
        return FTRL(alpha=0.2, beta=0.5, l1=l1, l2=l2), {}
    return OPTIMIZERS[opt_name](), {"l1": l1, "l2": l2}


def _events(task, n, seed=0):
    """Events with hash collisions inside rows (4 bits), numbers of very
    different scales, a dense feature, one-hot strings and vanishing names."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {
            "d": rng.gauss(0, 3),
            "big": rng.uniform(-4, 4),
            "small": rng.uniform(-0.01, 0.01),
            "color": rng.choice(["red", "green", "blue", "teal"]),
            "tags": rng.sample(["a", "b", "c", "d", "e"], rng.randint(0, 3)),
            "flag": rng.random() < 0.4,
        }
        if i % 3 == 0:
            x[f"rare{i % 7}"] = 2.0
        score = 0.3 * x["d"] + 0.2 * x["big"] + (x["color"] == "red") - 0.5 * x["flag"]
        if task == "regression":
            y = score + rng.gauss(0, 0.2)
        elif task == "binary":
            y = score + rng.gauss(0, 0.5) > 0
        else:
            y = ["lo", "mid", "hi", "top"][min(3, max(0, int(score + 1.5 + rng.gauss(0, 0.3))))]
        out.append((x, y))
    return out


# -- the reference ------------------------------------------------------------------------


def _sigmoid(z):
    z = min(max(z, -500.0), 500.0)
    return 1.0 / (1.0 + math.exp(-z))


def _softmax(z):
    top = max(z)
    e = [math.exp(v - top) for v in z]
    s = sum(e)
    return [v / s for v in e]


def _invariant_ratio(kind, z, y, X, h):
    """The invariant step's scale: the move of ``z`` under the gradient flow of
    the event's loss over its weight ``h`` (speed ``X * -dloss/dz``), over the
    plain step's move ``X * h * -dloss/dz``."""
    xh = X * h
    if not xh > 1e-12:
        return 1.0
    if kind == "regression":  # z - y decays as exp(-X s)
        return (1.0 - math.exp(-xh)) / xh
    q0 = z if y > 0.5 else -z
    if q0 > 30.0:
        return 1.0
    # q + exp(q) grows by X h from q0; solved by bisection (the kernel uses Newton)
    c = q0 + math.exp(q0) + xh
    lo, hi = q0, q0 + xh / (1.0 + math.exp(q0))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid + math.exp(mid) < c:
            lo = mid
        else:
            hi = mid
    return (0.5 * (lo + hi) - q0) * (1.0 + math.exp(q0)) / xh


def reference_event(model, arrays, entries, y, weight, t, known, mutate=None):
    """One per-event step of ``model`` (settings only are read from it) on
    ``arrays`` (its state, changed in place): predict, then learn.

    ``entries`` is the event's ``[(slot, value, numeric), ...]``; ``y`` its
    label (a number, 0/1, or a class column); ``weight`` its importance
    weight; ``t`` the step number (1 for the first step); ``known`` the
    number of classes seen before the event (softmax). Returns the prediction
    made before learning (value, probability of the positive class, or the
    probabilities of the ``known`` classes).
    """
    opt = model.optimizer
    kind = model.task
    w, b = arrays["weights"], arrays["intercept"]
    flat = w.ndim == 1
    K = 1 if flat else w.shape[1]

    def weight_at(slot, c):
        return w[slot] if flat else w[slot, c]

    def set_weight(slot, c, value):
        if flat:
            w[slot] = value
        else:
            w[slot, c] = value

    def scaled(slot, value, numeric):
        if not model.scale or not numeric:
            return value
        sd = math.sqrt(arrays["scaler.var"][slot])
        return (value - arrays["scaler.mean"][slot]) / sd if sd > 0 else 0.0

    def outputs(pairs, k):
        return [sum(weight_at(s, c) * v for s, v in pairs) + b[c] for c in range(k)]

    # predict
    k_pred = known if kind == "multiclass" else 1
    xs = [(s, scaled(s, v, num)) for s, v, num in entries]
    if kind == "multiclass":
        prediction = _softmax(outputs(xs, k_pred)) if k_pred else []
    else:
        z = outputs(xs, 1)[0]
        prediction = _sigmoid(z) if kind == "binary" else z

    # learn: the scaler sees the event first (Welford, entry by entry)
    if model.scale and mutate != "scaler":
        for s, v, num in entries:
            if num:
                n_a, mean_a = arrays["scaler.count"][s], arrays["scaler.mean"][s]
                n = n_a + 1.0
                d = v - mean_a
                arrays["scaler.mean"][s] = mean_a + d / n
                arrays["scaler.var"][s] = (arrays["scaler.var"][s] * n_a + d * d * n_a / n) / n
                arrays["scaler.count"][s] = n
    xs = [(s, scaled(s, v, num)) for s, v, num in entries]
    # entries of one slot add up
    summed: dict[int, float] = {}
    for s, v in xs:
        summed[s] = summed.get(s, 0.0) + v
    pairs = list(summed.items())

    nscale = 0.0
    if isinstance(opt, Normalized):
        smax, totals = arrays["normalized.scale"], arrays["normalized.n"]
        add = 0.0
        for s, v in pairs:
            if abs(v) > smax[s]:
                if smax[s] > 0 and mutate != "normalized-rescale":
                    for c in range(K):
                        set_weight(s, c, weight_at(s, c) * smax[s] / abs(v))
                smax[s] = abs(v)
            if smax[s] > 0:
                add += (v / smax[s]) ** 2
        if model.intercept and model.intercept_lr is None:
            add += 1.0  # the intercept's feature
        totals[0] += weight * add
        totals[1] += weight
        if totals[0] > 0:
            nscale = opt.lr * math.sqrt(totals[1] / totals[0])
            if mutate == "normalized":
                nscale = opt.lr * math.sqrt(totals[1] / (totals[0] + 1.0))

    k_learn = max(known, y + 1) if kind == "multiclass" else 1
    z = outputs(pairs, k_learn)
    if kind == "regression":
        g = [z[0] - y]
    elif kind == "binary":
        g = [_sigmoid(z[0]) - y]
    else:
        g = _softmax(z)
        g[y] -= 1.0
    c_max = model.clip_gradient
    if c_max < 1e12 and mutate != "clip":
        g = [min(max(v, -c_max), c_max) for v in g]
    g1 = list(g)  # at weight 1: the normalised sums count the event as `weight` events
    if mutate != "weight":
        g = [v * weight for v in g]
    # what the normalised optimiser adds to a slot's sum of squared gradients, for a
    # gradient gi1 at weight 1 (gi, the step's, where the rule is changed)
    def g2_add(gi1, gi):
        return gi * gi if mutate == "normalized-weight" else weight * gi1 * gi1

    if isinstance(opt, SGD):
        lr_t = opt.lr / t**opt.power_t if opt.schedule == "invscaling" else opt.lr
        if mutate == "sgd":
            lr_t = opt.lr
    elif isinstance(opt, FTRL):
        lr_t = opt.alpha
    else:
        lr_t = opt.lr
    if model.l1:
        arrays["l1.total"][0] += model.l1 * lr_t
    u = arrays["l1.total"][0] if model.l1 else 0.0
    l2 = 0.0 if mutate == "l2" else model.l2

    def step(wi, prefix, at, gi, smax, f_l1, f_l2, gi1):
        """One optimiser update of the weight ``wi`` (its accumulators at ``at``
        in the arrays named ``prefix + <name>``; ``gi1``: the gradient at weight 1);
        returns the new weight."""
        if isinstance(opt, SGD):
            return wi - lr_t * gi
        if isinstance(opt, AdaGrad):
            g2 = arrays[prefix + "adagrad.g2"]
            g2[at] += gi * gi
            eps = opt.eps * 100 if mutate == "adagrad" else opt.eps
            return wi - opt.lr * gi / (math.sqrt(g2[at]) + eps)
        if isinstance(opt, Adam):
            m, vv = arrays[prefix + "adam.m"], arrays[prefix + "adam.v"]
            m[at] = opt.beta1 * m[at] + (1 - opt.beta1) * gi
            vv[at] = opt.beta2 * vv[at] + (1 - opt.beta2) * gi * gi
            m_hat = m[at] / (1 - opt.beta1**t)
            v_hat = vv[at] / (1 - (opt.beta2 if mutate != "adam" else opt.beta1) ** t)
            return wi - opt.lr * m_hat / (math.sqrt(v_hat) + opt.eps)
        if isinstance(opt, FTRL):
            zz, nn = arrays[prefix + "ftrl.z"], arrays[prefix + "ftrl.n"]
            n_old = nn[at]
            n_new = n_old + gi * gi
            sigma = (math.sqrt(n_new) - math.sqrt(n_old)) / opt.alpha
            zz[at] += gi - sigma * wi
            nn[at] = n_new
            shrunk = math.copysign(max(abs(zz[at]) - f_l1, 0.0), zz[at])
            return -shrunk / ((opt.beta + math.sqrt(n_new)) / opt.alpha + f_l2)
        # Normalized
        g2 = arrays[prefix + "normalized.g2"]
        g2[at] += g2_add(gi1, gi)
        if g2[at] > 0 and smax > 0:
            return wi - nscale * gi / (smax * math.sqrt(g2[at]))
        return wi

    if isinstance(opt, Normalized) and opt.invariant and kind != "multiclass":
        # rates first (accumulators included), then the invariant scale, then steps
        X, steps = 0.0, []
        for s, v in pairs:
            pen = l2 * w[s]
            g2 = arrays["normalized.g2"]
            g2[s] += g2_add(g1[0] * v + pen, g[0] * v + pen)
            smax = arrays["normalized.scale"][s]
            r = nscale / (smax * math.sqrt(g2[s])) if g2[s] > 0 and smax > 0 else 0.0
            steps.append((s, v, r, pen))
            X += r * v * v
        rb = 0.0
        if model.intercept and model.intercept_lr is None:
            gb = arrays["intercept.normalized.g2"]
            gb[0] += g2_add(g1[0], g[0])
            rb = nscale / math.sqrt(gb[0]) if gb[0] > 0 else 0.0
        elif model.intercept:
            rb = model.intercept_lr
        X += rb
        ratio = 1.0 if mutate == "invariant" else _invariant_ratio(kind, z[0], y, X, weight)
        for s, v, r, pen in steps:
            wi = w[s] - r * (g[0] * ratio * v + pen)
            if model.l1 and mutate != "l1":
                q = arrays["l1.cum"][s]
                after = (max(0.0, wi - (u + q)) if wi > 0 else
                         min(0.0, wi + (u - q)) if wi < 0 else wi)
                arrays["l1.cum"][s] = q + (after - wi)
                wi = after
            w[s] = wi
        b[0] -= rb * g[0] * ratio * (1.01 if mutate == "intercept" else 1.0)
        return prediction

    f_l1 = f_l2 = 0.0
    if isinstance(opt, FTRL):
        f_l1 = opt.l1 if mutate != "ftrl" else 0.0
        f_l2 = opt.l2
    for s, v in pairs:
        for c in range(len(g)):
            gi = g[c] * v + l2 * weight_at(s, c)
            gi1 = g1[c] * v + l2 * weight_at(s, c)
            at = s if flat else (s, c)
            smax = arrays["normalized.scale"][s] if isinstance(opt, Normalized) else 0.0
            wi = step(weight_at(s, c), "", at, gi, smax, f_l1, f_l2, gi1)
            if model.l1 and mutate != "l1":
                cum = arrays["l1.cum"]
                q = cum[at]
                if wi > 0:
                    after = max(0.0, wi - (u + q))
                elif wi < 0:
                    after = min(0.0, wi + (u - q))
                else:
                    after = wi
                cum[at] = q + (after - wi)
                wi = after
            set_weight(s, c, wi)
    if model.intercept and model.intercept_lr is None:
        # the optimiser's rule, as a feature of value 1; never penalised
        for c in range(len(g)):
            gi = g[c] * (1.01 if mutate == "intercept" else 1.0)
            b[c] = step(b[c], "intercept.", c, gi, 1.0, 0.0, 0.0, g1[c])
    elif model.intercept:
        lr_b = model.intercept_lr * (1.01 if mutate == "intercept" else 1.0)
        for c in range(len(g)):
            b[c] -= lr_b * g[c]
    return prediction


def _entries(batch, i):
    lo, hi = batch.offsets[i], batch.offsets[i + 1]
    return list(zip(batch.indices[lo:hi].tolist(), batch.values[lo:hi].tolist(),
                    batch.numeric[lo:hi].tolist(), strict=True))


def _replay(model, data, weights, mutate=None):
    """The reference over ``data`` from ``model``'s fresh state: predictions
    and the state after each event."""
    state = {k: v.copy() for k, v in model.state().arrays.items()}
    batch = model.encode([x for x, _ in data])
    classes: list = []
    preds, states = [], []
    for i, (_, y) in enumerate(data):
        if model.task == "multiclass":
            known = len(classes)
            if y not in classes:
                classes.append(y)
                for name, arr in list(state.items()):  # a new class: a column of zeros
                    if arr.ndim == 2:
                        state[name] = np.hstack([arr, np.zeros((arr.shape[0], 1))])
                    elif name.startswith("intercept") and len(classes) > len(arr):
                        state[name] = np.append(arr, 0.0)
            label = classes.index(y)
        else:
            known = 1
            label = float(y)
        preds.append(reference_event(model, state, _entries(batch, i), label, weights[i],
                                     i + 1, known, mutate))
        states.append({k: v.copy() for k, v in state.items()})
    return preds, states


def _make(cls, opt_name, penalty, variant, **extra):
    """A learner of the per-event kernel; ``variant`` "raw", "scaled" (the
    online scaler) or "own-intercept" (``intercept_lr=None``)."""
    opt, kw = _penalties(opt_name, penalty)
    kwargs = {"bits": 4, "dense": ["d"], "scale": variant == "scaled", "update": "event",
              "intercept_lr": None if variant == "own-intercept" else 0.05, **kw, **extra}
    if cls is SoftmaxRegression:
        kwargs.pop("classes", None)
    return cls(opt, **kwargs)


def _compare(model, data, weights, ref_preds, ref_states, *, rtol=1e-9, atol=1e-9):
    """Learn ``data`` event by event in the kernel; compare with the reference."""
    for i, (x, y) in enumerate(data):
        got = model.predict_learn_many([x], [y], weights[i:i + 1])
        want = ref_preds[i]
        if model.task == "regression":
            got_p = [float(got[0])]
            want_p = [want]
        elif model.task == "binary":
            got_p, want_p = [float(got[0, 1])], [want]
        else:
            got_p = got[0, :len(want)].tolist()
            want_p = list(want)
            assert not got[0, len(want):].any()
        np.testing.assert_allclose(got_p, want_p, rtol=rtol, atol=atol, err_msg=f"event {i}")
        arrays = model.state(copy=False).arrays
        assert set(arrays) == set(ref_states[i])
        for name, want_a in ref_states[i].items():
            np.testing.assert_allclose(arrays[name], want_a, rtol=rtol, atol=atol,
                                       err_msg=f"{name} after event {i}")


def _case_id(cls, opt, pen, variant):
    return f"{cls.__name__}-{opt}-{pen}-{variant}"


CASES = [
    pytest.param(cls, opt, pen, variant, id=_case_id(cls, opt, pen, variant))
    for cls in MODELS
    for opt in OPTIMIZERS
    for pen in PENALTIES
    for variant in ("raw", "scaled", "own-intercept")
    if variant != "own-intercept" or pen in ("none", "l1+l2")
]


@pytest.mark.parametrize("cls, opt_name, penalty, variant", CASES)
def test_kernel_follows_the_reference_event_by_event(cls, opt_name, penalty, variant):
    data = _events(cls.task, 40, seed=zlib.crc32(f"{opt_name}{penalty}{variant}".encode()))
    weights = np.array([0.5 + (i % 4) * 0.5 for i in range(len(data))])
    model = _make(cls, opt_name, penalty, variant)
    ref_preds, ref_states = _replay(model, data, weights)
    _compare(model, data, weights, ref_preds, ref_states)
    assert model.weights.any() and model.n_learned == len(data)
    assert np.abs(model.weights).max() < 100  # learned, not diverged

    # the whole stream as one bundle: same predictions, same final state
    whole = _make(cls, opt_name, penalty, variant)
    preds = whole.predict_learn_many([x for x, _ in data], [y for _, y in data], weights)
    if cls.task == "binary":
        np.testing.assert_allclose(preds[:, 1], ref_preds, rtol=1e-9, atol=1e-9)
    elif cls.task == "regression":
        np.testing.assert_allclose(preds, ref_preds, rtol=1e-9, atol=1e-9)
    for name, want in ref_states[-1].items():
        np.testing.assert_allclose(whole.state().arrays[name], want, rtol=1e-9, atol=1e-9)


def test_clipped_gradients_follow_the_reference():
    data = _events("regression", 40, seed=5)
    weights = np.ones(len(data))
    model = LinearRegression(AdaGrad(0.3), bits=4, update="event", clip_gradient=0.25)
    ref_preds, ref_states = _replay(model, data, weights)
    _compare(model, data, weights, ref_preds, ref_states)


MUTATIONS = {
    # rule: a case whose stream exercises it
    "sgd": (LogisticRegression, "sgd-invscaling", "none", "raw"),
    "adagrad": (LinearRegression, "adagrad", "none", "raw"),
    "adam": (LogisticRegression, "adam", "none", "raw"),
    "ftrl": (LogisticRegression, "ftrl", "l1", "raw"),
    "normalized": (LogisticRegression, "normalized", "none", "raw"),
    "normalized-rescale": (LinearRegression, "normalized-plain", "none", "raw"),
    "normalized-weight": (LogisticRegression, "normalized-plain", "none", "raw"),
    "invariant-weight": (LinearRegression, "normalized", "none", "raw"),
    "invariant": (LogisticRegression, "normalized", "none", "raw"),
    "invariant-squared": (LinearRegression, "normalized", "none", "raw"),
    "l1": (LogisticRegression, "adagrad", "l1", "raw"),
    "l2": (SoftmaxRegression, "sgd", "l2", "raw"),
    "scaler": (LogisticRegression, "sgd", "none", "scaled"),
    "intercept": (LinearRegression, "sgd", "none", "raw"),
    "own-intercept": (SoftmaxRegression, "adam", "none", "own-intercept"),
    "weight": (SoftmaxRegression, "adagrad", "none", "raw"),
}


@pytest.mark.parametrize("rule", list(MUTATIONS))
def test_a_changed_rule_breaks_the_comparison(rule):
    """The comparison catches a change of any one rule: the reference with that
    rule changed disagrees with the kernel (and unchanged, agrees)."""
    cls, opt_name, penalty, variant = MUTATIONS[rule]
    data = _events(cls.task, 60, seed=11)
    weights = np.array([0.5 + (i % 4) * 0.5 for i in range(len(data))])
    mutated = {"own-intercept": "intercept", "invariant-squared": "invariant",
               "invariant-weight": "normalized-weight"}.get(rule, rule)
    preds, states = _replay(_make(cls, opt_name, penalty, variant), data, weights, mutated)
    with pytest.raises(AssertionError):
        _compare(_make(cls, opt_name, penalty, variant), data, weights, preds, states)
    preds, states = _replay(_make(cls, opt_name, penalty, variant), data, weights)
    _compare(_make(cls, opt_name, penalty, variant), data, weights, preds, states)


def test_clip_mutation_breaks_the_comparison():
    data = _events("regression", 40, seed=5)
    weights = np.ones(len(data))
    model = LinearRegression(AdaGrad(0.3), bits=4, update="event", clip_gradient=0.25)
    preds, states = _replay(model, data, weights, mutate="clip")
    with pytest.raises(AssertionError):
        _compare(model.clone(), data, weights, preds, states)


# -- the numpy mini-batch path: a batch of one event is one kernel step ---------------------


BATCH_CASES = [
    pytest.param(cls, opt, pen, variant, id=_case_id(cls, opt, pen, variant))
    for cls in MODELS
    for opt in OPTIMIZERS
    if not opt.startswith("normalized")
    for pen in PENALTIES
    for variant in ("raw", "scaled", "own-intercept")
    if variant != "own-intercept" or pen in ("none", "l1+l2")
]


@pytest.mark.parametrize("cls, opt_name, penalty, variant", BATCH_CASES)
def test_a_batch_of_one_event_is_one_kernel_step(cls, opt_name, penalty, variant):
    """Where numpy code remains for a rule (update="batch"), a batch of one
    event takes the kernel's step, event after event, weights included."""
    data = _events(cls.task, 60, seed=3)
    weights = [0.5 + (i % 3) * 0.75 for i in range(len(data))]
    kernel = _make(cls, opt_name, penalty, variant)
    numpy_ = _make(cls, opt_name, penalty, variant, update="batch")
    for i, (x, y) in enumerate(data):
        a = kernel.predict_learn_many([x], [y], weights[i:i + 1])
        b = numpy_.predict_learn_many([x], [y], weights[i:i + 1])
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        for name, arr in numpy_.state(copy=False).arrays.items():
            np.testing.assert_allclose(kernel.state(copy=False).arrays[name], arr,
                                       rtol=1e-9, atol=1e-12, err_msg=f"{name}, event {i}")
    assert kernel.n_learned == numpy_.n_learned and kernel.weights.any()
    assert kernel.state().meta["n_steps"] == numpy_.state().meta["n_steps"] == len(data)


# -- the kernel on the encoder's bundles, the normalised optimiser, the settings -----------


def test_kernel_learns_the_jvm_encoders_bundles_as_they_come():
    """A bundle read from the encoder's bytes (read-only views) learns as the
    same events hashed in Python."""
    import struct

    from streamlearn.training.encoded_batch import read_encoded_batch

    model = LogisticRegression(AdaGrad(0.1), bits=6, update="event")
    data = _events("binary", 50, seed=2)
    batch = model.encode([x for x, _ in data])
    labels = np.array([float(y) for _, y in data])
    n, nnz = batch.n_rows, len(batch.indices)
    raw = b"SLE1" + struct.pack("<3I", n, nnz, 0) + batch.values.astype("<f8").tobytes()
    raw += labels.astype("<f8").tobytes() + batch.offsets.astype("<i4").tobytes()
    raw += batch.indices.astype("<i4").tobytes() + batch.numeric.astype(np.uint8).tobytes()
    bundle, ys, _ = read_encoded_batch(raw, model.n_slots)
    assert not bundle.values.flags.writeable
    twin = model.clone()
    got = model.predict_learn_many(bundle, ys)
    want = twin.predict_learn_many([x for x, _ in data], [y for _, y in data])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.weights, twin.weights)


def test_normalized_steps_do_not_depend_on_a_features_scale():
    """Multiplying a numeric feature by 1000 leaves every prediction as it was
    (up to rounding): the normalised optimiser's invariance."""
    data = _events("binary", 300, seed=4)
    big = [({**x, "d": x["d"] * 1000.0, "small": x["small"] * 1e5}, y) for x, y in data]
    ys = [y for _, y in data]
    a = LogisticRegression(Normalized(0.5), bits=10, update="event")
    b = LogisticRegression(Normalized(0.5), bits=10, update="event")
    pa_ = a.predict_learn_many([x for x, _ in data], ys)
    pb = b.predict_learn_many([x for x, _ in big], ys)
    np.testing.assert_allclose(pa_, pb, rtol=1e-7, atol=1e-9)
    # AdaGrad is not invariant: the same change moves its predictions
    c = LogisticRegression(AdaGrad(0.1), bits=10, update="event")
    d = LogisticRegression(AdaGrad(0.1), bits=10, update="event")
    pc = c.predict_learn_many([x for x, _ in data], ys)
    pd = d.predict_learn_many([x for x, _ in big], ys)
    assert np.abs(pc - pd).max() > 0.05


def test_an_event_of_weight_zero_changes_nothing_but_counts():
    model = LogisticRegression(AdaGrad(0.1), bits=6, update="event")
    model.learn_many([{"a": 1.0}], [True])
    before = model.state()
    model.learn_many([{"a": 2.0, "b": "x"}], [False], weights=[0.0])
    for name, arr in before.arrays.items():
        np.testing.assert_array_equal(model.state().arrays[name], arr)
    assert model.n_learned == 2


def test_weight_two_is_two_copies_in_one_batch_step():
    """In a mini-batch step an event of weight 2 counts as two copies of it
    (the mean gradient over events, each times its weight)."""
    x, y = {"a": 1.0, "c": "u"}, True
    two = LogisticRegression(SGD(0.1), bits=6)
    copies = LogisticRegression(SGD(0.1), bits=6)
    two.learn_many([x, {"b": 1.0}], [y, False], weights=[2.0, 1.0])
    # mean over 2 events with weights 2 and 1 == mean over 3 events, times 3/2
    copies.learn_many([x, x, {"b": 1.0}], [y, y, False])
    np.testing.assert_allclose(two.weights, copies.weights * 1.5, rtol=1e-12)


@pytest.mark.parametrize(
    "weights, field, where",
    [
        ([1.0], "weights", None),
        ("ab", "weights", None),
        ([1.0, -0.5], "weight", "event 1"),
        ([float("nan"), 1.0], "weight", "event 0"),
        ([1.0, "2"], "weight", "event 1"),
        ([True, 1.0], "weight", "event 0"),
        (np.array([1.0, np.inf]), "weight", "event 1"),
        ([1.0, 10**400], "weight", "event 1"),  # beyond the largest double
        ([np.float32(-1.0), 1.0], "weight", "event 0"),
    ],
)
@pytest.mark.parametrize("update", ["batch", "event"])
def test_bad_weights_name_the_field(weights, field, where, update):
    """A learner's weights are events' weights: the contract's rule, in its words."""
    from streamlearn.contract import RULES

    model = LogisticRegression(bits=6, update=update)
    with pytest.raises(ValidationError) as info:
        model.learn_many([{"a": 1.0}, {"a": 2.0}], [True, False], weights=weights)
    assert info.value.field == field
    if where:
        assert where in str(info.value)
        assert RULES["weight.invalid"].expected in str(info.value)
    assert model.n_learned == 0 and not model.weights.any()


def test_update_setting_is_validated_and_kept():
    with pytest.raises(ConfigError) as info:
        LogisticRegression(update="events")
    assert info.value.field == "update"
    with pytest.raises(ConfigError) as info:
        LogisticRegression(Normalized())  # mini-batch steps cannot normalise
    assert info.value.field == "update" and "'event'" in str(info.value)
    model = SoftmaxRegression(Normalized(0.3), update="event", bits=6)
    model.learn_many([{"a": 1.0}, {"a": -1.0}], ["x", "y"])
    again = SoftmaxRegression.from_state(model.state())
    assert again.update == "event" and again.params() == model.params()
    np.testing.assert_array_equal(again.weights, model.weights)


def test_states_stored_before_the_update_setting_still_load():
    model = LogisticRegression(bits=6)
    model.learn_one({"a": 1.0}, True)
    state = model.state()
    del state.meta["params"]["update"]
    again = LogisticRegression.from_state(state)
    assert again.update == "batch"
    np.testing.assert_array_equal(again.weights, model.weights)


def test_softmax_predicts_only_classes_seen_before_each_event():
    model = SoftmaxRegression(AdaGrad(0.1), bits=6, update="event")
    preds = model.predict_learn_many([{"a": 1.0}, {"a": 1.0}, {"a": -1.0}], ["x", "y", "z"])
    assert model.classes_ == ["x", "y", "z"]
    np.testing.assert_array_equal(preds[0], [0.0, 0.0, 0.0])  # nothing known yet
    assert preds[1, 0] == 1.0 and preds[1, 1:].tolist() == [0.0, 0.0]
    assert preds[2, 2] == 0.0 and preds[2, :2].sum() == pytest.approx(1.0)


def test_kernel_refuses_arrays_that_do_not_fit():
    from streamlearn.learners import _kernel

    model = LogisticRegression(AdaGrad(0.1), bits=4, update="event")
    bad = FeatureBatch(np.array([16]), np.array([1.0]), np.array([0, 1]),
                       np.array([True]), model.n_slots)  # slot out of range, unchecked
    with pytest.raises(ValueError, match="indices"):
        model.learn_many(bad, [True])
    assert not model.weights.any() and model.n_learned == 0
    assert _kernel.learn_bundle.__doc__


def _heavy_step(cls, invariant, x, y):
    """The prediction of ``x`` by a fresh model before and after learning it
    with weight 50."""
    model = cls(Normalized(2.0, invariant=invariant), bits=6, update="event",
                intercept_lr=None)
    before = model.predict_learn_many([x], [y], weights=[50.0])
    before = float(before[0]) if cls is LinearRegression else float(before[0, 1])
    return before, _raw_prediction(model, x)


def test_invariant_steps_never_overshoot_the_label():
    """A heavy event moves the prediction towards its label, never past it;
    a plain step of the same size goes past it."""
    x = {"a": 2.0, "b": "u", "c": -0.5}
    before, after = _heavy_step(LinearRegression, True, x, 3.0)
    assert before < after <= 3.0
    before_plain, after_plain = _heavy_step(LinearRegression, False, x, 3.0)
    assert before_plain == before and after_plain > 3.0


def test_invariant_logistic_steps_are_shorter_than_plain_ones():
    x = {"a": 2.0, "b": "u", "c": -0.5}
    before, after = _heavy_step(LogisticRegression, True, x, True)
    before_plain, after_plain = _heavy_step(LogisticRegression, False, x, True)
    assert before == before_plain < after < after_plain


def _raw_prediction(model, x):
    if model.task == "regression":
        return float(model.predict_one(x))
    return float(model.predict_proba_many([x])[0, 1])


def test_without_the_kernel_a_per_event_learner_predicts_but_refuses_to_learn(monkeypatch):
    """A model learned per event is served where no compiler built the kernel."""
    import streamlearn.learners.base as base

    model = LogisticRegression(AdaGrad(0.1), bits=6, update="event")
    model.learn_one({"a": 1.0}, True)
    monkeypatch.setattr(base, "_kernel", None)
    again = LogisticRegression.from_state(model.state())
    assert again.predict_one({"a": 1.0}) is True
    with pytest.raises(ConfigError) as info:
        again.learn_one({"a": 1.0}, True)
    assert info.value.field == "update" and again.n_learned == 1
