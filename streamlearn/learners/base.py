"""The learner protocol and the sparse linear model behind the three GLMs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn

import numpy as np

from streamlearn.contract import RULES, field_ok
from streamlearn.errors import ConfigError, StateError, ValidationError
from streamlearn.features import FeatureBatch, FeatureHasher, OnlineScaler
from streamlearn.optim import FTRL, SGD, AdaGrad, Adam, Normalized, Optimizer, optimizer_from_config
from streamlearn.state import ModelState

try:
    import streamlearn.learners._kernel as _kernel
except ImportError:  # built without a C compiler: no per-event kernel
    _kernel = None

__all__ = ["Learner", "LinearModel", "Features", "Batch", "UPDATES", "has_kernel"]

Features = Mapping[str, object]
Batch = Sequence[Features] | FeatureBatch


_SMALL_TABLE = 1 << 16  # grouping table that stays in cache (see FeatureBatch.groups)


class Learner:
    """What every learner offers (users and the Flink jobs call exactly this).

    ``learn_many(xs, ys)`` / ``predict_many(xs)`` take a sequence of feature
    mappings or an already encoded :class:`~streamlearn.features.FeatureBatch`;
    ``learn_one`` / ``predict_one`` are thin views of them for one event.
    Classifiers add ``predict_proba_one`` / ``predict_proba_many``.
    """

    #: "regression", "binary" or "multiclass" (a class attribute, or set by
    #: ``__init__`` when the model decides, as :class:`RiverLearner`'s does)
    task: str = ""
    #: whether states of parallel learners may be averaged
    mergeable: ClassVar[bool] = True

    def learn_one(self, x: Features, y: object) -> None:
        raise NotImplementedError

    def learn_many(self, xs: Batch, ys: Sequence[object] | np.ndarray) -> None:
        raise NotImplementedError

    def predict_one(self, x: Features) -> Any:
        raise NotImplementedError

    def predict_many(self, xs: Batch) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> ModelState:
        raise NotImplementedError

    def load_state(self, state: ModelState) -> None:
        raise NotImplementedError

    def clone(self) -> Learner:
        raise NotImplementedError


def _number(name: str, value: object, *, low: float = 0.0, strict: bool = False) -> None:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if strict else value >= low)
    ):
        return
    raise ConfigError(name, f"a finite number {'>' if strict else '≥'} {low}", repr(value))


def _rate_or_none(name: str, value: object) -> None:
    if value is not None:
        _number(name, value)


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, "true or false", repr(value))


# The constructor is the config: each argument's rule, declared once.
_RULES = {
    "l1": lambda v: _number("l1", v),
    "l2": lambda v: _number("l2", v),
    "intercept": lambda v: _flag("intercept", v),
    "intercept_lr": lambda v: _rate_or_none("intercept_lr", v),
    "scale": lambda v: _flag("scale", v),
    "clip_gradient": lambda v: _number("clip_gradient", v, strict=True),
}

UPDATES = ("batch", "event")
_KERNEL_OPTIMIZERS = {SGD: 0, AdaGrad: 1, Adam: 2, FTRL: 3, Normalized: 4}


def has_kernel() -> bool:
    """Whether the compiled per-event kernel was built (``update="event"`` needs it)."""
    return _kernel is not None


class LinearModel(Learner):
    """A sparse linear model learned by per-coordinate optimisation.

    Parameters
    ----------
    optimizer
        An optimiser from :mod:`streamlearn.optim` (default ``SGD(0.01)``).
    l1, l2
        Penalties on the weights, applied lazily: a weight is penalised when
        its slot is in the batch (L2 adds ``l2 * w`` to its gradient; L1 is a
        cumulative penalty that can make it exactly zero). FTRL brings its own
        ``l1``/``l2``; these must then stay 0.
    intercept
        Whether to learn an intercept (never penalised).
    intercept_lr
        The intercept's learning rate: it is updated by plain SGD at this
        rate; or ``None``: by the optimiser's own rule, as a feature of value
        1 (with its accumulators ``intercept.<optimiser array>``), as Vowpal
        Wabbit learns its constant feature.
    bits
        Hashed features go to ``2**bits`` slots.
    dense
        Names of numeric features with their own (never hashed) slot.
    crosses
        Pairs of feature names crossed like Vowpal Wabbit's ``-q`` (see
        :class:`~streamlearn.features.FeatureHasher`): a linear model then
        learns a weight per pair of their values.
    scale
        Standardise numeric features with running means and variances
        (updated by every learned batch, before the gradient step).
    clip_gradient
        Clip each event's loss gradient to ``[-clip_gradient, clip_gradient]``.
    update
        ``"batch"``: a batch is one optimiser step on the mean gradient of its
        events (numpy). ``"event"``: every event of a batch is one step, in
        order, in the compiled kernel (``streamlearn/learners/_kernel.c``),
        exactly as ``learn_one`` event by event; the normalised optimiser
        needs it. Without the kernel (no C compiler at install), such a
        learner predicts, and refuses to learn, naming ``update``.

    In both modes a batch of one event is exactly ``learn_one``, and the two
    modes take the same step on it.
    """

    #: the model's code in the per-event kernel (0 linear, 1 logistic, 2 softmax,
    #: 3 a mixture of logistic regressions)
    _kernel_model: ClassVar[int] = -1

    def __init__(
        self,
        optimizer: Optimizer | None = None,
        *,
        l1: float = 0.0,
        l2: float = 0.0,
        intercept: bool = True,
        intercept_lr: float | None = 0.01,
        bits: int = 20,
        dense: Sequence[str] = (),
        scale: bool = False,
        clip_gradient: float = 1e12,
        update: str = "batch",
        crosses: Sequence[Sequence[str]] = (),
    ) -> None:
        if optimizer is None:
            optimizer = SGD(0.01)
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(
                "optimizer", "an optimiser from streamlearn.optim (SGD, AdaGrad, Adam, FTRL)",
                repr(optimizer),
            )
        for name, value in (("l1", l1), ("l2", l2), ("intercept", intercept),
                            ("intercept_lr", intercept_lr), ("scale", scale),
                            ("clip_gradient", clip_gradient)):
            _RULES[name](value)
        if not optimizer.uses_learner_penalty and (l1 or l2):
            raise ConfigError(
                "l1/l2", f"0 with {type(optimizer).__name__} (set its own l1/l2 instead)",
                f"l1={l1}, l2={l2}",
            )
        if update not in UPDATES:
            raise ConfigError("update", f"one of {list(UPDATES)}", repr(update))
        if optimizer.per_event_only and update != "event":
            raise ConfigError(
                "update", f"'event' with {type(optimizer).__name__} (its steps read each "
                "event's values)", repr(update),
            )
        self.update = update
        self.optimizer = optimizer
        self.l1, self.l2 = l1, l2
        self.intercept, self.intercept_lr = intercept, intercept_lr
        if isinstance(dense, str | bytes):
            raise ConfigError("dense", "a list of feature names", repr(dense))
        self.bits, self.dense, self.scale = bits, list(dense), scale
        self.clip_gradient = clip_gradient
        # SGD without penalties: the step is linear in the gradient, so entries
        # are scatter-added into the weights (no grouping of equal slots)
        self._additive = optimizer.additive and not l1 and not l2
        try:
            self._hasher = FeatureHasher(bits=bits, dense=self.dense, crosses=crosses)
        except ValidationError as exc:
            raise ConfigError(exc.field, exc.expected, exc.got) from exc
        self.crosses = self._hasher.crosses
        self.n_slots = self._hasher.n_slots
        self._scratch = np.empty(self.n_slots, np.int64)
        self._small = np.empty(_SMALL_TABLE, np.int64) if self.n_slots > 4 * _SMALL_TABLE else None
        self._n_learned = 0
        self._n_steps = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._scaler: OnlineScaler | None = None
        self._allocate()

    # -- parameters -------------------------------------------------------------

    def _own_params(self) -> dict[str, Any]:
        return {}

    def params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able; the optimiser as its config)."""
        return {
            "optimizer": self.optimizer.config(),
            "l1": self.l1, "l2": self.l2,
            "intercept": self.intercept, "intercept_lr": self.intercept_lr,
            "bits": self.bits, "dense": list(self.dense), "scale": self.scale,
            "clip_gradient": self.clip_gradient, "update": self.update,
            **({"crosses": [list(p) for p in self.crosses]} if self.crosses else {}),
            **self._own_params(),
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LinearModel:
        """Build a learner from :meth:`params`."""
        params = dict(params)
        params["optimizer"] = optimizer_from_config(params.get("optimizer", {"name": "SGD"}))
        try:
            return cls(**params)
        except TypeError as exc:
            raise ConfigError("params", f"constructor arguments of {cls.__name__}", exc) from exc

    def __repr__(self) -> str:
        args = [f"optimizer={self.optimizer!r}"]
        for k, v in self.params().items():
            if k != "optimizer":
                args.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def clone(self) -> LinearModel:
        """A fresh, unfitted learner with the same parameters."""
        return type(self).from_params(self.params())

    # -- arrays -----------------------------------------------------------------

    def _weights_shape(self) -> tuple[int, ...]:
        return (self.n_slots,)

    def _n_outputs(self) -> int:
        return 1

    def _allocate(self) -> None:
        shape = self._weights_shape()
        arrays = {"weights": np.zeros(shape), "intercept": np.zeros(self._n_outputs())}
        arrays.update(self.optimizer.init_arrays(shape))
        if self.intercept and self.intercept_lr is None:
            arrays.update(self._intercept_arrays(self._n_outputs()))
        if self.l1:
            arrays["l1.cum"] = np.zeros(shape)
            arrays["l1.total"] = np.zeros(1)
        if self.scale:
            self._scaler = OnlineScaler(self.n_slots)
            arrays["scaler.mean"] = self._scaler.mean
            arrays["scaler.var"] = self._scaler.var
            arrays["scaler.count"] = self._scaler.count
        self._arrays = arrays

    def _intercept_arrays(self, k: int) -> dict[str, np.ndarray]:
        """The optimiser's accumulators of the intercept (``intercept_lr=None``)."""
        names = ("g2",) if isinstance(self.optimizer, Normalized) else self.optimizer.arrays
        return {f"intercept.{self.optimizer.name}.{n}": np.zeros(k) for n in names}

    def _intercept_step(self, g: np.ndarray, t: int) -> None:
        """The intercept's step on its gradient ``g`` (one value per output)."""
        b = self._arrays["intercept"]
        if self.intercept_lr is not None:
            b -= self.intercept_lr * g
            return
        opt = self.optimizer
        if isinstance(opt, FTRL):  # the intercept is never penalised
            opt = FTRL(alpha=opt.alpha, beta=opt.beta)
        own = {k[len("intercept."):]: v for k, v in self._arrays.items()
               if k.startswith("intercept.")}
        opt.update(b, own, np.arange(len(b)), np.asarray(g, dtype=np.float64).reshape(-1), t)

    @property
    def weights(self) -> np.ndarray:
        """The weights (a view: do not change it; use :meth:`load_state`)."""
        return self._arrays["weights"]

    @property
    def n_learned(self) -> int:
        """How many events this learner has learned from."""
        return self._n_learned

    # -- state ------------------------------------------------------------------

    def _meta_extra(self) -> dict[str, Any]:
        return {}

    def state(self, copy: bool = True) -> ModelState:
        """The learner's complete state. With ``copy=False`` the arrays are the
        learner's own (faster; do not keep them across further learning)."""
        arrays = {k: (v.copy() if copy else v) for k, v in self._arrays.items()}
        meta = {
            "kind": type(self).__name__,
            "task": self.task,
            "params": self.params(),
            "bits": self.bits,
            "n_slots": self.n_slots,
            "n_learned": self._n_learned,
            "n_steps": self._n_steps,
            "mergeable": self.mergeable,
            **self._meta_extra(),
        }
        return ModelState(arrays, meta)

    @classmethod
    def from_state(cls, state: ModelState) -> LinearModel:
        """Rebuild a learner from :meth:`state`."""
        if state.meta.get("kind") != cls.__name__:
            raise StateError(
                f"model state is of kind {state.meta.get('kind')!r}, not {cls.__name__!r}; "
                "use streamlearn.learners.learner_from_state to rebuild any kind"
            )
        learner = cls.from_params(state.meta.get("params", {}))
        learner.load_state(state)
        return learner

    def _load_extra(self, meta: dict[str, Any]) -> None:
        pass

    def load_state(self, state: ModelState, *, copy: bool = True) -> None:
        """Replace this learner's state with ``state`` (same kind and parameters);
        the arrays are copied, unless ``copy=False`` hands over float64 arrays
        nothing else holds (they become the learner's own)."""
        kind = state.meta.get("kind")
        if kind != type(self).__name__:
            raise StateError(f"cannot load a {kind!r} state into a {type(self).__name__}")
        theirs = {"update": "batch", **state.meta.get("params", {})}
        mine = self.params()
        diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k)
                      and k != "classes")
        if diff:
            raise StateError(
                f"model state parameters differ from this learner's in {diff}: "
                "build the learner with learner_from_state(state) instead"
            )
        self._load_extra(state.meta)
        expected = self._arrays
        if set(state.arrays) != set(expected):
            raise StateError(
                f"model state arrays {sorted(state.arrays)} do not match the learner's "
                f"{sorted(expected)}"
            )
        for name, array in state.arrays.items():
            if array.shape != expected[name].shape:
                raise StateError(
                    f"model state array {name!r} has shape {array.shape}, "
                    f"expected {expected[name].shape}"
                )
        take = np.array if copy else np.asarray
        self._arrays = {k: take(v, dtype=np.float64) for k, v in state.arrays.items()}
        if self._scaler is not None:
            self._scaler.mean = self._arrays["scaler.mean"]
            self._scaler.var = self._arrays["scaler.var"]
            self._scaler.count = self._arrays["scaler.count"]
        self._n_learned = int(state.meta.get("n_learned", 0))
        self._n_steps = int(state.meta.get("n_steps", 0))

    def set_counts(self, n_learned: int, n_steps: int) -> None:
        """Set the event and step counts, for a rebase that changed the arrays of
        :meth:`state` ``(copy=False)`` in place (``streamlearn.merge.DeltaTracker``)."""
        self._n_learned, self._n_steps = int(n_learned), int(n_steps)

    # -- encoding ---------------------------------------------------------------

    def encode(self, xs: Sequence[Features]) -> FeatureBatch:
        """Encode feature mappings once, to predict and learn on the result."""
        return self._hasher.encode(xs)

    def _batch(self, xs: Batch) -> FeatureBatch:
        if isinstance(xs, FeatureBatch):
            if xs.n_slots != self.n_slots:
                raise ValidationError(
                    "xs", f"a FeatureBatch of {self.n_slots} slots (bits={self.bits}, "
                    f"{len(self.dense)} dense)", f"one of {xs.n_slots} slots",
                )
            return xs
        return self._hasher.encode(xs)

    def _one(self, x: Features) -> FeatureBatch:
        return self._hasher.encode_one(x)

    # -- the kernel -------------------------------------------------------------

    def _labels(self, ys: Sequence[object] | np.ndarray, n: int) -> np.ndarray:
        raise NotImplementedError

    def _loss_and_gradient(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-event loss and its gradient w.r.t. the raw outputs ``z``."""
        raise NotImplementedError

    def _dloss(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The gradient of the per-event loss w.r.t. ``z`` (the loss itself unused)."""
        return self._loss_and_gradient(z, y)[1]

    def _values(self, batch: FeatureBatch) -> np.ndarray:
        return batch.values if self._scaler is None else self._scaler.transform(batch)

    def _raw(self, batch: FeatureBatch, values: np.ndarray) -> np.ndarray:
        w = self._arrays["weights"]
        if w.ndim == 1:
            return batch.row_sums(w[batch.indices] * values) + self._arrays["intercept"][0]
        return batch.row_sums(w[batch.indices] * values[:, None]) + self._arrays["intercept"]

    def _event_gradient(
        self, batch: FeatureBatch, values: np.ndarray, y: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per-event gradient of the batch's mean loss w.r.t. the raw outputs
        (each event's clipped gradient times its weight, over the batch size)."""
        g_event = self._dloss(self._raw(batch, values), y)
        c = self.clip_gradient
        if c < 1e12:
            np.minimum(np.maximum(g_event, -c, out=g_event), c, out=g_event)
        if weights is not None:
            g_event *= weights if g_event.ndim == 1 else weights[:, None]
        g_event /= batch.n_rows
        return g_event

    def _gradient(
        self, batch: FeatureBatch, values: np.ndarray, y: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean loss gradient of the batch: (distinct slots, gradient per slot,
        gradient of the intercept)."""
        g_event = self._event_gradient(batch, values, y, weights)
        rows = batch.rows()
        rep, firsts = batch.groups(self._scratch, self._small)
        m = len(batch.indices)
        if g_event.ndim == 1:
            per_entry = g_event[rows] * values
            g = np.bincount(rep, weights=per_entry, minlength=m)[firsts]
        else:
            per_entry = g_event[rows] * values[:, None]
            g = np.empty((len(firsts), g_event.shape[1]))
            for k in range(g_event.shape[1]):
                g[:, k] = np.bincount(rep, weights=per_entry[:, k], minlength=m)[firsts]
        slots = batch.indices[firsts]
        if self.l2:
            g += self.l2 * self._arrays["weights"][slots]
        return slots, g, g_event.sum(axis=0)

    def learn_many(
        self, xs: Batch, ys: Sequence[object] | np.ndarray,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Learn from a micro-batch: one optimiser step on its mean gradient
        (``update="batch"``), or one step per event in order (``"event"``).

        ``xs`` is a sequence of feature mappings or a :class:`FeatureBatch`;
        ``ys`` one label per event; ``weights`` an optional importance weight
        per event (a finite number ≥ 0 that multiplies the event's gradient;
        default 1).
        """
        batch = self._batch(xs)
        h = _event_weights(weights, batch.n_rows)
        k0 = self._n_outputs()
        y = self._labels(ys, batch.n_rows)
        if batch.n_rows == 0:
            return
        if self.update == "event":
            self._learn_events(batch, y, h, k0, None)
            return
        self._learn_batch(batch, y, h)

    def predict_learn_many(
        self, xs: Batch, ys: Sequence[object] | np.ndarray,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Predict, then learn, a micro-batch: the prequential step in one call.

        Returns what :meth:`predict_many` (regression) or
        ``predict_proba_many`` (classifiers, one column per class of
        ``classes_`` after the batch) would have answered for each event just
        before learning it: with ``update="event"``, the model after the
        events before it (a class not seen yet has probability 0); with
        ``"batch"``, the model before the batch. Then learns as
        :meth:`learn_many`.

        >>> from streamlearn.generators import clicks
        >>> from streamlearn.learners import LogisticRegression
        >>> from streamlearn.optim import Normalized
        >>> events = list(clicks(5000, seed=0))
        >>> ys = np.array([e["label"] for e in events])
        >>> model = LogisticRegression(Normalized(), update="event", intercept_lr=None, bits=16)
        >>> proba = model.predict_learn_many([e["features"] for e in events], ys)
        >>> round(float(((proba[:, 1] > 0.5) == ys).mean()), 4), model.n_learned
        (0.7682, 5000)
        """
        batch = self._batch(xs)
        h = _event_weights(weights, batch.n_rows)
        if self.update == "batch":
            if self.task == "regression":
                before = self.predict_many(batch)
            else:
                before = self.predict_proba_many(  # type: ignore[attr-defined]  # a classifier's
                    batch
                )
            self.learn_many(batch, ys, h)
            if self.task == "multiclass" and before.shape[1] < self._n_outputs():
                pad = np.zeros((batch.n_rows, self._n_outputs() - before.shape[1]))
                before = np.hstack([before, pad])
            return before
        k0 = self._n_outputs()
        y = self._labels(ys, batch.n_rows)
        width = self._n_outputs() if self.task == "multiclass" else 1
        preds = np.zeros((batch.n_rows, width))
        if batch.n_rows:
            self._learn_events(batch, y, h, k0, preds)
        return self._as_predictions(preds)

    def _as_predictions(self, preds: np.ndarray) -> np.ndarray:
        """The kernel's outputs as :meth:`predict_learn_many` returns them."""
        raise NotImplementedError

    def _learn_events(
        self, batch: FeatureBatch, y: np.ndarray, h: np.ndarray | None, k0: int,
        preds: np.ndarray | None,
    ) -> None:
        """Learn every event of ``batch`` in order in the compiled kernel."""
        if _kernel is None:  # checked here: a model learned per event still predicts
            raise ConfigError(
                "update", "'batch' (the per-event kernel was not built: install with a C "
                "compiler)", "'event'",
            )
        opt = self.optimizer
        a = self._arrays
        none = _EMPTY
        p = opt.params()
        own_intercept = self.intercept_lr is None
        ints = (
            self._kernel_model, _KERNEL_OPTIMIZERS[type(opt)], self._n_outputs(), k0,
            int(self.intercept), int(self.scale),
            int(isinstance(opt, SGD) and opt.schedule == "invscaling"), int(own_intercept),
            int(isinstance(opt, Normalized) and opt.invariant),
        )
        floats = (
            float(p.get("lr", 0.0)), float(p.get("power_t", 0.0)), float(p.get("eps", 0.0)),
            float(p.get("beta1", 0.0)), float(p.get("beta2", 0.0)),
            float(p.get("alpha", 0.0)), float(p.get("beta", 0.0)),
            float(p.get("l1", 0.0)) if isinstance(opt, FTRL) else 0.0,
            float(p.get("l2", 0.0)) if isinstance(opt, FTRL) else 0.0,
            float(self.l1), float(self.l2), float(self.intercept_lr or 0.0),
            float(self.clip_gradient),
        )
        accs = [a[f"{opt.name}.{n}"] for n in opt.arrays]
        accs += [none] * (3 - len(accs))
        ib = [a[k] for k in self._intercept_arrays(0)] if own_intercept and self.intercept else []
        ib += [none] * (2 - len(ib))
        numeric = None
        if self.scale:
            numeric = np.ascontiguousarray(batch.numeric, dtype=bool).view(np.uint8)
        _kernel.learn_bundle(
            ints, floats, a["weights"], a["intercept"], *accs,
            a.get("l1.cum", none), a.get("l1.total", none),
            a.get("scaler.mean", none), a.get("scaler.var", none), a.get("scaler.count", none),
            np.ascontiguousarray(batch.offsets, dtype=np.int64),
            np.ascontiguousarray(batch.indices, dtype=np.int64),
            np.ascontiguousarray(batch.values, dtype=np.float64),
            numeric, np.ascontiguousarray(y, dtype=np.float64), h, preds, *ib,
            *self._mixture_arrays(), self._n_steps,
        )
        self._n_steps += batch.n_rows
        self._n_learned += batch.n_rows

    def _mixture_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """A mixture's component rates and summed losses, for the kernel (none here)."""
        return _EMPTY, _EMPTY

    def _learn_batch(self, batch: FeatureBatch, y: np.ndarray, h: np.ndarray | None) -> None:
        """One optimiser step on the batch's mean gradient (numpy)."""
        if self._scaler is not None:
            self._scaler.update(batch)
        values = self._values(batch)
        t = self._n_steps + 1
        w = self._arrays["weights"]
        if self._additive and w.ndim == 1:
            g_event = self._event_gradient(batch, values, y, h)
            step = g_event * -self.optimizer.learning_rate(t)
            np.add.at(w, batch.indices, step[batch.rows()] * values)
            g_intercept = g_event.sum(axis=0)
        else:
            slots, g, g_intercept = self._gradient(batch, values, y, h)
            self.optimizer.update(w, self._arrays, slots, g, t)
            if self.l1:
                self._apply_l1(w, slots, t)
        if self.intercept:
            self._intercept_step(g_intercept, t)
        self._n_steps = t
        self._n_learned += batch.n_rows

    def _apply_l1(self, w: np.ndarray, slots: np.ndarray, t: int) -> None:
        total = self._arrays["l1.total"]
        total += self.l1 * self.optimizer.learning_rate(t)
        u = total[0]
        cum = self._arrays["l1.cum"]
        before = w[slots]
        q = cum[slots]
        after = np.where(
            before > 0, np.maximum(0.0, before - (u + q)),
            np.where(before < 0, np.minimum(0.0, before + (u - q)), before),
        )
        cum[slots] = q + (after - before)
        w[slots] = after

    def learn_one(self, x: Features, y: object) -> None:
        """Learn from one event (a batch of one)."""
        self.learn_many(self._one(x), [y])

    # -- objective, for checking gradients --------------------------------------

    def objective(self, xs: Batch, ys: Sequence[object] | np.ndarray) -> float:
        """The batch objective whose gradient :meth:`learn_many` follows: the mean
        loss plus ``l2 / 2`` times the squared weights of the batch's slots
        (scaler statistics as they are, not updated)."""
        batch = self._batch(xs)
        y = self._labels(ys, batch.n_rows)
        loss, _ = self._loss_and_gradient(self._raw(batch, self._values(batch)), y)
        slots = np.unique(batch.indices)
        penalty = 0.5 * self.l2 * float((self._arrays["weights"][slots] ** 2).sum())
        return float(loss.mean()) + penalty

    def gradient(
        self, xs: Batch, ys: Sequence[object] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradient of :meth:`objective`: ``(slots, per-slot gradient, intercept
        gradient)``, slots distinct."""
        batch = self._batch(xs)
        y = self._labels(ys, batch.n_rows)
        slots, g, g_intercept = self._gradient(batch, self._values(batch), y)
        return slots, g, g_intercept


_EMPTY = np.zeros(0)


def _event_weights(weights: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray | None:
    """Importance weights as a float64 array (``None``: every event weighs 1), each one
    a weight as the event contract has it (:func:`streamlearn.contract.field_ok`, kind
    ``weight``; numpy numbers too), else the contract's rejection ``weight.invalid``.

    >>> _event_weights([1, 2.5, np.float32(0)], 3)
    array([1. , 2.5, 0. ])
    >>> _event_weights([1, -2], 2)
    Traceback (most recent call last):
    ...
    streamlearn.errors.ValidationError: field `weight` of event 1: expected a number >= 0 \
(the event's importance; 1 when absent), got -2
    """
    if weights is None:
        return None
    if isinstance(weights, str | bytes | Mapping) or not hasattr(weights, "__len__"):
        raise ValidationError("weights", "a sequence of numbers, one per event",
                              type(weights).__name__)
    if len(weights) != n:
        raise ValidationError("weights", f"{n} weights (one per event)", f"{len(weights)}")
    if isinstance(weights, np.ndarray) and weights.dtype.kind in "fiu":
        h = np.ascontiguousarray(weights, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(h) | (h < 0))
        if len(bad):
            _bad_weight(weights[int(bad[0])], int(bad[0]))
        return h
    for j, v in enumerate(weights):
        if not field_ok("weight", v.item() if isinstance(v, np.number) else v):
            _bad_weight(v, j)
    return np.array(weights, dtype=np.float64)


def _bad_weight(value: object, j: int) -> NoReturn:
    rule = RULES["weight.invalid"]
    raise ValidationError("weight", rule.expected, repr(value), f"event {j}")


def check_labels_length(ys: Sequence[object] | np.ndarray, n: int) -> None:
    if isinstance(ys, str | bytes | Mapping) or not hasattr(ys, "__len__"):
        raise ValidationError("ys", "a sequence of labels, one per event", type(ys).__name__)
    if len(ys) != n:
        raise ValidationError("ys", f"{n} labels (one per event)", f"{len(ys)}")
