"""Hot keys: training throughput, per-learner load and learning quality with a
uniform key stream against a Zipf-distributed one, in one run.

Both topics hold the same clicks events (features, labels, ids: one seed);
only their keys differ (:func:`streamlearn.generators.uniform_keys` and
:func:`~streamlearn.generators.zipf_keys`, s = 1.1 over 1M keys by default,
where the hottest key is 12.4% of all events). Keys pick partitions by
murmur2 as any Kafka client does, and each Kafka source subtask's learner
learns the partitions it reads, so the Zipf stream loads the learners
unevenly; ``zipf-spread`` is published with the SDK's ``spread_hot_keys``, and
``zipf-bundles`` is the Zipf topic learned with ``job.balance = "bundles"``
(each partition's bundles shared by the learners in bytes). For each stream the training job
(``flink_jobs/train.py``, bounded, envelopes of ``--envelope-size`` events)
runs at ``--parallelism`` and the bench reports:

- ``events_per_s_steady``: events reflected between the first and the last
  committed version over the time between them (the job's own clock, free of
  start-up; the last version waits for the slowest learner), beside the
  gross and marginal rates of ``bench/e2e.py`` (one tiny run subtracted);
- per learner: the events it learned (the final version's lineage,
  ``learned.<learner>``), the partitions it learns from (its source subtask's,
  to which it is chained: Flink's Kafka source deals partitions round-robin
  from a start the topic name picks; all of them for ``zipf-bundles``) and,
  from the published versions' lineage (offsets per partition, commit times),
  when they were all learned and what share of them it had learned when the
  first learner was done.
  ``max_over_mean_events`` is the load imbalance; the busiest learner sets the
  pace when every learner has a core of its own (``mean_over_max_events`` in
  ``vs_uniform``: the rate that leaves). Busy time is not read: the job's
  Python gauges, read by Flink's metrics from another thread, crash the JVM
  in thread mode (seen twice with the REST API polled at 250 ms);
- quality: the final version's prequential log-loss (its lineage metrics,
  every learner's weighted by its events) and its log-loss on ``--holdout``
  events of the same stream that were not published.

``zipf_vs_uniform`` holds the ratios the goal is stated in (Zipf ≥ 80% of
uniform's events/s, log-loss within 1%). A broker is started on a free port
(``--bootstrap`` uses a running one). Results go to ``bench/results/skew.json``.

    .venv/bin/python bench/skew.py                              # 2M events, P=4, 4 partitions
    .venv/bin/python bench/skew.py --events 500000 --partitions 4,16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import e2e  # noqa: E402
from e2e import _rates, _write, run_train  # noqa: E402
from prefill import prefill  # noqa: E402

from connectors.ports import free_port  # noqa: E402
from streamlearn.generators import clicks, uniform_keys, zipf_keys, zipf_share  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SEED = 7

def _kafka_owner(topic: str, partition: int, readers: int) -> int:
    """The source subtask Flink's Kafka source gives ``partition`` to
    (``KafkaSourceEnumerator.getSplitOwner``: a round-robin from a start the topic
    name's Java hash picks)."""
    h = 0
    raw = topic.encode("utf-16-be")
    for unit in struct.unpack(f">{len(raw) // 2}H", raw):  # Java's String.hashCode
        h = (31 * h + unit) & 0xFFFFFFFF
    start = ((h * 31) & 0x7FFFFFFF) % readers
    return (start + partition) % readers


def _holdout_log_loss(models: Path, holdout: list[dict]) -> float:
    """The log-loss of the final version on ``holdout`` (events it never saw)."""
    import numpy as np

    from streamlearn.learners import learner_from_state
    from streamlearn.state import ModelState
    from streamlearn.store import ModelStore

    learner = learner_from_state(ModelState.from_arrow(ModelStore(str(models), "e2e").get().table))
    p = learner.predict_proba_many(learner.encode([e["features"] for e in holdout]))[:, 1]
    p = np.clip(p, 1e-15, 1 - 1e-15)
    y = np.array([e["label"] for e in holdout], dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _learners(models: Path, topic: str, per_partition: list[int], p: int,
              dealt: bool = False) -> dict:
    """Per learner: the events it learned (the final version's ``learned.<learner>``
    lineage metrics), the partitions it reads (the source subtask's; every partition when
    bundles are ``dealt`` in turn, ``job.balance = "bundles"``), and from the committed
    versions' lineage (offsets per partition, commit times) when they were all learned and
    how far along it was when the first learner was done."""
    from streamlearn.store import ModelStore

    listed = [v.lineage for v in ModelStore(str(models), "e2e").list() if v.kind != "compact"]
    learned = listed[-1].metrics
    t0 = listed[0].created_at
    offsets = [{int(q): int(o) for q, o in lin.offsets.get(topic, {}).items()} for lin in listed]
    final = offsets[-1]
    done_at: dict[int, float] = {}  # partition -> when a version first held all of it
    for lin, held in zip(listed, offsets, strict=True):
        for q, offset in held.items():
            if offset >= final[q] and q not in done_at:
                done_at[q] = lin.created_at - t0
    rows, done = [], []
    for i in range(p):
        parts = [q for q in range(len(per_partition))
                 if dealt or _kafka_owner(topic, q, p) == i]
        done.append(max(done_at.get(q, 0.0) for q in parts))
        rows.append({"learner": i, "partitions": parts,
                     "events": int(learned.get(f"learned.learner-{i}", 0)),
                     "events_in_partitions": sum(per_partition[q] for q in parts),
                     "done_s": round(done[-1], 2)})
    at_first = next(held for lin, held in zip(listed, offsets, strict=True)
                    if lin.created_at - t0 >= min(done))
    for r in rows:  # the share of its events it had learned when the first one was done
        learned = sum(min(at_first.get(q, 0), final[q]) for q in r["partitions"])
        r["share_learned_when_first_done"] = round(
            learned / max(1, sum(final[q] for q in r["partitions"])), 3)
    events = [r["events"] for r in rows]
    dones = [r["done_s"] for r in rows]
    return {
        "learners": rows,
        "max_over_mean_events": round(max(events) / (sum(events) / p), 3),
        "done_spread_s": round(max(dones) - min(dones), 2),
        "done_last_s": max(dones),
    }


def measure(bootstrap: str, name: str, topic: str, events: int, per_partition: list[int],
            p: int, mode: str, tiny: dict, holdout: list[dict], work: Path,
            settings: dict) -> dict:
    """Train on ``topic`` (its events per partition ``per_partition``) with the job's
    ``settings``; the row."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    run = run_train(bootstrap, topic, p, mode, run_dir, settings)
    if run["events"] != events:
        raise RuntimeError(f"the last version reflects {run['events']} events, "
                           f"{events} were published to {topic}")
    row = {"keys": name, "topic": topic, "partitions": len(per_partition),
           "partition_events": per_partition, **_rates(run, tiny, events)}
    row.pop("timeline", None)
    models = next(run_dir.glob("train-*/models"))
    row.update(_learners(models, topic, per_partition, p,
                         dealt=settings.get("job.balance") == "bundles"))
    from streamlearn.store import ModelStore

    row["log_loss_prequential"] = ModelStore(str(models), "e2e").info().lineage.metrics["LogLoss"]
    row["log_loss_holdout"] = _holdout_log_loss(models, holdout)
    _print(row)
    return row


def _print(row: dict) -> None:
    print(f"{row['keys']:>11} {row['partitions']:>2} partitions: steady "
          f"{row['events_per_s_steady'] or 0:>9,} ev/s (marginal {row['events_per_s'] or 0:,}, "
          f"gross {row['events_per_s_gross']:,}; tiny run {row['tiny_net_runtime_s']:.1f} s; "
          f"{row['versions']} versions); log-loss prequential "
          f"{row['log_loss_prequential']:.5f}, holdout {row['log_loss_holdout']:.5f}; "
          f"events max/mean over learners {row['max_over_mean_events']}, all done "
          f"{row['done_last_s']} s after the first version", flush=True)
    for r in row["learners"]:
        print(f"    learner {r['learner']}: partitions {r['partitions']}, {r['events']:>9,} "
              f"events, all learned at {r['done_s']} s; {r['share_learned_when_first_done']:.0%}"
              " of them when the first learner was done", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--partitions", default="4",
                        help="comma-separated partition counts of the topics (each one a set "
                             "of runs)")
    parser.add_argument("--streams", default="uniform,zipf,zipf-spread,zipf-bundles",
                        help="among uniform, zipf, zipf-spread (Zipf keys published with "
                             "Publisher(spread_hot_keys=--spread)) and zipf-bundles (zipf's "
                             "topic, learned with job.balance = \"bundles\"); uniform first")
    parser.add_argument("--spread", type=float, default=0.01,
                        help="zipf-spread's share of events above which a key is hot")
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--keys", type=int, default=1_000_000, help="the key space")
    parser.add_argument("--envelope-size", type=int, default=500)
    parser.add_argument("--holdout", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of every stream, interleaved (rates: the best round's; "
                             "log-losses: the mean)")
    parser.add_argument("--mode", default="thread", help="the job's execution mode")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train job setting for every run, e.g. job.flush_ms=1000")
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--out", default=str(RESULTS / "skew.json"))
    args = parser.parse_args(argv)

    n, h = args.events, args.holdout
    known = {
        "uniform": (lambda: uniform_keys(seed=SEED + 1, n_keys=args.keys), {}),
        "zipf": (lambda: zipf_keys(seed=SEED + 1, s=args.zipf_s, n_keys=args.keys), {}),
        "zipf-spread": (lambda: zipf_keys(seed=SEED + 1, s=args.zipf_s, n_keys=args.keys),
                        {"spread_hot_keys": args.spread}),
    }
    #: streams that read another's topic with settings of their own
    reads = {"zipf-bundles": ("zipf", {"job.balance": "bundles"})}
    names = args.streams.split(",")
    if names[0] != "uniform" or not set(names) <= set(known) | set(reads):
        parser.error(f"--streams: uniform first, then among {', '.join([*known, *reads])}; "
                     f"got {names}")
    topic_of = {name: reads.get(name, (name, {}))[0] for name in names}
    report: dict = {
        "events": n, "parallelism": args.parallelism, "envelope_size": args.envelope_size,
        "mode": args.mode, "zipf_s": args.zipf_s, "keys": args.keys, "holdout": h,
        "spread_hot_keys": args.spread, "cpus": os.cpu_count(),
        "hottest_key_share": round(zipf_share(1, args.zipf_s, args.keys), 4),
        "top10_keys_share": round(sum(zipf_share(r, args.zipf_s, args.keys)
                                      for r in range(1, 11)), 4),
        "rows": [], "vs_uniform": [],
    }
    # the first h events are the holdout (the same for every stream: keys change nothing
    # else); the topics get the n after them
    holdout = list(clicks(h, seed=SEED))
    work = Path(tempfile.mkdtemp(prefix="skew-"))
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from connectors.kafka_broker import LocalBroker

        broker = LocalBroker(port=free_port(), directory=work / "kafka", heap="1g")
        broker.start()
        bootstrap = broker.bootstrap
    settings = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    try:
        tiny_topic = f"skew-tiny-{args.envelope_size}"
        prefill(bootstrap, e2e.TINY, None, tiny_topic, envelope_size=args.envelope_size)
        for partitions in (int(v) for v in args.partitions.split(",")):
            topics, placed = {}, {}
            for name in dict.fromkeys(topic_of.values()):  # each topic once
                keys, options = known[name]
                topic = topics[name] = f"skew-{name}-{n}-{partitions}p"
                stream = islice(clicks(n + h, seed=SEED, keys=keys()), h, None)
                done = prefill(bootstrap, n, None, topic, envelope_size=args.envelope_size,
                               partitions=partitions, stream=stream, publisher_options=options)
                placed[name] = done.partition_events
                print(f"pre-filled {topic}: {n:,} events in {done.seconds:.1f} s "
                      f"({done.envelope_messages} envelopes; per partition "
                      f"{done.partition_events})", flush=True)
            runs: dict[str, list[dict]] = {name: [] for name in names}
            for rnd in range(args.rounds):  # interleaved: a burst of load hits every stream
                for name in names:
                    tiny = run_train(bootstrap, tiny_topic, args.parallelism, args.mode,
                                     Path(tempfile.mkdtemp(prefix="tiny-", dir=work)), settings)
                    row = measure(bootstrap, name, topics[topic_of[name]], n,
                                  placed[topic_of[name]], args.parallelism, args.mode, tiny,
                                  holdout, work, {**settings, **reads.get(name, ("", {}))[1]})
                    row["round"] = rnd
                    runs[name].append(row)
                    report["rows"].append(row)
                    _write(args.out, report)
                for name in names[1:]:
                    report["vs_uniform"].append(_compare(name, partitions, f"round {rnd}",
                                                         runs["uniform"][-1:], runs[name][-1:]))
            if args.rounds > 1:
                for name in names[1:]:
                    report["vs_uniform"].append(_compare(name, partitions, "all rounds",
                                                         runs["uniform"], runs[name]))
            _write(args.out, report)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _compare(name: str, partitions: int, over: str, uniform: list[dict],
             other: list[dict]) -> dict:
    """``other``'s figures over ``uniform``'s: the best rates of the rounds, the mean
    log-losses (beside uniform's own spread over its rounds)."""
    def best(rows: list[dict], key: str) -> float | None:
        return max((r[key] for r in rows if r[key]), default=None)

    def mean(rows: list[dict], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    ratio = {
        "stream": name, "partitions": partitions, "over": over,
        "steady": _ratio(best(other, "events_per_s_steady"),
                         best(uniform, "events_per_s_steady")),
        "marginal": _ratio(best(other, "events_per_s"), best(uniform, "events_per_s")),
        "gross": _ratio(best(other, "events_per_s_gross"), best(uniform, "events_per_s_gross")),
        "log_loss_prequential": _ratio(mean(other, "log_loss_prequential"),
                                       mean(uniform, "log_loss_prequential"), 4),
        "log_loss_holdout": _ratio(mean(other, "log_loss_holdout"),
                                   mean(uniform, "log_loss_holdout"), 4),
        # what a learner per core would give: the busiest learner sets the pace
        "mean_over_max_events": _ratio(uniform[0]["max_over_mean_events"],
                                       other[0]["max_over_mean_events"]),
    }
    if len(uniform) > 1:
        losses = [r["log_loss_prequential"] for r in uniform]
        ratio["uniform_log_loss_max_over_min"] = round(max(losses) / min(losses), 4)
    print(f"{name}/uniform at {partitions} partitions, {over}: events/s steady "
          f"{ratio['steady']}, marginal {ratio['marginal']}, gross {ratio['gross']}; log-loss "
          f"prequential {ratio['log_loss_prequential']}, holdout {ratio['log_loss_holdout']}; "
          f"learner-bound pace {ratio['mean_over_max_events']}"
          + (f"; uniform's own log-loss max/min {ratio['uniform_log_loss_max_over_min']}"
             if len(uniform) > 1 else ""), flush=True)
    return ratio


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


if __name__ == "__main__":
    sys.exit(main())
