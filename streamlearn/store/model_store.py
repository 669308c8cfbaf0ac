"""The versioned model store: :class:`ModelStore`.

Layout of one model under the store's root (``<root>/<model>/``)::

    HEAD.json                            {"latest": 7, "pinned": null}: the one file servers poll
    commits/000000000007.json            commit record of version 7 (created exclusively: the claim)
    versions/000000000007-<token>.arrow  the model (a snapshot) or the rows that changed since
                                         its parent (a delta), Arrow IPC file, lineage in the schema
    index/000000000001-000000000512.json sealed segment: the commit records of 512 versions
    index/tail.json                      the commit records after the last sealed segment
    .lock                                local filesystems only: guards HEAD and index updates

Committing writes the Arrow file first, under a name no one reads yet, then
creates the commit record for the next number *exclusively*; a writer that
loses the race for a number rewrites its file under the next one. Only then is
``HEAD.json`` advanced (never backwards) and the index updated. So a version is
visible only once fully written, numbers are never used twice, and the head only
goes up. ``docs/store.md`` says what holds on S3, where pyarrow offers no
conditional write.

A delta version (:meth:`ModelStore.commit_delta`) holds only the changed slots;
:meth:`ModelStore.get` materialises it from the nearest snapshot and the deltas
after it (advancing a cached copy in place), :meth:`ModelStore.changes` gives a
follower the union of the deltas since the version it holds.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc

from streamlearn.errors import StateError, StoreError, ValidationError, VersionNotFound
from streamlearn.state import ModelState
from streamlearn.store.delta import (
    BrokenChain,
    Chain,
    Changes,
    StaleParent,
    Update,
    model_n_slots,
    per_slot_names,
    shared,
)
from streamlearn.store.files import Files, files_for
from streamlearn.store.lease import (
    ACQUIRE_ATTEMPTS,
    DEFAULT_LEASE_MS,
    Lease,
    WriterBusy,
    WriterFenced,
    WriterInfo,
    backoff,
    check_lease_ms,
    check_writer_id,
    claim_token,
    new_claim,
)
from streamlearn.store.lineage import Lineage
from streamlearn.store.location import resolve
from streamlearn.store.records import Head, ModelVersion, VersionInfo
from streamlearn.store.version_file import (
    as_table,
    read_version,
    stamp_store_metadata,
    strip_store_metadata,
    write_version,
)

__all__ = ["ModelStore", "DEFAULT_MODEL", "DEFAULT_SEGMENT_SIZE"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_SEGMENT_SIZE = 512
_MAX_CLAIM_ATTEMPTS = 1000
#: The kind of a commit record whose writer was found fenced out right after
#: writing it: the number stays used (so index segments still seal), the file
#: is deleted, HEAD never points at it and ``get`` refuses it.
FENCED = "fenced"
#: The kind of a commit record of a delta (or compaction) refused after its
#: number was taken because another version came first: a tombstone like FENCED.
REFUSED = "refused"
TOMBSTONES = (FENCED, REFUSED)
DELTA = "delta"
COMPACT = "compact"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
#: The only shape of a model file a commit record may name: one plain file of
#: ``versions/`` (the store writes ``versions/<12 digits>-<token>.arrow``). No
#: ``..``, no further ``/``, nothing absolute: a name read from metadata never
#: leaves the model's directory.
_STORED_FILE = re.compile(r"versions/[A-Za-z0-9_-][A-Za-z0-9._-]{0,250}")


def _check_model(name: object) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 128
        or name[0] in "._-"
        or not set(name) <= _NAME_CHARS
    ):
        raise ValidationError(
            "model",
            "a name of letters, digits, '.', '_' or '-' (not first), at most 128 characters",
            repr(name),
        )
    return name


def _check_version(version: object, field: str = "version", lowest: int = 1) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < lowest:
        what = "an integer >= 1" if lowest == 1 else "an integer >= 0, 0 the initial state"
        raise ValidationError(field, f"a version number ({what})", repr(version))
    return version


class ModelStore:
    """Versioned models on any pyarrow filesystem.

    Parameters
    ----------
    uri
        Where the store lives: a directory (default ``./.streamlearn/models``),
        ``file:///path``, ``s3://bucket/prefix?endpoint_override=host:port&scheme=http&region=...``
        (credentials from ``access_key``/``secret_key`` options or the usual
        ``AWS_*`` variables), or ``hdfs://...``. With ``filesystem`` given,
        ``uri`` is the root path inside it.
    model
        Which model of the store this handle reads and writes; several named
        models share one store (see :meth:`models` and :meth:`with_model`).
    filesystem
        A :class:`pyarrow.fs.FileSystem` to use instead of resolving ``uri``.
    segment_size
        How many commit records one sealed index segment holds (what makes
        :meth:`list` one read per ``segment_size`` versions).

    Examples
    --------
    >>> import tempfile, pyarrow as pa
    >>> store = ModelStore(tempfile.mkdtemp(), model="ctr")
    >>> v1 = store.commit(pa.table({"w": [0.0, 0.0]}), Lineage(events=0))
    >>> v2 = store.commit(pa.table({"w": [0.3, -0.1]}),
    ...                    Lineage(offsets={"events": {0: 1000}}, events=1000,
    ...                            metrics={"log_loss": 0.52}))
    >>> store.latest(), store.current()
    (2, 2)
    >>> model = store.get()
    >>> model.table.column("w").to_pylist(), model.lineage.parents, model.lineage.events
    ([0.3, -0.1], (1,), 1000)
    >>> store.rollback(1)
    3
    >>> [(i.version, i.kind, i.rollback_of) for i in store.list()]
    [(1, 'snapshot', None), (2, 'snapshot', None), (3, 'rollback', 1)]
    >>> store.pin(2); store.current()
    2
    >>> store.retain(keep_last=1)
    [1]
    >>> try:
    ...     store.get(1)
    ... except VersionNotFound as exc:
    ...     print(exc)
    model 'ctr': version 1 was deleted by retention; versions still stored: 2, 3
    """

    def __init__(
        self,
        uri: str | None = None,
        model: str = DEFAULT_MODEL,
        *,
        filesystem: pafs.FileSystem | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        if filesystem is not None:
            if not isinstance(uri, str) or not uri:
                raise ValidationError("uri", "the store's root path inside `filesystem`", repr(uri))
            fs, root = filesystem, uri.rstrip("/")
        else:
            fs, root = resolve(uri)
        if isinstance(segment_size, bool) or not isinstance(segment_size, int) or segment_size < 2:
            raise ValidationError("segment_size", "an integer >= 2", repr(segment_size))
        self.uri = uri
        self.model = _check_model(model)
        self.filesystem = fs
        self.root = root
        self.segment_size = segment_size
        self._files: Files = files_for(fs)
        self._dir = f"{root}/{self.model}"
        self._prepared = False
        #: the newest version materialised (see :meth:`get`), updated in place
        self._cache: _Materialised | None = None
        self._cache_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"ModelStore({self.uri!r}, model={self.model!r})"

    # -- paths ---------------------------------------------------------------

    def _path(self, rel: str) -> str:
        return f"{self._dir}/{rel}"

    @staticmethod
    def _commit_rel(version: int) -> str:
        return f"commits/{version:012d}.json"

    def _prepare(self) -> None:
        if not self._prepared:
            for sub in ("commits", "versions", "index"):
                self._files.makedirs(self._path(sub))
            self._prepared = True

    # -- models ----------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models in this store (those with at least one version)."""
        names = [n for n in self._files.list_dirs(self.root) if not n.startswith(".")]
        return sorted(n for n in names if self._files.exists(f"{self.root}/{n}/HEAD.json"))

    def with_model(self, model: str) -> ModelStore:
        """A handle on another model of the same store (same filesystem)."""
        return ModelStore(
            self.root, model, filesystem=self.filesystem, segment_size=self.segment_size
        )

    # -- reading ----------------------------------------------------------------

    def head(self) -> Head:
        """The latest version and the pin, from one read of one small file.

        This is what a prediction server polls; on a local disk it costs a
        ``open``+``read`` of ~40 bytes (tens of microseconds), on S3 one GET.
        """
        try:
            raw = self._load_json(self._path("HEAD.json"))
        except FileNotFoundError:
            return Head(latest=None)
        if not isinstance(raw, dict):
            raise self._damaged("HEAD.json", "a JSON object", raw)
        latest, pinned = raw.get("latest"), raw.get("pinned")
        for name, value in (("latest", latest), ("pinned", pinned)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise self._damaged(
                    f"HEAD.json `{name}`", "a version number (an integer >= 1) or null", value
                )
        return Head(latest=latest, pinned=pinned)

    def _damaged(
        self, what: str, expected: str, got: object, version: int | None = None
    ) -> StoreError:
        """The error for store metadata that is not what the store writes (never followed)."""
        where = f"model {self.model!r}" + (f" version {version}" if version is not None else "")
        shown = repr(got)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        return StoreError(
            f"{where}: {what} should be {expected}, got {shown}; the store's metadata was "
            "damaged or edited, so it is refused (restore the file from a backup or delete it)"
        )

    def _checked(self, record: object, version: int | None = None) -> dict[str, Any]:
        """A commit record read from the store, refused unless its names stay in the model.

        ``version`` is the number the record was read under (its commit file),
        when known; the record must say the same.
        """
        if not isinstance(record, dict):
            raise self._damaged("the commit record", "a JSON object", record, version)
        number = record.get("version")
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise self._damaged("the commit record's `version`", "an integer >= 1", number, version)
        if version is not None and number != version:
            raise self._damaged("the commit record's `version`", str(version), number, version)
        if record.get("kind") in (DELTA, COMPACT):
            for key in ("parent", "base"):
                link = record.get(key)
                top = number if key == "base" and record.get("kind") == COMPACT else number - 1
                if isinstance(link, bool) or not isinstance(link, int) or not 1 <= link <= top:
                    raise self._damaged(
                        f"the commit record's `{key}`", f"a version number up to {top}",
                        link, number,
                    )
        name = record.get("file")
        if not isinstance(name, str) or not _STORED_FILE.fullmatch(name):
            raise self._damaged(
                "the commit record's `file`",
                "a file of the model's versions/ directory (versions/NAME, no '..' or '/')",
                name,
                number,
            )
        return record

    def _load_json(self, path: str) -> Any:
        """Read and parse a small JSON file; FileNotFoundError if it is absent.

        pyarrow reads an S3 object as a HEAD (for its size) then a ranged GET;
        if the object is replaced in between, the GET can return a prefix of the
        new content. A proper prefix of a JSON object or array is never valid
        JSON, so a failed parse means "read again", not "corrupt".
        """
        delay = 0.002
        for _ in range(10):
            try:
                return orjson.loads(self._files.read(path))
            except FileNotFoundError:
                raise
            except (orjson.JSONDecodeError, OSError) as exc:
                if self._files.atomic and isinstance(exc, orjson.JSONDecodeError):
                    break  # local replace is atomic: this file really is damaged
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        raise StoreError(
            f"model {self.model!r}: {path} is not the JSON the store writes; "
            "was it edited by hand? Restore it from the commit records or delete it"
        )

    def _nothing_committed(self) -> VersionNotFound:
        return VersionNotFound(
            f"model {self.model!r} has no versions in {self.root!r}; commit one first"
            + (f" (models here: {', '.join(self.models())})" if self.models() else "")
        )

    def latest(self) -> int:
        """The newest version number; :class:`VersionNotFound` if none."""
        latest = self.head().latest
        if latest is None:
            raise self._nothing_committed()
        return latest

    def current(self) -> int:
        """The version to serve: the pinned one if pinned, else the latest."""
        current = self.head().current
        if current is None:
            raise self._nothing_committed()
        return current

    def _read_record(self, version: int) -> dict[str, Any] | None:
        try:
            record = self._load_json(self._path(self._commit_rel(version)))
        except FileNotFoundError:
            return None
        return self._checked(record, version)

    def _gone(self, version: int) -> VersionNotFound:
        head = self.head()
        if head.latest is None:
            return self._nothing_committed()
        if version > head.latest:
            return VersionNotFound(
                f"model {self.model!r}: version {version} does not exist yet; "
                f"the latest is {head.latest}"
            )
        kept = [i.version for i in self.list() if i.available]
        return VersionNotFound(
            f"model {self.model!r}: version {version} was deleted by retention; "
            f"versions still stored: {', '.join(map(str, kept[-10:]))}"
        )

    def info(self, version: int | None = None) -> VersionInfo:
        """Metadata of one version (default: the current one), without its weights."""
        head = self.head()
        if version is None:
            if head.current is None:
                raise self._nothing_committed()
            version = head.current
        version = _check_version(version)
        record = self._read_record(version)
        if record is None:
            found = [i for i in self.list() if i.version == version]
            if not found:
                raise self._gone(version)
            return found[0]
        info = VersionInfo.from_record(record)
        return info.with_status(
            available=self._files.exists(self._path(info.file)),
            pinned=head.pinned == version,
            current=head.current == version,
        )

    def get(self, version: int | None = None) -> ModelVersion:
        """Load a version (default: :meth:`current`).

        Raises :class:`VersionNotFound` if the version does not exist or was
        deleted by retention; a version is never returned half-read.
        """
        if version is None:
            version = self.current()
        version = _check_version(version)
        record = self._read_record(version)
        if record is None:
            raise self._gone(version)
        info = VersionInfo.from_record(record)
        if info.kind in TOMBSTONES:
            raise self._discarded(info)
        if info.is_delta:
            if not self._files.exists(self._path(info.file)):
                raise self._missing(info, None)  # pruned by retention (or lost: BrokenChain)
            return self._materialise(info)
        model = self._read_snapshot(info)
        self._seed_cache(model)
        return model

    def _read_snapshot(self, info: VersionInfo, needed_by: int | None = None) -> ModelVersion:
        version = info.version
        where = f"model {self.model!r} version {version}"
        try:
            buf = self._files.read_buffer(self._path(info.file))
        except FileNotFoundError:
            raise self._missing(info, needed_by) from None
        except OSError as exc:  # S3: deleted between pyarrow's HEAD and its GET
            if not self._files.exists(self._path(info.file)):
                raise self._missing(info, needed_by) from None
            raise StoreError(f"{where}: could not read {info.file} ({exc})") from exc
        try:
            table, meta = read_version(buf, where)
        except StateError as exc:
            if needed_by is None:
                raise
            raise BrokenChain(
                f"{exc}; version {needed_by} is materialised from it", self.model, version
            ) from None
        if meta.get("version") != version:
            raise StoreError(f"{where}: its file says version {meta.get('version')}")
        return ModelVersion(info=info, table=table, payload_kind=meta.get("payload", "arrow"))

    # -- the index ---------------------------------------------------------------

    def _segments(self) -> list[tuple[int, int, str]]:
        out = []
        for name in self._files.list_names(self._path("index")):
            stem = name.removesuffix(".json")
            start, sep, end = stem.partition("-")
            if sep and start.isdigit() and end.isdigit() and not name.startswith("."):
                out.append((int(start), int(end), name))
        return sorted(out)

    def _read_json_list(self, rel: str) -> list[dict[str, Any]]:
        """The commit records of an index file (each checked like a commit file's)."""
        try:
            records = self._load_json(self._path(rel))
        except FileNotFoundError:
            return []
        if not isinstance(records, list):
            raise self._damaged(rel, "a JSON array of commit records", type(records).__name__)
        return [self._checked(r) for r in records]

    def _open_records(
        self, sealed_end: int, known: dict[int, dict[str, Any]], upto: int
    ) -> dict[int, dict[str, Any]]:
        """Commit records after ``sealed_end``: ``known`` plus any gap or newer one on disk."""
        records = {v: r for v, r in known.items() if v > sealed_end}
        for v in range(sealed_end + 1, upto + 1):  # gaps: a writer died before indexing
            if v not in records:
                record = self._read_record(v)
                if record is not None:
                    records[v] = record
        v = max(records, default=max(upto, sealed_end)) + 1
        while (record := self._read_record(v)) is not None:  # newer than the index knows
            records[v] = record
            v += 1
        return records

    def _index_add(self, record: dict[str, Any]) -> None:
        segments = self._segments()
        sealed_end = segments[-1][1] if segments else 0
        known = {r["version"]: r for r in self._read_json_list("index/tail.json")}
        known[record["version"]] = record
        records = self._open_records(sealed_end, known, record["version"])
        while all(v in records for v in range(sealed_end + 1, sealed_end + self.segment_size + 1)):
            start, end = sealed_end + 1, sealed_end + self.segment_size
            segment = [records.pop(v) for v in range(start, end + 1)]
            self._files.write_atomic(
                self._path(f"index/{start:012d}-{end:012d}.json"), orjson.dumps(segment)
            )
            sealed_end = end
        tail = [records[v] for v in sorted(records)]
        self._files.write_atomic(self._path("index/tail.json"), orjson.dumps(tail))

    def list(self) -> list[VersionInfo]:
        """Every version ever committed, oldest first, with status flags.

        Reads one file per sealed segment (``segment_size`` versions), the tail
        of the index and the directory listing of the stored files: for 10,000
        versions that is about twenty small reads, not ten thousand.
        """
        head = self.head()
        if head.latest is None:
            return []
        segments = self._segments()
        records: dict[int, dict[str, Any]] = {}
        for _, _, name in segments:
            for r in self._read_json_list(f"index/{name}"):
                records[r["version"]] = r
        sealed_end = segments[-1][1] if segments else 0
        tail = {r["version"]: r for r in self._read_json_list("index/tail.json")}
        records.update(self._open_records(sealed_end, tail, head.latest))
        stored = set(self._files.list_names(self._path("versions")))
        out = []
        for v in sorted(records):
            record = records[v]
            out.append(
                VersionInfo.from_record(
                    record,
                    available=record["file"].rpartition("/")[2] in stored,
                    pinned=head.pinned == v,
                    current=head.current == v,
                )
            )
        return out

    # -- the writer lease -----------------------------------------------------------

    def _claims(self) -> builtins.list[tuple[int, str]]:
        """``(token, file name)`` of every lease file, oldest token first."""
        out = []
        for name in self._files.list_names(self._path("writer")):
            token = claim_token(name)
            if token is not None:
                out.append((token, name))
        return sorted(out)

    def _read_claim(self, name: str) -> WriterInfo | None:
        try:
            raw = self._load_json(self._path(f"writer/{name}"))
        except FileNotFoundError:
            return None  # cleaned up by a newer writer meanwhile
        return WriterInfo.from_raw(raw, name)

    def _write_claim(self, info: WriterInfo) -> None:
        self._files.write_atomic(self._path(f"writer/{info.name}"), info.to_json())

    def _top(self, claims: builtins.list[tuple[int, str]]) -> builtins.list[WriterInfo]:
        """The lease files of the newest token (normally one)."""
        if not claims:
            return []
        top = claims[-1][0]
        infos = [self._read_claim(n) for t, n in claims if t == top]
        return [i for i in infos if i is not None]

    def writer(self) -> WriterInfo | None:
        """The model's newest lease (live or not), or None if no writer ever took one.

        ``.live()`` says whether it still holds: held and not expired.
        """
        top = self._top(self._claims())
        held = [i for i in top if i.state != "lost"]
        return next(iter(held or top), None)

    def _busy(self, holder: WriterInfo, doing: str) -> WriterBusy:
        return WriterBusy(
            f"model {self.model!r} has a live writer: {holder.describe()}; cannot {doing}. "
            "Stop that writer, wait for its lease to expire, or, if it is dead, run "
            f"`streamlearn models unlock --model {self.model}`",
            holder,
        )

    def _refuse_if_held(self, doing: str, writer_id: str | None = None) -> None:
        now = time.time()
        for info in self._top(self._claims()):
            if info.live(now) and info.writer_id != writer_id:
                raise self._busy(info, doing)

    def acquire_writer(
        self, writer_id: str, lease_ms: int = DEFAULT_LEASE_MS, *, force: bool = False
    ) -> Lease:
        """Become the model's one writer; returns the :class:`Lease` to commit with.

        Refused with :class:`WriterBusy` (naming the other writer, its host,
        pid, last renewal and expiry) while a *different* writer holds a live
        lease. The same ``writer_id`` may acquire again at once (a job
        restarted from its checkpoint keeps its id): the new lease gets a new,
        higher token, which fences out the previous holder. ``force=True``
        takes the lease even from a live writer (``streamlearn models unlock``).

        The lease holds for ``lease_ms`` from each renewal; renew it with
        :meth:`Lease.renew` or :meth:`Lease.keep_alive`.

        Examples
        --------
        >>> import tempfile, pyarrow as pa
        >>> store = ModelStore(tempfile.mkdtemp(), model="ctr")
        >>> lease = store.acquire_writer("trainer-1")
        >>> store.commit(pa.table({"w": [0.5]}), lease=lease), store.info(1).writer_token
        (1, 1)
        >>> try:
        ...     store.acquire_writer("trainer-2")
        ... except WriterBusy as exc:
        ...     print(exc.holder.writer_id, exc.holder.token)
        trainer-1 1
        >>> again = store.acquire_writer("trainer-1")   # the same writer, restarted
        >>> try:
        ...     store.commit(pa.table({"w": [0.4]}), lease=lease)
        ... except WriterFenced as exc:
        ...     print(str(exc)[:60])
        model 'ctr': writer 'trainer-1' (token 1) was fenced out: an
        >>> again.release(); store.acquire_writer("trainer-2").token
        3
        """
        return self._acquire(check_writer_id(writer_id), check_lease_ms(lease_ms), force)

    def _acquire(self, writer_id: str, lease_ms: int, force: bool, quiet: bool = False) -> Lease:
        self._prepare()
        self._files.makedirs(self._path("writer"))
        for attempt in range(ACQUIRE_ATTEMPTS):
            claims = self._claims()
            if not force:
                now = time.time()
                for info in self._top(claims):
                    if info.live(now) and info.writer_id != writer_id:
                        raise self._busy(info, f"acquire it for writer {writer_id!r}")
            token = (claims[-1][0] if claims else 0) + 1
            mine = new_claim(token, writer_id, lease_ms)
            # On a local disk the lease file is written inside the lock a commit
            # holds while it checks its token and moves HEAD, so a takeover falls
            # wholly before or wholly after a commit. (No lock on S3: see docs.)
            with self._files.locked(self._path(".lock")):
                self._write_claim(mine)
            rivals = [n for t, n in self._claims() if t >= token and n != mine.name]
            if not rivals:
                for t, n in claims:  # older tokens are superseded: keep the directory small
                    if t < token:
                        self._files.delete(self._path(f"writer/{n}"))
                logger.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "model %r: writer %r acquired the lease (token %d, %d ms)",
                    self.model, writer_id, token, lease_ms,
                )
                lease = Lease(self, mine)
                lease.quiet = quiet
                return lease
            self._write_claim(replace(mine, state="lost", expires_at=time.time()))
            backoff(attempt)
        raise StoreError(
            f"model {self.model!r}: could not acquire the writer lease after "
            f"{ACQUIRE_ATTEMPTS} attempts; other writers keep racing for it"
        )

    def unlock(self) -> WriterInfo | None:
        """Take the lease from whoever holds it and release it at once.

        For a writer that died holding its lease (rather than wait for it to
        expire). A writer that is in fact alive is fenced out: its next commit
        or renewal fails with :class:`WriterFenced`. Returns the lease that
        was broken, if it was live.
        """
        before = self.writer()
        self._acquire("unlock", 1000, force=True, quiet=True).release()
        return before if before is not None and before.live() else None

    def _fence(self, lease: Lease) -> None:
        """Raise :class:`WriterFenced` if a token newer than ``lease``'s exists."""
        if lease.store._dir != self._dir:
            raise StoreError(
                f"model {self.model!r}: the lease given is for {lease.store._dir!r}, "
                f"not {self._dir!r}"
            )
        newer = [(t, n) for t, n in self._claims() if t > lease.token]
        if newer:
            held = [i for i in self._top(newer) if i.state != "lost"]
            other = held[0] if held else None
            who = other.describe() if other is not None else f"token {newer[-1][0]}"
            raise WriterFenced(
                f"model {self.model!r}: writer {lease.writer_id!r} (token {lease.token}) was "
                f"fenced out: another writer took the lease since ({who}); this writer must "
                "stop, its commits are refused",
                other,
            )

    def _fence_after_commit(self, lease: Lease, record: dict[str, Any]) -> None:
        """The authoritative fence check, made after the commit record is written.

        A writer taken over between its early check and its commit record
        turns the record into a ``fenced`` tombstone (the number stays used,
        the file is deleted, HEAD is not moved) and raises.
        """
        try:
            self._fence(lease)
        except WriterFenced:
            version = record["version"]
            tomb = {**record, "kind": FENCED}
            self._files.write_atomic(self._path(self._commit_rel(version)), orjson.dumps(tomb))
            self._files.delete(self._path(record["file"]))
            self._index_add(tomb)
            logger.warning(
                "model %r: version %d discarded: writer %r (token %d) was fenced out",
                self.model, version, lease.writer_id, lease.token,
            )
            raise

    def _discarded(self, info: VersionInfo) -> VersionNotFound:
        if info.kind == REFUSED:
            return VersionNotFound(
                f"model {self.model!r}: version {info.version} was discarded: another version "
                f"was committed after its parent {info.parent} first"
            )
        return VersionNotFound(
            f"model {self.model!r}: version {info.version} was discarded: its writer "
            f"{info.writer_id!r} (token {info.writer_token}) had been fenced out by a newer writer"
        )

    # -- writing -----------------------------------------------------------------

    def commit(
        self,
        state: object,
        lineage: Lineage | None = None,
        *,
        lease: Lease | None = None,
        from_initial: tuple[str, Changes] | None = None,
    ) -> int:
        """Store a new version; returns its number.

        Parameters
        ----------
        state
            The model: Arrow IPC bytes (``ModelState.to_bytes()``), an object with
            ``to_bytes()``, a pyarrow Table/RecordBatch, or any other bytes (kept
            verbatim, see :meth:`ModelVersion.to_bytes`).
        lineage
            What it reflects; empty ``parents`` become the previous latest version,
            an empty ``created_at`` the commit time.
        lease
            The writer lease (:meth:`acquire_writer`) this version is committed
            under; its token goes into the commit record, and the commit is
            refused with :class:`WriterFenced` if a newer writer took over
            (checked again after the commit record is written, see
            ``docs/store.md``). Without a lease, a commit is refused with
            :class:`WriterBusy` while another writer holds a live lease.
        from_initial
            ``(initial, changes)``: the same model as the changes on the
            model's initial state, which the writer names by the key
            ``initial`` (e.g. a digest of the configuration that built it).
            Stored beside the snapshot, in a file the size of the changes
            (``VersionInfo.from_initial``), so that a follower still holding
            that initial state updates from them (:meth:`changes` with
            ``since=0`` and the same key) instead of reading the model whole.
            A model state only.
        """
        if lineage is None:
            lineage = Lineage()
        if not isinstance(lineage, Lineage):
            raise ValidationError("lineage", "a streamlearn.store.Lineage", type(lineage).__name__)
        table, payload_kind = as_table(state)
        if from_initial is not None:
            from_initial = self._check_from_initial(from_initial, table, payload_kind)
        return self._commit_table(
            table, payload_kind, lineage, kind="snapshot", rollback_of=None, lease=lease,
            from_initial=from_initial,
        )

    def _check_from_initial(
        self, from_initial: object, table: pa.Table, payload_kind: str
    ) -> tuple[str, Changes]:
        if (
            not isinstance(from_initial, tuple)
            or len(from_initial) != 2
            or not isinstance(from_initial[0], str)
            or not from_initial[0]
            or not isinstance(from_initial[1], Changes)
        ):
            raise ValidationError(
                "from_initial", "a (key, Changes) pair, the key a non-empty string",
                repr(from_initial)[:80],
            )
        layout = _layout_of(table) if payload_kind == "arrow" else None
        if layout is None:
            raise ValidationError(
                "from_initial", "a model state to commit (ModelState.to_arrow/to_bytes)",
                "another payload",
            )
        changes = from_initial[1]
        if changes.meta is None:
            raise ValidationError("from_initial.meta", "the model's metadata (a dict)", "None")
        self._check_changes(changes, layout, None)
        return from_initial

    def commit_delta(
        self,
        changes: Changes,
        lineage: Lineage | None = None,
        *,
        parent: int,
        lease: Lease | None = None,
    ) -> int:
        """Store a new version as the changes on ``parent``; returns its number.

        Parameters
        ----------
        changes
            The slots that changed since ``parent``, the new values of every
            per-slot array there, every small array whole and the model's
            metadata (:class:`Changes`, e.g. :meth:`Changes.gather`).
        lineage
            As for :meth:`commit`; its ``parents``, if given, must be ``(parent,)``.
        parent
            The version these changes apply to: it must be the latest version
            (:class:`StaleParent` otherwise, also when another version is
            committed meanwhile), a version of a model state.
        lease
            As for :meth:`commit`.

        The file holds only the changed rows (see ``docs/store.md``), so its
        size grows with ``len(changes)``, not with the model. A parent whose
        own file is missing gives :class:`BrokenChain`: commit a snapshot.
        """
        if not isinstance(changes, Changes):
            raise ValidationError("changes", "a streamlearn.store.Changes", type(changes).__name__)
        if changes.meta is None:
            raise ValidationError("changes.meta", "the model's metadata (a dict)", "None")
        parent = _check_version(parent, "parent")
        if lineage is None:
            lineage = Lineage()
        if not isinstance(lineage, Lineage):
            raise ValidationError("lineage", "a streamlearn.store.Lineage", type(lineage).__name__)
        if lineage.parents and lineage.parents != (parent,):
            raise ValidationError(
                "lineage.parents", f"({parent},) (the delta's parent) or empty",
                repr(lineage.parents),
            )
        lineage = replace(lineage, parents=(parent,))
        latest = self.head().latest
        if latest != parent:
            raise StaleParent(
                f"model {self.model!r}: a delta on version {parent} was refused: the latest "
                f"version is {latest}; commit a snapshot, or a delta on {latest}"
            )
        record = self._read_record(parent)
        if record is None:
            raise BrokenChain(
                f"model {self.model!r} version {parent}: its commit record is missing; "
                "commit a snapshot", self.model, parent,
            )
        info = VersionInfo.from_record(record)
        if info.kind in TOMBSTONES:
            raise StaleParent(f"model {self.model!r}: version {parent} was discarded")
        layout = info.layout if info.layout is not None else self._layout_from_file(info)
        if layout is None:
            raise StoreError(
                f"model {self.model!r}: version {parent} is not a model state (a table "
                "written by ModelState.to_arrow/to_bytes), so a delta cannot apply to it; "
                "commit a snapshot"
            )
        self._check_changes(changes, layout, parent)
        if not self._files.exists(self._path(info.file)):
            raise self._missing(info, None, broken=True)
        n_slots = int(layout["n_slots"])
        base = info.base if info.base is not None else parent
        before = info.chain or {"deltas": 0, "bytes": 0, "snapshot_bytes": info.size_bytes,
                                "snapshot_at": info.created_at}
        table = changes.to_table(n_slots, {"parent": parent, "base": base})

        def write(sink: pa.NativeFile, meta: dict[str, Any]) -> int:
            return write_version(sink, table, meta)

        def describe(version: int, size: int, this: Lineage, latest: int | None) -> dict[str, Any]:
            return {
                "parent": parent,
                "base": base,
                "chain": {**before, "deltas": before["deltas"] + 1,
                          "bytes": before["bytes"] + size},
                "layout": layout,
            }

        return self._commit_new(
            write, describe, "arrow", lineage, kind=DELTA, rollback_of=None, lease=lease,
            strict_parent=parent,
        )

    def _check_changes(
        self, changes: Changes, layout: dict[str, Any], parent: int | None
    ) -> None:
        """Refuse changes that do not fit version ``parent``'s arrays (the model
        committed with them when ``None``), naming what is wrong."""
        of = "the model" if parent is None else f"version {parent}"
        shapes, n_slots = layout["shapes"], int(layout["n_slots"])
        per_slot = per_slot_names(shapes, n_slots)
        small = sorted(set(shapes) - set(per_slot))
        if sorted(changes.rows) != sorted(per_slot):
            raise ValidationError(
                "changes.rows", f"the per-slot arrays of {of}: {sorted(per_slot)}",
                repr(sorted(changes.rows)),
            )
        if sorted(changes.small) != small:
            raise ValidationError(
                "changes.small", f"the small arrays of {of}: {small}",
                repr(sorted(changes.small)),
            )
        if len(changes.slots) and changes.slots[-1] >= n_slots:
            raise ValidationError(
                "changes.slots", f"slot indices below the model's {n_slots} slots",
                int(changes.slots[-1]),
            )
        k = len(changes.slots)
        for name, values in [*changes.rows.items(), *changes.small.items()]:
            shape, dtype = shapes[name]["shape"], shapes[name]["dtype"]
            want = [k, *shape[1:]] if name in changes.rows else list(shape)
            if list(values.shape) != want or values.dtype.str != dtype:
                where = "rows" if name in changes.rows else "small"
                raise ValidationError(
                    f"changes.{where}[{name!r}]", f"shape {tuple(want)} of dtype {dtype}",
                    f"shape {tuple(values.shape)} of dtype {values.dtype.str}",
                )

    def _layout_from_file(self, info: VersionInfo) -> dict[str, Any] | None:
        """The layout of a snapshot committed before commit records carried it (its schema)."""
        try:
            with self.filesystem.open_input_file(self._path(info.file)) as f:
                schema = ipc.open_file(f).schema
        except (OSError, pa.ArrowInvalid):
            return None
        return _layout_of(schema)

    def compact(self, *, lease: Lease | None = None) -> int:
        """Write the latest version, materialised, as a new snapshot; returns its number.

        The new version (``kind="compact"``) equals the latest one, has it as
        its parent and keeps its lineage; deltas committed after it start a
        new chain on it, and a follower holding the latest needs no reload
        (:meth:`changes` passes over a compaction). If the latest version is
        already a snapshot, nothing is written and its number is returned.
        """
        latest = self.latest()
        info = self.info(latest)
        if not info.is_delta:
            return latest
        model = self.get(latest)
        table = strip_store_metadata(model.table)
        lineage = replace(model.lineage, parents=(latest,), created_at=None)
        version = self._commit_table(
            table, "arrow", lineage, kind=COMPACT, rollback_of=None, lease=lease, parent=latest
        )
        logger.info("model %r: version %d compacted into snapshot %d", self.model, latest, version)
        return version

    def chain(self) -> Chain | None:
        """The latest version's chain: deltas and bytes since its snapshot (``None``
        while nothing is committed). One small read; what
        :meth:`SnapshotPolicy.due <streamlearn.store.SnapshotPolicy.due>` takes."""
        latest = self.head().latest
        if latest is None:
            return None
        info = self.info(latest)
        c = info.chain or {}
        return Chain(
            version=latest,
            base=info.base if info.base is not None else latest,
            deltas=int(c.get("deltas", 0)),
            delta_bytes=int(c.get("bytes", 0)),
            snapshot_bytes=int(c.get("snapshot_bytes", info.size_bytes)),
            snapshot_created_at=c.get("snapshot_at", info.created_at),
        )

    # -- delta versions: materialising and following ----------------------------------

    def _missing(
        self, info: VersionInfo, needed_by: int | None, broken: bool = False
    ) -> StoreError:
        """The error for a version whose file is absent: pruned by retention, or a broken chain."""
        if needed_by is None and not broken:
            head = self.head()
            if info.version not in (head.latest, head.pinned):
                return self._gone(info.version)
        what = "delta" if info.is_delta else "snapshot"
        who = f"; version {needed_by} is materialised from it" if needed_by else ""
        return BrokenChain(
            f"model {self.model!r} version {info.version}: its {what} file {info.file} is "
            f"missing{who}. Keep serving the last good version; the writer's next commit "
            "should be a snapshot",
            self.model,
            info.version,
        )

    def _delta_of(self, info: VersionInfo, needed_by: int) -> Changes:
        """The changes stored in delta version ``info``; :class:`BrokenChain` if unreadable."""
        path = self._path(info.file)
        try:
            buf = self._files.read_buffer(path)
        except FileNotFoundError:
            raise self._missing(info, needed_by if needed_by != info.version else None,
                                broken=needed_by != info.version) from None
        except OSError as exc:
            if not self._files.exists(path):
                raise self._missing(info, needed_by if needed_by != info.version else None,
                                    broken=needed_by != info.version) from None
            raise StoreError(
                f"model {self.model!r} version {info.version}: could not read {info.file} ({exc})"
            ) from exc
        try:
            table = ipc.open_file(buf).read_all()
            changes, header = Changes.from_table(table)
            stored = (table.schema.metadata or {}).get(b"streamlearn.store.version")
            if stored is None or int(stored) != info.version or header["parent"] != info.parent:
                raise ValueError(
                    f"it says version {stored!r} on {header.get('parent')!r}, the commit record "
                    f"version {info.version} on {info.parent}"
                )
        except (pa.ArrowInvalid, OSError, KeyError, ValueError, TypeError) as exc:
            who = f"; version {needed_by} is materialised from it" if needed_by != info.version \
                else ""
            raise BrokenChain(
                f"model {self.model!r} version {info.version}: its delta file {info.file} is "
                f"damaged ({exc}){who}. Keep serving the last good version; the writer's next "
                "commit should be a snapshot",
                self.model,
                info.version,
            ) from None
        return changes

    def _record_info(self, version: int, needed_by: int) -> VersionInfo:
        record = self._read_record(version)
        if record is None:
            raise BrokenChain(
                f"model {self.model!r} version {version}: its commit record is missing; "
                f"version {needed_by} is materialised from it",
                self.model,
                version,
            )
        return VersionInfo.from_record(record)

    def drop_cache(self) -> None:
        """Forget the newest materialised version this handle keeps (see :meth:`get`).

        For a process that read the model once (a writer at start) and keeps
        its own copy: the cache would otherwise hold a second one in memory.
        """
        with self._cache_lock:
            self._cache = None

    def _seed_cache(self, model: ModelVersion) -> None:
        """Remember a snapshot just read as the newest materialised version (zero-copy)."""
        with self._cache_lock:
            if self._cache is not None and self._cache.version >= model.version:
                return
            if model.payload_kind != "arrow" or b"streamlearn.shapes" not in (
                model.table.schema.metadata or {}
            ):
                return
            try:
                state = ModelState.from_arrow(model.table)
            except (StateError, KeyError, ValueError):
                return
            self._cache = _Materialised(model.version, state.arrays, state.meta)

    def _materialise(self, info: VersionInfo) -> ModelVersion:
        """Version ``info`` (a delta) in full: the cached newest version, or its
        nearest snapshot, plus the deltas after it, applied in place."""
        with self._cache_lock:
            cache = self._cache
            path: list[VersionInfo] = []  # newest first
            cur = info
            while not (cache is not None and cur.version == cache.version):
                through = cur.kind == DELTA or (
                    cur.kind == COMPACT and cache is not None and cache.version < cur.version
                )
                if not through:
                    break
                path.append(cur)
                assert cur.parent is not None
                cur = self._record_info(cur.parent, info.version)
            if cache is not None and cur.version == cache.version:
                start = cache
            else:
                for i, step in enumerate(path):  # a compaction on the way is a nearer snapshot
                    if step.kind == COMPACT:
                        cur, path = step, path[:i]
                        break
                if cur.kind in TOMBSTONES:
                    raise BrokenChain(
                        f"model {self.model!r} version {cur.version} was discarded, yet version "
                        f"{info.version} is materialised from it",
                        self.model,
                        cur.version,
                    )
                snapshot = self._read_snapshot(cur, needed_by=info.version)
                try:
                    state = ModelState.from_arrow(snapshot.table)
                except StateError as exc:
                    raise BrokenChain(
                        f"model {self.model!r} version {cur.version}: not a model state ({exc}); "
                        f"version {info.version} is materialised from it",
                        self.model,
                        cur.version,
                    ) from None
                start = _Materialised(cur.version, state.arrays, state.meta)
            try:
                for step in reversed(path):
                    if step.kind == DELTA:
                        start.apply(self._delta_of(step, info.version))
                    start.version = step.version
            except BaseException:
                if start is self._cache:
                    self._cache = None  # partly advanced: no longer any version
                raise
            start.version = info.version
            if self._cache is None or info.version >= self._cache.version:
                self._cache = start
            return start.model_version(info, self.model)

    def changes(self, since: int, upto: int | None = None, *, initial: str | None = None) -> Update:
        """What a follower holding version ``since`` needs to hold ``upto``.

        ``upto`` defaults to :meth:`current`. If every version after ``since``
        up to ``upto`` is a delta on the one before (or a compaction, which
        changes nothing), the :class:`Update` carries their union
        (:class:`Changes`: every slot they touched, with its newest values,
        and ``upto``'s small arrays and metadata), read from those deltas
        alone: O(changes), never O(model). Otherwise (a snapshot, a rollback,
        ``upto`` older than ``since``) ``Update.reload`` says why and the
        follower loads ``upto`` whole with :meth:`get`. A delta file missing or
        damaged gives :class:`BrokenChain`, naming the model and version.

        ``since=0`` is the model's initial state: with ``initial``, the key its
        writer gave that state (:meth:`commit`'s ``from_initial``), a snapshot
        on the way that was stored with its changes on that state counts as a
        delta on it, so a follower that has held nothing but the initial state
        updates at the cost of the changes too.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from streamlearn.state import ModelState
        >>> store = ModelStore(tempfile.mkdtemp(), model="ctr")
        >>> state = ModelState({"weights": np.zeros(8), "intercept": np.zeros(1)}, {"n_slots": 8})
        >>> v1 = store.commit(state)
        >>> state.arrays["weights"][3] = 0.5
        >>> v2 = store.commit_delta(Changes.gather(state, [3]), parent=v1)
        >>> state.arrays["weights"][[3, 6]] = [0.7, -0.2]
        >>> v3 = store.commit_delta(Changes.gather(state, [3, 6]), parent=v2)
        >>> update = store.changes(since=v1)
        >>> update.version, update.reload, update.changes.slots.tolist()
        (3, None, [3, 6])
        >>> update.changes.rows["weights"].tolist()
        [0.7, -0.2]
        >>> held = ModelState.from_arrow(store.get(v1).table).copy()
        >>> update.changes.apply_to(held).arrays["weights"].tolist()
        [0.0, 0.0, 0.0, 0.7, 0.0, 0.0, -0.2, 0.0]
        >>> store.rollback(v2), store.changes(since=v3).reload
        (4, 'version 4 is a snapshot (rollback): load version 4 whole')
        """
        since = _check_version(since, "since", lowest=0)
        head = self.head()
        if head.latest is None:
            raise self._nothing_committed()
        upto = head.current if upto is None else _check_version(upto, "upto")
        assert upto is not None
        if upto == since:
            return Update(since, upto, Changes(np.zeros(0, np.int64), {}, {}, None))
        if upto < since:
            return Update(
                since, upto, None,
                f"version {upto} is older than {since}: load version {upto} whole",
            )
        path: list[VersionInfo] = []
        lineage: Lineage | None = None  # upto's, from its record (read first)
        v = upto
        while v > since:
            record = self._read_record(v)
            if record is None:
                if v == upto:
                    raise self._gone(upto)
                return Update(since, upto, None,
                              f"version {v} is gone: load version {upto} whole", lineage)
            info = VersionInfo.from_record(record)
            if v == upto:
                lineage = info.lineage
            if info.kind in TOMBSTONES:
                raise self._discarded(info)
            if info.kind == DELTA:
                path.append(info)
            elif (
                since == 0
                and initial is not None
                and info.from_initial is not None
                and info.from_initial["initial"] == initial
            ):
                fi = info.from_initial
                path.append(replace(info, kind=DELTA, file=fi["file"], size_bytes=fi["size_bytes"],
                                    parent=0))
                v = 0
                continue
            elif info.kind != COMPACT:
                return Update(
                    since, upto, None,
                    f"version {v} is a snapshot ({info.kind}): load version {upto} whole",
                    lineage,
                )
            assert info.parent is not None
            v = info.parent
        if v != since:
            return Update(
                since, upto, None,
                f"version {since} is not on version {upto}'s chain: load version {upto} whole",
                lineage,
            )
        if not path:
            return Update(since, upto, Changes(np.zeros(0, np.int64), {}, {}, None),
                          lineage=lineage)
        return Update(since, upto, Changes.union([self._delta_of(i, upto) for i in path]),
                      lineage=lineage)

    def _commit_table(
        self,
        table: pa.Table,
        payload_kind: str,
        lineage: Lineage,
        *,
        kind: str,
        rollback_of: int | None,
        lease: Lease | None = None,
        parent: int | None = None,
        from_initial: tuple[str, Changes] | None = None,
    ) -> int:
        """Commit ``table`` as a snapshot. ``parent`` (a compaction) must stay the latest."""
        layout = _layout_of(table) if payload_kind == "arrow" else None
        initial: dict[str, Any] = {}

        def write(sink: pa.NativeFile, meta: dict[str, Any]) -> int:
            size = write_version(sink, table, meta)
            if from_initial is not None and layout is not None:
                key, changes = from_initial
                rel = f"versions/{meta['version']:012d}-{uuid.uuid4().hex[:12]}.initial.arrow"
                delta = changes.to_table(int(layout["n_slots"]), {"parent": 0, "base": 0})
                with self._files.open_output(self._path(rel)) as extra:
                    n = write_version(extra, delta, {**meta, "kind": DELTA})
                initial.update(file=rel, size_bytes=n, initial=key)
            return size

        def describe(version: int, size: int, this: Lineage, latest: int | None) -> dict[str, Any]:
            return {
                "parent": parent if parent is not None else latest,
                "base": version,
                "chain": {"deltas": 0, "bytes": 0, "snapshot_bytes": size,
                          "snapshot_at": this.created_at},
                "layout": layout,
                "from_initial": dict(initial) if initial else None,
            }

        return self._commit_new(
            write, describe, payload_kind, lineage, kind=kind, rollback_of=rollback_of,
            lease=lease, strict_parent=parent,
        )

    def _commit_new(
        self,
        write: Callable[[pa.NativeFile, dict[str, Any]], int],
        describe: Callable[[int, int, Lineage, int | None], dict[str, Any]],
        payload_kind: str,
        lineage: Lineage,
        *,
        kind: str,
        rollback_of: int | None,
        lease: Lease | None,
        strict_parent: int | None = None,
    ) -> int:
        """The commit protocol (docs/store.md): write the file, claim the number, move HEAD.

        With ``strict_parent``, the version must come right after it (only
        tombstones between): otherwise its record becomes a ``refused``
        tombstone and :class:`StaleParent` is raised.
        """
        self._prepare()
        if lease is not None:
            lease.check()  # early: a fenced writer does not even write its file
        else:
            self._refuse_if_held("commit")
        lineage = lineage.stamped()
        latest = self.head().latest
        version = (latest or 0) + 1
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            while self._files.exists(self._path(self._commit_rel(version))):
                version += 1  # HEAD lags behind a writer that has not updated it yet
            this = (
                lineage
                if lineage.parents or version == 1
                else replace(lineage, parents=(version - 1,))
            )
            rel = f"versions/{version:012d}-{uuid.uuid4().hex[:12]}.arrow"
            meta = {
                "model": self.model,
                "version": version,
                "kind": kind,
                "rollback_of": rollback_of,
                "payload": payload_kind,
                "lineage": this.to_dict(),
            }
            with self._files.open_output(self._path(rel)) as sink:
                size = write(sink, meta)
            info = VersionInfo(
                model=self.model,
                version=version,
                lineage=this,
                kind=kind,
                rollback_of=rollback_of,
                file=rel,
                size_bytes=size,
                writer_id=None if lease is None else lease.writer_id,
                writer_token=None if lease is None else lease.token,
                **describe(version, size, this, latest),
            )
            record = info.to_record()
            if self._files.create_exclusive(
                self._path(self._commit_rel(version)), orjson.dumps(record)
            ):
                break
            self._files.delete(self._path(rel))  # lost the number to a rival; take the next
            if info.from_initial is not None:
                self._files.delete(self._path(info.from_initial["file"]))
            version += 1
        else:
            raise StoreError(
                f"model {self.model!r}: could not claim a version number after "
                f"{_MAX_CLAIM_ATTEMPTS} attempts; is something creating commit records in a loop?"
            )
        with self._files.locked(self._path(".lock")):
            if lease is not None:
                self._fence_after_commit(lease, record)
            if strict_parent is not None:
                self._refuse_unless_next(strict_parent, record)
            head = self.head()
            if head.latest is None or version > head.latest:
                self._files.write_atomic(
                    self._path("HEAD.json"), Head(version, head.pinned).to_json()
                )
            self._index_add(record)
        logger.info(
            "committed model %r version %d (%s, %d bytes, %d events)",
            self.model,
            version,
            kind,
            size,
            this.events,
        )
        return version

    def _refuse_unless_next(self, parent: int, record: dict[str, Any]) -> None:
        """Make ``record`` a tombstone and raise if a version came between ``parent`` and it."""
        version = record["version"]
        for v in range(parent + 1, version):
            other = self._read_record(v)
            if other is None or other.get("kind") in TOMBSTONES:
                continue
            tomb = {**record, "kind": REFUSED}
            self._files.write_atomic(self._path(self._commit_rel(version)), orjson.dumps(tomb))
            self._files.delete(self._path(record["file"]))
            self._index_add(tomb)
            raise StaleParent(
                f"model {self.model!r}: version {version} was refused: it was made on version "
                f"{parent}, but version {v} was committed after {parent} first; commit a "
                f"snapshot, or a delta on the latest version"
            )

    def _set_pin(self, version: int | None) -> None:
        with self._files.locked(self._path(".lock")):
            head = self.head()
            self._files.write_atomic(self._path("HEAD.json"), Head(head.latest, version).to_json())

    def pin(self, version: int) -> None:
        """Serve ``version`` (see :meth:`current`) until :meth:`unpin`; it must still be stored."""
        version = _check_version(version)
        info = self.info(version)
        if not info.available:
            raise self._gone(version)
        self._set_pin(version)
        logger.info("pinned model %r to version %d", self.model, version)

    def unpin(self) -> None:
        """Serve the latest version again."""
        if self.head().latest is None:
            raise self._nothing_committed()
        self._set_pin(None)
        logger.info("unpinned model %r", self.model)

    def rollback(self, to: int, *, lease: Lease | None = None) -> int:
        """Commit a new version equal to version ``to``; returns the new number.

        The new version keeps ``to``'s weights and lineage (offsets, events,
        metrics), has ``to`` as its parent and is recorded as a rollback. A pin,
        if any, stays: unpin to serve the rollback.
        """
        to = _check_version(to, "to")
        old = self.get(to)
        table = strip_store_metadata(old.table)
        lineage = replace(old.lineage, parents=(to,), created_at=None)
        version = self._commit_table(
            table, old.payload_kind, lineage, kind="rollback", rollback_of=to, lease=lease
        )
        if self.head().pinned is not None:
            logger.warning(
                "model %r is pinned to version %d: rollback version %d is not served until unpin",
                self.model,
                self.head().pinned,
                version,
            )
        return version

    def retain(
        self, keep_last: int, keep_pinned: bool = True, grace_s: float = 0.0
    ) -> builtins.list[int]:
        """Delete stored versions except the newest ``keep_last`` (and the pin).

        Parameters
        ----------
        keep_last
            How many of the newest versions to keep (at least 1: the latest is
            always kept).
        keep_pinned
            Keep the pinned version too. If False and the pin would be deleted,
            the model is unpinned first.
        grace_s
            Keep a version until its successor is at least this many seconds old,
            so that a reader that saw it as current a moment ago can still load it.

        Returns
        -------
        list of int
            The versions whose files were deleted now.

        A kept delta version keeps every version it is materialised from (its
        parents back to its snapshot), so every retained version stays
        materialisable.

        A reader that loads a deleted version gets :class:`VersionNotFound`;
        on a local disk, a reader that already opened it reads it whole.
        Commit records stay (they are small) until their index segment is sealed.
        """
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValidationError("keep_last", "an integer >= 1", repr(keep_last))
        if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) or grace_s < 0:
            raise ValidationError("grace_s", "a number of seconds >= 0", repr(grace_s))
        if self.head().latest is None:  # nothing committed: nothing to delete (and no lock file)
            return []
        with self._files.locked(self._path(".lock")):
            head = self.head()
            infos = self.list()
            if not infos:
                return []
            keep = {i.version for i in infos[-keep_last:]}
            if head.latest is not None:
                keep.add(head.latest)
            if head.pinned is not None:
                if keep_pinned:
                    keep.add(head.pinned)
                elif head.pinned not in keep:
                    self._files.write_atomic(
                        self._path("HEAD.json"), Head(head.latest, None).to_json()
                    )
                    logger.warning(
                        "retention unpinned model %r from version %d", self.model, head.pinned
                    )
            # a kept delta needs every version back to its snapshot
            by_version = {i.version: i for i in infos}
            needed: set[int] = set()
            for v in keep:
                step = by_version.get(v)
                while step is not None and step.version not in needed:
                    needed.add(step.version)
                    if step.kind != DELTA or step.parent is None:
                        break
                    step = by_version.get(step.parent)
            keep |= needed
            created = {i.version: i.created_at for i in infos}
            now = time.time()
            segments = self._segments()
            sealed_end = segments[-1][1] if segments else 0
            deleted = []
            for info in infos:
                v = info.version
                if v in keep or not info.available:
                    continue
                successor = created.get(v + 1)
                if grace_s and (successor is None or now - successor < grace_s):
                    continue
                self._files.delete(self._path(info.file))
                if info.from_initial is not None:
                    self._files.delete(self._path(info.from_initial["file"]))
                if v <= sealed_end:
                    self._files.delete(self._path(self._commit_rel(v)))
                deleted.append(v)
        if deleted:
            logger.info(
                "retention deleted %d version(s) of model %r (%d..%d)",
                len(deleted),
                self.model,
                deleted[0],
                deleted[-1],
            )
        return deleted


