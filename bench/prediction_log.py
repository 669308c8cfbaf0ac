"""What the prediction log costs a request: ``streamlearn serve`` with and without
``--log-topic``, the same requests, in one run.

Two servers of the same model (a logistic regression learned on 20,000 clicks events)
run side by side, one with ``--log-topic`` on a local broker. A client sends
``--requests`` single events with an ``id`` (clicks features) to each in turn, in
``--rounds`` alternating rounds, one request at a time, and records each latency from the
client (so both include the same client and HTTP overhead). Reported: p50 and p99 of
each server (the median over rounds), their ratio, and at the end how many records
the topic holds against the requests the logging server answered.

Run: ``.venv/bin/python bench/prediction_log.py [--requests 5000] [--rounds 3]``.
Prints a table and writes ``bench/results/prediction_log.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from connectors.ports import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CLI = "import sys, streamlearn.cli as cli; sys.exit(cli.main())"


def _serve(store: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--store", str(store), "--port", str(port),
         *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not get ready within 60 s")


def _round(client: httpx.Client, url: str, bodies: list[bytes]) -> list[float]:
    out = []
    headers = {"content-type": "application/json"}
    for body in bodies:
        start = time.perf_counter()
        r = client.post(url + "/v1/predict", content=body, headers=headers)
        out.append(time.perf_counter() - start)
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000, help="per server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "prediction_log.json"))
    args = parser.parse_args(argv)

    import orjson

    from connectors.kafka_broker import LocalBroker
    from connectors.kafka_io import consume_all, create_topics
    from streamlearn.generators import clicks
    from streamlearn.learners import LogisticRegression
    from streamlearn.store import Lineage, ModelStore

    work = Path(tempfile.mkdtemp(prefix="prediction-log-"))
    broker = LocalBroker(port=free_port(), directory=work / "kafka", heap="512m")
    broker.start()
    procs: list[subprocess.Popen] = []
    try:
        create_topics(broker.bootstrap, {"predictions": 4})
        events = list(clicks(20_000 + args.requests * args.rounds, seed=0))
        model = LogisticRegression(bits=18)
        model.learn_many([e["features"] for e in events[:20_000]],
                         [e["label"] for e in events[:20_000]])
        store = work / "models"
        ModelStore(str(store), "default").commit(model.state(), Lineage(events=20_000))
        plain, plain_url = _serve(store)
        logged, logged_url = _serve(store, "--log-topic", "predictions", "--log-bootstrap",
                                    broker.bootstrap)
        procs = [plain, logged]
        rest = events[20_000:]
        rows: dict[str, list[tuple[float, float]]] = {"without": [], "with --log-topic": []}
        sent = 0
        with httpx.Client() as client:
            for url in (plain_url, logged_url):  # warm both: imports, caches, the producer
                _round(client, url, [orjson.dumps({"id": "w", **rest[0]})] * 200)
            sent += 200
            for r in range(args.rounds):
                chunk = rest[r * args.requests:(r + 1) * args.requests]
                bodies = [orjson.dumps({"id": e["id"], "features": e["features"]})
                          for e in chunk]
                for name, url in (("without", plain_url), ("with --log-topic", logged_url)):
                    times = _round(client, url, bodies)
                    rows[name].append((_pct(times, 0.5), _pct(times, 0.99)))
                sent += len(bodies)
            metrics = client.get(logged_url + "/metrics").text
        got = consume_all(broker.bootstrap, "predictions", expected=sent, timeout_s=60)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    report: dict = {"requests": args.requests, "rounds": args.rounds,
                    "load_at_start": os.getloadavg()[0], "servers": {}}
    print(f"{'server':<18} {'p50 ms':>8} {'p99 ms':>8}   (median of {args.rounds} rounds of "
          f"{args.requests:,} requests, one at a time)")
    for name, values in rows.items():
        p50 = statistics.median(v[0] for v in values)
        p99 = statistics.median(v[1] for v in values)
        report["servers"][name] = {"p50_ms": p50, "p99_ms": p99, "rounds": values}
        print(f"{name:<18} {p50:>8.3f} {p99:>8.3f}")
    base, with_log = report["servers"]["without"], report["servers"]["with --log-topic"]
    report["p50_ratio"] = with_log["p50_ms"] / base["p50_ms"]
    report["p99_ratio"] = with_log["p99_ms"] / base["p99_ms"]
    report["records_in_topic"] = len(got)
    report["requests_answered_by_logging_server"] = sent
    report["log_metrics"] = [line for line in metrics.splitlines()
                             if line.startswith("streamlearn_prediction_log_records_total")]
    print(f"with / without: p50 {report['p50_ratio']:.3f}, p99 {report['p99_ratio']:.3f}")
    print(f"records in the topic: {len(got):,} of {sent:,} requests answered")
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
