"""The training job's configuration: one TOML file (or flags), validated before the job starts.

Every key is declared once in :data:`SCHEMA` with its type, default and the
values it accepts; an unknown key, a wrong type or a value out of range fails
naming the key, what was expected and what was given.

>>> cfg = TrainConfig.from_dict({"kafka": {"topic": "clicks"}, "job": {"parallelism": 2}})
>>> cfg.kafka.topic, cfg.kafka.dlq_topic, cfg.job.parallelism, cfg.model.optimizer
('clicks', 'clicks.dlq', 2, 'normalized')
>>> cfg.model.update, cfg.model.learning_rate, cfg.make_learner()
('event', 0.5, LogisticRegression(optimizer=Normalized(lr=0.5, invariant=True), ...))
>>> TrainConfig.from_dict({"job": {"parallelism": 0}})
Traceback (most recent call last):
...
streamlearn.errors.ConfigError: field `job.parallelism`: expected an integer >= 1, got 0

A complete file, every key optional::

    [kafka]
    bootstrap = "127.0.0.1:9092"
    topic = "events"
    group = "streamlearn-train"
    start = "earliest"          # earliest | latest | committed
    dlq_topic = "events.dlq"    # default: <topic>.dlq

    [model]
    task = "binary"             # regression | binary | multiclass
    update = "event"            # event: a step per event, in order (compiled kernel)
                                # batch: a step per job.step_events events (numpy)
    optimizer = "normalized"    # normalized (per event only) | sgd | adagrad | adam | ftrl
    learning_rate = 0.5         # default: 0.5 for normalized, 0.1 for the others
    rates = []                  # [1.0, 0.5]: a mixture of logistic regressions learned at
                                # these multiples of learning_rate, answering with their Bayes
                                # mixture (binary, normalized, per event; docs/learners.md)
    factors = 0                 # k > 0: a factorization machine, k factors per slot
                                # (binary or regression; learned per event)
    factor_learning_rate = 0.1  # the factors' AdaGrad rate
    factor_init_std = 0.1       # the factors start as normal draws of this deviation
    l1 = 0.0
    l2 = 0.0
    classes = []                # multiclass: labels known up front (others are discovered)

    [features]
    bits = 20
    dense = []                  # numeric features kept out of hashing
    crosses = []                # pairs of features crossed, like VW's -q: [["user", "item"]]
    scale = false               # online standard scaling of numeric features

    [job]
    parallelism = 2             # learners
    flush_events = 5000         # a learner receives a bundle every N events ...
    flush_ms = 50               # ... or every T ms, whichever first (default: job.sync_ms / 2)
    balance = "partitions"      # which learner learns a bundle: partitions (the one chained to
                                # the source subtask that read it) | bundles (each partition
                                # shared by bytes, so a hot partition does not set the pace)
    warmup_events = 100000      # learner 0 learns the stream's first N events alone and the
                                # others start from its model (default: 50000 per learner
                                # for a factorization machine, 0 for a linear model)
    step_events = 1000          # with model.update = "batch": steps of N events
    sync_ms = 100               # the merger commits a version at most this often
                                # (default: 100, or 50 for a factorization machine)
    merge = "progress"          # how learners' deltas merge: progress | shared | hybrid |
                                # average | ftrl (docs/merge.md; ftrl with
                                # model.optimizer = "ftrl" only)
    checkpoint_ms = 5000
    checkpoint_dir = ".state/checkpoints"
    bounded = false             # stop at the end offsets seen at start (tests, backfills)
    execution_mode = "thread"   # PyFlink Python execution: thread | process
    # after a fault (a lost TaskManager, the broker or the store away) the job waits
    # and restarts from its last checkpoint: Flink's exponential-delay strategy
    restart_initial_ms = 1000   # the first wait ...
    restart_multiplier = 2.0    # ... multiplied by this after each failed restart ...
    restart_max_ms = 60000      # ... up to this
    restart_jitter = 0.1        # each wait varies by up to this fraction of itself
    restart_reset_ms = 600000   # running this long without a fault resets wait and count
    restart_attempts = -1       # restarts before the job fails for good; -1: no limit, 0: none
    store_retry_ms = 10000      # the merger retries a failing commit in place this long
    writer_id = ""              # the model's one writer; "": generated once per start
    lease_ms = 30000            # the writer lease expires this long after its last renewal

    [store]
    uri = ".streamlearn/models"
    model = "default"
    keep_versions = 10          # retention: the newest N versions (+ the pinned one); 0: keep all
    snapshot_every_deltas = 500 # a version is a delta (the slots that changed); a snapshot
                                # (a compaction) after N deltas; 0: every version whole
    snapshot_max_delta_ratio = 0.5  # ... or once the deltas' bytes reach this share of it (0: off)
    snapshot_max_age_s = 600    # ... or once the last snapshot is this old (0: off)

    [join]                      # delayed labels (docs/joining.md); off while impressions = ""
    impressions = ""            # the topic of impressions: events with an id, no label
    labels = ""                 # the topic of labels: {"id": ..., "label": ..., "ts": ...}
    window_ms = 3600000         # a label counts if at most this long after its impression
    expire = "default"          # an impression unlabelled when its window closes: default | drop
    default = 0                 # ... is learned with this label (expire = "default")
    keep = "first"              # of several labels in the window: first | last (at its close)
    disorder_ms = 5000          # how far out of event-time order records may arrive
    idle_ms = 30000             # a partition silent this long is left out of event time
    remember_ms = 3600000       # a joined id is remembered this long after its window

    [flink]                     # Flink settings, passed to the job's configuration as they are
    "metrics.reporter.prom.factory.class" = "...PrometheusReporterFactory"  # see docs/training.md
    "metrics.reporter.prom.port" = "9249"
"""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from streamlearn.contract import CROSS_LIMIT, check_crosses
from streamlearn.errors import ConfigError
from streamlearn.joining import KEEPS

