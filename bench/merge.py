"""Merge timings, each against a bare numpy/pyarrow reference in the same run,
and the merge quality figures at syncs every 1k, 10k and 100k events.

For a learner of 2^20 hashed slots (AdaGrad: ``weights`` + ``adagrad.g2``)
whose delta touches ~40k slots:

- ``DeltaTracker.take`` against bare ``np.not_equal`` passes over its
  per-slot arrays (the floor of a diff-based take);
- ``ModelDelta.to_bytes`` / ``from_bytes`` against a bare Arrow IPC write /
  read of the same columns;
- ``Merger.add`` against bare ``w[slots] += values`` for each array.

Figures are medians in ms; ratios are ours / bare. Quality: prequential
log-loss of 4 key-partitioned learners vs one sequential learner (the test's
stream); per-event learners and factorization machines at P = 2 and 4
against P = 1 (``quality_per_event``). With ``--strategies``, the merge
strategies side by side instead (``quality_strategies``: ``shared``, ``hybrid``
and ``progress`` at P = 2 and 4, a delta every ``--sync`` events of each
learner, on ``--events`` events; the table of docs/merge.md). With ``--dealt``, the
``progress`` strategy with learners on disjoint keys beside learners dealt the
stream's runs of ``--sync`` events in turn (``job.balance = "bundles"``). With
``--warmup N,M``, the factorization machine at P = 2 and 4 when one learner learns the
stream's first N (M...) events alone and every learner starts from its model. Results
go to ``bench/results/merge.json``.

    .venv/bin/python bench/merge.py [--repeat 21] [--no-quality] [--no-timings]
    .venv/bin/python bench/merge.py --strategies [--events 400000] [--sync 5000]
    .venv/bin/python bench/merge.py --dealt [--events 400000] [--sync 5000]
    .venv/bin/python bench/merge.py --warmup 0,20000,50000 [--events 400000] [--sync 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlearn.features import FeatureBatch  # noqa: E402
from streamlearn.learners import LogisticRegression  # noqa: E402
from streamlearn.merge import DeltaTracker, Merger, ModelDelta  # noqa: E402
from streamlearn.optim import AdaGrad  # noqa: E402

BITS = 20
TOUCHED = 40_000


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _learn(learner: LogisticRegression, rng: np.random.Generator) -> None:
    slots = rng.choice(1 << BITS, TOUCHED, replace=False)  # one event per slot
    batch = FeatureBatch.from_arrays(slots, np.ones(TOUCHED), np.arange(TOUCHED + 1),
                                     learner.n_slots)
    learner.learn_many(batch, rng.random(TOUCHED) < 0.5)


def timings(repeat: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    learner = LogisticRegression(AdaGrad(0.1), bits=BITS)
    tracker = DeltaTracker(learner)
    merger = Merger(learner.state(), n_learners=4)
    out: dict[str, dict[str, float]] = {}

    takes, bare_diffs = [], []
    for _ in range(repeat):
        _learn(learner, rng)
        arrays = learner.state(copy=False).arrays
        ref = {k: v.copy() for k, v in arrays.items()}
        t = time.perf_counter()
        mask = np.zeros(learner.n_slots, bool)
        for k in ("weights", "adagrad.g2"):
            mask |= np.not_equal(arrays[k], ref[k])
        np.flatnonzero(mask)
        bare_diffs.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        delta = tracker.take()
        takes.append((time.perf_counter() - t) * 1e3)
    out["take"] = {"ours_ms": statistics.median(takes), "bare_ms": statistics.median(bare_diffs)}

    blob = delta.to_bytes()
    columns = [pa.array(delta.slots.astype(np.uint32))] + [pa.array(v) for v in
                                                           delta.sparse.values()]
    names = ["slot", *delta.sparse]

    def bare_write() -> bytes:
        batch = pa.RecordBatch.from_arrays(columns, names=names)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes()

    bare_blob = bare_write()

    def bare_read() -> None:
        batch = pa.ipc.open_stream(pa.py_buffer(bare_blob)).read_next_batch()
        [c.to_numpy() for c in batch.columns]

    out["to_bytes"] = {"ours_ms": median_ms(delta.to_bytes, repeat),
                       "bare_ms": median_ms(bare_write, repeat)}
    out["from_bytes"] = {"ours_ms": median_ms(lambda: ModelDelta.from_bytes(blob), repeat),
                         "bare_ms": median_ms(bare_read, repeat)}
    target = {k: np.zeros(learner.n_slots) for k in delta.sparse}

    def bare_add() -> None:
        for k, v in delta.sparse.items():
            target[k][delta.slots] += v

    out["add"] = {"ours_ms": median_ms(lambda: merger.add(delta), repeat),
                  "bare_ms": median_ms(bare_add, repeat)}
    for row in out.values():
        row["ratio"] = row["ours_ms"] / row["bare_ms"]
    out["delta"] = {"slots": float(delta.nnz), "bytes": float(len(blob))}
    return out


def quality() -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "tests"))
    from merge_stream import BITS as Q_BITS
    from merge_stream import DENSE, make_stream, parallel, sequential

    from streamlearn.optim import SGD

    def make() -> LogisticRegression:
        return LogisticRegression(SGD(0.05), bits=Q_BITS, dense=DENSE)

    stream = make_stream()
    seq = sequential(make, stream, 50)
    result = {"sequential": seq}
    for sync in (1_000, 10_000, 100_000):
        par, _ = parallel(make, stream, 50, sync_every=sync)
        result[f"parallel_sync_{sync}"] = par
        result[f"ratio_sync_{sync}"] = par / seq
    return result


def quality_per_event() -> dict[str, dict[str, float]]:
    """Per-event learners (the compiled kernel) and factorization machines at
    P = 2 and 4, synced every 1,000 events each: log-loss ratio to P = 1."""
    sys.path.insert(0, str(ROOT / "tests"))
    from merge_stream import BITS as Q_BITS
    from merge_stream import DENSE, interactions_stream, make_stream, parallel, sequential

    from streamlearn.learners import FMClassifier
    from streamlearn.optim import FTRL, Normalized

    def fm() -> FMClassifier:
        return FMClassifier(Normalized(0.5, invariant=False), k=4, bits=Q_BITS, dense=DENSE,
                            intercept_lr=None, factor_optimizer=AdaGrad(0.2), init_std=0.1)

    configs = {
        "event-AdaGrad": (lambda: LogisticRegression(AdaGrad(0.1), bits=Q_BITS, dense=DENSE,
                                                     update="event"), "clicks", "hybrid", None),
        "event-Normalized": (lambda: LogisticRegression(
            Normalized(0.5), bits=Q_BITS, dense=DENSE, update="event", intercept_lr=None),
            "clicks", "hybrid", None),
        "event-FTRL/ftrl": (lambda: LogisticRegression(
            FTRL(alpha=0.1), bits=Q_BITS, dense=DENSE, update="event", intercept_lr=None),
            "clicks", "ftrl", None),
        "interactions event-Normalized": (lambda: LogisticRegression(
            Normalized(0.5), bits=Q_BITS, dense=DENSE, update="event", intercept_lr=None),
            "interactions", "hybrid", None),
        "interactions FM, factors summed": (fm, "interactions", "hybrid", None),
        "interactions FM, factors averaged": (
            fm, "interactions", "hybrid", {"factors": "average", "factors.adagrad.g2": "average"}),
    }
    streams = {"clicks": make_stream(), "interactions": interactions_stream()}
    out: dict[str, dict[str, float]] = {}
    for name, (make, stream_name, strategy, rules) in configs.items():
        stream = streams[stream_name]
        seq = sequential(make, stream, 50)
        row = {"sequential": seq}
        for p in (2, 4):
            par, _ = parallel(make, stream, 50, n_learners=p, sync_every=1_000,
                              strategy=strategy, rules=rules)
            row[f"ratio_p{p}"] = par / seq
        out[name] = row
        print(f"{name:36s} P=1 {seq:.5f}   P=2 {row['ratio_p2']:.4f}x   "
              f"P=4 {row['ratio_p4']:.4f}x")
    return out


STRATEGIES = ("shared", "hybrid", "progress")


def _versus_one(
    n: int, sync: int, columns: dict[str, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """For each learner and stream of the strategy tables (``n`` events), the log-loss of
    ``parallel`` at P = 2 and 4 over one learner's, a column per entry of ``columns`` (its
    ``parallel`` settings; a delta every ``sync`` events of each learner): ``p{P}_{column}``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from merge_stream import parallel, sequential

    out: dict[str, dict[str, float]] = {}
    print(f"{'stream / learner':46s}" + "".join(
        f" P={p} {column:9s}" for p in (2, 4) for column in columns))
    for name, (make, stream) in _quality_configs(n).items():
        seq = sequential(make, stream, 50)
        row = {"sequential": seq}
        for p in (2, 4):
            for column, settings in columns.items():
                par, _ = parallel(make, stream, 50, n_learners=p, sync_every=sync, **settings)
                row[f"p{p}_{column}"] = par / seq
        out[name] = row
        print(f"{name:46s}" + "".join(f" {row[f'p{p}_{column}']:15.4f}"
                                      for p in (2, 4) for column in columns), flush=True)
    return out


