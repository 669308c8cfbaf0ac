"""What an Arrow IPC stream declares, read from its message headers before any decoding.

An Arrow body is untrusted: a few kilobytes of zstd can declare a billion rows
or hundreds of megabytes of values, and ``pyarrow`` decompresses what the
headers say before anything else could look at the result. So the stream is
first walked message by message (``pyarrow.ipc.MessageReader`` frames them and
verifies each header's flatbuffer; nothing is decompressed), and each record
or dictionary batch's header is read here for its row count, its buffers and
their codec. A compressed buffer starts with its uncompressed length (8 bytes,
little-endian, ``-1`` for "stored as is"), which ``pyarrow`` allocates and then
checks against what the codec produces: the sum of those lengths is what
decoding will allocate, known before it starts.

>>> import pyarrow as pa
>>> table = pa.table({"age": [31, 40], "country": ["FR", "DE"]})
>>> sink = pa.BufferOutputStream()
>>> with pa.ipc.new_stream(sink, table.schema) as writer:
...     writer.write_table(table)
>>> declared = declared_sizes(sink.getvalue().to_pybytes())
>>> declared.rows, declared.batches, declared.decoded_bytes > 0
(2, 1, True)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Declared", "UnreadableStream", "declared_sizes", "MAX_MESSAGES"]

# Record and dictionary batches one request may hold: every batch is a chunk to
# concatenate, and a stream of empty batches is otherwise cheap to send.
MAX_MESSAGES = 1024

_MESSAGE_HEADER_TYPE = 1  # field ids of the flatbuffer tables (Message.fbs)
_MESSAGE_HEADER = 2
_MESSAGE_BODY_LENGTH = 3
_HEADER_SCHEMA, _HEADER_DICTIONARY, _HEADER_RECORDS = 1, 2, 3
_BATCH_LENGTH, _BATCH_NODES, _BATCH_BUFFERS, _BATCH_COMPRESSION = 0, 1, 2, 3
_DICTIONARY_DATA = 1
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_STRUCT16 = struct.Struct("<qq")


class UnreadableStream(ValueError):
    """The bytes are not an Arrow IPC stream this service reads; the message says why."""


@dataclass(frozen=True)
class Declared:
    """Sizes an Arrow IPC stream declares in its headers.

    ``rows`` sums the record batches' lengths; ``decoded_bytes`` sums every
    buffer once decompressed (dictionaries included): what decoding allocates.
    """

    rows: int
    batches: int
    decoded_bytes: int
    compressed: bool


class _Table:
    """One flatbuffer table in ``buf`` at ``pos``, read with bounds checks
    (``struct.error`` or :class:`UnreadableStream` on anything out of range)."""

    __slots__ = ("buf", "pos", "vtable", "vsize")

    def __init__(self, buf: memoryview, pos: int) -> None:
        if not 0 <= pos <= len(buf) - 4:
            raise UnreadableStream("a header table out of bounds")
        self.buf = buf
        self.pos = pos
        self.vtable = pos - _I32.unpack_from(buf, pos)[0]
        if not 0 <= self.vtable <= len(buf) - 4:
            raise UnreadableStream("a header vtable out of bounds")
        self.vsize = _U16.unpack_from(buf, self.vtable)[0]

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        if slot + 2 > self.vsize:
            return 0
        offset = _U16.unpack_from(self.buf, self.vtable + slot)[0]
        return self.pos + offset if offset else 0

    def scalar(self, index: int, fmt: struct.Struct, default: int) -> int:
        at = self._field(index)
        return fmt.unpack_from(self.buf, at)[0] if at else default

    def byte(self, index: int, default: int = 0) -> int:
        at = self._field(index)
        return self.buf[at] if at else default

    def table(self, index: int) -> _Table | None:
        at = self._field(index)
        return _Table(self.buf, at + _U32.unpack_from(self.buf, at)[0]) if at else None

    def structs(self, index: int) -> Iterator[tuple[int, int]]:
        """A vector of 16-byte structs of two int64 (FieldNode, Buffer)."""
        at = self._field(index)
        if not at:
            return iter(())
        start = at + _U32.unpack_from(self.buf, at)[0] + 4
        count = _U32.unpack_from(self.buf, start - 4)[0]
        if start + count * 16 > len(self.buf):
            raise UnreadableStream("a header vector longer than its header")
        return _STRUCT16.iter_unpack(self.buf[start : start + 16 * count])


def declared_sizes(body: bytes) -> Declared:
    """Walk the messages of an Arrow IPC stream and add up what they declare.

    Raises :class:`UnreadableStream` when the framing, a header or a buffer's
    place in its message body does not hold together.
    """
    import pyarrow as pa

    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(body))
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise UnreadableStream(str(exc)[:80]) from None
    rows = batches = decoded = 0
    compressed = False
    seen_schema = False
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
            raise UnreadableStream(str(exc)[:80]) from None
        try:
            meta = memoryview(message.metadata)
            header = _Table(meta, _U32.unpack_from(meta, 0)[0])
            kind = header.byte(_MESSAGE_HEADER_TYPE)
            body_length = header.scalar(_MESSAGE_BODY_LENGTH, _I64, 0)
            inner = header.table(_MESSAGE_HEADER)
            if kind == _HEADER_SCHEMA:
                seen_schema = True
                continue
            if kind == _HEADER_DICTIONARY and inner is not None:
                inner = inner.table(_DICTIONARY_DATA)
            elif kind != _HEADER_RECORDS:
                raise UnreadableStream(f"a message of kind {kind} (not a schema or a batch)")
            if not seen_schema:
                raise UnreadableStream("a batch before the schema")
            batches += 1
            if batches > MAX_MESSAGES:
                raise UnreadableStream(f"more than {MAX_MESSAGES} batches")
            if inner is None:
                raise UnreadableStream("a batch message without its header")
            length = inner.scalar(_BATCH_LENGTH, _I64, 0)
            if length < 0:
                raise UnreadableStream(f"a batch of {length} rows")
            if kind == _HEADER_RECORDS:
                rows += length
            for node_length, null_count in inner.structs(_BATCH_NODES):
                if node_length < 0 or not 0 <= null_count <= node_length:
                    raise UnreadableStream("a column node of negative length or null count")
            codec = inner.table(_BATCH_COMPRESSION)
            actual = message.body.size if message.body is not None else 0
            if body_length != actual:
                raise UnreadableStream("a message body shorter than its header says")
            data = message.body
            for offset, size in inner.structs(_BATCH_BUFFERS):
                if offset < 0 or size < 0 or offset + size > actual:
                    raise UnreadableStream("a buffer outside its message body")
                if codec is None or size == 0:
                    decoded += size
                    continue
                compressed = True
                if size < 8:
                    raise UnreadableStream("a compressed buffer without its length")
                full = _I64.unpack_from(data, offset)[0]
                if full < -1:
                    raise UnreadableStream(f"a buffer of uncompressed length {full}")
                decoded += size - 8 if full == -1 else full
        except struct.error:
            raise UnreadableStream("a message header cut short") from None
    if not seen_schema:
        raise UnreadableStream("no schema")
    return Declared(rows=rows, batches=batches, decoded_bytes=decoded, compressed=compressed)
