"""Deadlines for slow clients, enforced in uvicorn's HTTP protocol.

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
counted; the idle time between requests is uvicorn's ``timeout_keep_alive``.
A timer is armed only for a phase that one read of the socket leaves
unfinished (and once per connection, from its opening): the usual request,
whole in one read on a kept-alive connection, costs none.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["guarded_protocol", "HEADER_TIMEOUT_S", "BODY_TIMEOUT_S"]

HEADER_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%s"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with header and body deadlines."""

    header_timeout_s = HEADER_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = ""

    def _arm(self, phase: str, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = ""

    def _expired(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        cycle, phase = self.cycle, self._phase
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
        transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("idle", self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None:
            return
        phase = self._phase
        if phase == "headers":
            self._arm(phase, self.header_timeout_s)
        elif phase == "body":
            self._arm(phase, self.body_timeout_s)
        elif self.cycle is None or self.cycle.response_complete:
            # bytes that begin no request (uvicorn has stopped its idle timer)
            self._arm("idle", self.header_timeout_s)

    # -- httptools callbacks ------------------------------------------------------
    # They only note the phase: the timer of a phase still unfinished when the
    # bytes received so far are parsed is armed by data_received, so that the
    # usual request, whole in one read, costs no timer at all.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = "headers"  # an idle timer running since the opening goes on

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = "body"

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()


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
