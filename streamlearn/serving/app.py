"""The prediction service as a plain ASGI application.

A hand-written router over a handful of routes: measured against Starlette on
the same server, it leaves more of the per-request budget to the prediction
itself (see ``bench/serving.py`` and ``docs/serving.md``). Every request is
answered with JSON (or Prometheus text), never by an exception: bad input gets
a 4xx naming each bad field, and anything unexpected is logged and answered
with a 500 while the server keeps running.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter, time
from typing import Any
from urllib.parse import parse_qsl

import orjson

from streamlearn.errors import ConfigError, ValidationError, VersionNotFound
from streamlearn.serving.model import (
    EventAnswer,
    FastPredictor,
    OneAnswer,
    Predictions,
    Predictor,
)
from streamlearn.serving.openapi import openapi_document
from streamlearn.serving.prediction_log import Answered, RecordLog, served_records
from streamlearn.serving.prometheus import ServiceMetrics
from streamlearn.serving.request_body import (
    ARROW_STREAM,
    BadRequest,
    check_arrow,
    check_json,
    decode_arrow,
    load_json,
    plain_features,
)
from streamlearn.serving.watcher import ModelWatcher, Served, not_serving_message

__all__ = ["PredictionApp"]

log = logging.getLogger(__name__)

JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_ARROW = ARROW_STREAM.encode()
#: seconds a client is told to wait (``Retry-After``) on every 503
RETRY_AFTER_S = 1
_RETRY_AFTER = (b"retry-after", b"%d" % RETRY_AFTER_S)

Reply = tuple[int, bytes, bytes, int]  # status, body, content type, predictions made
_UNTRIED = object()  # _plain_event did not try the native table
Route = tuple[str, "Callable[..., Awaitable[Reply]]", bool, str]

# Arrow bodies up to this size have their headers checked on the event loop, and
# are decoded there too when they declare at most INLINE_DECODED bytes (about a
# millisecond of decoding, no more than scoring them takes on the loop anyway): a
# hop to a thread costs more than that in the interpreter lock's hand-offs (a
# 300 KiB body of 1,000 events: 2.8 ms of the server's CPU per request through a
# thread, 1.5 ms inline; docs/serving.md). Anything bigger is checked and decoded
# by one of DECODE_THREADS threads, so that it never holds the loop for long.
INLINE_BODY = 1024 * 1024
INLINE_DECODED = 2 * 1024 * 1024
DECODE_THREADS = 2
#: at most this long reading and dropping the rest of a refused request's body
REFUSED_BODY_DRAIN_S = 5.0
# what was answered for events with an ``id`` waits for the prediction log's next batch
# this many requests, or this long, at most (see PredictionApp._log)
LOG_BATCH = 64
LOG_LINGER_S = 0.005


class PredictionApp:
    """ASGI application answering predictions from a :class:`ModelWatcher`.

    Parameters
    ----------
    watcher
        Holds the version serving now; started and stopped with the app's
        lifespan.
    token
        When set, ``/v1/*``, ``/metrics`` and ``/openapi.json`` need the header
        ``Authorization: Bearer <token>``; ``/healthz`` and ``/readyz`` stay open.
    max_body_bytes
        Larger bodies are refused with 413 before they are read.
    max_events
        Most events (or Arrow rows) one request may carry.
    max_decoded_bytes
        Most bytes an Arrow body may declare once decompressed (refused with
        413 from its headers, before decoding); default four times
        ``max_body_bytes``.
    """

    def __init__(
        self,
        watcher: ModelWatcher,
        *,
        token: str | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        max_events: int = 10_000,
        max_decoded_bytes: int | None = None,
        prediction_log: RecordLog | None = None,
    ) -> None:
        if token is not None and not token.strip():
            raise ConfigError("token", "a non-empty string", repr(token))
        if max_body_bytes < 1:
            raise ConfigError("max_body_bytes", "a positive number of bytes", repr(max_body_bytes))
        if max_events < 1:
            raise ConfigError("max_events", "a positive integer", repr(max_events))
        if max_decoded_bytes is None:
            max_decoded_bytes = 4 * max_body_bytes
        if max_decoded_bytes < 1:
            raise ConfigError(
                "max_decoded_bytes", "a positive number of bytes", repr(max_decoded_bytes)
            )
        self.max_decoded_bytes = max_decoded_bytes
        self._decoder: ThreadPoolExecutor | None = None
        self.watcher = watcher
        self.model = watcher.source.name
        self.max_body_bytes = max_body_bytes
        # a content-length of fewer digits than the limit is under it
        self._short_length = len(str(max_body_bytes)) - 1
        self.max_events = max_events
        self._auth = f"Bearer {token}".encode() if token is not None else None
        self._token = token.encode() if token is not None else b""
        self.metrics = ServiceMetrics(self.model, self._model_info, lambda: watcher.swaps)
        self.prediction_log = prediction_log
        self._log_pending: list[Answered] = []
        if prediction_log is not None:
            self.metrics.log_counts = self._log_counts
        self._openapi = orjson.dumps(openapi_document(self.model, auth=token is not None))
        # path -> (method, handler, needs the token, the route's label in the metrics)
        self._routes: dict[str, Route] = {
            "/v1/predict": ("POST", self._predict, True, "/v1/predict"),
            "/v1/models": ("GET", self._models, True, "/v1/models"),
            "/v1/models/current": ("GET", self._current, True, "/v1/models/current"),
            "/healthz": ("GET", self._healthz, False, "/healthz"),
            "/readyz": ("GET", self._readyz, False, "/readyz"),
            "/metrics": ("GET", self._metrics, True, "/metrics"),
            "/openapi.json": ("GET", self._openapi_json, True, "/openapi.json"),
            # KServe Open Inference Protocol v2 and TF Serving (see serving/protocols.py)
            "/v2": ("GET", self._v2_server, True, "/v2"),
            "/v2/health/live": ("GET", self._v2_live, False, "/v2/health/live"),
            "/v2/health/ready": ("GET", self._v2_ready, False, "/v2/health/ready"),
            f"/v2/models/{self.model}": (
                "GET", self._v2_metadata, True, "/v2/models/{model}"
            ),
            f"/v2/models/{self.model}/ready": (
                "GET", self._v2_ready, False, "/v2/models/{model}/ready"
            ),
            f"/v2/models/{self.model}/infer": (
                "POST", self._v2_infer, True, "/v2/models/{model}/infer"
            ),
            f"/v1/models/{self.model}:predict": (
                "POST", self._tf_predict, True, "/v1/models/{model}:predict"
            ),
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        started = perf_counter()
        path = scope["path"]
        method = scope["method"]
        route = self._routes.get(path)
        if route is None:
            route = self._versioned_route(path)
        predictions = 0
        extra: list[tuple[bytes, bytes]] | None = None
        unread = False  # refused with (part of) its body not received
        try:
            if route is None:
                status, body, ctype = 404, _error(self._no_route(path)), JSON
                path = "other"
                unread = True
            elif method != route[0] and not (route[0] == "GET" and method == "HEAD"):
                status, body, ctype = 405, _error(f"use {route[0]} on {path}"), JSON
                extra = [(b"allow", route[0].encode())]
                path = route[3]
                unread = True
            elif route[2] and self._auth is not None and not self._authorised(scope):
                status, body, ctype = 401, _error("missing or wrong bearer token"), JSON
                extra = [(b"www-authenticate", b"Bearer")]
                path = route[3]
                unread = True
            elif route[3] == "/v1/predict":
                path = route[3]
                # the usual request, one plain event: answered here when it can be,
                # without one more coroutine on its way (see _plain_event)
                message = await receive()
                reply = self._plain_event(scope, message)
                if reply is _UNTRIED:
                    reply = await self._predict(scope, receive, message)
                elif reply is None or reply is False:  # tried: not plain, or a miss
                    reply = await self._predict(scope, receive, message, missed=reply is False)
                status, body, ctype, predictions = reply
            else:
                path = route[3]
                status, body, ctype, predictions = await route[1](scope, receive)
        except BadRequest as exc:
            status, body, ctype = exc.status, orjson.dumps(exc.to_json()), JSON
            unread = exc.body_unread
        except _ProtocolRefusal as exc:
            status, body, ctype, unread = exc.status, exc.body, JSON, exc.body_unread
        except ValidationError as exc:  # raised by the model's own encoder
            status, body, ctype = 422, orjson.dumps(BadRequest([exc]).to_json()), JSON
        except VersionNotFound as exc:
            status, body, ctype = 404, _error(str(exc)), JSON
        except Exception:  # never die of a request
            log.exception("error answering %s %s", method, path)
            status, body, ctype = 500, _error("internal error, see the server log"), JSON
        headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]
        if extra is not None:
            headers += extra
        if status == 503:
            headers.append(_RETRY_AFTER)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if method == "HEAD":
            body = b""
        if unread and _body_to_drain(scope):
            # the answer whole, then the rest of the body read and dropped before the
            # answer is complete: a connection that closes after it (``connection:
            # close``, HTTP/1.0) would otherwise close with bytes unread, the kernel
            # would reset it, and a client still sending would get the reset, not this
            await send({"type": "http.response.body", "body": body, "more_body": True})
            # timed as the client got it: the drain is the connection's, not the answer's
            self.metrics.observe(path, status, perf_counter() - started, predictions)
            await _drain(receive, REFUSED_BODY_DRAIN_S)
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(path, status, perf_counter() - started, predictions)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.watcher.start)
                except Exception as exc:  # report, do not crash the loop
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.watcher.stop)
                if self.prediction_log is not None:
                    self._flush_log()
                    await asyncio.to_thread(self.prediction_log.close)
                if self._decoder is not None:
                    self._decoder.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorised(self, scope: dict[str, Any]) -> bool:
        """``Authorization: Bearer <token>``, the scheme in any case (RFC 7235)."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                if hmac.compare_digest(value, self._auth or b""):  # the usual spelling
                    return True
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.lstrip(b" "), self._token
                )
        return False

    def _check_declared(self, declared: bytes, unread: bool = True) -> None:
        """Refuse with 413, before reading, a body whose ``content-length`` is over the
        limit; ``unread``: none of the body was received yet, or not all of it."""
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(
                [ValidationError("content-length", "an integer", declared.decode("latin-1"))],
                400,
                body_unread=unread,
            ) from None
        if size > self.max_body_bytes:
            raise _too_large(self.max_body_bytes, size, unread)

    async def _read_body(self, receive: Any, message: dict[str, Any]) -> bytes:
        """The whole body, from its first ASGI ``message`` on (the usual body
        is that one message); refused with 413 beyond the limit."""
        limit = self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] != "http.request":  # the client went away
                raise BadRequest([ValidationError("body", "a complete body", "a disconnect")], 400)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, size, message.get("more_body", False))
            if not message.get("more_body", False):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)
            message = await receive()

    def _plain_event(self, scope: dict[str, Any], message: dict[str, Any]) -> Any:
        """The answer to the usual request (one plain JSON event in one body
        message, no query), scored by the served predictor's native table from
        the raw body (:meth:`FastPredictor.predict_event`). Otherwise
        :meth:`_predict` answers, told by what this returns whether the table
        was tried: :data:`_UNTRIED` when it was not (another request, no fast
        paths), ``None`` when the body is not one plain event or the predictor
        has no table, ``False`` when the table lacks a name or string of it."""
        if scope["query_string"] or message.get("more_body", False):
            return _UNTRIED
        body = message.get("body", b"")
        if len(body) > self.max_body_bytes or message["type"] != "http.request":
            return _UNTRIED
        for name, value in scope["headers"]:
            if name == b"content-type":
                if value != JSON:
                    return _UNTRIED
            elif name == b"content-length" and (
                len(value) > self._short_length or not value.isdigit()
            ):
                return _UNTRIED
        served = self.watcher.served  # its fast paths were found out at the swap
        if served is None:
            return _UNTRIED
        fast = served.fast
        if fast is None:
            return _UNTRIED
        got = fast.predict_event(body)
        if not got:
            return got
        return 200, self._event_answer(fast, got, body), JSON, 1

    async def _predict(
        self,
        scope: dict[str, Any],
        receive: Any,
        message: dict[str, Any] | None = None,
        missed: bool | None = None,
    ) -> Reply:
        """Any prediction request. ``message`` is the body's first ASGI message
        when already received; ``missed`` is given when :meth:`_plain_event`
        tried the native table on it: ``True`` when the table lacked a name or
        string, ``False`` when the body was not one plain event."""
        query = scope["query_string"]
        version = _version_query(query) if query else None
        ctype = b""
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value
            elif name == b"content-length":
                declared = value
        if declared is not None and (len(declared) > self._short_length or not declared.isdigit()):
            self._check_declared(
                declared, unread=message is None or message.get("more_body", False)
            )
        if ctype and ctype != JSON:
            ctype = ctype.split(b";", 1)[0].strip().lower()
        if message is None:
            message = await receive()
        body = message.get("body", b"")
        if (
            message["type"] != "http.request"
            or message.get("more_body", False)
            or len(body) > self.max_body_bytes
        ):
            body = await self._read_body(receive, message)
        if ctype == _ARROW:
            batch: Any = await self._parse_arrow(body)
            predictor = await self._predictor(version)
            if predictor is None:
                return 503, self._not_ready(), JSON, 0
            result = predictor.predict_columns(batch.columns, batch.n_rows)
            return 200, self._render(predictor, result, False), JSON, len(result)
        if ctype and ctype != JSON:
            got = ctype.decode("latin-1")[:60]
            raise BadRequest(
                [ValidationError("content-type", f"application/json or {ARROW_STREAM}", got)], 415
            )
        served: Served | None = None
        if version is None:
            served = self.watcher.served
            if missed is None and served is not None:
                # the usual request, one plain event, scored from the raw body in one call
                fast = served.fast
                missed = False
                if fast is not None:
                    scored = fast.predict_event(body)
                    if scored:
                        return 200, self._event_answer(fast, scored, body), JSON, 1
                    missed = scored is False
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = load_json(body)  # raises the 400 that names the problem
        if version is not None:
            served = await self._served(version)
        fast = None if served is None else served.fast
        if fast is not None:
            if type(doc) is dict and len(doc) == 1:  # one event and nothing else: the usual one
                features = doc.get("features")
                if type(features) is dict:
                    one = fast.predict_one(features)
                    if one is not None:
                        if missed:  # answered: the next such body is scored from its bytes
                            fast.remember(features)
                        return 200, self._render_one(fast, one), JSON, 1
            plain = plain_features(doc, self.max_events)
            if plain is not None:
                quick = fast.predict_fast(plain[0])
                if quick is not None:
                    if missed and plain[1]:  # one event with its id, key or ts: as above
                        fast.remember(plain[0][0])
                    answer = self._render(fast, quick, plain[1], doc)
                    if self.prediction_log is not None:
                        self._log(doc, plain[0], quick, fast.version,
                                  body if plain[1] else None)
                    return 200, answer, JSON, len(quick)
        batch = check_json(doc, self.max_events)  # names every bad field
        if served is None:
            return 503, self._not_ready(), JSON, 0
        predictor = served.predictor
        result = predictor.predict_features(batch.features)
        answer = self._render(predictor, result, batch.single, doc)
        if self.prediction_log is not None:
            self._log(doc, batch.features, result, predictor.version)
        return 200, answer, JSON, len(result)

    def _log(
        self, doc: Any, features: Any, result: Predictions, version: int,
        body: bytes | None = None,
    ) -> None:
        """Keep what was answered for the request's events with an ``id`` for the
        prediction log's next batch, made into records and offered to the log (which
        never waits: see :class:`RecordLog`) at most ``LOG_BATCH`` requests or
        ``LOG_LINGER_S`` later, on this loop: records made many in a row cost the
        request path less than one at a time. ``body``: the raw body of a single plain
        event, which its record can be made of (:func:`served_records`)."""
        if body is not None and doc.get("id") is None:
            return  # one event without an id: nothing to log
        pending = self._log_pending
        pending.append((doc, features, result, version, body, time()))
        if len(pending) == 1:
            asyncio.get_running_loop().call_later(LOG_LINGER_S, self._flush_log)
        elif len(pending) == LOG_BATCH:
            asyncio.get_running_loop().call_soon(self._flush_log)

    def _flush_log(self) -> None:
        """Offer the prediction log the records of what :meth:`_log` keeps."""
        if self._log_pending and self.prediction_log is not None:
            pending, self._log_pending = self._log_pending, []
            self.prediction_log.offer(served_records(pending, self.model))

    def _log_counts(self) -> dict[str, int]:
        """The prediction log's counts, with what waits for its next batch offered."""
        assert self.prediction_log is not None
        self._flush_log()
        return self.prediction_log.counts()

    async def _parse_arrow(self, body: bytes) -> Any:
        """An Arrow body checked from its headers, then decoded and fully
        validated: on the event loop when small, else in a decoding thread."""
        if len(body) <= INLINE_BODY:
            declared = check_arrow(body, self.max_events, self.max_decoded_bytes)
            if declared.decoded_bytes <= INLINE_DECODED:
                return decode_arrow(body, self.max_events)
        if self._decoder is None:
            self._decoder = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="arrow-decode")
        return await asyncio.get_running_loop().run_in_executor(
            self._decoder, self._check_and_decode, body
        )

    def _check_and_decode(self, body: bytes) -> Any:
        check_arrow(body, self.max_events, self.max_decoded_bytes)
        return decode_arrow(body, self.max_events)

    async def _served(self, version: int | None) -> Served | None:
        """The version asked for (loaded off the event loop if need be), else the current one."""
        if version is None:
            return self.watcher.served
        served = self.watcher.peek(version)
        if served is None:  # load it in a worker thread, off the event loop
            served = await asyncio.to_thread(self.watcher.get, version)
        return served

    async def _predictor(self, version: int | None) -> Predictor | None:
        """The predictor of :meth:`_served`."""
        served = await self._served(version)
        return None if served is None else served.predictor

    def _event_answer(self, fast: FastPredictor, got: EventAnswer, body: bytes) -> bytes:
        """The answer to one event scored from its raw ``body``
        (:meth:`FastPredictor.predict_event`), its ``id`` and ``key`` echoed; an
        event with an ``id`` is kept for the prediction log, as :meth:`_predict`
        keeps it when it decodes the body."""
        answer, event_id, key, ts = got
        if event_id is not None and self.prediction_log is not None:
            fields = {"id": event_id}  # what the log's record needs of the decoded body
            if key is not None:
                fields["key"] = key
            if ts is not None:
                fields["ts"] = ts
            self._log(fields, None, Predictions.of_one(answer, fast.classes), fast.version, body)
        return self._render_one(fast, answer, event_id, key)

    def _render_one(
        self, predictor: FastPredictor, got: OneAnswer, event_id: Any = None, key: Any = None
    ) -> bytes:
        """The answer to one event from ``predict_one``'s ``(prediction,
        probabilities, known)`` and the event's ``id`` and ``key`` (``None``:
        absent); the same document :meth:`_render` makes of a single event's
        :class:`Predictions`."""
        value, proba, known = got
        doc: dict[str, Any] = {
            "model": self.model,
            "version": predictor.version,
            "age_s": int((time() - predictor.created_at) * 1000.0) / 1000.0,  # see _age_s
            "prediction": value,
        }
        if proba is not None:
            doc["classes"] = predictor.classes
            doc["probabilities"] = proba
        doc["known_features"] = known
        if event_id is not None:
            doc["id"] = event_id
        if key is not None:
            doc["key"] = key
        return orjson.dumps(doc, option=_DUMP_OPTIONS)

    def _render(
        self, predictor: Predictor, result: Predictions, single: bool, request: Any = None
    ) -> bytes:
        """The answer to a request from its :class:`Predictions`; the ``id`` and
        ``key`` of a JSON ``request``'s events are echoed (``ids``, ``keys`` of
        an envelope, when any event has one)."""
        doc: dict[str, Any] = {
            "model": self.model,
            "version": predictor.version,
            "age_s": _age_s(predictor.created_at),
        }
        known = result.known
        if single:
            doc["prediction"] = result.values[0]
            if result.probabilities is not None:
                doc["classes"] = result.classes
                doc["probabilities"] = result.probabilities[0]
            if known is not None:
                doc["known_features"] = int(known[0])
            if type(request) is dict and len(request) > 1:
                for name in ("id", "key"):
                    if name in request:
                        doc[name] = request[name]
        else:
            doc["predictions"] = result.values
            if result.probabilities is not None:
                doc["classes"] = result.classes
                doc["probabilities"] = result.probabilities
            if known is not None:
                doc["known_features"] = known
            if type(request) is dict:
                _echo_ids(request.get("events"), doc)
        return orjson.dumps(doc, option=_DUMP_OPTIONS)

    async def _models(self, scope: dict[str, Any], receive: Any) -> Reply:
        versions = await asyncio.to_thread(self.watcher.source.versions)
        current = self.watcher.current
        doc = {
            "model": self.model,
            "serving": current.version if current is not None else None,
            "versions": versions,
        }
        return 200, orjson.dumps(doc, option=_DUMP_OPTIONS), JSON, 0

    async def _current(self, scope: dict[str, Any], receive: Any) -> Reply:
        current = self.watcher.current
        if current is None:
            return 503, self._not_ready(), JSON, 0
        doc = {
            "model": self.model,
            "version": current.version,
            "created_at": current.created_at,
            "age_s": _age_s(current.created_at),
            "lineage": current.lineage,
        }
        return 200, orjson.dumps(doc, option=_DUMP_OPTIONS), JSON, 0

    async def _healthz(self, scope: dict[str, Any], receive: Any) -> Reply:
        return 200, b'{"status":"ok"}', JSON, 0

    async def _readyz(self, scope: dict[str, Any], receive: Any) -> Reply:
        current = self.watcher.current
        if current is None:
            doc = self._not_ready_doc()
            doc["status"] = "waiting for a first model version"
            return 503, orjson.dumps(doc), JSON, 0
        return 200, orjson.dumps({"status": "ready", "version": current.version}), JSON, 0

    async def _metrics(self, scope: dict[str, Any], receive: Any) -> Reply:
        return 200, self.metrics.render().encode(), PROMETHEUS, 0

    async def _openapi_json(self, scope: dict[str, Any], receive: Any) -> Reply:
        return 200, self._openapi, JSON, 0

    # -- KServe Open Inference Protocol v2, TF Serving ------------------------------

    def _versioned_route(self, path: str) -> Route | None:
        """``/v2/models/<model>/versions/<v>[/ready|/infer]``: a route bound to version v."""
        prefix = f"/v2/models/{self.model}/versions/"
        if not path.startswith(prefix):
            return None
        version_text, _, action = path[len(prefix) :].partition("/")
        if not (version_text.isascii() and version_text.isdigit() and len(version_text) <= 18):
            return None
        version = int(version_text)
        label = "/v2/models/{model}/versions/{version}"
        if action == "":

            async def metadata(scope: dict[str, Any], receive: Any) -> Reply:
                return await self._v2_metadata(scope, receive, version)

            return ("GET", metadata, True, label)
        if action == "ready":

            async def ready(scope: dict[str, Any], receive: Any) -> Reply:
                return await self._v2_ready(scope, receive, version)

            return ("GET", ready, False, label + "/ready")
        if action == "infer":

            async def infer(scope: dict[str, Any], receive: Any) -> Reply:
                return await self._v2_infer(scope, receive, version)

            return ("POST", infer, True, label + "/infer")
        return None

    def _no_route(self, path: str) -> str:
        """The 404 message; a model route of another model names the one served."""
        for prefix in ("/v2/models/", "/v1/models/"):
            if path.startswith(prefix):
                return (
                    f"no route {path[:100]!r}: this server serves model {self.model!r}"
                    f" (/v2/models/{self.model}, /v1/models/{self.model}:predict)"
                )
        return f"no route {path[:100]!r}"

    async def _json_body(self, scope: dict[str, Any], receive: Any) -> Any:
        """A JSON request body, its size and content type checked as /v1/predict's."""
        ctype = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value.split(b";", 1)[0].strip().lower()
            elif name == b"content-length":
                self._check_declared(value)
        if ctype and ctype != JSON:
            got = ctype.decode("latin-1")[:60]
            raise BadRequest(
                [ValidationError("content-type", "application/json", got)], 415, body_unread=True
            )
        body = await self._read_body(receive, await receive())
        return load_json(body)

    async def _v2_server(self, scope: dict[str, Any], receive: Any) -> Reply:
        from streamlearn import __version__

        doc = {"name": "streamlearn", "version": __version__, "extensions": []}
        return 200, orjson.dumps(doc), JSON, 0

    async def _v2_live(self, scope: dict[str, Any], receive: Any) -> Reply:
        return 200, b'{"live":true}', JSON, 0

    async def _v2_ready(
        self, scope: dict[str, Any], receive: Any, version: int | None = None
    ) -> Reply:
        """Ready: 200; not (yet): 400, as the protocol has it (a 4xx means false)."""
        if self.watcher.current is None:
            doc = self._not_ready_doc()
            doc["ready"] = False
            return 400, orjson.dumps(doc), JSON, 0
        if version is not None:
            try:
                await self._predictor(version)
            except VersionNotFound as exc:
                return 400, orjson.dumps({"ready": False, "error": str(exc)}), JSON, 0
        return 200, b'{"ready":true}', JSON, 0

    async def _v2_metadata(
        self, scope: dict[str, Any], receive: Any, version: int | None = None
    ) -> Reply:
        from streamlearn.serving.protocols import v2_model_metadata

        predictor = await self._predictor(version)
        if predictor is None:
            return 503, self._not_ready(), JSON, 0
        if version is None:
            listed = await asyncio.to_thread(self.watcher.source.versions)
            versions = [v["version"] for v in listed if "version" in v]
        else:
            versions = [version]
        doc = v2_model_metadata(self.model, versions, getattr(predictor, "classes", None))
        return 200, orjson.dumps(doc), JSON, 0

    async def _v2_infer(
        self, scope: dict[str, Any], receive: Any, version: int | None = None
    ) -> Reply:
        from streamlearn.serving.protocols import v2_columns, v2_response

        try:
            doc = await self._json_body(scope, receive)
            batch, request_id, outputs = v2_columns(doc, self.max_events)
            predictor = await self._predictor(version)
            if predictor is None:
                return 503, self._not_ready(), JSON, 0
            result = predictor.predict_columns(batch.columns, batch.n_rows)
        except ValidationError as exc:  # the protocol's errors: {"error": ...}, 400
            raise _ProtocolRefusal(exc) from None
        answer = v2_response(self.model, predictor.version, result, request_id, outputs)
        return 200, orjson.dumps(answer, option=_DUMP_OPTIONS), JSON, len(result)

    async def _tf_predict(self, scope: dict[str, Any], receive: Any) -> Reply:
        from streamlearn.serving.protocols import tf_events, tf_response

        try:
            batch = tf_events(await self._json_body(scope, receive), self.max_events)
        except ValidationError as exc:
            raise _ProtocolRefusal(exc) from None
        predictor = self.watcher.current
        if predictor is None:
            return 503, self._not_ready(), JSON, 0
        result = predictor.predict_features(batch.features)
        answer = tf_response(result, predictor.version)
        return 200, orjson.dumps(answer, option=_DUMP_OPTIONS), JSON, len(result)

    def _not_ready_doc(self) -> dict[str, Any]:
        """Why nothing is served: the model, the models the store holds, the
        store's last error."""
        models = self.watcher.models_available
        doc: dict[str, Any] = {
            "error": not_serving_message(self.model, models),
            "model": self.model,
        }
        if models is not None:
            doc["models_in_store"] = models
        if self.watcher.last_error is not None:
            doc["store_error"] = self.watcher.last_error
        return doc

    def _not_ready(self) -> bytes:
        return orjson.dumps(self._not_ready_doc())

    def _model_info(self) -> tuple[int, float] | None:
        current = self.watcher.current
        return None if current is None else (current.version, current.created_at)


class _ProtocolRefusal(Exception):
    """A refusal answered in the KServe v2 and TF Serving protocols' own form:
    ``{"error": ...}`` with the fields named as the native API names them, and 400
    where the native API answers 422."""

    def __init__(self, exc: ValidationError) -> None:
        super().__init__(str(exc))
        problems = exc.problems if isinstance(exc, BadRequest) else [exc]
        self.status = exc.status if isinstance(exc, BadRequest) and exc.status != 422 else 400
        fields = [{"field": p.field, "expected": p.expected, "got": p.got} for p in problems]
        self.body = orjson.dumps({"error": str(exc), "fields": fields})
        self.body_unread = isinstance(exc, BadRequest) and exc.body_unread


def _echo_ids(events: Any, doc: dict[str, Any]) -> None:
    """``ids`` and ``keys`` of an envelope's events (``null`` where absent),
    when any event carries one."""
    if type(events) is not list or all(type(e) is dict and len(e) == 1 for e in events):
        return
    for name, plural in (("id", "ids"), ("key", "keys")):
        if any(type(e) is dict and name in e for e in events):
            doc[plural] = [e.get(name) if type(e) is dict else None for e in events]


def _age_s(created_at: float) -> float:
    """Seconds since ``created_at``, in whole milliseconds (cut, not rounded:
    ``round(x, 3)`` formats the number through a string, several times slower)."""
    return int((time() - created_at) * 1000.0) / 1000.0


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _body_to_drain(scope: dict[str, Any]) -> bool:
    """Whether a request refused before its whole body was received has a body on
    its way: it declares one, and does not wait for ``100 Continue`` to send it.

    >>> _body_to_drain({"headers": [(b"content-length", b"900000")]})
    True
    >>> _body_to_drain({"headers": [(b"content-length", b"0")]})
    False
    >>> _body_to_drain({"headers": [(b"transfer-encoding", b"chunked"),
    ...                             (b"expect", b"100-continue")]})
    False
    """
    body = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            body = value.strip() != b"0"
        elif name == b"transfer-encoding":
            body = True
        elif name == b"expect":
            return False  # the client sends its body only if told to continue
    return body


async def _drain(receive: Any, limit_s: float) -> None:
    """Receive and drop request body messages until the body ends, the client goes
    away, or ``limit_s`` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _too_large(limit: int, size: int, body_unread: bool) -> BadRequest:
    return BadRequest(
        [ValidationError("body", f"at most {limit} bytes", f"{size} bytes")],
        413,
        body_unread=body_unread,
    )


def _version_query(query: bytes) -> int | None:
    if not query:
        return None
    version = None
    problems = []
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key != "version":
            problems.append(ValidationError(key, "no query parameter but `version`", repr(value)))
        elif not value.isascii() or not value.isdigit() or len(value) > 18:
            problems.append(
                ValidationError("version", "a version number (integer >= 0)", repr(value))
            )
        else:
            version = int(value)
    if problems:
        raise BadRequest(problems)
    return version
