"""Hot keys: training throughput, per-learner load and learning quality with a
uniform key stream against a Zipf-distributed one, in one run.

Both topics hold the same clicks events (features, labels, ids: one seed);
only their keys differ (:func:`streamlearn.generators.uniform_keys` and
:func:`~streamlearn.generators.zipf_keys`, s = 1.1 over 1M keys by default,
where the hottest key is 12.4% of all events). Keys pick partitions by
murmur2 as any Kafka client does, and each Kafka source subtask's learner
learns the partitions it reads, so the Zipf stream loads the learners
unevenly. For each stream the training job (``flink_jobs/train.py``, bounded,
envelopes of ``--envelope-size`` events) runs at ``--parallelism`` and the
bench reports:

- ``events_per_s_steady``: events reflected between the first and the last
  published version over the time between them (the job's own clock, free of
  start-up; the last version waits for the slowest learner), beside the
  gross and marginal rates of ``bench/e2e.py`` (one tiny run subtracted);
- per learner (source subtask, with the learner chained to it): the
  partitions it read, the events in them (counted from the keys as the
  partitioner places them), the deltas it sent, its busy time and when it
  finished, from Flink's REST API polled while the job runs;
  ``max_over_mean_events`` is the load imbalance, ``finish_spread_s`` how long
  the first learner to finish waited for the last;
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
from e2e import _free_port, _rates, _write, run_train  # noqa: E402
from prefill import prefill  # noqa: E402

from streamlearn.generators import clicks, uniform_keys, zipf_keys, zipf_share  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SEED = 7

# e2e's launcher, with the job submitted asynchronously so that Flink's REST API can be
# polled while it runs: every subtask of the vertex holding the learners (status, times,
# I/O metrics, busy time), kept as last seen; a finished subtask's figures are final
_LAUNCHER = """
import json, sys, time, urllib.request
from pathlib import Path
sys.path.insert(0, {root!r})
from flink_jobs.train import build
from streamlearn.training.cli_args import config_from_args, job_arg_parser
cfg = config_from_args(job_arg_parser("train").parse_args(sys.argv[1:])).with_writer()
client = build(cfg, None).execute_async("streamlearn-train-" + cfg.store.model)
base = "http://127.0.0.1:" + cfg.flink["rest.bind-port"] + "/jobs/" + str(client.get_job_id())

def get(path):
    with urllib.request.urlopen(base + path, timeout=5) as r:
        return json.loads(r.read())

seen, vertex, names = {{}}, None, None
result = client.get_job_execution_result()
while not result.done():
    try:
        if vertex is None:
            vertex = next(v["id"] for v in get("")["vertices"] if "learners" in v["name"])
        path = "/vertices/" + vertex
        for s in get(path)["subtasks"]:
            i = s["subtask"]
            if seen.get(i, {{}}).get("status") == "FINISHED":
                continue
            if names is None:  # the learners' own counters, once Flink lists them
                names = [m["id"] for m in get(path + "/subtasks/0/metrics")
                         if m["id"].endswith((".eventsLearned", ".bundlesIn"))] or None
            if names:
                got = get(path + "/subtasks/" + str(i) + "/metrics?get=" + ",".join(names))
                s["user"] = {{m["id"].rsplit(".", 1)[1]: m["value"] for m in got}}
                learned = int(float(s["user"].get("eventsLearned", 0)))
                s["timeline"] = seen.get(i, {{}}).get("timeline", [])
                if not s["timeline"] or s["timeline"][-1][1] != learned:
                    s["timeline"].append((time.time(), learned))
            seen[i] = s
    except Exception as exc:  # the cluster not up yet, or gone with the job
        seen.setdefault("errors", []).append(repr(exc)[:200])
    time.sleep(0.25)
