"""Factorization machines on hashed sparse features, learned per event.

A factorization machine (Rendle, "Factorization machines", 2010) adds to a
linear model a ``k``-vector of factors per slot, and scores every pair of an
event's entries by the dot product of their factors::

    z = b + Σ_j w[s_j] x_j + Σ_(i<j) <v[s_i], v[s_j]> x_i x_j
      = b + Σ_j w[s_j] x_j + ½ Σ_f ((Σ_j v[s_j,f] x_j)² − Σ_j v[s_j,f]² x_j²)

over the event's entries ``j`` (slot ``s_j``, value ``x_j``): every pair of
features interacts, through ``k`` numbers per feature, in O(k × entries).

The linear part (``weights``, ``intercept``) is learned by ``optimizer``
(SGD, AdaGrad, FTRL or ``Normalized(invariant=False)``), the factors by
``factor_optimizer`` (SGD, AdaGrad or FTRL), one event at a time, in the
compiled kernel (``learn_fm_bundle`` in ``_kernel.c``). Factors start as
normal draws of standard deviation ``init_std`` from ``seed`` (the same for
every learner built from the same parameters, so parallel learners start
equal). With FTRL for the factors, ``factors.ftrl.z`` starts where FTRL's
closed form gives those initial factors.

State arrays, on top of the linear learner's: ``factors`` (n_slots, k) and
the factors' optimiser arrays ``factors.<optimiser array>`` (same shape).
Predicting needs only ``weights``, ``intercept`` and ``factors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from streamlearn.errors import ConfigError
from streamlearn.features import FeatureBatch
from streamlearn.learners import base
from streamlearn.learners.base import Batch, _number
from streamlearn.learners.linear import LinearRegression
from streamlearn.learners.logistic import LogisticRegression
from streamlearn.optim import FTRL, SGD, AdaGrad, Normalized, Optimizer, optimizer_from_config

__all__ = ["FMRegressor", "FMClassifier"]

_LINEAR_OPTIMIZERS = {SGD: 0, AdaGrad: 1, FTRL: 3, Normalized: 4}
_FACTOR_OPTIMIZERS = {SGD: 0, AdaGrad: 1, FTRL: 3}

if TYPE_CHECKING:  # a mixin in front of a linear learner (see FMRegressor): type it as one
    _Linear = base.LinearModel
else:
    _Linear = object


class _FactorizationMachine(_Linear):
    """What both factorization machines add to their linear model."""

    def __init__(
        self,
        optimizer: Optimizer | None = None,
        *,
        k: int = 8,
        factor_optimizer: Optimizer | None = None,
        factor_l2: float = 0.0,
        init_std: float = 0.01,
        seed: int = 0,
        update: str = "event",
        **kwargs: Any,
    ) -> None:
        if optimizer is None:
            optimizer = AdaGrad(0.1)
        if factor_optimizer is None:
            factor_optimizer = AdaGrad(0.05)
        if type(k) is not int or not 1 <= k <= 256:
            raise ConfigError("k", "an integer from 1 to 256", repr(k))
        if type(optimizer) not in _LINEAR_OPTIMIZERS or (
            isinstance(optimizer, Normalized) and optimizer.invariant
        ):
            raise ConfigError(
                "optimizer", "SGD, AdaGrad, FTRL or Normalized(invariant=False) for a "
                "factorization machine", repr(optimizer),
            )
        if type(factor_optimizer) not in _FACTOR_OPTIMIZERS:
            raise ConfigError("factor_optimizer", "SGD, AdaGrad or FTRL", repr(factor_optimizer))
        if isinstance(factor_optimizer, FTRL) and factor_optimizer.beta == 0 \
                and factor_optimizer.l2 == 0:
            raise ConfigError("factor_optimizer", "FTRL with beta > 0 or l2 > 0 (its initial "
                              "factors must be representable)", repr(factor_optimizer))
        _number("factor_l2", factor_l2)
        _number("init_std", init_std, strict=True)
        if type(seed) is not int or seed < 0:
            raise ConfigError("seed", "an integer ≥ 0", repr(seed))
        if update != "event":
            raise ConfigError("update", "'event' for a factorization machine (it learns in the "
                              "per-event kernel only)", repr(update))
        if kwargs.get("scale"):
            raise ConfigError("scale", "false for a factorization machine", repr(kwargs["scale"]))
        if kwargs.get("l1"):
            raise ConfigError("l1", "0 for a factorization machine (use FTRL's own l1)",
                              repr(kwargs["l1"]))
        self.k, self.factor_optimizer, self.factor_l2 = k, factor_optimizer, factor_l2
        self.init_std, self.seed = init_std, seed
        super().__init__(optimizer, update=update, **kwargs)

    # -- parameters and arrays --------------------------------------------------

    def _own_params(self) -> dict[str, Any]:
        return {
            **super()._own_params(),
            "k": self.k, "factor_optimizer": self.factor_optimizer.config(),
            "factor_l2": self.factor_l2, "init_std": self.init_std, "seed": self.seed,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Any:
        params = dict(params)
        if isinstance(params.get("factor_optimizer"), dict):
            params["factor_optimizer"] = optimizer_from_config(params["factor_optimizer"])
        return super().from_params(params)

    def _allocate(self) -> None:
        super()._allocate()
        shape = (self.n_slots, self.k)
        v = np.random.default_rng(self.seed).normal(0.0, self.init_std, shape)
        arrays = {"factors": v}
        fopt = self.factor_optimizer
        arrays.update({f"factors.{k}": a for k, a in fopt.init_arrays(shape).items()})
        if isinstance(fopt, FTRL):  # z such that FTRL's closed form gives v
            arrays["factors.ftrl.z"] = -np.sign(v) * (
                np.abs(v) * (fopt.beta / fopt.alpha + fopt.l2) + fopt.l1
            )
        self._arrays.update(arrays)

    @property
    def factors(self) -> np.ndarray:
        """The factors, one row of ``k`` per slot (a view: do not change it)."""
        return self._arrays["factors"]

    # -- predicting -------------------------------------------------------------

    def _raw(self, batch: FeatureBatch, values: np.ndarray) -> np.ndarray:
        z = super()._raw(batch, values)
        if batch.n_rows == 0:
            return z
        vx = self._arrays["factors"][batch.indices] * values[:, None]
        s = batch.row_sums(vx)
        q = batch.row_sums(vx * vx)
        return z + 0.5 * (s * s - q).sum(axis=1)

    def objective(self, xs: Batch, ys: Sequence[object] | np.ndarray) -> float:
        """The mean loss plus ``l2 / 2`` times the squared weights and
        ``factor_l2 / 2`` times the squared factors of the batch's slots."""
        value = super().objective(xs, ys)
        batch = self._batch(xs)
        slots = np.unique(batch.indices)
        v = self._arrays["factors"][slots]
        return value + 0.5 * self.factor_l2 * float((v * v).sum())

    def gradient(self, xs: Batch, ys: Sequence[object] | np.ndarray) -> Any:
        raise ConfigError("gradient", "a linear learner (a factorization machine's gradients "
                          "are taken in the per-event kernel only)", type(self).__name__)

    # -- learning ---------------------------------------------------------------

    def _learn_events(
        self, batch: FeatureBatch, y: np.ndarray, h: np.ndarray | None, k0: int,
        preds: np.ndarray | None,
    ) -> None:
        kernel = base._kernel
        if kernel is None:
            raise ConfigError(
                "update", "a build with the per-event kernel (install with a C compiler) to "
                "learn a factorization machine", "'event'",
            )
        opt, fopt = self.optimizer, self.factor_optimizer
        a = self._arrays
        p, fp = opt.params(), fopt.params()
        own_intercept = self.intercept_lr is None
        intercept = self.intercept
        ints = (
            self._kernel_model, _LINEAR_OPTIMIZERS[type(opt)],
            _FACTOR_OPTIMIZERS[type(fopt)], self.k, int(intercept), int(own_intercept),
            int(isinstance(opt, SGD) and opt.schedule == "invscaling"),
            int(isinstance(fopt, SGD) and fopt.schedule == "invscaling"),
        )
        ftrl = isinstance(opt, FTRL)
        floats = (
            float(p.get("lr", 0.0)), float(p.get("power_t", 0.0)), float(p.get("eps", 0.0)),
            float(p.get("alpha", 0.0)), float(p.get("beta", 0.0)),
            float(p["l1"]) if ftrl else 0.0, float(p["l2"]) if ftrl else 0.0,
            float(self.l2), float(self.intercept_lr or 0.0),
            float(self.clip_gradient), float(self.factor_l2),
        )
        fftrl = isinstance(fopt, FTRL)
        factor_floats = (
            float(fp.get("lr", 0.0)), float(fp.get("power_t", 0.0)), float(fp.get("eps", 0.0)),
            float(fp.get("alpha", 0.0)), float(fp.get("beta", 0.0)),
            float(fp["l1"]) if fftrl else 0.0, float(fp["l2"]) if fftrl else 0.0,
        )
        none = base._EMPTY
        accs = [a[f"{opt.name}.{n}"] for n in opt.arrays] + [none] * (3 - len(opt.arrays))
        faccs = [a[f"factors.{fopt.name}.{n}"] for n in fopt.arrays]
        faccs += [none] * (2 - len(faccs))
        ib = [a[k] for k in self._intercept_arrays(0)] if own_intercept and intercept else []
        ib += [none] * (2 - len(ib))
        out = preds.reshape(-1) if preds is not None else None
        kernel.learn_fm_bundle(
            ints, floats, factor_floats, a["weights"], a["intercept"], *accs, a["factors"],
            *faccs, np.ascontiguousarray(batch.offsets, dtype=np.int64),
            np.ascontiguousarray(batch.indices, dtype=np.int64),
            np.ascontiguousarray(batch.values, dtype=np.float64),
            np.ascontiguousarray(y, dtype=np.float64), h, out, *ib,
            self._n_steps,
        )
        self._n_steps += batch.n_rows
        self._n_learned += batch.n_rows


