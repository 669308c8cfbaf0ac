"""Freshness of the whole loop at a steady rate, against bare Kafka delivery in the same run.

Freshness of a message: from its append to Kafka (the broker's log-append
timestamp) to the first answer of the prediction server by a version whose
lineage offset for the message's partition is greater than the message's
offset (:mod:`streamlearn.cli.demo.freshness`). It is measured for every message
(envelope) of a :func:`streamlearn.cli.demo.runner.run_demo` run: real broker, the
training job in the local Flink MiniCluster, the real prediction server.

Reference, same broker, same rate, same run: a bare consumer's latency, from
the same append timestamp to the moment ``kafka-python`` hands the record to
Python. ``ratio_p50`` / ``ratio_p99`` say how many times that floor the
learning loop takes.

Goal: p50 <= 1 s and p99 <= 2 s at 10,000 events/s on this machine.

Usage::

    .venv/bin/python bench/freshness.py                       # 10k events/s for 60 s
    .venv/bin/python bench/freshness.py --rate 5000 --duration 30 --sync-ms 250,500
    .venv/bin/python bench/freshness.py --bits 24                # a 2^24-slot model

Prints a table and writes ``bench/results/freshness.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlearn.cli.demo.config import DemoConfig  # noqa: E402
from streamlearn.cli.demo.display import LiveDisplay  # noqa: E402
from streamlearn.cli.demo.freshness import percentiles  # noqa: E402
from streamlearn.cli.demo.runner import run_demo  # noqa: E402
from tests.conftest import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def bare_kafka_latency(bootstrap: str, rate: int, seconds: float, envelope: int) -> dict:
    """Append → consumer latency (ms) of envelopes published at ``rate`` events/s."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    from connectors.kafka_io import create_topics
    from streamlearn.generators import clicks

    topic = f"bench-bare-{int(time.time())}"
    create_topics(bootstrap, {topic: 2})
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                        configs={"message.timestamp.type": "LogAppendTime"})])
    admin.close()
    import orjson

    events = list(clicks(envelope * 50, seed=3))
    payloads = [orjson.dumps({"events": events[i:i + envelope]})
                for i in range(0, len(events), envelope)]
    latencies: list[float] = []
    expected = int(seconds * rate / envelope)
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             fetch_max_wait_ms=10)
    consumer.poll(timeout_ms=1000)  # join and get assigned before publishing

    def consume() -> None:
        deadline = time.monotonic() + seconds + 20
        while len(latencies) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                now = time.time() * 1000
                latencies.extend(now - r.timestamp for r in records)

    reader = threading.Thread(target=consume)
    reader.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    start = time.monotonic()
    for i in range(expected):
        producer.send(topic, payloads[i % len(payloads)], partition=i % 2)
        time.sleep(max(0.0, start + (i + 1) * envelope / rate - time.monotonic()))
    producer.flush()
    reader.join()
    producer.close()
    consumer.close()
    return {"messages": len(latencies), **percentiles(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000, help="events/s (default 10000)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady stream")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--sync-ms", default="",
                        help="comma-separated sync intervals (default: the training job's)")
    parser.add_argument("--bits", type=int, default=None,
                        help="model size, 2^N slots (default: the training job's features.bits)")
    parser.add_argument("--bootstrap", help="use a running broker instead of starting one")
    args = parser.parse_args()

    from connectors.kafka_broker import LocalBroker

    tmp = Path(tempfile.mkdtemp(prefix="sl-bench-fresh-"))
    os.environ.setdefault("STREAMLEARN_STATE_DIR", str(tmp / "state"))
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = LocalBroker(port=free_port(2), directory=tmp / "kafka")
        broker.start()
        bootstrap = broker.bootstrap
    runs = []
    try:
        reference = bare_kafka_latency(bootstrap, args.rate, 10.0, 100)
        print(f"bare Kafka append → consumer at {args.rate:,} events/s: "
              f"p50 {reference['p50_ms']} ms, p99 {reference['p99_ms']} ms")
        from streamlearn.cli.demo.config import SYNC_MS

        for sync_ms in [int(s) for s in args.sync_ms.split(",") if s] or [SYNC_MS]:
            cfg = DemoConfig(duration_s=args.duration, rate=args.rate,
                             parallelism=args.parallelism, bootstrap=bootstrap,
                             serve_port=free_port(), sync_ms=sync_ms,
                             report_dir=tmp / f"report-{sync_ms}",
                             **({} if args.bits is None else {"bits": args.bits}))
            result = run_demo(cfg, LiveDisplay(out=io.StringIO()))
            s = result.summary
            fresh = s["freshness"]
            runs.append({
                "sync_ms": sync_ms,
                "bits": cfg.bits,
                "rate_achieved": s["stream"]["rate_achieved"],
                "learned_rate": s["training"]["learned_rate"],
                "versions": s["training"]["versions_served"],
                "freshness": {k: fresh[k] for k in
                              ("samples", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")},
                "ratio_p50": round(fresh["p50_ms"] / reference["p50_ms"], 1),
                "ratio_p99": round(fresh["p99_ms"] / reference["p99_ms"], 1),
                "goals_met": fresh["goals_met"],
                "metrics_after_warmup": s["metrics"]["after_warmup"],
                "report": str(result.report_dir),
            })
    finally:
        if broker is not None:
            broker.stop()

    print(f"\n{'sync_ms':>7} {'rate in':>9} {'learned':>9} {'vers':>5} {'p50 ms':>8} "
          f"{'p95 ms':>8} {'p99 ms':>8} {'x bare p50':>10} {'x bare p99':>10}  goals")
    for r in runs:
        f = r["freshness"]
        print(f"{r['sync_ms']:>7} {r['rate_achieved']:>9,.0f} {r['learned_rate'] or 0:>9,.0f} "
              f"{r['versions']:>5} {f['p50_ms']:>8} {f['p95_ms']:>8} {f['p99_ms']:>8} "
              f"{r['ratio_p50']:>10} {r['ratio_p99']:>10}  "
              f"{'met' if r['goals_met'] else 'not met'}")
    load = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "freshness.json"
    out.write_text(json.dumps({
        "rate": args.rate, "duration_s": args.duration, "parallelism": args.parallelism,
        "goals": {"p50_ms": 1000, "p99_ms": 2000},
        "reference_bare_kafka": reference, "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_1m_at_end": round(load[0], 2)},
    }, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
