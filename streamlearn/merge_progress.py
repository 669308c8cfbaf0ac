"""How far one learner got on each slot between two syncs: the ``"progress"`` merge strategy.

P learners move a shared slot from the same start. If each took small steps (a slot few of
their events touched: a feature cross, a rare value), their moves are pieces of evidence
that add up, and summing them is what one learner fed every event would have done. If
each went most of the way to the slot's optimum (a frequent feature, thousands of events
between syncs), their moves are the same move found P times, and summing overshoots by P:
averaging is right. Which case a slot is in can be read from the delta itself.

With an adaptive optimiser a learner's step on a slot is ``r · g`` with the rate
``r = c / √G`` (``G`` the slot's sum of squared gradients) and, for a log or squared loss
near calibration, the loss's curvature along the slot is about the squared gradient, so
each event closes about ``r · g²`` of the remaining distance to the slot's optimum. Over a
delta, the fraction ``f`` of the way one learner covered is about ``r · ΔG`` (``ΔG`` its
delta of ``G``): :func:`progress`, from the optimiser's own accumulators:

============  ====================================  ============================
optimiser     rate ``r``                            accumulator (``ΔG``)
============  ====================================  ============================
Normalized    ``lr · √(T/N) / (s · √G)``             ``normalized.g2``
AdaGrad       ``lr / (√G + eps)``                    ``adagrad.g2``
FTRL          ``alpha / (beta + √n)``                ``ftrl.n``
============  ====================================  ============================

(``G`` after the delta; ``s`` the slot's largest ``|x|``, ``N``/``T`` the learner's sums of
the normalised optimiser.) If ``k`` learners each cover a fraction ``f``, one after the
other they would cover ``1 - (1 - f)^k``: the merged move is the mean of their moves times
``(1 - (1 - f)^k) / f``, so each delta counts :func:`merge_factor` ``(1 - (1 - f)^k) / (k·f)``
of itself: 1 (a sum) as ``f`` goes to 0, ``1/k`` (a mean) at ``f = 1``, with ``k`` the number
of learners. A slot one learner owns (a user's, with key partitions) counts the same way:
where its learner went far it is divided as if the others had moved it too (what was
measured instead, in ``docs/merge.md``, did worse).

>>> [round(float(merge_factor(np.array([f]), 4)[0]), 3) for f in (1e-9, 0.1, 0.5, 1.0)]
[1.0, 0.86, 0.469, 0.25]

Optimisers without such accumulators (SGD, Adam) are merged as ``"shared"`` merges them.
Measured in ``docs/merge.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FAMILIES", "SinceBase", "Source", "merge_factor", "progress", "sources"]

#: The per-slot parameters a strategy weighs, by the prefix of their arrays: the weights
#: (and their accumulators) and a factorization machine's factors (``factors.*``), each
#: with the key of its optimiser in the learner's parameters.
FAMILIES = {"": "optimizer", "factors.": "factor_optimizer"}
_ACCUMULATORS = {"Normalized": "normalized.g2", "AdaGrad": "adagrad.g2", "FTRL": "ftrl.n"}
_TINY = 1e-12


@dataclass(frozen=True)
class Source:
    """Where a family's progress is read: its optimiser, that optimiser's parameters, the
    array of its accumulator, and for the normalised optimiser the arrays of its
    per-slot scale and its counts (``""`` for the others)."""

    optimizer: str
    params: Mapping[str, Any]
    accumulator: str
    scale: str = ""
    counts: str = ""


def sources(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, Source]:
    """The families of a model's state whose progress can be read, by prefix.

    >>> from streamlearn.learners import LogisticRegression
    >>> from streamlearn.optim import SGD, AdaGrad
    >>> state = LogisticRegression(AdaGrad(0.1), bits=4).state()
    >>> sources(state.meta, state.arrays)
    {'': Source(optimizer='AdaGrad', params={'lr': 0.1, 'eps': 1e-08}, accumulator='adagrad.g2', \
scale='', counts='')}
    >>> state = LogisticRegression(SGD(0.1), bits=4).state()
    >>> sources(state.meta, state.arrays)
    {}
    """
    given = meta.get("params")
    params: Mapping[str, Any] = given if isinstance(given, dict) else {}
    out = {}
    for prefix, key in FAMILIES.items():
        config = params.get(key)
        if not isinstance(config, dict):
            continue
        name = str(config.get("name", ""))
        accumulator = _ACCUMULATORS.get(name)
        if accumulator is None or prefix + accumulator not in arrays:
            continue
        scale = counts = ""
        if name == "Normalized":
            scale, counts = prefix + "normalized.scale", prefix + "normalized.n"
        out[prefix] = Source(name, dict(config.get("params") or {}), prefix + accumulator,
                             scale, counts)
    return out


def progress(
    source: Source, arrays: Mapping[str, np.ndarray], slots: np.ndarray,
    delta_acc: np.ndarray, cols: np.ndarray | None = None,
    delta_scale: np.ndarray | None = None,
) -> np.ndarray:
    """The fraction ``f`` (in ``[0, 1]``) of the way to each slot's optimum one learner
    covered in a delta: ``r · ΔG`` (module docstring), from the global model's ``arrays``
    before the delta is folded in and the delta's change of the accumulator,
    ``delta_acc`` (its rows are ``slots``; ``cols``: the global columns of a class-wise
    array's columns). A row of several columns (classes, factors) takes their mean.
    ``delta_scale``: the learner's largest ``|x|`` per slot (the normalised optimiser's),
    used where the global model has none yet.
    """
    before = arrays[source.accumulator][slots]
    if cols is not None and before.ndim == 2:
        before = before[:, cols]
    change = np.maximum(np.asarray(delta_acc, dtype=np.float64), 0.0)
    after = np.maximum(before + change, 0.0)
    p = source.params
    if source.optimizer == "Normalized":
        scale = arrays[source.scale][slots]
        if delta_scale is not None:
            scale = np.maximum(scale, delta_scale)
        n, t = arrays[source.counts][:2]
        nscale = float(p.get("lr", 0.5)) * (np.sqrt(t / n) if n > 0 else 1.0)
        if after.ndim == 2:
            scale = scale[:, None]
        rate = nscale / np.maximum(scale * np.sqrt(after), _TINY)
        rate = np.where(scale > 0, rate, 0.0)
    elif source.optimizer == "AdaGrad":
        rate = float(p.get("lr", 0.1)) / (np.sqrt(after) + float(p.get("eps", 1e-8)))
    else:  # FTRL
        rate = float(p.get("alpha", 0.1)) / (float(p.get("beta", 1.0)) + np.sqrt(after))
    f = rate * change
    if f.ndim == 2:
        f = f.mean(axis=1)
    return np.clip(f, 0.0, 1.0)


def merge_factor(f: np.ndarray, k: float | np.ndarray) -> np.ndarray:
    """What a delta on a slot counts for, when ``k`` learners each covered the fraction
    ``f`` of the way: ``(1 - (1 - f)^k) / (k·f)``, 1 as ``f`` goes to 0 or for ``k = 1``."""
    f = np.clip(f, _TINY, 1.0)
    covered = -np.expm1(k * np.log1p(-np.minimum(f, 1.0 - 1e-16)))
    return np.where(f >= 1.0, 1.0 / k, covered / (k * f))


class SinceBase:
    """Each learner's progress per slot since the version it learns from.

    A learner in the training job sends several deltas (a bundle each) before it sees
    the others' learning again (a version), so what its moves share with theirs is its
    progress since its base version, not one delta's: the sum of its deltas' ``f``
    while their base version stays the same (kept as sorted slots, so the cost follows
    the slots touched since, not the model's size).

    >>> since = SinceBase()
    >>> since.add("a", "", 3, np.array([1, 5]), np.array([0.1, 0.2])).tolist()
    [0.1, 0.2]
    >>> since.add("a", "", 3, np.array([5, 7]), np.array([0.3, 0.1])).tolist()
    [0.5, 0.1]
    >>> since.add("a", "", 4, np.array([5]), np.array([0.3])).tolist()  # rebased: anew
    [0.3]
    """

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[int, np.ndarray, np.ndarray]] = {}

    def add(self, learner: str, family: str, base_version: int, slots: np.ndarray,
            f: np.ndarray) -> np.ndarray:
        """Add one delta's ``f`` (``slots`` ascending, distinct); return the learner's
        progress on those slots since its base version, this delta's included."""
        held = self._held.get((learner, family))
        if held is None or held[0] != base_version:
            self._held[(learner, family)] = (base_version, slots.copy(), f.copy())
            return f
        _, old_slots, old_f = held
        every = np.union1d(old_slots, slots)
        total = np.zeros(len(every))
        total[np.searchsorted(every, old_slots)] += old_f
        at = np.searchsorted(every, slots)
        total[at] += f
        self._held[(learner, family)] = (base_version, every, total)
        return total[at]