class FMRegressor(_FactorizationMachine, LinearRegression):
    """Factorization machine regression (squared loss), learned per event.

    Parameters
    ----------
    optimizer
        The linear part's optimiser: SGD, AdaGrad (default ``AdaGrad(0.1)``),
        FTRL or ``Normalized(invariant=False)``.
    k
        Factors per slot.
    factor_optimizer
        The factors' optimiser: SGD, AdaGrad (default ``AdaGrad(0.05)``) or FTRL.
    factor_l2
        L2 penalty on the factors of an event's slots (``factor_l2 · v`` added
        to their gradient).
    init_std, seed
        The initial factors: normal draws of this standard deviation.
    **kwargs
        ``l2``, ``intercept``, ``intercept_lr``, ``bits``, ``dense``,
        ``clip_gradient`` as for :class:`~streamlearn.learners.LinearRegression`
        (``update`` is ``"event"``; ``scale`` and ``l1`` are not offered).
    """


class FMClassifier(_FactorizationMachine, LogisticRegression):
    """Binary factorization machine (logistic loss), learned per event.

    Parameters: as :class:`FMRegressor`, plus ``classes`` (the two labels,
    the second positive; default ``[False, True]``).

    >>> from streamlearn.generators import interactions
    >>> events = list(interactions(20_000, seed=0))
    >>> xs, ys = [e["features"] for e in events], [e["label"] for e in events]
    >>> model = FMClassifier(k=4, bits=16)
    >>> proba = model.predict_learn_many(xs, ys)[:, 1]
    >>> model.n_learned, model.factors.shape
    (20000, (65536, 4))
    """
