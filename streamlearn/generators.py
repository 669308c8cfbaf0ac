"""Seeded event streams for demos, tests and benchmarks.

- :func:`clicks`: a click-through stream of hashed categorical and numeric
  features with a known logistic optimum, and an optional drift point where
  the true weights change.
- :func:`interactions`: a stream where pairs of categorical features
  interact (a logistic model over low-rank pairwise crosses plus linear
  terms), with its Bayes-optimal log-loss (:func:`interactions_optimum`).
- :func:`river_stream`: River's SEA, Hyperplane and Agrawal generators as
  events.
- :func:`zipf_keys`, :func:`uniform_keys`: event keys drawn Zipf-distributed
  (a few hot keys) or uniformly over a key space, for :func:`clicks`'s ``keys``.

Every stream is a generator of events in the wire format (``key``,
``features``, ``label``, ``id``), deterministic for a seed.

>>> events = list(clicks(3, seed=1))
>>> sorted(events[0])
['features', 'id', 'key', 'label']
>>> events == list(clicks(3, seed=1))
True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import numpy as np

from streamlearn.errors import ConfigError

__all__ = [
    "clicks", "delayed_clicks", "interactions", "interactions_optimum", "river_stream",
    "GENERATORS", "make_stream", "zipf_keys", "uniform_keys", "zipf_share",
]

_CATEGORIES = {
    "country": 40,
    "device": 6,
    "os": 8,
    "browser": 10,
    "site": 200,
    "category": 30,
    "hour": 24,
    "campaign": 300,
}


def clicks(
    n: int | None = None,
    seed: int = 0,
    drift_at: int | None = None,
    users: int = 10_000,
    noise: float = 0.0,
    keys: Iterable[str] | None = None,
) -> Iterator[dict]:
    """A click-through stream: 8 categorical features, 4 numeric ones, label 0/1.

    The label is drawn from a logistic model with fixed true weights, which
    change at event ``drift_at`` (a concept drift) when given. ``noise`` flips
    that share of labels. Each event's key is a user drawn uniformly among
    ``users``, or the next of ``keys`` when given (:func:`zipf_keys`...): the
    features, labels and ids stay those of the same seed either way, so two
    streams that differ only in their keys hold the same events.

    >>> hot = list(clicks(3, seed=1, keys=zipf_keys(seed=2)))
    >>> [e["features"] for e in hot] == [e["features"] for e in clicks(3, seed=1)]
    True
    """
    key_iter = None if keys is None else iter(keys)
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(seed + 10_007)
    weights = {name: truth.normal(0, 1.0, size) for name, size in _CATEGORIES.items()}
    numeric_w = truth.normal(0, 0.7, 4)
    after = {name: truth.normal(0, 1.0, size) for name, size in _CATEGORIES.items()}
    after_numeric = truth.normal(0, 0.7, 4)
    bias = -0.5
    i = 0
    chunk = 4096
    while n is None or i < n:
        m = chunk if n is None else min(chunk, n - i)
        cats = {name: rng.integers(0, size, m) for name, size in _CATEGORIES.items()}
        nums = rng.normal(0, 1, (m, 4))
        user = rng.integers(0, users, m)
        u = rng.random(m)
        flip = rng.random(m) < noise
        for j in range(m):
            k = i + j
            w, nw = (
                (after, after_numeric)
                if drift_at is not None and k >= drift_at
                else (weights, numeric_w)
            )
            z = bias + float(nums[j] @ nw)
            feats: dict = {}
            for name in _CATEGORIES:
                c = int(cats[name][j])
                z += w[name][c]
                feats[name] = f"{name[:2]}{c}"
            for d in range(4):
                feats[f"x{d}"] = round(float(nums[j, d]), 4)
            label = int(u[j] < 1.0 / (1.0 + np.exp(-z)))
            if flip[j]:
                label = 1 - label
            key = f"u{int(user[j])}" if key_iter is None else next(key_iter)
            yield {"key": key, "features": feats, "label": label, "id": f"e{k}"}
        i += m


def delayed_clicks(
    n: int | None = None,
    seed: int = 0,
    rate_per_s: float = 1_000.0,
    mean_delay_s: float = 30.0,
    start_ms: int = 1_767_225_600_000,
) -> Iterator[tuple[str, dict]]:
    """:func:`clicks` as a served system sees them: each event an impression at its time,
    and the click, when there is one, as a label that arrives later.

    Yields ``("impression", {"id", "key", "ts", "features"})`` for every event (no label:
    the click is not known when it is served), ``rate_per_s`` of them a second from
    ``start_ms``, and ``("label", {"id", "label": 1, "ts"})`` for each event whose label
    is 1, ``ts`` after its impression by a delay drawn from an exponential distribution
    of mean ``mean_delay_s`` (a long tail: with a join window of ``w`` seconds, a share
    ``exp(-w / mean_delay_s)`` of the clicks arrive after it). Both kinds in ``ts``
    order, so a consumer sees them as they would happen. An impression without a click
    is a 0 once its window closes. The events are those of ``clicks(n, seed)``.

    >>> got = list(delayed_clicks(200, seed=1, mean_delay_s=5.0))
    >>> impressions = [e for kind, e in got if kind == "impression"]
    >>> labels = [e for kind, e in got if kind == "label"]
    >>> len(impressions), sum(e["label"] for e in clicks(200, seed=1)) == len(labels)
    (200, True)
    >>> all(a[1]["ts"] <= b[1]["ts"] for a, b in zip(got, got[1:]))
    True
    """
    import heapq

    if not rate_per_s > 0:
        raise ConfigError("rate_per_s", "a number of events per second > 0", repr(rate_per_s))
    if not mean_delay_s > 0:
        raise ConfigError("mean_delay_s", "seconds > 0", repr(mean_delay_s))
    delays = np.random.default_rng(seed + 20_011)
    pending: list[tuple[int, int, dict]] = []  # (ts, order, label) of clicks not yet due
    order = 0
    for i, event in enumerate(clicks(n, seed=seed)):
        ts = start_ms + int(i * 1000 / rate_per_s)
        while pending and pending[0][0] <= ts:
            yield "label", heapq.heappop(pending)[2]
        yield "impression", {"id": event["id"], "key": event["key"], "ts": ts,
                             "features": event["features"]}
        if event["label"]:
            due = ts + int(delays.exponential(mean_delay_s) * 1000)
            heapq.heappush(pending, (due, order, {"id": event["id"], "label": 1, "ts": due}))
            order += 1
    while pending:
        yield "label", heapq.heappop(pending)[2]


def _check_keys(n_keys: object, s: object | None = None) -> None:
    if type(n_keys) is not int or n_keys < 1:
        raise ConfigError("n_keys", "an integer ≥ 1", repr(n_keys))
    if s is not None and (isinstance(s, bool) or not isinstance(s, int | float) or not s > 0):
        raise ConfigError("s", "a number > 0", repr(s))


def zipf_share(rank: int, s: float = 1.1, n_keys: int = 1_000_000) -> float:
    """The share of all events that key ``rank`` (1 = the hottest) has in
    :func:`zipf_keys`'s stream: ``rank**-s / Σ_k k**-s`` over the ``n_keys`` keys.

    >>> round(zipf_share(1), 3), round(zipf_share(10), 4)
    (0.124, 0.0098)
    """
    _check_keys(n_keys, s)
    weights = np.arange(1, n_keys + 1, dtype=np.float64) ** -float(s)
    return float(rank ** -float(s) / weights.sum())


def zipf_keys(
    n: int | None = None, seed: int = 0, s: float = 1.1, n_keys: int = 1_000_000
) -> Iterator[str]:
    """Event keys ``"k1"`` … ``"k<n_keys>"``, key ``k<r>`` drawn with probability
    proportional to ``r**-s`` (Zipf's law over a finite key space; s = 1.1 over
    1M keys gives the hottest key 12.4% of all events, the ten hottest 33%:
    see :func:`zipf_share`). Endless unless ``n`` is given; deterministic for a seed.

    >>> from collections import Counter
    >>> top = Counter(zipf_keys(100_000, seed=3)).most_common(2)
    >>> [k for k, _ in top], 0.11 < top[0][1] / 100_000 < 0.14
    (['k1', 'k2'], True)
    """
    _check_keys(n_keys, s)
    cdf = np.cumsum(np.arange(1, n_keys + 1, dtype=np.float64) ** -float(s))
    cdf /= cdf[-1]
    rng = np.random.default_rng(seed)
    i = 0
    while n is None or i < n:
        m = 4096 if n is None else min(4096, n - i)
        ranks = np.minimum(np.searchsorted(cdf, rng.random(m), side="right"), n_keys - 1) + 1
        yield from (f"k{r}" for r in ranks.tolist())
        i += m


def uniform_keys(n: int | None = None, seed: int = 0, n_keys: int = 1_000_000) -> Iterator[str]:
    """Event keys ``"k1"`` … ``"k<n_keys>"`` drawn uniformly: :func:`zipf_keys`'s key
    space without its hot keys. Endless unless ``n`` is given.

    >>> keys = list(uniform_keys(5, seed=1, n_keys=3))
    >>> len(keys), set(keys) <= {"k1", "k2", "k3"}
    (5, True)
    """
    _check_keys(n_keys)
    rng = np.random.default_rng(seed)
    i = 0
    while n is None or i < n:
        m = 4096 if n is None else min(4096, n - i)
        yield from (f"k{r}" for r in (rng.integers(0, n_keys, m) + 1).tolist())
        i += m


#: The interactions stream's categorical groups and their number of values.
INTERACTION_GROUPS = {"segment": 40, "ad": 60, "site": 50, "device": 8, "hour": 24, "country": 20}
#: The pairs of groups whose values interact in the true model.
INTERACTION_PAIRS = (("segment", "ad"), ("ad", "site"), ("segment", "device"), ("site", "hour"))


def _interaction_chunks(n: int | None, seed: int, rank: int, users: int) -> Iterator[tuple]:
    """The interactions stream in chunks of arrays: (categories, numbers,
    users, true probabilities, labels)."""
    rng = np.random.default_rng(seed)
    truth = np.random.default_rng(seed + 20_011)
    linear = {g: truth.normal(0, 0.5, size) for g, size in INTERACTION_GROUPS.items()}
    # factors of variance rank**-0.5: each pair's term has variance about 1
    sd = rank ** -0.25
    factors = {g: truth.normal(0, sd, (size, rank)) for g, size in INTERACTION_GROUPS.items()}
    numeric_w = truth.normal(0, 0.5, 2)
    bias = -0.3
    i = 0
    while n is None or i < n:
        m = 4096 if n is None else min(4096, n - i)
        cats = {g: rng.integers(0, size, m) for g, size in INTERACTION_GROUPS.items()}
        nums = rng.normal(0, 1, (m, 2))
        user = rng.integers(0, users, m)
        z = bias + nums @ numeric_w
        for g in INTERACTION_GROUPS:
            z += linear[g][cats[g]]
        for a, b in INTERACTION_PAIRS:
            z += np.einsum("ij,ij->i", factors[a][cats[a]], factors[b][cats[b]])
        p = 1.0 / (1.0 + np.exp(-z))
        labels = (rng.random(m) < p).astype(int)
        yield cats, nums, user, p, labels
        i += m


def interactions(
    n: int | None = None, seed: int = 0, rank: int = 3, users: int = 10_000
) -> Iterator[dict]:
    """A stream where interactions matter: 6 categorical features, 2 numeric
    ones, label 0/1.

    The label is drawn from a logistic model whose logit is a bias, a weight
    per categorical value and per number, and for each pair of groups in
    :data:`INTERACTION_PAIRS` the dot product of the two values' true factors
    (``rank`` of them): ``z = b + Σ_g w_g[c_g] + u·x + Σ_(g,h) <V_g[c_g],
    V_h[c_h]>``. A linear model cannot express the pair terms; a
    factorization machine of ``k ≥ rank`` factors (or hashed crosses of the
    pairs) can. The log-loss of the true model — the best any learner can
    expect — is :func:`interactions_optimum`.

    >>> e = next(interactions(1, seed=3))
    >>> sorted(e["features"]), e["label"] in (0, 1)
    (['ad', 'country', 'device', 'hour', 'segment', 'site', 'x0', 'x1'], True)
    """
    _check_rank(rank)
    k = 0
    for cats, nums, user, _, labels in _interaction_chunks(n, seed, rank, users):
        for j in range(len(labels)):
            feats: dict = {g: f"{g[:2]}{int(cats[g][j])}" for g in INTERACTION_GROUPS}
            feats["x0"] = round(float(nums[j, 0]), 4)
            feats["x1"] = round(float(nums[j, 1]), 4)
            yield {"key": f"u{int(user[j])}", "features": feats, "label": int(labels[j]),
                   "id": f"e{k}"}
            k += 1


def interactions_optimum(n: int, seed: int = 0, rank: int = 3) -> float:
    """The log-loss of the true model on the first ``n`` events of
    :func:`interactions` (the mean binary entropy of their true
    probabilities): the Bayes-optimal log-loss of that stream, what a learner
    that knew the model would score on average.

    >>> round(interactions_optimum(100_000), 3)
    0.422
    """
    _check_rank(rank)
    total, count = 0.0, 0
    for *_, p, _ in _interaction_chunks(n, seed, rank, 1):
        q = np.clip(p, 1e-15, 1 - 1e-15)
        total += float(-(q * np.log(q) + (1 - q) * np.log(1 - q)).sum())
        count += len(p)
    return total / max(count, 1)


def _check_rank(rank: object) -> None:
    if type(rank) is not int or rank < 1:
        raise ConfigError("rank", "an integer ≥ 1", repr(rank))


def river_stream(name: str, n: int | None = None, seed: int = 0) -> Iterator[dict]:
    """River's ``SEA``, ``Hyperplane`` or ``Agrawal`` generator as events
    (binary labels).

    Agrawal's coded attributes (``elevel``, ``car``, ``zipcode``) become
    strings (one-hot features); every other value stays a number.

    >>> next(river_stream("agrawal", 1))["features"]["car"]
    'car2'
    """
    from river import datasets

    source: datasets.base.SyntheticDataset
    if name == "sea":
        source = datasets.synth.SEA(seed=seed)
    elif name == "hyperplane":
        source = datasets.synth.Hyperplane(seed=seed, n_features=10)
    elif name == "agrawal":
        source = datasets.synth.Agrawal(seed=seed)
    else:
        raise ConfigError("generator", "sea, hyperplane or agrawal", repr(name))
    for k, (x, y) in enumerate(islice(iter(source), n)):
        yield {
            "key": f"k{k % 1000}",
            "features": {
                str(f): f"{f}{v}" if f in _CODED else float(v) for f, v in x.items()
            },
            "label": int(y),
            "id": f"e{k}",
        }


_CODED = frozenset({"elevel", "car", "zipcode"})  # Agrawal's categorical attributes

GENERATORS = ("clicks", "interactions", "sea", "hyperplane", "agrawal")


def make_stream(
    name: str, n: int | None = None, seed: int = 0, drift_at: int | None = None
) -> Iterator[dict]:
    """One of :data:`GENERATORS` by name."""
    if name == "clicks":
        return clicks(n, seed=seed, drift_at=drift_at)
    if name == "interactions":
        return interactions(n, seed=seed)
    if name in ("sea", "hyperplane", "agrawal"):
        return river_stream(name, n, seed=seed)
    raise ConfigError("--generator", f"one of {', '.join(GENERATORS)}", repr(name))
