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


def _tensor(with_data: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": {"type": "object"},
    }
    required = ["name", "datatype", "shape"]
    if with_data:
        properties["data"] = {"type": "array"}
        required.append("data")
    return {"type": "object", "required": required, "properties": properties}


def _protocol_paths(model: str, json_body: Any, ok: Any) -> dict[str, Any]:
    """The KServe Open Inference Protocol v2 and TF Serving routes."""
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "description": "a version of the model",
    }
    infer = {
        "summary": "Open Inference Protocol v2: one tensor per feature, shape [n]",
        "requestBody": json_body("#/components/schemas/InferenceRequest"),
        "responses": {
            "200": ok("prediction, probabilities, known_features", "InferenceResponse"),
            "400": _error("invalid request, the field named"),
            "401": _error("missing or wrong bearer token"),
            "404": _error("no such version"),
            "413": _error("too many events"),
            "415": _error("unsupported content type"),
            "503": _error("no model loaded yet"),
        },
    }
    metadata = {
        "summary": "Open Inference Protocol v2: model metadata",
        "responses": {
            "200": ok("name, versions, platform, inputs, outputs", "ModelMetadata"),
            "404": _error("no such version"),
            "503": _error("no model loaded yet"),
        },
    }
    ready = {
        "summary": "Open Inference Protocol v2: model readiness (4xx: not ready)",
        "responses": {"200": {"description": "ready"}, "400": _error("not ready")},
    }
    return {
        "/v2": {
            "get": {
                "summary": "Open Inference Protocol v2: server metadata",
                "responses": {"200": {"description": "name, version, extensions"}},
            }
        },
        "/v2/health/live": {
            "get": {
                "summary": "Open Inference Protocol v2: liveness",
                "responses": {"200": {"description": "live"}},
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Open Inference Protocol v2: readiness (4xx: not ready)",
                "responses": {"200": {"description": "ready"}, "400": _error("not ready")},
            }
        },
        f"/v2/models/{model}": {"get": metadata},
        f"/v2/models/{model}/ready": {"get": ready},
        f"/v2/models/{model}/infer": {"post": infer},
        f"/v2/models/{model}/versions/{{version}}": {"get": metadata, "parameters": [version]},
        f"/v2/models/{model}/versions/{{version}}/ready": {
            "get": ready,
            "parameters": [version],
        },
        f"/v2/models/{model}/versions/{{version}}/infer": {
            "post": infer,
            "parameters": [version],
        },
        f"/v1/models/{model}:predict": {
            "post": {
                "summary": "TF Serving REST predict: each instance the features of one event",
                "requestBody": json_body("#/components/schemas/TFRequest"),
                "responses": {
                    "200": ok("predictions", "TFResponse"),
                    "400": _error("invalid request, the field named"),
                    "401": _error("missing or wrong bearer token"),
                    "413": _error("too many events"),
                    "503": _error("no model loaded yet"),
                },
            }
        },
    }


def openapi_document(model: str, auth: bool = False) -> dict[str, Any]:
    """The OpenAPI document describing the service that serves ``model``.

    Examples
    --------
    >>> doc = openapi_document("ctr")
    >>> sorted(doc["paths"])  # doctest: +NORMALIZE_WHITESPACE
    ['/healthz', '/metrics', '/openapi.json', '/readyz', '/v1/models', '/v1/models/ctr:predict',
     '/v1/models/current', '/v1/predict', '/v2', '/v2/health/live', '/v2/health/ready',
     '/v2/models/ctr', '/v2/models/ctr/infer', '/v2/models/ctr/ready',
     '/v2/models/ctr/versions/{version}', '/v2/models/ctr/versions/{version}/infer',
     '/v2/models/ctr/versions/{version}/ready']
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
                # a media type object has no `description`: it goes in the schema
                "schema": {
                    "type": "string",
                    "contentMediaType": "application/vnd.apache.arrow.stream",
                    "description": "one column per feature, one row per event; null = absent",
                },
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
                "InferenceRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _tensor(True), "minItems": 1},
                        "outputs": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                        },
                    },
                },
                "InferenceResponse": {
                    "type": "object",
                    "required": ["model_name", "outputs"],
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "outputs": {"type": "array", "items": _tensor(True)},
                    },
                },
                "ModelMetadata": {
                    "type": "object",
                    "required": ["name", "platform", "inputs", "outputs"],
                    "properties": {
                        "name": {"type": "string"},
                        "versions": {"type": "array", "items": {"type": "string"}},
                        "platform": {"type": "string"},
                        "inputs": {"type": "array", "items": _tensor(False)},
                        "outputs": {"type": "array", "items": _tensor(False)},
                    },
                },
                "TFRequest": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Features"},
                        },
                        "signature_name": {"type": "string"},
                    },
                },
                "TFResponse": {
                    "type": "object",
                    "required": ["predictions"],
                    "properties": {
                        "predictions": {"type": "array"},
                        "model_version": {"type": "string"},
                        "classes": {"type": "array"},
                        "probabilities": {"type": "array"},
                        "known_features": {"type": "array", "items": {"type": "integer"}},
                    },
                },
                "Features": _EVENT["properties"]["features"],
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
                        "known_features": {
                            "description": "how many of each event's features the model"
                            " knows (a non-zero weight): an integer for one event, a list"
                            " for an envelope or Arrow body; absent for learners that"
                            " cannot tell",
                        },
                        "id": {"description": "the event's id, echoed"},
                        "key": {"description": "the event's key, echoed"},
                        "ids": {"type": "array", "description": "the events' ids, echoed"},
                        "keys": {"type": "array", "description": "the events' keys, echoed"},
                    },
                },
                "Error": _ERROR,
            }
        },
    }
    def json_body(ref: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}

    def ok(description: str, schema: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}
            },
        }

    doc["paths"].update(_protocol_paths(model, json_body, ok))
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        open_paths = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
        for path, item in doc["paths"].items():
            if path in open_paths or path.endswith("/ready"):
                continue
            for method, operation in item.items():
                if method != "parameters":
                    operation["security"] = [{"bearer": []}]
    return doc
