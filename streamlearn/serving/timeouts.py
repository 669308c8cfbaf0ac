"""Deadlines for slow clients, enforced beside uvicorn's HTTP protocol.

uvicorn closes an idle keep-alive connection, but nothing bounds how long a
client may take to send a request: one that sends its headers or its body a
byte at a time, or stops half-way, holds a connection (and the body read so
far) for as long as it likes. :func:`guarded_protocol` makes a subclass of
uvicorn's ``httptools`` protocol with two deadlines per request:

* ``header_timeout_s`` from the request's first byte (or, for a first
  request, the connection's opening) to the end of its headers;
* ``body_timeout_s`` from the end of the headers to the end of the body.

Past either, the connection gets ``408 Request Timeout`` (when a request had
begun and no answer has started) and is closed. Time spent answering is not
counted; the idle time between requests is uvicorn's ``timeout_keep_alive``
(and bytes after an answer that begin no request get ``header_timeout_s``).

After a 408, and after uvicorn's own 400 for bytes that are not HTTP, the
connection is first closed for writing only: the client reads the answer and
then the connection's end, while what it still sends is read and dropped
until it closes too, or :data:`LINGER_S` passes without a byte from it
(:data:`LINGER_MAX_S` after the answer at the latest). Closed at once with
bytes unread, the kernel would reset the connection, and a client still
sending would get the reset, not the answer.

The deadlines cost a request nothing: no timer, no overridden method on its
path. One sweep per server, every :func:`sweep_interval` (a quarter of the
shorter deadline, at most 0.25 s), reads each open connection's phase off
uvicorn's own protocol state (a request's headers are complete once its scope
has a cycle, its body once that cycle wants no more) and closes those that
have been in one phase of one request past its deadline. So a deadline holds
to within two sweep intervals. Overriding the protocol's parser callbacks
instead costs about 5 % of a single-event prediction's instructions, and a
``data_received`` override still about 2 % (measured, ``docs/serving.md``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "guarded_protocol", "sweep_interval", "HEADER_TIMEOUT_S", "BODY_TIMEOUT_S", "LINGER_S",
    "LINGER_MAX_S",
]

HEADER_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 30.0
#: after a 408 or a 400 for bytes that are not HTTP, the connection is closed once the
#: client sent nothing this long ...
LINGER_S = 2.0
#: ... or at the latest this long after the answer
LINGER_MAX_S = 10.0

log = logging.getLogger(__name__)

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%s"
)


def sweep_interval(header_timeout_s: float, body_timeout_s: float) -> float:
    """How often the deadlines are checked: a quarter of the shorter one, at most 0.25 s.

    >>> sweep_interval(5.0, 30.0), sweep_interval(0.4, 2.0)
    (0.25, 0.1)
    """
    return min(0.25, header_timeout_s / 4, body_timeout_s / 4)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with header and body deadlines."""

    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (phase, the request it belongs to, when the sweep first saw it)
        self._watched: tuple[str, object, float] | None = None
        self._lingering = False  # answered (408, 400), closed for writing, dropping what comes

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(  # type: ignore[override]  # narrower, as uvicorn's own override
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._watched = ("idle", None, self.loop.time())  # a first request: from the opening
        state = self.server_state
        if getattr(state, "deadline_sweep", None) is None:
            interval = sweep_interval(self.header_timeout_s, self.body_timeout_s)
            handle = self.loop.call_later(interval, _sweep, state, self.loop, interval)
            state.deadline_sweep = handle  # type: ignore[attr-defined]  # an attribute of ours

    # -- the sweep ----------------------------------------------------------------
    def _phase_now(self) -> tuple[str, object]:
        """The phase the connection is in, and the request (scope or cycle) it is of."""
        cycle, scope = self.cycle, self.scope
        if cycle is not None and cycle.scope is scope:
            if cycle.more_body and not cycle.response_complete:
                return "body", cycle
            if (
                cycle.response_complete
                and self.timeout_keep_alive_task is None
                and not self.pipeline
            ):
                # answered, and bytes since stopped uvicorn's keep-alive timer
                # without beginning another request (CRLFs, a byte at a time)
                return "idle", cycle
            return "", None  # whole: the app has it, or uvicorn's keep-alive runs
        if scope is None:
            return "idle", None  # nothing received on a new connection
        return "headers", scope

    def check_deadline(self, now: float) -> None:
        """Close the connection if it has been in one phase past its deadline."""
        phase, request = self._phase_now()
        if not phase:
            self._watched = None
            return
        watched = self._watched
        if watched is None or watched[0] != phase or watched[1] is not request:
            since = now
            if watched is not None and watched[:2] == ("idle", None) and phase == "headers":
                since = watched[2]  # the first request's headers run from the opening
            self._watched = watched = (phase, request, since)
        limit = self.body_timeout_s if phase == "body" else self.header_timeout_s
        if now - watched[2] >= limit:
            self._expire(phase)

    def shutdown(self) -> None:
        """The server stops: a connection lingering after its answer closes now."""
        if self._lingering:
            self.transport.close()
        else:
            super().shutdown()

    def _expire(self, phase: str) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self._lingering:
            return
        cycle = self.cycle
        if phase == "headers":  # answer unless an earlier request is still being answered
            answer = cycle is None or cycle.response_complete
        else:  # the body: unless the app has begun answering, or it waits its turn
            answer = (
                phase == "body"
                and cycle is not None
                and not cycle.response_started
                and not self.pipeline
            )
        if answer:
            limit = self.header_timeout_s if phase == "headers" else self.body_timeout_s
            body = b'{"error":"request %s not received within %g s"}' % (phase.encode(), limit)
            transport.write(_TIMEOUT_RESPONSE % (len(body), body))
        if phase == "body" and cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app reads a disconnect; its answer goes nowhere
            cycle.message_event.set()
        log.debug("closed a connection past its deadline (%s)", phase)
        if answer:
            self._linger(transport)
        else:
            transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes it cannot parse as HTTP, then the close a 408
        gets: the client may still be sending (not on a request's path: only after a
        parse error). Not while an earlier request is still being answered: its answer
        is written after this one, and a transport closed for writing refuses it."""
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            super().send_400_response(msg)
            return
        transport = self.transport
        shim = _WriteThenLinger(transport, self._linger)
        self.transport = shim  # type: ignore[assignment]  # writes go through, close lingers
        try:
            super().send_400_response(msg)
        finally:
            self.transport = transport

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close for writing, then drop what comes until the client is done (module text)."""
        if not transport.can_write_eof():
            transport.close()
            return
        self._lingering = True
        transport.set_protocol(_Lingering(self, transport, self.loop))
        transport.write_eof()
        transport.resume_reading()  # uvicorn pauses reading while a body waits


class _WriteThenLinger:
    """A transport's stand-in for uvicorn's 400: ``write`` is the transport's,
    ``close`` lingers."""

    def __init__(
        self, transport: asyncio.Transport, linger: Callable[[asyncio.Transport], None]
    ) -> None:
        self.write = transport.write
        self._transport, self._linger = transport, linger

    def close(self) -> None:
        self._linger(self._transport)


class _Lingering(asyncio.Protocol):
    """A connection's protocol after its 408 or 400: reads and drops what the client
    sends; closes when the client does, or after :data:`LINGER_S` without a
    byte, :data:`LINGER_MAX_S` at the latest. Tells the HTTP protocol it
    replaced when the connection is gone."""

    def __init__(
        self, replaced: asyncio.Protocol, transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.replaced = replaced
        self.transport = transport
        self.loop = loop
        self.last = loop.time()
        self.until = self.last + LINGER_MAX_S
        self.timer = loop.call_later(LINGER_S, self._check)

    def data_received(self, data: bytes) -> None:
        self.last = self.loop.time()

    def eof_received(self) -> bool:
        return False  # the client is done: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.replaced.connection_lost(exc)

    def _check(self) -> None:
        now = self.loop.time()
        if now - self.last >= LINGER_S or now >= self.until:
            self.transport.close()
        else:
            self.timer = self.loop.call_at(min(self.last + LINGER_S, self.until), self._check)


def _sweep(state: Any, loop: asyncio.AbstractEventLoop, interval: float) -> None:
    """Check every open connection's deadline; run again while any is open."""
    now = loop.time()
    for connection in list(state.connections):
        check = getattr(connection, "check_deadline", None)
        if check is not None:
            try:
                check(now)
            except Exception:  # one odd connection never stops the sweep
                log.exception("checking a connection's deadline failed")
    if state.connections:
        state.deadline_sweep = loop.call_later(interval, _sweep, state, loop, interval)
    else:
        state.deadline_sweep = None  # the next connection starts it again


def guarded_protocol(
    header_timeout_s: float = HEADER_TIMEOUT_S, body_timeout_s: float = BODY_TIMEOUT_S
) -> type[GuardedHttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` class with these deadlines, for
    ``uvicorn.Config(http=...)``.

    >>> protocol = guarded_protocol(2.0, 10.0)
    >>> protocol.header_timeout_s, protocol.body_timeout_s
    (2.0, 10.0)
    """
    from streamlearn.errors import ConfigError

    for name, value in (("header_timeout_s", header_timeout_s), ("body_timeout_s", body_timeout_s)):
        if not value > 0:
            raise ConfigError(name, "a positive number of seconds", repr(value))
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout_s": float(header_timeout_s), "body_timeout_s": float(body_timeout_s)},
    )
