"""Merging parallel learners: sparse deltas, one global model, versions.

Each parallel learner starts from a global version, learns from its own
events, and now and then sends what it changed since its last send, a
:class:`ModelDelta`. A :class:`Merger` folds the deltas, one at a time as
they arrive, into the global model; a :class:`DeltaTracker` computes a
learner's deltas and rebases it on a newer global version without losing
what it learned meanwhile.

What a delta holds
------------------
The rows (slots) whose state changed since the last delta and, for every
per-slot array of :class:`~streamlearn.state.ModelState` (``weights``, the
optimiser's accumulators, ``l1.cum``, ``scaler.*``), the change at those rows;
the small arrays (``intercept``, ``l1.total``) in full; the number of events
and optimiser steps learned; the base version; the learner's kind, parameters
and classes. Scaler statistics travel as the statistics of the new events
alone (count, mean, variance), which the merger combines exactly (Chan's
formula) whatever the strategy: they describe the data, not a learned guess.

Strategies
----------
``n_slots = 2**bits + len(dense)``: slots below ``2**bits`` are *hashed*
(sparse: a user id, a rare token — mostly learned by the one learner that
owns the key), the others are *dense* features, touched by every learner.
A delta's *event share* is its events over the events all learners send in
the same time (``1/P`` for ``P`` learners at equal rates, 1 for one learner).

``"hybrid"`` (default)
    Hashed slots: deltas are **summed** — a slot learned by one learner keeps
    all of its learning, exactly as if the learner were alone; a shared
    hashed slot moves like asynchronous SGD. Dense slots and the intercept:
    deltas are **averaged** by event share (model averaging), since every
    learner pulls the same parameter towards the same optimum and a sum
    would overshoot by ``P``. AdaGrad's ``g2`` follows the weights' rule
    (sum of squared gradients where weights are summed). Adam's moments are
    running *means* of gradients, not sums: on hashed slots each delta is
    divided by the number of learners that touched the slot lately (so a
    slot owned by one learner gets its moments as they are, a slot shared by
    all the mean of their moves); on dense slots, by event share. Lazy L1
    bookkeeping and the step counter are summed (every learner's steps
    happened).
``"shared"``
    As ``"hybrid"``, but a hashed slot several learners touched lately is
    **averaged** over them, as Adam's moments are: each delta there is divided
    by the number of learners that touched the slot lately (owned slots, a
    user's, still get all of their learner's learning). For learners that
    move a lot between syncs (per-event steps, thousands of events per delta:
    the training job), where summing the moves of P learners on a shared
    feature overshoots by up to P; with small, frequent deltas summing learns
    faster (``docs/merge.md`` has both measured).
``"progress"``
    A hashed slot's delta counts between all of it (a sum) and ``1/P`` of it
    (a mean) by how far its learner got on that slot since it last saw the
    others' learning, read from its optimiser's accumulators: small steps add
    up, moves that each went most of the way do not
    (:mod:`streamlearn.merge_progress`). For the weights and a factorization
    machine's factors learned with the normalised optimiser, AdaGrad or FTRL;
    others merge as under ``"shared"``. The training job's default
    (``job.merge``): of the rules measured, the one closest to one learner on
    linear, crossed and factorization models alike.
``"average"``
    Every array moves by the delta times its event share: classic weighted
    model averaging. Simple and safe for dense models; slow to learn sparse
    keys (a key's slots move by ``1/P`` of what its learner learned).
``"ftrl"``
    For FTRL-Proximal learners: ``z`` and ``n`` are sums of per-event terms,
    so the deltas of both are summed on every slot, and the weights are
    recomputed from the merged ``(z, n)`` (the weights' own deltas are not
    used). Any strategy recomputes FTRL weights from ``(z, n)``, so the
    three always agree.

Staleness
---------
A delta's *lag* is the merger's version minus its base version. Deltas are
small increments (a flush's worth of events), sent often, and learners rebase
on each new version, so lags are 0–2. A delta with a lag up to
``staleness_tolerance`` (default 2) is **rebased**: applied in full on top of
the current global model, as asynchronous SGD with bounded staleness does.
Down-weighting it would throw away the learning of events that no other
learner sees (with key partitions, nobody else will learn those keys' slots).
A delta older than that is **down-weighted** by
``(tolerance + 1) / (lag + 1)``: its gradients were taken so far from the
current model (a learner stalled or restored from an old checkpoint) that
following them fully could undo the others' progress. A delta from a version
newer than the merger's is refused.

Examples
--------
Two learners on disjoint keys, merged:

>>> from streamlearn.learners import LogisticRegression, learner_from_state
>>> from streamlearn.optim import SGD
>>> model = LogisticRegression(SGD(0.5), bits=8, intercept=False)
>>> merger = Merger(model.state(), version=0, n_learners=2)
>>> learners = [model.clone(), model.clone()]
>>> trackers = [DeltaTracker(lr, base_version=0) for lr in learners]
>>> learners[0].learn_many([{"user": "a"}] * 4, [True] * 4)
>>> learners[1].learn_many([{"user": "b"}] * 4, [False] * 4)
>>> for i, tracker in enumerate(trackers):
...     merger.add(tracker.take(learner_id=str(i)))
>>> merger.commit()
1
>>> merged = learner_from_state(merger.state())
>>> round(merged.predict_proba_one({"user": "a"})[True], 3)
0.562
>>> round(merged.predict_proba_one({"user": "b"})[True], 3)
0.438
>>> merger.n_events
8
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from streamlearn.arrow_ipc import ipc_stream_bytes
from streamlearn.errors import ConfigError, StateError, ValidationError
from streamlearn.merge_progress import SinceBase, merge_factor, progress, sources
from streamlearn.state import ModelState

__all__ = [
    "ModelDelta", "DeltaTracker", "Merger", "STRATEGIES", "DELTA_FORMAT_VERSION", "MERGE_RULES",
    "RULES", "merge_rule",
]

#: The merge strategies :class:`Merger` offers.
STRATEGIES = ("hybrid", "shared", "progress", "average", "ftrl")
DELTA_FORMAT_VERSION = 1
_HEADER_KEY = b"streamlearn.delta"
_SCALER = ("scaler.count", "scaler.mean", "scaler.var")
_MAX_BITS = 64  # learners told apart by the Adam contributor count
_SENT_CHUNKS = 32  # a tracker merges its records of sent slots past this many takes

#: What each rule does with a delta, per strategy (see the module docstring).
RULES = {
    "learned": "hybrid: summed on hashed slots, averaged by event share on dense slots and "
               "small arrays; shared: as hybrid, but on hashed slots divided by the learners "
               "that touched the slot lately; progress: as hybrid, but on hashed slots "
               "between summed and averaged by how far the learner got on the slot "
               "(streamlearn.merge_progress); average, ftrl: averaged",
    "moment": "a running mean (Adam): hybrid: on hashed slots divided by the number of "
              "learners that touched the slot lately; elsewhere averaged",
    "ftrl": "FTRL's z and n: summed under the ftrl strategy; otherwise as learned",
    "steps": "lazy-L1 bookkeeping: summed (averaged under the average strategy)",
    "sum": "a sum over events: summed under every strategy",
    "max": "a running maximum: the larger of the global and the learner's value",
    "stats": "scaler statistics: the new events' own statistics, combined exactly (Chan)",
    "average": "averaged by event share under every strategy",
}
#: How every array of every learner and optimiser merges: one entry per array;
#: ``intercept.<name>`` and ``factors.<name>`` (the accumulators of the
#: intercept and of a factorization machine's factors) follow ``<name>``.
MERGE_RULES = {
    "weights": "learned",
    "intercept": "learned",
    "factors": "learned",
    "adagrad.g2": "learned",
    "normalized.g2": "learned",
    "adam.m": "moment",
    "adam.v": "moment",
    "ftrl.z": "ftrl",
    "ftrl.n": "ftrl",
    "normalized.scale": "max",
    "normalized.n": "sum",
    "mixture.loss": "sum",
    "l1.cum": "steps",
    "l1.total": "steps",
    "scaler.count": "stats",
    "scaler.mean": "stats",
    "scaler.var": "stats",
}
_FAMILIES = ("intercept.", "factors.")
_ADDITIVE = ("learned", "moment", "ftrl", "steps", "sum", "average")  # rules that add deltas


def merge_rule(name: str) -> str:
    """The rule of :data:`MERGE_RULES` that array ``name`` merges by.

    >>> merge_rule("normalized.scale"), merge_rule("intercept.ftrl.z"), merge_rule("factors")
    ('max', 'ftrl', 'learned')
    """
    rule = MERGE_RULES.get(name)
    if rule is None:
        for family in _FAMILIES:
            if name.startswith(family):
                rule = MERGE_RULES.get(name[len(family):])
                break
    if rule is None:
        raise StateError(
            f"array {name!r} has no merge rule; declare it in streamlearn.merge.MERGE_RULES"
        )
    return rule


def _ftrl_targets(
    meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The arrays FTRL recomputes from its ``(z, n)``: ``(target, z, n,
    optimiser parameters)`` for the weights, the intercept learned by the
    optimiser's rule (never penalised) and a factorization machine's factors."""
    given = meta.get("params")
    params: dict[str, Any] = given if isinstance(given, dict) else {}
    out = []
    for target, prefix, key in (("weights", "", "optimizer"),
                                ("intercept", "intercept.", "optimizer"),
                                ("factors", "factors.", "factor_optimizer")):
        config = params.get(key)
        if not isinstance(config, dict) or config.get("name") != "FTRL":
            continue
        z, n = prefix + "ftrl.z", prefix + "ftrl.n"
        if target in arrays and z in arrays and n in arrays:
            p = dict(config.get("params") or {})
            if target == "intercept":
                p["l1"] = p["l2"] = 0.0
            out.append((target, z, n, p))
    return out


