"""Run the prediction service: the app on uvicorn, one process, one event loop.

uvicorn picks ``uvloop`` and ``httptools`` when they are installed (measured
about 2.5x the requests per second of the pure-Python defaults, see
``docs/serving.md``) and falls back to asyncio and h11 otherwise.
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
import sys
from typing import Any

from streamlearn.errors import ConfigError, PortInUse
from streamlearn.serving.app import PredictionApp
from streamlearn.serving.model import ModelSource
from streamlearn.serving.prediction_log import RecordLog
from streamlearn.serving.timeouts import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, guarded_protocol
from streamlearn.serving.watcher import ModelWatcher

__all__ = ["build_app", "run_server", "UVICORN_OPTIONS"]

log = logging.getLogger(__name__)

#: how long a thread holds the interpreter lock while another waits (``sys.setswitchinterval``)
SWITCH_INTERVAL_S = 0.0005

# uvicorn's settings besides the app, address and lifespan; ``bench/serving.py``
# runs its bare "hello" reference with the same ones, so that the two differ by
# their app alone.
UVICORN_OPTIONS: dict[str, Any] = {
    "access_log": False,
    "server_header": False,  # no `server: uvicorn` header on every response
    # no X-Forwarded-* rewriting of the client address: nothing here reads it, and
    # it is one more coroutine and header scan on every request
    "proxy_headers": False,
    "timeout_keep_alive": 30,
}


def build_app(
    source: ModelSource,
    *,
    token: str | None = None,
    poll_interval_s: float = 0.02,
    max_body_bytes: int = 8 * 1024 * 1024,
    max_events: int = 10_000,
    max_decoded_bytes: int | None = None,
    prediction_log: RecordLog | None = None,
) -> PredictionApp:
    """The ASGI app serving ``source``, with its watcher (started by the app's lifespan).

    Parameters
    ----------
    source
        Where versions come from, e.g. :class:`~streamlearn.serving.StoreSource`.
    token
        Optional bearer token required on ``/v1/*`` and ``/metrics``.
    poll_interval_s
        How often the watcher asks the source which version to serve.
    max_body_bytes, max_events, max_decoded_bytes
        Limits of one prediction request (see :class:`PredictionApp`).
    prediction_log
        Where what was predicted for events with an ``id`` goes (see
        :mod:`streamlearn.serving.prediction_log`); closed when the app shuts down.
    """
    watcher = ModelWatcher(source, interval_s=poll_interval_s)
    return PredictionApp(
        watcher,
        token=token,
        max_body_bytes=max_body_bytes,
        max_events=max_events,
        max_decoded_bytes=max_decoded_bytes,
        prediction_log=prediction_log,
    )


def run_server(
    app: PredictionApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    header_timeout_s: float = HEADER_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> None:
    """Serve ``app`` on ``host:port`` until interrupted (blocking).

    A client has ``header_timeout_s`` from a request's first byte to the end
    of its headers, then ``body_timeout_s`` to the end of its body; past
    either it gets 408 and its connection is closed (see
    :mod:`streamlearn.serving.timeouts`).

    Raises :class:`~streamlearn.errors.PortInUse` if the port is taken.
    """
    import uvicorn

    if not 0 <= port <= 65535:
        raise ConfigError("port", "a TCP port in 0..65535", repr(port))
    protocol = guarded_protocol(header_timeout_s, body_timeout_s)
    _check_port(host, port)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        http=protocol,
        **UVICORN_OPTIONS,
    )
    log.info("serving model %r on http://%s:%d", app.model, host, port)
    # everything imported so far lives as long as the process: keep it out of the
    # collector's full passes, whose pauses would show in the latency tail
    gc.collect()
    gc.freeze()
    # the watcher thread writes each delta version into the spare model in Python
    # (about a millisecond at 10,000 slots): a request arriving meanwhile waits for
    # the interpreter lock at most this long, not the default 5 ms
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    uvicorn.Server(config).run()


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} on {host} is taken; stop what listens there or pass --port"
                ) from None
            raise ConfigError("host", "an address of this machine", repr(host)) from None
