"""``streamlearn train``: run the training job locally or submit it to a Flink cluster."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamlearn.training.config import TrainConfig

__all__ = ["register", "run"]

EPILOG = """\
examples:
  streamlearn train                           defaults: topic events, store .streamlearn/models
  streamlearn train --config job.toml
  streamlearn train --topic clicks --parallelism 4 --set model.optimizer=ftrl
  streamlearn train --config job.toml --cluster 127.0.0.1:8081   submit to a standalone cluster
  streamlearn train --config job.toml --cluster 127.0.0.1:8081 --from-savepoint \
      /data/savepoints/savepoint-3f2a-0b1c2d3e4f5a    resume from `jobs stop`'s savepoint
  streamlearn train --check --config job.toml          validate the config and stop
  streamlearn train --flink-conf metrics.reporter.prom.port=9249 \\
      --flink-conf metrics.reporter.prom.factory.class=\\
org.apache.flink.metrics.prometheus.PrometheusReporterFactory   the job's metrics for Prometheus

The config is TOML with sections [kafka] [model] [features] [job] [store]
[flink]; see docs/training.md for every key. A bad key fails before the job
starts, naming the key and what was expected.

Each learner predicts, scores and learns every event in order, with Vowpal
Wabbit's normalised adaptive steps (model.update = "event", model.optimizer =
"normalized"); --set model.update=batch --set model.optimizer=adagrad learns in
mini-batch steps of job.step_events instead. --set "model.rates=[1.0, 0.5]"
learns two rates side by side and answers with their mixture (binary: a little
below VW's log-loss on every stream measured; docs/learners.md). Learners'
changes merge every job.sync_ms (job.merge).

Without --cluster the job runs in the local Flink MiniCluster and this command
holds the terminal: it prints one line per committed version (events, events/s,
lag, prequential metrics, age of the newest event learned), and Ctrl-C stops the
job; the next start resumes from its latest checkpoint (unless --resume none).
The job's own output goes to a log file (named on the first line); -v shows it.

One writer per model: a second trainer on a model whose writer is alive is
refused, naming the other. The store keeps the newest store.keep_versions
versions (10) and the pinned one; store.keep_versions=0 keeps every version.
A passing fault (a lost TaskManager, the broker or the model store away) does
not end the job: it waits with exponential back-off and restarts from its last
checkpoint by itself (job.restart_*, job.store_retry_ms).

With --cluster the job takes its Python with it: this interpreter, its standard
library, the job's dependencies and streamlearn, packed once into a zip (kept
under .state/pyenv, rebuilt when the project or a dependency changes) and
shipped with the job, so the task managers need neither Python nor the
project. The cluster is used as it runs: its configuration is never written,
and a job it cannot run (fewer free slots than --parallelism, another Flink
version) is refused in one line naming the setting (docs/flink.md).
"""


def register(sub: argparse._SubParsersAction) -> None:
    from streamlearn.training.cli_args import add_job_args

    parser = sub.add_parser(
        "train",
        help="run the training job (Kafka → parallel learners → merged versions)",
        description="Train parallel learners on a Kafka topic and commit merged model versions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_job_args(parser)
    parser.add_argument(
        "--cluster",
        metavar="HOST:PORT",
        help="submit to this standalone Flink cluster (REST address)",
    )
    parser.add_argument("--detached", action="store_true", help="with --cluster: do not wait")
    parser.add_argument(
        "--from-savepoint",
        metavar="PATH",
        help="resume from this savepoint (`streamlearn jobs stop --savepoint`'s output); "
        "same as --resume PATH",
    )
    parser.add_argument("--check", action="store_true", help="validate the config, print it, stop")
    parser.set_defaults(run=run)


def job_file() -> Path:
    from connectors.paths import project_root

    return project_root() / "flink_jobs" / "train.py"


def run(args: argparse.Namespace) -> int:
    import json

    from streamlearn.training.cli_args import config_from_args

    if args.from_savepoint is not None:
        args.resume = _savepoint(args.from_savepoint, args.resume)
    cfg = config_from_args(args)  # fails here, before any JVM starts, on a bad key
    if args.check:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    cluster = None
    if args.cluster:
        from streamlearn.cli.jobs import cluster_of

        cluster = cluster_of(args.cluster)
        if args.from_savepoint is not None and not cfg.job.writer_id:
            cfg = stopped_writer(cfg, cluster.jobs())
    # the model's one writer: an id for this start, carried in the job's configuration
    cfg = cfg.with_writer()
    # the configuration crosses to the job once, validated, as the job's operators read it
    job_args = ["--config-json", json.dumps(cfg.to_dict()), "--resume", args.resume]
    if cluster is not None:
        from streamlearn.cli.train_foreground import preflight
        from streamlearn.store import ModelStore
        from streamlearn.training.writer import HandOver

        # the cluster as it runs: never reconfigured, refused if it cannot run the job
        cluster.check_fits(cfg.job.parallelism)
        preflight(cfg)
        # held until the job's merger takes it (detached: it expires if the job never does)
        HandOver(
            ModelStore(cfg.store.uri, cfg.store.model), cfg.job.writer_id, cfg.job.lease_ms
        ).keep_alive()
        proc = cluster.submit(job_file(), job_args, detached=args.detached, ship_python=True)
        print(proc.stdout.strip())
        return 0
    from streamlearn.cli.train_foreground import run_foreground

    return run_foreground(
        cfg, [str(job_file()), *job_args], args.resume, verbose=bool(getattr(args, "verbose", 0))
    )


#: Flink job states after which a job runs no more
_ENDED = ("FINISHED", "CANCELED", "FAILED")


def stopped_writer(cfg: TrainConfig, jobs: list[dict]) -> TrainConfig:
    """``train --cluster --from-savepoint``: ``cfg`` as the writer of the stopped job.

    A job stopped with a savepoint leaves its merger's interpreter behind on the
    TaskManager, still renewing the model's writer lease, so a new writer would
    be refused as busy. When the live lease is a training job's of this model
    (``train-<model>-...``) and no job of this model runs on the cluster
    (``jobs``: the cluster's job list), the resumed job takes that writer's id:
    the same writer acquires at once, and its new token fences the old lease.

    >>> import tempfile
    >>> from streamlearn.store import ModelStore
    >>> from streamlearn.training.config import TrainConfig
    >>> cfg = TrainConfig.from_dict({"store": {"uri": tempfile.mkdtemp(), "model": "m"}})
    >>> stopped_writer(cfg, []).job.writer_id   # no lease on the model: as it was
    ''
    >>> lease = ModelStore(cfg.store.uri, "m").acquire_writer("train-m-0a1b2c3d")
    >>> running = [{"name": "streamlearn-train-m", "state": "RUNNING"}]
    >>> stopped_writer(cfg, running).job.writer_id   # its job runs: refused as busy later
    ''
    >>> stopped = [{"name": "streamlearn-train-m", "state": "FINISHED"}]
    >>> stopped_writer(cfg, stopped).job.writer_id
    resuming as writer train-m-0a1b2c3d, the stopped job's (its lease is taken over)
    'train-m-0a1b2c3d'
    >>> lease.release(); stopped_writer(cfg, stopped).job.writer_id   # released: a new one
    ''
    """
    from dataclasses import replace

    from streamlearn.store import ModelStore

    holder = ModelStore(cfg.store.uri, cfg.store.model).writer()
    if holder is None or not holder.live():
        return cfg
    if not holder.writer_id.startswith(f"train-{cfg.store.model}-"):
        return cfg  # another kind of writer: refused as busy later, naming it
    name = f"streamlearn-train-{cfg.store.model}"
    if any(j["name"] == name and j["state"] not in _ENDED for j in jobs):
        return cfg  # the model's job runs: refused as busy later, naming it
    print(f"resuming as writer {holder.writer_id}, the stopped job's (its lease is taken over)")
    return replace(cfg, job=replace(cfg.job, writer_id=holder.writer_id))


def _savepoint(path: str, resume: str) -> str:
    """``--from-savepoint PATH``: a savepoint directory (with ``_metadata``; on this
    machine's disk or S3), as ``--resume``."""
    from pathlib import Path

    from streamlearn.errors import ConfigError
    from streamlearn.training.checkpoints import is_checkpoint

    if resume != "auto":
        raise ConfigError("--from-savepoint", "not with --resume (one of them)", path)
    local = path.removeprefix("file:")
    if not is_checkpoint(local):
        raise ConfigError(
            "--from-savepoint", "a savepoint directory holding _metadata "
            "(the path `streamlearn jobs stop --savepoint DIR` prints)", path,
        )
    if "://" in local:  # S3: Flink's own URI
        return local.rstrip("/")
    return str(Path(local).expanduser().resolve())
