"""The conformance corpus (``streamlearn/contract/corpus``) replayed through every Python
implementation of an event: the training decoder with the feature hasher, serving's
validation, and serving's C fast path. Each asserts the codes, fields and indices of the
rejections and the encoded rows of the valid events; the corpus itself must be what the
reference generates."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from streamlearn.contract import (
    LABEL_CODES,
    MAX_FEATURES,
    RULES,
    Rejection,
    event_weight,
    message,
)
from streamlearn.contract.corpus import (
    C_HEADER,
    CORPUS,
    OBJECTS,
    covered_codes,
    from_tagged,
    generate,
    load,
)
from streamlearn.contract.reference import Settings, slot
from streamlearn.errors import ValidationError
from streamlearn.events import EventDecoder
from streamlearn.features import FeatureHasher, feature_slot
from streamlearn.serving.linear_scorer import native_available
from streamlearn.serving.request_body import BadRequest, Problem, check_json, load_json

CASES = load(CORPUS)
OBJECT_CASES = load(OBJECTS)


def _message(case: dict) -> bytes:
    if case["message_b64"] is not None:
        return base64.b64decode(case["message_b64"])
    return case["message"].encode()


def _rows(batch: Any) -> list[list]:
    return [
        [int(i), float(v), bool(n)]
        for i, v, n in zip(batch.indices, batch.values, batch.numeric, strict=True)
    ]


def _same(got: list[list], want: list[list]) -> bool:
    """Equal rows, values compared bit for bit (-0.0 is not 0.0)."""
    return len(got) == len(want) and all(
        g[0] == w[0] and g[2] == w[2] and np.float64(g[1]).tobytes() == np.float64(w[1]).tobytes()
        for g, w in zip(got, want, strict=True)
    )


def _check_rejections(got: list[dict], case: dict) -> None:
    want = case["rejections"]
    assert [(r["index"], r["field"], r["code"]) for r in got] == [
        (r["index"], r["field"], r["code"]) for r in want
    ], case["case"]
    for g, w in zip(got, want, strict=True):
        if w["code"] != "message.not_json" and g["reason"] is not None:
            # (the detail of message.not_json is the parser's own words)
            assert g["reason"] == w["reason"], case["case"]


def _check_events(got: list[dict], case: dict) -> None:
    want = case["events"]
    assert [e["index"] for e in got] == [e["index"] for e in want], case["case"]
    for g, w in zip(got, want, strict=True):
        assert _same(g["rows"], w["rows"]), (case["case"], g["rows"], w["rows"])
        assert type(g["label"]) is type(w["label"]) and g["label"] == w["label"], case["case"]
        if "weight" in g:  # the paths that learn (serving ignores a weight)
            assert _bits(g["weight"]) == _bits(w["weight"]), (case["case"], g["weight"])


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


# -- the corpus itself ------------------------------------------------------------------------


def test_the_checked_in_corpus_is_what_the_reference_generates() -> None:
    for path, data in generate().items():
        assert path.read_bytes() == data, (
            f"{path.name} is stale: run python -m streamlearn.contract.corpus --write"
        )


def test_the_corpus_covers_every_code_and_every_feature_kind() -> None:
    assert covered_codes() == set(RULES)
    names = {case["case"] for case in CASES + OBJECT_CASES}
    for kind in ("integer", "negative-float", "string", "list", "empty-list", "true", "false",
                 "dense", "repeated-name", "integer-names", "escaped-string"):
        assert f"features.kind.{kind}" in names
    assert any(c["message"] and c["message"].startswith('{"events"') and len(c["events"]) > 1
               for c in CASES)  # an envelope of several events
    for labels in ("required", "ignored"):
        assert any(c["settings"]["labels"] == labels for c in CASES)


def test_the_reference_hash_is_the_hashers() -> None:
    for name, value in [("age", None), ("country", "FR"), ("é", "😀"), ("x", "")]:
        assert slot(name, value, 20) == feature_slot(name, value, bits=20)


def test_every_code_renders_from_one_place() -> None:
    facts = {"name": "n", "value": 1, "count": 2, "detail": "d", "task": "binary",
             "max_events": 3}
    for code in RULES:
        text = message(code, 4, **facts)
        assert text.startswith("field `") and " of event 4: expected " in text, code
        assert Rejection(code, 4, **facts).code == code


def test_the_c_header_holds_the_contracts_codes() -> None:
    header = C_HEADER.read_text()
    assert f"#define SL_MAX_FEATURES {MAX_FEATURES}" in header
    for number, code in enumerate(sorted(RULES), 1):
        assert f"#define SL_{code.replace('.', '_').upper()} {number}\n" in header


# -- training: streamlearn.events with the feature hasher ------------------------------------


def _training(case: dict) -> tuple[list[dict], list[dict]]:
    """What the training path makes of a case: EventDecoder, then FeatureHasher per event."""
    s = case["settings"]
    decoder = EventDecoder(s["task"], require_label=s["labels"] == "required",
                           max_features=s["max_features"])
    hasher = FeatureHasher(s["bits"], s["dense"], crosses=s["crosses"])
    message_ = _message(case)
    good, bad = decoder.decode(message_)
    rejections = [
        {"index": r.index, "field": r.field, "code": r.code, "reason": r.reason} for r in bad
    ]
    try:
        doc = orjson.loads(message_)
    except orjson.JSONDecodeError:
        doc = None
    if type(doc) is dict and "features" not in doc and type(doc.get("events")) is list:
        failed = {r.index for r in bad}
        indices: list[int | None] = [i for i in range(len(doc["events"])) if i not in failed]
    else:
        indices = [None] * len(good)
    events = []
    for index, event in zip(indices, good, strict=True):
        try:
            batch = hasher.encode_one(event["features"])
        except Rejection as err:  # the hasher's: its code and field (the text shows an item)
            rejections.append({"index": index, "field": err.field, "code": err.code,
                               "reason": None})
            continue
        events.append({"index": index, "rows": _rows(batch), "label": event.get("label"),
                       "weight": event_weight(event)})
    rejections.sort(key=lambda r: -1 if r["index"] is None else r["index"])
    return events, rejections


@pytest.mark.parametrize("case", [c for c in CASES if c["settings"]["labels"] != "ignored"
                                  and c["settings"]["max_events"] is None],
                         ids=lambda c: c["case"])
def test_the_training_decoder_replays_the_corpus(case: dict) -> None:
    events, rejections = _training(case)
    _check_rejections(rejections, case)
    _check_events(events, case)


@pytest.mark.parametrize("case", OBJECT_CASES, ids=lambda c: c["case"])
def test_python_objects_replay_through_validate_and_the_hasher(case: dict) -> None:
    """Events given as Python objects (the SDK's publish, a learner's learn_one)."""
    features = {from_tagged(k): from_tagged(v) for k, v in case["features"]}
    s = case["settings"]
    decoder = EventDecoder(s["task"], require_label=True)
    hasher = FeatureHasher(s["bits"], s["dense"], crosses=s["crosses"])
    for encode in ("validate", "hasher"):
        try:
            if encode == "validate":
                event = decoder.validate({"features": dict(features), "label": case["label"]})
                features_now = event["features"]
            else:
                features_now = features
            got_rows = _rows(hasher.encode_one(features_now))
        except Rejection as err:  # the hasher counts its own rows: compare code and field
            reason = str(err) if encode == "validate" else None
            got = [{"index": None, "field": err.field, "code": err.code, "reason": reason}]
            _check_rejections(got, case)
            assert not case["events"]
            continue
        assert not case["rejections"], (case["case"], encode)
        [want] = case["events"]
        assert _same(got_rows, want["rows"]), (case["case"], encode)


def test_a_learner_takes_integer_feature_names_as_their_text() -> None:
    """River's streams name features by integers: a learner reads 3 as "3"."""
    from streamlearn.learners import LogisticRegression

    by_int, by_text = LogisticRegression(bits=6), LogisticRegression(bits=6)
    for i in range(20):
        by_int.learn_one({0: i / 10, 1: "a" if i % 2 else "b"}, i % 2 == 0)
        by_text.learn_one({"0": i / 10, "1": "a" if i % 2 else "b"}, i % 2 == 0)
    assert by_int.predict_proba_one({0: 0.5, 1: "a"}) == by_text.predict_proba_one(
        {"0": 0.5, "1": "a"}
    )
    many = [{i: float(i), "s": "v"} for i in range(1, 8)]  # the batch path too
    assert np.array_equal(
        FeatureHasher(6).encode(many).indices,
        FeatureHasher(6).encode([{str(k): v for k, v in x.items()} for x in many]).indices,
    )
    with pytest.raises(ValidationError, match=r"convert others with str\(\)"):
        by_int.learn_one({1.5: 1.0}, True)


