"""Delayed labels: what joining feedback to what was served means, written once.

An **impression** is an event served without its label (``{"id", "ts", "features", ...}``:
the prediction log's records, or events users publish with an ``id`` and no label). A
**label** arrives later: ``{"id", "label", "ts"}``. They are joined by ``id`` in event
time (``ts``, milliseconds), within a **window** of ``window_ms`` after the impression:

- the first label of an id (the smallest ``ts``; among equal ``ts`` the first given) with
  ``impression ts <= ts <= impression ts + window_ms`` is the impression's label:
  **joined**; with ``keep="last"``, the last one (the largest ``ts``; among equal ``ts``
  the last given), learned when the window closes;
- an impression whose window closes without one gets ``default`` (for clicks: 0):
  **expired**, or, with ``default=None``, is not learned: **dropped**;
- every other label is not learned, and each has its reason (the dead-letter topic's):
  **duplicate** (another label of the impression's window than the one kept), **late**
  (after its impression's window, by at most ``remember_ms`` when that is given),
  **unmatched** (no impression of that id at or before the label; or later than
  ``remember_ms`` after the window);
- a second impression of an id is not learned either: **impression_duplicate** (the first
  one is the id's).

An impression's time is its ``ts``, or else the prediction log's ``at_ms``. Each impression
is learned at most once, with exactly one label. :func:`join` is the reference reading of
these rules over whole streams: the training job's join (``io.streamlearn.flink.JoinLogic``,
in event time) reproduces it on every case of :mod:`streamlearn.joining_corpus`, as the
encoders reproduce ``streamlearn.contract.reference``. The job's watermarks and state are
described in ``docs/joining.md``.

>>> impressions = [{"id": "a", "ts": 0}, {"id": "b", "ts": 10}, {"id": "c", "ts": 20}]
>>> labels = [{"id": "a", "label": 1, "ts": 5}, {"id": "a", "label": 0, "ts": 6},
...           {"id": "b", "label": 1, "ts": 500}, {"id": "z", "label": 1, "ts": 7}]
>>> out = join(impressions, labels, window_ms=100, default=0)
>>> [(e["id"], e["label"], how) for e, how in out.learned]
[('a', 1, 'joined'), ('b', 0, 'expired'), ('c', 0, 'expired')]
>>> [(r["id"], why) for r, why in out.rejected]
[('a', 'duplicate'), ('z', 'unmatched'), ('b', 'late')]
>>> out.counts()
{'joined': 1, 'expired': 2, 'dropped': 0, 'duplicate': 1, 'late': 1, 'unmatched': 1, \
'impression_duplicate': 0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamlearn.errors import ConfigError

__all__ = [
    "HEADER", "IMPRESSION_OUTCOMES", "KEEPS", "LABEL_OUTCOMES", "OUTCOMES", "Joined",
    "METRIC_PREFIX", "delay_report", "event_time", "join", "lineage_counts", "lineage_metrics",
]

#: What becomes of an impression, and why a record is not learned (the dead-letter code of
#: the training job's join is ``join.<reason>``).
IMPRESSION_OUTCOMES = ("joined", "expired", "dropped")
LABEL_OUTCOMES = ("duplicate", "late", "unmatched", "impression_duplicate")
#: Every outcome the training job's join counts: those above, and ``bad`` (a record it could
#: not key or time: not JSON, no ``id``, no ``ts``, no ``label``).
OUTCOMES = (*IMPRESSION_OUTCOMES, *LABEL_OUTCOMES, "bad")
#: The Kafka header naming the outcome of each record the training job's join writes to the
#: training topic: a joined event (``joined``, ``expired``), or an empty *tally* record for
#: an outcome that is not learned. The learners count them into each version's lineage, as
#: metrics ``join.<outcome>`` (:func:`lineage_counts`).
HEADER = "streamlearn.join"
#: What the names of those lineage metrics begin with.
METRIC_PREFIX = "join."
#: Which label of an impression's window is its label (``join.keep``).
KEEPS = ("first", "last")


@dataclass
class Joined:
    """The outcome of :func:`join`: the events to learn (each an impression with its
    ``label``, and how it got it), the labels not learned with their reason, and the
    label record each joined impression got, by id."""

    learned: list[tuple[dict, str]] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    rejected: list[tuple[dict, str]] = field(default_factory=list)
    labels: dict[Any, Mapping[str, Any]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Every outcome and how many times it happened."""
        out = dict.fromkeys((*IMPRESSION_OUTCOMES, *LABEL_OUTCOMES), 0)
        for _, how in self.learned:
            out[how] += 1
        out["dropped"] = len(self.dropped)
        for _, why in self.rejected:
            out[why] += 1
        return out


