"""End-to-end training throughput: a pre-filled topic through to published versions,
against a bare PyFlink job that only reads the same topic and counts.

For each message shape (single events; envelopes of ``--envelope-size``
events) and each parallelism P, the same run measures:

- ``train``: ``flink_jobs/train.py`` bounded on the topic, from the first
  record to the final published version (the lineage of the last version
  must account for every event published);
- ``count``: ``flink_jobs/count.py``, the same Kafka source and execution mode
  feeding a Python operator that only counts (every subtask's count must add
  up to the messages in the topic).

Time is the job's net runtime as Flink reports it (``JobExecutionResult``,
from job start to job end: no JVM or MiniCluster start-up, no job
compilation). That still holds a fixed cost (task deployment, Python
worker start, operators' ``open``, the final commit), so each job is also
run once on a tiny topic of the same shape and its runtime subtracted:
``events / (runtime - tiny runtime)`` is the marginal rate reported as
``events_per_s`` (null, printed 0, when the difference is under a quarter of
the runtime: noise), the plain ``events / runtime`` as ``events_per_s_gross``.
The ratio ``train / count`` is taken on marginal rates of the same run when
both exist, else on gross rates (``ratio_on`` says which).

The marginal rate is noisy on a shared machine (two runtimes of several
seconds, subtracted), so each run also reports a steady rate measured inside
the job, free of start-up: for training, the events reflected between the
first and the last committed version over the time between their commits;
for the count job, the records between the first and the last one counted
over that time. ``train_vs_count_steady`` is their ratio. For training, the
median of the rates between consecutive versions is reported too
(``median_interval_events_per_s``): a new model's first version is a snapshot
that every learner rebases on whole once, which the window includes (seconds
at 2^26 slots) and the median does not. ``--bits`` compares model sizes on
both.

Optional sweeps (each a flag of the train job): execution mode, and
``job.flush_events``. ``--profile`` times the job's two halves in this
process on the same kind of events: the JVM encoder (``EncodeTool --bench``,
against a bare Jackson walk of the same bytes) and the Python learner on
bundles (read, predict + score + learn, take the delta, serialise it).

Three million events by default: every job's JVM spends ~3.5 s of CPU in its C2
JIT compiler whatever the input (the 2,000-event runs pay it too), and on two
cores that overlaps the whole of a 1M-event run at half a million events/s,
so 1M measures JIT warm-up more than the job. 3M leaves a steady stretch.

A broker is started on a free port (``--bootstrap`` uses a running one).
Results go to ``bench/results/e2e.json``.

    .venv/bin/python bench/e2e.py                       # 3M events, P=1,2, thread mode
    .venv/bin/python bench/e2e.py --events 200000 --parallelism 1 --modes thread,process
    .venv/bin/python bench/e2e.py --flush-events 200,1000,5000 --profile
    .venv/bin/python bench/e2e.py --shapes envelope --parallelism 2 --bits 20,24,26
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from prefill import prefill  # noqa: E402

from connectors.kafka_io import describe_topic  # noqa: E402
from connectors.ports import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TINY = 2_000

# runs flink_jobs/train.py's own graph, but keeps the JobExecutionResult for its net runtime
_TRAIN_LAUNCHER = """
import json, sys
sys.path.insert(0, {root!r})
from flink_jobs.train import build
from streamlearn.training.cli_args import config_from_args, job_arg_parser
cfg = config_from_args(job_arg_parser("train").parse_args(sys.argv[1:])).with_writer()
result = build(cfg, None).execute("streamlearn-train-" + cfg.store.model)
print(json.dumps({{"net_runtime_ms": result.get_net_runtime()}}), flush=True)
"""


def _run(cmd: list[str], timeout: float, log: Path) -> dict:
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=out, text=True,
                              timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1:3]} failed ({proc.returncode}); see {log}:\n"
                           f"{log.read_text()[-3000:]}")
    found = re.findall(r"^\{.*\"net_runtime_ms\".*\}$", proc.stdout, re.M)
    if not found:
        raise RuntimeError(f"no runtime line from {cmd[1:3]}; stdout: {proc.stdout[-2000:]}")
    return {"net_runtime_s": json.loads(found[-1])["net_runtime_ms"] / 1000, "wall_s": wall}


def run_count(bootstrap: str, topic: str, p: int, mode: str, work: Path) -> dict:
    """Run the bare job; returns its runtime and the records it counted."""
    report = Path(tempfile.mkdtemp(prefix="count-", dir=work))
    cmd = [sys.executable, str(ROOT / "flink_jobs" / "count.py"), "--bootstrap", bootstrap,
           "--topic", topic, "--bounded", "--parallelism", str(p), "--execution-mode", mode,
           "--report-dir", str(report), "--group", f"count-{report.name}"]
    out = _run(cmd, 900, report / "job.log")
    counts = [f.read_text().split() for f in report.glob("count-*.txt")]
    out["records"] = sum(int(c[0]) for c in counts)
    busy = [c for c in counts if int(c[0])]
    out["first_to_last_s"] = max(float(c[2]) for c in busy) - min(float(c[1]) for c in busy)
    return out


def run_train(bootstrap: str, topic: str, p: int, mode: str, work: Path,
              settings: dict[str, object]) -> dict:
    """Run the training job bounded into a fresh store; returns runtime, events and versions."""
    from streamlearn.store import ModelStore

    home = Path(tempfile.mkdtemp(prefix="train-", dir=work))
    # every version kept: the steady rate is taken between the first and the last
    sets = {"job.checkpoint_dir": str(home / "checkpoints"), "job.execution_mode": mode,
            "kafka.group": f"train-{home.name}", "store.keep_versions": 0, **settings}
    cmd = [sys.executable, "-c", _TRAIN_LAUNCHER.format(root=str(ROOT)),
           "--bootstrap", bootstrap, "--topic", topic, "--store", str(home / "models"),
           "--model", "e2e", "--parallelism", str(p), "--bounded", "--resume", "none"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    out = _run(cmd, 900, home / "job.log")
    store = ModelStore(str(home / "models"), "e2e")
    out["events"] = store.info().lineage.events
    out["metrics"] = dict(store.info().lineage.metrics)  # prequential, over every learner
    # the versions' own records (a compaction stores a version again: not a new one)
    listed = [v for v in store.list() if v.kind != "compact"]
    versions = [v.lineage for v in listed]
    later = [v.size_bytes for v in listed[1:]]  # after the first (a snapshot)
    out["bytes_per_version"] = round(sum(later) / len(later)) if later else None
    out["kinds"] = {k: sum(v.kind == k for v in listed) for k in sorted({v.kind for v in listed})}
    # (seconds after the first version, events, kind, bytes) of every version
    out["timeline"] = [(round(v.lineage.created_at - listed[0].lineage.created_at, 3),
                        v.lineage.events, v.kind, v.size_bytes) for v in listed]
    out["versions"] = len(versions)
    if len(versions) >= 3:  # events between the first and the last version, over their time
        first, last = versions[0], versions[-1]
        out["steady_events"] = last.events - first.events
        out["steady_s"] = last.created_at - first.created_at
        # and the median of the rates between consecutive versions: the steady state
        # without the one-time loads of the first version (a snapshot every learner
        # rebases on whole: seconds at 2^26 slots), which the window above includes
        pairs = zip(versions, versions[1:], strict=False)
        rates = sorted((b.events - a.events) / (b.created_at - a.created_at)
                       for a, b in pairs if b.created_at > a.created_at)
        out["median_interval_events_per_s"] = round(rates[len(rates) // 2]) if rates else None
    return out


def _rates(run: dict, tiny: dict, events: int, per_record: float = 1.0) -> dict:
    """Marginal and gross rates (the marginal one only when the fixed cost is not most of
    it), and the steady rate: the training job's events between its first and last
    published version over the time between them; the count job's records between its
    first and last record over that time (``per_record`` events each)."""
    marginal = run["net_runtime_s"] - tiny["net_runtime_s"]
    gross = round(events / run["net_runtime_s"])
    steady = marginal > 0.25 * run["net_runtime_s"]
    if "steady_s" in run and run["steady_s"] > 0:
        in_steady = round(run["steady_events"] / run["steady_s"])
    elif run.get("first_to_last_s", 0) > 0:
        in_steady = round(run["records"] * per_record / run["first_to_last_s"])
    else:
        in_steady = None
    return {
        **run,
        "tiny_net_runtime_s": tiny["net_runtime_s"],
        "events_per_s": round(events / marginal) if steady else None,
        "events_per_s_gross": gross,
        "events_per_s_steady": in_steady,
    }


def _best(rates: dict) -> int:
    return rates["events_per_s"] or rates["events_per_s_gross"]


def measure_pair(bootstrap: str, shape: dict, p: int, mode: str, work: Path,
                 settings: dict[str, object], with_count: bool = True) -> dict:
    """Train (and count) on the full topic and on the tiny one; rates and the ratio."""
    events, per_msg = shape["events"], shape["events_per_message"]
    row: dict = {"shape": shape["name"], "parallelism": p, "mode": mode, "settings": settings}
    tiny_t = run_train(bootstrap, shape["tiny_topic"], p, mode, work, settings)
    full_t = run_train(bootstrap, shape["topic"], p, mode, work, settings)
    if full_t["events"] != events:
        raise RuntimeError(f"the last version reflects {full_t['events']} events, "
                           f"{events} were published to {shape['topic']}")
    row["train"] = _rates(full_t, tiny_t, events)
    if with_count:
        tiny_c = run_count(bootstrap, shape["tiny_topic"], p, mode, work)
        full_c = run_count(bootstrap, shape["topic"], p, mode, work)
        if full_c["records"] != shape["messages"]:
            raise RuntimeError(f"count read {full_c['records']} records, the topic holds "
                               f"{shape['messages']}")
        row["count"] = _rates(full_c, tiny_c, events, per_msg)
        row["count"]["messages_per_s"] = round(_best(row["count"]) / per_msg)
        both = row["train"]["events_per_s"] and row["count"]["events_per_s"]
        row["ratio_on"] = "marginal" if both else "gross"
        key = "events_per_s" if both else "events_per_s_gross"
        row["train_vs_count"] = round(row["train"][key] / row["count"][key], 3)
        if row["train"]["events_per_s_steady"] and row["count"]["events_per_s_steady"]:
            row["train_vs_count_steady"] = round(
                row["train"]["events_per_s_steady"] / row["count"]["events_per_s_steady"], 3)
    _print_row(row)
    return row


def _print_row(row: dict) -> None:
    t = row["train"]
    line = (f"{row['shape']:>9} P={row['parallelism']} {row['mode']:<7} "
            f"{json.dumps(row['settings']) if row['settings'] else '':<28} "
            f"train steady {t['events_per_s_steady'] or 0:>9,} ev/s "
            f"(marginal {t['events_per_s'] or 0:,}, gross {t['events_per_s_gross']:,}, "
            f"{t['versions']} versions)")
    if "count" in row:
        c = row["count"]
        line += (f" | count steady {c['events_per_s_steady'] or 0:,} ev/s (marginal "
                 f"{c['events_per_s'] or 0:,}, gross {c['events_per_s_gross']:,}) | train/count "
                 f"steady {row.get('train_vs_count_steady', 0):.2f}, "
                 f"{row['ratio_on']} {row['train_vs_count']:.2f}")
    print(line, flush=True)


def _pack(batch, labels) -> bytes:
    """A micro-batch in the JVM encoder's wire format (see streamlearn.training.encoded_batch)."""
    import struct

    import numpy as np

    head = b"SLE1" + struct.pack("<III", batch.n_rows, len(batch.indices), 0)
    return b"".join([
        head, batch.values.tobytes(), np.asarray(labels, np.float64).tobytes(),
        batch.offsets.astype("<i4").tobytes(), batch.indices.astype("<i4").tobytes(),
        batch.numeric.astype(np.uint8).tobytes(),
    ])