# -- serving: payload.check_json with the hasher, and the C fast path -------------------------

SERVING = [
    c for c in CASES
    if c["settings"]["labels"] == "ignored" and c["settings"]["max_features"] == MAX_FEATURES
] + [
    # the training cases read as scoring requests (serving takes the contract's
    # MAX_FEATURES: it has no setting of its own)
    {**c, "settings": {**c["settings"], "labels": "ignored"}}
    for c in CASES
    if c["settings"]["labels"] == "required" and c["settings"]["max_features"] == MAX_FEATURES
]


def _serving_expected(case: dict) -> dict:
    """The reference's verdict with labels ignored (a training case read by serving)."""
    from streamlearn.contract.corpus import _outcome, _settings
    from streamlearn.contract.reference import decode

    return _outcome(decode(_message(case), _settings(case["settings"])))


def _problem(p: ValidationError) -> dict:
    assert isinstance(p, Problem), p
    return {"index": p.index, "field": p.event_field, "code": p.code,
            "reason": message(p.code, p.index, **_problem_facts(p))}


def _problem_facts(p: Problem) -> dict:
    name = p.event_field.partition(".")[2] or p.event_field
    return {"name": name, "shown": p.got, "detail": "", "count": 0, "task": "binary",
            "max_events": 0}


@pytest.mark.parametrize("case", SERVING, ids=lambda c: c["case"])
def test_serving_validation_replays_the_corpus(case: dict) -> None:
    """check_json, then the learner's hasher: the first problem of each event is the
    contract's (a request is refused as a whole: no event of a refused request is scored)."""
    want = {**case, **_serving_expected(case)}
    s = case["settings"]
    max_events = s["max_events"] if s["max_events"] is not None else 10_000
    hasher = FeatureHasher(s["bits"], s["dense"], crosses=s["crosses"])
    try:
        batch = check_json(load_json(_message(case)), max_events)
    except BadRequest as err:
        firsts: dict = {}
        for p in err.problems:
            firsts.setdefault(p.index, _problem(p))
        got = list(firsts.values())
        want_first = {}
        for r in want["rejections"]:
            want_first.setdefault(r["index"], r)
        assert [(r["index"], r["field"], r["code"]) for r in got] == [
            (r["index"], r["field"], r["code"]) for r in want_first.values()
        ], case["case"]
        return
    events = []
    for i, features in enumerate(batch.features):
        index = None if batch.single else i
        try:
            rows = _rows(hasher.encode_one(features))
        except Rejection as err:
            assert [(index, err.field, err.code)] == [
                (r["index"], r["field"], r["code"]) for r in want["rejections"]
            ], case["case"]
            return
        events.append({"index": index, "rows": rows, "label": None})
    assert not want["rejections"], case["case"]
    _check_events(events, want)