runtime = result.result().get_net_runtime()
Path(cfg.store.uri).parent.joinpath("subtasks.json").write_text(json.dumps(seen))
print(json.dumps({{"net_runtime_ms": runtime}}), flush=True)
"""


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


def _learners(run_dir: Path, topic: str, per_partition: list[int], p: int) -> dict:
    """Per learner: partitions, events, deltas, busy time, finish time (see the docstring)."""
    seen = json.loads(next(run_dir.glob("train-*/subtasks.json")).read_text())
    errors = seen.pop("errors", [])
    if os.environ.get("SKEW_DEBUG"):
        print(json.dumps(seen, indent=1)[:6000], errors[:5])
    rows = []
    starts, dones = {}, {}
    for i in range(p):
        parts = [q for q in range(len(per_partition)) if _kafka_owner(topic, q, p) == i]
        s = seen.get(str(i), {})
        m = {k: float(v) for k, v in s.get("metrics", {}).items()
             if isinstance(v, int | float | str) and str(v).replace(".", "", 1).isdigit()}
        rows.append({
            "subtask": i, "partitions": parts, "events": sum(per_partition[q] for q in parts),
            "status": s.get("status"),
            "deltas": int(m["write-records"]) if "write-records" in m else None,
            "busy_s": round(m["accumulated-busy-time"] / 1000, 2)
            if "accumulated-busy-time" in m else None,
            "backpressured_s": round(m["accumulated-backpressured-time"] / 1000, 2)
            if "accumulated-backpressured-time" in m else None,
            "idle_s": round(m["accumulated-idle-time"] / 1000, 2)
            if "accumulated-idle-time" in m else None,
            "events_learned_metric": int(float(s["user"]["eventsLearned"]))
            if "eventsLearned" in s.get("user", {}) else None,
        })
        line = s.get("timeline", [])
        # when it learned its first events and, if a poll saw it, its last ones
        starts[i] = next((t for t, n in line if n), None)
        dones[i] = next((t for t, n in line if n == rows[-1]["events"]), None)
    events = [r["events"] for r in rows]
    busy = [r["busy_s"] for r in rows if r["busy_s"] is not None]
    seen_done = [t for t in dones.values() if t]
    for i, r in enumerate(rows):
        # seconds after the first learner was done (null: not seen done before the job
        # ended, so among the last), and its own rate over the time it was learning
        r["done_after_first_s"] = round(dones[i] - min(seen_done), 2) if dones[i] else None
        r["events_per_s"] = (round(r["events"] / (dones[i] - starts[i]))
                             if dones[i] and starts[i] and dones[i] > starts[i] else None)
    return {
        "learners": rows,
        "max_over_mean_events": round(max(events) / (sum(events) / p), 3),
        "max_over_mean_busy": round(max(busy) / (sum(busy) / len(busy)), 3) if busy else None,
        "rest_errors": len(errors),
    }


def measure(bootstrap: str, name: str, topic: str, events: int, per_partition: list[int],
            p: int, mode: str, tiny: dict, holdout: list[dict], work: Path,
            settings: dict) -> dict:
    """Train on ``topic`` (its events per partition ``per_partition``); the row."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    run = run_train(bootstrap, topic, p, mode, run_dir, settings)
    if run["events"] != events:
        raise RuntimeError(f"the last version reflects {run['events']} events, "
                           f"{events} were published to {topic}")
    row = {"keys": name, "topic": topic, "partitions": len(per_partition),
           "partition_events": per_partition, **_rates(run, tiny, events)}
    row.pop("timeline", None)
    row.update(_learners(run_dir, topic, per_partition, p))
    models = next(run_dir.glob("train-*/models"))
    from streamlearn.store import ModelStore

    row["log_loss_prequential"] = ModelStore(str(models), "e2e").info().lineage.metrics["LogLoss"]
    row["log_loss_holdout"] = _holdout_log_loss(models, holdout)
    _print(row)
    return row


