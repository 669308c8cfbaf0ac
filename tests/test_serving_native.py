"""The native one-event path gives exactly what the Python path gives, and
steps aside for everything else.

``streamlearn.serving._native`` (optional, compiled at install) scores the raw
body ``{"features": {...}}`` from the shares the Python path has worked out.
These tests hold it to the Python path bit for bit (numbers parsed as orjson
parses them, sums in the same order), to the learner to 1e-12, and check that
unusual JSON (escapes, nesting, duplicate names, odd spacing, huge numbers,
non-JSON tokens, unicode, bad bytes) falls back to today's path and gets the
same answer; also that the app runs, and answers alike, without the extension.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import streamlearn.serving.linear_scorer as linear_scorer
from streamlearn.learners import LinearRegression, LogisticRegression
from streamlearn.optim import SGD
from streamlearn.serving import ModelWatcher, PredictionApp
from streamlearn.serving.learner_predictor import LearnerPredictor
from streamlearn.serving.request_body import _meta_ok
from tests.test_serving_fast import (
    OneVersion,
    expected,
    make_events,
    native_answer,
    post,
    predictor,
)

if shutil.which("cc") or shutil.which("gcc"):
    # a machine with a compiler builds the extension at install: its absence is a failure
    from streamlearn.serving import _native as native
else:
    native = pytest.importorskip(
        "streamlearn.serving._native", reason="no C compiler here, so the extension is not built"
    )

POW5_HEADER = Path(linear_scorer.__file__).with_name("_native_pow5.h")
NAMES = ["age", "city", "tags", "vip", "n0", "n1", "é", "名前", 'q"uote', "back\\sl", "new\nl"]
WORDS = ["Lyon", "Oslo", "", "ü", "a b", 'x"y', "tab\t", "🙂"]


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def pow5_table() -> list[int]:
    """The 128-bit powers of five of the native number reader, recomputed."""
    out = []
    for q in range(-342, 0):
        p5 = 5**-q
        z = p5.bit_length()
        if q >= -27:
            c = 2 ** (z + 127) // p5 + 1
        else:
            c = 2 ** (2 * z + 128) // p5 + 1
            while c >= 1 << 128:
                c //= 2
        out.append(c)
    for q in range(0, 309):
        p5 = 5**q
        while p5 < 1 << 127:
            p5 *= 2
        while p5 >= 1 << 128:
            p5 //= 2
        out.append(p5)
    return out


def test_the_powers_of_five_in_the_header_are_the_exact_ones() -> None:
    words = [int(h, 16) for h in re.findall(r"0x([0-9a-f]{16})", POW5_HEADER.read_text())]
    assert len(words) == 2 * 651
    got = [(words[i] << 64) | words[i + 1] for i in range(0, len(words), 2)]
    assert got == pow5_table()


# -- numbers -------------------------------------------------------------------------

json_numbers = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z", fullmatch=True
)


@settings(max_examples=3000, deadline=None)
@given(
    text=json_numbers
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.integers().map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.25e}")
)
@example(text="2.2250738585072011e-308")  # the largest subnormal, rounded up
@example(text="4.9406564584124654e-324")
@example(text="2.4703282292062327e-324")  # half the smallest subnormal: rounds to zero
@example(text="1.7976931348623158e308")  # rounds to the largest finite double
@example(text="9007199254740993")  # halfway between two doubles: to even
@example(text="18446744073709551616")  # past 64 bits: orjson's float
@example(text="-0")
@example(text="1e-400")
@example(text="0." + "0" * 999999 + "1e1000000")  # an exponent of 7 digits offset by the fraction
@example(text="-0." + "0" * 1000000 + "25e+1000000")
def test_numbers_are_read_as_orjson_reads_them(text: str) -> None:
    try:
        ref = float(orjson.loads(text))
    except orjson.JSONDecodeError:  # 1e400 and the like: refused by orjson, infinite here
        got = native.Shares.parse_number(text.encode())
        assert got is None or math.isinf(got)
        return
    got = native.Shares.parse_number(text.encode())
    assert got is not None
    assert bits(got) == bits(ref) or (ref == 0.0 and got == 0.0 and text.lstrip("-") == text)


@pytest.mark.parametrize(
    "text", ["", "-", "01", "1.", ".5", "+1", "1e", "1e+", "NaN", "0x10", "1 "]
)
def test_what_is_no_json_number_is_not_read(text: str) -> None:
    assert native.Shares.parse_number(text.encode()) is None


# -- one event: native body against the Python path ----------------------------------


def trained_model(kind: str) -> Any:
    cls = LinearRegression if kind == "regression" else LogisticRegression
    model = cls(optimizer=SGD(0.05), bits=8)
    events = make_events(200, seed=1)
    events += [{n: 1.0 for n in NAMES}, {n: w for n, w in zip(NAMES, WORDS * 2, strict=False)}]
    events += [{"tags": WORDS}, {"city": WORDS[1:4]}]
    ys = expected_labels(events, kind)
    for start in range(0, len(events), 40):
        model.learn_many(events[start : start + 40], ys[start : start + 40])
    return model


def expected_labels(events: list[dict[str, Any]], kind: str) -> list[Any]:
    if kind == "regression":
        return [float(len(str(e))) / 50.0 for e in events]
    return [len(str(e)) % 2 == 0 for e in events]


MODELS = {kind: trained_model(kind) for kind in ("regression", "binary")}

values = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e6, max_value=1e6)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.booleans()
    | st.sampled_from(WORDS)
    | st.lists(st.sampled_from(WORDS), max_size=4)
    | st.text(max_size=6)
)
odd_values = st.none() | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2) | st.lists(
    st.integers(), min_size=1, max_size=2
)
names = st.sampled_from(NAMES) | st.text(max_size=6)
feature_maps = st.dictionaries(names, values, max_size=8) | st.dictionaries(
    names, values | odd_values, max_size=5
)
dumpers = st.sampled_from(
    [
        lambda d: json.dumps(d).encode(),
        lambda d: json.dumps(d, separators=(",", ":")).encode(),
        lambda d: json.dumps(d, indent=2).encode(),
        lambda d: json.dumps(d, ensure_ascii=False).encode(),
        lambda d: compact(d),
        lambda d: b" \r\n\t" + compact(d) + b"\n ",
    ]
)


def compact(doc: Any) -> bytes:
    """orjson's text, or the json module's for integers past 64 bits."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