def _table(case: dict, weights: np.ndarray) -> Any:
    """A native table whose shares are ``weights[slot] * sign`` by the contract's hashing,
    for every name and string of the case's features."""
    from streamlearn.serving._native import Shares

    s = Settings(bits=case["settings"]["bits"], dense=tuple(case["settings"]["dense"]))
    table = Shares(0.0)
    try:
        features = orjson.loads(_message(case))["features"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return table
    if type(features) is not dict:
        return table
    for name, value in features.items():
        if name in s.dense:
            table.add_number(name.encode(), float(weights[(1 << s.bits) + s.dense.index(name)]))
            continue
        at, sign = slot(name, None, s.bits)
        table.add_number(name.encode(), float(weights[at] * sign))
        for item in value if type(value) is list else [value] if type(value) is str else []:
            if type(item) is not str:
                continue
            at, sign = slot(name, item, s.bits)
            table.add_string(name.encode(), item.encode(), float(weights[at] * sign))
        if type(value) is list:
            table.add_name(name.encode())
    return table


def _one_event_body(case: dict) -> bool:
    """A body the C path reads: exactly ``{"features": {...}}``."""
    try:
        doc = orjson.loads(_message(case))
    except orjson.JSONDecodeError:
        return _message(case).lstrip().startswith(b'{"features"')
    return type(doc) is dict and list(doc) == ["features"]


# a model with crosses is not scored by the C path (the scorers decline it: tested in
# tests/test_crosses.py), so its cases are not the C path's to replay
@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
@pytest.mark.parametrize("case", [c for c in SERVING
                                  if _one_event_body(c) and not c["settings"]["crosses"]],
                         ids=lambda c: c["case"])
def test_the_c_fast_path_replays_the_corpus(case: dict) -> None:
    """The C path scores exactly the bodies the contract accepts, as the contract encodes
    them (its score is the dot product of the expected rows with the table's weights), and
    where it steps aside for a broken rule it names the contract's code."""
    want = _serving_expected(case)
    body = _message(case)
    rng = np.random.default_rng(7)
    weights = rng.integers(1, 1000, (1 << case["settings"]["bits"]) + 8).astype(float)
    if want["rejections"]:
        [rejection] = want["rejections"]
        table = _table(case, weights)  # every name and string known: a lax scan would score
        assert type(table.score(body)) is not float, case["case"]  # never scored
        verdict = table.verdict(body)
        if rejection["code"] == "message.not_json" and verdict is not None:
            return  # a verdict found before the end holds if the rest is JSON: it is not
        assert verdict in (None, rejection["code"]), (case["case"], verdict)
        if rejection["code"] in {"features.empty", "features.empty_name",
                                 "features.bad_value", "features.bad_list_item"}:
            assert verdict == rejection["code"], case["case"]  # the sites the scan names
        return
    table = _table(case, weights)
    got = table.score(body)
    if got is None:  # a body the scan leaves to the Python path (an escape, a repeated name)
        assert b"\\" in body or "repeated" in case["case"], case["case"]
        return
    [event] = want["events"]
    expected = math.fsum(weights[at] * value for at, value, _numeric in event["rows"])
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-9), case["case"]


