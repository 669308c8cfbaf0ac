"""Small models shared by the serving and scoring tests."""

from __future__ import annotations

from streamlearn.learners import LinearRegression, LogisticRegression
from streamlearn.state import ModelState

EVENTS = [
    {"age": float(i % 9), "country": ["FR", "DE", "JP"][i % 3], "tags": ["a", "b"][: i % 3]}
    for i in range(300)
]


def constant_model(value: float) -> ModelState:
    """A regressor whose every prediction is ``value``: shows which version answered."""
    state = LinearRegression(bits=6).state()
    state.arrays["intercept"][:] = value
    return state


def trained_classifier() -> LogisticRegression:
    model = LogisticRegression(bits=10)
    model.learn_many(EVENTS, [(e["age"] > 4) != (e["country"] == "FR") for e in EVENTS])
    return model
