"""Untrusted request bodies: corrupt and bomb Arrow streams, events without
features, the bearer scheme's case; in process and against the real server.

The Arrow bodies are built here byte by byte: a stream whose string offsets
point far outside their data (``pyarrow`` reads it, and its unchecked kernels
then read out of bounds: the process dies of SIGSEGV), and zstd "bombs" whose
buffers are runs of one byte written as zstd RLE blocks (4 bytes per 128 KiB),
so that a 33 KB body declares 2**30 rows and a 46 KB one 500 MB of strings.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa
import pytest

from streamlearn.events import EventDecoder
from streamlearn.serving.arrow_limits import MAX_MESSAGES, declared_sizes
from streamlearn.serving.request_body import (
    MAX_RATIO,
    NO_FEATURE_EXPECTED,
    NO_FEATURE_GOT,
    BadRequest,
    parse_arrow,
)
from streamlearn.store import Lineage, ModelStore
from tests.test_serving_app import call, make_app
from tests.test_serving_fast import native_answer
from tests.test_serving_live import MODEL, ServerProcess, trained_classifier, wait_for
from tests.test_serving_native import MODELS, app_for, post_raw, predictor

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}

# An Arrow IPC stream of 3 rows, `age` (int64) and `country` (string), whose
# second string offset was overwritten with 0x7ffffff0 (440 bytes).
CORRUPT_OFFSETS = bytes.fromhex(
    "ffffffffa80000001000000000000a000c000600050008000a000000000104000c0000000800080000000400"
    "0800000004000000020000004400000004000000d4ffffff00000105100000001c0000000400000000000000"
    "07000000636f756e747279000400040004000000100014000800060007000c00000010001000000000000102"
    "100000001c0000000400000000000000030000006167650008000c0008000700080000000000000140000000"
    "ffffffffc800000014000000000000000c0016000600050008000c000c000000000304001800000030000000"
    "0000000000000a0018000c00040008000a0000006c0000001000000003000000000000000000000005000000"
    "0000000000000000000000000000000000000000000000001800000000000000180000000000000000000000"
    "0000000018000000000000001000000000000000280000000000000006000000000000000000000002000000"
    "03000000000000000000000000000000030000000000000000000000000000001f0000000000000028000000"
    "00000000160000000000000000000000f0ffff7f04000000060000004652444547420000ffffffff00000000"
)


# -- building Arrow streams byte by byte ---------------------------------------------


def zstd_rle_frame(n_bytes: int, byte: int = 0) -> bytes:
    """A zstd frame of ``n_bytes`` copies of ``byte``, as RLE blocks of 128 KiB."""
    out = bytearray(struct.pack("<I", 0xFD2FB528))
    out += bytes([0x00, 7 << 3])  # no content size, no checksum; a window of 2**17
    left = n_bytes
    while True:
        size = min(1 << 17, left)
        left -= size
        last = int(left == 0)
        out += (last | (1 << 1) | (size << 3)).to_bytes(3, "little") + bytes([byte])
        if last:
            return bytes(out)


def _slot(meta: bytes | bytearray, table: int, index: int) -> int:
    """Where field ``index`` of the flatbuffer table at ``table`` is (0: absent)."""
    vtable = table - struct.unpack_from("<i", meta, table)[0]
    if 4 + 2 * index + 2 > struct.unpack_from("<H", meta, vtable)[0]:
        return 0
    offset = struct.unpack_from("<H", meta, vtable + 4 + 2 * index)[0]
    return table + offset if offset else 0


def _deref(meta: bytes | bytearray, at: int) -> int:
    return at + struct.unpack_from("<I", meta, at)[0]


def compressed_stream(template: pa.Table, rows: int, buffers: list[tuple[int, bytes]]) -> bytes:
    """A stream with ``template``'s schema (flat columns) and one zstd record batch
    of ``rows`` rows, whose buffers are ``(uncompressed length, zstd frame)``
    (``(0, b"")`` for an absent one) in the order pyarrow writes them."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, template.schema, options=options) as writer:
        writer.write_table(template)
    data = sink.getvalue().to_pybytes()
    schema_end = 8 + struct.unpack_from("<i", data, 4)[0]  # the schema message has no body
    length = struct.unpack_from("<i", data, schema_end + 4)[0]
    meta = bytearray(data[schema_end + 8 : schema_end + 8 + length])
    root = _deref(meta, 0)
    batch = _deref(meta, _slot(meta, root, 2))
    struct.pack_into("<q", meta, _slot(meta, batch, 0), rows)
    nodes = _deref(meta, _slot(meta, batch, 1))
    for i in range(struct.unpack_from("<I", meta, nodes)[0]):
        struct.pack_into("<q", meta, nodes + 4 + 16 * i, rows)
    places = _deref(meta, _slot(meta, batch, 2))
    assert struct.unpack_from("<I", meta, places)[0] == len(buffers)
    body = bytearray()
    for i, (full, frame) in enumerate(buffers):
        piece = struct.pack("<q", full) + frame if frame else b""
        struct.pack_into("<qq", meta, places + 4 + 16 * i, len(body), len(piece))
        body += piece + bytes(-len(piece) % 8)
    struct.pack_into("<q", meta, _slot(meta, root, 3), len(body))
    return (
        data[:schema_end]
        + struct.pack("<Ii", 0xFFFFFFFF, len(meta))
        + bytes(meta)
        + bytes(body)
        + struct.pack("<Ii", 0xFFFFFFFF, 0)
    )