def _print(row: dict) -> None:
    print(f"{row['keys']:>8} {row['partitions']:>2} partitions: steady "
          f"{row['events_per_s_steady'] or 0:>9,} ev/s (marginal {row['events_per_s'] or 0:,}, "
          f"gross {row['events_per_s_gross']:,}); log-loss prequential "
          f"{row['log_loss_prequential']:.5f}, holdout {row['log_loss_holdout']:.5f}; "
          f"events max/mean over learners {row['max_over_mean_events']}", flush=True)
    for r in row["learners"]:
        print(f"    learner {r['subtask']}: partitions {r['partitions']}, {r['events']:>9,} events"
              f" (metric {r['events_learned_metric']}), {r['deltas']} deltas, busy {r['busy_s']} "
              f"s, idle {r['idle_s']} s, done +{r['done_after_first_s']} s, "
              f"{r['events_per_s'] or 0:,} ev/s while learning", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--partitions", default="4",
                        help="comma-separated partition counts of the topics (each one a set "
                             "of runs)")
    parser.add_argument("--streams", default="uniform,zipf,zipf-spread",
                        help="among uniform, zipf and zipf-spread (Zipf keys published with "
                             "Publisher(spread_hot_keys=--spread)); uniform first")
    parser.add_argument("--spread", type=float, default=0.01,
                        help="zipf-spread's share of events above which a key is hot")
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--keys", type=int, default=1_000_000, help="the key space")
    parser.add_argument("--envelope-size", type=int, default=500)
    parser.add_argument("--holdout", type=int, default=100_000)
    parser.add_argument("--mode", default="thread", help="the job's execution mode")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train job setting for every run, e.g. job.flush_ms=1000")
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--out", default=str(RESULTS / "skew.json"))
    args = parser.parse_args(argv)
    e2e._TRAIN_LAUNCHER = _LAUNCHER  # e2e's run_train, with this bench's launcher

    n, h = args.events, args.holdout
    known = {
        "uniform": (lambda: uniform_keys(seed=SEED + 1, n_keys=args.keys), {}),
        "zipf": (lambda: zipf_keys(seed=SEED + 1, s=args.zipf_s, n_keys=args.keys), {}),
        "zipf-spread": (lambda: zipf_keys(seed=SEED + 1, s=args.zipf_s, n_keys=args.keys),
                        {"spread_hot_keys": args.spread}),
    }
    names = args.streams.split(",")
    if names[0] != "uniform" or not set(names) <= set(known):
        parser.error(f"--streams: uniform first, then among {', '.join(known)}; got {names}")
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

        broker = LocalBroker(port=_free_port(), directory=work / "kafka", heap="1g")
        broker.start()
        bootstrap = broker.bootstrap
    settings = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    try:
        tiny_topic = f"skew-tiny-{args.envelope_size}"
        prefill(bootstrap, e2e.TINY, None, tiny_topic, envelope_size=args.envelope_size)
        for partitions in (int(v) for v in args.partitions.split(",")):
            topics, placed = {}, {}
            for name in names:
                keys, options = known[name]
                topic = topics[name] = f"skew-{name}-{n}-{partitions}p"
                stream = islice(clicks(n + h, seed=SEED, keys=keys()), h, None)
                done = prefill(bootstrap, n, None, topic, envelope_size=args.envelope_size,
                               partitions=partitions, stream=stream, publisher_options=options)
                placed[name] = done.partition_events
                print(f"pre-filled {topic}: {n:,} events in {done.seconds:.1f} s "
                      f"({done.envelope_messages} envelopes; per partition "
                      f"{done.partition_events})", flush=True)
            rows = {}
            for name in names:  # a fresh port per run: a lingering cluster never answers
                run_settings = {**settings, "flink.rest.bind-port": str(_free_port()),
                                "flink.metrics.fetcher.update-interval": "250"}
                tiny = run_train(bootstrap, tiny_topic, args.parallelism, args.mode,
                                 Path(tempfile.mkdtemp(prefix="tiny-", dir=work)), run_settings)
                rows[name] = measure(bootstrap, name, topics[name], n, placed[name],
                                     args.parallelism, args.mode, tiny, holdout, work,
                                     run_settings)
                report["rows"].append(rows[name])
                _write(args.out, report)
            u = rows["uniform"]
            for name in names[1:]:
                z = rows[name]
                ratio = {
                    "stream": name, "partitions": partitions,
                    "steady": _ratio(z["events_per_s_steady"], u["events_per_s_steady"]),
                    "marginal": _ratio(z["events_per_s"], u["events_per_s"]),
                    "gross": _ratio(z["events_per_s_gross"], u["events_per_s_gross"]),
                    "log_loss_prequential": _ratio(z["log_loss_prequential"],
                                                   u["log_loss_prequential"], 4),
                    "log_loss_holdout": _ratio(z["log_loss_holdout"], u["log_loss_holdout"], 4),
                    # what a learner per core would give: the busiest learner sets the pace
                    "mean_over_max_events": _ratio(u["max_over_mean_events"],
                                                   z["max_over_mean_events"]),
                }
                report["vs_uniform"].append(ratio)
                print(f"{name}/uniform at {partitions} partitions: events/s steady "
                      f"{ratio['steady']}, marginal {ratio['marginal']}, gross {ratio['gross']};"
                      f" log-loss prequential {ratio['log_loss_prequential']}, holdout "
                      f"{ratio['log_loss_holdout']}; learner-bound pace "
                      f"{ratio['mean_over_max_events']}", flush=True)
            _write(args.out, report)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


if __name__ == "__main__":
    sys.exit(main())
