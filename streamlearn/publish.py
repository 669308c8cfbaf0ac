"""The publishing SDK's public path: ``from streamlearn.publish import Publisher``.

The SDK is a Kafka client, so it lives with the others in
:mod:`connectors.publisher` (where its documentation is); this module is its
face, beside the command line on top of the library: the library core
(events, features, learners, merge, state, store, serving, training) never
imports it, nor anything in ``connectors``.
"""

from __future__ import annotations

from connectors.publisher import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_TOPIC,
    Delivered,
    Delivery,
    DeliveryError,
    Publisher,
)

__all__ = ["Publisher", "Delivery", "Delivered", "DeliveryError", "DEFAULT_BOOTSTRAP",
           "DEFAULT_TOPIC"]