def quality_strategies(n: int, sync: int) -> dict[str, dict[str, float]]:
    """Each merge strategy at P = 2 and 4 (per-event learners on disjoint keys, a delta
    every ``sync`` events of each and a rebase right after, ``n`` events): log-loss over
    one learner's."""
    return _versus_one(n, sync, {strategy: {"strategy": strategy} for strategy in STRATEGIES})


def quality_dealt(n: int, sync: int) -> dict[str, dict[str, float]]:
    """The ``progress`` merge at P = 2 and 4 with learners on disjoint keys and with
    learners dealt runs of ``sync`` events in turn (``job.balance = "bundles"``), ``n``
    events: log-loss over one learner's. The clicks-like stream has a feature per key
    (its user), so dealing takes that key's slot from one learner to all."""
    return _versus_one(n, sync, {
        "keys": {"strategy": "progress"}, "dealt": {"strategy": "progress", "dealt": True},
    })


def quality_warmup(n: int, sync: int, warmups: list[int]) -> dict[str, dict[str, float]]:
    """The factorization machine (k=4, interactions, ``progress``) at P = 2 and 4 after a
    sequential warm-up of each of ``warmups`` events: log-loss over one learner's."""
    sys.path.insert(0, str(ROOT / "tests"))
    from merge_stream import parallel, sequential

    make, stream = _quality_configs(n)["interactions, FM k=4"]
    seq = sequential(make, stream, 50)
    out: dict[str, dict[str, float]] = {}
    for warm in warmups:
        row = {"sequential": seq}
        for p in (2, 4):
            par, _ = parallel(make, stream, 50, n_learners=p, sync_every=sync,
                              strategy="progress", warmup=warm)
            row[f"p{p}"] = par / seq
        out[str(warm)] = row
        print(f"FM k=4, a warm-up of {warm:>7,} events: P=2 {row['p2']:.4f}  "
              f"P=4 {row['p4']:.4f}", flush=True)
    return out


