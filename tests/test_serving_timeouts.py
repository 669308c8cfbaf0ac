"""Slow clients against the real server process: none outlives its deadline.

The server runs with ``--header-timeout-s 1 --body-timeout-s 2``. Hundreds of
connections at once send their headers or their body a byte at a time, stop
half-way, or send nothing; each is timed from its opening to the server's
close. A client that is slow but within the deadlines is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from streamlearn.store import Lineage, ModelStore
from tests.test_serving_live import MODEL, ServerProcess, trained_classifier, wait_for

HEADER_S = 1.0
BODY_S = 2.0
MARGIN_S = 2.5  # a loaded 2-core machine: the close may come late, never never
BODY = b'{"features": {"x0": 1.0, "x1": 2.0}}'
HEAD = (
    b"POST /v1/predict HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\n\r\n" % len(BODY)
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store_dir = tmp_path_factory.mktemp("timeouts") / "models"
    ModelStore(str(store_dir), MODEL).commit(trained_classifier().state(), Lineage())
    proc = ServerProcess(
        store_dir, "--header-timeout-s", str(HEADER_S), "--body-timeout-s", str(BODY_S)
    )
    try:
        wait_for(lambda: httpx.get(proc.url + "/readyz").status_code == 200, timeout=30)
        yield proc
    finally:
        proc.stop()


async def _slow(port: int, before: bytes, dribble: bytes, pause_s: float) -> tuple[float, bytes]:
    """Send ``before`` at once, then ``dribble`` a byte every ``pause_s`` (then
    nothing); the seconds from the connection's opening to the server's close,
    and what the server sent.

    A bare socket, not asyncio's streams: the server resets a connection it
    closes with a dribbled byte unread, and a stream whose writer meets the
    reset drops the answer already received but not yet read; the kernel keeps
    it for the socket's next read.
    """
    loop = asyncio.get_running_loop()
    opened = time.monotonic()  # before connecting: a late start only lengthens the measure
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))

    async def send() -> None:
        try:
            await loop.sock_sendall(sock, before)
            for i in range(len(dribble)):
                await asyncio.sleep(pause_s)
                await loop.sock_sendall(sock, dribble[i : i + 1])
        except OSError:  # closed by the server
            return

    sender = asyncio.create_task(send())
    got = b""
    try:
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout=60):
            got += chunk
    except ConnectionError:  # the reset, after what was sent before it
        pass
    lived = time.monotonic() - opened
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender  # its socket calls end before the socket does
    sock.close()
    return lived, got


def test_no_slow_connection_outlives_its_deadline(server: ServerProcess) -> None:
    first = HEAD + BODY
    kinds = {
        # (sent at once, sent a byte at a time, pause, deadline from opening)
        "idle": (b"", b"", 0.0, HEADER_S),
        # the request's first byte goes at once: sent late on a loaded machine, the
        # connection would still be idle at the deadline and closed unanswered
        "slow headers": (HEAD[:1], HEAD[1:], 0.25, HEADER_S),
        "headers stopped": (HEAD[:30], b"", 0.0, HEADER_S),
        "slow body": (HEAD, BODY, 0.25, BODY_S),
        "body stopped": (HEAD + BODY[:10], b"", 0.0, BODY_S),
        "slow second request": (first, HEAD, 0.25, HEADER_S),
        # bytes after an answer that begin no request stop uvicorn's keep-alive timer
        "line ends after an answer": (first, b"\r\n" * 40, 0.25, HEADER_S + 0.25),
    }

    async def run() -> dict[str, list[tuple[float, bytes]]]:
        tasks = {
            kind: [
                asyncio.create_task(_slow(server.port, before, dribble, pause)) for _ in range(100)
            ]
            for kind, (before, dribble, pause, _) in kinds.items()
        }
        return {kind: [await t for t in group] for kind, group in tasks.items()}

    started = time.monotonic()
    results = asyncio.run(run())
    for kind, got in results.items():
        deadline = kinds[kind][3]
        longest = max(lived for lived, _ in got)
        print(f"{kind}: {len(got)} connections, the longest lived {longest:.2f} s")
        assert longest <= deadline + MARGIN_S, f"{kind}: a connection lived {longest:.1f} s"
        # one request begun and not finished: a 408 naming the deadline, then the close
        answers = [reply for _, reply in got]
        if kind == "slow second request":
            assert all(a.startswith(b"HTTP/1.1 200") and b" 408 " in a for a in answers), kind
        elif kind == "idle":
            assert answers == [b""] * 100
        elif kind == "line ends after an answer":  # answered once, then closed unanswered
            assert all(a.startswith(b"HTTP/1.1 200") and b" 408 " not in a for a in answers)
        else:
            others = [a[:80] for a in answers if not a.startswith(b"HTTP/1.1 408 Request Timeout")]
            assert not others, (kind, len(others), others[:3])
            what = b"headers" if deadline == HEADER_S else b"body"
            assert b"request " + what in answers[0]
    assert time.monotonic() - started < 60
    assert server.alive()
    assert httpx.post(server.url + "/v1/predict", content=BODY).status_code == 200


def test_a_client_still_sending_its_body_after_the_deadline_reads_the_408(
    server: ServerProcess,
) -> None:
    """The standard library's client sends a whole body before it reads. Its body
    dribbled on past the deadline: the server answers 408, closes for writing and
    drops what still comes, and the client reads the 408 once its body is sent.
    Closed at once, the client's next send would meet a reset instead."""
    import http.client

    def dribble() -> Iterator[bytes]:
        yield BODY[:1]
        for i in range(1, 15):  # 3.5 s of a 2 s deadline, still short of the whole body
            time.sleep(0.25)
            yield BODY[i : i + 1]

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"content-type": "application/json", "content-length": str(len(BODY))}
    started = time.monotonic()
    try:
        connection.request("POST", "/v1/predict", body=dribble(), headers=headers)
        sent_s = time.monotonic() - started
        answer = connection.getresponse()
        assert answer.status == 408
        assert b"request body not received within 2 s" in answer.read()
    finally:
        connection.close()
    assert sent_s > BODY_S + 1.0  # it was still sending a second after its 408


