"""Merge quality on a seeded 200k-event stream: P=4 learners on disjoint key
partitions, merged every 1,000 events each, against one sequential learner;
per-event learners at P=2 and P=4; factorization machines on the
interactions stream.

Figures for syncs every 10k and 100k events are reported (printed with
``-s``, and asserted only to stay within a looser bound: the issue asks for
them to be reported, not for a bound).
"""

from __future__ import annotations

import pytest

from streamlearn.learners import FMClassifier, LogisticRegression
from streamlearn.optim import FTRL, SGD, AdaGrad, Adam, Normalized
from tests.merge_stream import (
    BITS,
    DENSE,
    interactions_stream,
    make_stream,
    parallel,
    sequential,
)

BATCH = 50

CONFIGS = {
    "SGD": lambda: LogisticRegression(SGD(0.05), bits=BITS, dense=DENSE),
    "AdaGrad": lambda: LogisticRegression(AdaGrad(0.1), bits=BITS, dense=DENSE),
    "Adam": lambda: LogisticRegression(Adam(0.01), bits=BITS, dense=DENSE),
    "FTRL": lambda: LogisticRegression(FTRL(alpha=0.1), bits=BITS, dense=DENSE),
}


@pytest.fixture(scope="module")
def stream():
    s = make_stream(n=200_000, seed=7)
    assert len(s) >= 200_000
    return s


@pytest.fixture(scope="module")
def reference(stream):
    cache: dict[str, float] = {}

    def get(name: str) -> float:
        if name not in cache:
            cache[name] = sequential(CONFIGS[name], stream, BATCH)
        return cache[name]

    return get


@pytest.mark.parametrize(
    ("optimizer", "strategy", "bound"),
    [
        ("SGD", "hybrid", 1.01),
        ("AdaGrad", "hybrid", 1.01),
        ("FTRL", "hybrid", 1.01),
        ("FTRL", "ftrl", 1.01),
        # Adam's normalised steps taken in parallel on shared slots overshoot a
        # little more than plain gradients do; measured at ~1.7%.
        ("Adam", "hybrid", 1.02),
    ],
)
def test_four_learners_merged_every_1000_events_match_one_learner(
    stream, reference, optimizer, strategy, bound
):
    seq = reference(optimizer)
    par, merger = parallel(CONFIGS[optimizer], stream, BATCH, n_learners=4, sync_every=1_000,
                           strategy=strategy)
    print(f"\n{optimizer}/{strategy} sync=1000: sequential {seq:.4f}, "
          f"parallel {par:.4f}, ratio {par / seq:.4f}")
    assert merger.n_events == len(stream)
    assert merger.n_deltas >= len(stream) // 1_000
    assert par <= bound * seq
    assert seq < 0.69  # both actually learned (log 2 is a coin)


def test_average_strategy_lags_hybrid_on_key_partitioned_data(stream, reference):
    """Averaging shrinks every key's learning by P: on key-partitioned data
    hybrid must do better (the reason hybrid is the default)."""
    hybrid, _ = parallel(CONFIGS["SGD"], stream, BATCH, sync_every=1_000, strategy="hybrid")
    average, _ = parallel(CONFIGS["SGD"], stream, BATCH, sync_every=1_000, strategy="average")
    print(f"\nSGD sync=1000: hybrid {hybrid:.4f}, average {average:.4f}")
    assert hybrid < average


@pytest.mark.parametrize("sync_every", [10_000, 100_000])
def test_rarer_syncs_are_reported(stream, reference, sync_every):
    seq = reference("SGD")
    par, merger = parallel(CONFIGS["SGD"], stream, BATCH, sync_every=sync_every)
    print(f"\nSGD/hybrid sync={sync_every}: sequential {seq:.4f}, parallel {par:.4f}, "
          f"ratio {par / seq:.4f}")
    assert merger.n_events == len(stream)
    assert par <= 1.05 * seq


# -- per-event learners (the compiled kernel), P = 2 and 4 ----------------------------------

EVENT_CONFIGS = {
    "event-AdaGrad": lambda: LogisticRegression(AdaGrad(0.1), bits=BITS, dense=DENSE,
                                                update="event"),
    "event-Normalized": lambda: LogisticRegression(Normalized(0.5), bits=BITS, dense=DENSE,
                                                   update="event", intercept_lr=None),
    "event-FTRL": lambda: LogisticRegression(FTRL(alpha=0.1), bits=BITS, dense=DENSE,
                                             update="event", intercept_lr=None),
}


