"""Per-coordinate optimisers for sparse linear models.

An optimiser holds only its settings (its constructor arguments, kept as
given). Its accumulators are named numpy arrays that the learner owns and that
travel in :class:`~streamlearn.state.ModelState` with the weights:

==========  ===================================  ==================================
optimiser   update of a touched weight ``w``     arrays (same shape as ``weights``)
==========  ===================================  ==================================
SGD         ``w -= eta_t * g``                   none
AdaGrad     ``w -= lr * g / (sqrt(G) + eps)``    ``adagrad.g2``
Adam        lazy Adam, bias-corrected            ``adam.m``, ``adam.v``
FTRL        FTRL-Proximal with its own L1/L2     ``ftrl.z``, ``ftrl.n``
Normalized  normalised AdaGrad, per event only   ``normalized.g2``, ``normalized.scale``
                                                 (one per slot), ``normalized.n`` (2)
==========  ===================================  ==================================

Every update touches only the slots present in the micro-batch (``slots``),
with the batch's gradient already summed per slot, so its cost does not grow
with the number of hash slots. The ``step`` counter ``t`` starts at 1.

>>> import numpy as np
>>> w = np.zeros(4)
>>> opt = AdaGrad(lr=0.5)
>>> arrays = opt.init_arrays(w.shape)
>>> opt.update(w, arrays, np.array([1, 3]), np.array([2.0, -1.0]), t=1)
>>> w.round(3).tolist()
[0.0, -0.5, 0.0, 0.5]
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from streamlearn.errors import ConfigError

__all__ = [
    "Optimizer", "SGD", "AdaGrad", "Adam", "FTRL", "Normalized", "optimizer_from_config",
    "OPTIMIZERS",
]


def _positive(name: str, value: object, *, zero: bool = False, below: float | None = None) -> None:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero else value > 0)
        and (below is None or value < below)
    ):
        return
    bound = "≥ 0" if zero else "> 0"
    if below is not None:
        bound += f" and < {below}"
    raise ConfigError(name, f"a finite number {bound}", repr(value))


class Optimizer:
    """Base of the optimisers: settings in, in-place sparse updates out."""

    name: ClassVar[str] = ""
    arrays: ClassVar[tuple[str, ...]] = ()
    #: whether the learner's own ``l1``/``l2`` apply (FTRL has its own)
    uses_learner_penalty: ClassVar[bool] = True
    #: whether a step is ``-learning_rate(t) * g`` with no per-slot state: then
    #: each entry's share of the gradient may be added into the weights
    #: directly, without first summing the entries of each slot
    additive: ClassVar[bool] = False
    #: whether its steps need each event's own feature values (then it runs in
    #: the per-event kernel only: ``update="event"``)
    per_event_only: ClassVar[bool] = False

    #: the constructor's arguments, as given (set by each optimiser's ``__init__``)
    _params: dict[str, Any]

    def params(self) -> dict[str, Any]:
        """Constructor arguments, as given (JSON-able)."""
        return dict(self._params)

    def config(self) -> dict[str, Any]:
        """``{"name": ..., "params": ...}``, for :func:`optimizer_from_config`."""
        return {"name": type(self).__name__, "params": self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Optimizer)
            and type(other) is type(self)
            and other.params() == self.params()
        )

    __hash__ = None  # type: ignore[assignment]  # unhashable: typeshed declares a method

    def init_arrays(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Fresh accumulators for weights of ``shape``."""
        return {f"{self.name}.{a}": np.zeros(shape) for a in self.arrays}

    def learning_rate(self, t: int) -> float:
        """The base step size at step ``t`` (used for the L1 penalty)."""
        raise NotImplementedError

    def update(
        self, w: np.ndarray, arrays: dict[str, np.ndarray], slots: np.ndarray, g: np.ndarray,
        t: int,
    ) -> None:
        """Update ``w[slots]`` in place from the gradient ``g`` (one row per slot,
        slots distinct)."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with a learning-rate schedule.

    Parameters
    ----------
    lr
        The base learning rate.
    schedule
        ``"constant"`` (``eta_t = lr``) or ``"invscaling"``
        (``eta_t = lr / t ** power_t``).
    power_t
        The exponent of ``"invscaling"``.

    >>> SGD(0.1, schedule="invscaling").learning_rate(4)
    0.05
    """

    name = "sgd"
    additive = True
    SCHEDULES = ("constant", "invscaling")

    def __init__(self, lr: float = 0.01, schedule: str = "constant", power_t: float = 0.5) -> None:
        _positive("lr", lr)
        _positive("power_t", power_t, zero=True)
        if schedule not in self.SCHEDULES:
            raise ConfigError("schedule", f"one of {list(self.SCHEDULES)}", repr(schedule))
        self.lr, self.schedule, self.power_t = lr, schedule, power_t
        self._params = {"lr": lr, "schedule": schedule, "power_t": power_t}

    def learning_rate(self, t: int) -> float:
        if self.schedule == "constant":
            return self.lr
        return self.lr / t**self.power_t

    def update(
        self, w: np.ndarray, arrays: dict[str, np.ndarray], slots: np.ndarray, g: np.ndarray,
        t: int,
    ) -> None:
        w[slots] -= self.learning_rate(t) * g


