"""Fuzzed requests against the real server process never get a 5xx nor kill it.

Requests are drawn by hypothesis from the shapes the OpenAPI document
describes (events, envelopes, ``?version=``) and from arbitrary JSON, bytes,
paths, methods and content types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlearn.store import Lineage, ModelStore
from tests.test_serving_live import MODEL, ServerProcess, trained_classifier, wait_for


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    store_dir = tmp_path_factory.mktemp("fuzz") / "models"
    ModelStore(str(store_dir), MODEL).publish(trained_classifier().state(), Lineage())
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
def test_fuzzed_raw_requests_never_get_a_5xx(
    live: tuple[ServerProcess, httpx.Client],
    method: str,
    path: str,
    content_type: str,
    body: bytes,
) -> None:
    proc, client = live
    headers = {"content-type": content_type} if content_type else {}
    r = client.request(method, path, content=body, headers=headers)
    assert r.status_code < 500, r.text


def test_server_survived_the_fuzzing(live: tuple[ServerProcess, httpx.Client]) -> None:
    proc, client = live
    assert proc.alive()
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics
