"""Typed records the store hands back: ``Head``, ``VersionInfo`` and ``ModelVersion``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson
import pyarrow as pa

from streamlearn.arrow_ipc import ipc_stream_bytes
from streamlearn.errors import StateError
from streamlearn.store.lineage import Lineage
from streamlearn.store.version_file import strip_store_metadata

__all__ = ["Head", "VersionInfo", "ModelVersion"]


#: Kinds as stores written by earlier releases name them: a snapshot was "publish".
_KIND_NAMES = {"publish": "snapshot"}


@dataclass(frozen=True)
class Head:
    """The model's pointer file: newest version and the pin, read in one small read.

    ``current`` is what a prediction server should serve: the pin if any, else
    the latest (``None`` while nothing is committed).
    """

    latest: int | None
    pinned: int | None = None

    @property
    def current(self) -> int | None:
        return self.pinned if self.pinned is not None else self.latest

    def to_json(self) -> bytes:
        return orjson.dumps({"latest": self.latest, "pinned": self.pinned})

    @classmethod
    def from_json(cls, data: bytes) -> Head:
        try:
            raw = orjson.loads(data)
            return cls(latest=raw.get("latest"), pinned=raw.get("pinned"))
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise StateError(f"model HEAD file is not the JSON the store writes ({exc})") from None


@dataclass(frozen=True)
class VersionInfo:
    """Everything known about one version, without loading its weights.

    Attributes
    ----------
    model, version
        Which model and which version number.
    lineage
        Offsets, event count, parents, learners, creation time, metrics.
    kind
        ``"snapshot"`` (the whole model), ``"delta"`` (the changes on its parent),
        ``"rollback"`` (a snapshot equal to an older version), ``"compact"``
        (a snapshot equal to its parent, a delta) or ``"fenced"``/``"refused"``
        (a tombstone: a commit discarded after its number was taken).
    rollback_of
        For a rollback, the version it restored.
    file
        The Arrow IPC file holding it, relative to the model's directory.
    size_bytes
        Size of that file.
    available
        False once retention deleted the file (``None`` when not checked).
    pinned, current
        Whether it is the pinned version / the one the server should serve
        (filled by :meth:`ModelStore.list` and :meth:`ModelStore.info`).
    writer_id, writer_token
        The writer lease it was committed under (``None`` without one); a
        ``kind="fenced"`` record is a commit refused because a newer token
        took over after it was written (no file, never served).
    parent, base
        The version it was committed on (``None`` for the first, and for
        versions committed before deltas existed) and the snapshot it is
        materialised from (itself for a snapshot).
    chain
        ``{"deltas", "bytes", "snapshot_bytes", "snapshot_at"}``: deltas and
        their bytes since ``base`` (this one included), and ``base``'s size
        and creation time; what :class:`~streamlearn.store.SnapshotPolicy` reads.
    layout
        ``{"n_slots", "shapes"}`` of a model-state version (shape and dtype of
        every array), what a delta on it is checked against; ``None`` for
        other payloads.
    from_initial
        For a snapshot committed by a writer that began from the model's
        initial state: ``{"file", "size_bytes", "initial"}``, a second file
        holding the same version as the changes on that initial state (the
        initial state named by the writer's key ``initial``), so a follower
        still at the initial state applies them instead of reading the model
        whole (:meth:`ModelStore.changes` with ``since=0``). ``None`` otherwise.
    """

    model: str
    version: int
    lineage: Lineage
    kind: str = "snapshot"
    rollback_of: int | None = None
    file: str = ""
    size_bytes: int = 0
    available: bool | None = None
    pinned: bool = False
    current: bool = False
    writer_id: str | None = None
    writer_token: int | None = None
    parent: int | None = None
    base: int | None = None
    chain: dict[str, Any] | None = None
    layout: dict[str, Any] | None = None
    from_initial: dict[str, Any] | None = None

    @property
    def is_delta(self) -> bool:
        """Whether the version is stored as a delta on its parent."""
        return self.kind == "delta"

    @property
    def created_at(self) -> float | None:
        return self.lineage.created_at

    def to_record(self) -> dict[str, Any]:
        """The commit record stored for this version (JSON-ready)."""
        record: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "kind": self.kind,
            "rollback_of": self.rollback_of,
            "file": self.file,
            "size_bytes": self.size_bytes,
            "lineage": self.lineage.to_dict(),
        }
        if self.writer_token is not None:
            record["writer"] = {"id": self.writer_id, "token": self.writer_token}
        if self.base is not None:
            record["parent"] = self.parent
            record["base"] = self.base
            record["chain"] = self.chain
        if self.layout is not None:
            record["layout"] = self.layout
        if self.from_initial is not None:
            record["from_initial"] = self.from_initial
        return record

    def to_dict(self) -> dict[str, Any]:
        """:meth:`to_record` plus the status fields (for ``--json`` output)."""
        return {
            **self.to_record(),
            "available": self.available,
            "pinned": self.pinned,
            "current": self.current,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], **status: Any) -> VersionInfo:
        """From a commit record the store wrote, with optional status fields."""
        writer = record.get("writer")
        if not isinstance(writer, dict):
            writer = {}
        token = writer.get("token")
        parent, base = record.get("parent"), record.get("base")
        kind = record.get("kind", "snapshot")
        return cls(
            model=record["model"],
            version=int(record["version"]),
            lineage=Lineage._from_stored(record["lineage"]),
            kind=_KIND_NAMES.get(kind, kind),
            rollback_of=record.get("rollback_of"),
            file=record.get("file", ""),
            size_bytes=int(record.get("size_bytes", 0)),
            writer_id=writer.get("id"),
            writer_token=int(token) if isinstance(token, int) else None,
            parent=parent if isinstance(parent, int) else None,
            base=base if isinstance(base, int) else None,
            chain=record.get("chain") if isinstance(record.get("chain"), dict) else None,
            layout=record.get("layout") if isinstance(record.get("layout"), dict) else None,
            from_initial=_from_initial(record.get("from_initial")),
            **status,
        )

    def with_status(self, **status: Any) -> VersionInfo:
        return replace(self, **status)


def _from_initial(raw: object) -> dict[str, Any] | None:
    """A record's ``from_initial`` if it is whole (else ``None``: the follower reads the
    version whole, as for a snapshot without one)."""
    if not isinstance(raw, dict):
        return None
    file, size, initial = raw.get("file"), raw.get("size_bytes"), raw.get("initial")
    if not (isinstance(file, str) and file and isinstance(size, int) and isinstance(initial, str)):
        return None
    return {"file": file, "size_bytes": size, "initial": initial}


@dataclass(frozen=True)
class ModelVersion:
    """A loaded version: its :class:`VersionInfo` and its Arrow table.

    ``table`` is the stored table (zero-copy over the file's memory map when the
    store is local); its schema metadata holds the ``streamlearn.store.*``
    keys next to the payload's own. :meth:`to_bytes` gives back the payload as
    it was committed, for ``ModelState.from_bytes``.
    """

    info: VersionInfo
    table: pa.Table
    payload_kind: str = "arrow"

    @property
    def version(self) -> int:
        return self.info.version

    @property
    def lineage(self) -> Lineage:
        return self.info.lineage

    def to_bytes(self) -> bytes:
        """The payload as committed: Arrow IPC stream bytes, or the opaque bytes."""
        if self.payload_kind == "opaque":
            try:
                return self.table.column("payload")[0].as_py()
            except KeyError:
                raise StateError(
                    f"version {self.version}: opaque payload without a `payload` column"
                ) from None
        return ipc_stream_bytes(strip_store_metadata(self.table))