def test_a_slow_client_within_the_deadlines_is_answered(server: ServerProcess) -> None:
    async def run() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HEAD[:20])
        await asyncio.sleep(HEADER_S / 2)
        writer.write(HEAD[20:])
        await asyncio.sleep(BODY_S / 3)
        writer.write(BODY[:10])
        await asyncio.sleep(BODY_S / 3)
        writer.write(BODY[10:])
        got = await asyncio.wait_for(reader.read(4096), timeout=30)
        writer.close()
        return got

    assert asyncio.run(run()).startswith(b"HTTP/1.1 200")


def test_timeouts_are_checked_on_the_command_line(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamlearn.cli import main as cli_main

    for flag in ("--header-timeout-s", "--body-timeout-s"):
        assert cli_main(["serve", "--store", str(tmp_path), "--model", MODEL, flag, "0"]) == 1
        assert f"field `{flag}`: expected seconds in (0, 3600], got 0.0" in capsys.readouterr().err


def test_a_connection_lingers_after_its_408_while_the_client_sends_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a 408 the connection is closed once the client sent nothing for
    ``LINGER_S``, or ``LINGER_MAX_S`` after the 408 however it sends; the HTTP
    protocol it replaced hears of the connection's end."""
    from streamlearn.serving import timeouts

    monkeypatch.setattr(timeouts, "LINGER_S", 0.2)
    monkeypatch.setattr(timeouts, "LINGER_MAX_S", 1.0)

    class Transport:
        closed_at: float | None = None

        def close(self) -> None:
            self.closed_at = asyncio.get_running_loop().time()

    class Replaced(asyncio.Protocol):
        lost = False

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost = True

    async def linger(send_every_s: float, send_for_s: float) -> tuple[float, float, float]:
        """(start, the last byte received, the close), in the loop's time."""
        loop = asyncio.get_running_loop()
        transport, replaced = Transport(), Replaced()
        lingering = timeouts._Lingering(
            replaced, transport, loop  # type: ignore[arg-type]  # a stand-in transport
        )
        start = last = loop.time()
        while transport.closed_at is None and loop.time() - start < 5.0:
            await asyncio.sleep(send_every_s)
            if transport.closed_at is None and loop.time() - start < send_for_s:
                lingering.data_received(b"x")
                last = loop.time()
        assert transport.closed_at is not None
        lingering.connection_lost(None)
        assert replaced.lost
        return start, last, transport.closed_at

    start, last, closed = asyncio.run(linger(0.05, 0.4))  # stops sending after 0.4 s
    assert closed - last >= 0.2 and closed - start < 1.0
    start, last, closed = asyncio.run(linger(0.05, 10.0))  # never stops
    assert 1.0 <= closed - start < 3.0


def test_a_client_still_sending_after_bytes_that_are_not_http_reads_the_400(
    server: ServerProcess,
) -> None:
    """uvicorn answers bytes it cannot parse with a 400 and closed the connection at
    once: a client still sending got a reset. Now the connection lingers as after a
    408: every send goes through, then the client reads the 400 and the end."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        for _ in range(20):  # a second more of sending, after the answer
            time.sleep(0.05)
            sock.sendall(b"x" * 65536)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    assert got.startswith(b"HTTP/1.1 400 "), got[:200]
    assert server.alive()
