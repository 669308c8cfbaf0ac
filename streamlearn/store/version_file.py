"""A model version on disk: one Arrow IPC file, lineage in the schema metadata.

Anyone can read a stored version without streamlearn::

    import pyarrow as pa, json
    table = pa.ipc.open_file("models/ctr/versions/000000000007-5f3a9c1e.arrow").read_all()
    json.loads(table.schema.metadata[b"streamlearn.store.lineage"])

(``polars.read_ipc`` reads the same file.) The keys this module adds all start
with ``streamlearn.store.``; the payload's own schema metadata is kept as is.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import orjson
import pyarrow as pa
import pyarrow.ipc as ipc

from streamlearn.errors import StateError, ValidationError

__all__ = [
    "ToBytes",
    "StatePayload",
    "META_PREFIX",
    "as_table",
    "write_version",
    "read_version",
    "strip_store_metadata",
    "stamp_store_metadata",
]

META_PREFIX = b"streamlearn.store."
FORMAT = b"1"
_ARROW_FILE_MAGIC = b"ARROW1"


@runtime_checkable
class ToBytes(Protocol):
    """Anything with ``to_bytes() -> bytes`` (``ModelState`` is one)."""

    def to_bytes(self) -> bytes: ...


StatePayload = bytes | bytearray | memoryview | pa.Buffer | pa.Table | pa.RecordBatch | ToBytes


def as_table(state: object) -> tuple[pa.Table, str]:
    """Turn what :meth:`ModelStore.commit` accepts into ``(table, payload_kind)``.

    Arrow IPC bytes (stream or file format) are opened without copying; any
    other bytes are kept verbatim in a one-row ``payload`` binary column
    (``payload_kind`` is then ``"opaque"``).

    Examples
    --------
    >>> t, kind = as_table(pa.table({"w": [0.5, -1.0]}))
    >>> kind, t.num_rows
    ('arrow', 2)
    >>> t, kind = as_table(b"not arrow")
    >>> kind, t.column("payload")[0].as_py()
    ('opaque', b'not arrow')
    """
    if isinstance(state, pa.Table):
        return state, "arrow"
    if isinstance(state, pa.RecordBatch):
        return pa.Table.from_batches([state]), "arrow"
    if isinstance(state, ToBytes) and not isinstance(
        state,
        int | bytes | bytearray | memoryview | pa.Buffer,  # their to_bytes is not ours
    ):
        state = state.to_bytes()
    if isinstance(state, bytes | bytearray | memoryview):
        buf = pa.py_buffer(state)
    elif isinstance(state, pa.Buffer):
        buf = state
    else:
        raise ValidationError(
            "state",
            "Arrow IPC bytes, a pyarrow Table/RecordBatch or an object with to_bytes()",
            type(state).__name__,
            "commit",
        )
    if buf.size >= 6 and buf[:6].to_pybytes() == _ARROW_FILE_MAGIC:
        try:
            return ipc.open_file(buf).read_all(), "arrow"
        except pa.ArrowInvalid:
            pass
    try:
        return ipc.open_stream(buf).read_all(), "arrow"
    except (pa.ArrowInvalid, OSError):
        pass
    return pa.table({"payload": pa.array([buf.to_pybytes()], pa.large_binary())}), "opaque"


def _metadata(table: pa.Table, store_meta: dict[str, Any]) -> dict[bytes, bytes]:
    meta = dict(table.schema.metadata or {})
    for key, value in store_meta.items():
        if value is None:
            continue
        text = (
            value
            if isinstance(value, bytes)
            else (value.encode() if isinstance(value, str) else orjson.dumps(value))
        )
        meta[META_PREFIX + key.encode()] = text
    meta[META_PREFIX + b"format"] = FORMAT
    return meta


def stamp_store_metadata(table: pa.Table, store_meta: dict[str, Any]) -> pa.Table:
    """``table`` with ``store_meta`` added to its schema as ``streamlearn.store.*`` keys."""
    return table.replace_schema_metadata(_metadata(table, store_meta))


def write_version(sink: pa.NativeFile, table: pa.Table, store_meta: dict[str, Any]) -> int:
    """Write ``table`` as an IPC file with ``store_meta`` in its schema; return bytes written."""
    table = stamp_store_metadata(table, store_meta)
    start = sink.tell()
    with ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.tell() - start


def read_version(buf: pa.Buffer, where: str) -> tuple[pa.Table, dict[str, Any]]:
    """Open a stored version; returns the table and the decoded store metadata."""
    try:
        table = ipc.open_file(buf).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise StateError(f"{where}: not a readable Arrow IPC file ({exc})") from None
    meta = table.schema.metadata or {}
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key.startswith(META_PREFIX):
            name = key[len(META_PREFIX) :].decode()
            out[name] = (
                value.decode()
                if name in {"model", "kind", "payload", "format"}
                else (orjson.loads(value))
            )
    if "version" not in out:
        raise StateError(f"{where}: no {META_PREFIX.decode()}version in the schema metadata")
    return table, out


def strip_store_metadata(table: pa.Table) -> pa.Table:
    """``table`` with the keys this module added removed (the payload as committed)."""
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if not k.startswith(META_PREFIX)}
    return table.replace_schema_metadata(meta or None)
