"""Fuzzed requests against the real server process never get a 5xx nor kill it.

Two fuzzers. Hypothesis draws requests from the shapes the OpenAPI document
describes (events, envelopes, ``?version=``) and from arbitrary JSON, bytes,
paths, methods and content types. A mutation fuzzer starts from valid
requests and breaks them: JSON bodies (bytes flipped, inserted, cut, tokens
spliced, structure changed), Arrow IPC streams (bytes flipped, cut, integers
in headers and buffers overwritten with edge values, streams spliced, the
saved crashing body and the zstd bombs among the seeds) and headers
(content-type, content-length, authorization, transfer-encoding, framing).
It sends them over raw sockets, pipelined, to the real server process and
counts the answers: a bounded run here, and over a million requests with
``-m fuzz_long`` (figures printed; see docs/serving.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamlearn.store import Lineage, ModelStore
from tests.test_serving_live import MODEL, ServerProcess, trained_classifier, wait_for


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    store_dir = tmp_path_factory.mktemp("fuzz") / "models"
    ModelStore(str(store_dir), MODEL).commit(trained_classifier().state(), Lineage())
    proc = ServerProcess(store_dir, "--max-events", "50", "--max-body-mb", "0.05")
    client = httpx.Client(base_url=proc.url, timeout=10)
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        yield proc, client
    finally:
        client.close()
        proc.stop()


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
feature_values = (
    st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.booleans()
    | st.lists(st.text(max_size=6), max_size=4)
    | json_values
)
events = st.fixed_dictionaries(
    {"features": st.dictionaries(st.text(max_size=10), feature_values, max_size=6)},
    optional={
        "key": json_values,
        "id": json_values,
        "ts": st.integers(),
        "label": json_values,
        "extra": json_values,
    },
)
bodies = (
    events
    | st.fixed_dictionaries({"events": st.lists(events | json_values, max_size=8)})
    | json_values
)
queries = st.sampled_from(["", "?version=1", "?version=0", "?version=-1", "?version=99"]) | st.text(
    alphabet=st.characters(
        min_codepoint=32, max_codepoint=0x2FF, exclude_characters="#", exclude_categories=("Cc",)
    ),
    max_size=12,
).map(lambda q: "?" + q)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, query=queries)
def test_fuzzed_predictions_never_get_a_5xx(
    live: tuple[ServerProcess, httpx.Client], body: object, query: str
) -> None:
    proc, client = live
    r = client.post(
        "/v1/predict" + query,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code < 500, r.text
    assert r.status_code in (200, 400, 404, 413, 422), r.text
    if r.status_code != 200:
        assert r.json()["error"]


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]),
    path=st.sampled_from(
        ["/v1/predict", "/v1/models", "/v1/models/current", "/healthz", "/readyz", "/metrics"]
    )
    | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20).map(
        lambda p: "/" + p.replace("?", "").replace("#", "")
    ),
    content_type=st.sampled_from(
        ["application/json", "application/vnd.apache.arrow.stream", "text/plain", "", "x/y; a=b"]
    ),
    body=st.binary(max_size=300),
)
@example(method="GET", path="//::", content_type="", body=b"")  # drawn once: a host to httpx
def test_fuzzed_raw_requests_never_get_a_5xx(
    live: tuple[ServerProcess, httpx.Client],
    method: str,
    path: str,
    content_type: str,
    body: bytes,
) -> None:
    proc, client = live
    headers = {"content-type": content_type} if content_type else {}
    # the server's URL written out: a path of "//..." joined to a base URL reads as a host
    r = client.request(method, proc.url + path, content=body, headers=headers)
    assert r.status_code < 500, r.text


def test_server_survived_the_fuzzing(live: tuple[ServerProcess, httpx.Client]) -> None:
    proc, client = live
    assert proc.alive()
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics


# -- the mutation fuzzer -----------------------------------------------------------------

TOKEN = "fuzz-s3cret"
KINDS = ("json", "arrow", "headers")
JSON_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b"null",
    b"true",
    b"false",
    b"1e999",
    b"-0",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',
    b'"\\u0000"',
    b"\\",
    b'{"features": {}}',
    b'"features"',
    b'"events"',
    b"[" * 600 + b"]" * 600,
    b"1" * 400,
    b"\xff\xfe",
    b"\x00",
    b'"' + b"a" * 3000 + b'"',
    b"9223372036854775808",
    b"-1",
    b"0.000000000000000000000000001e-400",
    b"\xc3\x28",
    b" " * 50,
]
EDGE_INTS = [
    0,
    1,
    -1,
    7,
    8,
    16,
    255,
    1 << 16,
    1 << 30,
    (1 << 31) - 1,
    -(1 << 31),
    (1 << 32) - 1,
    0x7FFFFFF0,
    1 << 62,
    -(1 << 63),
    1_000_000,
    51,
]
STRANGE_KEYS = [
    "features",
    "events",
    "label",
    "id",
    "ts",
    "key",
    "age",
    "country",
    "tags",
    "",
    "é",
    "\u0000",
    "x" * 300,
    "features ",
]
STRANGE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1 << 63,
    -(1 << 63),
    1.5,
    1e308,
    -0.0,
    5e-324,
    "",
    "FR",
    "\u0000",
    "\ud7ff",
    "x" * 2000,
    [],
    {},
    ["a", "b"],
    ["a", 1],
    [None],
    {"age": 1},
    {"": 1},
    [[["a"]]],
    {"features": {}},
    {"features": {"age": 1}},
    [{"features": {"age": 2}}] * 3,
]
CONTENT_TYPES = [
    b"application/json",
    b"Application/JSON",
    b"application/json; charset=utf-8",
    b"application/vnd.apache.arrow.stream",
    b"APPLICATION/VND.APACHE.ARROW.STREAM; x=1",
    b"text/plain",
    b"",
    b";",
    b"application/json\x00",
    b"multipart/form-data; boundary=x",
    b"application/vnd.apache.arrow.file",
    b"\xff\xfe",
    b"a" * 5000,
    b"application/json,text/plain",
]


class Mutator:
    """Valid requests of each kind and ways to break them; ``random.Random(seed)``
    makes a run repeatable."""

    def __init__(self, seed: int) -> None:
        import random

        import orjson
        import pyarrow as pa

        from tests.test_serving_untrusted import CORRUPT_OFFSETS, rows_bomb, size_bomb, stream

        self.rng = random.Random(seed)
        rng = self.rng
        names = ["age", "country", "tags", "x", "é", ""]
        values: list[Any] = [
            1,
            2.5,
            -3,
            0,
            "FR",
            "DE",
            "",
            True,
            False,
            ["a", "b"],
            [],
            None,
            {"a": 1},
            [1],
            1e300,
            "x" * 40,
        ]
        self.json_seeds: list[bytes] = []
        for i in range(60):
            feats = {rng.choice(names): rng.choice(values) for _ in range(rng.randint(0, 5))}
            event: dict[str, Any] = {"features": feats}
            if i % 3 == 1:
                event.update(id=f"e-{i}", ts=rng.choice([0, 1732345678123, -1]), key="k")
            if i % 4 == 2:
                doc: Any = {"events": [event] * rng.randint(0, 60)}
            else:
                doc = event
            self.json_seeds.append(orjson.dumps(doc))
        self.json_seeds += [b'{"features": {"age": 31, "country": "FR", "tags": ["a", "b"]}}'] * 20
        # the native path reads an event's id, key and ts with it
        self.json_seeds += [b'{"id": "e-1", "features": {"age": 31, "country": "FR"}, "key": 7, '
                            b'"ts": 1732345678123}'] * 10
        table = pa.table(
            {
                "age": pa.array([31, None, 7], pa.int64()),
                "score": [0.5, 1.5, None],
                "country": pa.array(["FR", "DE", None]).dictionary_encode(),
                "city": ["Lyon", None, "Oslo"],
                "tags": [["a"], [], None],
                "vip": [True, None, False],
            }
        )
        self.arrow_seeds = [
            stream(table),
            stream(table, "zstd"),
            stream(table, "lz4"),
            stream(table.slice(0, 1)),
            stream(pa.table({"age": [1, 2]}), "zstd"),
            CORRUPT_OFFSETS,
        ]
        self.arrow_rare = [rows_bomb(1 << 30), size_bomb()]

    # -- bytes ------------------------------------------------------------------------
    def _bytes(self, data: bytes, tokens: list[bytes]) -> bytes:
        rng = self.rng
        out = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 3))):
            op = rng.randrange(7)
            at = rng.randrange(len(out) + 1)
            if op == 0 and out:
                out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1 and out:
                out[min(at, len(out) - 1)] = rng.randrange(256)
            elif op == 2:
                out[at:at] = rng.choice(tokens)
            elif op == 3:
                del out[at : at + rng.randint(1, 16)]
            elif op == 4:
                del out[at:]
            elif op == 5:
                end = min(len(out), at + rng.randint(1, 64))
                out[at:at] = out[at:end]
            else:
                out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return bytes(out)

    def _value(self, depth: int = 0) -> Any:
        rng = self.rng
        pick = rng.randrange(10 if depth < 3 else 7)
        if pick < 7:
            return rng.choice(STRANGE_VALUES)
        if pick < 9:
            return [self._value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(STRANGE_KEYS): self._value(depth + 1) for _ in range(rng.randint(0, 3))}

    def _structure(self, doc: Any) -> Any:
        """``doc`` (a decoded seed) with one part replaced, dropped or added."""
        rng = self.rng
        holders = [doc]  # every dict and list inside, to pick one to change
        for holder in holders:
            inner = holder.values() if isinstance(holder, dict) else holder
            holders += [v for v in inner if isinstance(v, dict | list)]
        target = rng.choice(holders)
        if isinstance(target, dict):
            key = rng.choice(list(target) or [rng.choice(STRANGE_KEYS)])
            op = rng.randrange(3)
            if op == 0:
                target[key] = self._value()
            elif op == 1:
                target.pop(key, None)
            else:
                target[rng.choice(STRANGE_KEYS)] = self._value()
        elif target:
            i = rng.randrange(len(target))
            target[i] = self._value() if rng.random() < 0.7 else target[i]
            if rng.random() < 0.3:
                target.extend(target[: rng.randint(1, 40)])
        else:
            target.append(self._value())
        return doc

    def json_body(self) -> bytes:
        import orjson

        rng = self.rng
        seed = rng.choice(self.json_seeds)
        if rng.random() < 0.05:
            return seed
        if rng.random() < 0.5:
            return self._bytes(seed, JSON_TOKENS)
        doc = self._structure(orjson.loads(seed))
        try:
            body = orjson.dumps(doc)
        except TypeError:  # nested deeper than orjson writes
            return seed
        return body if rng.random() < 0.8 else self._bytes(body, JSON_TOKENS)

    def arrow_body(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.01:
            return (
                self._bytes(rng.choice(self.arrow_rare), [b"\x00"])
                if rng.random() < 0.5
                else rng.choice(self.arrow_rare)
            )
        out = bytearray(rng.choice(self.arrow_seeds))
        for _ in range(rng.choice((1, 1, 2, 3))):
            op = rng.randrange(6)
            if op <= 1:  # an integer of a header or buffer set to an edge value
                width = 4 if op == 0 else 8
                at = rng.randrange(0, max(1, len(out) - width), width)
                value = rng.choice(EDGE_INTS)
                out[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
            elif op == 2:
                del out[rng.randrange(len(out) + 1) :]
            elif op == 3:  # spliced with another stream
                other = rng.choice(self.arrow_seeds)
                out = out[: rng.randrange(len(out) + 1)] + other[rng.randrange(len(other) + 1) :]
            else:
                out = bytearray(self._bytes(bytes(out), [b"\xff\xff\xff\xff", b"\x00" * 8]))
        return bytes(out)

    def body(self) -> tuple[bytes, bytes]:
        """A (content type, body) of a well-framed JSON or Arrow request."""
        if self.rng.random() < 0.5:
            return b"application/json", self.json_body()
        return b"application/vnd.apache.arrow.stream", self.arrow_body()

    # -- requests ----------------------------------------------------------------------
    @staticmethod
    def request(ctype: bytes, body: bytes, query: bytes = b"") -> bytes:
        return (
            b"POST /v1/predict%s HTTP/1.1\r\nhost: fuzz\r\nauthorization: Bearer %s\r\n"
            b"content-type: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (query, TOKEN.encode(), ctype, len(body), body)
        )

    def framed(self, kind: str) -> bytes:
        """A request whose framing is right and body mutated."""
        if kind == "json":
            return self.request(b"application/json", self.json_body())
        return self.request(b"application/vnd.apache.arrow.stream", self.arrow_body())

    def headers(self) -> bytes:
        """A request whose headers (and so perhaps its framing) are mutated."""
        rng = self.rng
        ctype, body = (
            self.body()
            if rng.random() < 0.5
            else (
                (b"application/json", rng.choice(self.json_seeds))
                if rng.random() < 0.5
                else (b"application/vnd.apache.arrow.stream", rng.choice(self.arrow_seeds))
            )
        )
        lines = {
            b"host": [b"fuzz"],
            b"authorization": [b"Bearer " + TOKEN.encode()],
            b"content-type": [ctype],
            b"content-length": [b"%d" % len(body)],
        }
        chunked = False
        for _ in range(rng.choice((1, 1, 2, 3))):
            which = rng.randrange(5)
            if which == 0:
                lines[b"content-type"] = [rng.choice(CONTENT_TYPES)] if rng.random() < 0.9 else []
            elif which == 1:
                n = len(body)
                lines[b"content-length"] = rng.choice(
                    [
                        [],
                        [b"-1"],
                        [b"abc"],
                        [b"%d" % (n + rng.randint(1, 5))],
                        [b"%d" % max(0, n - 3)],
                        [b"99999999999999999999999"],
                        [b"%d" % n, b"%d" % (n + 1)],
                        [b" %d " % n],
                        [b"+%d" % n],
                        [b"0x10"],
                        [b"%d" % (1 << 40)],
                        [b""],
                        [b"%d" % n, b"%d" % n],
                    ]
                )
            elif which == 2:
                lines[b"authorization"] = (
                    [
                        rng.choice(
                            [
                                b"bearer " + TOKEN.encode(),
                                b"BEARER  " + TOKEN.encode(),
                                b"Bearer",
                                b"Bearer " + TOKEN.encode()[:-1],
                                b"Basic " + TOKEN.encode(),
                                b"",
                                b"Bearer " + TOKEN.encode() + b"\x00",
                                b"Bearer " + b"t" * 6000,
                                b"\xff\xfe " + TOKEN.encode(),
                                TOKEN.encode(),
                            ]
                        )
                    ]
                    if rng.random() < 0.9
                    else []
                )
            elif which == 3:
                te = rng.choice(
                    [
                        b"chunked",
                        b"Chunked",
                        b"gzip, chunked",
                        b"chunked, gzip",
                        b"identity",
                        b"chunked\x00",
                        b"xchunked",
                        b"",
                    ]
                )
                lines[b"transfer-encoding"] = [te]
                chunked = te.lower() == b"chunked" and rng.random() < 0.7
                if chunked and rng.random() < 0.7:
                    lines[b"content-length"] = []
            else:
                name = rng.choice(
                    [
                        b"x-" + b"a" * 9000,
                        b"bad header",
                        b"\x00name",
                        b"expect",
                        b"connection",
                        b"content-length",
                        b"host",
                    ]
                )
                value = rng.choice([b"100-continue", b"close", b"keep-alive", b"\r", b"v", b"1"])
                lines[name] = lines.get(name, []) + [value]
        if chunked:
            cut = rng.randrange(len(body) + 1)
            pieces = [body[:cut], body[cut:]]
            framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
            body = framed + rng.choice([b"0\r\n\r\n", b"0\r\n\r\n", b"zz\r\n", b"0\r\n", b""])
        head = b"".join(
            name + b": " + value + b"\r\n" for name, vs in lines.items() for value in vs
        )
        method = b"POST" if rng.random() < 0.95 else rng.choice([b"GET", b"PUT", b"P\x00ST"])
        version = b"HTTP/1.1" if rng.random() < 0.95 else rng.choice([b"HTTP/1.0", b"HTTP/9.9"])
        return b"%s /v1/predict %s\r\n%s\r\n%s" % (method, version, head, body)


class Tally:
    """What a fuzz run sent and got back."""

    def __init__(self) -> None:
        from collections import Counter

        self.sent: Counter[str] = Counter()
        self.codes: Counter[int] = Counter()
        self.unanswered: Counter[str] = Counter()
        self.server_errors: list[bytes] = []

    def figures(self, seconds: float, alive: bool) -> str:
        total = sum(self.sent.values())
        fives = sum(n for code, n in self.codes.items() if code >= 500)
        lines = [
            f"requests sent: {total} ({', '.join(f'{k} {self.sent[k]}' for k in KINDS)})",
            "status codes: " + ", ".join(f"{c}: {n}" for c, n in sorted(self.codes.items())),
            "no answer (connection closed or timed out after a broken request): "
            + ", ".join(f"{k} {self.unanswered[k]}" for k in KINDS),
            f"crashes: {0 if alive else 1}; 5xx: {fives}",
            f"duration: {seconds:.1f} s; {total / seconds:.0f} requests/s",
        ]
        return "\n".join(lines)


async def _read_answers(reader: Any, wanted: int, timeout_s: float) -> tuple[list[int], bytes]:
    """Status codes of up to ``wanted`` responses, until then or the close; and
    the raw bytes of any 5xx."""
    import httptools

    codes: list[int] = []
    raw = bytearray()

    class Callbacks:
        def on_message_complete(self) -> None:
            code = parser.get_status_code()
            if code >= 200:  # not "100 Continue": the answer follows
                codes.append(code)

    parser = httptools.HttpResponseParser(Callbacks())
    while len(codes) < wanted:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 16), timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            break
        if not chunk:
            break
        raw += chunk
        try:
            parser.feed_data(chunk)
        except httptools.HttpParserError:
            break
    return codes, bytes(raw) if any(c >= 500 for c in codes) else b""


async def fuzz_server(port: int, total: int, seed: int, max_seconds: float) -> tuple[Tally, float]:
    """Send about ``total`` mutated requests, a third of each kind, within
    ``max_seconds``: JSON and Arrow pipelined 32 at a time on kept-alive
    connections, mutated headers one per connection, many connections at once."""
    tally = Tally()
    mutator = Mutator(seed)
    started = time.monotonic()
    per_kind = total // 3
    deadline = started + max_seconds

    async def framed(kind: str) -> None:
        writer = None
        while tally.sent[kind] < per_kind and time.monotonic() < deadline:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            batch = [mutator.framed(kind) for _ in range(min(32, per_kind - tally.sent[kind]))]
            writer.write(b"".join(batch))
            tally.sent[kind] += len(batch)
            codes, raw = await _read_answers(reader, len(batch), 30.0)
            tally.codes.update(codes)
            if raw:
                tally.server_errors.append(raw[:2000])
            if len(codes) < len(batch):
                tally.unanswered[kind] += len(batch) - len(codes)
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    async def headers() -> None:
        while tally.sent["headers"] < per_kind and time.monotonic() < deadline:
            tally.sent["headers"] += 1
            request = mutator.headers()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                tally.unanswered["headers"] += 1
                continue
            try:
                writer.write(request)
                codes, raw = await _read_answers(reader, 1, 10.0)
            finally:
                writer.close()
            tally.codes.update(codes)
            if raw:
                tally.server_errors.append(raw[:2000])
            if not codes:
                tally.unanswered["headers"] += 1

    workers = [framed("json") for _ in range(3)] + [framed("arrow") for _ in range(3)]
    workers += [headers() for _ in range(48)]
    await asyncio.gather(*workers)
    return tally, time.monotonic() - started


def run_fuzz(proc: ServerProcess, total: int, seed: int, max_seconds: float) -> Tally:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    from tests.test_serving_untrusted import rss_bytes

    rss_before = rss_bytes(proc.proc.pid)
    tally, seconds = runner(fuzz_server(proc.port, total, seed, max_seconds))
    alive = proc.alive()
    print(f"\nserver fuzz, seed {seed}:\n" + tally.figures(seconds, alive))
    if alive:
        rss_after = rss_bytes(proc.proc.pid)
        print(
            f"server resident memory: {rss_before / 2**20:.0f} MiB before, "
            f"{rss_after / 2**20:.0f} MiB after"
        )
    assert alive, proc.output()[-3000:]
    assert not tally.server_errors, tally.server_errors[0].decode("latin-1")
    assert all(code < 500 for code in tally.codes), tally.codes
    assert httpx.get(proc.url + "/readyz").status_code == 200
    assert "Traceback" not in proc.output(), proc.output()[-3000:]
    return tally


@pytest.fixture(scope="module")
def fuzz_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store_dir = tmp_path_factory.mktemp("mutations") / "models"
    ModelStore(str(store_dir), MODEL).commit(trained_classifier().state(), Lineage())
    proc = ServerProcess(
        store_dir,
        "--max-events",
        "50",
        "--max-body-mb",
        "0.25",
        "--token",
        TOKEN,
        "--header-timeout-s",
        "1",
        "--body-timeout-s",
        "1",
    )
    try:
        wait_for(lambda: httpx.get(proc.url + "/readyz").status_code == 200, timeout=30)
        yield proc
    finally:
        proc.stop()


def test_mutated_requests_never_get_a_5xx_nor_kill_the_server(
    fuzz_server_process: ServerProcess,
) -> None:
    """The bounded run: 15,000 mutated requests (or 30 s, whichever comes first)."""
    tally = run_fuzz(fuzz_server_process, 15_000, seed=14, max_seconds=30)
    assert min(tally.sent[k] for k in KINDS) >= 500  # each kind really ran
    assert tally.codes[200] and tally.codes[400] and tally.codes[401] and tally.codes[413]


@pytest.mark.fuzz_long
def test_a_million_mutated_requests(fuzz_server_process: ServerProcess) -> None:
    seed = int(os.environ.get("STREAMLEARN_FUZZ_SEED", "2026"))
    total = int(os.environ.get("STREAMLEARN_FUZZ_REQUESTS", "1000002"))
    tally = run_fuzz(fuzz_server_process, total, seed=seed, max_seconds=3600)
    assert sum(tally.sent.values()) >= total - 2
