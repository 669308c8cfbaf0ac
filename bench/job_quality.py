"""The training job's prequential quality and speed, from Kafka, against Vowpal Wabbit
from a file, on the same events, in one run.

The events: ``streamlearn.generators.clicks(--events, seed=0)``, published once in
envelopes of ``--envelope-size`` to a topic of 4 partitions (keyed by user, as
``streamlearn publish`` does). Then:

- ``vw``: Vowpal Wabbit (pip ``vowpalwabbit``, one core) on the same events, in the
  same order, from a text file written beforehand, ``--loss_function logistic
  --link logistic -b 20`` and its defaults otherwise (as in ``bench/quality.py``);
  timed from building its workspace to its last prediction, parsing included.
- ``job``: ``flink_jobs/train.py`` bounded on the topic at each ``--parallelism``,
  with the job's defaults (per-event learning, normalised steps, 2^20 slots) except
  ``--set``; its prequential log-loss and accuracy are the last version's (every
  learner's metrics over the events it learned, weighted by them). Each job is run
  once on a tiny topic too: ``events_per_s`` is the marginal rate (the fixed cost of
  start-up and the final commit subtracted; ``bench/e2e.py`` says how), and
  ``steady`` the rate between the first and the last committed version. With
  ``--repeats R`` VW and each job (on both topics) run R times and the speeds come
  from the quickest runs; the job's quality from its first run on the full topic.
- ``job-batch``: the same job at P=1 with ``model.update = "batch"`` and
  ``model.optimizer = "adagrad"`` (steps of ``job.step_events``, the default before
  per-event learning), for reference.

``--stream interactions`` publishes ``streamlearn.generators.interactions`` instead
(pairs of features interact; ``interactions_optimum`` is the Bayes optimum), and
``--fm K`` adds, at each P, the job with ``model.factors = K`` (a factorization
machine) and VW with ``--lrq ffK`` (its low-rank quadratic model, every feature in
namespace ``f``); ``--crosses`` adds, at each P, the job with ``features.crosses``
set to the stream's four interacting pairs (``INTERACTION_PAIRS``, crossed in the JVM
encoder) and VW with each feature in a namespace of its own and ``-q`` for the same
pairs (as ``bench/quality.py``'s ``vw-q-pairs``).

The job reads the partitions interleaved, so at P=1 it learns the events in another
order than VW's file; at P > 1 each learner learns its partitions and the merger sums
their changes every ``job.sync_ms``. Ratios: each run's log-loss over VW's and over
the job's at P=1 (a factorization machine's over VW's ``--lrq`` and its own P=1, a
crossed job's over VW's ``-q`` and its own P=1); the job's events/s over that VW's.

Run: ``.venv/bin/python bench/job_quality.py [--events 3000000] [--parallelism 1,2,4]``.
Prints a table and writes ``bench/results/job_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from e2e import TINY, _best, _rates, run_train  # noqa: E402
from prefill import prefill  # noqa: E402
from quality import VW_PAIRS, load, run_vw  # noqa: E402

from connectors.ports import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BATCH = {"model.update": "batch", "model.optimizer": "adagrad"}


def _value(text: str) -> object:
    """A ``--set`` value: JSON, else the text itself (``job.merge=hybrid``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _job(bootstrap: str, topic: str, tiny: str, p: int, events: int, work: Path,
         settings: dict, repeats: int = 1) -> dict:
    """The job on the tiny topic and on the full one, ``repeats`` times each: the speed
    from the quickest of each (as VW's best run), the quality from the first full run."""
    tinies = [run_train(bootstrap, tiny, p, "thread", work, settings) for _ in range(repeats)]
    fulls = [run_train(bootstrap, topic, p, "thread", work, settings) for _ in range(repeats)]
    for full in fulls:
        if full["events"] != events:
            raise RuntimeError(f"the last version reflects {full['events']} events of {events}")
    quickest = min(fulls, key=lambda r: r["net_runtime_s"])
    rates = _rates(quickest, min(tinies, key=lambda r: r["net_runtime_s"]), events)
    m = fulls[0]["metrics"]
    return {"log_loss": m["LogLoss"], "accuracy": m["Accuracy"], "events_per_s": _best(rates),
            "events_per_s_steady": rates["events_per_s_steady"],
            "net_runtime_s": quickest["net_runtime_s"],
            "net_runtimes_s": [r["net_runtime_s"] for r in fulls], "versions": fulls[0]["versions"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--envelope-size", type=int, default=500)
    parser.add_argument("--parallelism", default="1,2,4", help="comma-separated P values")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a job setting for every run (a JSON value or text), "
                        "e.g. job.merge=hybrid")
    parser.add_argument("--no-batch", action="store_true", help="skip the job-batch run")
    parser.add_argument("--stream", choices=("clicks", "interactions"), default="clicks")
    parser.add_argument("--fm", type=int, default=0, metavar="K",
                        help="also a factorization machine of K factors (and VW --lrq ffK)")
    parser.add_argument("--crosses", action="store_true",
                        help="interactions: also the job with the stream's crosses (and VW -q)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs of VW and of each job (on the full and the tiny "
                             "topic), the quickest kept for the speed")
    parser.add_argument("--out", default=str(RESULTS / "job_quality.json"))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: expected an integer >= 1, got {args.repeats}")
    if args.crosses and args.stream != "interactions":
        parser.error("--crosses: expected --stream interactions (its pairs are known)")
    base = {k: _value(v) for k, _, v in (s.partition("=") for s in args.set)}

    from connectors.kafka_broker import LocalBroker

    work = Path(tempfile.mkdtemp(prefix="job-quality-"))
    report: dict = {"events": args.events, "stream": args.stream,
                    "envelope_size": args.envelope_size,
                    "cpus": os.cpu_count(), "machine": platform.machine(),
                    "load_at_start": os.getloadavg()[0], "settings": base, "rows": []}
    broker = LocalBroker(port=free_port(), directory=work / "kafka", heap="1g")
    broker.start()
    try:
        from streamlearn.generators import interactions

        topic, tiny = f"quality-{args.stream}-{args.events}", f"quality-{args.stream}-tiny"
        for n, name in ((args.events, topic), (TINY, tiny)):
            stream = interactions(n, seed=0) if args.stream == "interactions" else None
            filled = prefill(broker.bootstrap, n, None, name, args.envelope_size, seed=0,
                             stream=stream)
            print(f"published {n:,} {args.stream} events to {name} in {filled.seconds:.1f} s",
                  flush=True)
        xs, y, _ = load(args.stream, args.events)  # the same events, in publishing order
        t0 = time.perf_counter()
        vw = run_vw(xs, y, str(work), args.repeats)
        rows = [{"system": "vw", **vw}]
        if args.fm:
            rows.append({"system": f"vw --lrq ff{args.fm}",
                         **run_vw(xs, y, str(work), args.repeats, f"--lrq ff{args.fm}")})
        if args.crosses:
            rows.append({"system": "vw -q pairs", **run_vw(xs, y, str(work), args.repeats,
                                                           VW_PAIRS, per_feature=True)})
        del xs
        print(f"vw from its file: {time.perf_counter() - t0:.1f} s in all", flush=True)
        if args.stream == "interactions":
            from streamlearn.generators import interactions_optimum

            report["optimum_log_loss"] = interactions_optimum(args.events)
        ps = [int(v) for v in args.parallelism.split(",")]
        runs = [(f"job P={p}", p, base) for p in ps]
        if args.fm:
            runs += [(f"job-fm{args.fm} P={p}", p, {"model.factors": args.fm, **base})
                     for p in ps]
        if args.crosses:
            from streamlearn.generators import INTERACTION_PAIRS

            crosses = [list(pair) for pair in INTERACTION_PAIRS]
            runs += [(f"job-q P={p}", p, {"features.crosses": crosses, **base}) for p in ps]
        if not args.no_batch:
            runs.append(("job-batch P=1", 1, {**BATCH, **base}))
        for name, p, settings in runs:
            rows.append({"system": name, "parallelism": p, "settings": settings,
                         **_job(broker.bootstrap, topic, tiny, p, args.events, work, settings,
                                args.repeats)})
            print(f"{name}: done", flush=True)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    by_name = {r["system"]: r for r in rows}
    print(f"\n{'system':<16} {'log-loss':>9} {'accuracy':>8} {'events/s':>10} "
          f"{'loss/vw':>8} {'loss/P=1':>8} {'speed/vw':>8}")
    for r in rows:
        # a factorization machine against VW's --lrq and its own P=1, a crossed job
        # against VW's -q and its own P=1; the others against VW and the job at P=1
        fm = r["system"].startswith(("job-fm", "vw --lrq"))
        crossed = r["system"].startswith(("job-q", "vw -q"))
        ref = (by_name[f"vw --lrq ff{args.fm}"] if fm else by_name["vw -q pairs"] if crossed
               else vw)
        p1 = by_name.get(f"job-fm{args.fm} P=1" if fm else "job-q P=1" if crossed
                         else "job P=1")
        r["log_loss_vs_vw"] = round(r["log_loss"] / ref["log_loss"], 4)
        r["log_loss_vs_p1"] = (round(r["log_loss"] / p1["log_loss"], 4)
                               if p1 and r["system"].startswith("job") else None)
        r["speed_vs_vw"] = round(r["events_per_s"] / ref["events_per_s"], 3)
        print(f"{r['system']:<16} {r['log_loss']:>9.6f} {r['accuracy']:>8.4f} "
              f"{r['events_per_s']:>10,.0f} {r['log_loss_vs_vw']:>8} "
              f"{r['log_loss_vs_p1'] if r['log_loss_vs_p1'] is not None else '':>8} "
              f"{r['speed_vs_vw']:>8}")
    report["rows"] = rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
