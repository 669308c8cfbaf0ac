"""Benchmark the prediction service against a bare "hello" on the same stack.

The load comes from ``wrk`` (Debian package ``wrk``), a separate process, so
the server's own event loop does only serving. Figures, all measured in this
run:

* the HTTP stacks: a bare hello on uvicorn as plain ASGI (what the service is
  built on), on Starlette over uvicorn, and on aiohttp when it is installed;
* single-event predictions: saturation req/s with one worker (as a ratio of the
  bare hello) and p50/p99 latency at about 1,000 req/s, each in ``--rounds``
  runs alternating with the bare hello (kept running beside the service), so
  each ratio compares runs under the same load of the shared machine; the
  medians are reported, with the bare hello's own p99 at 1,000 req/s as the
  floor the machine allows;
* batch predictions/s with 1,000 events of 40 features per request, as Arrow
  IPC and as JSON; and single events at ~500 req/s while Arrow batches
  saturate the server (``mixed``: their p50/p99 and the batches' rate).

The issue's goals are checked against these figures and reported as met or
not: single-event saturation at least half the bare hello's, p99 at most 2 ms
at 1,000 req/s, at least 500k batch predictions/s. The machine is shared, so
re-run before trusting one figure. To tell how shared it was, the run records
the load average at its start and end and, in each saturation round, the
share of the machine's CPU time that went to other processes; and, beside the
throughput ratio, the ratio of CPU time per request (user + system, all
threads, from ``/proc``) of the bare hello to the service's, which other
processes disturb less than throughput.

With ``--prediction-log`` a local Kafka broker is started and a third server of the same
model runs with ``--log-topic``: every saturation round also sends a single event with an
``id`` to it and to the service without the log, and reports their ratio (the issue's goal:
the log costs at most 10% of the single-event throughput) and, at the end, the records in
the topic against the requests the logging server answered. The broker shares this
machine's cores with the servers and wrk, so that ratio also charges the server with the
broker's work (its CPU per logged request is reported); with two CPUs or more each round
then measures the pair again with each server alone on CPU 0 and wrk and the broker on
the others (``own_core``): what the log costs the server itself, librdkafka's threads
and the kernel's sending included, as when the broker runs elsewhere.

With ``--baseline DIR`` (a source tree holding another version of the
``streamlearn`` package, e.g. ``git archive <rev> streamlearn | tar -x -C DIR``)
a second service runs from that tree and takes its turn in every saturation
round, so two versions of the code are compared under the same load: with the
single event, and with the same event carrying an ``id`` (``id_vs_baseline_id``:
this code's throughput over the baseline's).

Usage::

    .venv/bin/python bench/serving.py [--seconds 5] [--connections 32] [--rounds 3]
                                      [--baseline DIR] [--prediction-log]

Prints a table and writes ``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from connectors.ports import free_port
from streamlearn.serving.server import UVICORN_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
N_FEATURES = 40
BATCH = 1000

# The reference: a hand-written ASGI app answering every request with the
# same 17 bytes and two headers, on uvicorn with uvloop and httptools and the
# service's own uvicorn settings (UVICORN_OPTIONS, written in as a literal so
# the process imports nothing else): the service and it differ by their app.
HELLO_ASGI = textwrap.dedent(
    """
    import sys, uvicorn
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", b"17")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"hello":"world"}'})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                lifespan="off", **OPTIONS)
    """
).replace("OPTIONS", repr(UVICORN_OPTIONS))

HELLO_STARLETTE = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    async def hello(request):
        return Response(b'{"hello":"world"}', media_type="application/json")
    app = Starlette(routes=[Route("/", hello)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False,
                log_level="warning")
    """
)

