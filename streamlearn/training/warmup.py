"""The training job's warm-up (``job.warmup_events``): learner 0 learns the stream's
first events alone, in order, and every other learner starts from the model it made.

Why: P learners that each start a factorization machine from the initial random
factors move them apart, and the merged model learns worse than one learner's (in
the job, on the interactions stream, P=4 at 1.07-1.09 of P=1's log-loss); with a
warm-up of 50,000 events per learner (the default for a factorization machine) and
versions every 50 ms, P=2 and P=4 are within 1% of it (docs/training.md, "The
factorization machine's warm-up"). Linear models merge well without it (default 0).

How the job does it: each encoder subtask sends its first share of the warm-up's events
(whole bundles) to learner 0 (``io.streamlearn.flink.WarmUp``); a learner whose first
bundle comes after the warm-up waits until the merged model reflects the warm-up of that
bundle's subtask, in every partition it read (the bundle names where it ended:
:func:`warmed_ends`, :func:`await_merged`), and starts from that version. It waits for
the warm-up's bundles only, never for another learner's: learner 0 learns those without
waiting, so no two learners can hold each other up. The merger folds
each partition's bundles in offset order whichever learner sent them, so the lineage
stays exact. A model whose newest version reflects the warm-up's events already (a
restart) warms up no more (:func:`remaining`), nor does a job restored from a
checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from streamlearn.errors import StoreError
from streamlearn.training.config import TrainConfig

__all__ = ["WAIT_S", "await_merged", "remaining", "warmed_ends", "with_remaining_warmup"]

log = logging.getLogger(__name__)

#: How long a learner waits for the warm-up's version before it starts from the newest
#: it finds (and says so): the warm-up learns in well under a second when the events are
#: there; a stream that brings them slowly should not hold the other learners forever.
WAIT_S = 60.0


def remaining(cfg: TrainConfig, events: int) -> int:
    """The warm-up's events still to learn when the model's newest version reflects
    ``events`` (0 without one): none at parallelism 1, where one learner learns all.

    >>> fm = {"model": {"factors": 4}, "job": {"parallelism": 4}}
    >>> cfg = TrainConfig.from_dict(fm)
    >>> remaining(cfg, 0), remaining(cfg, 30_000), remaining(cfg, 250_000)
    (200000, 170000, 0)
    >>> remaining(TrainConfig.from_dict({**fm, "job": {"parallelism": 1}}), 0)
    0
    """
    if cfg.job.parallelism < 2:
        return 0
    return max(0, cfg.job.warmup_events - events)


def with_remaining_warmup(cfg: TrainConfig, store: Any | None) -> TrainConfig:
    """``cfg`` with ``job.warmup_events`` set to what :func:`remaining` leaves after the
    newest version in ``store``, or to 0 without one (a job resuming from a checkpoint,
    whose encoder warms nothing up): what the job's encoder and learners are given."""
    from dataclasses import replace

    if store is None:
        left = 0
    else:
        latest = store.head().latest
        left = remaining(cfg, 0 if latest is None else int(store.info(latest).lineage.events))
    return replace(cfg, job=replace(cfg.job, warmup_events=left))


def warmed_ends(text: str) -> dict[int, int]:
    """Where a subtask's warm-up ended, per Kafka partition, from the text a bundle after
    it carries (``io.streamlearn.flink.WarmUp.warmed``).

    >>> warmed_ends("1:500,3:1400"), warmed_ends("")
    ({1: 500, 3: 1400}, {})
    """
    return {int(p): int(end) for p, _, end in (item.partition(":") for item in text.split(",")
                                               if item)}


def _behind(store: Any, topic: str, ends: Mapping[int, int]) -> tuple[int | None, dict]:
    """The newest version, and the partitions of ``ends`` it does not reflect up to
    their end yet (partition -> the next offset it reflects, -1: none)."""
    latest = store.head().latest
    if latest is None:
        return None, dict.fromkeys(ends, -1)
    reached = store.info(latest).lineage.offsets.get(topic, {})
    return latest, {p: reached.get(p, -1) for p, end in ends.items() if reached.get(p, -1) < end}


def await_merged(
    store: Any, topic: str, ends: Mapping[int, int], who: str, timeout_s: float = WAIT_S,
    poll_s: float = 0.02, clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until the store's newest version reflects each partition of ``topic`` in
    ``ends`` up to its offset there (where the warm-up before the bundle ``who`` is about
    to learn first ended); ``False`` when ``timeout_s`` passed first (logged: ``who`` then
    starts from the newest version there is). A store that cannot be read for now is asked
    again until then.

    >>> class Store:  # a version every call, each reflecting 100 more offsets
    ...     def __init__(self): self.v = 0
    ...     def head(self):
    ...         self.v += 1
    ...         return type("Head", (), {"latest": self.v})
    ...     def info(self, v):
    ...         lineage = type("L", (), {"offsets": {"t": {0: 100 * v}}})
    ...         return type("Info", (), {"lineage": lineage})
    >>> store = Store()
    >>> await_merged(store, "t", {0: 250}, "learner-1", sleep=lambda s: None), store.v
    (True, 3)
    >>> await_merged(Store(), "t", {0: 50, 1: 0}, "learner-1", timeout_s=0.0,
    ...              sleep=lambda s: None)
    False
    """
    deadline = clock() + timeout_s
    latest: int | None = None
    behind: dict = dict.fromkeys(ends, -1)
    while True:
        try:
            latest, behind = _behind(store, topic, ends)
        except (OSError, StoreError):
            pass
        if not behind:
            return True
        if clock() >= deadline:
            log.warning(
                "%s: no version reflected the warm-up (partition: end offset %s) within %.0f s "
                "(newest: %s, short in %s); it starts from the newest",
                who, dict(ends), timeout_s, latest, behind,
            )
            return False
        sleep(poll_s)