#: the fields of an event the native path reads besides ``features``
META = ("id", "key", "ts")


def python_event(body: bytes) -> dict[str, Any] | None:
    """``body`` decoded when it is one event of ``features`` and valid ``id``, ``key``,
    ``ts`` and ``weight``, and any ``label`` (ignored) (the contract's rules, as the
    Python path checks them), else None."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or type(doc.get("features")) is not dict:
        return None
    if not {"features", *META, "label", "weight"}.issuperset(doc) or (
            len(doc) > 1 and not _meta_ok(doc)):
        return None
    return doc


def python_answer(served: LearnerPredictor, body: bytes) -> Any:
    """What the Python path answers for ``body`` (None: it is not a plain event)."""
    doc = python_event(body)
    if doc is None or len(doc) != 1:
        return None
    served.predict_one(doc["features"])  # learns the shares, if need be
    return served.predict_one(doc["features"])  # from the shares learned


def assert_same(got: Any, want: Any) -> None:
    assert want is not None
    value, proba, known = got
    want_value, want_proba, want_known = want
    assert known == want_known  # the features the model knows, counted alike
    if proba is None:
        assert bits(value) == bits(want_value)
    else:
        assert value == want_value
        assert [bits(p) for p in proba] == [bits(p) for p in want_proba]


def check_body(served: LearnerPredictor, body: bytes) -> None:
    """The native answer for ``body`` is the Python one, or it steps aside; with the
    event's ``id``, ``key`` and ``ts`` read as the Python path reads them."""
    doc = python_event(body)
    got = served.predict_event(body)
    if got is False:  # something not remembered yet: the app answers in Python, then teaches
        if doc is None:
            return
        served.predict_one(doc["features"])
        served.remember(doc["features"])
        got = served.predict_event(body)
    if got is None or got is False:
        return
    assert doc is not None, body  # never an answer to a body the Python path refuses
    served.predict_one(doc["features"])  # learns the shares, if need be
    assert_same(got[0], served.predict_one(doc["features"]))
    fields = tuple(doc.get(name) for name in META)
    assert got[1:] == fields and [type(v) for v in got[1:]] == [type(v) for v in fields]