HELLO_AIOHTTP = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    async def hello(request):
        return web.Response(body=b'{"hello":"world"}', content_type="application/json")
    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
    """
)


def served_code(cwd: Path | None) -> dict[str, object]:
    """Which ``streamlearn`` a server started in ``cwd`` imports, and whether it
    scores plain one-event bodies in C (the optional extension)."""
    code = (
        "import json, streamlearn, streamlearn.serving.linear_scorer as s; "
        "print(json.dumps([streamlearn.__file__, "
        "getattr(s, 'native_available', lambda: False)()]))"
    )
    env = dict(os.environ, PYTHONPATH=str(cwd)) if cwd is not None else None
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd, env=env
    ).stdout
    where, native = json.loads(out)
    return {"streamlearn": where, "native_one_event": native}


class Server:
    """A server subprocess, killed on exit."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        ready_path: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        ready_s: float = 30.0,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # the log goes to a file (``log_path``, else a temporary one): a pipe nobody
        # reads blocks the server once full
        self.log = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd=cwd
        )
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"server did not become ready in {ready_s:.0f} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def python_server(code: str) -> Server:
    port = free_port()
    return Server([sys.executable, "-c", code, str(port)], port, "/")


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    body_file: Path | None = None,
    content_type: str = "application/json",
    delay_ms: float | None = None,
    cpus: str | None = None,
) -> dict[str, float]:
    """Run wrk once (on the CPUs ``cpus`` names, e.g. ``"1"``, when given); returns req/s
    and latency percentiles in ms."""
    lua = []
    if body_file is not None:
        lua += [
            'wrk.method = "POST"',
            f'local f = io.open("{body_file}", "rb")',
            "wrk.body = f:read('*all')",
            "f:close()",
            f'wrk.headers["Content-Type"] = "{content_type}"',
        ]
    if delay_ms is not None:
        lua.append(f"function delay() return {delay_ms} end")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lua) + "\n")
    argv = [
        *(["taskset", "-c", cpus] if cpus is not None else []),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(int(seconds), 1)}s",
        "--latency",
        "-s",
        script.name,
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, float]:
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    result: dict[str, float] = {}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["req_per_s"] = float(rate.group(1)) if rate else 0.0
    total = re.search(r"(\d+) requests in", out)
    result["requests"] = float(total.group(1)) if total else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            result[f"p{pct}_ms"] = round(float(m.group(1)) * units[m.group(2)], 3)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    socket_errors = re.search(r"Socket errors:.*", out)
    result["socket_errors"] = socket_errors.group(0) if socket_errors else ""  # type: ignore[assignment]
    return result


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (all its threads); Linux only."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in first]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def saturate(
    server: Server, url: str, seconds: float, connections: int, **kwargs: object
) -> dict[str, float]:
    """``wrk`` at ``connections``, with the server's CPU time per request and
    the share of the machine's CPU that other processes took meanwhile."""
    cpu0, machine0 = cpu_seconds(server.proc.pid), machine_cpu()
    result = wrk(url, seconds=seconds, connections=connections, **kwargs)
    cpu1, machine1 = cpu_seconds(server.proc.pid), machine_cpu()
    if cpu0 is not None and cpu1 is not None and result["requests"]:
        result["cpu_us_per_request"] = round((cpu1 - cpu0) / result["requests"] * 1e6, 2)
        if machine0 is not None and machine1 is not None:
            total = machine1[1] - machine0[1]
            others = (machine1[0] - machine0[0]) - (cpu1 - cpu0)
            # wrk's own share is in "others" too: it is the same load for both servers
            result["others_and_wrk_cpu_share"] = round(max(others, 0.0) / total, 3)
    return result


def at_rate(url: str, target: float, seconds: float, **kwargs: object) -> dict[str, float]:
    """Latency at about ``target`` req/s: 4 connections, each pausing between requests."""
    connections = 4
    delay = connections * 1000.0 / target
    probe = wrk(url, seconds=1, connections=connections, delay_ms=delay, **kwargs)
    # correct the pause for the time a request itself takes
    per_request = connections * 1000.0 / max(probe["req_per_s"], 1.0)
    delay = max(delay - (per_request - delay), 0.0)
    result = wrk(url, seconds=seconds, connections=connections, delay_ms=delay, **kwargs)
    result["target_req_per_s"] = target
    return result


def mixed(url: str, seconds: float, one: Path, batch: Path) -> dict[str, object]:
    """Single events at about 500 req/s while Arrow batches saturate the server (4
    connections): what a batch client costs the latency of the single events beside
    it, and the batches' rate meanwhile."""
    import threading

    got: dict[str, dict[str, float]] = {}

    def batches() -> None:
        got["batch"] = wrk(url, seconds=seconds + 2, connections=4, body_file=batch,
                           content_type="application/vnd.apache.arrow.stream")

    loader = threading.Thread(target=batches)
    loader.start()
    time.sleep(1.0)  # the batches first
    single = at_rate(url, 500.0, seconds, body_file=one)
    loader.join()
    return {"single": single, "batch_predictions_per_s": got["batch"]["req_per_s"] * BATCH}


