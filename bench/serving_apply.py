"""Hot swap of delta versions in the prediction service, against a whole reload.

A logistic regression with AdaGrad (``weights`` and ``g2``, float64) of
2^``--bits`` slots (default 24: 128 MiB per array) is committed as a snapshot
and served by a :class:`~streamlearn.serving.ModelWatcher` on a
:class:`~streamlearn.serving.StoreSource`, on the local disk. Then, measured in
the same run:

* **apply**: for deltas of 1,000 / 10,000 / 100,000 random slots, the time the
  watcher takes from seeing the new version to swapping it in (``poll``: the
  store's ``changes()``, the version's commit record, writing the changes into
  the spare predictor, the swap), the part spent writing (``apply``), and the
  time the old current takes to catch up once released (``replay``, between
  versions, off the swap's path); p50 and p99 over ``--repeat`` versions each;
* **reload**: loading the same version whole (``StoreSource.load``: what
  every swap cost before deltas), and a copy of the predictor (``clone``: the
  spare made once after a whole load);
* **the real server under load** (``--http-seconds``, 0 to skip): the
  service (``streamlearn serve``, its own process) answering single-event
  ``POST /v1/predict`` at about ``--rate`` requests/s (``wrk``, as
  ``bench/serving.py`` measures latency at a rate) while another process
  commits ``--versions-per-s`` deltas a second: latency p50/p99, non-2xx
  answers and socket errors, and the swaps the server made (its
  ``streamlearn_model_swaps_total``), beside the same figures of the same
  server, in the same run, while nothing is committed and while the same
  publishing goes to another model (the publisher's own CPU on a shared
  machine, without the server following anything); ``--rounds`` runs the
  three in turn several times and reports the median p99 of each;
* **in process under load** (``--seconds``, 0 to skip): a thread predicting single events
  (the native body path, then the Python one, as the server does) at
  ``--rate`` requests/s while another process commits ``--versions-per-s``
  deltas of ``--load-slots`` slots a second; the latency of each prediction
  from the time it was due (in process: no HTTP; waiting for the interpreter
  lock while the watcher thread applies a delta counts), failures (an
  exception or no answer), versions served and the watcher's apply and swap
  times.

Usage::

    .venv/bin/python bench/serving_apply.py [--bits 24] [--repeat 15] [--seconds 60]
                                            [--http-seconds 60] [--rounds 1]

Prints a table and writes ``bench/results/serving_apply.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamlearn.learners import LogisticRegression
from streamlearn.optim import AdaGrad
from streamlearn.serving import ModelWatcher
from streamlearn.serving.store_source import StoreSource
from streamlearn.store import Changes, ModelStore

SIZES = (1_000, 10_000, 100_000)
EVENT = {"a": 1.0, "country": "FR", "tags": ["x", "y"]}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(values, 50) * 1e3, "p99_ms": pct(values, 99) * 1e3, "n": len(values)}


def model_state(bits: int) -> Any:
    model = LogisticRegression(AdaGrad(0.05), bits=bits)
    model.learn_many([EVENT, {"b": 2.0}], [True, False])
    state = model.state(copy=False)
    rng = np.random.default_rng(0)
    n = state.meta["n_slots"]
    state.arrays["weights"][:] = rng.normal(size=n) * 0.01
    state.arrays["adagrad.g2"][:] = 1.0
    return state


def delta(state: Any, slots: np.ndarray, rng: np.random.Generator) -> Changes:
    state.arrays["weights"][slots] = rng.normal(size=len(slots)) * 0.01
    state.arrays["adagrad.g2"][slots] += 1.0
    state.arrays["intercept"][:] = rng.normal()
    return Changes.gather(state, slots)


def publisher(
    root: str, bits: int, per_s: float, n_slots: int, seconds: float, model: str = "ctr",
    ready: Any = None,
) -> None:
    """Another process: ``per_s`` deltas a second of ``n_slots`` random slots."""
    from streamlearn.state import ModelState

    store = ModelStore(root, model)
    v = store.latest()
    meta = ModelState.from_arrow(store.get(v).table).meta
    store.drop_cache()
    rng = np.random.default_rng(7)
    n = 1 << bits
    if ready is not None:
        ready.set()
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        slots = np.unique(rng.integers(0, n, n_slots))
        changes = Changes(
            slots,
            {"weights": rng.normal(size=len(slots)) * 0.01, "adagrad.g2": np.full(len(slots), 2.0)},
            {"intercept": np.array([rng.normal()])},
            meta,
        )
        v = store.commit_delta(changes, parent=v)
        i += 1
        time.sleep(max(0.0, start + i / per_s - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--versions-per-s", type=float, default=10.0)
    parser.add_argument("--load-slots", type=int, default=10_000)
    parser.add_argument("--http-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"bits": args.bits, "slots": 1 << args.bits}
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(tmp, "ctr")
        state = model_state(args.bits)
        v = store.commit(state)
        store.drop_cache()
        source = StoreSource(store, "ctr")
        watcher = ModelWatcher(source)
        t0 = time.perf_counter()
        watcher.poll_once()  # the first version, whole
        first_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        watcher.poll_once()  # between versions: the spare (a copy) is made
        results["first_load_ms"] = first_load * 1e3
        results["spare_clone_ms"] = (time.perf_counter() - t0) * 1e3
        body = orjson.dumps({"features": EVENT})
        p = watcher.current
        if p.predict_event(body) is False:
            p.predict_one(EVENT)
            p.remember(EVENT)
        del p
        rng = np.random.default_rng(1)
        n = 1 << args.bits
        results["apply"] = {}
        for size in SIZES:
            poll, apply, replay, nbytes = [], [], [], []
            for _ in range(args.repeat):
                slots = np.sort(rng.choice(n, min(size, n), replace=False))
                v = store.commit_delta(delta(state, slots, rng), parent=v)
                nbytes.append(store.info(v).size_bytes)
                t0 = time.perf_counter()
                assert watcher.poll_once()
                poll.append(time.perf_counter() - t0)
                apply.append(watcher.last_apply_s)
                t0 = time.perf_counter()
                watcher.poll_once()  # the old current catches up
                replay.append(time.perf_counter() - t0)
            assert watcher.current.version == v and not watcher._owed
            results["apply"][size] = {
                "poll": ms(poll), "apply": ms(apply), "replay": ms(replay),
                "delta_bytes": int(np.median(nbytes)),
            }
        reload = []
        for _ in range(args.reloads):
            t0 = time.perf_counter()
            fresh = source.load(v)
            reload.append(time.perf_counter() - t0)
        assert fresh.predict_one(EVENT) == watcher.current.predict_one(EVENT)
        del fresh
        results["reload"] = ms(reload)
        results["applied"], results["loaded"] = watcher.applied, watcher.loaded

        if args.seconds > 0:
            results["under_load"] = under_load(args, tmp, watcher, body)
        del watcher, source
        if args.http_seconds > 0:
            results["http_under_load"] = http_under_load(args, tmp)

    print(f"model: 2^{args.bits} slots, weights + g2 float64 ({(1 << args.bits) * 16 >> 20} MiB)")
    print(f"first load {results['first_load_ms']:.0f} ms, spare copy "
          f"{results['spare_clone_ms']:.0f} ms")
    print(f"{'slots':>8} {'delta KB':>9} {'swap p50':>9} {'p99':>8} {'apply p50':>10} {'p99':>8}"
          f" {'replay p50':>11} {'whole reload p50':>17}")
    for size, r in results["apply"].items():
        print(f"{size:>8} {r['delta_bytes'] / 1024:>9.0f} {r['poll']['p50_ms']:>9.1f} "
              f"{r['poll']['p99_ms']:>8.1f} {r['apply']['p50_ms']:>10.1f} "
              f"{r['apply']['p99_ms']:>8.1f} {r['replay']['p50_ms']:>11.1f} "
              f"{results['reload']['p50_ms']:>17.0f}")
    if "under_load" in results:
        u = results["under_load"]
        print(f"under load: {u['requests']} predictions at {u['rate']:.0f}/s, p50 "
              f"{u['predict']['p50_ms']:.3f} ms, p99 {u['predict']['p99_ms']:.3f} ms, "
              f"failed {u['failed']}; {u['versions_served']} versions served "
              f"({u['applied']} by delta, {u['loaded']} whole), apply p99 "
              f"{u['apply']['p99_ms']:.1f} ms, swap p99 {u['swap']['p99_ms']:.1f} ms")
    if "http_under_load" in results:
        h = results["http_under_load"]
        print(f"the server at about {args.rate:.0f} req/s, {args.http_seconds:.0f} s each, "
              f"{args.versions_per_s:.0f} versions/s of {args.load_slots} slots:")
        for n, r in enumerate(h["rounds"]):
            for label, key in (
                ("nothing committed", "nothing_committed"),
                ("committing another model", "committing_another_model"),
                ("following the deltas", "following"),
            ):
                w = r[key]
                print(f"  round {n + 1}, {label:<25} {w['requests']:>7.0f} requests at "
                      f"{w['req_per_s']:>5.0f}/s, p50 {w.get('p50_ms', float('nan')):.2f} ms, "
                      f"p99 {w.get('p99_ms', float('nan')):.2f} ms, non-2xx {w['non_2xx']:.0f},"
                      f" socket errors {w['socket_errors'] or 'none'}")
            print(f"  round {n + 1}: {r['versions_committed']} versions committed, {r['swaps']} "
                  f"swaps, served version {r['served_version']} of {r['latest']}")
        m = h["median_p99_ms"]
        print(f"  median p99: nothing committed {m['nothing_committed']:.2f} ms, committing "
              f"another model {m['committing_another_model']:.2f} ms, following "
              f"{m['following']:.2f} ms")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "serving_apply.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out_dir / 'serving_apply.json'}")
    return 0


def under_load(args: argparse.Namespace, root: str, watcher: ModelWatcher, body: bytes) -> dict:
    """Predictions at ``args.rate``/s while another process commits deltas."""
    swaps: list[float] = []
    applies: list[float] = []
    served: set[int] = set()
    poll = watcher.poll_once

    def timed_poll() -> bool:  # the watcher thread's polls, timed when they swap
        t0 = time.perf_counter()
        swapped = poll()
        if swapped:
            swaps.append(time.perf_counter() - t0)
            if watcher.last_apply_s is not None:
                applies.append(watcher.last_apply_s)
        return swapped

    watcher.poll_once = timed_poll  # type: ignore[method-assign]
    applied0, loaded0 = watcher.applied, watcher.loaded
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    proc = context.Process(
        target=publisher,
        args=(root, args.bits, args.versions_per_s, args.load_slots, args.seconds + 1, "ctr",
              ready),
    )
    proc.start()
    ready.wait(120)
    watcher.start()
    latencies: list[float] = []
    failed = 0
    interval = 1.0 / args.rate
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < args.seconds:
        # from the time the request was due: a wait for the interpreter lock (held by
        # the watcher thread while it applies a delta) counts
        due = start + i * interval
        try:
            p = watcher.current
            got = p.predict_event(body)
            if got is False or got is None:
                got = p.predict_one(EVENT)
                p.remember(EVENT)
            served.add(p.version)
            if got is None:
                failed += 1
            del p
        except Exception:  # noqa: BLE001 - counted, the run goes on
            failed += 1
        latencies.append(time.monotonic() - due)
        i += 1
        time.sleep(max(0.0, start + i * interval - time.monotonic()))
    elapsed = time.monotonic() - start
    proc.join(timeout=30)
    watcher.stop()
    return {
        "seconds": elapsed,
        "rate": len(latencies) / elapsed,
        "requests": len(latencies),
        "failed": failed,
        "predict": ms(latencies),
        "versions_served": len(served),
        "applied": watcher.applied - applied0,
        "loaded": watcher.loaded - loaded0,
        "apply": ms(applies),
        "swap": ms(swaps),
        "versions_per_s": args.versions_per_s,
        "load_slots": args.load_slots,
        "cpus": os.cpu_count(),
    }


def http_under_load(args: argparse.Namespace, root: str) -> dict:
    """The real server answering at ``args.rate``/s while deltas are committed."""
    import re
    import sys

    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serving import Server, at_rate, free_port  # bench/serving.py

    port = free_port()
    run_cli = (
        "import sys, streamlearn.cli as cli; "
        "cli.COMMANDS += tuple(c for c in ('serve',) if c not in cli.COMMANDS); "
        "sys.exit(cli.main())"
    )
    argv = [sys.executable, "-c", run_cli, "serve", "--store", root, "--model", "ctr",
            "--port", str(port)]
    one = Path(root) / "one.json"
    one.write_bytes(orjson.dumps({"features": EVENT}))
    store = ModelStore(root, "ctr")
    other = ModelStore(root, "other")
    from streamlearn.state import ModelState

    other.commit(ModelState.from_arrow(store.get().table))  # the control's model, as big
    other.drop_cache()
    store.drop_cache()
    with Server(argv, port, "/readyz", log_path=Path(root) / "server.log", ready_s=60) as server:
        time.sleep(5)  # the spare is made between versions, after the first load
        def swaps() -> int:
            text = httpx.get(server.url + "/metrics").text
            m = re.search(r"^streamlearn_model_swaps_total\S*\s+([\d.]+)", text, re.M)
            return int(float(m.group(1))) if m else -1

        def committing(model: str) -> dict:
            ready = context.Event()
            proc = context.Process(
                target=publisher,
                args=(root, args.bits, args.versions_per_s, args.load_slots,
                      args.http_seconds + 1, model, ready),
            )
            proc.start()
            ready.wait(120)
            time.sleep(0.5)
            result = at_rate(server.url + "/v1/predict", args.rate, args.http_seconds,
                             body_file=one)
            proc.join(timeout=60)
            return result

        context = multiprocessing.get_context("spawn")
        rounds = []
        for _ in range(args.rounds):  # the three loads in turn, so drift hits each alike
            quiet = at_rate(server.url + "/v1/predict", args.rate, args.http_seconds,
                            body_file=one)
            # the same publishing load on another model: what the publisher's own CPU
            # costs this shared machine, without the server following anything
            elsewhere = committing("other")
            swaps0, latest0 = swaps(), store.latest()
            follow = committing("ctr")
            time.sleep(0.5)
            served = httpx.get(server.url + "/v1/models/current").json()["version"]
            rounds.append({
                "nothing_committed": quiet,
                "committing_another_model": elsewhere,
                "following": follow,
                "versions_committed": store.latest() - latest0,
                "swaps": swaps() - swaps0,
                "served_version": served,
                "latest": store.latest(),
            })
        return {
            "rounds": rounds,
            "median_p99_ms": {
                key: float(np.median([r[key].get("p99_ms", np.nan) for r in rounds]))
                for key in ("nothing_committed", "committing_another_model", "following")
            },
            "seconds_each": args.http_seconds,
            "versions_per_s": args.versions_per_s,
            "load_slots": args.load_slots,
        }

if __name__ == "__main__":
    raise SystemExit(main())