@pytest.fixture(params=["regression", "binary"])
def served(request: pytest.FixtureRequest) -> LearnerPredictor:
    return predictor(MODELS[request.param])


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(features=feature_maps, dump=dumpers)
def test_a_body_scored_natively_gets_the_python_answer(
    served: LearnerPredictor, features: dict[str, Any], dump: Any
) -> None:
    check_body(served, dump({"features": features}))


meta_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.integers(min_value=-3, max_value=3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["e-1", "", "é", "a\nb", "\x7f"])
    | st.lists(st.integers(), max_size=1)
)
other_fields = st.sampled_from(["id", "key", "ts", "label", "weight", "ID", "features "])


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    features=feature_maps,
    before=st.dictionaries(other_fields, meta_values, max_size=3),
    after=st.dictionaries(other_fields, meta_values, max_size=3),
    dump=dumpers,
)
def test_an_event_with_its_id_key_and_ts_is_scored_natively_as_in_python(
    served: LearnerPredictor, features: dict[str, Any], before: dict[str, Any],
    after: dict[str, Any], dump: Any,
) -> None:
    doc = {**before, "features": features}
    doc.update({k: v for k, v in after.items() if k not in doc})
    check_body(served, dump(doc))


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "e-1", "features": {"age": 1}, "key": 7, "ts": 1700000000123}',
        b' { "key" : "u1" , "features" : { "age" : 2 } , "id" : -0 } ',
        b'{"features": {"age": 1}, "id": 123456789012345678}',  # 18 digits
        b'{"features": {"age": 1}, "id": "\xc3\xa9"}',
        # a training event sent as it is: its label ignored, its weight checked
        b'{"features": {"age": 1}, "label": 1}',
        b'{"label": true, "weight": 0.25, "features": {"age": 1}, "id": 4}',
        b'{"features": {"age": 1}, "label": "click", "weight": 3}',
        b'{"features": {"age": 1}, "label": -2.5, "weight": 0}',
        b'{"features": {"age": 1}, "label": null, "weight": 123456789.123456789}',
        b'{"features": {"age": 1}, "label": false}',
    ],
)
def test_these_events_with_fields_are_scored_natively(
    served: LearnerPredictor, body: bytes
) -> None:
    doc = orjson.loads(body)
    served.predict_one(doc["features"])
    served.remember(doc["features"])
    hits = served.native_hits
    check_body(served, body)
    assert served.native_hits == hits + 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"features": {"age": 1}, "id": 1234567890123456789}',  # 19 digits: Python reads it
        b'{"features": {"age": 1}, "id": 1.5}',  # refused by the contract: Python says why
        b'{"features": {"age": 1}, "id": 1e3}',
        b'{"features": {"age": 1}, "id": 01}',  # not JSON
        b'{"features": {"age": 1}, "id": null}',
        b'{"features": {"age": 1}, "id": true}',
        b'{"features": {"age": 1}, "ts": -1}',
        b'{"features": {"age": 1}, "ts": "2026-12-06"}',
        b'{"features": {"age": 1}, "id": "a", "id": "b"}',  # twice: orjson keeps the last
        b'{"features": {"age": 1}, "id": "\xff"}',  # not UTF-8
        b'{"features": {"age": 1}, "id": "a\\"}',  # an escape
        b'{"features": {"age": 1}, "label": [1]}',  # not a scalar: Python reads it
        b'{"features": {"age": 1}, "label": {"y": 1}}',
        b'{"features": {"age": 1}, "label": 1e3}',
        b'{"features": {"age": 1}, "label": 1234567890123456789}',
        b'{"features": {"age": 1}, "label": "\xff"}',  # not UTF-8: refused
        b'{"features": {"age": 1}, "label": 1, "label": 0}',
        b'{"features": {"age": 1}, "label": truth}',
        b'{"features": {"age": 1}, "label": 1.}',
        b'{"features": {"age": 1}, "weight": -1}',  # refused by the contract
        b'{"features": {"age": 1}, "weight": -0}',
        b'{"features": {"age": 1}, "weight": null}',
        b'{"features": {"age": 1}, "weight": true}',
        b'{"features": {"age": 1}, "weight": "1"}',
        b'{"features": {"age": 1}, "weight": 1e400}',
        b'{"features": {"age": 1}, "weight": 1234567890.123456789}',  # 19 digits
        b'{"features": {"age": 1}, "id": 1,}',
        b'{"features": {"age": 1}, "id": 1',
        b'{"id": 1, "features": {"age": 1}, "features": {"age": 2}}',
        b'{"id": 1}',
        b'{"id": 1 "features": {"age": 1}}',
    ],
)
def test_other_fields_and_values_step_aside(served: LearnerPredictor, body: bytes) -> None:
    x = {"age": 1.0}
    served.predict_one(x)
    served.remember(x)
    assert served.predict_event(body) is None
    check_body(served, body)


