"""Where the training job's checkpoints go, and which one a restart resumes from."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from streamlearn.errors import ConfigError
from streamlearn.training.config import TrainConfig

__all__ = ["KEEP_RUNS", "checkpoint_uri", "latest_checkpoint", "prune_runs", "resolve_recovery"]

#: a model's checkpoint directories of earlier runs kept (a run: one start of the job,
#: one Flink job id, its newest checkpoints: ``execution.checkpointing.num-retained``)
KEEP_RUNS = 3

_JOB_ID = re.compile(r"[0-9a-f]{32}")


def _local_dir(cfg: TrainConfig) -> Path | None:
    d = cfg.job.checkpoint_dir
    if "://" in d and not d.startswith("file://"):
        return None
    path = Path(d.removeprefix("file://")).expanduser().resolve()
    return path / cfg.store.model


def checkpoint_uri(cfg: TrainConfig) -> str:
    """The checkpoint directory as a URI, one sub-directory per model."""
    local = _local_dir(cfg)
    if local is None:
        return f"{cfg.job.checkpoint_dir.rstrip('/')}/{cfg.store.model}"
    local.mkdir(parents=True, exist_ok=True)
    return local.as_uri()


def latest_checkpoint(cfg: TrainConfig) -> str | None:
    """The newest complete checkpoint of this model's job (``chk-N`` with ``_metadata``)."""
    local = _local_dir(cfg)
    if local is None or not local.is_dir():
        return None
    done = [m.parent for m in local.glob("*/chk-*/_metadata")]
    if not done:
        return None
    newest = max(done, key=lambda p: (p.stat().st_mtime, int(p.name.split("-")[1])))
    return newest.as_uri()


def resolve_recovery(cfg: TrainConfig, resume: str) -> str | None:
    """``auto``: the latest checkpoint if there is one; ``none``: start fresh; else a path."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(cfg)
    path = Path(resume.removeprefix("file://"))
    if not (path / "_metadata").exists():
        raise ConfigError(
            "--resume", "auto, none, or a checkpoint directory with _metadata", resume
        )
    return path.resolve().as_uri()


def prune_runs(cfg: TrainConfig, resuming: str | None, keep: int = KEEP_RUNS) -> list[Path]:
    """Delete this model's checkpoint directories of all but the newest ``keep``
    earlier runs, never the run ``resuming`` is a checkpoint of; the directories
    deleted. Flink retains each run's newest checkpoints on cancellation and
    never deletes a run's directory, so without this every start would leave one
    behind. Only a local ``job.checkpoint_dir``, and only directories named as
    Flink names a job (32 hex digits). Call it holding the model's writer lease: no
    job of the model runs meanwhile.
    """
    local = _local_dir(cfg)
    if local is None or not local.is_dir():
        return []
    kept = None
    if resuming:
        kept = Path(resuming.removeprefix("file://")).resolve().parent
    runs = [d for d in local.iterdir() if d.is_dir() and _JOB_ID.fullmatch(d.name)]

    def newest(run: Path) -> float:
        return max([run.stat().st_mtime] + [c.stat().st_mtime for c in run.glob("chk-*")])

    runs.sort(key=newest, reverse=True)
    gone = [run for run in runs[keep:] if run != kept]
    for run in gone:
        shutil.rmtree(run, ignore_errors=True)
    return gone