#: the event's fields the C path reads with its features (``Shares.score_event``)
C_FIELDS = ("id", "key", "ts")


def _event_body(case: dict) -> bytes | None:
    """A case's single event as a serving request (its label kept: serving ignores
    it); None when it is no single event of the JSON the scan reads."""
    try:
        doc = orjson.loads(_message(case))
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or "features" not in doc:
        return None
    try:
        return orjson.dumps(doc)
    except TypeError:  # an integer past 64 bits: orjson read it, cannot write it
        return None


def _plain_number(v: object, signed: bool) -> bool:
    """A number the C scan reads in a ``label`` or ``weight``: at most 18 digits, no
    exponent (as orjson writes it), negative only where ``signed``."""
    if type(v) not in (int, float):
        return False
    text = orjson.dumps(v).decode()
    return ("e" not in text and sum(c.isdigit() for c in text) <= 18
            and (signed or not text.startswith("-")))


def _plain_extras(doc: dict) -> bool:
    """Whether the event's ``label`` and ``weight`` are of the kinds the C scan reads."""
    label_ok = "label" not in doc or type(doc["label"]) in (str, bool, type(None)) or (
        _plain_number(doc["label"], signed=True))
    weight_ok = "weight" not in doc or _plain_number(doc["weight"], signed=False)
    return label_ok and weight_ok


@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
@pytest.mark.parametrize(
    "case",
    [c for c in SERVING if _event_body(c) is not None and not c["settings"]["crosses"]],
    ids=lambda c: c["case"],
)
def test_the_c_fast_path_reads_an_events_fields_as_the_contract(case: dict) -> None:
    """With its ``id``, ``key``, ``ts``, ``weight`` and ``label``, an event is scored in
    C only where the contract's reference accepts it (for serving: its label ignored),
    and the fields it returns are the event's."""
    from streamlearn.contract.corpus import _outcome, _settings
    from streamlearn.contract.reference import decode

    body = _event_body(case)
    assert body is not None
    want = _outcome(decode(body, _settings({**case["settings"], "labels": "ignored"})))
    rng = np.random.default_rng(7)
    weights = rng.integers(1, 1000, (1 << case["settings"]["bits"]) + 8).astype(float)
    table = _table(case, weights)  # every name and string known: a lax scan would score
    got = table.score_event(body)
    if want["rejections"]:
        assert type(got) is not tuple, case["case"]  # never scored
        return
    doc = orjson.loads(body)
    fields = {name: doc.get(name) for name in C_FIELDS}
    # the corpus's own events with fields are read in C, not only left to Python
    assert type(got) is tuple or case["case"] not in ("fields.all", "fields.int-key")
    if got is None:  # left to the Python path: an escape, a repeated name, a field it
        # does not read, or a value of a field it leaves there (null, true, 19+ digits)
        assert (b"\\" in body or "repeated" in case["case"]
                or set(doc) - {"features", *C_FIELDS, "label", "weight"}
                or not _plain_extras(doc)
                or any(v is not None and type(v) is not str
                       and (type(v) is not int or abs(v) >= 10**18)
                       for v in fields.values())
                or any(name in doc and doc[name] is None for name in C_FIELDS)), case["case"]
        return
    [event] = want["events"]
    expected = math.fsum(weights[at] * value for at, value, _numeric in event["rows"])
    assert got[0] == pytest.approx(expected, rel=1e-12, abs=1e-9), case["case"]
    assert got[2:] == tuple(fields.values()), case["case"]
    assert [type(v) for v in got[2:]] == [type(v) for v in fields.values()], case["case"]