def rows_bomb(rows: int) -> bytes:
    """One int8 column of ``rows`` zeros: 33 KB for 2**30 rows."""
    template = pa.table({"age": pa.array([0] * 8, pa.int8())})
    return compressed_stream(template, rows, [(0, b""), (rows, zstd_rle_frame(rows))])


def size_bomb(rows: int = 8000, each: int = 62_500) -> bytes:
    """One string column of ``rows`` strings of ``each`` times "a" (500 MB in 46 KB)."""
    template = pa.table({"city": ["ab"] * 8})
    offsets = pa.py_buffer(struct.pack(f"<{rows + 1}i", *range(0, (rows + 1) * each, each)))
    return compressed_stream(
        template,
        rows,
        [
            (0, b""),
            (offsets.size, pa.compress(offsets, "zstd", asbytes=True)),
            (rows * each, zstd_rle_frame(rows * each, ord("a"))),
        ],
    )


def stream(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# -- the bodies are what they claim to be ---------------------------------------------


def test_the_bomb_construction_is_a_real_arrow_stream() -> None:
    """Built the same way at 2**20 rows, pyarrow decodes it in full."""
    table = pa.ipc.open_stream(rows_bomb(1 << 20)).read_all()
    table.validate(full=True)
    assert table.num_rows == 1 << 20 and table.column(0).chunk(0).to_numpy().max() == 0
    strings = pa.ipc.open_stream(size_bomb(rows=4, each=3)).read_all()
    assert strings.column("city").to_pylist() == ["aaa"] * 4


def test_the_bombs_are_small_and_declare_huge_sizes() -> None:
    rows, size = rows_bomb(1 << 30), size_bomb()
    assert 30_000 < len(rows) < 36_000 and len(size) < 55_000
    assert declared_sizes(rows).rows == 1 << 30
    assert declared_sizes(size).decoded_bytes > 500_000_000


def test_the_corrupt_body_crashes_pyarrow_without_full_validation() -> None:
    """The saved body is a real crasher: read and used unchecked, the process dies."""
    script = (
        "import sys, pyarrow as pa\n"
        "table = pa.ipc.open_stream(sys.stdin.buffer.read()).read_all()\n"
        "table.column('country').chunk(0).dictionary_encode()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=CORRUPT_OFFSETS, capture_output=True, timeout=60
    )
    assert done.returncode == -11, done.stderr[-500:]  # SIGSEGV


# -- in process ------------------------------------------------------------------------


def _refused(body: bytes, status: int, max_events: int = 10_000, **kw: Any) -> BadRequest:
    with pytest.raises(BadRequest) as err:
        parse_arrow(body, max_events, **kw)
    assert err.value.status == status, err.value
    return err.value


def test_a_corrupt_body_is_a_400_from_full_validation() -> None:
    err = _refused(CORRUPT_OFFSETS, 400)
    assert err.field == "body" and "offset" in str(err).lower()


def test_bombs_are_refused_from_their_headers_naming_the_limit() -> None:
    err = _refused(rows_bomb(1 << 30), 413)
    assert "at most 10000 rows" in str(err) and "1073741824 rows declared" in str(err)
    # past the row limit, the decompressed size refuses it too
    err = _refused(rows_bomb(1 << 30), 413, max_events=1 << 31, max_decoded_bytes=32 << 20)
    assert "at most 33554432 bytes" in str(err)
    err = _refused(size_bomb(), 413, max_decoded_bytes=32 << 20)
    assert "500032004 bytes declared" in str(err)
    err = _refused(size_bomb(), 413, max_decoded_bytes=1 << 40)
    assert f"at most {MAX_RATIO}:1" in str(err)


def test_real_compressed_bodies_pass_and_decode_as_sent() -> None:
    table = pa.table(
        {
            "age": pa.array(range(5000), pa.int32()),
            "city": pa.array(["Lyon", None, "Oslo", "Rome"] * 1250).dictionary_encode(),
            "tags": [["a", "b"], [], None, ["c"]] * 1250,
        }
    )
    for compression in (None, "zstd", "lz4"):
        body = stream(table, compression)
        declared = declared_sizes(body)
        assert declared.rows == 5000 and declared.compressed == (compression is not None)
        assert declared.decoded_bytes >= table.nbytes
        batch = parse_arrow(body, 5000)
        assert batch.n_rows == 5000 and batch.columns["city"].to_pylist()[:3] == [
            "Lyon",
            None,
            "Oslo",
        ]


def test_truncated_and_odd_streams_are_400s() -> None:
    good = stream(pa.table({"age": [1, 2, 3]}), "zstd")
    for cut in range(0, len(good) - 8, 7):
        with pytest.raises(BadRequest) as err:
            parse_arrow(good[:cut], 10)
        assert err.value.status == 400
    many = pa.BufferOutputStream()
    table = pa.table({"age": [1]})
    with pa.ipc.new_stream(many, table.schema) as writer:
        for _ in range(MAX_MESSAGES + 1):
            writer.write_table(table)
    assert f"more than {MAX_MESSAGES} batches" in str(
        _refused(many.getvalue().to_pybytes(), 400, max_events=1 << 20)
    )


def test_every_flipped_byte_of_a_valid_stream_is_answered_or_refused() -> None:
    table = pa.table(
        {"age": [31, None, 7], "city": ["Lyon", "Oslo", None], "tags": [["a"], [], None]}
    )
    for compression in (None, "zstd"):
        good = stream(table, compression)
        for i in range(len(good)):
            for flip in (0xFF, 0x80):
                body = bytearray(good)
                body[i] ^= flip
                try:
                    parse_arrow(bytes(body), 10)
                except BadRequest as err:
                    assert err.status in (400, 413, 422)


def test_a_row_without_any_feature_is_refused_as_training_refuses_it() -> None:
    table = pa.table({"age": [1, None, 3], "city": ["a", None, None]})
    err = _refused(stream(table), 422)
    assert err.field == "events[1].features"
    assert err.expected == NO_FEATURE_EXPECTED and NO_FEATURE_GOT in err.got
    sink = pa.BufferOutputStream()  # two rows and no column at all
    with pa.ipc.new_stream(sink, pa.schema([])) as writer:
        writer.write_batch(pa.RecordBatch.from_pydict({"x": [1, 2]}).drop_columns(["x"]))
    assert _refused(sink.getvalue().to_pybytes(), 422).field == "events[0].features"
    assert parse_arrow(stream(pa.table({"age": [1, None], "b": [None, True]})), 10).n_rows == 2


def test_big_bodies_are_decoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlearn.serving.app as app_module

    threads: list[str] = []
    decode = app_module.decode_arrow

    def spy(body: bytes, max_events: int) -> Any:
        threads.append(threading.current_thread().name)
        return decode(body, max_events)

    monkeypatch.setattr(app_module, "decode_arrow", spy)
    app, _ = make_app(3)
    small = stream(pa.table({"age": [1.0, 2.0]}))
    big = stream(pa.table({f"n{i}": pa.array(range(10_000), pa.float64()) for i in range(16)}))
    assert len(big) > app_module.INLINE_BODY
    for body in (small, big):
        assert call(app, "POST", "/v1/predict", content=body, headers=ARROW).status_code == 200
    assert threads[0] == "MainThread" and threads[1].startswith("arrow-decode")
    bomb = call(app, "POST", "/v1/predict", content=rows_bomb(1 << 30), headers=ARROW)
    assert bomb.status_code == 413 and len(threads) == 2  # refused before decoding


@pytest.mark.parametrize("kind", ["regression", "binary"])
def test_an_event_without_features_is_refused_on_every_path(kind: str) -> None:
    """JSON through the native table, the Python one-event path and the
    envelope path: the same rule and words as training's decoder."""
    [rejected] = EventDecoder(task=kind).decode(b'{"features": {}}')[1]
    served = predictor(MODELS[kind])
    assert native_answer(served, b'{"features": {}}') is None  # the native table steps aside
    assert native_answer(served, b'{"features": { } }') is None
    app = app_for(served)
    for body, field in [
        (b'{"features": {}}', "event.features"),
        (b'{"features": {}, "id": "e-1"}', "event.features"),
        (b'{"events": [{"features": {"age": 1}}, {"features": {}}]}', "events[1].features"),
    ]:
        status, doc = post_raw(app, body)
        assert status == 422, body
        [problem] = doc["fields"]
        assert problem["field"] == field
        assert (problem["expected"], problem["got"]) == (
            rejected.error.expected,
            rejected.error.got,
        )
    # an envelope without events: the contract's `events.empty`, refused as training does
    status, doc = post_raw(app, b'{"events": []}')
    [no_event] = EventDecoder(task=kind).decode(b'{"events": []}')[1]
    assert status == 422 and doc["fields"][0]["field"] == no_event.field == "events"
    assert doc["fields"][0]["expected"] == no_event.error.expected


def test_the_bearer_scheme_is_case_insensitive() -> None:
    app, _ = make_app(1, token="s3cret")
    body = {"features": {"a": 1}}
    for header in ("Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"):
        r = call(app, "POST", "/v1/predict", json=body, headers={"authorization": header})
        assert r.status_code == 200, header
    for header in ("Bearer s3cre", "Basic s3cret", "bearers3cret", "bearer", "s3cret", ""):
        r = call(app, "POST", "/v1/predict", json=body, headers={"authorization": header})
        assert r.status_code == 401, header


# -- the real server ----------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    store_dir = tmp_path_factory.mktemp("untrusted") / "models"
    ModelStore(str(store_dir), MODEL).commit(trained_classifier().state(), Lineage())
    proc = ServerProcess(store_dir)
    client = httpx.Client(base_url=proc.url, timeout=30)
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30)
        yield proc, client
    finally:
        client.close()
        proc.stop()


