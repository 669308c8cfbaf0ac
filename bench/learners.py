"""Learning speed: our learn_many against River and scikit-learn, same events, same run.

One stream of 40 non-zero features per event (30 categorical strings, hashed,
and 10 numbers), labels from a hidden logistic model. Measured:

- ours, ``learn_many`` in batches of 1000 into 2**20 hash slots, per optimiser:
  from an already encoded batch (the kernel; each run starts from batches as
  encoding left them) and from the feature mappings (hashing included); the
  optimisers are measured in rounds, one run of each per round, best round kept;
- River ``LogisticRegression.learn_one`` on the same events one-hot encoded
  beforehand (River's linear models read numbers only; encoding is not timed);
- scikit-learn ``SGDClassifier.partial_fit`` in batches of 1000: from a
  prebuilt CSR matrix, and from mappings through its ``FeatureHasher``;
- the kernel's time per batch at 2**16, 2**20 and 2**23 slots, next to one
  dense pass over 2**23 weights: no step is O(slots); what remains is random
  access into larger arrays (cache misses, first touch of fresh pages);
- prequential accuracy of each on the same stream (batches learn one step per
  batch: fewer, larger steps than one event at a time).

Run: ``.venv/bin/python bench/learners.py [--events 200000] [--river-events 20000]``.
Prints a table and writes ``bench/results/learners.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from pathlib import Path

import numpy as np

from streamlearn.learners import LogisticRegression
from streamlearn.metrics import Accuracy, prequential
from streamlearn.optim import FTRL, SGD, AdaGrad, Adam

N_CATEGORICAL, N_NUMERIC, CARDINALITY = 30, 10, 1000
BATCH = 1000
BITS = 20


def make_stream(n: int, seed: int = 0) -> tuple[list[dict], list[bool]]:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    cat_weights = nrng.normal(0, 0.4, (N_CATEGORICAL, CARDINALITY))
    num_weights = nrng.normal(0, 0.5, N_NUMERIC)
    numbers = nrng.normal(0, 1, (n, N_NUMERIC))
    cats = nrng.zipf(1.3, (n, N_CATEGORICAL)) % CARDINALITY  # a few frequent values, a long tail
    names_c = [f"c{i}" for i in range(N_CATEGORICAL)]
    names_n = [f"n{i}" for i in range(N_NUMERIC)]
    xs, ys = [], []
    for r in range(n):
        x = {name: f"v{cats[r, i]}" for i, name in enumerate(names_c)}
        x.update(zip(names_n, numbers[r].tolist(), strict=True))
        z = cat_weights[np.arange(N_CATEGORICAL), cats[r]].sum() + numbers[r] @ num_weights
        xs.append(x)
        ys.append(bool(rng.random() < 1 / (1 + np.exp(-z))))
    return xs, ys


def batches(seq, size=BATCH):
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def best_of(fn, repeats: int = 3, setup=None) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def as_encoded(encoded):
    """A setup that puts batches back as encoding left them: what learning found
    out about a batch (its groups of equal slots) is not carried into the next run."""
    saved = [dict(b._cache) for b in encoded]

    def restore():
        for b, cache in zip(encoded, saved, strict=True):
            b._cache.clear()
            b._cache.update(cache)

    return restore


def bench_ours(xs, ys, repeats):
    """Every optimiser's kernel and mappings runs, in rounds: a round measures each
    once, so a burst of load from other work on the machine falls on all of them
    alike rather than on the one measured at that moment; the best round counts."""
    xb, yb = batches(xs), batches(ys)
    encoded = [OPTIMIZERS["SGD"]().encode(b) for b in xb]  # same hashing for every optimiser
    restore = as_encoded(encoded)

    def learn(model, xs_batches):
        for b, y in zip(xs_batches, yb, strict=True):
            model.learn_many(b, y)

    def encode_only():
        model = OPTIMIZERS["SGD"]()
        for b in xb:
            model.encode(b)

    best = {name: {"kernel": math.inf, "mappings": math.inf} for name in OPTIMIZERS}
    best_encode = math.inf
    for _ in range(repeats):
        for name, make in OPTIMIZERS.items():
            restore()
            best[name]["kernel"] = min(best[name]["kernel"], best_of(
                lambda make=make: learn(make(), encoded), 1))
            best[name]["mappings"] = min(best[name]["mappings"], best_of(
                lambda make=make: learn(make(), xb), 1))
        best_encode = min(best_encode, best_of(encode_only, 1))
    n = len(xs)
    return {
        name: {"kernel_eps": n / t["kernel"], "mappings_eps": n / t["mappings"],
               "encode_eps": n / best_encode}
        for name, t in best.items()
    }


def one_hot(xs):
    """River's linear models read numbers only: the same events, strings one-hot
    (prepared outside the timing, which favours River)."""
    return [{(k + "=" + v if type(v) is str else k): (1.0 if type(v) is str else v)
             for k, v in x.items()} for x in xs]


def bench_river(xs, ys):
    from river import linear_model
    from river import optim as river_optim

    xs = one_hot(xs)
    model = linear_model.LogisticRegression(optimizer=river_optim.SGD(0.01))
    t = time.perf_counter()
    for x, y in zip(xs, ys, strict=True):
        model.learn_one(x, y)
    return len(xs) / (time.perf_counter() - t)


def bench_sklearn(xs, ys, repeats):
    from sklearn.feature_extraction import FeatureHasher as SkHasher
    from sklearn.linear_model import SGDClassifier

    hasher = SkHasher(n_features=1 << BITS, input_type="dict")
    xb, yb = batches(xs), [np.array(y) for y in batches(ys)]
    matrices = [hasher.transform(b) for b in xb]

    def kernel():
        model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01, alpha=0.0)
        for m, y in zip(matrices, yb, strict=True):
            model.partial_fit(m, y, classes=[False, True])

    def mappings():
        model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01, alpha=0.0)
        for b, y in zip(xb, yb, strict=True):
            model.partial_fit(hasher.transform(b), y, classes=[False, True])

    n = len(xs)
    return {"kernel_eps": n / best_of(kernel, repeats),
            "mappings_eps": n / best_of(mappings, repeats)}


def slots_sweep(xs, ys, repeats):
    out = {}
    xb, yb = batches(xs), batches(ys)
    for bits in (16, 20, 23):
        make = lambda bits=bits: LogisticRegression(SGD(0.01), bits=bits)  # noqa: E731
        encoded = [make().encode(b) for b in xb]

        def kernel(make=make, encoded=encoded):
            model = make()
            for b, y in zip(encoded, yb, strict=True):
                model.learn_many(b, y)

        out[bits] = best_of(kernel, repeats, setup=as_encoded(encoded)) / len(xb) * 1e3  # ms/batch
    return out


def dense_pass_ms(bits: int = 23, repeats: int = 3) -> float:
    """The reference: one dense pass over 2**bits weights (what an O(slots) step costs)."""
    w = np.ones(1 << bits)  # pages touched before timing
    return best_of(lambda: np.multiply(w, 0.999, out=w), repeats) * 1e3


def accuracies(xs, ys, river_n):
    from river import linear_model
    from river import metrics as river_metrics
    from river import optim as river_optim
    from sklearn.feature_extraction import FeatureHasher as SkHasher
    from sklearn.linear_model import SGDClassifier

    out = {}
    for name, make in OPTIMIZERS.items():
        model, acc = make(), Accuracy()
        for b, y in zip(batches(xs), batches(ys), strict=True):
            prequential(model, b, y, [acc])
        out[f"ours {name} (batch {BATCH})"] = acc.get()
    model, acc = LogisticRegression(SGD(0.01)), Accuracy()
    for x, y in zip(xs[:river_n], ys[:river_n], strict=True):
        prequential(model, [x], [y], [acc])
    out[f"ours SGD (one by one, first {river_n})"] = acc.get()
    river = linear_model.LogisticRegression(optimizer=river_optim.SGD(0.01))
    racc = river_metrics.Accuracy()
    for x, y in zip(one_hot(xs[:river_n]), ys[:river_n], strict=True):
        racc.update(y, river.predict_one(x))
        river.learn_one(x, y)
    out[f"River SGD (one by one, first {river_n})"] = racc.get()
    hasher = SkHasher(n_features=1 << BITS, input_type="dict")
    sk = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01, alpha=0.0)
    hits = 0
    for i, (b, y) in enumerate(zip(batches(xs), batches(ys), strict=True)):
        m = hasher.transform(b)
        if i:
            hits += int((sk.predict(m) == np.array(y)).sum())
        else:
            hits += int((np.array(y) == False).sum())  # noqa: E712 (untrained: the first class)
        sk.partial_fit(m, np.array(y), classes=[False, True])
    out[f"sklearn SGD (partial_fit, batch {BATCH})"] = hits / len(xs)
    return out


OPTIMIZERS = {
    "SGD": lambda: LogisticRegression(SGD(0.01), bits=BITS),
    "AdaGrad": lambda: LogisticRegression(AdaGrad(0.1), bits=BITS),
    "Adam": lambda: LogisticRegression(Adam(0.01), bits=BITS),
    "FTRL": lambda: LogisticRegression(FTRL(alpha=0.1, l1=0.0001), bits=BITS),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--river-events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "learners.json"))
    args = parser.parse_args()

    xs, ys = make_stream(args.events)
    river_eps = bench_river(xs[: args.river_events], ys[: args.river_events])
    sk = bench_sklearn(xs, ys, args.repeats)
    ours = bench_ours(xs, ys, args.repeats)
    sweep = slots_sweep(xs[:50_000], ys[:50_000], args.repeats)
    dense_ms = dense_pass_ms(repeats=args.repeats)
    acc = accuracies(xs, ys, args.river_events)

    print(f"\n{args.events} events, {N_CATEGORICAL} categorical + {N_NUMERIC} numeric features, "
          f"batch {BATCH}, 2^{BITS} slots, one core\n")
    print(f"{'learner':32s} {'kernel ev/s':>12s} {'mappings ev/s':>14s}   "
          "× River (kernel, mappings)   × sklearn (kernel, mappings)")
    rows = {}
    for name, r in ours.items():
        rows[f"ours {name}"] = r
        k, m = r["kernel_eps"], r["mappings_eps"]
        print(f"{'ours ' + name:32s} {k:12,.0f} {m:14,.0f}   "
              f"{k / river_eps:8.0f}× {m / river_eps:8.0f}×          "
              f"{k / sk['kernel_eps']:8.1f}× {m / sk['mappings_eps']:8.1f}×")
    print(f"{'sklearn SGDClassifier':32s} {sk['kernel_eps']:12,.0f} {sk['mappings_eps']:14,.0f}")
    print(f"{'River LogisticRegression':32s} {river_eps:12,.0f} {river_eps:14,.0f}"
          "   (one-hot input, not timed)")
    print(f"\nencoding alone (ours): {ours['SGD']['encode_eps']:,.0f} events/s")
    print("kernel ms per batch by slots: " + ", ".join(
        f"2^{b}: {ms:.2f}" for b, ms in sweep.items()) +
        f"  (2^23 / 2^16: {sweep[23] / sweep[16]:.2f}×; one dense pass over 2^23 "
        f"weights alone: {dense_ms:.2f} ms)")
    print("\nprequential accuracy on this stream:")
    for name, a in acc.items():
        print(f"  {name:45s} {a:.4f}")

    result = {
        "bench": "learners",
        "events": args.events,
        "features_per_event": N_CATEGORICAL + N_NUMERIC,
        "batch": BATCH,
        "bits": BITS,
        "machine": {"python": platform.python_version(), "processor": platform.processor()},
        "ours": rows,
        "sklearn": sk,
        "river_eps": river_eps,
        "ratios": {
            name: {"kernel_vs_river": r["kernel_eps"] / river_eps,
                   "mappings_vs_river": r["mappings_eps"] / river_eps,
                   "kernel_vs_sklearn": r["kernel_eps"] / sk["kernel_eps"],
                   "mappings_vs_sklearn": r["mappings_eps"] / sk["mappings_eps"]}
            for name, r in rows.items()
        },
        "ms_per_batch_by_bits": sweep,
        "dense_pass_ms_2_23": dense_ms,
        "accuracy": acc,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
