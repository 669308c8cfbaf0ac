"""Disk used by the README's "loop by hand", run as written, over time.

Runs, in a fresh working directory with its own state directory, the commands
of the README's loop on their default ports::

    streamlearn kafka start
    streamlearn topics create events --partitions 4
    streamlearn publish --generator clicks --rate 10000 --envelope &
    streamlearn train --parallelism 2 &
    streamlearn serve &

samples the disk they use every ``--every`` seconds for ``--minutes`` minutes
(the broker's log, the model store, Flink's checkpoints, the rest of the state
directory), then stops everything it started. The bound the defaults promise
is computed from the same settings the code uses and printed beside the peak.

Usage::

    .venv/bin/python bench/loop_disk.py [--minutes 10] [--every 30]

Prints a table and writes ``bench/results/loop_disk.json``.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MiB = 1024 * 1024


def du(path: Path) -> int:
    """Bytes of the files below ``path`` (0 if it does not exist)."""
    if not path.exists():
        return 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(dirpath) / name).stat().st_blocks * 512
            except FileNotFoundError:  # removed while we walked
                pass
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args(argv)

    from connectors.kafka_broker import RETENTION_BYTES, SEGMENT_BYTES
    from streamlearn.training.config import TrainConfig

    work = Path(tempfile.mkdtemp(prefix="streamlearn-loop-"))
    state = work / "state"
    env = {**os.environ, "STREAMLEARN_STATE_DIR": str(state)}
    cli = str(BIN / "streamlearn")
    logs = work / "logs"
    logs.mkdir()

    def run(*cmd: str) -> None:
        subprocess.run([cli, *cmd], cwd=work, env=env, check=True, timeout=180,
                       stdout=subprocess.DEVNULL)

    def spawn(name: str, *cmd: str) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen([cli, *cmd], cwd=work, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    cfg = TrainConfig.from_dict({})
    parts = {
        "kafka": state / "kafka",
        # job.checkpoint_dir is relative to the working directory, not the state directory
        "checkpoints": work / cfg.job.checkpoint_dir,
        "store": work / ".streamlearn",
    }
    samples: list[dict] = []
    procs: list[subprocess.Popen] = []
    try:
        run("kafka", "start")
        run("topics", "create", "events", "--partitions", "4")
        procs.append(spawn("publish", "publish", "--generator", "clicks", "--rate", "10000",
                           "--envelope"))
        procs.append(spawn("train", "train", "--parallelism", "2"))
        procs.append(spawn("serve", "serve"))
        start = time.monotonic()
        end = start + args.minutes * 60
        print(f"{'t (s)':>6} {'kafka MiB':>10} {'store MiB':>10} {'checkpoints MiB':>16} "
              f"{'all MiB':>9}", flush=True)
        while True:
            sizes = {name: du(path) for name, path in parts.items()}
            sizes["all"] = du(work)
            t = time.monotonic() - start
            samples.append({"t_s": round(t, 1), **sizes})
            print(f"{t:6.0f} {sizes['kafka'] / MiB:10.1f} {sizes['store'] / MiB:10.1f} "
                  f"{sizes['checkpoints'] / MiB:16.1f} {sizes['all'] / MiB:9.1f}", flush=True)
            for p in procs:
                if p.poll() is not None:
                    raise SystemExit(f"a command of the loop stopped early: {p.args} "
                                     f"(exit {p.returncode}); see {logs}")
            if time.monotonic() >= end:
                break
            time.sleep(min(args.every, max(0.0, end - time.monotonic())))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run([cli, "kafka", "stop"], cwd=work, env=env, timeout=120,
                       stdout=subprocess.DEVNULL, check=False)

    peak = {k: max(s[k] for s in samples) for k in ("kafka", "store", "checkpoints", "all")}
    keep = cfg.store.keep_versions
    result = {
        "minutes": args.minutes,
        "samples": samples,
        "peak_bytes": peak,
        "kafka_bound_bytes_per_partition": RETENTION_BYTES + SEGMENT_BYTES,
        "retain_versions": keep,
        "workdir": str(work),
    }
    print(f"peak: kafka {peak['kafka'] / MiB:.0f} MiB, store {peak['store'] / MiB:.0f} MiB, "
          f"checkpoints {peak['checkpoints'] / MiB:.0f} MiB, all {peak['all'] / MiB:.0f} MiB")
    print(f"bound: kafka {(RETENTION_BYTES + SEGMENT_BYTES) / MiB:.0f} MiB per partition; "
          f"store: the newest {keep} versions, pinned ones and the chain they are built from")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "loop_disk.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
