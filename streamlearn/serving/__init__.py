"""The live prediction service, its hot swap and its Python client.

``streamlearn serve --store URI --model NAME`` runs :func:`run_server` on the
app :func:`build_app` makes from a :class:`StoreSource`; a
:class:`ModelWatcher` follows the store and swaps each new version in
atomically. :class:`Client` talks to a running service.
"""

from __future__ import annotations

from streamlearn.serving.app import PredictionApp
from streamlearn.serving.client import BatchPrediction, Client, Prediction
from streamlearn.serving.model import ModelSource, Predictions, Predictor
from streamlearn.serving.server import build_app, run_server
from streamlearn.serving.store_source import StoreSource
from streamlearn.serving.watcher import ModelWatcher

__all__ = [
    "BatchPrediction",
    "Client",
    "ModelSource",
    "ModelWatcher",
    "Prediction",
    "PredictionApp",
    "Predictions",
    "Predictor",
    "StoreSource",
    "build_app",
    "run_server",
]
