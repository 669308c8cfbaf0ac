"""Where the training job's checkpoints go, and which one a restart resumes from."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow.fs as pafs

from streamlearn.errors import ConfigError, ServiceError
from streamlearn.store.location import resolve
from streamlearn.training.config import TrainConfig

__all__ = [
    "KEEP_RUNS", "checkpoint_uri", "is_checkpoint", "latest_checkpoint", "prune_runs",
    "resolve_recovery",
]

log = logging.getLogger(__name__)

#: a model's checkpoint directories of earlier runs kept (a run: one start of the job,
#: one Flink job id, its newest checkpoints: ``execution.checkpointing.num-retained``)
KEEP_RUNS = 3

_JOB_ID = re.compile(r"[0-9a-f]{32}")
_CHK = re.compile(r"chk-(\d+)")
#: the schemes of Flink's S3 file systems, read here with pyarrow's S3 client
_S3 = ("s3://", "s3a://")


def _local_dir(cfg: TrainConfig) -> Path | None:
    d = cfg.job.checkpoint_dir
    if "://" in d and not d.startswith("file://"):
        return None
    path = Path(d.removeprefix("file://")).expanduser().resolve()
    return path / cfg.store.model


def _s3_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's S3 client for a Flink S3 URI (credentials, region and endpoint from
    the ``AWS_*`` variables, as Flink's S3 plugin reads them), and the path in it."""
    return resolve("s3://" + uri.split("://", 1)[1])


def _where(cfg: TrainConfig) -> tuple[pafs.FileSystem, str, str] | None:
    """The model's checkpoint directory: a file system, the path in it, its URI as
    Flink names it; ``None`` for a scheme not read here (``hdfs://``, ``gs://``)."""
    local = _local_dir(cfg)
    if local is not None:
        return pafs.LocalFileSystem(), str(local), local.as_uri()
    d = cfg.job.checkpoint_dir.rstrip("/")
    if not d.startswith(_S3):
        return None
    fs, root = _s3_fs(d)
    return fs, f"{root}/{cfg.store.model}", f"{d}/{cfg.store.model}"


def _unreadable(uri: str, exc: OSError) -> ServiceError:
    cause = " ".join(str(exc).split())
    return ServiceError(
        f"cannot read the checkpoints under {uri} ({cause}); check that this machine "
        "reaches it (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, "
        "AWS_ENDPOINT_URL), or start afresh from the model's newest version with --resume none"
    )


def _runs(fs: pafs.FileSystem, root: str) -> list[pafs.FileInfo]:
    listed = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return [i for i in listed if i.type == pafs.FileType.Directory]


def checkpoint_uri(cfg: TrainConfig) -> str:
    """The checkpoint directory as a URI, one sub-directory per model."""
    local = _local_dir(cfg)
    if local is None:
        return f"{cfg.job.checkpoint_dir.rstrip('/')}/{cfg.store.model}"
    local.mkdir(parents=True, exist_ok=True)
    return local.as_uri()


def latest_checkpoint(cfg: TrainConfig) -> str | None:
    """The newest complete checkpoint of this model's job (``chk-N`` with ``_metadata``,
    the newest ``_metadata``), as Flink names it; on the local disk or S3 (a
    :class:`~streamlearn.errors.ServiceError` in one line when it cannot be read)."""
    where = _where(cfg)
    if where is None:
        return None
    fs, root, uri = where
    done = []
    try:
        for run in _runs(fs, root):
            for chk in fs.get_file_info(pafs.FileSelector(run.path, allow_not_found=True)):
                number = _CHK.fullmatch(chk.base_name)
                if chk.type != pafs.FileType.Directory or not number:
                    continue
                meta = fs.get_file_info(f"{chk.path}/_metadata")
                if meta.type == pafs.FileType.File:
                    stamp = meta.mtime.timestamp() if meta.mtime else 0.0
                    done.append((stamp, int(number.group(1)), f"{run.base_name}/{chk.base_name}"))
    except OSError as exc:
        raise _unreadable(uri, exc) from exc
    return f"{uri}/{max(done)[2]}" if done else None


def is_checkpoint(path: str) -> bool:
    """Whether ``path`` (a local path, a ``file://`` or S3 URI) is a checkpoint or
    savepoint directory, one holding ``_metadata``; a
    :class:`~streamlearn.errors.ServiceError` in one line when S3 cannot be read."""
    if not path.startswith(_S3):
        return (Path(path.removeprefix("file://")).expanduser() / "_metadata").is_file()
    uri = path.rstrip("/")
    try:
        fs, key = _s3_fs(uri)
        return fs.get_file_info(f"{key}/_metadata").type == pafs.FileType.File
    except OSError as exc:
        raise _unreadable(uri, exc) from exc


def resolve_recovery(cfg: TrainConfig, resume: str) -> str | None:
    """``auto``: the latest checkpoint if there is one; ``none``: start fresh; else a
    checkpoint directory (a path, ``file://`` or S3 URI)."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(cfg)
    if not is_checkpoint(resume):
        raise ConfigError(
            "--resume", "auto, none, or a checkpoint directory with _metadata", resume
        )
    if resume.startswith(_S3):
        return resume.rstrip("/")
    return Path(resume.removeprefix("file://")).expanduser().resolve().as_uri()


def prune_runs(cfg: TrainConfig, resuming: str | None, keep: int = KEEP_RUNS) -> list[str]:
    """Delete this model's checkpoint directories of all but the newest ``keep``
    earlier runs, never the run ``resuming`` is a checkpoint of; the directories
    deleted (URIs, as Flink names them). Flink retains each run's newest checkpoints on
    cancellation and never deletes a run's directory, so without this every start
    would leave one behind. On the local disk or S3, and only directories named as
    Flink names a job (32 hex digits); a run is as new as its newest file. Call it
    holding the model's writer lease: no job of the model runs meanwhile. Housekeeping:
    a directory that cannot be read or deleted is logged and left.
    """
    where = _where(cfg)
    if where is None:
        return []
    fs, root, uri = where
    kept = None  # the resumed run's directory, as a path in fs (s3:// and s3a:// alike)
    if resuming:
        if resuming.startswith(_S3):
            kept = _s3_fs(resuming.rstrip("/"))[1].rsplit("/", 1)[0]
        else:
            kept = str(Path(resuming.removeprefix("file://")).resolve().parent)
    try:
        runs = [run for run in _runs(fs, root) if _JOB_ID.fullmatch(run.base_name)]

        def newest(run: pafs.FileInfo) -> float:
            inside = fs.get_file_info(pafs.FileSelector(run.path, recursive=True))
            return max([i.mtime.timestamp() for i in (run, *inside) if i.mtime] or [0.0])

        ages = {run.base_name: newest(run) for run in runs}
    except OSError as exc:
        log.warning("%s; earlier runs' checkpoints are left as they are", _unreadable(uri, exc))
        return []
    runs.sort(key=lambda run: ages[run.base_name], reverse=True)
    gone = []
    for run in runs[keep:]:
        if run.path.rstrip("/") == kept:
            continue
        try:
            fs.delete_dir(run.path)
        except OSError as exc:
            log.warning("could not delete %s/%s: %s", uri, run.base_name, exc)
            continue
        gone.append(f"{uri}/{run.base_name}")
    return gone