class AdaGrad(Optimizer):
    """AdaGrad: per-coordinate step ``lr / (sqrt(sum of squared gradients) + eps)``."""

    name = "adagrad"
    arrays = ("g2",)

    def __init__(self, lr: float = 0.1, eps: float = 1e-8) -> None:
        _positive("lr", lr)
        _positive("eps", eps)
        self.lr, self.eps = lr, eps
        self._params = {"lr": lr, "eps": eps}

    def learning_rate(self, t: int) -> float:
        return self.lr

    def update(
        self, w: np.ndarray, arrays: dict[str, np.ndarray], slots: np.ndarray, g: np.ndarray,
        t: int,
    ) -> None:
        g2 = arrays["adagrad.g2"]
        acc = g2[slots] + g * g
        g2[slots] = acc
        w[slots] -= self.lr * g / (np.sqrt(acc) + self.eps)


class Adam(Optimizer):
    """Adam, lazily: moments of a slot move only when the slot is in the batch;
    bias correction uses the global step ``t``."""

    name = "adam"
    arrays = ("m", "v")

    def __init__(
        self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        _positive("lr", lr)
        _positive("beta1", beta1, zero=True, below=1)
        _positive("beta2", beta2, zero=True, below=1)
        _positive("eps", eps)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self._params = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps}

    def learning_rate(self, t: int) -> float:
        return self.lr

    def update(
        self, w: np.ndarray, arrays: dict[str, np.ndarray], slots: np.ndarray, g: np.ndarray,
        t: int,
    ) -> None:
        m_all, v_all = arrays["adam.m"], arrays["adam.v"]
        m = self.beta1 * m_all[slots] + (1 - self.beta1) * g
        v = self.beta2 * v_all[slots] + (1 - self.beta2) * g * g
        m_all[slots] = m
        v_all[slots] = v
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        w[slots] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class FTRL(Optimizer):
    """FTRL-Proximal, per coordinate, with its own L1 and L2.

    ``alpha`` and ``beta`` set the per-coordinate rate
    ``alpha / (beta + sqrt(n))``; ``l1`` makes weights exactly zero, ``l2``
    shrinks them. The learner's own ``l1``/``l2`` must stay 0 with FTRL.
    """

    name = "ftrl"
    arrays = ("z", "n")
    uses_learner_penalty = False

    def __init__(
        self, alpha: float = 0.1, beta: float = 1.0, l1: float = 0.0, l2: float = 0.0
    ) -> None:
        _positive("alpha", alpha)
        _positive("beta", beta, zero=True)
        _positive("l1", l1, zero=True)
        _positive("l2", l2, zero=True)
        self.alpha, self.beta, self.l1, self.l2 = alpha, beta, l1, l2
        self._params = {"alpha": alpha, "beta": beta, "l1": l1, "l2": l2}

    def learning_rate(self, t: int) -> float:
        return self.alpha

    def update(
        self, w: np.ndarray, arrays: dict[str, np.ndarray], slots: np.ndarray, g: np.ndarray,
        t: int,
    ) -> None:
        z_all, n_all = arrays["ftrl.z"], arrays["ftrl.n"]
        n_old = n_all[slots]
        n = n_old + g * g
        root = np.sqrt(n)
        sigma = (root - np.sqrt(n_old)) / self.alpha
        z = z_all[slots] + g - sigma * w[slots]
        z_all[slots] = z
        n_all[slots] = n
        shrunk = np.sign(z) * np.maximum(np.abs(z) - self.l1, 0.0)
        w[slots] = -shrunk / ((self.beta + root) / self.alpha + self.l2)