PLAIN_WORDS = ["Lyon", "Oslo", "", "a b"]
plain_names = st.sampled_from(NAMES[:6]) | st.text("abcxyz_0123", min_size=1, max_size=5)
plain_values = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.booleans()
    | st.sampled_from(PLAIN_WORDS)
    | st.lists(st.sampled_from(PLAIN_WORDS), max_size=4)
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(features=st.dictionaries(plain_names, plain_values, min_size=1, max_size=12), dump=dumpers)
def test_a_plain_body_is_scored_natively_once_remembered(
    served: LearnerPredictor, features: dict[str, Any], dump: Any
) -> None:
    body = dump({"features": features})
    want = python_answer(served, body)
    served.remember(features)
    if want is None:  # huge numbers: no finite score on either path
        assert native_answer(served, body) is None
        return
    hits = served.native_hits
    got = native_answer(served, body)
    assert served.native_hits == hits + 1
    assert_same(got, want)


def test_plain_bodies_are_really_scored_natively_and_as_the_learner_would(
    served: LearnerPredictor,
) -> None:
    model = served.learner
    events = make_events(50, seed=7) + [{n: 2.0 for n in NAMES[:6]}, {"tags": WORDS[:3]}]
    values, proba = expected(model, events)
    for _round in range(2):
        for i, x in enumerate(events):
            body = json.dumps({"features": x}).encode()
            got = native_answer(served, body)
            if got is False:
                assert _round == 0  # each event is remembered after its first answer
                served.predict_one(x)
                served.remember(x)
                got = native_answer(served, body)
            assert got not in (None, False), body
            value, p, _known = got
            if proba is None:
                assert value == pytest.approx(values[i], rel=1e-12, abs=1e-12)
            else:
                assert value == values[i]
                np.testing.assert_allclose(p, proba[i], rtol=1e-12, atol=1e-15)
    assert served.native_hits == 2 * len(events)


@pytest.mark.parametrize(
    "body",
    [
        b'{"features": {"age": 1.0, "age": 2.0}}',  # a name twice: orjson keeps the last value
        b'{"features": {"city": "Lyon", "vip": true, "city": "Oslo"}}',
        b'{"features": {"ci\\u0074y": "Lyon"}}',  # escapes
        b'{"features": {"city": "Ly\\u006fn"}}',
        b'{"features": {"tags": ["a", "\\n"]}}',
        b'{"features": {"age": {"x": 1}}}',  # nested
        b'{"features": {"tags": ["a", 1]}}',
        b'{"features": {"age": null}}',
        b'{"features": {"age": NaN}}',  # not JSON
        b'{"features": {"age": Infinity}}',
        b'{"features": {"age": -Infinity}}',
        b'{"features": {"age": 1e400}}',  # infinite
        b'{"features": {"age": 1' + b"0" * 400 + b"}}",
        b'{"features": {"age": 01}}',
        b'{"features": {"age": 1.}}',
        b'{"features": {"age": .5}}',
        b'{"features": {"age": +1}}',
        b'{"features": {"age": 1,}}',
        b'{"features": {"age": 1}, }',
        b'{"features": {"age": 1}}}',
        b'{"features": {"age": 1}} x',
        b'{"features": {"age": tru}}',
        b'{"features": {"age": 1}, "id": "e-1"}',
        b'{"id": "e-1", "features": {"age": 1}}',
        b'{"features": {}}',
        b'{"features": []}',
        b'{"feature": {"age": 1}}',
        b'{"features": {"age": 1}',
        b'\xef\xbb\xbf{"features": {"age": 1}}',  # a byte order mark
        b'{"features": {"city": "\xff\xfe"}}',  # not UTF-8
        b'{"features": {"\xc3": 1}}',
        b'{"features": {"city": "L\x01"}}',  # a raw control character
        b"",
        b"null",
    ],
)
def test_unusual_bodies_step_aside_or_agree(served: LearnerPredictor, body: bytes) -> None:
    for x in ({"age": 1.0, "city": "Lyon", "vip": True, "tags": ["a", "\n"]}, {"city": "Oslo"}):
        served.predict_one(x)
        served.remember(x)
    check_body(served, body)
    got = native_answer(served, body)
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        assert got is None or got is False  # never a score for a body orjson refuses