def lineage_metrics(counts: Mapping[str, int]) -> dict[str, float]:
    """Every outcome's count as the lineage metrics of a version (``join.<outcome>``),
    which :func:`lineage_counts` reads back.

    >>> lineage_counts(lineage_metrics({"joined": 3}))["joined"]
    3
    """
    return {METRIC_PREFIX + name: float(counts.get(name, 0)) for name in OUTCOMES}


def lineage_counts(metrics: Mapping[str, float]) -> dict[str, int]:
    """The join's outcomes a version reflects, from its lineage's ``metrics``.

    >>> lineage_counts({"log_loss": 0.4, "join.joined": 3.0, "join.late": 1.0})
    {'joined': 3, 'expired': 0, 'dropped': 0, 'duplicate': 0, 'late': 1, 'unmatched': 0, \
'impression_duplicate': 0, 'bad': 0}
    """
    return {name: int(metrics.get(METRIC_PREFIX + name, 0)) for name in OUTCOMES}


def _check(window_ms: Any, name: str = "window_ms") -> None:
    if type(window_ms) is not int or window_ms < 0:
        raise ConfigError(name, "an integer number of milliseconds >= 0", repr(window_ms))


def event_time(record: Mapping[str, Any]) -> Any:
    """A record's time: its ``ts``, or else the prediction log's ``at_ms``."""
    return record["ts"] if "ts" in record else record["at_ms"]


def join(
    impressions: Iterable[Mapping[str, Any]], labels: Iterable[Mapping[str, Any]], *,
    window_ms: int, default: Any = 0, remember_ms: int | None = None, keep: str = "first",
) -> Joined:
    """Join ``labels`` to ``impressions`` by the rules above (whole streams, any order).

    ``learned`` keeps the impressions' order; ``rejected`` the second impressions of an id
    first, then the labels (stable by ``ts``). ``remember_ms=None``: ids are remembered
    for ever (a label any time after the window is late). ``keep``: which label of the
    window is the impression's, ``"first"`` or ``"last"``.

    >>> labels = [{"id": "a", "label": 1, "ts": 5}, {"id": "a", "label": 0, "ts": 9}]
    >>> out = join([{"id": "a", "ts": 0}], labels, window_ms=10, keep="last")
    >>> out.learned, out.rejected
    ([({'id': 'a', 'ts': 0, 'label': 0}, 'joined')], [({'id': 'a', 'label': 1, 'ts': 5}, \
'duplicate')])
    """
    _check(window_ms)
    if keep not in KEEPS:
        raise ConfigError("keep", f"one of {', '.join(KEEPS)}", repr(keep))
    if remember_ms is not None:
        _check(remember_ms, "remember_ms")
    first: dict[Any, Mapping[str, Any]] = {}
    out = Joined()
    for imp in impressions:
        if imp["id"] in first:
            out.rejected.append((dict(imp), "impression_duplicate"))
        first.setdefault(imp["id"], imp)
    by_id: dict[Any, Mapping[str, Any]] = {}
    forgotten = float("inf") if remember_ms is None else window_ms + remember_ms
    for lab in sorted(labels, key=lambda r: r["ts"]):
        served = first.get(lab["id"])
        if served is None or not 0 <= lab["ts"] - event_time(served) <= forgotten:
            out.rejected.append((dict(lab), "unmatched"))
        elif lab["ts"] > event_time(served) + window_ms:
            out.rejected.append((dict(lab), "late"))
        elif lab["id"] not in by_id:
            by_id[lab["id"]] = lab
        elif keep == "first":
            out.rejected.append((dict(lab), "duplicate"))
        else:  # the later label replaces the one kept so far
            out.rejected.append((dict(by_id[lab["id"]]), "duplicate"))
            by_id[lab["id"]] = lab
    out.labels = by_id
    for imp in first.values():
        got = by_id.get(imp["id"])
        if got is not None:
            out.learned.append(({**imp, "label": got["label"]}, "joined"))
        elif default is None:
            out.dropped.append(dict(imp))
        else:
            out.learned.append(({**imp, "label": default}, "expired"))
    return out


