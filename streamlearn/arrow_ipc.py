"""Arrow IPC stream bytes, written without calling back into Python.

Every payload streamlearn stores or sends (model states, deltas, store
versions, Arrow request bodies) is an Arrow IPC stream. They are all written
here, into an Arrow ``BufferOutputStream``: writing into a Python file object
such as ``io.BytesIO`` makes Arrow call back into Python from C++, which never
returns inside PyFlink's thread-mode interpreter.

>>> import pyarrow as pa
>>> data = ipc_stream_bytes(pa.table({"x": [1, 2]}))
>>> pa.ipc.open_stream(data).read_all().column("x").to_pylist()
[1, 2]
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["ipc_stream_bytes"]


def ipc_stream_bytes(data: pa.Table | pa.RecordBatch) -> bytes:
    """One table or record batch as Arrow IPC stream bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write(data)
    return sink.getvalue().to_pybytes()