def test_odd_spacing_and_unicode_are_scored_natively(served: LearnerPredictor) -> None:
    x = {"é": 1.5, "名前": "🙂", "city": ["ü", "Lyon"], "vip": False, "n0": -0, "n1": 10**25}
    served.predict_one(x)
    served.remember(x)
    spaced = b' \n{ "features"\t:\r\n{ ' + json.dumps(x, ensure_ascii=False, indent=3)[1:].encode()
    spaced = spaced[:-1] + b"\n}\n}\n\t"
    for body in (json.dumps({"features": x}, ensure_ascii=False).encode(), spaced):
        hits = served.native_hits
        got = native_answer(served, body)
        assert served.native_hits == hits + 1
        assert_same(got, python_answer(served, body))
    escaped = json.dumps({"features": x}).encode()  # \u escapes: the Python path
    assert native_answer(served, escaped) is None


def test_scaled_and_several_output_models_keep_the_python_path() -> None:
    scaled = LogisticRegression(bits=6, scale=True)
    scaled.learn_many(make_events(50), [True, False] * 25)
    served = predictor(scaled)
    body = json.dumps({"features": make_events(1)[0]}).encode()
    assert native_answer(served, body) is None
    assert served.predict_one(make_events(1)[0]) is not None


def test_the_native_table_starts_afresh_past_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear_scorer, "_CACHE_LIMIT", 20)
    served = predictor(MODELS["binary"])
    events = [{"age": float(i), "city": f"c{i}", f"n{i % 30}": 1.0} for i in range(100)]
    for _ in range(2):
        for x in events:
            body = json.dumps({"features": x}).encode()
            if native_answer(served, body) is False:
                served.predict_one(x)
                served.remember(x)
            assert len(served._native) <= 20
            check_body(served, body)


def test_the_native_table_grows_and_keeps_every_share() -> None:
    served = predictor(MODELS["regression"])
    events = [{f"f{i}": float(i), "city": f"c{i}", "tags": [f"t{i}"]} for i in range(3000)]
    for x in events:
        served.predict_one(x)
        served.remember(x)
    assert len(served._native) == 3000 * 3 + 2  # a name and two strings each; "city", "tags"
    for x in events[::7]:
        body = json.dumps({"features": x}).encode()
        assert_same(native_answer(served, body), served.predict_one(x))


# -- the app ---------------------------------------------------------------------------


def app_for(served: LearnerPredictor) -> PredictionApp:
    watcher = ModelWatcher(OneVersion(served))
    watcher.poll_once()
    return PredictionApp(watcher)


def post_raw(app: PredictionApp, body: bytes) -> tuple[int, dict[str, Any]]:
    import asyncio

    import httpx

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {"content-type": "application/json"}
            return await client.post("/v1/predict", content=body, headers=headers)

    response = asyncio.run(go())
    doc = response.json()
    doc.pop("age_s", None)
    return response.status_code, doc