def _jvm_encoder_rates(messages: list[bytes], rounds: int = 10) -> dict:
    """``EncodeTool --bench`` on ``messages``: the JVM encoder's events/s against a bare
    Jackson token walk of the same bytes, medians of alternating rounds."""
    import struct

    from connectors.paths import flink_job_jars, pyflink_home

    helper = flink_job_jars()[-1]
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(b"".join(struct.pack(">I", len(m)) + m for m in messages))
        f.flush()
        cp = os.pathsep.join([str(pyflink_home() / "lib" / "*"), str(helper)])
        out = subprocess.run(
            ["java", "-cp", cp, "io.streamlearn.flink.EncodeTool", "--bench", str(rounds),
             "--task", "binary", "--bits", "20", "--in", f.name],
            capture_output=True, text=True, check=True,
        ).stdout
    ours = re.search(r"encoder .*?median (\d+)", out)
    bare = re.search(r"bare .*?median (\d+)", out)
    return {"jvm_encoder_events_per_s": int(ours.group(1)),
            "bare_jackson_walk_events_per_s": int(bare.group(1))}


def profile_worker(events: int, envelope_size: int, settings: dict | None = None) -> dict:
    """Per-event cost of the job's two halves, in microseconds: the JVM encoder (decode,
    validate, hash; ``EncodeTool --bench``) and the Python learner on its bundles
    (read the bundle, predict + score + learn in steps, take the delta, serialise it),
    with the job's defaults or ``settings`` (``{"job.flush_events": 1000}``...)."""
    import orjson

    from streamlearn.events import encode_envelope
    from streamlearn.generators import clicks
    from streamlearn.metrics import prequential
    from streamlearn.training.config import TrainConfig
    from streamlearn.training.encoded_batch import read_encoded_batch
    from streamlearn.training.workers import LearnerWorker

    job = {k.removeprefix("job."): v for k, v in (settings or {}).items() if k.startswith("job.")}
    cfg = TrainConfig.from_dict({"store": {"uri": "memory"}, "job": job})
    flush_events, step = cfg.job.flush_events, cfg.job.step_events
    evs = list(clicks(events, seed=11))
    out: dict = {"events": events, "flush_events": flush_events, "step_events": step}
    for name, msgs in {
        "single": [orjson.dumps(e) for e in evs],
        "envelope": [encode_envelope(evs[i:i + envelope_size])
                     for i in range(0, len(evs), envelope_size)],
    }.items():
        out[name] = _jvm_encoder_rates(msgs)
        print(f"profile {name:>8}: " + ", ".join(f"{k} {v:,}" for k, v in out[name].items()),
              flush=True)

    learner = cfg.make_learner()
    bundles = []
    for i in range(0, len(evs), flush_events):
        chunk = [e for e in evs[i:i + flush_events] if e.get("label") in (0, 1)]
        bundles.append(_pack(learner.encode([e["features"] for e in chunk]),
                             [e["label"] for e in chunk]))
    n = sum(read_encoded_batch(b, learner.n_slots)[0].n_rows for b in bundles)
    stages: dict[str, float] = {}

    def timed(label: str, fn) -> object:
        t0 = time.perf_counter()
        result = fn()
        stages[label] = round((time.perf_counter() - t0) / n * 1e6, 3)
        return result

    read = timed("read_bundle", lambda: [read_encoded_batch(b, learner.n_slots) for b in bundles])
    timed("predict_score_learn", lambda: [
        prequential(learner, x.row_range(i, min(i + step, x.n_rows)),
                    y[i:i + step].astype(int), [])
        for x, y in read for i in range(0, x.n_rows, step)])
    worker = LearnerWorker(cfg, 0, None)
    deltas = timed("learner_total", lambda: [
        worker.learn_bundle(0, (i + 1) * flush_events, 0, b) for i, b in enumerate(bundles)])
    deltas[0].to_bytes()  # the first call imports pyarrow's writers: not per-event work
    timed("delta_to_bytes", lambda: [d.to_bytes() for d in deltas])
    stages["python_events_per_s"] = round(
        1e6 / (stages["learner_total"] + stages["delta_to_bytes"]))
    out["python_learner"] = stages
    print("profile  learner: " + ", ".join(f"{k} {v}" for k, v in stages.items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3_000_000,
                        help="events in each topic (>= 1M; see above for the default)")
    parser.add_argument("--envelope-size", type=int, default=500)
    parser.add_argument("--parallelism", default="1,2", help="comma-separated P values")
    parser.add_argument("--modes", default="thread", help="thread,process")
    parser.add_argument("--shapes", default="single,envelope")
    parser.add_argument("--flush-events", default="",
                        help="comma-separated job.flush_events values to sweep (train only)")
    parser.add_argument("--bits", default="",
                        help="comma-separated features.bits values (model sizes) to train, e.g. "
                             "20,24,26; each row then also gives its steady rate as a share of "
                             "the first size's (train only; the count job reads the same topic)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train job setting for every run, e.g. job.flush_ms=1000")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the JVM encoder and the Python learner")
    parser.add_argument("--profile-only", action="store_true")
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--out", default=str(RESULTS / "e2e.json"))
    args = parser.parse_args(argv)

    report: dict = {"events": args.events, "envelope_size": args.envelope_size,
                    "cpus": os.cpu_count(), "timing": "Flink net runtime minus a tiny run's",
                    "rows": []}
    base = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    if args.profile or args.profile_only:
        report["profile"] = profile_worker(min(args.events, 200_000), args.envelope_size, base)
    if args.profile_only:
        _write(args.out, report)
        return 0

    work = Path(tempfile.mkdtemp(prefix="e2e-"))
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from connectors.kafka_broker import LocalBroker

        broker = LocalBroker(port=free_port(), directory=work / "kafka", heap="1g")
        broker.start()
        bootstrap = broker.bootstrap
    try:
        tag = f"{args.events}-{args.envelope_size}"
        topics = {"single": f"e2e-single-{tag}", "envelope": f"e2e-envelopes-{tag}"}
        tiny = {"single": f"e2e-single-tiny-{args.envelope_size}",
                "envelope": f"e2e-envelopes-tiny-{args.envelope_size}"}
        for n, names in ((args.events, topics), (TINY, tiny)):
            try:
                have = describe_topic(bootstrap, names["single"]).messages
            except Exception:
                have = 0
            if have != n:
                filled = prefill(bootstrap, n, names["single"], names["envelope"],
                                 envelope_size=args.envelope_size)
                if n == args.events:
                    report["prefill"] = filled.to_json()
                    print(f"pre-filled {n:,} events twice in {filled.seconds:.1f} s "
                          f"({filled.envelope_messages} envelopes)", flush=True)
        shapes = {}
        for name in args.shapes.split(","):
            messages = describe_topic(bootstrap, topics[name]).messages
            shapes[name] = {"name": name, "topic": topics[name], "tiny_topic": tiny[name],
                            "events": args.events, "messages": messages,
                            "events_per_message": args.events / messages}
        sizes = [{**base, "features.bits": int(b)} for b in args.bits.split(",") if b] or [base]
        sweeps = sizes + [{**sizes[0], "job.flush_events": int(v)}
                          for v in args.flush_events.split(",") if v]
        for mode in args.modes.split(","):
            for p in (int(v) for v in args.parallelism.split(",")):
                for shape in shapes.values():
                    first = None
                    for i, settings in enumerate(sweeps):
                        row = measure_pair(
                            bootstrap, shape, p, mode, work, settings, with_count=i == 0)
                        report["rows"].append(row)
                        if i < len(sizes) and len(sizes) > 1:
                            first = first or row
                            share = _share(row, first)
                            median = _share(row, first, "median_interval_events_per_s")
                            row["steady_vs_first_size"] = share
                            row["median_interval_vs_first_size"] = median
                            print(f"  2^{settings['features.bits']} against 2^"
                                  f"{first['settings']['features.bits']}: steady window "
                                  f"{share}, median between versions {median} "
                                  f"({row['train'].get('median_interval_events_per_s')} ev/s)",
                                  flush=True)
                        _write(args.out, report)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    _write(args.out, report)
    return 0


def _share(row: dict, first: dict, key: str = "events_per_s_steady") -> float | None:
    """``row``'s training rate ``key`` as a share of ``first``'s (same run)."""
    ours, theirs = row["train"].get(key), first["train"].get(key)
    return round(ours / theirs, 3) if ours and theirs else None


def _write(path: str, report: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