@pytest.mark.skipif(not native_available(), reason="the C extension is not built")
def test_the_c_fast_path_refuses_more_features_than_the_contract_allows() -> None:
    from streamlearn.serving._native import Shares

    table = Shares(0.0)
    for i in range(MAX_FEATURES + 1):
        table.add_number(f"f{i}".encode(), 1.0)
    fits = b'{"features": {' + b", ".join(b'"f%d": 1' % i for i in range(MAX_FEATURES)) + b"}}"
    over = fits[:-2] + b', "f%d": 1}}' % MAX_FEATURES
    assert table.score(fits) == MAX_FEATURES
    assert table.score(over) is None and table.verdict(over) == "features.too_many"
    with pytest.raises(BadRequest) as err:
        check_json(orjson.loads(over), 10)
    assert err.value.problems[0].code == "features.too_many"


def test_label_codes_are_those_serving_ignores() -> None:
    assert LABEL_CODES == {c for c in RULES if c.startswith("label.")}


def test_the_python_one_event_path_of_serving_steps_aside_past_the_limit() -> None:
    """predict_one's scorer leaves an event of too many features to check_json."""
    from streamlearn.learners import LogisticRegression
    from streamlearn.serving.linear_scorer import LinearScorer

    model = LogisticRegression(bits=6)
    model.learn_one({"a": 1.0}, True)
    scorer = LinearScorer.from_learner(model)
    assert scorer is not None and scorer.score_one({"a": 1.0}) is not None
    assert scorer.score_one({f"f{i}": 1.0 for i in range(MAX_FEATURES + 1)}) is None


def test_a_refused_request_gives_each_problems_code() -> None:
    with pytest.raises(BadRequest) as err:
        check_json({"events": [{"features": {"x": 1}}, {"features": {"t": [1]}, "ts": -1}]}, 10)
    assert [p["code"] for p in err.value.to_json()["fields"]] == [
        "features.bad_list_item", "ts.invalid"
    ]
    assert err.value.to_json()["fields"][0]["field"] == "events[1].features.t"
    with pytest.raises(BadRequest) as err:
        load_json(b"{")
    assert err.value.status == 400 and err.value.to_json()["fields"][0]["code"] == (
        "message.not_json"
    )


def test_events_written_with_integer_names_read_back_as_their_text() -> None:
    from streamlearn.events import encode_envelope, encode_event

    decoder = EventDecoder("binary")
    [event], [] = decoder.decode(encode_event({"features": {7: 1.0, "c": "x"}, "label": 1}))
    assert event["features"] == {"7": 1.0, "c": "x"}
    good, [] = decoder.decode(encode_envelope([{"features": {1: 2.0}, "label": 0}] * 2))
    assert [e["features"] for e in good] == [{"1": 2.0}] * 2
    with pytest.raises(Rejection) as err:
        encode_event({"features": {(1, 2): 1.0}, "label": 1})
    assert err.value.code == "features.name_not_string" and "str()" in str(err.value)


def test_a_float_is_shown_with_all_its_digits_whatever_the_callers_decimal_context():
    import decimal

    from streamlearn.contract import show_float

    with decimal.localcontext() as ctx:
        ctx.prec = 3  # a caller's own setting must not round what a message quotes
        assert show_float(123456.789) == "123456.789"
        assert show_float(-1.7976931348623157e308) == "-1.7976931348623157e+308"