def _layout_of(source: pa.Table | pa.Schema) -> dict[str, Any] | None:
    """``{"n_slots", "shapes"}`` of a model-state table (``None`` for other tables)."""
    meta = source.schema.metadata if isinstance(source, pa.Table) else source.metadata
    meta = meta or {}
    if b"streamlearn.shapes" not in meta or b"streamlearn.meta" not in meta:
        return None
    try:
        shapes = json.loads(meta[b"streamlearn.shapes"])
        model_meta = json.loads(meta[b"streamlearn.meta"])
        n_slots = model_n_slots(model_meta, shapes)
    except (ValueError, TypeError, KeyError):
        return None
    if n_slots is None:
        return None
    return {"n_slots": n_slots, "shapes": shapes}


class _Materialised:
    """A version's arrays and metadata, advanced in place by deltas.

    Arrays read from a snapshot are views of its file; the first delta that
    touches one copies it (once), later ones write into the copy. An array a
    table handed out by :meth:`ModelStore.get` still refers to is copied
    before writing (copy-on-write), so a loaded version never changes.
    """

    def __init__(self, version: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.version = version
        self.arrays = dict(arrays)
        self.meta = meta
        self.owned: set[str] = set()

    def apply(self, changes: Changes) -> None:
        for name, values in changes.rows.items():
            if name not in self.owned or shared(self.arrays, name):
                self.arrays[name] = np.array(self.arrays[name])
                self.owned.add(name)
            self.arrays[name][changes.slots] = values
        for name, values in changes.small.items():
            self.arrays[name] = np.array(values)
            self.owned.add(name)
        if changes.meta is not None:
            self.meta = changes.meta

    def model_version(self, info: VersionInfo, model: str) -> ModelVersion:
        batch = ModelState(self.arrays, self.meta).to_arrow()
        table = stamp_store_metadata(pa.Table.from_batches([batch]), {
            "model": model,
            "version": info.version,
            "kind": info.kind,
            "payload": "arrow",
            "lineage": info.lineage.to_dict(),
        })
        return ModelVersion(info=info, table=table, payload_kind="arrow")