@pytest.mark.parametrize("n_learners", [2, 4])
@pytest.mark.parametrize(
    ("config", "strategy"),
    [("event-AdaGrad", "hybrid"), ("event-Normalized", "hybrid"), ("event-FTRL", "hybrid"),
     ("event-FTRL", "ftrl")],
)
def test_per_event_learners_merged_every_1000_events_match_one_learner(
    stream, config, strategy, n_learners
):
    """Measured: P=2 within 0.1%, P=4 0.8-1.0% (Normalized: its scale merged
    as a maximum, N and T summed; FTRL: the intercept recomputed from its z, n)."""
    seq = sequential(EVENT_CONFIGS[config], stream, BATCH)
    par, merger = parallel(EVENT_CONFIGS[config], stream, BATCH, n_learners=n_learners,
                           sync_every=1_000, strategy=strategy)
    print(f"\n{config}/{strategy} P={n_learners}: sequential {seq:.5f}, parallel {par:.5f}, "
          f"ratio {par / seq:.4f}")
    assert merger.n_events == len(stream)
    assert par <= (1.002 if n_learners == 2 else 1.01) * seq
    assert seq < 0.6


@pytest.fixture(scope="module")
def interactions():
    return interactions_stream(200_000, seed=0)


def _fm():
    return FMClassifier(Normalized(0.5, invariant=False), k=4, bits=BITS, dense=DENSE,
                        intercept_lr=None, factor_optimizer=AdaGrad(0.2), init_std=0.1)


def test_fm_factors_merge_better_summed_than_averaged(interactions):
    """Factorization machines on the interactions stream, P=2, synced every
    1,000 events: summing the factors' deltas on hashed slots (their rule,
    ``learned``) beats averaging them. Measured: sequential 0.5079; summed
    1.021×, averaged 1.041× (P=4: 1.097× and 1.095×; the gap is the first
    events — over the last 50,000, 1.004× at P=2 and 1.014× at P=4)."""
    seq = sequential(_fm, interactions, BATCH)
    summed, _ = parallel(_fm, interactions, BATCH, n_learners=2, sync_every=1_000)
    averaged, _ = parallel(_fm, interactions, BATCH, n_learners=2, sync_every=1_000,
                           rules={"factors": "average", "factors.adagrad.g2": "average"})
    print(f"\nFM P=2: sequential {seq:.5f}, factors summed {summed / seq:.4f}, "
          f"averaged {averaged / seq:.4f}")
    assert summed < averaged
    assert summed <= 1.03 * seq


# -- the "progress" strategy: between a sum and a mean, slot by slot ----------------------


@pytest.fixture(scope="module")
def crossed():
    return interactions_stream(200_000, seed=0, crossed=True)


def _per_event():
    return LogisticRegression(Normalized(0.5), bits=BITS, dense=DENSE, update="event",
                              intercept_lr=None)


@pytest.mark.parametrize(
    ("name", "make", "bound"),
    [("crossed", _per_event, 1.03), ("linear", _per_event, 1.01), ("fm", _fm, 1.09)],
)
def test_progress_merges_crosses_and_factors_closer_to_one_learner(
    request, interactions, crossed, name, make, bound
):
    """P=4 per-event learners, a delta every 5,000 events each (the job's bundles): on
    the crossed stream (the cross slots are shared by every key, each touched a few times
    per delta), the linear model and the factorization machine, ``progress`` is closer
    to one learner than both ``shared`` (which averages what should add up) and
    ``hybrid`` (which sums what each learner already found). Measured: crossed 1.0265
    (shared 1.0817, hybrid 1.0629), linear 1.0063 (1.0138, 1.0497), FM 1.0783 (1.1328,
    1.2870)."""
    stream = crossed if name == "crossed" else interactions
    seq = sequential(make, stream, BATCH)
    ratios = {}
    for strategy in ("progress", "shared", "hybrid"):
        par, _ = parallel(make, stream, BATCH, n_learners=4, sync_every=5_000,
                          strategy=strategy)
        ratios[strategy] = par / seq
    print(f"\n{name} P=4: " + ", ".join(f"{k} {v:.4f}" for k, v in ratios.items()))
    assert ratios["progress"] <= bound
    assert ratios["progress"] < min(ratios["shared"], ratios["hybrid"]) - 0.005
