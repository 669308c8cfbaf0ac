"""The training job's delayed-label join: joined events/s with ~1M impressions pending in
state, against a bare read of the same topics in the same run; and memory with ~10M
pending on the RocksDB state backend.

Data (a local broker, two partitions per topic): ``--impressions`` impressions, 100 per
millisecond of event time, their window (1 h) never closing before the input ends, so all
of them wait in state; a click for half of them within 10 s. Each message one JSON record,
sent by the official Java client (``bench/prefill.py``'s ``send_lines``).

Runs, one at a time, each its own process and MiniCluster at parallelism 2, the sources
bounded (the job itself refuses ``job.bounded`` with a join; here the end of input closes
every window, as time would):

- ``bare``: both topics read as bytes (``KafkaRecordWithOffsets``), union, discarded;
- ``join``: the job's join (``connectors.flink_join.add_join``): parse, event time, keyed
  state, timers, joined events written to a topic in Kafka transactions, dead letters;
- ``pending``: the join on ``--rocksdb-impressions`` impressions with no label, on the
  RocksDB backend, sources not bounded: run until the join's consumer group has committed
  every impression (a checkpoint every 5 s covers them: all are in state, pending), then
  stopped. Reported: the JVM's peak resident memory (VmHWM) and the RocksDB directory's
  largest size, sampled every 0.5 s, and the rate of taking impressions into state.

Rates of ``bare`` and ``join`` are records read per second of the job's net runtime
(Flink's, from the job's start to its end, without the client's start-up), the final
watermark closing every window included; ``join / bare`` is their ratio.

Run: ``.venv/bin/python bench/join.py [--impressions 1000000] [--rocksdb-impressions
10000000]``. Prints a table and writes ``bench/results/join.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from connectors.ports import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PARTITIONS = 2
WINDOW_MS = 3_600_000


def _fill(bootstrap: str, prefix: str, impressions: int, clicks: bool) -> dict:
    """The two topics of one data set; returns what was written."""
    from prefill import send_lines

    from connectors.kafka_io import create_topics, describe_topic

    imp, lab = f"{prefix}.impressions", f"{prefix}.labels"
    create_topics(bootstrap, {imp: PARTITIONS, lab: PARTITIONS})
    base = int(time.time() * 1000) - 2 * WINDOW_MS  # in the past: Kafka takes the times
    t0 = time.perf_counter()

    def impression_lines():
        for i in range(impressions):
            rec = b'{"id":"e%d","ts":%d,"features":{"ad":"a%d","x":%d}}' % (
                i, base + i // 100, i % 50, i % 7)
            yield b"e%d\t%s\n" % (i, rec)

    def label_lines():  # half of the impressions clicked, 0..10 s later, in time order
        clicked = sorted((base + i // 100 + (i * 7919) % 10_000, i)
                         for i in range(0, impressions, 2))
        for ts, i in clicked:
            yield b'e%d\t{"id":"e%d","label":1,"ts":%d}\n' % (i, i, ts)

    send_lines(bootstrap, imp, impression_lines())
    if clicks:
        send_lines(bootstrap, lab, label_lines())
    return {"impressions_topic": imp, "labels_topic": lab, "seconds": time.perf_counter() - t0,
            "records": describe_topic(bootstrap, imp).messages
            + describe_topic(bootstrap, lab).messages}


def _config(bootstrap: str, data: dict, work: Path, backend: str, group: str):
    from streamlearn.training.config import TrainConfig

    cfg = TrainConfig.from_dict({
        "kafka": {"bootstrap": bootstrap, "topic": f"{data['impressions_topic']}.joined",
                  "group": group},
        "job": {"parallelism": 2, "checkpoint_ms": 5_000 if backend == "rocksdb" else 60_000,
                "checkpoint_dir": str(work / "checkpoints")},
        "store": {"model": "bench-join"},
        "join": {"impressions": data["impressions_topic"], "labels": data["labels_topic"],
                 "window_ms": WINDOW_MS, "remember_ms": 0, "disorder_ms": 1000,
                 "idle_ms": 5000},
        "flink": {"state.backend.type": backend,
                  "state.backend.rocksdb.localdir": str(work / "rocksdb"),
                  "taskmanager.memory.managed.size": "256m"},
    })
    if backend == "rocksdb":  # pending for ever: measured, then stopped
        return cfg
    return replace(cfg, job=replace(cfg.job, bounded=True))  # the end of input closes windows


def run_job(kind: str, bootstrap: str, data: dict, work: Path, backend: str, group: str) -> dict:
    """One run in this process (``--run``): build, execute, report."""
    from pyflink.common import WatermarkStrategy

    from connectors.flink_join import add_join, ensure_joined_topic
    from connectors.flink_kafka import kafka_source, record_with_offsets_type, stream_env

    cfg = _config(bootstrap, data, work, backend, group)
    env = stream_env(parallelism=2, checkpoint_ms=cfg.job.checkpoint_ms,
                     checkpoint_dir=Path(cfg.job.checkpoint_dir).as_uri(),
                     config={"python.execution-mode": "thread", **cfg.flink})
    if kind == "bare":
        from pyflink.java_gateway import get_gateway

        streams = [
            env.from_source(
                kafka_source(bootstrap, topic, cfg.kafka.group, bounded=True,
                             with_offsets=True),
                WatermarkStrategy.no_watermarks(), topic, type_info=record_with_offsets_type(),
            )
            for topic in (data["impressions_topic"], data["labels_topic"])
        ]
        sink = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()
        streams[0].union(streams[1])._j_data_stream.sinkTo(sink)
    else:
        ensure_joined_topic(cfg)
        add_join(env, cfg)
    result = env.execute(f"bench-join-{kind}")
    got = {"net_runtime_s": result.get_net_runtime() / 1000}
    if kind != "bare":  # what the join wrote (transaction markers included: a few)
        from connectors.kafka_io import describe_topic

        got["written"] = describe_topic(bootstrap, cfg.kafka.topic).messages
    return got


def _jvm_children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"java" in cmd:
            out.append(int(entry.name))
    return out


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _committed(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` the consumer group ``group`` has committed."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS))
    finally:
        consumer.close()


def _measure(kind: str, bootstrap: str, data: dict, work: Path, backend: str) -> dict:
    """Run ``kind`` in a child process; sample its JVM's memory and the RocksDB directory.
    On RocksDB, stop it once the join has committed every impression (all pending)."""
    group = f"bench-{time.time_ns()}"
    spec = json.dumps({"kind": kind, "bootstrap": bootstrap, "data": data, "work": str(work),
                       "backend": backend, "group": group})
    proc = subprocess.Popen([sys.executable, __file__, "--run", spec], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            start_new_session=True)
    peak = {"rss_kib": 0, "rocksdb_bytes": 0}

    def sample() -> None:
        while proc.poll() is None:
            for pid in _jvm_children(proc.pid):
                peak["rss_kib"] = max(peak["rss_kib"], _peak_kib(pid))
            peak["rocksdb_bytes"] = max(peak["rocksdb_bytes"], _dir_bytes(work / "rocksdb"))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if backend == "rocksdb":
        from connectors.flink_join import join_group

        joins = join_group(_config(bootstrap, data, work, backend, group))
        t0, total = time.monotonic(), data["records"]
        while _committed(bootstrap, joins, data["impressions_topic"]) < total:
            if proc.poll() is not None:
                raise RuntimeError(f"the {kind} run ended (exit {proc.returncode})")
            time.sleep(1.0)
        got = {"net_runtime_s": time.monotonic() - t0}  # from the job's start: an upper bound
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGKILL)  # the job and its JVM
        proc.wait()
        sampler.join()
    else:
        out, _ = proc.communicate()
        sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"the {kind} run failed (exit {proc.returncode})")
        got = json.loads(out.strip().splitlines()[-1])
    rate = data["records"] / got["net_runtime_s"]
    return {"kind": kind, "backend": backend, "records": data["records"],
            "net_runtime_s": round(got["net_runtime_s"], 2), "records_per_s": round(rate),
            "written": got.get("written"), "jvm_peak_rss_mib": round(peak["rss_kib"] / 1024),
            "rocksdb_peak_mib": round(peak["rocksdb_bytes"] / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=1_000_000,
                        help="impressions pending in the rate runs (default 1,000,000)")
    parser.add_argument("--rocksdb-impressions", type=int, default=10_000_000,
                        help="impressions pending in the RocksDB memory run (0: skip it)")
    parser.add_argument("--out", type=Path, default=RESULTS / "join.json")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:  # a child: one job
        spec = json.loads(args.run)
        got = run_job(spec["kind"], spec["bootstrap"], spec["data"], Path(spec["work"]),
                      spec["backend"], spec["group"])
        print(json.dumps(got), flush=True)
        return 0

    from connectors.kafka_broker import LocalBroker

    work = Path(tempfile.mkdtemp(prefix="bench-join-"))
    broker = LocalBroker(port=free_port(), directory=work / "kafka", heap="1g")
    broker.start()
    rows = []
    try:
        data = _fill(broker.bootstrap, "rate", args.impressions, clicks=True)
        print(f"filled {data['records']:,} records in {data['seconds']:.1f} s", flush=True)
        for kind in ("bare", "join"):
            rows.append(_measure(kind, broker.bootstrap, data, work / kind, "hashmap"))
            print(rows[-1], flush=True)
        if args.rocksdb_impressions:
            big = _fill(broker.bootstrap, "pending", args.rocksdb_impressions, clicks=False)
            print(f"filled {big['records']:,} records in {big['seconds']:.1f} s", flush=True)
            rows.append(_measure("pending", broker.bootstrap, big, work / "rocksdb-run",
                                 "rocksdb"))
            print(rows[-1], flush=True)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    bare, joined = rows[0], rows[1]
    report = {"impressions": args.impressions, "runs": rows,
              "join_over_bare": round(joined["records_per_s"] / bare["records_per_s"], 3),
              "goal_records_per_s": 300_000}
    print(f"\n{'run':<8} {'backend':<8} {'records':>12} {'s':>7} {'records/s':>11} "
          f"{'JVM MiB':>8} {'RocksDB MiB':>11}")
    for r in rows:
        print(f"{r['kind']:<8} {r['backend']:<8} {r['records']:>12,} {r['net_runtime_s']:>7} "
              f"{r['records_per_s']:>11,} {r['jvm_peak_rss_mib']:>8} {r['rocksdb_peak_mib']:>11}")
    print(f"join / bare: {report['join_over_bare']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
