"""Where the training job's checkpoints go, and which one a restart resumes from."""

from __future__ import annotations

from pathlib import Path

from streamlearn.errors import ConfigError
from streamlearn.training.config import TrainConfig

__all__ = ["checkpoint_uri", "latest_checkpoint", "resolve_recovery"]


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
