"""The errors streamlearn raises, in one small tree.

::

    StreamlearnError                 base of everything below
    ├── ValidationError              an input a user can get wrong (event, config,
    │   │                            request, CLI flag) was wrong; names the field
    │   ├── EventError               one event failed decoding or validation
    │   └── ConfigError              a job or service setting was wrong
    ├── StateError                   a model state could not be read or applied
    ├── StoreError                   the model store refused or failed an operation
    │   └── VersionNotFound          a requested model version does not exist
    └── ServiceError                 a service we depend on is missing or failed
        ├── BrokerUnavailable        no Kafka broker answered (retriable)
        └── PortInUse                a port we must listen on is taken

Every message says what was wrong, what was expected and what to do, for
example ``field `label`: expected a number, true/false or a class name, got
'yes'``. Classes carry a ``retriable`` flag so callers can decide whether to
try again without parsing messages.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "StreamlearnError",
    "ValidationError",
    "EventError",
    "ConfigError",
    "StateError",
    "StoreError",
    "VersionNotFound",
    "ServiceError",
    "BrokerUnavailable",
    "PortInUse",
]


class StreamlearnError(Exception):
    """Base class of every error streamlearn raises on purpose."""

    retriable: bool = False


class ValidationError(StreamlearnError, ValueError):
    """An input was wrong. ``field`` names it (dotted path), when known.

    >>> str(ValidationError("label", "a number or true/false", "'yes'"))
    "field `label`: expected a number or true/false, got 'yes'"
    """

    #: every problem, when the one error reports several (the first is ``field``):
    #: set only by those that do (a server's refusal read by the client)
    problems: list[Any]

    def __init__(self, field: str, expected: str, got: object, where: str = "") -> None:
        self.field = field
        self.expected = expected
        self.got = got
        self.where = where
        prefix = f"field `{field}`" + (f" of {where}" if where else "")
        super().__init__(f"{prefix}: expected {expected}, got {got}")


class EventError(ValidationError):
    """One event could not be decoded or failed validation."""


class ConfigError(ValidationError):
    """A configuration key (job config, service setting, CLI flag) was wrong."""


class StateError(StreamlearnError):
    """A serialised model state is malformed or does not fit the learner."""


class StoreError(StreamlearnError):
    """The model store could not complete an operation."""


class VersionNotFound(StoreError, KeyError):
    """A model version (or model name) that was asked for does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "version not found"


class ServiceError(StreamlearnError):
    """A process or service streamlearn depends on is missing or failed."""


class BrokerUnavailable(ServiceError):
    """No Kafka broker answered at the given bootstrap address."""

    retriable = True


class PortInUse(ServiceError):
    """A TCP port streamlearn must listen on is already taken."""
