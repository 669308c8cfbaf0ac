"""The OpenAPI 3.1 document of the prediction service (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_FEATURE_VALUE: dict[str, Any] = {
    "oneOf": [
        {"type": "number"},
        {"type": "string"},
        {"type": "boolean"},
        {"type": "array", "items": {"type": "string"}},
    ]
}

_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["features"],
    "additionalProperties": False,
    "properties": {
        "features": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": _FEATURE_VALUE,
        },
        "key": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "ts": {"type": "integer", "minimum": 0, "description": "event time, ms since the epoch"},
        "label": {"description": "accepted and ignored"},
    },
}

_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "expected": {"type": "string"},
                    "got": {"type": "string"},
                },
            },
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(model: str, auth: bool = False) -> dict[str, Any]:
    """The OpenAPI document describing the service that serves ``model``.

    Examples
    --------
    >>> doc = openapi_document("ctr")
    >>> sorted(doc["paths"])  # doctest: +NORMALIZE_WHITESPACE
    ['/healthz', '/metrics', '/openapi.json', '/readyz', '/v1/models', '/v1/models/current',
     '/v1/predict']
    """
    version_param = {
        "name": "version",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0},
        "description": "answer with this version instead of the one serving now",
    }
    predict_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {"$ref": "#/components/schemas/Envelope"},
                    ]
                }
            },
            "application/vnd.apache.arrow.stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "one column per feature, one row per event; null = absent",
            },
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"streamlearn prediction service ({model})",
            "version": "1",
            "description": "Predictions from the newest version of a streamlearn model.",
        },
        "paths": {
            "/v1/predict": {
                "post": {
                    "summary": "Predict for one event or an envelope of events",
                    "parameters": [version_param],
                    "requestBody": predict_body,
                    "responses": {
                        "200": {
                            "description": "predictions and the version that made them",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Predictions"}
                                }
                            },
                        },
                        "400": _error("unreadable body"),
                        "401": _error("missing or wrong bearer token"),
                        "404": _error("no such version"),
                        "408": _error("headers or body not received in time"),
                        "413": _error(
                            "body or batch too large, or an Arrow body that would"
                            " decompress past the limits"
                        ),
                        "415": _error("unsupported content type"),
                        "422": _error("invalid fields, each named"),
                        "503": _error("no model loaded yet"),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "Every version with its lineage",
                    "responses": {"200": {"description": "versions"}},
                }
            },
            "/v1/models/current": {
                "get": {
                    "summary": "The version serving now",
                    "responses": {"200": {"description": "version"}, "503": _error("no model")},
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: a model is loaded",
                    "responses": {"200": {"description": "ready"}, "503": _error("not ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "ok"}}}
            },
        },
        "components": {
            "schemas": {
                "Event": _EVENT,
                "Envelope": {
                    "type": "object",
                    "required": ["events"],
                    "additionalProperties": False,
                    "properties": {
                        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
                    },
                },
                "Predictions": {
                    "type": "object",
                    "required": ["model", "version", "age_s"],
                    "properties": {
                        "model": {"type": "string"},
                        "version": {"type": "integer"},
                        "age_s": {"type": "number", "description": "age of that version"},
                        "prediction": {"description": "one event: a value or a class"},
                        "predictions": {"type": "array", "description": "an envelope"},
                        "classes": {"type": "array"},
                        "probabilities": {"type": "array"},
                    },
                },
                "Error": _ERROR,
            }
        },
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path in ("/v1/predict", "/v1/models", "/v1/models/current", "/metrics"):
            for operation in doc["paths"][path].values():
                operation["security"] = [{"bearer": []}]
    return doc