def _classes(meta: Mapping[str, Any]) -> list[Any] | None:
    classes = meta.get("classes")
    return list(classes) if isinstance(classes, list) else None


def _per_slot(name: str, array: np.ndarray, n_slots: int) -> bool:
    return array.ndim >= 1 and array.shape[0] == n_slots and not _by_class(name)


def _family(name: str) -> str:
    """The prefix of the parameters an array belongs to: ``factors.`` for a factorization
    machine's factors and their accumulators, ``intercept.`` for the intercept's, else
    ``""`` (the weights and theirs)."""
    for prefix in _FAMILIES:
        if name == prefix[:-1] or name.startswith(prefix):
            return prefix
    return ""


def _by_class(name: str) -> bool:
    """Whether a small array has one value per class (the intercept and its
    own accumulators)."""
    return name == "intercept" or name.startswith("intercept.")


def _additive(name: str) -> bool:
    """Whether a delta of array ``name`` is added into the global model (its
    rule sums or averages changes; not a maximum, not scaler statistics)."""
    return name not in _SCALER and merge_rule(name) in _ADDITIVE


@dataclass
class _InFlight:
    """A delta a tracker handed out and does not know to be in the global model
    yet: its slots, its additive rows there, its additive small arrays, and
    the caller's tag."""

    slots: np.ndarray
    tag: Any
    rows: dict[str, np.ndarray]
    small: dict[str, np.ndarray]
    n_events: int = 0
    n_steps: int = 0

    def joined(self, newer: _InFlight) -> _InFlight:
        """This delta and a newer one as one (known to be in with the newer)."""
        slots, inverse = np.unique(np.concatenate([self.slots, newer.slots]),
                                   return_inverse=True)
        rows = {}
        for name in self.rows.keys() | newer.rows.keys():
            parts = [e.rows[name] for e in (self, newer) if name in e.rows]
            trailing = parts[0].shape[1:]
            out = np.zeros((len(slots), *trailing))
            at = 0
            for e in (self, newer):
                k = len(e.slots)
                if name in e.rows:
                    np.add.at(out, inverse[at:at + k], e.rows[name])
                at += k
            rows[name] = out
        small = dict(self.small)
        for name, value in newer.small.items():
            small[name] = small[name] + value if name in small else value
        return _InFlight(slots=slots, tag=newer.tag, rows=rows, small=small,
                         n_events=self.n_events + newer.n_events,
                         n_steps=self.n_steps + newer.n_steps)


def _comparable(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "classes"}


# -- scaler statistics: the new events' own statistics, and Chan's combination --


