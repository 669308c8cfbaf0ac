"""Seeded streams and the sequential vs parallel-merged comparison that the
merge quality tests and ``bench/merge.py`` share.

``make_stream``: each event has a key (a user), hashed one-hot features (the
user, the item, shared categories) and two dense numbers; the label follows a
fixed logistic model of them. The stream is built directly as CSR arrays (no
dicts), so 200k events take a fraction of a second.

``interactions_stream``: :func:`streamlearn.generators.interactions` hashed
once into the same layout (its features interact in pairs; keys are users).

Learners with ``update="event"`` are scored prequentially event by event
(``predict_learn_many``); mini-batch learners predict each micro-batch before
learning it (``streamlearn.metrics.prequential``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamlearn.features import FeatureBatch
from streamlearn.merge import DeltaTracker, Merger
from streamlearn.metrics import LogLoss, prequential

BITS = 16
DENSE = ["age", "price"]
N_SLOTS = (1 << BITS) + len(DENSE)


@dataclass
class Stream:
    keys: np.ndarray      # (n,) key of each event
    indices: np.ndarray   # (n, f) slots of each event (same count per event)
    values: np.ndarray    # (n, f)
    numeric: np.ndarray   # (f,) which columns are numbers
    labels: np.ndarray    # (n,) bool

    def __len__(self) -> int:
        return len(self.keys)

    def batch(self, rows: np.ndarray) -> FeatureBatch:
        f = self.indices.shape[1]
        offsets = np.arange(len(rows) + 1, dtype=np.int64) * f
        return FeatureBatch(
            self.indices[rows].reshape(-1), self.values[rows].reshape(-1), offsets,
            np.tile(self.numeric, len(rows)), N_SLOTS,
        )


def make_stream(n: int = 200_000, n_users: int = 5_000, seed: int = 7) -> Stream:
    rng = np.random.default_rng(seed)
    hashed = 1 << BITS
    user_slot = rng.choice(hashed, n_users, replace=False)
    item_slot = rng.integers(0, hashed, 500)
    country_slot = rng.integers(0, hashed, 20)
    device_slot = rng.integers(0, hashed, 4)
    user_w = rng.normal(0.0, 1.0, n_users)
    item_w = rng.normal(0.0, 0.7, 500)
    country_w = rng.normal(0.0, 0.5, 20)
    device_w = rng.normal(0.0, 0.3, 4)
    user_country = rng.integers(0, 20, n_users)
    activity = rng.pareto(1.5, n_users) + 1.0
    users = rng.choice(n_users, n, p=activity / activity.sum())
    items = rng.integers(0, 500, n)
    devices = rng.integers(0, 4, n)
    age = rng.normal(0.0, 1.0, n)
    price = rng.normal(0.0, 1.0, n)
    countries = user_country[users]
    z = (user_w[users] + item_w[items] + country_w[countries] + device_w[devices]
         + 0.8 * age - 0.5 * price - 0.3)
    labels = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    ones = np.ones(n)
    indices = np.column_stack([
        user_slot[users], item_slot[items], country_slot[countries], device_slot[devices],
        np.full(n, hashed), np.full(n, hashed + 1),
    ]).astype(np.int64)
    values = np.column_stack([ones, ones, ones, ones, age, price])
    numeric = np.array([False, False, False, False, True, True])
    return Stream(users, indices, values, numeric, labels)


def interactions_stream(n: int = 200_000, seed: int = 0, crossed: bool = False) -> Stream:
    """The interactions generator's first ``n`` events, hashed (``BITS``); ``crossed``:
    with the crosses of its interacting pairs (``INTERACTION_PAIRS``) after each event's
    own entries, as a learner with those ``crosses`` encodes them."""
    from streamlearn.features import FeatureHasher
    from streamlearn.generators import INTERACTION_PAIRS, interactions

    events = list(interactions(n, seed=seed))
    hasher = FeatureHasher(bits=BITS, dense=DENSE,
                           crosses=INTERACTION_PAIRS if crossed else ())
    batch = hasher.encode([e["features"] for e in events])
    f = int(batch.offsets[1])
    assert (np.diff(batch.offsets) == f).all()  # every event has the same features
    keys = np.array([int(e["key"][1:]) for e in events])
    labels = np.array([e["label"] == 1 for e in events])
    return Stream(keys, batch.indices.reshape(n, f), batch.values.reshape(n, f),
                  batch.numeric[:f].copy(), labels)


def _prequential(learner, batch, labels, metric) -> None:
    if getattr(learner, "update", "batch") == "event":
        proba = learner.predict_learn_many(batch, labels)
        metric.update_many(labels, proba, learner.classes_)
    else:
        prequential(learner, batch, labels, [metric])


def sequential(make_learner, stream: Stream, batch_size: int) -> float:
    """Prequential log-loss of one learner over the whole stream."""
    learner = make_learner()
    metric = LogLoss()
    for start in range(0, len(stream), batch_size):
        rows = np.arange(start, min(start + batch_size, len(stream)))
        _prequential(learner, stream.batch(rows), stream.labels[rows], metric)
    return metric.get()


def parallel(
    make_learner, stream: Stream, batch_size: int, *, n_learners: int = 4,
    sync_every: int = 1_000, strategy: str = "hybrid", rules: dict | None = None,
    dealt: bool = False, warmup: int = 0,
) -> tuple[float, Merger]:
    """Prequential log-loss of ``n_learners`` learners fed disjoint key
    partitions, each sending a delta every ``sync_every`` of its events and
    rebasing on the merged model right after.

    ``dealt``: the learners are dealt the stream's consecutive runs of ``sync_every``
    events in turn instead, whatever their keys (as the training job deals bundles with
    ``job.balance = "bundles"``): every key's events are learned by every learner.

    ``warmup``: the stream's first ``warmup`` events are learned by one learner alone, in
    order, and every learner starts from the model it made (a sequential warm-up).

    The learners advance in turns, one micro-batch each, as if they ran side
    by side at the same speed.
    """
    first = make_learner()
    metric = LogLoss()
    for start in range(0, warmup, batch_size):
        rows = np.arange(start, min(start + batch_size, warmup))
        _prequential(first, stream.batch(rows), stream.labels[rows], metric)
    merger = Merger(first.state(), version=0, strategy=strategy, n_learners=n_learners,
                    rules=rules)
    learners = [first.clone() for _ in range(n_learners)]
    for learner in learners:
        learner.load_state(merger.state())
    trackers = [DeltaTracker(lr, base_version=0) for lr in learners]
    after = np.arange(len(stream)) >= warmup
    if dealt:
        run = (np.arange(len(stream)) - warmup) // sync_every
        parts = [np.flatnonzero(after & (run % n_learners == p)) for p in range(n_learners)]
    else:
        parts = [np.flatnonzero(after & (stream.keys % n_learners == p))
                 for p in range(n_learners)]
    positions = [0] * n_learners
    since_sync = [0] * n_learners
    while any(positions[p] < len(parts[p]) for p in range(n_learners)):
        for p in range(n_learners):
            part, at = parts[p], positions[p]
            if at >= len(part):
                continue
            rows = part[at:at + batch_size]
            _prequential(learners[p], stream.batch(rows), stream.labels[rows], metric)
            positions[p] += len(rows)
            since_sync[p] += len(rows)
            if since_sync[p] >= sync_every or positions[p] >= len(part):
                merger.add(trackers[p].take(learner_id=str(p)))
                version = merger.commit()
                trackers[p].rebase(learners[p], merger.state(), version)
                since_sync[p] = 0
    return metric.get(), merger