def _quantile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    at = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[at]


def delay_report(
    predictions: Iterable[Mapping[str, Any]], labels: Iterable[Mapping[str, Any]], *,
    window_ms: int, default: Any = 0, positive: Any = 1, keep: str = "first",
) -> dict[str, Any]:
    """Delay-aware quality of what was *served*: each logged prediction (the prediction
    log's records: ``id``, ``ts`` or else ``at_ms``, ``version``, ``probabilities``) scored
    against the label :func:`join` gives it (``keep`` as the job's ``join.keep``), per
    model version; the delays of the labels that joined (the label each impression got);
    the share of positive labels that came after their window (each id's first).

    Log-loss is of the served probability of the label's class (classes ``[negative,
    positive]``, as the server orders a binary model's), clipped at 1e-15; predictions
    that got no label (``default=None``) are not scored.

    >>> preds = [{"id": "a", "ts": 0, "version": 1, "probabilities": [0.2, 0.8]},
    ...          {"id": "b", "ts": 0, "version": 2, "probabilities": [0.9, 0.1]}]
    >>> report = delay_report(preds, [{"id": "a", "label": 1, "ts": 40}], window_ms=100)
    >>> {v: round(m["log_loss"], 4) for v, m in report["by_version"].items()}
    {1: 0.2231, 2: 0.1054}
    >>> report["delay_ms"], report["positives_after_window"]
    ({'p50': 40, 'p99': 40, 'joined': 1}, 0.0)
    """
    _check(window_ms)
    served = [{**p, "ts": p.get("ts", p.get("at_ms"))} for p in predictions]
    labels = list(labels)
    out = join(served, labels, window_ms=window_ms, default=default, keep=keep)
    when: dict[Any, Any] = {}
    for p in served:  # an id's first impression is the one joined
        when.setdefault(p["id"], p["ts"])
    by_version: dict[Any, dict[str, float]] = {}
    for event, _how in out.learned:
        proba = event["probabilities"][1 if event["label"] == positive else 0]
        loss = -math.log(min(max(float(proba), 1e-15), 1.0))
        m = by_version.setdefault(event["version"], {"events": 0, "log_loss": 0.0})
        m["events"] += 1
        m["log_loss"] += loss
    for m in by_version.values():
        m["log_loss"] /= m["events"]
    delays = sorted(lab["ts"] - when[i] for i, lab in out.labels.items())
    first_label: dict[Any, Mapping[str, Any]] = {}
    for lab in sorted(labels, key=lambda r: r["ts"]):
        first_label.setdefault(lab["id"], lab)
    positives = [lab for lab in first_label.values()
                 if lab["label"] == positive and lab["id"] in when]
    after = sum(lab["ts"] > when[lab["id"]] + window_ms for lab in positives)
    return {
        "by_version": dict(sorted(by_version.items())),
        "delay_ms": {"p50": _quantile(delays, 0.5), "p99": _quantile(delays, 0.99),
                     "joined": len(delays)},
        "positives_after_window": after / len(positives) if positives else None,
        "counts": out.counts(),
    }
