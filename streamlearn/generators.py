"""Seeded event streams for demos, tests and benchmarks.

- :func:`clicks`: a click-through stream of hashed categorical and numeric
  features with a known logistic optimum, and an optional drift point where
  the true weights change.
- :func:`river_stream`: River's SEA, Hyperplane and Agrawal generators as
  events.

Every stream is a generator of events in the wire format (``key``,
``features``, ``label``, ``id``), deterministic for a seed.

>>> events = list(clicks(3, seed=1))
>>> sorted(events[0])
['features', 'id', 'key', 'label']
>>> events == list(clicks(3, seed=1))
True
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import numpy as np

from streamlearn.errors import ConfigError

__all__ = ["clicks", "river_stream", "GENERATORS", "make_stream"]

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
) -> Iterator[dict]:
    """A click-through stream: 8 categorical features, 4 numeric ones, label 0/1.

    The label is drawn from a logistic model with fixed true weights, which
    change at event ``drift_at`` (a concept drift) when given. ``noise`` flips
    that share of labels.
    """
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
            yield {"key": f"u{int(user[j])}", "features": feats, "label": label, "id": f"e{k}"}
        i += m


def river_stream(name: str, n: int | None = None, seed: int = 0) -> Iterator[dict]:
    """River's ``SEA``, ``Hyperplane`` or ``Agrawal`` generator as events
    (binary labels).

    Agrawal's coded attributes (``elevel``, ``car``, ``zipcode``) become
    strings (one-hot features); every other value stays a number.

    >>> next(river_stream("agrawal", 1))["features"]["car"]
    'car2'
    """
    from river import datasets

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

GENERATORS = ("clicks", "sea", "hyperplane", "agrawal")


def make_stream(
    name: str, n: int | None = None, seed: int = 0, drift_at: int | None = None
) -> Iterator[dict]:
    """One of :data:`GENERATORS` by name."""
    if name == "clicks":
        return clicks(n, seed=seed, drift_at=drift_at)
    if name in ("sea", "hyperplane", "agrawal"):
        return river_stream(name, n, seed=seed)
    raise ConfigError("--generator", f"one of {', '.join(GENERATORS)}", repr(name))