__all__ = [
    "TrainConfig",
    "SCHEMA",
    "KafkaConfig",
    "ModelConfig",
    "FeaturesConfig",
    "JobConfig",
    "StoreConfig",
    "JoinConfig",
    "apply_overrides",
    "new_writer_id",
    "RESERVED_FLINK_KEYS",
    "DEFAULT_SYNC_MS",
    "DEFAULT_FM_SYNC_MS",
    "DEFAULT_FM_WARMUP",
    "default_flush_ms",
]

TASKS = ("regression", "binary", "multiclass")
OPTIMIZERS = ("normalized", "sgd", "adagrad", "adam", "ftrl")
UPDATES = ("event", "batch")
#: how learners' deltas merge (``streamlearn.merge.STRATEGIES``, named here: the
#: configuration is read without importing the merger)
STRATEGIES = ("progress", "shared", "hybrid", "average", "ftrl")
#: ``model.learning_rate`` when it is not given, per optimiser (VW's 0.5 for the
#: normalised steps; FTRL's is its ``alpha``)
DEFAULT_RATES = {"normalized": 0.5, "sgd": 0.1, "adagrad": 0.1, "adam": 0.1, "ftrl": 0.1}
#: ``job.warmup_events`` when it is not given, for a factorization machine, per learner
#: (a linear model's default is 0): the start one learner gives the factors before P
#: learners move them apart (docs/training.md, "The factorization machine's warm-up")
DEFAULT_FM_WARMUP = 50_000
#: ``job.sync_ms`` when it is not given: a version every 100 ms, every 50 ms for a
#: factorization machine, whose learners, each learning its factors from the others'
#: on a base as old as a version, learn worse from older ones (docs/training.md)
DEFAULT_SYNC_MS, DEFAULT_FM_SYNC_MS = 100, 50