class Normalized(Optimizer):
    """Normalised adaptive steps: AdaGrad made invariant to each feature's scale.

    The normalised adaptive gradient of Ross, Mineiro and Langford
    ("Normalized online learning", 2013), the kind of update Vowpal Wabbit
    learns with by default. Per slot ``i`` it keeps ``s_i``, the largest
    ``|x_i|`` seen, and ``G_i``, the sum of squared gradients; globally
    ``N``, the sum over events of ``sum_i (x_i / s_i)**2``, and ``T``, the
    events' total weight. An event first raises ``s_i`` where ``|x_i|``
    exceeds it, multiplying ``w_i`` by ``s_old / |x_i|`` (so the prediction
    a weight stands for does not jump), adds to ``N`` and ``T``, then steps::

        G_i += g_i**2
        w_i -= lr * sqrt(T / N) * g_i / (s_i * sqrt(G_i))

    Multiplying a feature by a constant leaves every prediction unchanged.

    With ``invariant`` (the default, as in VW), linear and logistic models
    take importance-invariant steps (Karampatziakis and Langford, "Online
    importance weight aware updates", 2011): with ``X = sum_i r_i x_i**2``
    over the step's rates ``r_i`` (the intercept counting as a feature of
    value 1), the loss's share of each step is scaled by the ratio of the
    move of the raw output ``z`` along the gradient flow of the event's loss
    over its weight ``h`` to the move of the plain step, ``X h |dloss/dz|``:
    ``(1 - exp(-X h)) / (X h)`` for the squared loss; for the logistic loss
    the solution ``q`` of ``q + exp(q) = q0 + exp(q0) + X h`` (``q = ±z``).
    The ratio is at most 1: however large the weight or the rate, a step
    never carries the prediction past the label; at fixed rates, an event of
    weight 2 moves ``z`` as two steps of weight 1 would. Softmax models take
    plain steps.

    Its steps read each event's values, so it runs per event only
    (``update="event"``).
    """

    name = "normalized"
    arrays = ("g2", "scale", "n")
    per_event_only = True

    def __init__(self, lr: float = 0.5, invariant: bool = True) -> None:
        _positive("lr", lr)
        if not isinstance(invariant, bool):
            raise ConfigError("invariant", "true or false", repr(invariant))
        self.lr, self.invariant = lr, invariant
        self._params = {"lr": lr, "invariant": invariant}

    def init_arrays(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        return {
            "normalized.g2": np.zeros(shape),
            "normalized.scale": np.zeros(shape[0]),
            "normalized.n": np.zeros(2),
        }

    def learning_rate(self, t: int) -> float:
        return self.lr

    def update(
        self, w: np.ndarray, arrays: dict[str, np.ndarray], slots: np.ndarray, g: np.ndarray,
        t: int,
    ) -> None:
        raise ConfigError(
            "update", "'event' with Normalized (its steps read each event's values)", "'batch'"
        )


OPTIMIZERS: dict[str, type[Optimizer]] = {
    c.__name__: c for c in (SGD, AdaGrad, Adam, FTRL, Normalized)
}


def optimizer_from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimiser from :meth:`Optimizer.config`.

    >>> optimizer_from_config(Adam(lr=0.01).config())
    Adam(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-08)
    """
    name = config.get("name") if isinstance(config, dict) else None
    if name not in OPTIMIZERS:
        raise ConfigError("optimizer.name", f"one of {sorted(OPTIMIZERS)}", repr(name))
    params = config.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError("optimizer.params", "a mapping of settings", repr(params))
    try:
        return OPTIMIZERS[name](**params)
    except TypeError as exc:
        raise ConfigError("optimizer.params", f"settings of {name}", repr(params)) from exc