def test_the_server_answers_the_corrupt_body_and_lives(
    live: tuple[ServerProcess, httpx.Client],
) -> None:
    proc, client = live
    for _ in range(3):
        r = client.post("/v1/predict", content=CORRUPT_OFFSETS, headers=ARROW)
        assert r.status_code == 400 and r.json()["fields"][0]["field"] == "body"
    assert proc.alive()
    ok = client.post("/v1/predict", json={"features": {"x0": 1.0}})
    assert ok.status_code == 200


def test_bombs_get_413_and_leave_the_server_memory_alone(
    live: tuple[ServerProcess, httpx.Client],
) -> None:
    proc, client = live
    warm = stream(pa.table({"x0": pa.array(range(10_000), pa.float64())}), "zstd")
    assert client.post("/v1/predict", content=warm, headers=ARROW).status_code == 200
    before = rss_bytes(proc.proc.pid)
    rows, size = rows_bomb(1 << 30), size_bomb()
    for _ in range(5):
        r = client.post("/v1/predict", content=rows, headers=ARROW)
        assert r.status_code == 413, r.text
        assert r.json()["fields"][0]["expected"] == "at most 10000 rows per request"
        r = client.post("/v1/predict", content=size, headers=ARROW)
        assert r.status_code == 413, r.text
        assert "once decompressed" in r.json()["fields"][0]["expected"]
        grown = rss_bytes(proc.proc.pid) - before
        assert grown <= 50 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
    print(f"server RSS {before / 2**20:.0f} MiB, after 10 bombs +{grown / 2**20:.1f} MiB")
    assert proc.alive()
    assert client.post("/v1/predict", content=warm, headers=ARROW).status_code == 200