BODIES = [
    b'{"features": {"age": 31, "city": "Lyon", "vip": true, "tags": ["a", "b"]}}',
    b'{"features": {"age": 31, "city": "Lyon", "vip": true, "tags": ["a", "b"]}}',  # remembered
    b'{"features": {"age": 31, "age": "x"}}',
    b'{"features": {"age": NaN}}',
    b'{"features": {"age": 1e400}}',
    b'{"features": {"age": [1]}}',
    '{"features": {"city": "Ly\\u006fn", "é": 2}}'.encode(),
    '{"features": {"é": 2, "名前": "🙂"}}'.encode(),
    b'{"features": {"age": 2}, "id": 3}',
    b'{"key": "u-1", "features": {"age": 2}, "id": "e-4", "ts": 1700000000000}',
    b'{"features": {"age": 2}, "id": 1.5}',
    b'{"features": {"age": 2}, "id": null, "key": true}',
    b'{"features": {"age": 2}, "ts": -1}',
    b'{"features": {}}',
    b'{"features": {"age": 2}',
    b'{"features": {"city": "\xff"}}',
]


def test_the_app_answers_alike_with_and_without_the_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = MODELS["binary"]
    with_native = predictor(model)
    monkeypatch.setattr(linear_scorer, "_NativeShares", None)  # as if it were not built
    without = predictor(model)
    assert native_answer(with_native, BODIES[0]) is False
    assert native_answer(without, BODIES[0]) is None
    assert without._one.native is None and without.native_hits == 0
    apps = app_for(with_native), app_for(without)
    for body in BODIES:
        assert post_raw(apps[0], body) == post_raw(apps[1], body), body
    # the second body, remembered after the first, and the two events with an id
    assert with_native.native_hits == 3
    assert without.native_hits == 0
    fields = post_raw(apps[0], b'{"features": {"age": [1], "vip": null}}')[1]["fields"]
    assert [f["field"] for f in fields] == ["event.features.age", "event.features.vip"]


def test_the_app_takes_the_native_path_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    served = predictor(MODELS["regression"])
    app = app_for(served)
    x = make_events(1, seed=3)[0]
    first = post(app, {"features": x}).json()  # learns the shares
    calls = []
    monkeypatch.setattr(served, "predict_one", lambda *a: calls.append(a))
    again = post(app, {"features": x}).json()
    assert calls == [] and served.native_hits == 1
    assert again["prediction"] == first["prediction"]
    asked = post(app, {"features": x, "id": 1, "key": "u-1"})  # from its bytes too
    assert asked.status_code == 200 and served.native_hits == 2 and calls == []
    assert (asked.json()["id"], asked.json()["key"]) == (1, "u-1")
    labelled = post(app, {"features": x, "label": 1.0, "weight": 2})  # a training event
    assert labelled.status_code == 200 and served.native_hits == 3 and calls == []
    assert labelled.json()["prediction"] == first["prediction"]
    refused = post(app, {"features": x, "weight": -1})  # the Python path says why
    assert refused.status_code == 422 and refused.json()["fields"][0]["code"] == "weight.invalid"
    nested = post(app, {"features": x, "label": [1]})  # another value: the Python path
    assert nested.status_code == 200 and served.native_hits == 3 and calls


def test_an_exponent_offset_by_the_fraction_is_read_exactly() -> None:
    """``0.<999,999 zeros>1e1000000`` is 1.0 (a 1 MB body, under the size limit):
    answered the second time from its bytes, it gets the first answer again."""
    served = predictor(MODELS["regression"])
    app = app_for(served)
    body = b'{"features": {"age": 0.' + b"0" * 999_999 + b'1e1000000, "city": "Lyon"}}'
    first, again = post_raw(app, body), post_raw(app, body)
    assert served.native_hits == 1
    assert again == first
    assert first == post_raw(app, b'{"features": {"age": 1.0, "city": "Lyon"}}')


def test_a_body_that_is_not_bytes_takes_the_python_path() -> None:
    served = predictor(MODELS["binary"])
    body = b'{"features": {"age": 31}}'
    served.remember(orjson.loads(body)["features"])
    assert native_answer(served, body) is not None
    assert native_answer(served, bytearray(body)) is None
    assert native_answer(served, memoryview(body)) is None


def test_the_operator_can_switch_the_native_path_off() -> None:
    import subprocess
    import sys

    code = (
        "from streamlearn.serving.linear_scorer import native_available; "
        "print(native_available())"
    )
    root = Path(__file__).resolve().parent.parent
    for setting, shown in (("0", "False"), ("1", "True")):
        env = {"STREAMLEARN_SERVING_NATIVE": setting, "PATH": ""}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
        )
        assert out.stdout.strip() == shown, out.stderr
