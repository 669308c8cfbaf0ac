"""A small Python client for the prediction service, on httpx.

Errors map onto :mod:`streamlearn.errors`: a refused request raises
:class:`~streamlearn.errors.ValidationError` naming the first bad field (all of
them in ``.problems``), an unknown version
:class:`~streamlearn.errors.VersionNotFound`, and a server that cannot be
reached, times out or is not ready :class:`~streamlearn.errors.ServiceError`
with ``retriable`` set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from streamlearn.arrow_ipc import ipc_stream_bytes
from streamlearn.errors import ConfigError, ServiceError, ValidationError, VersionNotFound

__all__ = ["Client", "Prediction", "BatchPrediction"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True)
class Prediction:
    """The prediction for one event, and the version that made it.

    ``value`` is a number (regressor) or a class label (classifier, then
    ``probabilities[i]`` is the probability of ``classes[i]``).
    """

    value: Any
    version: int
    age_s: float
    classes: list[Any] | None = None
    probabilities: list[float] | None = None


@dataclass(frozen=True)
class BatchPrediction:
    """Predictions for a batch of events, in order, all from ``version``."""

    values: list[Any]
    version: int
    age_s: float
    classes: list[Any] | None = None
    probabilities: list[list[float]] | None = None

    def __len__(self) -> int:
        return len(self.values)


class Client:
    """Talk to a running ``streamlearn serve``.

    Parameters
    ----------
    url
        Base URL of the service, e.g. ``"http://127.0.0.1:8000"``.
    token
        Bearer token, if the server requires one.
    timeout
        Seconds to wait for a connection and for each answer.
    transport
        An httpx transport to use instead of the network (tests).

    Examples
    --------
    >>> client = Client("http://127.0.0.1:8000", timeout=2.0)
    >>> client.url
    'http://127.0.0.1:8000'
    >>> client.close()
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError("url", "an http:// or https:// URL", repr(url))
        if not timeout > 0:
            raise ConfigError("timeout", "a positive number of seconds", repr(timeout))
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers=headers, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def predict(self, features: Mapping[str, Any], *, version: int | None = None) -> Prediction:
        """Predict for one event given by its ``features``; from ``version`` if given."""
        body = orjson.dumps({"features": features})
        doc = self._request("POST", "/v1/predict", body, "application/json", version)
        return Prediction(
            value=doc["prediction"],
            version=doc["version"],
            age_s=doc["age_s"],
            classes=doc.get("classes"),
            probabilities=doc.get("probabilities"),
        )

    def predict_raw(self, body: bytes, *, version: int | None = None) -> bytes:
        """POST a JSON ``body`` (one event or an envelope) as it is and return
        the service's answer as it is: the JSON bytes of ``/v1/predict``.
        Refusals raise as for :meth:`predict`."""
        response = self._send("POST", "/v1/predict", body, "application/json", version)
        self._raise_for(response, version)
        return response.content

    def predict_many(
        self, events: Sequence[Mapping[str, Any]], *, version: int | None = None
    ) -> BatchPrediction:
        """Predict for many events (each a ``features`` mapping) in one request."""
        body = orjson.dumps({"events": [{"features": features} for features in events]})
        return self._batch(self._request("POST", "/v1/predict", body, "application/json", version))

    def predict_table(self, table: Any, *, version: int | None = None) -> BatchPrediction:
        """Predict for a ``pyarrow.Table`` whose columns are features, sent as Arrow IPC.

        The fast path for big batches: nulls mean a feature is absent.
        """
        body = ipc_stream_bytes(table)
        return self._batch(self._request("POST", "/v1/predict", body, ARROW_STREAM, version))

    def models(self) -> dict[str, Any]:
        """Every version with its lineage, and the one serving now."""
        return self._request("GET", "/v1/models")

    def current(self) -> dict[str, Any]:
        """The version serving now, its age and lineage."""
        return self._request("GET", "/v1/models/current")

    def ready(self) -> bool:
        """Whether the server answers and has a model loaded."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        """The server's Prometheus metrics text."""
        response = self._send("GET", "/metrics", None, None, None)
        self._raise_for(response, None)
        return response.text

    def _batch(self, doc: dict[str, Any]) -> BatchPrediction:
        return BatchPrediction(
            values=doc["predictions"],
            version=doc["version"],
            age_s=doc["age_s"],
            classes=doc.get("classes"),
            probabilities=doc.get("probabilities"),
        )

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        response = self._send(method, path, body, content_type, version)
        self._raise_for(response, version)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ServiceError(
                f"{self.url}{path} answered with something that is not JSON"
            ) from None

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        content_type: str | None,
        version: int | None,
    ) -> httpx.Response:
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise ValidationError("version", "a version number (integer >= 0)", repr(version))
        params = {"version": str(version)} if version is not None else None
        headers = {"content-type": content_type} if content_type else None
        try:
            return self._http.request(method, path, content=body, params=params, headers=headers)
        except httpx.TimeoutException:
            error = ServiceError(
                f"{self.url}{path} did not answer within {self.timeout}s; "
                "retry, or raise the client's timeout"
            )
        except httpx.TransportError as exc:
            error = ServiceError(
                f"cannot reach the prediction service at {self.url} ({exc}); "
                "is `streamlearn serve` running there?"
            )
        error.retriable = True
        raise error

    def _raise_for(self, response: httpx.Response, version: int | None) -> None:
        status = response.status_code
        if status < 400:
            return
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            doc = {}
        message = doc.get("error", response.reason_phrase) if isinstance(doc, dict) else ""
        fields = doc.get("fields") if isinstance(doc, dict) else None
        if fields and status in (400, 413, 415, 422):
            first = fields[0]
            refused = ValidationError(first["field"], first["expected"], first["got"], "request")
            refused.problems = fields
            raise refused
        if status == 404 and version is not None:
            raise VersionNotFound(f"{message}; GET /v1/models lists the versions")
        if status == 401:
            raise ServiceError(f"{self.url} refused the request: {message}; pass token=")
        error = ServiceError(f"{self.url} answered {status}: {message}")
        error.retriable = status in (502, 503, 504)
        raise error