def make_store(root: Path) -> tuple[Path, list[dict]]:
    """A store with one logistic model trained on events of ~40 features."""
    import numpy as np

    from streamlearn.learners import LogisticRegression
    from streamlearn.store import Lineage, ModelStore

    rng = np.random.default_rng(0)
    countries = ["FR", "DE", "JP", "US", "BR"]
    events = []
    for _ in range(BATCH):
        x = {f"n{j}": float(v) for j, v in enumerate(rng.normal(size=N_FEATURES - 5))}
        x |= {f"c{j}": countries[int(rng.integers(5))] for j in range(5)}
        events.append(x)
    model = LogisticRegression(bits=18)
    model.learn_many(events, [e["n0"] > 0 for e in events])
    store = root / "models"
    ModelStore(str(store), "bench").commit(model.state(), Lineage(events=len(events)))
    return store, events


def baseline_store(base_dir: Path, root: Path) -> Path:
    """:func:`make_store` run by the ``streamlearn`` of ``base_dir`` (same events,
    same model), in a process of its own."""
    code = (
        "import runpy, sys; from pathlib import Path; "
        f"ns = runpy.run_path({str(Path(__file__).resolve())!r}); "
        f"print(ns['make_store'](Path({str(root)!r}))[0])"
    )
    env = dict(os.environ, PYTHONPATH=str(base_dir))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=base_dir, env=env,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def arrow_body(events: list[dict]) -> bytes:
    import pyarrow as pa

    table = pa.table({name: [e[name] for e in events] for name in events[0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _median_of(values: object) -> float | None:
    present = [v for v in values if v is not None]  # type: ignore[attr-defined]
    return statistics.median(present) if present else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="for saturation runs")
    parser.add_argument(
        "--rounds", type=int, default=3, help="bare/predict pairs; the medians are reported"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run the service from the streamlearn package in DIR, in the same rounds",
    )
    parser.add_argument(
        "--prediction-log", action="store_true",
        help="also run the service with --log-topic on a local broker, in the same rounds",
    )
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "streamlearn" / "__init__.py").is_file():
        print(f"--baseline: expected a directory holding streamlearn/, got {args.baseline}",
              file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk (the load generator)", file=sys.stderr)
        return 2
    secs, conns = args.seconds, args.connections
    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "settings": {"seconds": secs, "connections": conns, "features": N_FEATURES},
    }
    results["service_code"] = served_code(None)
    for module in ("uvloop", "httptools", "aiohttp"):
        try:
            __import__(module)
            results["machine"][module] = True
        except ImportError:
            results["machine"][module] = False

    stacks: dict = {}
    for name, code in (("asgi", HELLO_ASGI), ("starlette", HELLO_STARLETTE)):
        with python_server(code) as server:
            stacks[name] = wrk(server.url + "/", seconds=secs, connections=conns)
    if results["machine"]["aiohttp"]:
        with python_server(HELLO_AIOHTTP) as server:
            stacks["aiohttp"] = wrk(server.url + "/", seconds=secs, connections=conns)
    results["hello"] = stacks

    with tempfile.TemporaryDirectory() as tmp:
        store, events = make_store(Path(tmp))
        one = Path(tmp) / "one.json"
        one.write_bytes(json.dumps({"features": events[0]}).encode())
        batch_json = Path(tmp) / "batch.json"
        batch_json.write_bytes(json.dumps({"events": [{"features": e} for e in events]}).encode())
        one_id = Path(tmp) / "one_id.json"  # the same event with an id: what the log logs
        one_id.write_bytes(json.dumps({"id": "e-1", "features": events[0]}).encode())
        batch_arrow = Path(tmp) / "batch.arrow"
        batch_arrow.write_bytes(arrow_body(events))
        port = free_port()
        run_cli = (
            "import sys, streamlearn.cli as cli; "
            "cli.COMMANDS += tuple(c for c in ('serve',) if c not in cli.COMMANDS); "
            "sys.exit(cli.main())"
        )
        argv = [sys.executable, "-c", run_cli, "serve", "--store", str(store), "--model", "bench"]
        argv += ["--port", str(port), "--max-body-mb", "64"]
        with contextlib.ExitStack() as running:
            server = running.enter_context(Server(argv, port, "/readyz"))
            hello = running.enter_context(python_server(HELLO_ASGI))
            base = None
            if args.baseline is not None:
                base_port = free_port()
                # the same model, stored by the baseline's own code: a store written
                # by this tree may carry settings an older tree cannot read
                base_store = baseline_store(args.baseline.resolve(), Path(tmp) / "base")
                base_argv = argv[:-8] + ["--store", str(base_store), "--model", "bench"]
                base_argv += ["--port", str(base_port), "--max-body-mb", "64"]
                # `python -c` puts its working directory first on sys.path, before
                # PYTHONPATH: run it in DIR, or it would import this tree's streamlearn
                base_dir = args.baseline.resolve()
                results["baseline_code"] = served_code(base_dir)
                env = dict(os.environ, PYTHONPATH=str(base_dir))
                base = running.enter_context(
                    Server(base_argv, base_port, "/readyz", env, cwd=base_dir)
                )
            logged, bootstrap, broker_pid, own = None, None, None, None
            if args.prediction_log:
                from connectors.kafka_broker import LocalBroker
                from connectors.kafka_io import create_topics

                pin = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
                others = ",".join(str(c) for c in range(1, os.cpu_count() or 1))
                broker = LocalBroker(port=free_port(), directory=Path(tmp) / "kafka", heap="512m")
                broker_pid = broker.start().pid
                running.callback(broker.stop)
                if pin and broker_pid is not None:  # every thread of the broker's JVM
                    subprocess.run(["taskset", "-a", "-cp", others, str(broker_pid)],
                                   check=True, capture_output=True)
                bootstrap = broker.bootstrap
                create_topics(bootstrap, {"bench.served": 2})
                log_port = free_port()
                log_argv = argv[:-4] + ["--port", str(log_port), "--max-body-mb", "64",
                                        "--log-topic", "bench.served",
                                        "--log-bootstrap", bootstrap]
                logged = running.enter_context(Server(log_argv, log_port, "/readyz"))
                if pin:  # the same two servers again, each alone on CPU 0
                    own = {}
                    for name in ("predict_id", "logged"):
                        own_port = free_port()
                        own_argv = ["taskset", "-c", "0", *argv[:-4], "--port", str(own_port),
                                    "--max-body-mb", "64"]
                        if name == "logged":
                            own_argv += ["--log-topic", "bench.served", "--log-bootstrap",
                                         bootstrap]
                        own[name] = running.enter_context(Server(own_argv, own_port, "/readyz"))
            url = server.url + "/v1/predict"
            # bare and predict alternate, so each pair shares the machine's load of the moment
            rounds = []
            for _ in range(args.rounds):
                pair = {
                    "bare": saturate(hello, hello.url + "/", secs, conns),
                    "predict": saturate(server, url, secs, conns, body_file=one),
                }
                if base is not None:
                    pair["baseline"] = saturate(
                        base, base.url + "/v1/predict", secs, conns, body_file=one
                    )
                if logged is not None or base is not None:
                    pair["predict_id"] = saturate(server, url, secs, conns, body_file=one_id)
                if base is not None:  # the same event with an id, on the baseline's code
                    pair["baseline_id"] = saturate(
                        base, base.url + "/v1/predict", secs, conns, body_file=one_id
                    )
                    pair["id_vs_baseline_id"] = round(
                        pair["predict_id"]["req_per_s"] / pair["baseline_id"]["req_per_s"], 3
                    )
                if logged is not None:
                    pair["logged"] = saturate(
                        logged, logged.url + "/v1/predict", secs, conns, body_file=one_id
                    )
                    pair["logged_ratio"] = round(
                        pair["logged"]["req_per_s"] / pair["predict_id"]["req_per_s"], 3
                    )
                    if own is not None:
                        for name, own_server in own.items():
                            broker0 = cpu_seconds(broker_pid) if broker_pid else None
                            pair[f"{name}_own_core"] = got = saturate(
                                own_server, own_server.url + "/v1/predict", secs, conns,
                                body_file=one_id, cpus=others,
                            )
                            broker1 = cpu_seconds(broker_pid) if broker_pid else None
                            if broker0 is not None and broker1 is not None and got["requests"]:
                                got["broker_cpu_us_per_request"] = round(
                                    (broker1 - broker0) / got["requests"] * 1e6, 2)
                        pair["logged_ratio_own_core"] = round(
                            pair["logged_own_core"]["req_per_s"]
                            / pair["predict_id_own_core"]["req_per_s"], 3
                        )
                for key, suffix in (("predict", ""), ("baseline", "baseline_")):
                    if key not in pair:
                        continue
                    pair[f"{suffix}ratio"] = round(
                        pair[key]["req_per_s"] / pair["bare"]["req_per_s"], 3
                    )
                    cpu = [pair[k].get("cpu_us_per_request") for k in ("bare", key)]
                    if None not in cpu:
                        pair[f"{suffix}cpu_ratio"] = round(cpu[0] / cpu[1], 3)
                rounds.append(pair)
            latency = []
            for _ in range(args.rounds):
                latency.append(
                    {
                        "bare": at_rate(hello.url + "/", 1000.0, secs),
                        "predict": at_rate(url, 1000.0, secs, body_file=one),
                    }
                )
            results["predict_one"] = {"saturation_rounds": rounds, "at_1k_rounds": latency}
            if logged is not None:
                from connectors.kafka_io import describe_topic

                time.sleep(2.0)  # the log's last batch
                answered = sum(r["logged"]["requests"] for r in rounds) + sum(
                    r["logged_own_core"]["requests"] for r in rounds if "logged_own_core" in r)
                results["prediction_log"] = {
                    "records_in_topic": describe_topic(bootstrap, "bench.served").messages,
                    "requests_answered_by_wrk": answered,
                }
            results["predict_batch"] = {
                "json": wrk(url, seconds=secs, connections=4, body_file=batch_json),
                "arrow": wrk(
                    url,
                    seconds=secs,
                    connections=4,
                    body_file=batch_arrow,
                    content_type="application/vnd.apache.arrow.stream",
                ),
                "mixed": mixed(url, secs, one, batch_arrow),
            }
    results["machine"]["load_average_at_end"] = os.getloadavg()
    ratio = statistics.median(r["ratio"] for r in rounds)
    cpu_ratios = [r["cpu_ratio"] for r in rounds if "cpu_ratio" in r]
    p99 = statistics.median(r["predict"].get("p99_ms", float("inf")) for r in latency)
    results["summary"] = {
        "bare_hello_req_per_s": statistics.median(r["bare"]["req_per_s"] for r in rounds),
        "predict_one_req_per_s": statistics.median(r["predict"]["req_per_s"] for r in rounds),
        "predict_one_vs_bare": ratio,
        "predict_one_vs_bare_rounds": [r["ratio"] for r in rounds],
        "cpu_per_request_bare_vs_predict": statistics.median(cpu_ratios) if cpu_ratios else None,
        "cpu_per_request_bare_vs_predict_rounds": cpu_ratios,
        "cpu_us_per_request_bare_predict_rounds": [
            (r["bare"].get("cpu_us_per_request"), r["predict"].get("cpu_us_per_request"))
            for r in rounds
        ],
        "baseline": str(args.baseline) if args.baseline is not None else None,
        "baseline_vs_bare": _median_of(r.get("baseline_ratio") for r in rounds),
        "baseline_vs_bare_rounds": [r.get("baseline_ratio") for r in rounds],
        "cpu_per_request_bare_vs_baseline": _median_of(r.get("baseline_cpu_ratio") for r in rounds),
        "cpu_per_request_bare_vs_baseline_rounds": [r.get("baseline_cpu_ratio") for r in rounds],
        "cpu_us_per_request_baseline_rounds": [
            r["baseline"].get("cpu_us_per_request") if "baseline" in r else None for r in rounds
        ],
        "id_vs_baseline_id": _median_of(r.get("id_vs_baseline_id") for r in rounds),
        "id_vs_baseline_id_rounds": [r.get("id_vs_baseline_id") for r in rounds],
        "cpu_us_per_request_id_baseline_id_rounds": [
            (r["predict_id"].get("cpu_us_per_request"), r["baseline_id"].get("cpu_us_per_request"))
            if "baseline_id" in r else None for r in rounds
        ],
        "others_and_wrk_cpu_share_rounds": [
            tuple(r[k].get("others_and_wrk_cpu_share") for k in ("bare", "predict"))
            for r in rounds
        ],
        "predict_one_p50_ms_at_1k": statistics.median(
            r["predict"].get("p50_ms", float("inf")) for r in latency
        ),
        "predict_one_p99_ms_at_1k": p99,
        "predict_one_p99_ms_at_1k_rounds": [r["predict"].get("p99_ms") for r in latency],
        "bare_p99_ms_at_1k_rounds": [r["bare"].get("p99_ms") for r in latency],
        "achieved_req_per_s_at_1k": statistics.median(r["predict"]["req_per_s"] for r in latency),
        "batch_json_predictions_per_s": results["predict_batch"]["json"]["req_per_s"] * BATCH,
        "batch_arrow_predictions_per_s": results["predict_batch"]["arrow"]["req_per_s"] * BATCH,
        "mixed_single_p50_p99_ms": (results["predict_batch"]["mixed"]["single"].get("p50_ms"),
                                    results["predict_batch"]["mixed"]["single"].get("p99_ms")),
        "mixed_single_req_per_s": results["predict_batch"]["mixed"]["single"]["req_per_s"],
        "mixed_batch_arrow_predictions_per_s":
            results["predict_batch"]["mixed"]["batch_predictions_per_s"],
    }
    logged_ratios = [r["logged_ratio"] for r in rounds if "logged_ratio" in r]
    own_ratios = [r["logged_ratio_own_core"] for r in rounds if "logged_ratio_own_core" in r]
    if logged_ratios:
        results["summary"]["logged_vs_predict"] = statistics.median(logged_ratios)
        results["summary"]["logged_vs_predict_rounds"] = logged_ratios
        results["summary"]["cpu_us_per_request_predict_id_logged_rounds"] = [
            (r["predict_id"].get("cpu_us_per_request"), r["logged"].get("cpu_us_per_request"))
            for r in rounds
        ]
        if own_ratios:
            results["summary"]["logged_vs_predict_own_core"] = statistics.median(own_ratios)
            results["summary"]["logged_vs_predict_own_core_rounds"] = own_ratios
            results["summary"]["cpu_us_per_request_predict_id_logged_own_core_rounds"] = [
                (r["predict_id_own_core"].get("cpu_us_per_request"),
                 r["logged_own_core"].get("cpu_us_per_request")) for r in rounds
            ]
            results["summary"]["broker_cpu_us_per_logged_request_own_core_rounds"] = [
                r["logged_own_core"].get("broker_cpu_us_per_request") for r in rounds
            ]
        results["summary"].update(results["prediction_log"])
    summary = results["summary"]
    results["goals"] = {
        "predict_one_vs_bare >= 0.5": ratio >= 0.5,
        "predict_one_p99_ms_at_1k <= 2": p99 <= 2.0,
        "batch predictions/s >= 500k": max(
            summary["batch_json_predictions_per_s"], summary["batch_arrow_predictions_per_s"]
        )
        >= 500_000,
    }
    if logged_ratios:
        results["goals"]["prediction log costs <= 10% (logged/predict >= 0.9)"] = (
            statistics.median(own_ratios or logged_ratios) >= 0.9
        )
    print("hello, req/s:", {k: v["req_per_s"] for k, v in stacks.items()})
    print("service code:", results["service_code"])
    if "baseline_code" in results:
        print("baseline code:", results["baseline_code"])
    print("load average at start, end:", results["machine"]["load_average_at_start"],
          results["machine"]["load_average_at_end"])
    for key, value in summary.items():
        print(f"{key:36s} {value}")
    for goal, met in results["goals"].items():
        print(f"goal {goal:32s} {'met' if met else 'NOT met'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS / 'serving.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
