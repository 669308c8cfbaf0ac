"""Model store timings against bare pyarrow, measured in the same run.

For a model of 2^20 float64 weights (8 MiB) this prints, on the local
filesystem and on a moto S3 server on loopback:

- ``commit`` against a bare ``pyarrow.ipc`` write of the same table to a new file;
- ``latest() + get()`` against a bare read of that file (memory map locally,
  one stream read on S3);
- ``head()`` (what a prediction server polls);

and, locally, ``list()`` over 10,000 versions. Figures are medians; ratios are
store / bare pyarrow. Results go to ``bench/results/store.json``.

Delta versions (``--delta-bits 20 24``, local disk): a model of ``weights`` and
AdaGrad's ``g2`` (float64) of 2^bits slots, ``--delta-slots`` changed slots per
version: bytes and time of a snapshot and of a delta commit, a follower's
``changes()`` + ``apply_to``, and ``get()`` of the next version by a reader
following the chain (in place), beside a bare copy of the model's arrays (what
any per-version full copy would cost).

    .venv/bin/python bench/store.py [--repeat 21] [--list-versions 10000] [--no-s3]
    .venv/bin/python bench/store.py --only-deltas --delta-bits 20 24
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from streamlearn.store import Lineage, ModelStore  # noqa: E402

WEIGHTS = 2**20


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def model_table() -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table({"w": rng.normal(size=WEIGHTS)})


def lineage() -> Lineage:
    return Lineage(
        offsets={"events": {p: 123_456 for p in range(8)}},
        events=987_654,
        learners=tuple(f"learner-{i}" for i in range(4)),
        metrics={"log_loss": 0.42, "accuracy": 0.81},
    )


def bench_backend(name: str, store: ModelStore, open_out, open_in, repeat: int) -> dict:
    table = model_table()
    path = f"{store.root}/bare-{name}.arrow"
    written = [0]

    def bare_write() -> None:  # a new file each time, as a commit must
        written[0] += 1
        with open_out(f"{path}.{written[0]}") as sink, ipc.new_file(sink, table.schema) as w:
            w.write_table(table)

    def bare_read() -> None:
        ipc.open_file(open_in(f"{path}.{written[0]}")).read_all()

    def commit() -> None:
        store.commit(table, lineage())

    def latest_get() -> None:
        store.get(store.latest())

    commit()  # create directories, warm caches
    out = {
        "bare_write_ms": median_ms(bare_write, repeat),
        "commit_ms": median_ms(commit, repeat),
        "bare_read_ms": median_ms(bare_read, repeat),
        "latest_get_ms": median_ms(latest_get, repeat),
        "head_ms": median_ms(store.head, repeat * 5),
    }
    out["commit_ratio"] = out["commit_ms"] / out["bare_write_ms"]
    out["latest_get_ratio"] = out["latest_get_ms"] / out["bare_read_ms"]
    return out


def bench_list(directory: str, versions: int) -> dict:
    store = ModelStore(directory, model="many")
    tiny = pa.table({"w": [0.0]})
    t0 = time.perf_counter()
    for _ in range(versions):
        store.commit(tiny, lineage())
    commit_each = (time.perf_counter() - t0) / versions * 1e3
    infos = store.list()
    assert len(infos) == versions
    return {
        "versions": versions,
        "list_ms": median_ms(store.list, 5),
        "tiny_commit_ms": commit_each,
    }


def bench_deltas(directory: str, bits: int, slots: int, versions: int) -> dict:
    from streamlearn.state import ModelState
    from streamlearn.store import Changes

    n = 1 << bits
    rng = np.random.default_rng(bits)
    state = ModelState(
        {"weights": rng.normal(size=n), "adagrad.g2": rng.random(n), "intercept": np.zeros(1)},
        {"kind": "Bench", "n_slots": n, "bits": bits},
    )
    store = ModelStore(directory, model=f"delta{bits}")
    t0 = time.perf_counter()
    v = store.commit(state.to_arrow(), lineage())
    snapshot_ms = (time.perf_counter() - t0) * 1e3
    snapshot_bytes = store.info(v).size_bytes
    reader = ModelStore(directory, model=f"delta{bits}")
    reader.get(v)
    follower = ModelState.from_arrow(store.get(v).table).copy()
    held = v
    commit, changes, apply, follow, sizes = [], [], [], [], []
    for i in range(versions + 1):
        touched = np.sort(rng.choice(n, slots, replace=False))
        state.arrays["weights"][touched] += 0.01
        state.arrays["adagrad.g2"][touched] += 0.001
        t0 = time.perf_counter()
        v = store.commit_delta(Changes.gather(state, touched), lineage(), parent=v)
        commit.append(time.perf_counter() - t0)
        sizes.append(store.info(v).size_bytes)
        t0 = time.perf_counter()
        update = store.changes(since=held)
        changes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        update.changes.apply_to(follower)
        apply.append(time.perf_counter() - t0)
        held = update.version
        t0 = time.perf_counter()
        model = reader.get(v)
        follow.append(time.perf_counter() - t0)
        del model
        if i == 0:  # the first delta after a snapshot copies the arrays once
            commit, changes, apply, follow, sizes = [], [], [], [], []
    assert (follower.arrays["weights"] == state.arrays["weights"]).all()

    def copy() -> None:
        {k: a.copy() for k, a in state.arrays.items()}

    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    return {
        "bits": bits,
        "slots_per_version": slots,
        "snapshot_bytes": snapshot_bytes,
        "snapshot_commit_ms": snapshot_ms,
        "delta_bytes": statistics.median(sizes),
        "delta_bytes_per_slot": statistics.median(sizes) / slots,
        "delta_commit_ms": ms(commit),
        "changes_ms": ms(changes),
        "apply_ms": ms(apply),
        "follow_get_ms": ms(follow),
        "full_copy_ms": median_ms(copy, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--list-versions", type=int, default=10_000)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--delta-bits", type=int, nargs="*", default=[20])
    parser.add_argument("--delta-slots", type=int, default=1000)
    parser.add_argument("--delta-versions", type=int, default=21)
    parser.add_argument("--only-deltas", action="store_true")
    args = parser.parse_args(argv)
    results: dict = {"weights": WEIGHTS, "bytes": WEIGHTS * 8, "repeat": args.repeat}

    with tempfile.TemporaryDirectory() as tmp:
        results["deltas"] = [
            bench_deltas(os.path.join(tmp, "deltas"), bits, args.delta_slots, args.delta_versions)
            for bits in args.delta_bits
        ]
    for r in results["deltas"]:
        print(
            f"2^{r['bits']} slots, {r['slots_per_version']} changed per version: snapshot "
            f"{r['snapshot_bytes'] / 2**20:.1f} MiB in {r['snapshot_commit_ms']:.0f} ms; delta "
            f"{r['delta_bytes'] / 1024:.1f} KiB ({r['delta_bytes_per_slot']:.1f} B/slot) in "
            f"{r['delta_commit_ms']:.2f} ms; follower changes() {r['changes_ms']:.2f} ms + apply "
            f"{r['apply_ms']:.3f} ms; reader get(next) {r['follow_get_ms']:.2f} ms "
            f"(a bare copy of the arrays: {r['full_copy_ms']:.1f} ms)"
        )
    if args.only_deltas:
        out_dir = Path(__file__).resolve().parent / "results"
        out_dir.mkdir(exist_ok=True)
        (out_dir / "store_deltas.json").write_text(json.dumps(results["deltas"], indent=2))
        print(f"wrote {out_dir / 'store_deltas.json'}")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(os.path.join(tmp, "store"), model="bench")
        os.makedirs(store.root, exist_ok=True)
        results["local"] = bench_backend(
            "local", store, lambda p: pa.OSFile(p, "wb"), lambda p: pa.memory_map(p), args.repeat
        )
        if args.list_versions:
            results["local_list"] = bench_list(os.path.join(tmp, "store"), args.list_versions)

    if not args.no_s3:
        from s3_server import running_s3

        with running_s3() as server:
            store = ModelStore(server.uri("bench"), model="bench")
            fs = server.filesystem()

            def s3_in(p: str) -> pa.Buffer:
                with fs.open_input_stream(p) as f:
                    return f.read_buffer()

            results["s3"] = bench_backend(
                "s3", store, fs.open_output_stream, s3_in, max(3, args.repeat // 4)
            )

    print(f"model: 2^20 float64 weights ({WEIGHTS * 8 / 2**20:.0f} MiB), medians")
    for key in ("local", "s3"):
        if key not in results:
            continue
        r = results[key]
        print(
            f"{key:>5}: commit {r['commit_ms']:7.2f} ms (bare write {r['bare_write_ms']:7.2f} ms,"
            f" x{r['commit_ratio']:.2f})  latest+get {r['latest_get_ms']:7.2f} ms"
            f" (bare read {r['bare_read_ms']:7.2f} ms, x{r['latest_get_ratio']:.2f})"
            f"  head {r['head_ms'] * 1e3:7.0f} us"
        )
    if "local_list" in results:
        r = results["local_list"]
        print(
            f" list: {r['versions']} versions in {r['list_ms']:.1f} ms"
            f" (tiny commits took {r['tiny_commit_ms']:.2f} ms each)"
        )
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "store.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out_dir / 'store.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