def _new_stats(
    count: np.ndarray, mean: np.ndarray, var: np.ndarray,
    ref_count: np.ndarray, ref_mean: np.ndarray, ref_var: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and variance of the values added to ``ref`` to give the
    current statistics (inverse of Chan's formula)."""
    n_b = count - ref_count
    ok = n_b > 0
    safe_n = np.where(ok, n_b, 1.0)
    safe_count = np.where(count > 0, count, 1.0)
    mean_b = np.where(ok, (count * mean - ref_count * ref_mean) / safe_n, 0.0)
    delta = mean_b - ref_mean
    m2_b = count * var - ref_count * ref_var - delta * delta * ref_count * n_b / safe_count
    var_b = np.where(ok, np.maximum(m2_b, 0.0) / safe_n, 0.0)
    return n_b, mean_b, var_b


def _scaler_stats(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scaler's count, mean and variance arrays (:data:`_SCALER`) in ``arrays``."""
    return arrays[_SCALER[0]], arrays[_SCALER[1]], arrays[_SCALER[2]]


def _combine_stats(
    count: np.ndarray, mean: np.ndarray, var: np.ndarray,
    n_b: np.ndarray, mean_b: np.ndarray, var_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan's parallel formula: statistics of the union of two sets of values."""
    n = count + n_b
    safe = np.where(n > 0, n, 1.0)
    delta = mean_b - mean
    new_mean = np.where(n > 0, mean + delta * n_b / safe, mean)
    m2 = count * var + n_b * var_b + delta * delta * count * n_b / safe
    new_var = np.where(n > 0, m2 / safe, var)
    return n, new_mean, new_var


def _ftrl_weights(z: np.ndarray, n: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """FTRL-Proximal's closed-form weights from its ``(z, n)`` state."""
    alpha = float(params.get("alpha", 0.1))
    beta = float(params.get("beta", 1.0))
    l1 = float(params.get("l1", 0.0))
    l2 = float(params.get("l2", 0.0))
    shrunk = np.sign(z) * np.maximum(np.abs(z) - l1, 0.0)
    return -shrunk / ((beta + np.sqrt(n)) / alpha + l2)


def _optimizer(meta: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    config = meta.get("params", {}).get("optimizer", {}) if isinstance(meta.get("params"), dict) \
        else {}
    if not isinstance(config, dict):
        return "", {}
    return str(config.get("name", "")), dict(config.get("params", {}) or {})


def _aligned(array: np.ndarray, cols: np.ndarray, width: int) -> np.ndarray:
    """``array``'s columns placed at ``cols`` of a zero array ``width`` wide."""
    out = np.zeros(array.shape[:-1] + (width,))
    out[..., cols] = array
    return out


# -- the delta ----------------------------------------------------------------


@dataclass
class ModelDelta:
    """What a learner sends at a sync: its change since its last delta.

    Parameters
    ----------
    learner_id
        Which learner sent it (any string, stable for the learner's life).
    base_version
        The global version the learner's reference point came from.
    n_events, n_steps
        Events learned and optimiser steps taken since the last delta.
    slots
        The rows that changed, ascending (``int64``).
    sparse
        Per-slot array name → its change at ``slots`` (shape ``(k,)`` or
        ``(k, n_classes)``); ``scaler.*`` hold the new events' own count,
        mean and variance instead.
    dense
        Small array name (``intercept``, ``l1.total``) → its full change.
    meta
        The learner's ``kind``, ``params``, ``classes`` (column order of the
        2-d arrays), ``bits`` and ``n_slots``.
    extra
        Anything JSON-able the sender wants to pass along (offsets, metrics).
    """

    learner_id: str
    base_version: int
    n_events: int
    n_steps: int
    slots: np.ndarray
    sparse: dict[str, np.ndarray]
    dense: dict[str, np.ndarray]
    meta: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"ModelDelta(learner_id={self.learner_id!r}, base_version={self.base_version}, "
            f"n_events={self.n_events}, n_slots_changed={len(self.slots)}, "
            f"arrays={sorted(self.sparse) + sorted(self.dense)})"
        )

    @property
    def nnz(self) -> int:
        """How many rows changed."""
        return len(self.slots)

    def to_bytes(self) -> bytes:
        """Arrow IPC stream bytes: one row per changed slot (``slot`` and one
        column per array, a fixed-size list per row for 2-d arrays); the rest
        as JSON in the schema metadata. No pickle.

        >>> d = ModelDelta("0", 3, 10, 1, np.array([2, 5]), {"weights": np.array([0.5, -1.0])},
        ...                {"intercept": np.array([0.1])}, {"kind": "Demo", "n_slots": 8})
        >>> e = ModelDelta.from_bytes(d.to_bytes())
        >>> e.slots.tolist(), e.sparse["weights"].tolist(), e.dense["intercept"].tolist()
        ([2, 5], [0.5, -1.0], [0.1])
        """
        n_slots = int(self.meta.get("n_slots", 0) or 0)
        slot_type = pa.uint32() if n_slots <= 2**32 else pa.int64()
        columns = [pa.array(np.asarray(self.slots), type=slot_type)]
        names = ["slot"]
        for name, values in self.sparse.items():
            v = np.ascontiguousarray(values, dtype=np.float64)
            if v.ndim == 1:
                columns.append(pa.array(v))
            else:
                width = v.shape[1]
                columns.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), width))
            names.append(name)
        header = {
            "format": DELTA_FORMAT_VERSION,
            "learner_id": self.learner_id,
            "base_version": self.base_version,
            "n_events": self.n_events,
            "n_steps": self.n_steps,
            "meta": self.meta,
            "extra": self.extra,
            "dense": {k: {"shape": list(np.shape(v)), "values": np.ravel(v).tolist()}
                      for k, v in self.dense.items()},
        }
        try:
            encoded = json.dumps(header).encode()
        except (TypeError, ValueError) as exc:
            raise StateError(f"model delta metadata or extra is not JSON-able: {exc}") from exc
        batch = pa.RecordBatch.from_arrays(columns, names=names, metadata={_HEADER_KEY: encoded})
        return ipc_stream_bytes(batch)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview | pa.Buffer) -> ModelDelta:
        """Read :meth:`to_bytes` output (arrays are read-only views of ``data``)."""
        try:
            buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
            batch = pa.ipc.open_stream(buffer).read_next_batch()
            header = json.loads((batch.schema.metadata or {})[_HEADER_KEY])
        except (pa.ArrowInvalid, KeyError, ValueError, StopIteration, TypeError) as exc:
            raise StateError(
                "not a streamlearn model delta (expected Arrow IPC bytes from "
                f"ModelDelta.to_bytes): {exc}"
            ) from exc
        if not isinstance(header, dict) or header.get("format") != DELTA_FORMAT_VERSION:
            got = header.get("format") if isinstance(header, dict) else header
            raise StateError(
                f"model delta format {got!r} is not supported (expected "
                f"{DELTA_FORMAT_VERSION}); run the same streamlearn version on every worker"
            )
        if batch.schema.names[:1] != ["slot"]:
            raise StateError("model delta lacks its `slot` column")
        slots = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
        sparse = {}
        for name, column in zip(batch.schema.names[1:], batch.columns[1:], strict=True):
            if pa.types.is_fixed_size_list(column.type):
                width = column.type.list_size
                flat = column.values.to_numpy(zero_copy_only=False)
                sparse[name] = flat.reshape(len(column), width)
            else:
                sparse[name] = column.to_numpy(zero_copy_only=False)
        try:
            dense = {k: np.array(v["values"], dtype=np.float64).reshape(v["shape"])
                     for k, v in header["dense"].items()}
            delta = cls(
                learner_id=str(header["learner_id"]),
                base_version=int(header["base_version"]),
                n_events=int(header["n_events"]),
                n_steps=int(header["n_steps"]),
                slots=slots, sparse=sparse, dense=dense,
                meta=dict(header["meta"]), extra=dict(header.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"model delta header is malformed: {exc}") from exc
        return delta


# -- the learner's side ---------------------------------------------------------


def _not_mergeable(kind: object) -> StateError:
    return StateError(
        f"a {kind} learner is not mergeable (its state is not a set of arrays); train it in "
        "one process or pick a linear learner"
    )


class DeltaTracker:
    """Remembers a learner's state at a reference point and hands out what
    changed since, as :class:`ModelDelta` s.

    Parameters
    ----------
    learner
        A mergeable learner (its ``state(copy=False)`` and ``load_state`` are
        used; the tracker never changes it except in :meth:`rebase` and
        :meth:`rebase_changes`).
    base_version
        The global version the learner currently starts from.

    Notes
    -----
    :meth:`take` given the slots learned (``touched``) compares only those,
    O(entries); without them it compares every per-slot array with the
    reference (a few vectorised passes, about a millisecond per million
    slots each). The delta holds only the changed rows, and only they are
    copied into the new reference. :meth:`rebase_changes` rebases on the
    changes of the versions since the base (sparse); :meth:`rebase` on a
    whole global model, O(slots).

    Deltas in flight: every take is remembered (its additive rows, with the
    caller's ``tag``) until a rebase says it is ``reflected`` in the global
    model. A rebase told how many of the oldest are keeps the others on top
    of the new global model, so a learner whose last deltas the merger has
    not committed yet does not lose their learning and learn it again (with
    per-event steps, a bundle's worth of a frequent feature or the intercept,
    counted twice once both reach the merger). Told nothing (``reflected``
    ``None``), a rebase takes every delta sent as reflected: the learner
    becomes the global model plus what it learned since its last take.
    """

    def __init__(self, learner: Any, base_version: int = 0) -> None:
        self.learner = learner
        self.base_version = _version("base_version", base_version)
        self._scratch: np.ndarray | None = None  # for _distinct
        state = self._state_of(learner)
        self._reset(state.copy())

    @staticmethod
    def _state_of(learner: Any) -> ModelState:
        state_fn = getattr(learner, "state", None)
        if state_fn is None:
            raise ValidationError("learner", "a streamlearn learner", type(learner).__name__)
        if getattr(learner, "mergeable", True) is False:  # before asking for a state it
            raise _not_mergeable(type(learner).__name__)  # may not have (RiverLearner)
        try:
            state = state_fn(copy=False)
        except TypeError:
            state = state_fn()
        if not state.meta.get("mergeable", False):
            raise _not_mergeable(state.meta.get("kind"))
        return state

    def _reset(self, state: ModelState, owned: bool = False) -> None:
        """Make ``state`` the reference: copied, or taken as it is when ``owned``
        (float64 arrays nothing else holds)."""
        take = np.asarray if owned else np.array
        self._ref = {k: take(v, dtype=np.float64) for k, v in state.arrays.items()}
        #: what the global model (at ``base_version``) holds at the slots sent since
        #: the last rebase: ``(slots, {per-slot array: values})`` per take, oldest first
        self._sent: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self._sent_rows = 0
        #: the deltas taken and not known to be in the global model, oldest first:
        #: their additive rows and small arrays, which the reference holds on top of
        #: the global model's values (see the class notes)
        self._pending: list[_InFlight] = []
        self._ref_classes = _classes(state.meta)
        self._n_learned = int(state.meta.get("n_learned", 0))
        self._n_steps = int(state.meta.get("n_steps", 0))
        self._n_slots = int(state.meta.get("n_slots", 0))
        # the global model at base_version where the reference moves with takes: its
        # small arrays and counts (the per-slot values are kept in _sent as they go)
        self._base_small = {k: v.copy() for k, v in self._ref.items()
                            if not _per_slot(k, v, self._n_slots)}
        self._base_counts = (self._n_learned, self._n_steps)

    def _grown_reference(self, classes: list[Any] | None) -> None:
        """Give the reference zero columns for classes the learner found since."""
        mine = self._ref_classes
        if classes == mine or classes is None or mine is None:
            return
        if classes[: len(mine)] != mine:
            raise StateError(
                f"the learner's classes {classes} do not extend the tracker's {mine}; "
                "rebase the tracker on the learner's state"
            )
        added = len(classes) - len(mine)

        def padded(name: str, array: np.ndarray) -> np.ndarray:
            if array.ndim == 2 or (_by_class(name) and len(array) == len(mine)):
                pad = np.zeros(array.shape[:-1] + (added,))
                return np.concatenate([array, pad], axis=-1)
            return array

        for name, array in self._ref.items():
            self._ref[name] = padded(name, array)
        for entry in self._pending:
            entry.rows = {k: padded(k, v) for k, v in entry.rows.items()}
            entry.small = {k: padded(k, v) for k, v in entry.small.items()}
        self._ref_classes = list(classes)

    def take(
        self,
        learner_id: str = "0",
        extra: Mapping[str, Any] | None = None,
        touched: np.ndarray | None = None,
        tag: Any = None,
    ) -> ModelDelta:
        """The change since the last :meth:`take` (or since the reference was
        set); the reference then moves to now, so deltas never overlap.

        Parameters
        ----------
        learner_id
            Names the sender (the merger counts event rates per learner).
        extra
            JSON-able values to carry along (Kafka offsets, metrics...).
        touched
            The slots of every batch learned since the last take (repeats
            allowed), when the caller knows them: learners change no other
            slot, so only these are compared, and the take costs O(entries)
            instead of O(slots). Without it every slot is compared.
        tag
            Anything that later tells whether this delta is in a global
            version (the training job: the Kafka offsets it reaches); see
            :attr:`pending_tags`.
        """
        if not isinstance(learner_id, str) or not learner_id:
            raise ValidationError("learner_id", "a non-empty string", repr(learner_id))
        extra = dict(extra or {})
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as exc:
            raise ValidationError("extra", "a JSON-able mapping", repr(exc)) from exc
        state = self._state_of(self.learner)
        self._grown_reference(_classes(state.meta))
        cur, ref, n_slots = state.arrays, self._ref, self._n_slots
        if set(cur) != set(ref):
            raise StateError(
                f"the learner's arrays {sorted(cur)} differ from the tracker's {sorted(ref)}; "
                "build a new DeltaTracker for a rebuilt learner"
            )
        per_slot = [k for k, v in cur.items() if _per_slot(k, v, n_slots)]
        if touched is not None:
            candidates = self._distinct(touched)
            changed = np.zeros(len(candidates), dtype=bool)
            for name in per_slot:
                a, b = cur[name][candidates], ref[name][candidates]
                changed |= (a != b) if a.ndim == 1 else (a != b).any(axis=1)
            slots = candidates[changed]
        else:
            changed = np.zeros(n_slots, dtype=bool)
            scratch = np.empty(n_slots, dtype=bool)
            for name in per_slot:
                a, b = cur[name], ref[name]
                if a.ndim == 1:
                    np.not_equal(a, b, out=scratch)
                    changed |= scratch
                else:
                    changed |= (a != b).any(axis=1)
            slots = np.flatnonzero(changed)
        self._remember_base(slots, per_slot)
        sparse: dict[str, np.ndarray] = {}
        for name in per_slot:
            if name in _SCALER:
                continue
            now = cur[name][slots]
            sparse[name] = now if merge_rule(name) == "max" else now - ref[name][slots]
            ref[name][slots] = now
        if "scaler.count" in cur:
            now = [cur[k][slots] for k in _SCALER]
            before = [ref[k][slots] for k in _SCALER]
            for k, value in zip(_SCALER, _new_stats(*now, *before), strict=True):
                sparse[k] = value
            for k, value in zip(_SCALER, now, strict=True):
                ref[k][slots] = value
        dense: dict[str, np.ndarray] = {}
        for name, array in cur.items():
            if name not in per_slot:
                dense[name] = (np.array(array, dtype=np.float64) if merge_rule(name) == "max"
                               else array - ref[name])
                ref[name] = np.array(array, dtype=np.float64)
        n_learned = int(state.meta.get("n_learned", 0))
        n_steps = int(state.meta.get("n_steps", 0))
        self._pending.append(_InFlight(
            slots=slots.copy(), tag=tag,
            rows={k: v.copy() for k, v in sparse.items() if _additive(k)},
            small={k: v.copy() for k, v in dense.items() if _additive(k)},
            n_events=n_learned - self._n_learned, n_steps=n_steps - self._n_steps,
        ))
        if len(self._pending) > _SENT_CHUNKS:  # two oldest as one: reflected with the newer
            first, second = self._pending[:2]
            self._pending[:2] = [first.joined(second)]
        meta = {k: state.meta.get(k) for k in ("kind", "params", "classes", "bits", "n_slots")}
        delta = ModelDelta(
            learner_id=learner_id, base_version=self.base_version,
            n_events=n_learned - self._n_learned, n_steps=n_steps - self._n_steps,
            slots=slots, sparse=sparse, dense=dense, meta=meta, extra=extra,
        )
        self._n_learned, self._n_steps = n_learned, n_steps
        return delta

    def _distinct(self, touched: np.ndarray) -> np.ndarray:
        """The distinct slots of ``touched``, ascending (as ``numpy.unique``).

        Each entry writes its position into a reusable scratch array of one
        cell per slot; the entries that read their own position back are one
        per distinct slot, and only those are sorted. A bundle repeats its
        slots many times, so this costs a fraction of sorting every entry.
        """
        idx = np.asarray(touched, dtype=np.intp)
        scratch = self._scratch
        if scratch is None or len(scratch) != self._n_slots:
            scratch = self._scratch = np.empty(self._n_slots, dtype=np.intp)
        order = np.arange(len(idx))
        scratch[idx] = order
        slots = idx[scratch[idx] == order]
        slots.sort()
        return slots.astype(np.int64, copy=False)

    def _remember_base(self, slots: np.ndarray, per_slot: list[str]) -> None:
        """Keep the reference's values at ``slots`` before a take moves it there:
        at a slot's first take since the last rebase they are the global model's."""
        if not len(slots):
            return
        values = {name: self._ref[name][slots] for name in per_slot}
        for name, rows in self._pending_at(slots, self._pending).items():
            values[name] = values[name] - rows  # the reference holds them on the global's
        self._sent.append((slots.copy(), values))
        self._sent_rows += len(slots)
        if len(self._sent) > _SENT_CHUNKS:
            slots, values = self._sent_union(per_slot)
            self._sent = [(slots, values)]
            self._sent_rows = len(slots)

    def _sent_union(self, per_slot: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The slots sent since the last rebase, ascending, with the global model's
        values there (each slot's oldest record)."""
        if not self._sent:
            return np.zeros(0, np.int64), {}
        if len(self._sent) == 1:
            return self._sent[0]
        slots, first = np.unique(np.concatenate([s for s, _ in self._sent]), return_index=True)
        values = {name: np.concatenate([v[name] for _, v in self._sent])[first]
                  for name in per_slot}
        return slots, values

    @property
    def pending_tags(self) -> list[Any]:
        """The ``tag`` of every delta taken and not yet known to be in the global
        model, oldest first (what :meth:`rebase` and :meth:`rebase_changes` count
        with ``reflected``)."""
        return [p.tag for p in self._pending]

    @staticmethod
    def _pending_at(slots: np.ndarray, pending: list[_InFlight]) -> dict[str, np.ndarray]:
        """The sum of ``pending`` 's rows at ``slots`` (ascending), per array."""
        out: dict[str, np.ndarray] = {}
        for entry in pending:
            if not len(entry.slots) or not len(slots):
                continue
            pos = np.minimum(np.searchsorted(entry.slots, slots), len(entry.slots) - 1)
            hit = entry.slots[pos] == slots
            if not hit.any():
                continue
            for name, rows in entry.rows.items():
                acc = out.get(name)
                if acc is None:
                    acc = out[name] = np.zeros((len(slots), *rows.shape[1:]))
                acc[hit] += rows[pos[hit]]
        return out

    def _split_pending(self, reflected: int | None, keep: bool) -> list[_InFlight]:
        """The deltas still in flight after ``reflected`` of the oldest arrived
        (all of them with ``None``, or where ``keep`` is false)."""
        if reflected is None or not keep:
            return []
        if type(reflected) is not int or reflected < 0:
            raise ValidationError("reflected", "an integer ≥ 0 or None", repr(reflected))
        return self._pending[reflected:]

    def rebase_changes(
        self, learner: Any, changes: Any, version: int, reflected: int | None = None
    ) -> bool:
        """:meth:`rebase` on version ``version`` of the global model, given as the
        changes since the tracker's base version (a
        :class:`~streamlearn.store.Changes`, e.g. ``ModelStore.changes(...).changes``):
        the same arrays as :meth:`rebase` on the whole model, at a cost that grows
        with the slots changed and the slots this learner sent since its last
        rebase, never with the model.

        The reference must be the global model at the base version (as
        :meth:`rebase` and a tracker built on a learner just loaded from it leave
        it). Slots neither changed nor sent keep the learner's values as they
        are (the whole-model rebase adds the learner's own change back onto the
        unchanged global value there: equal up to rounding).

        ``reflected``: how many of the oldest deltas taken (:attr:`pending_tags`)
        the global model holds; the others stay on the learner and the
        reference (``None``: every one; see the class notes).

        Returns ``False``, changing nothing, where it cannot: the learner's
        classes differ from the global model's or from the tracker's, or its
        arrays from the changes'; then :meth:`rebase` on the whole model.
        """
        version = _version("version", version)
        state = self._state_of(learner)
        if learner is not self.learner or not callable(getattr(learner, "set_counts", None)):
            return False
        meta, g_meta = state.meta, changes.meta
        if g_meta is not None and (
            g_meta.get("kind") != meta.get("kind")
            or _comparable(g_meta.get("params", {})) != _comparable(meta.get("params", {}))
        ):
            raise StateError(
                f"cannot rebase a {meta.get('kind')} learner on a global "
                f"{g_meta.get('kind')} model of other parameters; the global model must come "
                "from the same training job"
            )
        classes = _classes(meta)
        if classes != self._ref_classes or (g_meta is not None and _classes(g_meta) != classes):
            return False
        cur, ref, n_slots = state.arrays, self._ref, self._n_slots
        if set(cur) != set(ref):
            return False
        per_slot = [k for k, v in cur.items() if _per_slot(k, v, n_slots)]
        small = [k for k in cur if k not in per_slot]
        if g_meta is not None:
            if sorted(changes.rows) != sorted(per_slot) or sorted(changes.small) != sorted(small):
                return False
            g_small = {k: np.asarray(changes.small[k], dtype=np.float64) for k in small}
            g_counts = (int(g_meta.get("n_learned", 0)), int(g_meta.get("n_steps", 0)))
        else:  # nothing changed (a compaction): the global model is the base's
            g_small, g_counts = self._base_small, self._base_counts
        if any(g_small[k].shape != cur[k].shape for k in small):
            return False
        sent, base = self._sent_union(per_slot)
        changed = np.asarray(changes.slots, dtype=np.int64)
        kept = self._split_pending(reflected, "scaler.count" not in cur)
        arrived = self._pending[: len(self._pending) - len(kept)]
        # slots of arrived deltas sent before the last rebase and not changed since: the
        # reference holds them on the global's values (those, less every pending row)
        gone = [e.slots for e in arrived if len(e.slots)]
        if gone:
            extra = np.setdiff1d(np.concatenate(gone), np.concatenate([changed, sent]))
            if len(extra):
                held = self._pending_at(extra, self._pending)
                extra_base = {n: self._ref[n][extra] - held[n] if n in held
                              else self._ref[n][extra] for n in per_slot}
                sent = np.concatenate([sent, extra])
                order = np.argsort(sent, kind="stable")
                sent = sent[order]
                base = {n: np.concatenate([base[n], extra_base[n]])[order] if n in base
                        else extra_base[n] for n in per_slot}
        rows = {}
        for name in per_slot:
            trailing = cur[name].shape[1:]
            mine = base.get(name, np.zeros((0, *trailing)))
            theirs = (np.asarray(changes.rows[name], dtype=np.float64) if g_meta is not None
                      else np.zeros((0, *trailing)))
            if mine.shape[1:] != trailing or theirs.shape[1:] != trailing:
                return False
            rows[name] = (theirs, mine)
        # the global model at the slots that matter: the changes', else the base's
        if len(sent):
            slots, first = np.unique(np.concatenate([changed, sent]), return_index=True)
            g = {k: np.concatenate(pair)[first] for k, pair in rows.items()}
        else:
            slots, g = changed, {k: pair[0] for k, pair in rows.items()}
        new: dict[str, np.ndarray] = {}
        still = self._pending_at(slots, kept)
        for name in per_slot:
            if name in _SCALER:
                continue
            mine_now = cur[name][slots]
            if merge_rule(name) == "max":
                new[name] = np.maximum(g[name], mine_now)
            else:
                new[name] = g[name] + (mine_now - ref[name][slots])
                if name in still:
                    new[name] += still[name]
        if "scaler.count" in cur:
            own = _new_stats(*(cur[k][slots] for k in _SCALER), *(ref[k][slots] for k in _SCALER))
            new.update(zip(_SCALER, _combine_stats(*_scaler_stats(g), *own), strict=True))
        for name in small:
            gk = g_small[name]
            on_top = sum((e.small[name] for e in kept if name in e.small),
                         np.zeros_like(gk, dtype=np.float64))
            new_small = (np.maximum(gk, cur[name]) if merge_rule(name) == "max"
                         else gk + on_top + (cur[name] - ref[name]))
            cur[name][...] = new_small
            ref[name] = np.array(gk + (0 if merge_rule(name) == "max" else on_top),
                                 dtype=np.float64)
            g_small[name] = np.array(gk, dtype=np.float64)
        for name, values in new.items():
            cur[name][slots] = values
        for name in per_slot:
            ref[name][slots] = g[name] + still[name] if name in still else g[name]
        for target, z, n, params in _ftrl_targets(meta, cur):
            if _per_slot(target, cur[target], n_slots):
                cur[target][slots] = _ftrl_weights(cur[z][slots], cur[n][slots], params)
            else:
                cur[target][...] = _ftrl_weights(cur[z], cur[n], params)
        own_events = int(meta.get("n_learned", 0)) - self._n_learned
        own_steps = int(meta.get("n_steps", 0)) - self._n_steps
        in_flight = (sum(e.n_events for e in kept), sum(e.n_steps for e in kept))
        learner.set_counts(g_counts[0] + in_flight[0] + own_events,
                           g_counts[1] + in_flight[1] + own_steps)
        self._n_learned, self._n_steps = g_counts[0] + in_flight[0], g_counts[1] + in_flight[1]
        self._base_counts = g_counts
        self._base_small = {k: g_small[k].copy() for k in small}
        self._sent, self._sent_rows = [], 0
        self._pending = list(kept)
        self.base_version = version
        return True

    def rebase(
        self, learner: Any, global_state: ModelState, version: int, reflected: int | None = None
    ) -> None:
        """Make ``learner`` the global model plus its own changes since the
        last :meth:`take` (nothing it learned is lost), and make the global
        model the tracker's new reference.

        Parameters
        ----------
        learner
            The learner (usually the tracker's own; a different object of the
            same parameters is accepted and tracked from now on).
        global_state
            The newer global model (from :meth:`Merger.state` or the store).
        version
            Its version.
        reflected
            How many of the oldest deltas taken the global model holds; the
            others stay on top of it (``None``: every one; see the class notes).
        """
        version = _version("version", version)
        state = self._state_of(learner)
        same_learner = learner is self.learner
        self.learner = learner
        self._grown_reference(_classes(state.meta))
        g_meta = global_state.meta
        if g_meta.get("kind") != state.meta.get("kind") or _comparable(
            g_meta.get("params", {})
        ) != _comparable(state.meta.get("params", {})):
            raise StateError(
                f"cannot rebase a {state.meta.get('kind')} learner on a global "
                f"{g_meta.get('kind')} model of other parameters; the global model must come "
                "from the same training job"
            )
        mine, theirs = _classes(state.meta), _classes(g_meta)
        union = theirs
        if mine is not None and theirs is not None:
            union = theirs + [c for c in mine if c not in theirs]
        width = len(union) if union is not None else 0
        n_slots = self._n_slots

        def widen(array: np.ndarray, classes: list[Any] | None, name: str) -> np.ndarray:
            is_2d = array.ndim == 2 or (_by_class(name) and union is not None
                                         and array.shape[-1] == len(classes or ()))
            if not is_2d or classes == union or union is None or classes is None:
                return np.asarray(array, dtype=np.float64)
            cols = np.array([union.index(c) for c in classes], dtype=np.int64)
            return _aligned(np.asarray(array, dtype=np.float64), cols, width)

        arrays: dict[str, np.ndarray] = {}
        ref_arrays: dict[str, np.ndarray] = {}
        for name, array in state.arrays.items():
            if name not in global_state.arrays:
                raise StateError(f"the global model lacks the learner's array {name!r}")
            g = widen(global_state.arrays[name], theirs, name)
            ref_arrays[name] = g.copy()
            if name in _SCALER:
                continue
            if merge_rule(name) == "max":
                arrays[name] = np.maximum(g, widen(array, mine, name))
                continue
            # g + (mine - reference), in one new array: a pass less over the model
            own = widen(array, mine, name) - widen(self._ref[name], mine, name)
            own += g
            arrays[name] = own
        if "scaler.count" in state.arrays:
            new = _new_stats(*(state.arrays[k] for k in _SCALER), *(self._ref[k] for k in _SCALER))
            merged = _combine_stats(*_scaler_stats(ref_arrays), *new)
            arrays.update(zip(_SCALER, merged, strict=True))
        kept = self._split_pending(
            reflected, same_learner and "scaler.count" not in state.arrays
            and union == mine == self._ref_classes,
        )
        for entry in kept:  # still in flight: on top of the global model, as taken
            for name, rows in entry.rows.items():
                arrays[name][entry.slots] += rows
                ref_arrays[name][entry.slots] += rows
            for name, value in entry.small.items():
                arrays[name] += value
                ref_arrays[name] += value
        for target, z, n, params in _ftrl_targets(state.meta, arrays):
            arrays[target] = _ftrl_weights(arrays[z], arrays[n], params)
        meta = dict(state.meta)
        own_events = int(state.meta.get("n_learned", 0)) - self._n_learned
        own_steps = int(state.meta.get("n_steps", 0)) - self._n_steps
        g_counts = (int(g_meta.get("n_learned", 0)), int(g_meta.get("n_steps", 0)))
        in_flight = (sum(e.n_events for e in kept), sum(e.n_steps for e in kept))
        meta["n_learned"] = g_counts[0] + in_flight[0] + own_events
        meta["n_steps"] = g_counts[1] + in_flight[1] + own_steps
        if union is not None:
            meta["classes"] = list(union)
        try:  # the arrays are new, made here: the learner takes them as they are
            learner.load_state(ModelState(arrays, meta), copy=False)
        except TypeError:
            learner.load_state(ModelState(arrays, meta))
        ref_meta = dict(meta)
        ref_meta["n_learned"] = g_counts[0] + in_flight[0]
        ref_meta["n_steps"] = g_counts[1] + in_flight[1]
        self._reset(ModelState(ref_arrays, ref_meta), owned=True)  # fresh copies, ours
        self._base_counts = g_counts
        if kept:  # the global model's small arrays, without what is in flight
            self._base_small = {
                k: v - sum((e.small[k] for e in kept if k in e.small), np.zeros_like(v))
                for k, v in self._base_small.items()
            }
        self._pending = list(kept)
        self._n_slots = n_slots
        self.base_version = version


def _version(field_name: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValidationError(field_name, "a model version, an integer ≥ 0", repr(value))
    return value


# -- the global side ------------------------------------------------------------


class Merger:
    """Folds :class:`ModelDelta` s from parallel learners into one global model.

    Parameters
    ----------
    global_state
        The global model to start from (copied).
    version
        Its version.
    strategy
        ``"hybrid"``, ``"average"`` or ``"ftrl"`` (see the module docstring).
    staleness_tolerance
        Deltas lagging the current version by at most this many versions are
        applied in full; older ones are down-weighted.
    n_learners
        How many learners send deltas, if known; otherwise the number of
        distinct senders seen so far (used for event shares).
    rules
        Array name → rule, replacing :data:`MERGE_RULES` for this merger's
        arrays (one of the rules that add deltas: ``learned``, ``moment``,
        ``ftrl``, ``steps``, ``sum``, ``average``), e.g. ``{"factors":
        "average"}`` to average a factorization machine's factors.

    Notes
    -----
    :meth:`add` costs O(rows in the delta) (plus, for 2-d arrays, a
    factor of the number of classes); never O(slots), except when a new
    class appears.
    """

    def __init__(
        self,
        global_state: ModelState,
        version: int = 0,
        strategy: str = "hybrid",
        *,
        staleness_tolerance: int = 2,
        n_learners: int | None = None,
        rules: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(global_state, ModelState):
            raise ValidationError(
                "global_state", "a streamlearn.state.ModelState", type(global_state).__name__
            )
        if strategy not in STRATEGIES:
            raise ConfigError("strategy", f"one of {list(STRATEGIES)}", repr(strategy))
        if type(staleness_tolerance) is not int or staleness_tolerance < 0:
            raise ConfigError("staleness_tolerance", "an integer ≥ 0", repr(staleness_tolerance))
        if n_learners is not None and (type(n_learners) is not int or n_learners < 1):
            raise ConfigError("n_learners", "a positive integer or None", repr(n_learners))
        meta = global_state.meta
        if not meta.get("mergeable", False) or "weights" not in global_state.arrays:
            raise StateError(
                f"a {meta.get('kind')!r} model is not mergeable (its state is not a set of "
                "arrays); train it in one process or pick a linear learner"
            )
        opt_name, _ = _optimizer(meta)
        if strategy == "ftrl" and opt_name != "FTRL":
            raise ConfigError(
                "strategy", "'hybrid' or 'average' for a learner whose optimiser is not FTRL",
                f"'ftrl' with {opt_name or 'an unknown optimiser'}",
            )
        self.strategy = strategy
        self.staleness_tolerance = staleness_tolerance
        self.n_learners = n_learners
        self.version = _version("version", version)
        self._state = global_state.copy()
        self._arrays = {k: np.array(v, dtype=np.float64)
                        for k, v in self._state.arrays.items()}
        self._state.arrays = self._arrays
        self._n_slots = int(meta.get("n_slots", self._arrays["weights"].shape[0]))
        self._hashed = 1 << int(meta.get("bits", 0)) if "bits" in meta else self._n_slots
        self._params = _comparable(meta.get("params", {}))
        self._classes = _classes(meta)
        self._steps = float(meta.get("n_steps", 0))
        self._n_learned = int(meta.get("n_learned", 0))
        #: events folded in since this merger was built
        self.n_events = 0
        #: deltas folded in since this merger was built
        self.n_deltas = 0
        #: the weight (event share × staleness) the last delta's averaged parts got
        self.last_share = 0.0
        self._rates: dict[str, float] = {}
        self._index: dict[str, int] = {}
        self._rules = {name: merge_rule(name) for name in self._arrays}
        for name, rule in (rules or {}).items():
            if name not in self._arrays:
                raise ConfigError("rules", f"names of the model's arrays {sorted(self._arrays)}",
                                  repr(name))
            if rule not in _ADDITIVE or self._rules[name] not in _ADDITIVE:
                raise ConfigError(f"rules.{name}", f"one of {list(_ADDITIVE)} (replacing "
                                  f"{self._rules[name]!r})", repr(rule))
            self._rules[name] = rule
        self._ftrl_targets = _ftrl_targets(meta, self._arrays)
        self._recomputed = {t for t, _, _, _ in self._ftrl_targets}
        self._ema = [k for k, r in self._rules.items() if r == "moment"]
        self._touch_now: np.ndarray | None = None
        self._touch_before: np.ndarray | None = None
        self._touch_adds = 0
        # the slots each contributor-count table has bits set at, to clear it sparsely
        self._touch_slots_now: list[np.ndarray] = []
        self._touch_slots_before: list[np.ndarray] = []
        # what changed since the last commit: the slots of every delta folded in, and
        # why the next version must be whole (a change of shape), if it must
        self._changed: list[np.ndarray] = []
        self._whole: str | None = None
        #: the families whose progress a delta shows (the "progress" strategy)
        self._progress = sources(meta, self._arrays) if strategy == "progress" else {}
        self._since_base = SinceBase()
        # under "progress" the count of learners that touched a slot lately serves only
        # the per-slot arrays no progress source covers (SGD's or Adam's, a factorization
        # machine's factors learned by SGD): without such arrays it is not kept
        per_slot = [""] + (["factors."] if "factors" in self._arrays else [])
        uncovered = any(family not in self._progress for family in per_slot)
        if ((self._ema and strategy == "hybrid") or strategy == "shared"
                or (strategy == "progress" and uncovered)):
            self._touch_now = np.zeros(self._n_slots, np.uint64)
            self._touch_before = np.zeros(self._n_slots, np.uint64)

    def __repr__(self) -> str:
        return (
            f"Merger(kind={self._state.meta.get('kind')!r}, strategy={self.strategy!r}, "
            f"version={self.version}, n_events={self.n_events}, learners={len(self._rates)})"
        )

    # -- public -------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        meta = json.loads(json.dumps(self._state.meta))
        meta["n_learned"] = self._n_learned
        meta["n_steps"] = int(round(self._steps))
        if self._classes is not None:
            meta["classes"] = list(self._classes)
        return meta

    def state(self) -> ModelState:
        """The current global model (a copy, safe to keep and to send)."""
        return ModelState({k: v.copy() for k, v in self._arrays.items()}, self._meta())

    def view(self) -> ModelState:
        """The current global model without a copy: its arrays are the merger's own.
        Read (or write out) them before the next :meth:`add`; never change them."""
        return ModelState(dict(self._arrays), self._meta())

    def changed_slots(self) -> np.ndarray:
        """Every slot a delta folded in since the last :meth:`commit` touched,
        ascending: the only slots where the model can differ from that version
        (besides its small arrays). Cost O(the deltas' rows), never O(slots)."""
        if not self._changed:
            return np.zeros(0, np.int64)
        if len(self._changed) > 1:
            self._changed = [np.unique(np.concatenate(self._changed))]
        return self._changed[0]

    @property
    def n_slots(self) -> int:
        """The model's slot count (the first dimension of its per-slot arrays)."""
        return self._n_slots

    def changes(self) -> Any:
        """What changed since the last :meth:`commit`, for a delta version
        (:class:`~streamlearn.store.Changes`: the values of every per-slot array
        at :meth:`changed_slots`, the small arrays whole, the metadata).

        Only valid while :meth:`whole_reason` is ``None``: a change of shape (a
        new class) cannot be a delta.
        """
        from streamlearn.store.delta import Changes

        return Changes.gather(self.view(), self.changed_slots())

    def whole_reason(self) -> str | None:
        """Why the next version must be a snapshot whatever the policy (the arrays
        changed shape since the last commit), or ``None``."""
        return self._whole

    def commit(self, version: int | None = None) -> int:
        """Mark the current global model as a new version (the one just
        committed) and return it: ``version`` if given (a store's number,
        greater than the current one), else the current one plus 1. Deltas
        based on older versions count as stale from now on."""
        if version is None:
            version = self.version + 1
        version = _version("version", version)
        if version <= self.version:
            raise ValidationError(
                "version", f"a version greater than the current {self.version}", version
            )
        self.version = version
        self._changed = []
        self._whole = None
        return version

    def staleness_weight(self, base_version: int) -> float:
        """The weight given to a delta based on ``base_version`` (1 up to the
        tolerance, then ``(tolerance + 1) / (lag + 1)``).

        >>> m = Merger(ModelState({"weights": np.zeros(2)}, {"mergeable": True}), version=5)
        >>> [m.staleness_weight(v) for v in (5, 3, 1)]
        [1.0, 1.0, 0.6]
        """
        lag = self.version - base_version
        if lag < 0:
            raise StateError(
                f"delta based on version {base_version} is newer than the merger's "
                f"{self.version}: it belongs to another merger (or this one restarted from "
                "an older checkpoint)"
            )
        tol = self.staleness_tolerance
        return 1.0 if lag <= tol else (tol + 1) / (lag + 1)

    def add(self, delta: ModelDelta) -> None:
        """Fold one delta into the global model (cost O(its changed rows)).

        Raises :class:`~streamlearn.errors.StateError` for a delta from another
        kind of learner, other parameters or a future version."""
        if not isinstance(delta, ModelDelta):
            raise ValidationError("delta", "a ModelDelta", type(delta).__name__)
        self._check(delta)
        stale = self.staleness_weight(delta.base_version)
        share = self._share(delta) * stale
        cols = self._columns(delta)
        slots = delta.slots
        if self._touch_now is not None and len(slots):
            contributors = self._contributors(delta.learner_id, slots)
        else:
            contributors = None
        hashed = slots < self._hashed
        counted = self._progress_factors(delta, slots, cols) if self._progress else {}
        for name, values in delta.sparse.items():
            rule = self._rules[name]
            if rule == "stats" or name in self._recomputed:
                continue
            if rule == "max":
                self._max_rows(name, slots, values, cols)
                continue
            family = _family(name)
            factor: np.ndarray | float
            if family in counted and rule in ("learned", "ftrl"):
                factor = np.where(hashed, stale * counted[family], share)
            else:
                factor = self._factor(rule, hashed, share, stale, contributors)
            self._add_rows(name, slots, values, factor, cols)
        if "scaler.count" in delta.sparse and len(slots):
            self._add_scaler(slots, delta)
        for name, values in delta.dense.items():
            rule = self._rules[name]
            if name in self._recomputed:
                continue
            dest = self._arrays[name]
            at = cols if cols is not None and _by_class(name) else slice(None)
            if rule == "max":
                dest[at] = np.maximum(dest[at], values)
                continue
            dest[at] += self._factor(rule, np.False_, share, stale, None) * values
        for target, z, n, params in self._ftrl_targets:
            arrays = self._arrays
            if arrays[target].shape[0] == self._n_slots and target != "intercept":
                if len(slots):
                    arrays[target][slots] = _ftrl_weights(arrays[z][slots], arrays[n][slots],
                                                          params)
            else:
                arrays[target][:] = _ftrl_weights(arrays[z], arrays[n], params)
        if len(slots):
            self._changed.append(np.array(slots, dtype=np.int64))
            if len(self._changed) > _SENT_CHUNKS:
                self._changed = [self.changed_slots()]
        self._steps += (share if self.strategy == "average" else stale) * delta.n_steps
        self._n_learned += delta.n_events
        self.n_events += delta.n_events
        self.n_deltas += 1
        self.last_share = share

    # -- internals ----------------------------------------------------------------

    def _check(self, delta: ModelDelta) -> None:
        meta = delta.meta
        if meta.get("kind") != self._state.meta.get("kind"):
            raise StateError(
                f"delta from a {meta.get('kind')!r} learner cannot merge into a "
                f"{self._state.meta.get('kind')!r} model"
            )
        if _comparable(meta.get("params") or {}) != self._params:
            theirs = _comparable(meta.get("params") or {})
            diff = sorted(k for k in set(theirs) | set(self._params)
                          if theirs.get(k) != self._params.get(k))
            raise StateError(
                f"delta's learner parameters differ from the global model's in {diff}; "
                "every learner of a job must be built from the same parameters"
            )
        if type(delta.n_events) is not int or delta.n_events < 0:
            raise ValidationError("n_events", "an integer ≥ 0", repr(delta.n_events))
        slots = np.asarray(delta.slots)
        if slots.ndim != 1 or (len(slots) and (
            slots[0] < 0 or slots[-1] >= self._n_slots or (np.diff(slots) <= 0).any()
        )):
            raise ValidationError(
                "slots", f"ascending distinct slots in [0, {self._n_slots})",
                f"{len(slots)} slots from {slots[:1].tolist()} to {slots[-1:].tolist()}",
            )
        k = len(slots)
        for name, values in delta.sparse.items():
            if name not in self._arrays:
                raise StateError(
                    f"delta carries array {name!r} the global model lacks "
                    f"({sorted(self._arrays)})"
                )
            if len(values) != k:
                raise ValidationError(f"sparse.{name}", f"{k} rows (one per slot)", len(values))
        for name in delta.dense:
            if name not in self._arrays:
                raise StateError(f"delta carries array {name!r} the global model lacks")

    def _share(self, delta: ModelDelta) -> float:
        """The delta's events over the events all learners send per delta
        (rates kept as a moving average per learner); 1 for the one learner of
        ``n_learners=1`` (its bundles' sizes vary, its share does not)."""
        if self.n_learners == 1:
            return 1.0
        lid = delta.learner_id
        n = float(delta.n_events)
        old = self._rates.get(lid)
        self._rates[lid] = n if old is None else 0.8 * old + 0.2 * n
        rate = self._rates[lid]
        others = sum(r for k, r in self._rates.items() if k != lid)
        unseen = max(0, (self.n_learners or 0) - len(self._rates))
        total = rate + others + unseen * rate
        if total <= 0.0:
            return 1.0 / max(len(self._rates), self.n_learners or 1)
        return min(1.0, n / total) if n else rate / total

    def _columns(self, delta: ModelDelta) -> np.ndarray | None:
        """Where the delta's class columns go in the global arrays (adding
        columns for classes the global model has not seen)."""
        theirs = _classes(delta.meta)
        if theirs is None or self._classes is None:
            return None
        two_d = self._arrays["weights"].ndim == 2
        if not two_d:
            if theirs != self._classes:
                raise StateError(
                    f"delta's classes {theirs} differ from the global model's {self._classes}"
                )
            return None
        added = [c for c in theirs if c not in self._classes]
        if added:
            given = self._state.meta.get("params", {}).get("classes")
            if given is not None:
                raise StateError(
                    f"delta has classes {added} outside the model's fixed classes {given}"
                )
            for name, array in list(self._arrays.items()):
                if array.ndim == 2 or _by_class(name):
                    pad = np.zeros(array.shape[:-1] + (len(added),))
                    self._arrays[name] = np.concatenate([array, pad], axis=-1)
            self._state.arrays = self._arrays
            self._classes = self._classes + added
            self._whole = f"new classes {added} widened the model's arrays"
        if theirs == self._classes:
            return None
        index = {c: i for i, c in enumerate(self._classes)}
        return np.array([index[c] for c in theirs], dtype=np.int64)

    def _contributors(self, learner_id: str, slots: np.ndarray) -> np.ndarray:
        """How many learners touched each slot lately (this one included)."""
        now, before = self._touch_now, self._touch_before
        assert now is not None and before is not None
        index = self._index.setdefault(learner_id, len(self._index))
        bit = np.uint64(1) << np.uint64(index % _MAX_BITS)
        now[slots] |= bit
        self._touch_slots_now.append(np.array(slots, dtype=np.int64))
        count = np.bitwise_count(now[slots] | before[slots]).astype(np.float64)
        self._touch_adds += 1
        if self._touch_adds >= 2 * max(len(self._index), self.n_learners or 1):
            for set_at in self._touch_slots_before:  # clear the old table where it is set
                before[set_at] = 0
            self._touch_before, self._touch_now = now, before
            self._touch_slots_before, self._touch_slots_now = self._touch_slots_now, []
            self._touch_adds = 0
        return count

    def _progress_factors(
        self, delta: ModelDelta, slots: np.ndarray, cols: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """What each row of the delta counts for, per family of arrays whose progress it
        shows (``streamlearn.merge_progress``), read before any of it is folded in. ``k``,
        the learners that move a slot, is all of them: counting only those that touched
        it lately, or treating a slot no other learner touched lately as owned, measured
        worse in the job (``docs/merge.md``)."""
        if not len(slots):
            return {}
        k = float(self.n_learners or max(len(self._rates), 1))
        out = {}
        for family, source in self._progress.items():
            change = delta.sparse.get(source.accumulator)
            if change is None:
                continue
            f = progress(source, self._arrays, slots, change, cols,
                         delta.sparse.get(source.scale) if source.scale else None)
            f = self._since_base.add(delta.learner_id, family, delta.base_version, slots, f)
            out[family] = merge_factor(f, k)  # it clips f to [0, 1]
        return out

    def _factor(
        self, rule: str, hashed: np.ndarray | np.bool_, share: float, stale: float,
        contributors: np.ndarray | None,
    ) -> np.ndarray | float:
        """What a delta of an array of ``rule`` is multiplied by (per row)."""
        if rule == "sum":
            return stale
        if rule == "average" or self.strategy == "average":
            return share
        if rule == "steps":
            return stale
        if self.strategy == "ftrl":
            return stale if rule == "ftrl" else share
        if rule == "moment" or self.strategy in ("shared", "progress"):
            own = stale / contributors if contributors is not None else stale
            return np.where(hashed, own, share)
        return np.where(hashed, stale, share)

    def _max_rows(
        self, name: str, slots: np.ndarray, values: np.ndarray, cols: np.ndarray | None
    ) -> None:
        target = self._arrays[name]
        rows = slots if cols is None or values.ndim == 1 else np.ix_(slots, cols)
        target[rows] = np.maximum(target[rows], values)

    def _add_rows(
        self, name: str, slots: np.ndarray, values: np.ndarray,
        factor: np.ndarray | float, cols: np.ndarray | None,
    ) -> None:
        target = self._arrays[name]
        if values.ndim == 2 and np.ndim(factor):
            factor = np.asarray(factor)[:, None]
        if cols is None:
            target[slots] += factor * values
        else:
            rows = np.ix_(slots, cols)
            target[rows] += factor * values

    def _add_scaler(self, slots: np.ndarray, delta: ModelDelta) -> None:
        arrays = self._arrays
        current = [arrays[k][slots] for k in _SCALER]
        new = [delta.sparse[k] for k in _SCALER]
        for k, value in zip(_SCALER, _combine_stats(*current, *new), strict=True):
            arrays[k][slots] = value