def _quality_configs(n: int) -> dict[str, tuple[Callable[[], Any], Any]]:
    """The learners and streams of the strategy tables, on ``n`` events."""
    sys.path.insert(0, str(ROOT / "tests"))
    from merge_stream import BITS as Q_BITS
    from merge_stream import DENSE, interactions_stream, make_stream

    from streamlearn.learners import FMClassifier
    from streamlearn.optim import FTRL, Normalized

    def normalized() -> LogisticRegression:
        return LogisticRegression(Normalized(0.5), bits=Q_BITS, dense=DENSE, update="event",
                                  intercept_lr=None)

    def fm() -> FMClassifier:
        return FMClassifier(Normalized(0.5, invariant=False), k=4, bits=Q_BITS, dense=DENSE,
                            intercept_lr=None, factor_optimizer=AdaGrad(0.2), init_std=0.1)

    def adagrad() -> LogisticRegression:
        return LogisticRegression(AdaGrad(0.1), bits=Q_BITS, dense=DENSE, update="event")

    def ftrl() -> LogisticRegression:
        return LogisticRegression(FTRL(alpha=0.1), bits=Q_BITS, dense=DENSE, update="event",
                                  intercept_lr=None)

    plain, crossed, clicks = (interactions_stream(n), interactions_stream(n, crossed=True),
                              make_stream(n))
    return {
        "interactions, linear (normalised)": (normalized, plain),
        "interactions, the four crosses": (normalized, crossed),
        "interactions, FM k=4": (fm, plain),
        "clicks-like (a user feature per key), AdaGrad": (adagrad, clicks),
        "clicks-like, FTRL": (ftrl, clicks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--no-timings", action="store_true")
    parser.add_argument("--strategies", action="store_true",
                        help="only the merge strategies side by side (docs/merge.md's table)")
    parser.add_argument("--dealt", action="store_true",
                        help="only the progress merge with learners on disjoint keys beside "
                             "learners dealt runs of events in turn (job.balance = \"bundles\")")
    parser.add_argument("--warmup", metavar="N,M",
                        help="only the factorization machine after sequential warm-ups of N "
                             "(M...) events")
    parser.add_argument("--events", type=int, default=400_000,
                        help="with --strategies, --dealt or --warmup")
    parser.add_argument("--sync", type=int, default=5_000,
                        help="with --strategies, --dealt or --warmup: a learner's events "
                             "between its deltas")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON written (default: bench/results/merge.json, or "
                             "merge_strategies.json, merge_dealt.json, merge_warmup.json)")
    args = parser.parse_args()
    results = ROOT / "bench" / "results"
    out = args.out or results / ("merge_strategies.json" if args.strategies else
                                 "merge_dealt.json" if args.dealt else
                                 "merge_warmup.json" if args.warmup else "merge.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.warmup:
        try:
            warmups = [int(v) for v in args.warmup.split(",")]
        except ValueError:
            parser.error(f"--warmup: comma-separated event counts, got {args.warmup!r}")
        if any(w < 0 or w >= args.events for w in warmups):
            parser.error(f"--warmup: each count in 0..{args.events - 1} (--events)")
    if args.warmup or args.dealt or args.strategies:
        table = (quality_warmup(args.events, args.sync, warmups) if args.warmup else
                 quality_dealt(args.events, args.sync) if args.dealt else
                 quality_strategies(args.events, args.sync))
        out.write_text(json.dumps(
            {"events": args.events, "sync": args.sync, "log_loss_over_p1": table}, indent=2))
        return
    report: dict[str, object] = {"timings": {} if args.no_timings else timings(args.repeat)}
    for name, row in report["timings"].items():  # type: ignore[union-attr]
        if "ratio" in row:
            print(f"{name:10s} ours {row['ours_ms']:7.3f} ms   bare {row['bare_ms']:7.3f} ms   "
                  f"ratio {row['ratio']:.2f}")
        else:
            print(f"{name:10s} {int(row['slots'])} slots, {int(row['bytes'])} bytes")
    if not args.no_quality:
        q = quality()
        report["quality"] = q
        for sync in (1_000, 10_000, 100_000):
            print(f"log-loss sync={sync:>6}: parallel {q[f'parallel_sync_{sync}']:.4f} vs "
                  f"sequential {q['sequential']:.4f} (ratio {q[f'ratio_sync_{sync}']:.4f})")
        report["quality_per_event"] = quality_per_event()
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