def test_no_5xx_in_the_server_metrics(live: tuple[ServerProcess, httpx.Client]) -> None:
    proc, client = live
    assert proc.alive()
    assert 'status="5' not in client.get("/metrics").text


@pytest.mark.parametrize("kind", ["regression", "binary"])
def test_a_null_list_row_whose_offsets_span_items_has_no_items(kind: str) -> None:
    """Valid Arrow may give a null list row a non-empty range of items; they are
    not the row's. (Counting them once made parents and items disagree: a 500.)"""
    app = app_for(predictor(MODELS[kind]))
    tags = pa.ListArray.from_arrays(
        pa.array([0, 2, 4], pa.int32()), pa.array(["Lyon", "Oslo", "ü", "a b"]),
        mask=pa.array([False, True]),
    )
    body = stream(pa.table({"tags": tags, "age": [1.0, 2.0]}))
    got = call(app, "POST", "/v1/predict", content=body, headers=ARROW)
    assert got.status_code == 200, got.text
    plain = call(app, "POST", "/v1/predict", json={"events": [
        {"features": {"tags": ["Lyon", "Oslo"], "age": 1.0}}, {"features": {"age": 2.0}},
    ]})
    assert got.json()["predictions"] == plain.json()["predictions"]


@pytest.mark.parametrize(
    ("path", "ctype", "events", "status", "field"),
    [  # 360,000 events: 9.4 MB, over the 8 MiB limit; 300,000: 7.8 MB, under it
        ("/v1/predict", "application/json", 360_000, 413, "body"),  # from content-length
        (f"/v2/models/{MODEL}/infer", "application/json", 360_000, 413, "body"),
        (f"/v1/models/{MODEL}:predict", "text/csv", 300_000, 415, "content-type"),
        ("/v1/nowhere", "application/json", 300_000, 404, None),
    ],
)
def test_a_client_sending_a_refused_body_on_a_closing_connection_reads_the_answer(
    live: tuple[ServerProcess, httpx.Client], path: str, ctype: str, events: int,
    status: int, field: str | None,
) -> None:
    """The standard library's client asks for ``connection: close`` and reads only
    once its body is sent: refused before the body is read, the server must read
    and drop the rest before it closes, or the kernel resets the connection under
    the client's send and the answer is lost (``ConnectionResetError``)."""
    import urllib.error
    import urllib.request

    proc, _ = live
    body = b'{"events": [' + b'{"features": {"x0": 1.0}},' * events + b"{}]}"
    request = urllib.request.Request(proc.url + path, data=body, headers={"content-type": ctype})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == status
    answer = json.loads(refused.value.read())
    if field is not None:
        assert answer["fields"][0]["field"] == field, answer
    assert proc.alive()