def default_flush_ms(sync_ms: int) -> int:
    """``job.flush_ms`` when it is not given: half of ``job.sync_ms``, so a learner sends
    at least two bundles a version.

    >>> default_flush_ms(DEFAULT_SYNC_MS), default_flush_ms(1)
    (50, 1)
    """
    return max(1, sync_ms // 2)


STARTS = ("earliest", "latest", "committed")
MODES = ("thread", "process")
#: ``job.balance``: how bundles reach learners (``flink_jobs/train.py``)
BALANCES = ("partitions", "bundles")
#: what becomes of an impression whose join window closes without a label
EXPIRES = ("default", "drop")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def _writer_id(v: Any) -> bool:
    return isinstance(v, str) and (v == "" or bool(_WRITER_ID.fullmatch(v)))


_WRITER_ID = re.compile(r"[A-Za-z0-9._:@/-]{1,200}")  # as streamlearn.store.lease accepts


def _label_value(v: Any) -> bool:
    return isinstance(v, bool | int | float | str)


def _topic_or_off(v: Any) -> bool:
    return isinstance(v, str)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


# key -> (check, expected, default)
_Check = tuple[Callable[[Any], bool], str, Any]

SCHEMA: dict[str, dict[str, _Check]] = {
    "kafka": {
        "bootstrap": (
            lambda v: isinstance(v, str) and ":" in v,
            "host:port[,host:port]",
            "127.0.0.1:9092",
        ),
        "topic": (lambda v: isinstance(v, str) and bool(v), "a topic name", "events"),
        "group": (
            lambda v: isinstance(v, str) and bool(v),
            "a consumer group id",
            "streamlearn-train",
        ),
        "start": (lambda v: v in STARTS, f"one of {', '.join(STARTS)}", "earliest"),
        "dlq_topic": (lambda v: isinstance(v, str), "a topic name ('' for <topic>.dlq)", ""),
    },
    "model": {
        "task": (lambda v: v in TASKS, f"one of {', '.join(TASKS)}", "binary"),
        "update": (lambda v: v in UPDATES, f"one of {', '.join(UPDATES)}", "event"),
        "optimizer": (
            lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}", "normalized"
        ),
        # None: the optimiser's own default (DEFAULT_RATES), filled in by from_dict
        "learning_rate": (lambda v: v is None or (_is_num(v) and v > 0), "a number > 0", None),
        "l1": (lambda v: _is_num(v) and v >= 0, "a number >= 0", 0.0),
        "l2": (lambda v: _is_num(v) and v >= 0, "a number >= 0", 0.0),
        "classes": (lambda v: isinstance(v, list), "a list of class labels", []),
        "rates": (  # at most MAX_COMPONENTS: checked by _check_rules
            lambda v: isinstance(v, list) and len(v) != 1 and all(_is_num(r) and r > 0 for r in v),
            "[] (one learner) or a list of 2 or more numbers > 0 (a mixture's rates, as "
            "multiples of model.learning_rate)", [],
        ),
        "factors": (
            lambda v: _is_int(v) and 0 <= v <= 256,
            "an integer from 0 (a linear model) to 256 (factors per slot)", 0,
        ),
        "factor_learning_rate": (lambda v: _is_num(v) and v > 0, "a number > 0", 0.1),
        "factor_init_std": (lambda v: _is_num(v) and v > 0, "a number > 0", 0.1),
    },
    "features": {
        "bits": (lambda v: _is_int(v) and 1 <= v <= 28, "an integer in 1..28", 20),
        "dense": (_str_list, "a list of feature names", []),
        "crosses": (
            lambda v: isinstance(v, list) and not isinstance(check_crosses(v), str),
            f"a list of [name, name] pairs of two different feature names, each pair once, "
            f"at most {CROSS_LIMIT}", [],
        ),
        "scale": (lambda v: isinstance(v, bool), "true or false", False),
    },
    "job": {
        "parallelism": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", 2),
        "flush_events": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", 5000),
        # None: half of job.sync_ms (from_dict)
        "flush_ms": (
            lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (milliseconds)", None
        ),
        "balance": (lambda v: v in BALANCES, f"one of {', '.join(BALANCES)}", "partitions"),
        # None: DEFAULT_FM_WARMUP per learner for a factorization machine, else 0 (from_dict)
        "warmup_events": (
            lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0 (0: no warm-up)", None
        ),
        "step_events": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", 1000),
        # None: DEFAULT_SYNC_MS, or DEFAULT_FM_SYNC_MS for a factorization machine (from_dict)
        "sync_ms": (
            lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 (milliseconds)", None
        ),
        "merge": (lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}", "progress"),
        "checkpoint_ms": (
            lambda v: _is_int(v) and v >= 100,
            "an integer >= 100 (milliseconds)",
            5000,
        ),
        "checkpoint_dir": (
            lambda v: isinstance(v, str) and bool(v),
            "a directory or URI",
            ".state/checkpoints",
        ),
        "bounded": (lambda v: isinstance(v, bool), "true or false", False),
        "execution_mode": (lambda v: v in MODES, f"one of {', '.join(MODES)}", "thread"),
        "restart_initial_ms": (
            lambda v: _is_int(v) and v >= 1,
            "an integer >= 1 (milliseconds)",
            1000,
        ),
        "restart_multiplier": (lambda v: _is_num(v) and v > 1, "a number > 1", 2.0),
        "restart_max_ms": (
            lambda v: _is_int(v) and v >= 1,
            "an integer >= 1 (milliseconds)",
            60000,
        ),
        "restart_jitter": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in 0..1", 0.1),
        "restart_reset_ms": (
            lambda v: _is_int(v) and v >= 1,
            "an integer >= 1 (milliseconds)",
            600000,
        ),
        "restart_attempts": (
            lambda v: _is_int(v) and v >= -1,
            "an integer >= 0 (0: no restart), or -1 for no limit",
            -1,
        ),
        "store_retry_ms": (
            lambda v: _is_int(v) and v >= 0,
            "an integer >= 0 (milliseconds; 0: fail over at once)",
            10000,
        ),
        "writer_id": (
            _writer_id,
            "'' (generated) or 1 to 200 letters, digits or . _ : @ / -",
            "",
        ),
        "lease_ms": (
            lambda v: _is_int(v) and v >= 1000,
            "an integer >= 1000 (milliseconds)",
            30000,
        ),
    },
    "join": {
        "impressions": (_topic_or_off, "a topic name ('' for no join)", ""),
        "labels": (_topic_or_off, "a topic name", ""),
        "window_ms": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (milliseconds)", 3600000),
        "expire": (lambda v: v in EXPIRES, f"one of {', '.join(EXPIRES)}", "default"),
        "default": (_label_value, "a label (a number, true/false or a class name)", 0),
        "keep": (lambda v: v in KEEPS, f"one of {', '.join(KEEPS)}", "first"),
        "disorder_ms": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (milliseconds)", 5000),
        "idle_ms": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (milliseconds)", 30000),
        "remember_ms": (
            lambda v: _is_int(v) and v >= 0, "an integer >= 0 (milliseconds)", 3600000
        ),
    },
    "store": {
        "uri": (
            lambda v: isinstance(v, str) and bool(v),
            "a directory or s3:// / hdfs:// URI",
            ".streamlearn/models",
        ),
        "model": (lambda v: isinstance(v, str) and bool(v), "a model name", "default"),
        "keep_versions": (
            lambda v: _is_int(v) and v >= 0,
            "an integer >= 0 (0: keep every version)",
            10,
        ),
        "snapshot_every_deltas": (
            lambda v: _is_int(v) and v >= 0,
            "an integer >= 0 (0: every version a snapshot)",
            500,
        ),
        "snapshot_max_delta_ratio": (
            lambda v: _is_num(v) and 0 <= v <= 1e6,
            "a number >= 0 (0: no limit by bytes)",
            0.5,
        ),
        "snapshot_max_age_s": (
            lambda v: _is_num(v) and 0 <= v <= 1e9,
            "a number of seconds >= 0 (0: no limit by age)",
            600,
        ),
    },
}

