"""Binary logistic regression learned at several rates at once, answering with their
Bayes mixture.

No one step size suits every stream: on some a normalised learner at rate 0.5
predicts best, on others at 0.25 (docs/learners.md measures five). A
:class:`LogisticMixture` learns ``K`` logistic regressions side by side, every
event, each by the plain normalised rule at its own rate (``lr`` times one of
``rates``), and predicts each event with their Bayes mixture: component ``c``'s
probability weighted by ``exp(-L_c)``, ``L_c`` its summed log-loss on the
events before (times their importance weights). Over any stream the
mixture's log-loss exceeds that of its best component by at most ``log K``
in total: it follows whichever rate suits the stream, from the events.

The components live in the columns of the learner's arrays (``weights`` of
shape ``(n_slots, K)``, ``intercept`` and its accumulators of ``K``); what
the normalised rule learns from the data alone (each slot's largest ``|x|``,
the sums ``N`` and ``T``) is shared, being the same for every component. The
summed losses are the array ``mixture.loss`` (``K``), a sum over events: merged
learners add theirs (``streamlearn.merge.MERGE_RULES``). Per event only, in the
compiled kernel, at about ``K`` times the work of one learner.

>>> from streamlearn.generators import clicks
>>> events = list(clicks(20_000, seed=0))
>>> xs, ys = [e["features"] for e in events], [e["label"] for e in events]
>>> mixture = LogisticMixture(bits=16)
>>> mixture
LogisticMixture(optimizer=Normalized(lr=0.5, invariant=False), ..., rates=[1.0, 0.5])
>>> p = mixture.predict_learn_many(xs, ys)[:, 1]
>>> [round(float(v), 3) for v in mixture.mixture_weights()]  # the rate that suits clicks
[1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from streamlearn.errors import ConfigError
from streamlearn.learners.base import Batch
from streamlearn.learners.logistic import LogisticRegression, sigmoid
from streamlearn.optim import Normalized, Optimizer

__all__ = ["LogisticMixture", "MAX_COMPONENTS"]

#: the most components a mixture may have (each one more column of every array)
MAX_COMPONENTS = 8


def _rates(rates: object) -> tuple[float, ...]:
    ok = (
        isinstance(rates, list | tuple)
        and 2 <= len(rates) <= MAX_COMPONENTS
        and all(isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r)
                and r > 0 for r in rates)
    )
    if not ok:
        raise ConfigError(
            "rates", f"a list of 2 to {MAX_COMPONENTS} finite numbers > 0 (each component's "
            "learning rate over the optimiser's)", repr(rates),
        )
    return tuple(float(r) for r in cast(Sequence[float], rates))


class LogisticMixture(LogisticRegression):
    """A Bayes mixture of binary logistic regressions learned at several rates.

    Parameters
    ----------
    optimizer
        ``Normalized(lr, invariant=False)`` (the default: ``lr`` 0.5), the
        rule every component learns by.
    rates
        Each component's learning rate over ``lr`` (2 to
        :data:`MAX_COMPONENTS` numbers > 0; default ``[1.0, 0.5]``).
    classes, **kwargs
        As :class:`~streamlearn.learners.LogisticRegression`; ``update`` is
        ``"event"`` (the default here), ``l1`` 0 (its cumulative penalty
        depends on the rate).
    """

    _kernel_model = 3

    def __init__(
        self,
        optimizer: Optimizer | None = None,
        *,
        rates: Sequence[float] = (1.0, 0.5),
        classes: Sequence[object] | None = None,
        **kwargs: Any,
    ) -> None:
        if optimizer is None:
            optimizer = Normalized(0.5, invariant=False)
        if not isinstance(optimizer, Normalized) or optimizer.invariant:
            raise ConfigError(
                "optimizer", "Normalized(lr, invariant=False): each component's plain "
                "normalised step", repr(optimizer),
            )
        if kwargs.get("l1"):
            raise ConfigError("l1", "0 with LogisticMixture (use l2)", repr(kwargs["l1"]))
        kwargs.setdefault("update", "event")
        self.rates = _rates(rates)
        self._rate_array = np.array(self.rates)
        super().__init__(optimizer, classes=classes, **kwargs)

    def _own_params(self) -> dict[str, Any]:
        return {**super()._own_params(), "rates": list(self.rates)}

    def _weights_shape(self) -> tuple[int, ...]:
        return (self.n_slots, len(self.rates))

    def _n_outputs(self) -> int:
        return len(self.rates)

    def _allocate(self) -> None:
        super()._allocate()
        self._arrays["mixture.loss"] = np.zeros(len(self.rates))

    def _mixture_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self._rate_array, self._arrays["mixture.loss"]

    def mixture_weights(self) -> np.ndarray:
        """Each component's weight in the next prediction: ``exp(-L_c)``
        normalised, ``L_c`` its summed log-loss so far (equal weights at first).

        >>> LogisticMixture(bits=4, rates=[1, 0.5, 0.25]).mixture_weights().tolist()
        [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
        """
        return mixture_weights(self._arrays["mixture.loss"])

    def predict_proba_many(self, xs: Batch) -> np.ndarray:
        """Probabilities, shape ``(n, 2)``: the components' mixed."""
        batch = self._batch(xs)
        p = sigmoid(self._raw(batch, self._values(batch))) @ self.mixture_weights()
        return np.column_stack([1.0 - p, p])

    def _loss_and_gradient(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each component's loss and gradient (one column each)."""
        return super()._loss_and_gradient(z, y[:, None])


def mixture_weights(losses: np.ndarray) -> np.ndarray:
    """The Bayes mixture's weights of components with summed log-losses ``losses``.

    >>> mixture_weights(np.array([10.0, 10.0 + math.log(3)])).round(6).tolist()
    [0.75, 0.25]
    """
    e = np.exp(losses.min() - losses)
    return e / e.sum()
