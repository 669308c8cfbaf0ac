"""What a model version reflects: the :class:`Lineage` record.

A lineage travels with every committed version, inside the stored Arrow file's
schema metadata (as JSON) and in the store's small commit record, so that both
``pyarrow`` alone and :class:`~streamlearn.store.ModelStore` can read it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from streamlearn.errors import ValidationError

__all__ = ["Lineage"]


def _check_int(name: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(name, f"an integer >= {minimum}", repr(value), "lineage")
    return value


@dataclass(frozen=True)
class Lineage:
    """Where a model version comes from.

    Parameters
    ----------
    offsets
        The next Kafka offset to read, per topic and partition, once the events
        this version reflects are learned: ``{"events": {0: 1812, 1: 1790}}``.
    events
        How many events the version reflects, in total.
    parents
        The version(s) it was derived from (the base of a merge, the target of
        a rollback). Left empty, :meth:`ModelStore.commit` fills in the
        version that was the latest when committing.
    learners
        Names of the learners whose deltas went into it.
    created_at
        Creation time in seconds since the epoch; ``None`` lets the store stamp
        the commit time.
    metrics
        Prequential metrics at commit time, by name (``{"log_loss": 0.31}``).
    watermark_ms
        Event-time watermark in milliseconds, when the producer has one.

    Examples
    --------
    >>> lin = Lineage(offsets={"events": {0: 120, 1: 98}}, events=218,
    ...               learners=("learner-0", "learner-1"), metrics={"log_loss": 0.41})
    >>> Lineage.from_json(lin.to_json()) == lin
    True
    >>> lin.offsets["events"][1]
    98
    >>> Lineage(events=-1)
    Traceback (most recent call last):
    ...
    streamlearn.errors.ValidationError: field `events` of lineage: expected an integer >= 0, got -1
    """

    offsets: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    events: int = 0
    parents: tuple[int, ...] = ()
    learners: tuple[str, ...] = ()
    created_at: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    watermark_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.offsets, Mapping):
            raise ValidationError(
                "offsets", "a mapping {topic: {partition: offset}}", repr(self.offsets), "lineage"
            )
        offsets: dict[str, dict[int, int]] = {}
        for topic, parts in self.offsets.items():
            if not isinstance(topic, str) or not topic:
                raise ValidationError("offsets", "topic names as strings", repr(topic), "lineage")
            if not isinstance(parts, Mapping):
                raise ValidationError(
                    f"offsets[{topic!r}]", "a mapping {partition: offset}", repr(parts), "lineage"
                )
            offsets[topic] = {
                _check_int(f"offsets[{topic!r}] partition", p): _check_int(
                    f"offsets[{topic!r}][{p!r}]", o
                )
                for p, o in parts.items()
            }
        object.__setattr__(self, "offsets", offsets)
        _check_int("events", self.events)
        parents = tuple(self.parents)
        for i, p in enumerate(parents):
            _check_int(f"parents[{i}]", p, minimum=1)
        object.__setattr__(self, "parents", parents)
        learners = tuple(self.learners)
        for i, name in enumerate(learners):
            if not isinstance(name, str):
                raise ValidationError(f"learners[{i}]", "a string", repr(name), "lineage")
        object.__setattr__(self, "learners", learners)
        if self.created_at is not None:
            if isinstance(self.created_at, bool) or not isinstance(self.created_at, int | float):
                raise ValidationError(
                    "created_at",
                    "seconds since the epoch or None",
                    repr(self.created_at),
                    "lineage",
                )
            object.__setattr__(self, "created_at", float(self.created_at))
        if not isinstance(self.metrics, Mapping):
            raise ValidationError(
                "metrics", "a mapping {name: number}", repr(self.metrics), "lineage"
            )
        metrics: dict[str, float] = {}
        for name, value in self.metrics.items():
            if (
                not isinstance(name, str)
                or isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValidationError(
                    f"metrics[{name!r}]", "a finite number", repr(value), "lineage"
                )
            metrics[name] = float(value)
        object.__setattr__(self, "metrics", metrics)
        if self.watermark_ms is not None:
            _check_int("watermark_ms", self.watermark_ms)

    def stamped(self, now: float | None = None) -> Lineage:
        """This lineage with ``created_at`` set (to ``now``) if it was ``None``."""
        if self.created_at is not None:
            return self
        return replace(self, created_at=time.time() if now is None else now)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (partition numbers become string keys, as JSON needs)."""
        return {
            "offsets": {
                t: {str(p): o for p, o in parts.items()} for t, parts in self.offsets.items()
            },
            "events": self.events,
            "parents": list(self.parents),
            "learners": list(self.learners),
            "created_at": self.created_at,
            "metrics": dict(self.metrics),
            "watermark_ms": self.watermark_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        """Rebuild from :meth:`to_dict` output; unknown keys are refused by name."""
        if not isinstance(data, Mapping):
            raise ValidationError("lineage", "a JSON object", repr(data)[:80])
        known = {
            "offsets",
            "events",
            "parents",
            "learners",
            "created_at",
            "metrics",
            "watermark_ms",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                unknown[0], f"one of {sorted(known)}", "an unknown key", "lineage"
            )
        raw_offsets = data.get("offsets") or {}
        if not isinstance(raw_offsets, Mapping):
            raise ValidationError("offsets", "a JSON object", repr(raw_offsets), "lineage")
        offsets: dict[str, dict[int, int]] = {}
        for topic, parts in raw_offsets.items():
            if not isinstance(parts, Mapping):
                raise ValidationError(
                    f"offsets[{topic!r}]", "a JSON object", repr(parts), "lineage"
                )
            try:
                offsets[topic] = {int(p): o for p, o in parts.items()}
            except ValueError as exc:
                raise ValidationError(
                    f"offsets[{topic!r}]", "integer partition numbers", str(exc), "lineage"
                ) from None
        return cls(
            offsets=offsets,
            events=data.get("events", 0),
            parents=tuple(data.get("parents") or ()),
            learners=tuple(data.get("learners") or ()),
            created_at=data.get("created_at"),
            metrics=data.get("metrics") or {},
            watermark_ms=data.get("watermark_ms"),
        )

    @classmethod
    def _from_stored(cls, data: Mapping[str, Any]) -> Lineage:
        """Rebuild from a record the store wrote (validated when committed), skipping checks.

        This is what keeps :meth:`ModelStore.list` fast over many thousand versions.
        """
        self = object.__new__(cls)
        fields = {
            "offsets": {
                t: {int(p): o for p, o in parts.items()}
                for t, parts in (data.get("offsets") or {}).items()
            },
            "events": data.get("events", 0),
            "parents": tuple(data.get("parents") or ()),
            "learners": tuple(data.get("learners") or ()),
            "created_at": data.get("created_at"),
            "metrics": data.get("metrics") or {},
            "watermark_ms": data.get("watermark_ms"),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        return self

    def to_json(self) -> bytes:
        """Compact JSON bytes."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Lineage:
        """Parse :meth:`to_json` output."""
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValidationError("lineage", "JSON", f"undecodable text ({exc})") from None
        return cls.from_dict(parsed)