#: Flink settings the job derives from its own keys: set those instead (a ``[flink]``
#: key among these is refused, naming the key to use).
RESERVED_FLINK_KEYS: dict[str, str] = {
    "parallelism.default": "job.parallelism",
    "execution.checkpointing.interval": "job.checkpoint_ms",
    "execution.checkpointing.dir": "job.checkpoint_dir",
    "state.checkpoints.dir": "job.checkpoint_dir",
    "execution.state-recovery.path": "--resume",
    "python.execution-mode": "job.execution_mode",
    "python.executable": "the project's Python (set by the job)",
    "python.client.executable": "the project's Python (set by the job)",
    "python.pythonpath": "the project's Python (set by the job)",
    "restart-strategy.": "job.restart_*",
}


def _flink_value(v: Any) -> str | None:
    """A ``[flink]`` value as the string Flink's configuration takes (None: refused)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | int | float):
        return str(v)
    return None


def _check_flink(given: Any) -> dict[str, str]:
    if not isinstance(given, Mapping):
        raise ConfigError("flink", "a table of Flink settings", repr(given))
    out = {}
    for key, value in given.items():
        for reserved, instead in RESERVED_FLINK_KEYS.items():
            if key == reserved or (reserved.endswith(".") and key.startswith(reserved)):
                raise ConfigError(
                    f"flink.{key}", f"a key the job does not set itself (use {instead})",
                    repr(value),
                )
        text = _flink_value(value)
        if not key or text is None:
            raise ConfigError(
                f"flink.{key}", "a Flink setting: a string, number or true/false", repr(value)
            )
        out[str(key)] = text
    return out


def new_writer_id(model: str) -> str:
    """A writer id for one start of the training job on ``model``.

    >>> new_writer_id("clicks").startswith("train-clicks-")
    True
    """
    return f"train-{model}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str
    topic: str
    group: str
    start: str
    dlq_topic: str


@dataclass(frozen=True)
class ModelConfig:
    task: str
    update: str
    optimizer: str
    learning_rate: float
    l1: float
    l2: float
    classes: list = field(default_factory=list)
    rates: list = field(default_factory=list)
    factors: int = 0
    factor_learning_rate: float = 0.1
    factor_init_std: float = 0.1


@dataclass(frozen=True)
class FeaturesConfig:
    bits: int
    dense: list = field(default_factory=list)
    crosses: list = field(default_factory=list)
    scale: bool = False


@dataclass(frozen=True)
class JobConfig:
    parallelism: int
    flush_events: int
    flush_ms: int
    balance: str
    step_events: int
    sync_ms: int
    merge: str
    checkpoint_ms: int
    checkpoint_dir: str
    bounded: bool
    execution_mode: str
    restart_initial_ms: int
    restart_multiplier: float
    restart_max_ms: int
    restart_jitter: float
    restart_reset_ms: int
    restart_attempts: int
    store_retry_ms: int
    writer_id: str
    lease_ms: int
    warmup_events: int = 0


@dataclass(frozen=True)
class JoinConfig:
    impressions: str = ""
    labels: str = ""
    window_ms: int = 3600000
    expire: str = "default"
    default: Any = 0
    keep: str = "first"
    disorder_ms: int = 5000
    idle_ms: int = 30000
    remember_ms: int = 3600000

    @property
    def on(self) -> bool:
        """Whether the job joins labels to impressions (``impressions`` names a topic)."""
        return bool(self.impressions)


@dataclass(frozen=True)
class StoreConfig:
    uri: str
    model: str
    keep_versions: int
    snapshot_every_deltas: int = 500
    snapshot_max_delta_ratio: float = 0.5
    snapshot_max_age_s: float = 600

    def snapshot_policy(self) -> Any:
        """When the merger commits a snapshot instead of a delta
        (:class:`~streamlearn.store.SnapshotPolicy`); ``None`` when every version is one.

        >>> TrainConfig.from_dict({"store": {"snapshot_max_age_s": 0}}).store.snapshot_policy()
        SnapshotPolicy(max_deltas=500, max_delta_bytes_ratio=0.5, max_age_s=None)
        """
        from streamlearn.store import SnapshotPolicy

        if not self.snapshot_every_deltas:
            return None
        return SnapshotPolicy(
            max_deltas=self.snapshot_every_deltas,
            max_delta_bytes_ratio=self.snapshot_max_delta_ratio or None,
            max_age_s=self.snapshot_max_age_s or None,
        )


_SECTIONS = {
    "kafka": KafkaConfig,
    "model": ModelConfig,
    "features": FeaturesConfig,
    "job": JobConfig,
    "store": StoreConfig,
    "join": JoinConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """The validated configuration of one training job."""

    kafka: KafkaConfig
    model: ModelConfig
    features: FeaturesConfig
    job: JobConfig
    store: StoreConfig
    join: JoinConfig = field(default_factory=JoinConfig)
    #: Flink settings passed to the job's configuration as they are (``[flink]``)
    flink: Mapping[str, str] = field(default_factory=dict)

    # -- building -----------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Validate a nested mapping (as read from TOML); defaults fill the gaps."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", "a table of sections", type(data).__name__)
        unknown = set(data) - set(SCHEMA) - {"flink"}
        if unknown:
            raise ConfigError(
                sorted(unknown)[0],
                f"a section among {', '.join([*SCHEMA, 'flink'])}",
                "an unknown section",
            )
        built: dict[str, Any] = {}
        for section, keys in SCHEMA.items():
            given = data.get(section, {})
            if not isinstance(given, Mapping):
                raise ConfigError(section, "a table of keys", repr(given))
            extra = set(given) - set(keys)
            if extra:
                name = sorted(extra)[0]
                raise ConfigError(
                    f"{section}.{name}", f"one of {', '.join(keys)}", "an unknown key"
                )
            values = {}
            for key, (check, expected, default) in keys.items():
                value = given.get(key, default)
                if not check(value):
                    raise ConfigError(f"{section}.{key}", expected, repr(value))
                values[key] = value
            built[section] = values
        model = built["model"]
        if model["learning_rate"] is None:
            model["learning_rate"] = DEFAULT_RATES[model["optimizer"]]
        job, fm = built["job"], bool(model["factors"])
        if job["warmup_events"] is None:
            job["warmup_events"] = DEFAULT_FM_WARMUP * job["parallelism"] if fm else 0
        if job["sync_ms"] is None:
            job["sync_ms"] = DEFAULT_FM_SYNC_MS if fm else DEFAULT_SYNC_MS
        if job["flush_ms"] is None:
            job["flush_ms"] = default_flush_ms(job["sync_ms"])
        if not built["kafka"]["dlq_topic"]:
            built["kafka"]["dlq_topic"] = f"{built['kafka']['topic']}.dlq"
        flink = _check_flink(data.get("flink", {}))
        cfg = cls(
            **{name: _SECTIONS[name](**vals) for name, vals in built.items()}, flink=flink
        )
        cfg._check_rules()
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """Read a TOML file, apply ``section.key`` overrides, validate."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError("--config", "an existing TOML file", str(path)) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", "valid TOML", f"{path}: {exc}") from None
        return cls.from_dict(apply_overrides(data, overrides or {}))

    def _require(self, setting: str, rules: tuple[tuple[str, bool, str], ...]) -> None:
        """The first of ``rules`` (``section.key``, whether it holds, what it needs)
        that does not hold, as a ``ConfigError`` naming the key: needed ``with
        <setting>``."""
        for key, ok, expected in rules:
            if not ok:
                section, name = key.split(".")
                value = getattr(getattr(self, section), name)
                raise ConfigError(key, f"{expected} with {setting}", repr(value))

    def _check_rules(self) -> None:
        """Rules across keys, in one place."""
        if self.job.merge == "ftrl" and self.model.optimizer != "ftrl":
            raise ConfigError(
                "job.merge", "'progress', 'shared', 'hybrid' or 'average' unless "
                "model.optimizer = 'ftrl'",
                repr(self.job.merge),
            )
        m = self.model
        if m.factors:  # a factorization machine
            self._require(f"model.factors = {m.factors}", (
                ("model.task", m.task != "multiclass", "regression or binary"),
                ("model.update", m.update == "event", "'event' (learned per event)"),
                ("model.optimizer", m.optimizer != "adam", "normalized, sgd, adagrad or ftrl"),
                ("model.l1", not m.l1 or m.optimizer == "ftrl", "0 (or FTRL's own l1)"),
                ("features.scale", not self.features.scale, "false"),
            ))
        if m.rates:  # a mixture
            from streamlearn.learners.mixture import MAX_COMPONENTS  # numpy: only when needed

            if len(m.rates) > MAX_COMPONENTS:
                raise ConfigError(
                    "model.rates", f"at most {MAX_COMPONENTS} rates (one component each)",
                    repr(m.rates),
                )
            self._require(f"model.rates = {m.rates}", (
                ("model.task", m.task == "binary", "'binary'"),
                ("model.optimizer", m.optimizer == "normalized", "'normalized'"),
                ("model.factors", not m.factors, "0"),
                ("model.l1", not m.l1, "0 (use model.l2)"),
            ))
        if self.model.optimizer == "normalized" and self.model.update != "event":
            raise ConfigError(
                "model.update", "'event' with model.optimizer = 'normalized' (its steps read "
                "each event's values; or choose another optimizer)", repr(self.model.update),
            )
        if self.model.task != "multiclass" and self.model.classes and len(self.model.classes) != 2:
            raise ConfigError(
                "model.classes", "two labels for a binary task (or none)", repr(self.model.classes)
            )
        if self.job.flush_ms > self.job.sync_ms:
            raise ConfigError(
                "job.flush_ms", f"at most job.sync_ms ({self.job.sync_ms})", self.job.flush_ms
            )
        self._check_join()
        if self.job.restart_max_ms < self.job.restart_initial_ms:
            raise ConfigError(
                "job.restart_max_ms",
                f"at least job.restart_initial_ms ({self.job.restart_initial_ms})",
                self.job.restart_max_ms,
            )

    def _check_join(self) -> None:
        j = self.join
        if not j.on:
            return
        if self.job.bounded:
            raise ConfigError(
                "job.bounded", "false with a join (the joined events are written to "
                "kafka.topic while the job reads it)", "true",
            )
        if not j.labels:
            raise ConfigError("join.labels", "the topic of labels (join.impressions is set)", "''")
        for key, topic in (("join.impressions", j.impressions), ("join.labels", j.labels)):
            if topic == self.kafka.topic:
                raise ConfigError(
                    key, f"another topic than kafka.topic ({topic!r}: the job writes the "
                    "joined events there)", repr(topic),
                )
        if j.impressions == j.labels:
            raise ConfigError("join.labels", "another topic than join.impressions", repr(j.labels))
        if j.expire == "default":
            from streamlearn.errors import EventError
            from streamlearn.events import EventDecoder

            try:
                ok = not EventDecoder(self.model.task).decode(
                    json.dumps({"features": {"x": 1}, "label": j.default})
                )[1]
            except EventError:
                ok = False
            if not ok:
                raise ConfigError(
                    "join.default", f"a label of a {self.model.task} model", repr(j.default)
                )

    # -- using --------------------------------------------------------------
    def restart_strategy(self) -> dict[str, str]:
        """The Flink settings of the job's restart strategy (``job.restart_*``).

        >>> cfg = TrainConfig.from_dict({"job": {"restart_max_ms": 30000}})
        >>> for key, value in cfg.restart_strategy().items():
        ...     print(key.removeprefix("restart-strategy."), value)
        type exponential-delay
        exponential-delay.initial-backoff 1000 ms
        exponential-delay.max-backoff 30000 ms
        exponential-delay.backoff-multiplier 2.0
        exponential-delay.jitter-factor 0.1
        exponential-delay.reset-backoff-threshold 600000 ms
        exponential-delay.attempts-before-reset-backoff 2147483647
        >>> TrainConfig.from_dict({"job": {"restart_max_ms": 500}})
        Traceback (most recent call last):
        ...
        streamlearn.errors.ConfigError: field `job.restart_max_ms`: expected at least \
job.restart_initial_ms (1000), got 500
        """
        j = self.job
        if j.restart_attempts == 0:  # Flink's exponential-delay wants at least one attempt
            return {"restart-strategy.type": "none"}
        prefix = "restart-strategy.exponential-delay"
        return {
            "restart-strategy.type": "exponential-delay",
            f"{prefix}.initial-backoff": f"{j.restart_initial_ms} ms",
            f"{prefix}.max-backoff": f"{j.restart_max_ms} ms",
            f"{prefix}.backoff-multiplier": str(float(j.restart_multiplier)),
            f"{prefix}.jitter-factor": str(float(j.restart_jitter)),
            f"{prefix}.reset-backoff-threshold": f"{j.restart_reset_ms} ms",
            f"{prefix}.attempts-before-reset-backoff": str(
                j.restart_attempts if j.restart_attempts >= 0 else 2**31 - 1
            ),
        }

    @property
    def models_topic(self) -> str:
        """Where the job announces each committed version (``<topic>.models``)."""
        return f"{self.kafka.topic}.models"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {
            name: {
                f.name: getattr(getattr(self, name), f.name) for f in fields(getattr(self, name))
            }
            for name in _SECTIONS
        }
        out["flink"] = dict(self.flink)
        return out

    def with_writer(self) -> TrainConfig:
        """This configuration with ``job.writer_id`` set: as given, or a new one.

        Generated once per start and carried in the job's configuration, so every
        restart of the job from a checkpoint is the same writer.
        """
        if self.job.writer_id:
            return self
        return replace(self, job=replace(self.job, writer_id=new_writer_id(self.store.model)))

    def make_learner(self) -> Any:
        """A fresh learner for this configuration."""
        from streamlearn import optim
        from streamlearn.learners import (
            FMClassifier,
            FMRegressor,
            LinearRegression,
            LogisticMixture,
            LogisticRegression,
            SoftmaxRegression,
        )

        m, f = self.model, self.features
        penalty = {"l1": m.l1, "l2": m.l2}
        opt: optim.Optimizer
        if m.optimizer == "normalized":  # a factorization machine's: not invariant
            opt = optim.Normalized(m.learning_rate, invariant=not m.factors)
        elif m.optimizer == "sgd":
            opt = optim.SGD(m.learning_rate)
        elif m.optimizer == "adagrad":
            opt = optim.AdaGrad(m.learning_rate)
        elif m.optimizer == "adam":
            opt = optim.Adam(m.learning_rate)
        else:
            opt = optim.FTRL(alpha=m.learning_rate, l1=m.l1, l2=m.l2)
            penalty = {}
        common: dict[str, Any] = {
            "bits": f.bits, "dense": list(f.dense), "scale": f.scale, "update": m.update,
            "crosses": [tuple(pair) for pair in f.crosses], **penalty,
        }
        if m.update == "event":  # the intercept learned by the optimiser's rule, as VW does
            common["intercept_lr"] = None
        if m.factors:
            del common["update"], common["scale"]
            common.pop("l1", None)
            fm = {"k": m.factors, "factor_optimizer": optim.AdaGrad(m.factor_learning_rate),
                  "init_std": m.factor_init_std, **common}
            if m.task == "regression":
                return FMRegressor(opt, **fm)
            return FMClassifier(opt, classes=m.classes or None, **fm)
        if m.task == "regression":
            return LinearRegression(opt, **common)
        if m.rates:  # each component's plain normalised step
            return LogisticMixture(optim.Normalized(m.learning_rate, invariant=False),
                                   rates=m.rates, classes=m.classes or None, **common)
        if m.task == "binary":
            return LogisticRegression(opt, classes=m.classes or None, **common)
        return SoftmaxRegression(opt, classes=m.classes or None, **common)


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"job.parallelism": 4}`` → a copy of ``data`` with that key set."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(dotted, "section.key", "no section")
        out.setdefault(section, {})
        if not isinstance(out[section], dict):
            raise ConfigError(section, "a table of keys", repr(out[section]))
        out[section][key] = value
    return out
